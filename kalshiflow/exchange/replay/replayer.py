"""Replay a recorded session into the exchange simulator, delta by delta.

A recorded session is, per market, a stream of typed events in sequence order: a snapshot, book
deltas, public trades, gaps and lifecycle changes (``RecordedMarketStream``). ``Replayer`` feeds
them into :class:`ExchangeState` through ``apply_external_delta``, so the simulator's WS clients
see the recorded books change exactly as the collector saw them, while a user's orders join the
queues and trade against that liquidity:

- a recorded negative delta that coincides with a recorded trade at the same level (the maker's
  ladder, within ``trade_window_s``) is applied with ``traded=True``: it consumes the level from
  the front and fills user orders ahead of the crowd, FIFO; any excess is a cancel;
- any other negative delta is a cancel (crowd leaves from the back; user orders never removed);
- a gap invalidates the market's recorded book: its deltas are skipped until the next snapshot,
  which re-synchronises the crowd volume level by level;
- "closed" / "settled" lifecycle events close and settle the market, paying user positions.

Pacing: ``advance(t)`` applies every event recorded at or before ``t`` (merged across markets by
recorded time, per-market seq order preserved); ``run(speed)`` maps the wall clock onto recorded
time. With a :class:`SimClock` on the state, every published event carries the recorded time.

Sources (see :mod:`.events` and :mod:`.record`): ``InMemoryMarketStream`` (any list of events;
the collection team's PostgreSQL loader only has to yield the same event types), and
``SessionRecorder`` / ``record_generated_session``, which record what an exchange publishes (the
generator's output) as a session (tests, demos).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from kalshiflow.exchange.events import MarketStatus
from kalshiflow.exchange.generator.port import SimClock
from kalshiflow.exchange.replay.events import (
    RecDelta,
    RecGap,
    RecordedEvent,
    RecordedMarketStream,
    RecSnapshot,
    RecStatus,
    RecTrade,
    maker_ladder,
)
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.prices import Price, Qty
from kalshiflow.market.types import Side


class ReplayStats(msgspec.Struct, kw_only=True):
    events: int = 0
    snapshots: int = 0
    deltas: int = 0
    traded_deltas: int = 0  # negative deltas applied as trades (fill user orders FIFO)
    cancel_deltas: int = 0
    split_deltas: int = 0  # a trade and a cancel recorded as one delta
    unmatched_trades: int = 0  # trades no delta was found for (not re-printed)
    gaps: int = 0
    skipped_after_gap: int = 0


class _Pending:
    __slots__ = ("ts", "seq", "left")

    def __init__(self, ts: float, seq: int, left: int) -> None:
        self.ts, self.seq, self.left = ts, seq, left


class _MarketCursor:
    """Reads one market's stream with a look-ahead window so a delta can be paired with a trade
    recorded shortly after it (Kalshi sends them on different channels, in either order)."""

    def __init__(self, order: int, stream: RecordedMarketStream, window: float) -> None:
        self.order = order
        self.market = stream.market
        self.ticker = stream.market.ticker
        self._it = iter(stream)
        self._window = window
        self._ahead: deque[RecordedEvent] = deque()
        self._done = False
        self.pending: dict[tuple[Side, int], list[_Pending]] = {}
        self.last_ts = float("-inf")
        self.listed = False
        self.gapped = False
        self.unmatched = 0  # recorded trades that expired without a delta to pair with

    def _pull(self) -> bool:
        if self._done:
            return False
        event = next(self._it, None)
        if event is None:
            self._done = True
            return False
        self._ahead.append(event)
        if type(event) is RecTrade:
            pending = _Pending(event.ts, event.seq, event.count)
            self.pending.setdefault(maker_ladder(event), []).append(pending)
        return True

    def peek(self) -> RecordedEvent | None:
        if not self._ahead and not self._pull():
            return None
        return self._ahead[0]

    def pop(self) -> RecordedEvent:
        event = self._ahead.popleft()
        # Keep two windows loaded: trades up to `window` after this event, and the decreases
        # that might be closer to those trades than this one (see take_trade).
        while (not self._done and (not self._ahead or self._ahead[-1].ts <= event.ts + 2 * self._window)
               and self._pull()):
            pass
        return event

    def _decreases_between(self, side: Side, price: int, lo: int, hi: int, qty: int | None) -> int:
        """Not-yet-applied decreases at this level (of exactly `qty`, if given) with lo < seq < hi."""
        return sum(1 for e in self._ahead
                   if type(e) is RecDelta and lo < e.seq < hi and e.delta < 0 and e.side is side
                   and e.price == price and (qty is None or -e.delta == qty))

    def take_trade(self, side: Side, price: int, ts: float, seq: int, qty: int) -> int:
        """Consume recorded trade volume at this level that this decrease of `qty` (at `ts`,
        `seq`) accounts for; return how much (0 = the decrease is a cancel).

        Candidates are trades at the maker's level within ``window`` seconds, nearest in the
        stream first (Kalshi stamps trades in whole seconds but sends a trade next to its delta,
        so stream position is the better witness). A trade later in the stream belongs to the
        nearest unpaired decrease before it: it is not taken while more same-size decreases lie
        between than same-size trades that could pair with them, so a cancel just before a fill
        never steals the fill's trade, while a sweep of equal fills still pairs one to one. A
        trade earlier in the stream that is still unpaired was passed over by every decrease
        before it, so it is this one's. Rules, most specific first: one trade of exactly `qty`;
        the nearest trades adding up to exactly `qty` (one delta for several fills, none with a
        decrease in between); trades stamped at the very same instant (a fill and a cancel merged
        into one delta).
        """
        queue = self.pending.get((side, price))
        if not queue:
            return 0
        window = self._window
        self.unmatched += sum(1 for p in queue if p.left and p.ts < ts - window)
        queue[:] = [p for p in queue if p.left and p.ts >= ts - window]
        near = sorted((p for p in queue if abs(p.ts - ts) <= window), key=lambda p: abs(p.seq - seq))

        def owns(p: _Pending) -> bool:
            if p.seq < seq:
                return True
            rivals = self._decreases_between(side, price, seq, p.seq, qty)
            return rivals <= sum(1 for o in near if seq < o.seq < p.seq and o.left == qty)

        chosen: list[_Pending] = []
        exact = next((p for p in near if p.left == qty and owns(p)), None)
        if exact is not None:
            chosen = [exact]
        else:
            total = 0
            for i, p in enumerate(near):
                if p.seq > seq and self._decreases_between(side, price, seq, p.seq, None):
                    break
                total += p.left
                if total == qty:
                    chosen = near[: i + 1]
                    break
            else:
                chosen = [p for p in near if p.ts == ts]
        taken = 0
        for p in chosen:
            n = min(qty - taken, p.left)
            p.left -= n
            taken += n
        queue[:] = [p for p in queue if p.left]
        if not queue:
            del self.pending[(side, price)]
        return taken


class Replayer:
    """Feeds recorded market streams into an ExchangeState (see the module docstring)."""

    def __init__(self, state: ExchangeState, streams: Iterable[RecordedMarketStream], *,
                 trade_window_s: float = 1.0, time_offset: float | None = None) -> None:
        """``time_offset`` is added to every recorded time (events and the markets' open/close
        times). None = automatic: a recording from the past is rebased to start at the state's
        clock (a live simulator shows current times, and its own timer does not close the
        replayed markets at once); a recording at or after the clock keeps its own times."""
        self.state = state
        clock = state.clock
        self._set_time: Callable[[float], None] | None = clock.set if isinstance(clock, SimClock) else None
        self.stats = ReplayStats()
        self._cursors = [_MarketCursor(i, s, trade_window_s) for i, s in enumerate(streams)]
        self._heap: list[tuple[float, int, int]] = []  # (recorded time, market, seq)
        for c in self._cursors:
            self._push(c)
        first = self._heap[0][0] if self._heap else None
        if time_offset is None:
            time_offset = max(0.0, clock() - first) if first is not None else 0.0
        self.offset = time_offset
        self.now: float = first + time_offset if first is not None else clock()

    def _push(self, c: _MarketCursor) -> None:
        event = c.peek()
        if event is not None:
            # Never earlier than the market's previous event: seq order wins over skewed clocks.
            c.last_ts = max(c.last_ts, event.ts)
            heapq.heappush(self._heap, (c.last_ts, c.order, event.seq))

    @property
    def done(self) -> bool:
        return not self._heap

    def next_time(self) -> float | None:
        """Replay time (recorded time + offset) of the next event."""
        return self._heap[0][0] + self.offset if self._heap else None

    def advance(self, to: float) -> int:
        """Apply every event whose replay time (recorded + offset) is <= `to`; returns how many."""
        n = 0
        limit = to - self.offset
        while self._heap and self._heap[0][0] <= limit:
            recorded, order, _ = heapq.heappop(self._heap)
            t = recorded + self.offset
            c = self._cursors[order]
            event = c.pop()
            if self._set_time is not None:
                self._set_time(t)
            self.now = max(self.now, t)
            self._apply(c, event)
            self._push(c)
            n += 1
        if self._set_time is not None and to > self.now and self._heap:
            self._set_time(to)
        self.stats.events += n
        # Trades still waiting for a delta count as unmatched once nothing can pair them.
        waiting = sum(len(q) for c in self._cursors for q in c.pending.values()) if not self._heap else 0
        self.stats.unmatched_trades = sum(c.unmatched for c in self._cursors) + waiting
        return n

    def run_to_end(self) -> int:
        return self.advance(float("inf"))

    async def run(self, speed: float = 1.0, *, stop: asyncio.Event | None = None, tick_s: float = 0.05,
                  wall: Callable[[], float] = time.monotonic) -> None:
        """Pace the replay by recorded timestamps: `speed` recorded seconds per wall second."""
        start = self.next_time()
        if start is None:
            return
        wall0 = wall()
        while self._heap and (stop is None or not stop.is_set()):
            self.advance(start + (wall() - wall0) * speed)
            nxt = self.next_time()
            if nxt is None:
                break
            elapsed_target = (nxt - start) / speed - (wall() - wall0)
            await asyncio.sleep(min(tick_s, max(0.0, elapsed_target)))

    # ------------------------------------------------------------------ applying events

    def _ensure_listed(self, c: _MarketCursor) -> None:
        if c.listed:
            return
        c.listed = True
        if self.state.market(c.ticker) is None:
            m = c.market
            info = msgspec.structs.replace(m, status=MarketStatus.INITIALIZED, result="",
                                           open_time=m.open_time + self.offset,
                                           close_time=m.close_time + self.offset)
            self.state.add_market(info)
        self.state.open_market(c.ticker)

    def _apply(self, c: _MarketCursor, event: RecordedEvent) -> None:
        self._ensure_listed(c)
        stats = self.stats
        if isinstance(event, RecDelta):
            if c.gapped:
                stats.skipped_after_gap += 1
            else:
                self._delta(c, event)
        elif isinstance(event, RecSnapshot):
            stats.snapshots += 1
            c.gapped = False
            self._resync(c, event)
        elif isinstance(event, RecGap):
            stats.gaps += 1
            c.gapped = True
        elif isinstance(event, RecStatus):
            self._status(c, event)
        # RecTrade: paired with its delta when the delta is applied (cursor look-ahead).

    def _external(self, ticker: str, side: Side, price: int, delta: int, traded: bool = False) -> None:
        self.state.apply_external_delta(ticker, side, Price(price), Qty(delta), traded)

    def _delta(self, c: _MarketCursor, d: RecDelta) -> None:
        stats = self.stats
        stats.deltas += 1
        if d.delta > 0:
            self._external(c.ticker, d.side, d.price, d.delta)
            return
        qty = -d.delta
        traded = c.take_trade(d.side, d.price, d.ts, d.seq, qty)
        if traded:
            stats.traded_deltas += 1
            self._external(c.ticker, d.side, d.price, -traded, traded=True)
        if traded < qty:
            if traded:
                stats.split_deltas += 1
            else:
                stats.cancel_deltas += 1
            self._external(c.ticker, d.side, d.price, -(qty - traded))

    def _resync(self, c: _MarketCursor, snap: RecSnapshot) -> None:
        """Make the crowd volume at every level match the snapshot (user orders untouched).

        Volume the user already took from the crowd is owed to the recording (the engine's
        per-level debt), so the crowd target is snapshot size minus that debt.
        """
        engine = self.state.venue.engine(c.ticker)
        for side, levels in ((Side.YES, snap.yes), (Side.NO, snap.no)):
            target = dict(levels)
            current = {p: q for p, q in engine.book.levels(side)}
            for price in sorted(set(target) | set(current)):
                crowd = sum(q for oid, q in engine.queue(side, price) if oid is None)
                want = max(0, target.get(price, 0) - engine.debt(side, price))
                if want != crowd:
                    self._external(c.ticker, side, price, want - crowd)

    def _status(self, c: _MarketCursor, s: RecStatus) -> None:
        info = self.state.market(c.ticker)
        if info is None:
            return
        if s.status == "closed":
            self.state.close_market(c.ticker)
        elif s.status == "settled" and s.result and info.status is not MarketStatus.FINALIZED:
            self.state.settle_market(c.ticker, s.result)


