"""The trader's market-data input: collector book updates -> the SAME live path the env compiles.

Every market the trader watches has one :class:`MarketFeed`, which wraps
:class:`kalshiflow.rl.compiled.StreamFeed` -- the very object the RL env runs over a recorded stream
to precompute its observations (an OrderBook + a :class:`~kalshiflow.rl.features.FeatureState`).
Book updates are turned into the recorded-event types that path consumes (``RecSnapshot`` for a
valid book, ``RecGap`` for an invalid one, ``RecTrade`` for public trades), with the recorder's
timestamp rule (exchange time when the frame carries one, else receive time; clamped
non-decreasing per market, as ``compile_stream`` does). Same events in -> same observations out
(prior-system-lessons §8.3; tests/trading/test_decision.py replays one stream through both).

What the collectors send is coalesced (one update per market per receive burst, and per call
in flight to the trader): a mid that moved twice inside one burst is seen once, with the later
timestamp. The features read the mid history at look-backs of 10 s and more, so this only
matters when a look-back lands inside such a burst; docs/trading.md says more. Depth comes with
the update: the collector sends the best ``BookTop.depth`` levels a side (the observation's
DEPTH_LEVELS), and the feed records how deep its book is known (``depth``); only for an update
without levels does the trader ask the collector for the whole ladders (``deepen``), and a feed
left with the top alone says so.

Pure: no Ray, no clock of its own (:class:`FeedClock` is fed wall times by the caller).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import msgspec

from kalshiflow.collect.messages import BookTop
from kalshiflow.exchange.replay.events import RecGap, RecSnapshot, RecTrade
from kalshiflow.market.book import OrderBook
from kalshiflow.market.fees import FeeCalculator, FeeSchedule, calculator
from kalshiflow.market.prices import GRIDS, LINEAR_CENT, PRICE_SCALE, PriceGrid, PriceRange
from kalshiflow.protocol import rest_models as rm
from kalshiflow.rl.compiled import StreamFeed
from kalshiflow.rl.features import DEPTH_LEVELS, FeatureState

__all__ = [
    "FULL_DEPTH", "BookUpdate", "FeedClock", "Levels", "MarketFeed", "MarketMeta", "as_levels", "event_ts",
    "from_top", "parse_close_time",
]

Levels = tuple[tuple[int, int], ...]  # (ladder price ticks, size Qty)
FULL_DEPTH = sys.maxsize  # MarketFeed.depth of a book fed whole ladders


def event_ts(received_ts_ns: int, exchange_ts_ms: int | None) -> float:
    """Seconds: exchange time when known, else receive time (the session loader's rule)."""
    return exchange_ts_ms / 1000.0 if exchange_ts_ms is not None else received_ts_ns / 1e9


def parse_close_time(text: str | None) -> float:
    """Epoch seconds of an ISO close time; inf when unknown (the env's ``feature_close_time``)."""
    if not text:
        return math.inf
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.inf


class MarketMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What the trader needs to know about a market besides its book."""

    ticker: str
    grid_name: str = LINEAR_CENT.name
    ranges: tuple[PriceRange, ...] = ()
    close_time: float = math.inf  # epoch seconds (exchange clock)
    fees: FeeSchedule = FeeSchedule()

    def grid(self) -> PriceGrid:
        shared = GRIDS.get(self.grid_name)
        if shared is not None and (not self.ranges or shared.ranges == self.ranges):
            return shared
        return PriceGrid(self.grid_name, self.ranges) if self.ranges else LINEAR_CENT

    @classmethod
    def from_market(cls, m: rm.Market) -> MarketMeta:
        return cls(ticker=m.ticker, grid_name=m.price_level_structure, ranges=tuple(m.price_ranges),
                   close_time=parse_close_time(m.close_time))


class BookUpdate(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One market's book as the trader feeds it: the collector's top-of-book message plus, when
    known, the ladders (bids per side, own-leg ticks) and the public trades since the last
    update. ``depth``: the ladders are each side's best ``depth`` levels (a side with fewer is
    complete); None: whole ladders. ``received_ns``: when the collector received the frame
    (latency accounting)."""

    ticker: str
    epoch: int
    seq: int
    valid: bool
    ts: float
    received_ns: int
    yes_bid: int | None = None
    yes_bid_size: int = 0
    yes_ask: int | None = None
    yes_ask_size: int = 0
    yes: Levels | None = None
    no: Levels | None = None
    depth: int | None = None
    trades: tuple[RecTrade, ...] = ()
    book_changed: bool = True  # False: only trades to add (the book is as last sent)

    def top_levels(self) -> tuple[Levels, Levels]:
        """The ladders as far as the top alone tells: best bid per side (asks are 1 - NO bids)."""
        yes = ((self.yes_bid, self.yes_bid_size),) if self.yes_bid and self.yes_bid_size > 0 else ()
        no_bid = PRICE_SCALE - self.yes_ask if self.yes_ask is not None else None
        no = ((no_bid, self.yes_ask_size),) if no_bid and self.yes_ask_size > 0 else ()
        return yes, no


class MarketFeed:
    """One market's live observation state (see the module docstring)."""

    __slots__ = ("meta", "grid", "fees", "stream", "last_ts", "last_key", "updates", "stale_updates",
                 "depth", "book_errors", "last_received_ns", "trades")

    def __init__(self, meta: MarketMeta) -> None:
        self.meta = meta
        self.grid = meta.grid()
        self.fees: FeeCalculator = calculator(meta.fees)
        self.stream = StreamFeed(meta.ticker, self.grid)
        self.last_ts = -math.inf
        self.last_key: tuple[int, int] | None = None  # (epoch, seq) of the last update applied
        self.updates = 0
        self.stale_updates = 0
        self.book_errors = 0
        # The book holds each side's best ``depth`` levels exactly (deeper ones may be missing).
        self.depth = FULL_DEPTH
        self.last_received_ns = 0
        self.trades = 0  # public trades fed (0 live while the collectors publish none: see docs)

    @property
    def state(self) -> FeatureState:
        return self.stream.state

    @property
    def book(self) -> OrderBook:
        return self.stream.book

    @property
    def depth_complete(self) -> bool:
        """The book is as deep as the observation reads (DEPTH_LEVELS a side)."""
        return self.depth >= DEPTH_LEVELS

    @property
    def seen(self) -> bool:
        """True once any update arrived (before that there is nothing to observe)."""
        return self.last_key is not None

    def apply(self, u: BookUpdate) -> bool:
        """Feed one update; False when it is older than what was applied (dropped)."""
        key = (u.epoch, u.seq)
        # Same epoch: seq orders frames. A new epoch (reconnect, restart) always wins. seq 0 is a
        # collector's "current state" message at subscription time: accept it.
        if self.last_key is not None and u.seq and key[0] == self.last_key[0] and key[1] < self.last_key[1]:
            self.stale_updates += 1
            return False
        self.last_key = key
        self.last_received_ns = u.received_ns
        self.updates += 1
        stream = self.stream
        t = self.last_ts
        for trade in u.trades:  # trades first: they happened before the book state we end on
            t = max(t, trade.ts)
            stream.on_event(trade if t == trade.ts else msgspec.structs.replace(trade, ts=t))
            self.trades += 1
        ts = self.last_ts = max(t, u.ts)
        if not u.valid:
            if not stream.gapped:
                stream.on_event(RecGap(seq=u.seq, ts=ts, reason="collector: book invalid"))
            return True
        if not u.book_changed and stream.state.valid and not stream.gapped:
            return True  # a trade is not a book change: book age and mid history stay as they are
        if u.yes is not None and u.no is not None:
            yes, no = u.yes, u.no
            self.depth = FULL_DEPTH if u.depth is None else u.depth
        else:
            yes, no = u.top_levels()
            self.depth = 1
        try:
            stream.on_event(RecSnapshot(seq=u.seq, ts=ts, yes=yes, no=no))
        except ValueError:  # a ladder off this market's grid: treat like a gap, never trade on it
            self.book_errors += 1
            stream.on_event(RecGap(seq=u.seq, ts=ts, reason="book error"))
        return True

    def deepen(self, yes: Levels, no: Levels) -> bool:
        """The full ladders behind the top-of-book update applied last (fetched from the collector
        just before a decision): the book gets its depth, at the same time and sequence. False
        (nothing done) while the book is invalid."""
        stream = self.stream
        if self.last_key is None or stream.gapped or not stream.state.valid:
            return False
        try:
            stream.on_event(RecSnapshot(seq=self.last_key[1], ts=self.last_ts, yes=yes, no=no))
        except ValueError:
            self.book_errors += 1
            return False
        self.depth = FULL_DEPTH
        return True


class FeedClock:
    """Exchange time, estimated from the feed: the latest exchange timestamp seen, advanced by
    the wall time since then x ``rate`` (1.0 live; the simulator's ``speed`` when it runs
    faster than the wall). Observations use it as "now", so the env's time arithmetic (book
    age, look-backs, time to close) reads the same clock as the recorded timestamps."""

    __slots__ = ("rate", "ts", "wall")

    def __init__(self, rate: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("clock rate must be > 0")
        self.rate = rate
        self.ts: float | None = None
        self.wall = 0.0

    def observe(self, ts: float, wall: float) -> None:
        now = self.now(wall)
        if now is None or ts > now:
            self.ts, self.wall = ts, wall

    def now(self, wall: float) -> float | None:
        if self.ts is None:
            return None
        return self.ts + max(0.0, wall - self.wall) * self.rate

    def wall_seconds(self, exchange_seconds: float) -> float:
        return exchange_seconds / self.rate


def as_levels(levels: Sequence[tuple[int, int]]) -> Levels:
    """A collector's level list (any sequence of pairs) as the immutable form the feed keeps."""
    return tuple((int(p), int(q)) for p, q in levels)


def from_top(top: BookTop, levels: tuple[Sequence[tuple[int, int]], Sequence[tuple[int, int]]] | None = None
             ) -> BookUpdate:
    """A collector's ``BookTop`` as a feed update: with the whole ladders when given (``levels``),
    else with the best levels the message carries, else the top alone."""
    depth: int | None = None
    yes: Levels | None
    no: Levels | None
    if levels is not None:
        yes, no = as_levels(levels[0]), as_levels(levels[1])
    elif top.depth > 0 and top.valid:
        # Already immutable (price, size) pairs, best first: apply_snapshot takes any order.
        yes, no, depth = top.yes_bids, top.no_bids, top.depth
    else:
        yes = no = None
    return BookUpdate(ticker=top.ticker, epoch=top.epoch, seq=top.seq, valid=top.valid,
                      ts=event_ts(top.received_ts_ns, top.exchange_ts_ms), received_ns=top.received_ts_ns,
                      yes_bid=top.yes_bid, yes_bid_size=top.yes_bid_size, yes_ask=top.yes_ask,
                      yes_ask_size=top.yes_ask_size, yes=yes, no=no, depth=depth, trades=top.trades,
                      book_changed=top.book_changed)
