"""Collector: one async Ray actor per shard of markets, ONE WebSocket connection for all of them.

A thin shell. It owns the connection (:class:`KalshiWsClient`: reconnects forever with backoff,
silence watchdog, new epoch per connection), the timers and the queues; every decision is made by
:class:`kalshiflow.collect.shard_state.ShardState` (books, seq per sid, gaps and recovery, rows),
:class:`~kalshiflow.collect.shipper.Shipper` (batches kept until the WriteQueue acknowledges them)
and :class:`~kalshiflow.collect.fanout.Fanout` (coalesced ``on_books`` to subscribers).

Every ``batch_interval_ms`` (sooner when ``max_batch_rows`` pile up) one batch of rows goes to the
WriteQueue in one Ray call. Book views go to subscribers sooner: right after the frames of one
receive burst are applied (the markets they changed, coalesced per subscriber by the Fanout), so
a delta reaches the Trader in one Ray call's time instead of waiting for the row batch.

A restarted actor (``max_restarts``) rebuilds from its spec: new epoch id (never reused), a gap
row of kind ``actor_restart``, fresh snapshots for every book. Markets added or dropped at
runtime are re-applied by the collection's supervisor (kalshiflow/collect/run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from kalshiflow.cancellation import stop_tasks
from kalshiflow.collect import selection
from kalshiflow.collect.book_link import BookLinks, LinkEndpoint
from kalshiflow.collect.epochs import EpochClock
from kalshiflow.collect.fanout import Fanout
from kalshiflow.collect.messages import BookTop, CollectorSpec, CollectorStats
from kalshiflow.collect.selection import MarketSpec
from kalshiflow.collect.shard_state import LIFECYCLE, ORDERBOOK, TRADE, Request, ShardState
from kalshiflow.collect.shipper import Rows, Shipper
from kalshiflow.collect.tops import book_view
from kalshiflow.market.types import Side
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.errors import WsCommandError, WsError
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.protocol.ws_client import KalshiWsClient, Subscription

log = logging.getLogger("kalshiflow.collector")

_RATE_WINDOW_S = 5.0
Level = tuple[int, int]  # (price ticks, size in hundredths)


def _was_restarted() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _frame_handler(collector: Any) -> Callable[[bytes, int], Any]:
    """The per-frame callback of a collector: a plain closure, not an actor method.

    Ray wraps every method of an actor class (private ones too) in a tracing shim that costs a
    Python call with ``*args``/``**kwargs`` on each invocation, even with tracing off; at one call
    per frame that is measurable next to the frame's own work.
    """
    state = collector._state
    counts = state.n
    shipper = collector._shipper
    wake_requests = collector._wake_requests
    wake_flush = collector._wake_flush
    flush_rows = collector._flush_rows
    max_unacked = collector.spec.collector.max_unacked_rows
    on_frame = state.on_frame
    changed = state.changed  # the markets changed since the last publish (mutated in place)
    subscribers = collector._fanout.subscribers
    fanout_touch = collector._fanout.touch
    take_changed = state.take_changed
    trades = state.trades_out  # public trades for subscribers (mutated in place)
    take_trades = state.take_trades
    call_soon = asyncio.get_running_loop().call_soon
    scheduled = [False]

    def publish() -> None:
        # Runs once the read loop yields, i.e. after every frame already received is applied: a
        # burst of frames becomes one publish, and a market changed twice in it is sent once.
        scheduled[0] = False
        if changed or trades:
            fanout_touch(take_changed(), take_trades())

    def handle(data: bytes, recv_ns: int) -> Any:
        on_frame(data, recv_ns)
        if (changed or trades) and subscribers and not scheduled[0]:
            scheduled[0] = True
            call_soon(publish)
        if state.has_requests:
            wake_requests.set()
        if not counts["frames"] & 255 and state.pending_rows() >= flush_rows:
            wake_flush.set()
        if shipper.unacked_rows > max_unacked:
            # Backpressure: the WS client awaits this before reading the next frame.
            return shipper.wait_below(max_unacked // 2)
        return None

    return handle


async def _link_endpoint(handle: Any) -> LinkEndpoint | None:
    """The subscriber's book link (kalshiflow.collect.book_link), None when it offers none."""
    try:
        method = handle.book_link
    except AttributeError:
        return None
    endpoint: LinkEndpoint | None = await method.remote()
    return endpoint


async def _ray_books(handle: Any, updates: list[BookTop]) -> object:
    return await handle.on_books.remote(updates)


@ray.remote(max_restarts=-1, max_task_retries=0)
class Collector:
    def __init__(self, spec: CollectorSpec) -> None:
        self.spec = spec
        cfg = spec.collector
        restarted = _was_restarted()
        self._first_cause = "actor_restart" if restarted else "start"
        self._state = ShardState(spec.session_id, spec.collector_id)
        for m in spec.markets:
            self._state.add_market(m.ticker, m.grid())
        self._epochs = EpochClock(
            bits=spec.epoch_bits, session_start_ns=spec.session_start_ns, shard_index=spec.shard_index,
            restarted=restarted,
        )
        self._wq: Any = None  # looked up by name when first needed (see _send_batch)
        self._shipper = Shipper(
            self._send_batch, max_inflight=cfg.max_inflight_batches, backoff_s=cfg.retry_backoff_s,
            backoff_max_s=cfg.retry_backoff_max_s,
        )
        self._links = BookLinks(_link_endpoint, _ray_books, ray.get_runtime_context().get_node_id())
        self._fanout = Fanout(self._links.send, self._state.view,
                              min_interval_s=cfg.publish_interval_ms / 1000)
        self._flush_rows = max(1, cfg.max_batch_rows)
        self._interval = max(0.001, cfg.batch_interval_ms / 1000)
        self._wake_flush = asyncio.Event()
        self._wake_requests = asyncio.Event()
        signer = Signer.from_credentials(spec.credentials) if spec.credentials else None
        self._ws = KalshiWsClient(
            spec.ws_url, signer=signer, config=spec.exchange, on_frame=_frame_handler(self),
            on_epoch=self._on_epoch, on_disconnect=self._on_disconnect,
            backoff_base_s=cfg.reconnect_backoff_s, backoff_max_s=cfg.reconnect_backoff_max_s,
        )
        self._rest = (
            KalshiRestClient(spec.rest_url, signer=signer, config=spec.exchange) if spec.rest_url else None
        )
        self._subs: dict[str, Subscription] = {}
        # Subscription changes one at a time: a market added while the first subscribe is still
        # waiting for the connection must not be left out of both commands.
        self._sub_lock = asyncio.Lock()
        self._closed: dict[str, str] = {}  # ticker -> why it was dropped by the collector itself
        self._incarnation = time.time_ns()
        self._batches = 0
        self._rates: deque[tuple[float, int]] = deque()
        self._ready = asyncio.Event()
        self._stopped = False
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="collector-run"),
            loop.create_task(self._flush_loop(), name="collector-flush"),
            loop.create_task(self._request_loop(), name="collector-requests"),
        ]
        if self._rest is not None and cfg.status_poll_s > 0:
            self._tasks.append(loop.create_task(self._status_loop(), name="collector-status"))
        log.info("collector %s: %d markets (%s)", spec.collector_id, len(spec.markets), self._first_cause)

    # ------------------------------------------------------------------ connection callbacks

    def _on_epoch(self, client_epoch: int) -> None:
        now = time.time_ns()
        cause = self._first_cause if self._state.epochs_begun == 0 else "reconnect"
        epoch = self._epochs.next(now)
        self._state.begin_epoch(epoch, now, cause)
        log.info("collector %s: connection %d is epoch %d (%s)", self.spec.collector_id, client_epoch, epoch,
                 cause)

    def _on_disconnect(self, client_epoch: int, reason: str) -> None:
        self._state.end_epoch(time.time_ns(), reason)
        self._wake_flush.set()

    # ------------------------------------------------------------------ tasks

    async def _run(self) -> None:
        await self._ws.start()
        delay = self.spec.collector.reconnect_backoff_s
        while True:
            try:
                async with self._sub_lock:
                    tickers = list(self._state.tickers)
                    if tickers:
                        await self._subscribe_markets(tickers)
                    if self.spec.collector.lifecycle and LIFECYCLE not in self._subs:
                        self._subs[LIFECYCLE] = await self._ws.subscribe(LIFECYCLE)
                break
            except (WsError, TimeoutError) as err:  # refused: try again (the client reconnects on its own)
                log.warning("collector %s: subscribing failed (%s); retrying", self.spec.collector_id, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.spec.collector.reconnect_backoff_max_s)
        self._ready.set()

    async def _subscribe_markets(self, tickers: list[str]) -> None:
        channels = [ORDERBOOK] + ([TRADE] if self.spec.collector.trades else [])
        for channel in channels:
            while tickers and channel not in self._subs:
                try:
                    self._subs[channel] = await self._ws.subscribe(channel, tickers)
                    break
                except WsCommandError as err:
                    if err.code != 16 or not err.market_ticker:
                        raise
                    # A market the exchange does not know: drop it rather than collect nothing.
                    log.warning("collector %s: %s unknown to the exchange, dropped", self.spec.collector_id,
                                err.market_ticker)
                    self._drop_local(err.market_ticker, "market not found")
                    tickers = [t for t in tickers if t != err.market_ticker]

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_flush.wait(), self._interval)
            self._wake_flush.clear()
            try:
                self._tick()
            except Exception:
                log.exception("collector %s: flush tick failed", self.spec.collector_id)

    def _tick(self) -> None:
        state = self._state
        now = time.time_ns()
        state.check_recovery(now, int(self.spec.collector.recovery_timeout_s * 1e9))
        if state.has_requests:
            self._wake_requests.set()
        rows = state.take_rows()
        if rows:
            self._batches += 1
            self._shipper.submit(f"{self.spec.collector_id}:{self._incarnation}:{self._batches}", rows)
        # Changes made outside a frame (a new connection invalidating every book) go out here;
        # without subscribers the set is just emptied.
        changed, trades = state.take_changed(), state.take_trades()
        state.publish_trades = bool(len(self._fanout))  # no subscriber (any more): keep no trades
        if (changed or trades) and len(self._fanout):
            self._fanout.touch(changed, trades)
        mono = time.monotonic()
        self._rates.append((mono, state.n["frames"]))
        while len(self._rates) > 2 and mono - self._rates[0][0] > _RATE_WINDOW_S:
            self._rates.popleft()

    async def _request_loop(self) -> None:
        while True:
            await self._wake_requests.wait()
            self._wake_requests.clear()
            for request in self._state.take_requests():
                try:
                    await self._execute(request)
                except (WsError, TimeoutError) as err:
                    # Not fatal: an unanswered recovery is escalated by check_recovery.
                    log.warning("collector %s: %s failed: %s", self.spec.collector_id, request.kind, err)
                except Exception:
                    log.exception("collector %s: %s failed", self.spec.collector_id, request.kind)

    async def _execute(self, request: Request) -> None:
        log.info("collector %s: %s %d markets (%s)", self.spec.collector_id, request.kind,
                 len(request.tickers), request.reason)
        if request.kind == "drop":
            await self.drop_markets(list(request.tickers), reason=request.reason)
            return
        if request.kind == "reconnect":
            self._ws.reconnect()
            return
        sub = self._subs.get(request.channel)
        if sub is None:
            return
        if request.kind == "get_snapshot":
            await self._ws.get_snapshot(sub, list(request.tickers))
        elif request.kind == "resync":
            try:
                self._subs[request.channel] = await self._ws.resync(sub)
            except WsCommandError:
                # The server had already dropped the sid (terminal error): subscribe afresh.
                self._subs[request.channel] = await self._ws.subscribe(sub.channel, list(sub.market_tickers))

    async def _status_loop(self) -> None:
        assert self._rest is not None
        while True:
            await asyncio.sleep(self.spec.collector.status_poll_s)
            tickers = list(self._state.tickers)
            if not tickers:
                continue
            try:
                closed = await selection.closed_markets(self._rest, tickers)
            except Exception as err:
                log.warning("collector %s: market status poll failed: %s", self.spec.collector_id, err)
                continue
            if closed:
                await self.drop_markets(closed, reason="closed (REST status)")

    # ------------------------------------------------------------------ Ray calls out

    async def _send_batch(self, batch_id: str, rows: Rows) -> object:
        # By name, not a handle passed to the constructor: Ray keeps constructor arguments that
        # hold references in the object store, where a restart could find them gone. The named
        # actor may not be registered yet at our start; ValueError is retried like any failure.
        if self._wq is None:
            self._wq = ray.get_actor(self.spec.writequeue, namespace=self.spec.namespace)
        return await self._wq.enqueue.remote(batch_id, rows)

    # ------------------------------------------------------------------ actor API

    async def ready(self, timeout: float | None = None) -> bool:
        """True once connected and subscribed (False on timeout)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            await self._ws.wait_ready(timeout)
        except TimeoutError:
            return False
        return True

    async def add_markets(self, markets: list[MarketSpec]) -> list[str]:
        """Collect more markets (``update_subscription add_markets``); returns those that were new."""
        added = [m.ticker for m in markets if self._state.add_market(m.ticker, m.grid())]
        for t in added:
            self._closed.pop(t, None)
        if not added:
            return []
        async with self._sub_lock:
            if ORDERBOOK not in self._subs:
                await self._subscribe_markets(list(self._state.tickers))
                return added
            for channel in (ORDERBOOK, TRADE):
                sub = self._subs.get(channel)
                if sub is not None:
                    await self._ws.add_markets(sub, added)
        return added

    async def drop_markets(self, tickers: list[str], reason: str = "requested") -> list[str]:
        """Stop collecting markets (``update_subscription delete_markets``); returns those dropped."""
        dropped = [t for t in dict.fromkeys(tickers) if self._drop_local(t, reason)]
        if not dropped:
            return []
        async with self._sub_lock:
            for channel in (ORDERBOOK, TRADE):
                sub = self._subs.get(channel)
                if sub is not None:
                    try:
                        await self._ws.delete_markets(sub, dropped)
                    except WsError as err:  # the next re-subscribe carries the shorter list anyway
                        log.warning("collector %s: delete_markets failed: %s", self.spec.collector_id, err)
        return dropped

    def _drop_local(self, ticker: str, reason: str) -> bool:
        if not self._state.drop_market(ticker, time.time_ns()):
            return False
        if reason != "requested":
            self._closed[ticker] = reason
        return True

    async def markets(self) -> list[str]:
        return list(self._state.tickers)

    async def closed_markets(self) -> dict[str, str]:
        """Markets this collector dropped on its own (settled, closed, unknown): ticker -> why."""
        return dict(self._closed)

    async def add_subscriber(self, handle: Any, tickers: list[str] | None = None) -> bool:
        """Send ``handle.on_books(list[BookTop])`` for these markets (None = all) as they change,
        one call in flight (coalesced meanwhile). Idempotent: False if ``handle`` already had
        exactly these."""
        if not self._fanout.add(handle, tickers):
            return False
        self._state.publish_trades = True
        # Start the subscriber off with the current state of its markets.
        tops = self._current_tops()
        self._fanout.publish({t: top for t, top in tops.items() if tickers is None or t in tickers})
        return True

    async def remove_subscriber(self, handle: Any) -> bool:
        self._links.forget(handle)
        return self._fanout.remove(handle)

    def _current_tops(self) -> dict[str, BookTop]:
        now = time.time_ns()
        return {t: book_view(b, self._state.epoch, 0, now, None)
                for t in self._state.tickers if (b := self._state.book(t)) is not None}

    async def books(
        self, tickers: list[str] | None = None
    ) -> dict[str, tuple[bool, list[Level], list[Level]]]:
        """(valid, YES levels, NO levels) per market: for tests and debugging."""
        out = {}
        for ticker in tickers if tickers is not None else self._state.tickers:
            book = self._state.book(ticker)
            if book is not None:
                out[ticker] = (not book.invalid, book.levels(Side.YES), book.levels(Side.NO))
        return out

    async def received(self) -> int:
        """Order-book deltas received so far (a cheap progress probe; ``stats`` has the rest)."""
        return int(self._state.n["deltas"])

    async def flush(self, timeout: float | None = 30.0) -> bool:
        """Ship what is buffered now and wait until every batch is acknowledged."""
        self._tick()
        return await self._shipper.drain(timeout)

    async def stats(self) -> CollectorStats:
        state, ship, n = self._state, self._shipper, self._state.n
        snapshot_requests, resyncs = state.recovery_counts()
        seq = state.sequencer_counts()
        lag_mean, lag_max = state.lag_summary()
        rate = 0.0
        if len(self._rates) >= 2:
            (t0, f0), (t1, f1) = self._rates[0], self._rates[-1]
            rate = (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0
        return CollectorStats(
            collector_id=self.spec.collector_id, session_id=self.spec.session_id, epoch=state.epoch,
            connected=self._ws.connected, markets=len(state.tickers), messages=n["frames"],
            messages_per_s=rate, deltas=n["deltas"], snapshots=n["snapshots"], trades=n["trades"],
            gaps=n["gaps"],
            duplicates=seq["duplicate"], out_of_order=seq["out_of_order"], book_errors=n["book_errors"],
            decode_errors=n["decode_errors"], unknown_frames=n["unknown_frames"],
            reconnects=max(0, state.epochs_begun - 1), recoveries_requested=snapshot_requests,
            resyncs=resyncs, lag_ms_mean=lag_mean, lag_ms_max=lag_max, batches_sent=ship.n["sent"],
            batches_acked=ship.n["acked"], batches_retried=ship.n["retried"],
            unacked_batches=ship.unacked_batches, unacked_rows=ship.unacked_rows,
            rows_acked=ship.n["rows_acked"],
            per_market=tuple(state.market_stats()), epochs=tuple(state.epoch_log),
            subscribers=len(self._fanout), subscribers_removed=self._fanout.removed,
            trades_dropped=self._fanout.trades_dropped,
        )

    async def stop(self, timeout: float = 30.0) -> CollectorStats:
        """Close the connection, ship every row and wait for the acknowledgements; then idle."""
        if not self._stopped:
            self._stopped = True
            await stop_tasks(self._tasks, timeout=5.0)
            await self._ws.close()
            if self._state.epoch:
                self._state.end_epoch(time.time_ns(), "stopped")
            if self._rest is not None:
                await self._rest.close()
            await self._fanout.close()
            self._links.close()
        self._tick()
        if not await self._shipper.drain(timeout):
            log.error("collector %s: %d rows still unacknowledged after %.0fs", self.spec.collector_id,
                      self._shipper.unacked_rows, timeout)
        return await self.stats()
