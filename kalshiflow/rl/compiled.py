"""A recorded market stream compiled for the RL env: flat event lists + the live path's state.

:func:`compile_stream` turns one market stream into flat Python lists the env replays without
per-event objects: event kind/side/price/qty, and the recorded-trade pairing of every negative
delta (the exchange replayer's own rule, ``exchange.replay``). It also runs the LIVE observation
path (:class:`StreamFeed`: a plain OrderBook + FeatureState, what the live trader runs) over the
stream once and keeps its state after every event, book checkpoints, and (lazily, per decision
interval) the market features at every decision time. While the agent has no orders working and
has left no trace in the book, the env reads that precomputed state instead of replaying
through the matching engine; because the live path produced it, the two agree by construction
(tests/rl check it bit for bit).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import msgspec
import numpy as np

from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.replay import (
    RecDelta,
    RecGap,
    RecordedEvent,
    RecordedMarketStream,
    RecSnapshot,
    RecStatus,
    RecTrade,
)

# The replayer's delta <-> trade pairing rule. Private there; used here (rather than copied) so the
# env and the exchange simulator classify every recorded decrease identically.
from kalshiflow.exchange.replay.replayer import _MarketCursor
from kalshiflow.market.book import OrderBook
from kalshiflow.market.fees import FeeSchedule
from kalshiflow.market.prices import PRICE_SCALE, PriceGrid, grid_by_name
from kalshiflow.market.types import Side
from kalshiflow.rl.features import (
    EMPTY_TOP,
    FLOW_WINDOW_S,
    MEMORY_S,
    N_MARKET_FEATURES,
    FeatureState,
    market_features,
)

__all__ = [
    "CHECKPOINT_EVERY", "K_ADD", "K_CLOSE", "K_GAP", "K_REMOVE", "K_SNAPSHOT", "K_TRADE", "ROW_BLOCK",
    "CompiledMarket", "StreamFeed", "compile_stream",
]

CHECKPOINT_EVERY = 64
ROW_BLOCK = 1024  # precomputed market-feature rows per block
# Event kinds of a compiled market (a = side index 0 YES / 1 NO for book events).
K_ADD, K_REMOVE, K_TRADE, K_SNAPSHOT, K_GAP, K_CLOSE = range(6)
_SIDES = (Side.YES, Side.NO)
_BOOK_KINDS = (K_ADD, K_REMOVE, K_SNAPSHOT)


class CompiledMarket:
    """One market's recorded stream as flat lists (see the module docstring).

    Event i: ``ts[i]`` (non-decreasing), ``kind[i]``, ``a[i]`` (side index), ``b[i]`` (ladder price,
    or yes_price for trades, or snapshot index), ``c[i]`` (added / traded / trade count Qty),
    ``d[i]`` (cancelled Qty of a removal; taker side index of a trade). State arrays have n+1
    entries: index i = after the first i events (``top``, ``valid``, ``last_ts``, ``hlen``/``tlen``
    = lengths of the history/trade logs ``hts``/``hmid``/``tts``/``tsigned``/``tabs``, ``nbook`` =
    book changes so far).
    """

    def __init__(self, info: MarketInfo, grid: PriceGrid, fees: FeeSchedule) -> None:
        self.info, self.ticker, self.grid, self.fees = info, info.ticker, grid, fees
        self.close_time = info.close_time
        self.ts: list[float] = []
        self.kind: list[int] = []
        self.a: list[int] = []
        self.b: list[int] = []
        self.c: list[int] = []
        self.d: list[int] = []
        self.snaps: list[tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]] = []
        self.snap_at: list[int] = []  # event index of every snapshot
        self.top: list[tuple[int, ...]] = [EMPTY_TOP]
        self.valid: list[bool] = [False]
        self.last_ts: list[float | None] = [None]
        self.hlen: list[int] = [0]
        self.tlen: list[int] = [0]
        self.nbook: list[int] = [0]  # book changes (add / remove / snapshot) among the first i events
        self.hts: list[float] = []
        self.hmid: list[int] = []
        self.tts: list[float] = []
        self.tsigned: list[int] = []
        self.tabs: list[int] = []
        self.checkpoints: list[tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]] = []
        self.result: bool | None = None  # settlement (YES wins), when the stream knows it
        self.close_idx = 0  # index of the close event (== n when the stream never closes)
        self.start_ts = 0.0  # first snapshot: the book is known from here
        self.end_ts = 0.0  # data ends (the close, or the last event, or a static book's horizon)
        self._rows: dict[tuple[float, int], np.ndarray] = {}
        self._crossed: bool | None = None
        # The env's order requests by (action table, action, yes bid, no bid) (rl.sim).
        self.requests: dict[tuple[object, int, int, int], Any] = {}  # OrderRequest | CancelAll | None

    @property
    def n(self) -> int:
        return len(self.ts)

    def _emit(self, ts: float, kind: int, a: int, b: int, c: int, d: int) -> None:
        self.ts.append(ts)
        self.kind.append(kind)
        self.a.append(a)
        self.b.append(b)
        self.c.append(c)
        self.d.append(d)

    def _record(self, feed: StreamFeed) -> None:
        """Store the live path's state after the event just emitted (+ a checkpoint every K)."""
        fs = feed.state
        self.top.append(fs.top)
        self.valid.append(fs.valid)
        self.last_ts.append(fs.last_book_ts)
        self.hlen.append(len(fs.hts))
        self.tlen.append(len(fs.tts))
        self.nbook.append(self.nbook[-1] + (self.kind[-1] in _BOOK_KINDS))
        if len(self.ts) % CHECKPOINT_EVERY == 0:
            self.checkpoints.append((tuple(feed.book.levels(Side.YES)), tuple(feed.book.levels(Side.NO))))

    def next_snapshot(self, i: int) -> int:
        """Index of the first snapshot event at or after event i (n if none)."""
        k = bisect_right(self.snap_at, i - 1)
        return self.snap_at[k] if k < len(self.snap_at) else self.n

    @property
    def ever_crossed(self) -> bool:
        """The recorded book is crossed or locked after some event (best YES + best NO bid >= $1):
        there the matching engine trades crowd against crowd, so it never equals the recording."""
        crossed = self._crossed
        if crossed is None:
            crossed = self._crossed = any(t[0] and t[1] and t[0] + t[1] >= PRICE_SCALE for t in self.top)
        return crossed

    @property
    def feature_close_time(self) -> float:
        """The close time features use (recordings may not know it: far away)."""
        return self.close_time if self.close_time > 0 else float("inf")

    def state_at(self, i: int, now: float) -> FeatureState:
        """The live path's FeatureState after the first ``i`` events, restored for observing at
        ``now`` or later: the book top, and the history inside the memory window (the mid in
        effect at now - MEMORY_S onwards, trades after now - FLOW_WINDOW_S). Every observation
        from ``now`` on equals the one of a feed that ran since the stream began."""
        fs = FeatureState()
        fs.set_top(self.top[i], self.valid[i], self.last_ts[i])
        h1, t1 = self.hlen[i], self.tlen[i]
        h0 = max(0, bisect_right(self.hts, now - MEMORY_S, 0, h1) - 1)
        t0 = bisect_right(self.tts, now - FLOW_WINDOW_S, 0, t1)
        fs.extend(self.hts[h0:h1], self.hmid[h0:h1], self.tts[t0:t1], self.tsigned[t0:t1], self.tabs[t0:t1])
        return fs

    def market_row(self, dt: float, k: int) -> np.ndarray:
        """float32 (N_MARKET_FEATURES,): the market features at t_k = start_ts + k * dt — what
        the live path observes there. Computed in blocks of ROW_BLOCK grid times on first use and
        shared by every episode on this grid (a market spanning days costs only what is used)."""
        return self.row_block(dt, k)[k % ROW_BLOCK]

    def row_block(self, dt: float, k: int) -> np.ndarray:
        """The block of precomputed rows holding grid index k (rows k - k % ROW_BLOCK onward)."""
        b = k // ROW_BLOCK
        block = self._rows.get((dt, b))
        if block is None:
            block = self._rows[(dt, b)] = self._row_block(dt, b)
        return block

    def grid_len(self, dt: float) -> int:
        """Number of grid times start_ts + k * dt up to end_ts."""
        return int((self.end_ts - self.start_ts) // dt) + 1

    def _row_block(self, dt: float, b: int) -> np.ndarray:
        k0 = b * ROW_BLOCK
        n = max(0, min(ROW_BLOCK, self.grid_len(dt) - k0))
        out = np.empty((n, N_MARKET_FEATURES), np.float32)
        close = self.feature_close_time
        t = self.start_ts + k0 * dt
        i = bisect_right(self.ts, t, 0, self.close_idx)
        fs = self.state_at(i, t)
        for r in range(n):
            t = self.start_ts + (k0 + r) * dt
            j = bisect_right(self.ts, t, i, self.close_idx)
            if j > i:  # the idle replay: append what the live path logged, set its top
                h0, h1, t0, t1 = self.hlen[i], self.hlen[j], self.tlen[i], self.tlen[j]
                fs.extend(self.hts[h0:h1], self.hmid[h0:h1], self.tts[t0:t1], self.tsigned[t0:t1],
                          self.tabs[t0:t1])
                fs.set_top(self.top[j], self.valid[j], self.last_ts[j])
                i = j
            out[r] = market_features(fs, t, close)
        return out

    def book_at(self, i: int) -> OrderBook:
        """The recorded L2 book after the first ``i`` events (checkpoint + replay)."""
        j = min(i // CHECKPOINT_EVERY, len(self.checkpoints) - 1)
        book = OrderBook(self.ticker, self.grid)
        yes, no = self.checkpoints[j]
        book.apply_snapshot(yes, no)
        valid = self.valid[j * CHECKPOINT_EVERY]
        for k in range(j * CHECKPOINT_EVERY, i):
            kind = self.kind[k]
            if kind == K_ADD:
                book.apply_delta(_SIDES[self.a[k]], self.b[k], self.c[k])
            elif kind == K_REMOVE:
                book.apply_delta(_SIDES[self.a[k]], self.b[k], -(self.c[k] + self.d[k]))
            elif kind == K_SNAPSHOT:
                book.apply_snapshot(*self.snaps[self.b[k]])
                valid = True
            elif kind == K_GAP:
                valid = False
        if not valid:
            book.invalidate("gap")
        return book


class StreamFeed:
    """The live observation path over recorded events: an OrderBook + a FeatureState, updated the
    way the live trader updates them from the WS feed (deltas skipped while the book is unknown:
    before the first snapshot and between a gap and the next one, as the replayer does)."""

    def __init__(self, ticker: str, grid: PriceGrid) -> None:
        self.book = OrderBook(ticker, grid)
        self.state = FeatureState()
        self.gapped = True  # the book is unknown until the first snapshot, as after a gap
        self.closed = False

    def on_event(self, ev: RecordedEvent) -> None:
        kind = type(ev)
        if kind is RecDelta:
            if not self.gapped and not self.closed:
                self.book.apply_delta(ev.side, ev.price, ev.delta)  # type: ignore[union-attr]
                self.state.on_book(ev.ts, self.book)
        elif kind is RecTrade:
            self.state.on_trade(ev.ts, ev.yes_price, ev.count, ev.taker_side)  # type: ignore[union-attr]
        elif kind is RecSnapshot:
            self.gapped = False
            self.book.apply_snapshot(ev.yes, ev.no)  # type: ignore[union-attr]
            self.state.on_snapshot(ev.ts, self.book)
        elif kind is RecGap:
            self.gapped = True
            self.book.invalidate("gap")
            self.state.on_gap(ev.ts)
        elif kind is RecStatus and ev.status in ("closed", "settled"):  # type: ignore[union-attr]
            self.closed = True


def _market_fees(info: MarketInfo) -> FeeSchedule:
    mult = info.fee_multiplier
    return FeeSchedule(fee_type=info.fee_type, fee_multiplier=int(mult) if float(mult).is_integer() else mult)


def compile_stream(stream: RecordedMarketStream, *, trade_window_s: float = 1.0,
                   end_ts: float | None = None) -> CompiledMarket:
    """Compile one market stream (see :class:`CompiledMarket`). ``end_ts``: when the data stops
    being valid if the stream does not say (default: its last event)."""
    info = stream.market
    grid = grid_by_name(info.price_level_structure)
    m = CompiledMarket(info, grid, _market_fees(info))
    cursor = _MarketCursor(0, stream, trade_window_s)
    feed = StreamFeed(info.ticker, grid)
    fs = feed.state
    last_ts = float("-inf")
    closed_at: int | None = None
    while cursor.peek() is not None:
        ev = cursor.pop()
        raw_ts = ev.ts
        ts = last_ts = max(last_ts, ev.ts)  # seq order wins over skewed clocks, as in the replayer
        if ts != ev.ts:
            ev = msgspec.structs.replace(ev, ts=ts)
        kind = type(ev)
        if kind is RecStatus:
            if ev.status in ("closed", "settled") and closed_at is None:  # type: ignore[union-attr]
                closed_at = len(m.ts)
                m._emit(ts, K_CLOSE, 0, 0, 0, 0)
            if ev.result:  # type: ignore[union-attr]
                m.result = ev.result == "yes"  # type: ignore[union-attr]
            continue
        if closed_at is not None:
            continue
        if kind is RecDelta:
            if feed.gapped:
                feed.on_event(ev)
                continue
            side = 0 if ev.side is Side.YES else 1  # type: ignore[union-attr]
            if ev.delta > 0:  # type: ignore[union-attr]
                m._emit(ts, K_ADD, side, ev.price, ev.delta, 0)  # type: ignore[union-attr]
            else:
                qty = -ev.delta  # type: ignore[union-attr]
                traded = cursor.take_trade(ev.side, ev.price, raw_ts, ev.seq, qty)  # type: ignore[union-attr]
                m._emit(ts, K_REMOVE, side, ev.price, traded, qty - traded)  # type: ignore[union-attr]
        elif kind is RecTrade:
            m._emit(ts, K_TRADE, 0 if ev.taker_side is Side.YES else 1, ev.yes_price, ev.count, 0)  # type: ignore[union-attr]
        elif kind is RecSnapshot:
            m.snaps.append((tuple(ev.yes), tuple(ev.no)))  # type: ignore[union-attr]
            m.snap_at.append(len(m.ts))
            m._emit(ts, K_SNAPSHOT, 0, len(m.snaps) - 1, 0, 0)
            if not m.start_ts:
                m.start_ts = ts
        elif kind is RecGap:
            m._emit(ts, K_GAP, 0, 0, 0, 0)
        feed.on_event(ev)
        m._record(feed)
    if info.result and m.result is None:
        m.result = info.result == "yes"
    m.close_idx = closed_at if closed_at is not None else m.n
    if closed_at is not None:
        m._record(feed)  # the close event's own state slot: nothing changed
        m.end_ts = m.ts[closed_at]
    else:
        m.end_ts = end_ts if end_ts is not None else (m.ts[-1] if m.ts else 0.0)
    if not m.start_ts:
        m.start_ts = m.end_ts
    m.checkpoints.insert(0, ((), ()))
    # The feed's logs were never trimmed (no observe() ran on it): they are the full history.
    m.hts, m.hmid, m.tts, m.tsigned, m.tabs = fs.hts, fs.hmid, fs.tts, fs.tsigned, fs.tabs
    return m
