"""Recorded-session event types and the source protocol replay reads.

A recorded session is, per market, a stream of typed events in sequence order. Prices are integer
ticks in the ladder's own terms (as on Kalshi's orderbook channel); trades carry the YES price and
the taker's outcome side (as Kalshi's trade channel). ``seq`` orders events within one market;
``ts`` is the exchange timestamp (epoch seconds). The collection team's loader only has to yield
these types (as a ``RecordedMarketStream``) to plug into the replayer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

from kalshiflow.exchange.events import MarketInfo
from kalshiflow.market.prices import PRICE_SCALE
from kalshiflow.market.types import Side

Levels = tuple[tuple[int, int], ...]  # (price, size) levels, any order


class RecSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag="snapshot"):
    seq: int
    ts: float
    yes: Levels = ()
    no: Levels = ()


class RecDelta(msgspec.Struct, frozen=True, kw_only=True, tag="delta"):
    seq: int
    ts: float
    side: Side
    price: int
    delta: int  # signed Qty, never 0


class RecTrade(msgspec.Struct, frozen=True, kw_only=True, tag="trade"):
    seq: int
    ts: float
    yes_price: int
    count: int
    taker_side: Side


class RecGap(msgspec.Struct, frozen=True, kw_only=True, tag="gap"):
    """The recorder missed messages: the book is unknown until the next snapshot."""

    seq: int
    ts: float
    reason: str = ""


class RecStatus(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    seq: int
    ts: float
    status: Literal["open", "closed", "settled"]
    result: Literal["", "yes", "no"] = ""


RecordedEvent = RecSnapshot | RecDelta | RecTrade | RecGap | RecStatus


@runtime_checkable
class RecordedMarketStream(Protocol):
    """One market of a recorded session: its metadata and its events in seq order."""

    @property
    def market(self) -> MarketInfo: ...

    def __iter__(self) -> Iterator[RecordedEvent]: ...


class InMemoryMarketStream:
    """A recorded market held in memory (tests, generated sessions, small files)."""

    def __init__(self, market: MarketInfo, events: Sequence[RecordedEvent]) -> None:
        seqs = [e.seq for e in events]
        if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
            raise ValueError(f"{market.ticker}: recorded events must be in strictly increasing seq order")
        self._market = market
        self.events = tuple(events)

    @property
    def market(self) -> MarketInfo:
        return self._market

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


def maker_ladder(trade: RecTrade) -> tuple[Side, int]:
    """(ladder, price in that ladder's terms) of the resting orders a trade consumed."""
    side = trade.taker_side.other
    return side, trade.yes_price if side is Side.YES else PRICE_SCALE - trade.yes_price


