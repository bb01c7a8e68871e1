"""Trader: book updates -> the training observation -> PolicyServer -> risk gate -> orders.

A thin async actor (named, ``max_restarts=-1``). It owns the connections (REST client, Serve
handle, named-actor handles), the timers and the row sink; every decision is made by
:class:`kalshiflow.trading.decision.DecisionEngine` (features, mask, action -> intent -> the
:class:`~kalshiflow.trading.risk.RiskGate`), orders are tracked by
:class:`~kalshiflow.trading.orders.OrderTracker` and sent by
:class:`~kalshiflow.trading.router.OrderRouter`. docs/trading.md describes the whole path.

Inputs, by message: ``on_books(list[BookTop])`` from the collectors (top of book and the best
levels the observation reads; the whole ladders are asked from the collector only for an
update that came without them; by the book link's TCP stream when the collector can reach it,
else by Ray call), ``on_fill(FillNotice)`` from the PositionReconciler, whose ``portfolio()`` is
the account the Trader trades on.

Latency: an update that makes markets due starts a decision cycle at once, inside ``on_books``
(not on a timer); up to ``_MAX_CYCLES`` cycles overlap (each waits on its own PolicyServer
call), and what changes while they are all busy is decided by the next one, in one batch. An
approved order is sent the moment the cycle's answer is in.

Safety: every order passes the gate (``redeem`` right before the HTTP call); the PolicyServer not
answering is a HOLD (counted, retried every cycle: recovery needs nothing); ``kill_switch``
halts and cancels; a collector that lost its connection gets its markets' orders cancelled; a
REST connection failure refuses new orders until a call succeeds again; ``shutdown`` cancels
everything and ships the last rows. A restarted Trader adopts and cancels its predecessor's
resting orders (client order ids carry its prefix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from kalshiflow.cancellation import stop_tasks
from kalshiflow.collect.book_link import LOOPBACK, LinkEndpoint, LinkServer
from kalshiflow.collect.messages import BookTop
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.serving.messages import NO_MODEL, ActBatch
from kalshiflow.trading import PortfolioView
from kalshiflow.trading import records as R
from kalshiflow.trading.decision import Candidate, DecisionEngine, DecisionRecord
from kalshiflow.trading.feed import FeedClock, MarketMeta, from_top
from kalshiflow.trading.orders import ClientOrderIds, OrderTracker
from kalshiflow.trading.risk import RiskGate, RiskState
from kalshiflow.trading.risk_day import RiskDayError, RiskDayStore, record_of, restore, risk_day_path
from kalshiflow.trading.router import OrderRouter
from kalshiflow.trading.sources import Sources, empty_view
from kalshiflow.trading.spec import TraderSpec, decision_settings
from kalshiflow.trading.state import Counters, TraderStateView, TraderStats, build_state, build_stats

if TYPE_CHECKING:
    from actors.reconciler import FillNotice

log = logging.getLogger("kalshiflow.trader")

# Decision cycles in flight at once: a cycle mostly waits for its PolicyServer answer, so one
# at a time would make a new update wait for the previous cycle's round trip; a bound keeps a
# burst from turning into a swarm of one-market Serve calls (beyond it, changes batch up).
_MAX_CYCLES = 4


@ray.remote(max_restarts=-1, max_task_retries=0)
class Trader:
    def __init__(self, spec: TraderSpec) -> None:
        self.spec = spec
        cfg = spec.trader
        self.clock = FeedClock(spec.clock_rate)
        self.gate = RiskGate(spec.risk, time.time)
        self.risk_day = self._restore_risk_day()
        ids = ClientOrderIds(cfg.client_order_prefix, time.time_ns())
        self.tracker = OrderTracker(ids)
        self.engine = DecisionEngine(decision_settings(cfg), self.gate, self.tracker, wall_now=time.time())
        signer = Signer.from_credentials(spec.credentials) if spec.credentials else None
        self.rest = KalshiRestClient(spec.rest_url, signer=signer, config=spec.exchange,
                                     environment=spec.environment)
        self.src = Sources(spec, self.rest)
        self.c = Counters()
        self.view: PortfolioView | None = None
        self._refreshing = False
        self.sink = R.RowSink(self._enqueue if spec.writequeue is not None else None, spec.name)
        self.router = OrderRouter(self.rest, self.engine, self.src, self.c, self.sink, self._spawn,
                                  account=cfg.account, environment=spec.environment)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cycles: set[asyncio.Task[None]] = set()
        self._again = False  # a cycle was wanted while _MAX_CYCLES ran: start one when one ends
        self._stopped = False
        self._ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.link = LinkServer(self._apply_books)
        self._link = loop.create_task(self._open_link())
        loops = (self._start, self._decide_loop, self._housekeeping, self._persist_loop)
        self._loops = [loop.create_task(f(), name=f.__name__) for f in loops]

    # ------------------------------------------------------------------ startup

    def _restore_risk_day(self) -> RiskDayStore:
        """Today's start value, volume and loss latch (and a standing kill) from before a restart."""
        from pathlib import Path

        from kalshiflow.storage.embedded import data_root

        spec = self.spec
        folder = Path(spec.risk.state_dir) if spec.risk.state_dir else data_root() / "risk"
        account = spec.credentials.api_key_id if spec.credentials else spec.trader.account
        store = RiskDayStore(risk_day_path(folder, spec.environment, account))
        try:
            rec = store.load()
        except (RiskDayError, OSError) as err:  # never a silent fresh day: halt and say why
            self.gate.kill(f"risk state unusable: {err}")
            log.error("trader: %s", err)
            return store
        if rec is not None and (done := restore(self.gate, rec)):
            log.warning("trader: risk day restored from %s: %s", store.path, "; ".join(done))
        return store

    def _save_risk_day(self) -> None:
        try:
            self.risk_day.save(record_of(self.gate))
        except OSError as err:  # the gate itself is unaffected; the next change tries again
            self.c.last_error = f"risk state not saved: {err!r}"[:300]
            log.warning("trader: risk state not saved to %s: %r", self.risk_day.path, err)

    async def _start(self) -> None:
        metas = await self.src.market_metas(self.spec.markets)
        for meta in metas:
            self.engine.add_market(meta)
        await self.router.sync(cancel_adopted=True)  # a predecessor's orders: adopt and cancel
        await self._refresh_view()
        await self._warm_policy()
        self._ready.set()
        log.info("trader %s: %d markets, schema %s…", self.spec.name, len(metas),
                 self.engine.schema_hash[:12])

    async def _warm_policy(self) -> None:
        """One HOLD-only call before trading: the first call through a Serve handle sets up its
        router (slow), which must not cost the first real decisions a timeout."""
        n = self.engine.observer
        batch = ActBatch(obs=np.zeros((1, n.n_features), np.float32),
                         mask=np.eye(1, n.n_actions, dtype=np.float32), schema_hash=self.engine.schema_hash)
        try:
            await self.src.act(batch, 30.0)
        except Exception as err:  # noqa: BLE001 - not deployed yet: decisions HOLD until it is
            log.warning("trader: PolicyServer not reachable at start (%r); holding until it is", err)

    async def ready(self, timeout: float | None = 30.0) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def add_markets(self, markets: list[MarketMeta]) -> int:
        """Trade more markets (metadata known to the caller)."""
        for m in markets:
            self.engine.add_market(m)
        return len(self.engine.feeds)

    # ------------------------------------------------------------------ inputs

    async def _open_link(self) -> LinkEndpoint | None:
        mode = self.spec.trader.book_link
        if mode == "off":
            return None
        host = LOOPBACK if mode == "loopback" else ray.util.get_node_ip_address()
        return await self.link.start(host, ray.get_runtime_context().get_node_id())

    async def book_link(self) -> LinkEndpoint | None:
        """Where collectors stream ``on_books`` views to (kalshiflow.collect.book_link); None:
        by Ray calls. A failed listen is logged and means Ray calls too."""
        try:
            return await asyncio.shield(self._link)
        except OSError as err:
            log.warning("trader: book link not listening (%r): collectors use Ray calls", err)
            return None

    async def on_books(self, updates: list[BookTop]) -> None:
        """Book views by Ray call (collectors without a link to us); see :meth:`_apply_books`."""
        self._apply_books(updates)

    def _apply_books(self, updates: list[BookTop]) -> None:
        """Collector book updates (coalesced per market, with the levels the observation reads),
        applied at once; a decision cycle for the markets they make due starts right here."""
        wall, arrived = time.time(), time.time_ns()
        applied = False
        engine, delivery = self.engine, self.c.delivery_ms
        for u in updates:
            if engine.on_update(from_top(u), wall):
                delivery.append((arrived - u.received_ts_ns) / 1e6)
                self.clock.observe(engine.feeds[u.ticker].last_ts, wall)
                applied = True
        if applied:
            self._kick()

    async def on_fill(self, notice: FillNotice) -> None:
        """One of our fills, from the PositionReconciler (which also stores it): the order's
        remaining shrinks, the gate counts the volume, the portfolio is re-read."""
        f = notice.fill
        tracked = self.tracker.on_fill(f.order_id, f.count)  # None when not open here (flatten, closed)
        if tracked is not None:
            self.router.order_changed(tracked, None, "fill")
        self.gate.record_fill(f.notional)
        self._save_risk_day()  # today's volume as of this fill survives a crash right after it
        self.c.fill(f, time.time())
        if not self._refreshing:
            self._refreshing = True
            self._spawn(self._refresh_view())

    # ------------------------------------------------------------------ the decision cycle

    async def _decide_loop(self) -> None:
        """The first cycle once ready (updates may have come before), then the clock sweep: markets
        whose book did not change are decided on the clock too (``clock_decisions``)."""
        await self._ready.wait()
        self._kick()
        if not self.spec.trader.clock_decisions:
            return
        sweep = max(0.01, min(0.5, self.clock.wall_seconds(self.spec.trader.decision_interval_s) / 4))
        while not self._stopped:
            await asyncio.sleep(sweep)
            self._kick(on_change_only=False)

    def _kick(self, on_change_only: bool = True) -> None:
        """Start a decision cycle now, unless _MAX_CYCLES run: then one starts as one ends (and
        decides every market that changed meanwhile). A sweep that finds all slots busy is
        skipped: the next comes soon, and the markets it would add are not waiting on a change."""
        if not self._ready.is_set() or self._stopped:
            return
        if len(self._cycles) >= _MAX_CYCLES:
            self._again = self._again or on_change_only
            return
        task = asyncio.get_running_loop().create_task(self._run_cycle(on_change_only))
        self._cycles.add(task)
        task.add_done_callback(self._cycle_done)

    def _cycle_done(self, task: asyncio.Task[None]) -> None:
        self._cycles.discard(task)
        if self._again:
            self._again = False
            self._kick()

    async def _run_cycle(self, on_change_only: bool) -> None:
        try:
            await self._cycle(on_change_only=on_change_only)
        except Exception as err:  # noqa: BLE001 - one bad cycle must not stop trading decisions
            self.c.last_error = f"cycle: {err!r}"[:300]
            log.exception("trader: decision cycle failed")

    async def _cycle(self, *, on_change_only: bool) -> None:
        wall = time.time()
        now = self.clock.now(wall)
        if now is None:
            return
        engine = self.engine
        tickers = engine.due(now, wall, on_change_only=on_change_only)
        if not tickers:
            return
        started = time.monotonic_ns()
        if self.spec.trader.fetch_depth and (shallow := engine.shallow(tickers)):
            # The update carried fewer levels than this observation reads (many own orders on a
            # ladder, or a collector that sends the top alone): one call per collector.
            engine.deepen(await self.src.levels(shallow))
            tickers = engine.present(tickers)
            missing = set(engine.shallow(shallow))
            if missing:  # never observe a book the env would not: decide them when the ladders come
                self.c.depth_unavailable += len(missing)
                tickers = [t for t in tickers if t not in missing]
        cands = [engine.prepare(t, now, self.view, started) for t in tickers]
        replies = await self._ask([c for c in cands if c.forced is None])
        state = self._risk_state(wall)
        done = time.monotonic_ns()
        for c in cands:
            r = replies.get(c.decision_id)
            if r is None:  # the mask left one choice: the policy was not asked
                out = self.engine.decide(c, c.forced or 0, self.c.model_version, state, done)
            else:
                action, version, status, error = r
                out = self.engine.decide(c, action, version, state, done, status=status, error=error)
            self._record(out.record)
            self.router.execute(out.commands, c.received_ns)
            if out.risk_actions:
                self.router.execute(self.engine.risk_commands(out.risk_actions))

    async def _ask(self, cands: list[Candidate]) -> dict[str, tuple[int, str, str, str]]:
        """One act_batch call for every market of the cycle -> decision id -> (action, model
        version, status, error). No answer in time = HOLD for all, status "unavailable"."""
        if not cands:
            return {}
        batch = ActBatch(obs=np.stack([c.obs for c in cands]), mask=np.stack([c.mask for c in cands]),
                         schema_hash=self.engine.schema_hash)
        self.c.policy_calls += 1
        t0 = time.perf_counter()
        try:
            reply = await self.src.act(batch, self.spec.trader.policy_timeout_s)
        except Exception as err:  # noqa: BLE001 - dead replica, Serve down, timeout: all HOLD
            if self.c.policy_available:
                log.warning("trader: PolicyServer unavailable (%r): holding until it answers", err)
            self.c.policy_available = False
            self.c.policy_last_error = f"{type(err).__name__}: {err}"[:300]
            return {c.decision_id: (0, NO_MODEL, "unavailable", self.c.policy_last_error) for c in cands}
        self.c.policy_ms.append((time.perf_counter() - t0) * 1e3)
        if not self.c.policy_available:
            log.info("trader: PolicyServer answers again")
        self.c.policy_available = True
        if reply.version != NO_MODEL:
            self.c.model_version = reply.version
        return {c.decision_id: (int(reply.actions[i]), reply.version, reply.status[i],
                                reply.errors.get(i, "")) for i, c in enumerate(cands)}

    def _record(self, rec: DecisionRecord) -> None:
        self.c.record(rec)
        self._row("trader_decisions", R.decision_row(rec, self.spec.trader.account))

    # ------------------------------------------------------------------ housekeeping

    async def _refresh_view(self) -> None:
        try:
            view = await self.src.portfolio()
        finally:
            self._refreshing = False
        if view is not None:
            if self.view is not None and self.view.connected and not view.connected and len(self.tracker):
                # The reconciler lost the exchange's fill feed: we would not see our orders fill.
                log.warning("trader: fill feed lost: cancelling every open order")
                self.router.execute(self.engine.cancels(None, "fill feed lost"))
            self.view = view
            self.c.round_trips(view)

    def _risk_state(self, wall: float) -> RiskState:
        view = self.view or empty_view(self.spec.trader.account)
        connected = self.router.rest_ok and view.connected
        return RiskState.from_view(view, self.engine.books(wall), connected=connected)

    async def _housekeeping(self) -> None:
        await self._ready.wait()
        cfg = self.spec.trader
        due = dict.fromkeys(("sync", "collectors", "snapshot"), time.monotonic())
        while not self._stopped:
            await asyncio.sleep(cfg.portfolio_refresh_s)
            try:
                await self._refresh_view()
                wall = time.time()
                if self.view is not None:  # day rollover, loss warning, loss stop -> cancel + flatten
                    actions = self.gate.evaluate(self._risk_state(wall))
                    if actions:
                        log.warning("trader: risk gate: %s", self.gate.mode_reason)
                        cmds = self.engine.risk_commands(actions, model_version=self.c.model_version)
                        self.router.execute(cmds)
                mono = time.monotonic()
                now = self.clock.now(wall)
                if now is not None:
                    self.engine.retire(now)
                if mono >= due["collectors"]:
                    due["collectors"] = mono + cfg.collector_poll_s
                    await self._check_collectors(wall)
                if mono >= due["sync"]:
                    due["sync"] = mono + cfg.order_sync_s
                    await self.router.sync()
                # With a reconciler, it stores the position snapshots (exchange and local) itself.
                if mono >= due["snapshot"] and self.view is not None and self.spec.reconciler is None:
                    due["snapshot"] = mono + cfg.snapshot_interval_s
                    env, now_ns = self.spec.environment, time.time_ns()
                    rows = R.position_rows(self.view, environment=env, now_ns=now_ns)
                    for row in rows:
                        self._row("position_snapshots", row)
                self._save_risk_day()
            except Exception as err:  # noqa: BLE001 - keep the loop alive; say what happened
                self.c.last_error = f"housekeeping: {err!r}"[:300]
                log.exception("trader: housekeeping failed")

    async def _check_collectors(self, wall: float) -> None:
        live, lost = await self.src.collector_health()
        self.engine.confirm_live(live, wall)
        self.engine.confirm_lost(lost)  # the gate's stale-book guard refuses them until data flows
        self.c.markets_lost += len(lost)
        for ticker in lost:
            if self.tracker.open_orders(ticker):
                log.warning("trader: collector of %s disconnected: cancelling its orders", ticker)
                self.router.execute(self.engine.cancels(ticker, "market data connection lost"))

    # ------------------------------------------------------------------ persistence

    def _row(self, table: str, row: tuple[Any, ...]) -> None:
        self.sink.add(table, row)

    async def _persist_loop(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.spec.trader.persist_interval_s)
            self.sink.ship()

    async def _enqueue(self, batch_id: str, rows: dict[str, list[tuple[Any, ...]]]) -> object:
        return await self.src.writequeue().enqueue.remote(batch_id, rows)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ commands and views

    async def kill_switch(self, reason: str = "kill switch") -> dict[str, Any]:
        """Halt (only cancels and gate-made flatten orders pass) and cancel every open order."""
        state = self._risk_state(time.time())
        cmds = self.engine.risk_commands(self.gate.kill(reason, state), model_version=self.c.model_version)
        self._save_risk_day()
        left = await self.router.cancel_all(reason, cmds, in_flight=list(self._tasks))
        log.warning("trader: KILL SWITCH (%s): halted, %d orders left open", reason, left)
        return {"mode": self.gate.mode.value, "reason": reason, "open_orders": left}

    async def set_mode(self, mode: str, reason: str = "operator") -> str:
        """``active`` (resume), ``reducing`` or ``halted`` (= kill switch)."""
        if mode == "halted":
            await self.kill_switch(reason)
        elif mode == "reducing":
            self.gate.reduce(reason)
        elif mode == "active":
            self.gate.resume(reason)
        else:
            raise ValueError(f"unknown mode {mode!r}: active | reducing | halted")
        self._save_risk_day()  # a resume lifts a saved kill; a restart must not bring it back
        return self.gate.mode.value

    async def stats(self) -> TraderStats:
        return build_stats(self.c, self.engine, self.tracker.n, environment=self.spec.environment,
                           open_orders=len(self.tracker), rest_connected=self.router.rest_ok,
                           rows_unacked=self.sink.pending,
                           link=(self.link.connections, self.link.frames))

    async def trader_state(self) -> TraderStateView:
        return build_state(self.c, self.engine, self.view, self.tracker.open_orders(), self.tracker.n,
                           environment=self.spec.environment, now=time.time())

    async def risk_stats(self) -> Any:
        return self.gate.stats()

    async def latency(self, reset: bool = False) -> dict[str, list[float]]:
        """Recent samples (ms) by stage (kalshiflow.trading.state.Counters): ``ack`` is the whole
        way, collector receive -> exchange ack. ``reset`` starts a fresh window (benchmarks)."""
        c = self.c
        rings = {"ack": c.ack_ms, "delivery": c.delivery_ms, "decision": c.decision_ms,
                 "policy": c.policy_ms, "rest": c.rest_ms}
        out = {k: list(v) for k, v in rings.items()}
        if reset:
            for ring in rings.values():
                ring.clear()
        return out

    async def flush(self, timeout: float = 30.0) -> bool:
        """Ship every row now and wait for the WriteQueue's acknowledgements."""
        return await self.sink.drain(timeout)

    async def shutdown(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop deciding, cancel every open order, ship the last rows. Idempotent."""
        if not self._stopped:
            self._stopped = True
            await stop_tasks([*self._loops, *self._cycles], timeout=timeout / 4)
            if self.spec.environment == "simulator":  # its accounts end with it: nothing to resume
                self.risk_day.path.unlink(missing_ok=True)
            else:
                self._save_risk_day()  # before SHUTDOWN's halt: a clean stop is not a kill
            with contextlib.suppress(Exception):
                self.gate.shutdown()
        left = await self.router.cancel_all("shutdown", in_flight=list(self._tasks), timeout=timeout / 2)
        flushed = await self.flush(timeout / 2)
        await self.link.close()
        await self.rest.close()
        return {"open_orders": left, "rows_flushed": flushed, "decisions": self.c.decisions}
