"""Broadcaster: the dashboard's actor. Hosts the page and ONE WebSocket (/ws), fed by every actor.

A thin shell around :mod:`kalshiflow.dashboard`: it owns the HTTP server (uvicorn inside this
actor's event loop), the poll timer and the Ray calls; building, throttling and fan-out are done
by the pure modules.

Sources, by message only:
- poll: once per ``ui.update_interval_s`` it calls ``stats()`` of the collectors (found by name
  prefix, so new and restarted ones are picked up), the WriteQueue, the PolicyServer, and the
  Trader's / PositionReconciler's state calls, each with ``ui.poll_timeout_s`` so one stuck actor
  cannot stall the page; the ladder of each market some browser watches comes from the collector
  that holds it (``books([ticker])``);
- push: any actor may call ``publish(kind, data)`` with a whole ``collection_status``,
  ``trader_state`` or ``trades`` payload; it goes through the same per-component rate limit.

Commands from browsers: ``kill_switch`` -> ``Trader.kill_switch(reason)``.

Restarts: ``max_restarts=-1`` rebuilds it from its spec on the same port; browsers reconnect by
themselves. The launcher pins it to its own node (the page is served on that machine's ui.host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import ray

from kalshiflow.cancellation import stop_tasks
from kalshiflow.dashboard import messages as M
from kalshiflow.dashboard.collection import build_collection_status, market_owners
from kalshiflow.dashboard.server import Dashboard, HttpServer, create_app
from kalshiflow.dashboard.sources import ActorDirectory, BackgroundLookup, memory_of_launch
from kalshiflow.dashboard.streams import ladder_from_levels
from kalshiflow.dashboard.trader import ExecutionTally, build_trader_state, build_trades
from kalshiflow.launch.spec import BroadcasterSpec

__all__ = ["Broadcaster"]

log = logging.getLogger("kalshiflow.broadcaster")

_PUSHABLE: dict[str, type[Any]] = {
    "collection_status": M.CollectionStatus,
    "trader_state": M.TraderState,
    "trades": M.Trades,
}
_MEMORY_EVERY_S = 5.0
_SUBSCRIBE_EVERY_S = 5.0
_KILL_TIMEOUT_S = 30.0  # the Trader's kill switch waits for its cancels (10 s) before it answers


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0.1)
class Broadcaster:
    def __init__(self, spec: BroadcasterSpec) -> None:
        self.spec = spec
        ui = spec.ui
        self.state: M.RunState = "starting"
        self.trading_mode: str | None = None
        self.exchange_url = spec.exchange_url
        self.dashboard = Dashboard(
            self._hello,
            self._kill_switch,
            interval_s=ui.update_interval_s,
            max_messages=ui.client_queue_messages,
            max_bytes=ui.client_queue_bytes,
            pnl_cap=ui.pnl_history_points,
        )
        self.tally = ExecutionTally(ui.recent_fills)
        self.directory = ActorDirectory(spec.namespace, spec.names)
        # Binding here makes a busy port fail the actor's creation, which the launcher reports.
        self.http = HttpServer(create_app(self.dashboard, Path(spec.ui_dir)), ui.host, ui.port)
        self._memory: BackgroundLookup[float | None] = BackgroundLookup(
            lambda: memory_of_launch(spec.namespace, spec.launcher_pid, spec.names), None, "memory lookup")
        self._memory_at = float("-inf")
        self._subscribed_at = float("-inf")
        self._pushed: set[str] = set()  # kinds an actor pushes itself: not polled any more
        self._started = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="broadcaster")]

    async def _run(self) -> None:
        await self.http.start()
        self._started.set()
        log.info("dashboard at %s", self.http.url)
        self._tasks.append(asyncio.get_running_loop().create_task(self._flush_loop(), name="flush"))
        interval = self.spec.ui.update_interval_s
        gathered: _Round | None = None
        while True:
            began = time.monotonic()
            # Emit at the start of the round what the previous round gathered: the emission
            # instants are then spaced by the cadence itself, not by how long the calls took, so
            # every component sends exactly once per interval (never twice, never skipped).
            try:
                if gathered is not None:
                    self._emit(gathered)
                gathered = await self._gather()
            except Exception:  # one bad round must not end the dashboard
                log.exception("broadcaster: poll failed")
            await asyncio.sleep(max(0.0, began + interval - time.monotonic()) + 0.005)

    async def _flush_loop(self) -> None:
        # Pending (coalesced) states go out as soon as their component's interval has passed.
        while True:
            await asyncio.sleep(self.spec.ui.update_interval_s / 10)
            self.dashboard.flush_due()

    # ------------------------------------------------------------------ Ray API

    async def ready(self, timeout: float = 30.0) -> str:
        """The dashboard's URL once it listens (raises what stopped it from listening)."""
        await asyncio.wait_for(self._started.wait(), timeout)
        return self.http.url

    async def owner(self) -> BroadcasterSpec:
        """Who launched this system (a second launch compares launch ids and attaches)."""
        return self.spec

    async def set_state(
        self, state: str, trading_mode: str | None = None, exchange_url: str | None = None
    ) -> None:
        """Lifecycle from the launcher (starting -> running -> stopping -> stopped), re-sent every
        few seconds so that a restarted Broadcaster learns it again."""
        changed = state != self.state
        self.state = state  # type: ignore[assignment]
        if trading_mode is not None:
            self.trading_mode = trading_mode
        if exchange_url is not None:
            self.exchange_url = exchange_url
        if changed:  # show the transition now rather than at the next round
            with contextlib.suppress(Exception):
                await self.poll()

    async def publish(self, kind: str, data: Any) -> bool:
        """Push a whole state (a dict or Struct shaped like the message's ``data``). Validated;
        rate-limited like polled ones. Raises ValueError for an unknown kind or a bad shape."""
        if kind not in _PUSHABLE:
            raise ValueError(f"unknown kind {kind!r}; one of {sorted(_PUSHABLE)}")
        if not isinstance(data, dict):
            data = msgspec.to_builtins(data)
        message = msgspec.convert(data, _PUSHABLE[kind], strict=False)
        self._pushed.add(kind)
        return self.dashboard.publish(message)

    async def stats(self) -> dict[str, Any]:
        return {"url": self.http.url, "state": self.state, **self.dashboard.stats()}

    async def shutdown(self) -> None:
        """Stop serving (browsers see the connection drop and keep retrying)."""
        await stop_tasks(self._tasks, timeout=5.0)
        self._memory.cancel()
        self.directory.policy_lookup.cancel()
        await self.http.stop()

    # ------------------------------------------------------------------ polling

    async def poll(self) -> None:
        """Gather and emit now (after a command or a state change); the rate limit still holds."""
        self._emit(await self._gather())

    async def _gather(self) -> _Round:
        d, now = self.directory, time.time()
        timeout = self.spec.ui.poll_timeout_s
        await d.refresh()
        collectors, wq, trader_state, trader_stats, portfolio, policy = await asyncio.gather(
            d.call_all(d.collectors(), "stats", timeout=timeout),
            d.call(d.write_queue(), "stats", timeout=timeout),
            d.call(d.trader(), "trader_state", timeout=timeout),
            d.call(d.trader(), "stats", timeout=timeout),
            d.call(d.reconciler(), "portfolio", timeout=timeout),
            d.policy_stats(timeout),
        )
        await self._follow_fills()
        if portfolio is not None:
            self.tally.seen_orders(portfolio.open_orders)
        return _Round(
            now=now,
            collectors=collectors,
            write_queue=wq,
            trader_state=trader_state,
            trader_stats=trader_stats,
            portfolio=portfolio,
            policy=policy,
            books=await self._books(collectors, timeout),
            memory_mb=await self._memory_mb(),
        )

    def _emit(self, r: _Round) -> None:
        d, now = self.directory, r.now
        if "collection_status" not in self._pushed:
            self.dashboard.publish(
                build_collection_status(
                    r.collectors,
                    r.write_queue,
                    now=now,
                    state=self._component_state(bool(r.collectors)),
                    environment=self.spec.environment,
                    exchange_url=self.exchange_url,
                    session_id=r.collectors[0].session_id if r.collectors else None,
                    uptime_s=now - self.spec.started_at,
                    memory_mb=r.memory_mb,
                    ui_clients=len(self.dashboard.hub),
                    ui_dropped=self.dashboard.hub.dropped,
                    lag_measurable=self.spec.exchange_clock_rate == 1.0,
                )
            )
        state = self._component_state(d.trader() is not None or d.reconciler() is not None)
        if "trader_state" not in self._pushed:
            view = build_trader_state(
                r.trader_state, r.portfolio, r.policy, now=now, state=state, trading_mode=self.trading_mode
            )
            self.dashboard.publish(view)
            if view.portfolio_value is not None:
                self.dashboard.publish_pnl(now, float(view.portfolio_value))
        if "trades" not in self._pushed:
            self.dashboard.publish(
                build_trades(
                    r.trader_state,
                    r.trader_stats,
                    self.tally,
                    now=now,
                    state=state,
                    cap=self.spec.ui.recent_fills,
                )
            )
        for ticker, book in r.books.items():
            if book is None:
                self.dashboard.publish_book(ticker, None, {}, {}, now)
            else:
                valid, yes, no = book
                bids, asks = ladder_from_levels(yes, no, self.spec.ui.book_depth)
                self.dashboard.publish_book(ticker, valid, bids, asks, now)

    async def _follow_fills(self) -> None:
        """Subscribe to the reconciler's fills (idempotent there; repeated so that a restarted
        reconciler, or one started after us, delivers to us too)."""
        reconciler = self.directory.reconciler()
        if reconciler is None or time.monotonic() - self._subscribed_at < _SUBSCRIBE_EVERY_S:
            return
        self._subscribed_at = time.monotonic()
        me = ray.get_runtime_context().current_actor
        # replay: the page lists the last fills even if they came before we subscribed
        await self.directory.call(
            reconciler, "add_subscriber", me, "on_fill", self.spec.ui.recent_fills,
            timeout=self.spec.ui.poll_timeout_s,
        )

    async def on_fill(self, notice: Any) -> None:
        """One of our fills, from the PositionReconciler (in order, each once)."""
        self.tally.on_fill(notice)

    def _component_state(self, present: bool) -> M.RunState:
        if self.state in ("stopping", "stopped"):
            return self.state
        return self.state if present or self.state == "starting" else "absent"

    async def _books(self, collectors: list[Any], timeout: float) -> dict[str, Any]:
        """(valid, YES levels, NO levels) of each market some browser watches (None: unknown)."""
        owners = market_owners(collectors)
        watched = self.dashboard.watched_tickers()
        answers = await asyncio.gather(
            *(
                self.directory.call(
                    self.directory.collector(owners.get(t, "")), "books", [t], timeout=timeout
                )
                for t in watched
            )
        )
        return {t: (a or {}).get(t) for t, a in zip(watched, answers, strict=True)}

    async def _memory_mb(self) -> float | None:
        # The state API can take seconds on a loaded machine: looked up beside the rounds.
        if time.monotonic() - self._memory_at >= _MEMORY_EVERY_S and not self._memory.running:
            self._memory_at = time.monotonic()
            self._memory.start()
        return self._memory.value

    # ------------------------------------------------------------------ browsers

    def _hello(self, client_id: int) -> M.Hello:
        d = self.directory
        return M.Hello(
            protocol=M.PROTOCOL_VERSION,
            client_id=client_id,
            environment=self.spec.environment,
            trading_mode=self.trading_mode,
            ray_dashboard_url=self.spec.ray_dashboard_url,
            update_interval_s=self.spec.ui.update_interval_s,
            components=M.Components(
                collectors=bool(d.collectors()),
                write_queue=d.write_queue() is not None,
                trader=d.trader() is not None,
                reconciler=d.reconciler() is not None,
                policy_server=d.has_policy_server,
            ),
        )

    async def _kill_switch(self, reason: str) -> M.CommandResult:
        trader = self.directory.trader()
        if trader is None:
            return M.CommandResult(command="kill_switch", ok=False, detail="no trader is running")
        log.warning("kill switch from the dashboard (pid %d): %s", os.getpid(), reason)
        try:
            result = await asyncio.wait_for(trader.kill_switch.remote(reason), _KILL_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - reported to the browser that asked
            return M.CommandResult(
                command="kill_switch", ok=False, detail=f"trader did not confirm: {err!r}"[:300]
            )
        with contextlib.suppress(Exception):
            await self.poll()  # show HALTED as soon as the rate limit allows
        return M.CommandResult(command="kill_switch", ok=True, detail=_summary(result))


class _Round(msgspec.Struct, frozen=True, kw_only=True):
    """What one poll round gathered (emitted at the start of the next round)."""

    now: float
    collectors: list[Any]
    write_queue: Any
    trader_state: Any
    trader_stats: Any
    portfolio: Any
    policy: Any
    books: dict[str, Any]
    memory_mb: float | None


def _summary(result: Any) -> str:
    """The Trader's answer to the kill switch, as a sentence for the page."""
    if result is None:
        return "trading halted"
    if isinstance(result, str):
        return result[:300]
    if isinstance(result, dict) and "mode" in result:
        left = result.get("open_orders")
        if not isinstance(left, int):
            orders = ""
        else:
            orders = "no order left open" if left == 0 else f"{left} order(s) still open after the cancels"
        reason = f" ({result['reason']})" if result.get("reason") else ""
        return f"trading {result['mode']}{reason}" + (f"; {orders}" if orders else "")
    with contextlib.suppress(Exception):
        return msgspec.json.encode(result).decode()[:300]
    return str(result)[:300]
