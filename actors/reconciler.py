"""PositionReconciler: the Trader's portfolio, kept equal to the exchange's truth.

A thin async Ray actor around :class:`kalshiflow.trading.reconcile.Ledger` (every decision is
made there). It owns one authenticated WS connection subscribed to ``fill`` and
``market_positions`` (real-time, applied as they arrive) and polls REST (positions, resting
orders, balance) every ``risk.reconcile_interval_s``, at once after a reconnect, and whenever a
fill contradicts the ledger. Each discrepancy is logged, counted by kind and corrected: the
exchange is the source of truth.

Start-up (and restart: ``max_restarts=-1``) rebuilds from REST. WS messages that arrive before
that snapshot is loaded are held; the snapshot is retried until no message arrived while it was
being fetched, so every held message is known to be included in it (its fills are recorded and
announced, not applied twice). Later, a market or the cash that changed while a snapshot was in
flight is left to the next round rather than "corrected" back to the older truth.

Messages out: ``on_fill(FillNotice)`` to each subscriber (the Trader, the Broadcaster), in order,
numbered with running maker / taker totals (a late subscriber may ask for the last few again);
``fills`` and ``position_snapshots`` rows to the WriteQueue (by handle or by name), resent until
acknowledged (idempotent keys).

Calls in: ``portfolio()``, ``track_order(order)`` (the Trader reports what it placed or
cancelled, so the view need not wait for the next poll), ``reconcile_now()``, ``stats()``,
``add_subscriber(handle, method, replay)``, ``ready(timeout)``, ``stop()``; and
``inject_divergence(...)`` for drills and tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import warnings
from collections import deque
from datetime import UTC, datetime
from typing import Any

import msgspec
import ray

from kalshiflow.cancellation import stop_tasks
from kalshiflow.collect.shipper import Rows, Shipper
from kalshiflow.market.prices import PRICE_SCALE, Money, parse_money
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.errors import DecodeError, WsError
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.protocol.ws_client import KalshiWsClient
from kalshiflow.trading import (
    FillNotice,
    PortfolioView,
    ReconcileReport,
    ReconcilerSpec,
    ReconcilerStats,
    TradeFill,
)
from kalshiflow.trading import reconcile as rc
from kalshiflow.trading.reconcile import Discrepancy, DropOrder, ExchangeSnapshot, Ledger, SetPosition

__all__ = ["FillNotice", "PositionReconciler", "ReconcileReport", "ReconcilerSpec", "ReconcilerStats",
           "start_reconciler"]

_HISTORY = 256  # fill notices kept for subscribers that ask for a replay
log = logging.getLogger("kalshiflow.reconciler")


def _ts(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms if ms is not None else time.time() * 1000) / 1000, tz=UTC)


class PositionReconcilerActor:
    """The actor's body (``PositionReconciler`` is this class under ``ray.remote``)."""

    def __init__(self, spec: ReconcilerSpec, *, write_queue: Any = None) -> None:
        self.spec = spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self._ledger = Ledger(spec.account)
        signer = Signer.from_credentials(spec.credentials) if spec.credentials else None
        self._rest = KalshiRestClient(spec.rest_url, signer=signer, config=spec.exchange)
        self._ws = KalshiWsClient(spec.ws_url, signer=signer, config=spec.exchange, on_frame=self._on_frame,
                                  on_epoch=self._on_epoch, on_disconnect=self._on_disconnect)
        self._balance_tol = parse_money(spec.risk.balance_tolerance_dollars)
        self._held: list[tuple[wd.FillEvent | wd.PositionEvent, int]] | None = []  # until bootstrapped
        self._gen = 0  # bumped by every local change; snapshots skip what changed while in flight
        self._touched: dict[str, int] = {}  # ticker -> gen
        self._order_gen: dict[str, int] = {}  # order_id -> gen
        self._cash_gen = 0
        self._gone: set[str] = set()  # resting locally, not listed by the last snapshot
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._backfill_due = False
        self._ready = asyncio.Event()
        self._wq = write_queue
        self._shipper = Shipper(self._send_rows) if write_queue is not None or spec.write_queue else None
        self._batch_ids = itertools.count(1)
        self._incarnation = time.time_ns()
        self._subs: dict[Any, tuple[str, asyncio.Queue[FillNotice], asyncio.Task[None]]] = {}
        self._origin = f"{spec.account}:{self._incarnation}"  # numbers this incarnation's notices
        self._history: deque[FillNotice] = deque(maxlen=_HISTORY)  # the last notices, for replay
        self._disc: dict[str, int] = {}
        self._n = dict.fromkeys(("fills", "duplicate_fills", "backfilled", "position_events", "decode_errors",
                                 "corrections", "bootstrap_corrections", "reconciles", "failures",
                                 "notify_errors", "reconnects", "maker_fills", "taker_fills"), 0)
        self._last: ReconcileReport | None = None
        self._last_error: str | None = None
        self._last_fill_ms = 0
        self._synced_ms = 0  # when the start-up snapshot was taken
        self._stopped = False
        self._tasks = [asyncio.get_running_loop().create_task(self._run(), name="reconciler-run")]
        log.info("reconciler %s: starting (%s)", spec.account, "restart" if self._restarted else "start")

    # ------------------------------------------------------------------ websocket

    def _on_frame(self, data: bytes, recv_ns: int) -> None:
        try:
            if wc.peek(data).type not in ("fill", "market_position", "market_lifecycle_v2"):
                return
            msg = wd.decode_message(data)
        except DecodeError as err:
            self._n["decode_errors"] += 1
            log.warning("reconciler %s: undecodable frame: %s", self.spec.account, err)
            return
        assert isinstance(msg, wd.DataMessage)
        event = msg.msg
        if isinstance(event, wd.LifecycleEvent):
            self._lifecycle(event)
            return
        assert isinstance(event, (wd.FillEvent, wd.PositionEvent))
        if self._held is not None:
            self._held.append((event, recv_ns))
        else:
            self._handle(event, recv_ns)

    def _handle(self, event: wd.FillEvent | wd.PositionEvent, recv_ns: int, *,
                reflected: bool = False) -> None:
        self._gen += 1
        if isinstance(event, wd.PositionEvent):
            if reflected:
                return  # the snapshot loaded after it is newer
            self._n["position_events"] += 1
            self._touched[event.market_ticker] = self._gen
            issue = self._ledger.apply_position(event)
            if issue is not None:
                self._count([issue], "ws market_position")
            self._ship({"position_snapshots": [self._snapshot_row(
                event.market_ticker, "exchange", event.position, event.position_cost, event.realized_pnl,
                event.fees_paid)]})
            return
        self._on_fill(TradeFill.from_ws(event), recv_ns, reflected=reflected)

    def _on_fill(self, fill: TradeFill, recv_ns: int, *, reflected: bool = False) -> bool:
        order = self._ledger.orders.get(fill.order_id)  # before the fill may close it
        created = order.created_ts if order is not None else 0.0
        out = self._ledger.apply_fill(fill, reflected=reflected)
        if out.duplicate:
            self._n["duplicate_fills"] += 1
            return False
        self._n["fills"] += 1
        self._touched[fill.ticker] = self._cash_gen = self._gen
        self._order_gen[fill.order_id] = self._gen
        self._last_fill_ms = max(self._last_fill_ms, fill.ts_ms or 0)
        if out.discrepancy is not None:
            self._count([out.discrepancy], "ws fill")
            self._wake.set()  # the ledger missed something: ask REST now
        spec = self.spec
        self._ship({"fills": [(
            fill.trade_id, fill.order_id, fill.client_order_id or None, spec.account, spec.environment,
            fill.ticker, fill.side.value, fill.action.value, fill.yes_price, 10_000 - fill.yes_price,
            fill.count, fill.fee, fill.is_taker, fill.post_position, _ts(fill.ts_ms),
            _ts(recv_ns // 1_000_000))]})
        self._n["taker_fills" if fill.is_taker else "maker_fills"] += 1
        notice = FillNotice(fill=fill, position=self._ledger.view(time.time()).positions.get(fill.ticker),
                            received_ns=recv_ns, origin=self._origin, seq=self._n["fills"],
                            maker_fills=self._n["maker_fills"], taker_fills=self._n["taker_fills"],
                            order_created_ts=created)
        self._history.append(notice)
        for _, queue, _ in self._subs.values():
            queue.put_nowait(notice)
        return True

    def _lifecycle(self, e: wd.LifecycleEvent) -> None:
        """A determined market settles our holding locally when the exchange pays it out, so a
        settlement is never mistaken for a vanished position or cash drift."""
        ticker = e.market_ticker
        if e.settlement_value is not None or e.result in ("yes", "no"):
            yes = e.result == "yes"
            self._ledger.determine(ticker, e.settlement_value if e.settlement_value is not None else
                                   PRICE_SCALE * yes)
        if e.event_type in ("determined", "settled", "activated"):
            # Closing (which precedes determination) and reactivation cancel every resting order.
            mine = [o for o, order in self._ledger.orders.items() if order.ticker == ticker]
            self._ledger.apply([DropOrder(order_id=o) for o in mine])
        if e.event_type == "settled" and self._ledger.settle_determined(ticker):
            self._gen += 1
            self._touched[ticker] = self._cash_gen = self._gen

    def _on_epoch(self, epoch: int) -> None:
        if epoch > 1:
            self._n["reconnects"] += 1
            self._backfill_due = True
            self._wake.set()  # fills may have been missed while disconnected

    def _on_disconnect(self, epoch: int, reason: str) -> None:
        log.warning("reconciler %s: exchange feed lost (%s)", self.spec.account, reason)

    # ------------------------------------------------------------------ tasks

    async def _run(self) -> None:
        await self._ws.start()
        for channel in ("fill", "market_positions", "market_lifecycle_v2"):
            delay = 0.2
            while True:
                try:
                    await self._ws.subscribe(channel)
                    break
                except (WsError, TimeoutError) as err:
                    log.warning("reconciler %s: subscribe %s failed (%s)", self.spec.account, channel, err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        await self._bootstrap()
        self._ready.set()
        interval = max(0.05, self.spec.risk.reconcile_interval_s)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            with contextlib.suppress(Exception):  # counted and logged inside
                await self.reconcile_now()

    async def _bootstrap(self) -> None:
        delay, tries = 0.2, 0
        while True:
            assert self._held is not None
            seen = len(self._held)
            self._synced_ms = int(time.time() * 1000)
            try:
                snap = await self._fetch()
            except Exception as err:
                self._fail(err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            tries += 1
            if len(self._held) != seen and tries < 5:
                continue  # something changed while fetching: the snapshot may or may not hold it
            started = time.monotonic()
            res = rc.reconcile(self._ledger, snap, balance_tolerance=self._balance_tol)
            self._ledger.apply(res.corrections)
            self._ledger.synced = True
            self._n["bootstrap_corrections"] += len(res.corrections)
            held, self._held = self._held, None
            for i, (event, recv_ns) in enumerate(held):
                self._handle(event, recv_ns, reflected=i < seen)
            self._record_report(snap, res.discrepancies, len(res.corrections), (), started, bootstrap=True)
            log.info("reconciler %s: loaded %d positions, %d resting orders from REST", self.spec.account,
                     len(snap.positions), len(snap.orders))
            return

    async def _fetch(self) -> ExchangeSnapshot:
        """Positions, resting orders, balance: strictly decoded (a missing key raises)."""
        positions: list[rm.MarketPosition] = []
        orders: list[rm.Order] = []
        for path, extra in (("/portfolio/positions", {}), ("/portfolio/orders", {"status": "resting"})):
            cursor: str | None = None
            seen: set[str] = set()
            while True:
                params = {"limit": 1000, "cursor": cursor, **extra}
                body = await self._rest.request("GET", path, params=params)
                if path.endswith("positions"):
                    page: Any = rc.decode_positions_strict(body)
                    positions.extend(page.market_positions)
                else:
                    page = rc.decode_orders_strict(body)
                    orders.extend(page.orders)
                if not page.cursor or page.cursor in seen:
                    break
                seen.add(cursor := page.cursor)
        balance = rc.decode_balance_strict(await self._rest.request("GET", "/portfolio/balance"))
        return ExchangeSnapshot(positions=tuple(positions), orders=tuple(orders), balance=balance.balance,
                                portfolio_value=balance.portfolio_value, fetched_at=time.time())

    async def _backfill(self) -> None:
        """After a reconnect: fills the WS did not deliver, from REST (deduplicated by id). They
        are recorded and announced, not booked: a REST reconcile may already hold their effects,
        and the one that follows at once brings the ledger to the truth either way."""
        self._backfill_due = False
        since = max(self._last_fill_ms, self._synced_ms) // 1000
        fills = [f async for f in self._rest.iter_fills(page_size=1000, min_ts=max(0, since - 1))]
        for f in reversed(fills):  # oldest first
            if f.ts is not None and f.ts < self._synced_ms // 1000:
                continue  # older than the start-up snapshot: already in it, recorded by a predecessor
            self._gen += 1
            if self._on_fill(TradeFill.from_rest(f), time.time_ns(), reflected=True):
                self._n["backfilled"] += 1

    def _fail(self, err: BaseException) -> None:
        self._n["failures"] += 1
        self._last_error = f"{type(err).__name__}: {err}"
        log.warning("reconciler %s: REST reconcile failed: %s", self.spec.account, self._last_error)

    def _count(self, issues: tuple[Discrepancy, ...] | list[Discrepancy], source: str) -> None:
        for d in issues:
            self._disc[d.kind.value] = self._disc.get(d.kind.value, 0) + 1
            log.warning("reconciler %s: %s %s %s%s local=%s exchange=%s %s (corrected)", self.spec.account,
                        source, d.kind.value, d.ticker, f" order {d.order_id}" if d.order_id else "", d.local,
                        d.exchange, d.detail)

    def _record_report(self, snap: ExchangeSnapshot, issues: tuple[Discrepancy, ...], corrections: int,
                       deferred: tuple[str, ...], started: float, *, bootstrap: bool) -> ReconcileReport:
        self._last = ReconcileReport(at=time.time(), duration_s=time.monotonic() - started,
                                     bootstrap=bootstrap, discrepancies=issues, corrections=corrections,
                                     deferred=deferred)
        rows = [self._snapshot_row(p.ticker, "exchange", p.position, p.market_exposure, p.realized_pnl,
                                   p.fees_paid) for p in snap.positions]
        view = self._ledger.view(time.time())
        rows += [self._snapshot_row(t, "local", p.qty, p.cost, p.realized_pnl, p.fees_paid)
                 for t, p in view.positions.items()]
        self._ship({"position_snapshots": rows})
        return self._last

    # ------------------------------------------------------------------ rows and notices

    def _snapshot_row(self, ticker: str, source: str, qty: int, cost: int, pnl: int,
                      fees: int) -> tuple[Any, ...]:
        spec = self.spec
        return (spec.account, ticker, source, datetime.now(UTC), spec.environment, qty, cost, pnl, fees)

    def _ship(self, rows: Rows) -> None:
        if self._shipper is not None and any(rows.values()):
            batch = f"reconciler:{self.spec.account}:{self._incarnation}:{next(self._batch_ids)}"
            self._shipper.submit(batch, rows)

    async def _send_rows(self, batch_id: str, rows: Rows) -> object:
        if self._wq is None:  # by name, looked up when first needed (it may start after us)
            assert self.spec.write_queue is not None
            self._wq = ray.get_actor(self.spec.write_queue, namespace=self.spec.namespace)
        return await self._wq.enqueue.remote(batch_id, rows)

    async def _deliver(self, handle: Any, method: str, queue: asyncio.Queue[FillNotice]) -> None:
        while True:
            notice = await queue.get()
            for attempt in range(3):
                try:
                    await getattr(handle, method).remote(notice)
                    break
                except Exception as err:  # a restarting subscriber: retry, then drop this notice
                    self._n["notify_errors"] += 1
                    log.warning("reconciler %s: %s failed (%s)", self.spec.account, method, err)
                    await asyncio.sleep(0.1 * (attempt + 1))

    # ------------------------------------------------------------------ actor API

    async def ready(self, timeout: float | None = None) -> bool:
        """True once subscribed and loaded from REST (False on timeout)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._ready.wait()), timeout)
            await self._ws.wait_ready(timeout)
        except TimeoutError:
            return False
        return True

    async def portfolio(self) -> PortfolioView:
        """Cash, collateral, positions (avg price, realized PnL, fees), open orders. The Trader's
        portfolio and the risk gate's state come from here."""
        return msgspec.structs.replace(self._ledger.view(time.time()), connected=self._ws.connected)

    async def track_order(self, order: rm.Order) -> None:
        """The Trader placed or cancelled ``order`` (the exchange's answer): show it now."""
        self._gen += 1
        self._order_gen[order.order_id] = self._gen
        self._ledger.track_order(order)

    async def reconcile_now(self) -> ReconcileReport:
        """Fetch the exchange's truth, diff, count, correct. One at a time."""
        await self._ready.wait()
        async with self._lock:
            if self._backfill_due:
                await self._backfill()
            started, gen0 = time.monotonic(), self._gen
            try:
                snap = await self._fetch()
            except Exception as err:
                self._fail(err)
                raise
            # An order we hold as resting that the exchange no longer lists is usually a cancel
            # whose report from the Trader is still on its way: only a second round confirms it.
            listed = {o.order_id for o in snap.orders}
            gone = {o for o in self._ledger.orders if o not in listed}
            held = {p.ticker for p in snap.positions if p.position}
            for ticker in [t for t in self._ledger.portfolio.positions if t not in held]:
                self._ledger.settle_determined(ticker)  # paid out while we were not looking
            fresh, self._gone = gone - self._gone, gone
            res = rc.reconcile(
                self._ledger, snap, balance_tolerance=self._balance_tol,
                order_grace_s=self.spec.risk.order_grace_s,
                skip_tickers=frozenset(t for t, g in self._touched.items() if g > gen0),
                skip_orders=frozenset(o for o, g in self._order_gen.items() if g > gen0) | fresh,
                skip_balance=self._cash_gen > gen0)
            self._ledger.apply(res.corrections)
            self._count(res.discrepancies, "rest")
            self._n["reconciles"] += 1
            self._n["corrections"] += len(res.corrections)
            self._touched = {t: g for t, g in self._touched.items() if g > gen0}
            self._order_gen = {o: g for o, g in self._order_gen.items() if g > gen0}
            return self._record_report(snap, res.discrepancies, len(res.corrections), res.deferred, started,
                                       bootstrap=False)

    async def add_subscriber(self, handle: Any, method: str = "on_fill", replay: int = 0) -> bool:
        """``handle.<method>(FillNotice)`` for each new fill, in order, after the last ``replay``
        notices already sent (at most ``_HISTORY`` of them). False if already there (no replay)."""
        if handle in self._subs:
            return False
        queue: asyncio.Queue[FillNotice] = asyncio.Queue()
        for notice in list(self._history)[-replay:] if replay > 0 else ():
            queue.put_nowait(notice)
        task = asyncio.get_running_loop().create_task(self._deliver(handle, method, queue))
        self._subs[handle] = (method, queue, task)
        return True

    async def remove_subscriber(self, handle: Any) -> bool:
        entry = self._subs.pop(handle, None)
        if entry is not None:
            entry[2].cancel()
        return entry is not None

    async def stats(self) -> ReconcilerStats:
        n, last, view = self._n, self._last, self._ledger.view(time.time())
        return ReconcilerStats(
            account=self.spec.account, connected=self._ws.connected, synced=self._ledger.synced,
            restarted=self._restarted, reconnects=n["reconnects"], fills=n["fills"],
            duplicate_fills=n["duplicate_fills"], backfilled_fills=n["backfilled"],
            position_events=n["position_events"], decode_errors=n["decode_errors"],
            discrepancies=dict(self._disc),
            corrections=n["corrections"], bootstrap_corrections=n["bootstrap_corrections"],
            reconciles=n["reconciles"], reconcile_failures=n["failures"],
            last_reconcile_at=last.at if last else None, last_reconcile_s=last.duration_s if last else None,
            last_error=self._last_error, subscribers=len(self._subs), notify_errors=n["notify_errors"],
            unacked_rows=self._shipper.unacked_rows if self._shipper else 0,
            positions=sum(1 for p in view.positions.values() if p.qty), open_orders=len(view.open_orders))

    async def inject_divergence(self, positions: dict[str, tuple[int, int]] | None = None,
                                cash_delta: int = 0, drop_orders: bool = False) -> None:
        """Drills and tests only: corrupt the local ledger (qty, cost per market; cash; forget
        resting orders) so the next reconcile must find and fix it."""
        if positions:
            self._ledger.apply([SetPosition(ticker=t, qty=q, cost=c) for t, (q, c) in positions.items()])
        if drop_orders:
            self._ledger.orders.clear()
        pf = self._ledger.portfolio
        pf.cash = Money(max(pf.reserved, pf.cash + cash_delta))

    async def stop(self, timeout: float = 10.0) -> ReconcilerStats:
        """Close the connections and get every row acknowledged; then idle."""
        if not self._stopped:
            self._stopped = True
            tasks = self._tasks + [t for _, _, t in self._subs.values()]
            await stop_tasks(tasks, timeout=5.0)
            await self._ws.close()
            await self._rest.close()
        if self._shipper is not None and not await self._shipper.drain(timeout):
            log.error("reconciler %s: rows still unacknowledged after %.0fs", self.spec.account, timeout)
        return await self.stats()


# Unlimited restarts (a restart rebuilds from REST); no Ray task retries: callers retry.
PositionReconciler = ray.remote(max_restarts=-1, max_task_retries=0)(PositionReconcilerActor)


def start_reconciler(spec: ReconcilerSpec, *, name: str = "reconciler", write_queue: Any = None,
                     num_cpus: float = 0.1, **options: Any) -> Any:
    """Create the PositionReconciler actor (named ``name`` in ``spec.namespace`` if given)."""
    if spec.namespace is not None:
        options.setdefault("namespace", spec.namespace)
    return PositionReconciler.options(name=name, num_cpus=num_cpus, max_concurrency=64, **options).remote(
        spec, write_queue=write_queue)
