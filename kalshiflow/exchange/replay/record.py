"""Recording what an exchange publishes as replayable per-market streams.

``SessionRecorder`` listens to an :class:`ExchangeState` the way a collector listens to Kalshi's
feed and keeps, per market, a snapshot followed by every delta, trade and lifecycle change.
``record_generated_session`` runs the synthetic generator under a recorder: a "generated
session" for replay tests and demos until the collection pipeline's loader is available.
"""

from __future__ import annotations

from typing import Literal

from kalshiflow.exchange.events import (
    BookDelta,
    ExchangeEvent,
    LifecycleEvent,
    MarketInfo,
    MarketStatus,
    TradeEvent,
)
from kalshiflow.exchange.generator import GeneratorConfig, MarketGenerator, SimClock
from kalshiflow.exchange.replay.events import (
    InMemoryMarketStream,
    Levels,
    RecDelta,
    RecordedEvent,
    RecSnapshot,
    RecStatus,
    RecTrade,
)
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.types import Side


class SessionRecorder:
    """Records what an ExchangeState publishes as per-market streams (what a collector stores).

    Markets already listed get a snapshot when recording starts; markets listed later start with
    an (empty) snapshot at their ``created`` event. Detach with ``stop()``.
    """

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self._events: dict[str, list[RecordedEvent]] = {}
        self._info: dict[str, MarketInfo] = {}
        self._seq: dict[str, int] = {}
        for info in state.markets():
            if info.status in (MarketStatus.INITIALIZED, MarketStatus.ACTIVE, MarketStatus.INACTIVE):
                book = state.order_book(info.ticker)
                self._start(info, tuple(book.levels(Side.YES)), tuple(book.levels(Side.NO)))
        self._remove = state.add_listener(self._on_event)

    def _next(self, ticker: str) -> int:
        self._seq[ticker] += 1
        return self._seq[ticker]

    def _start(self, info: MarketInfo, yes: Levels, no: Levels) -> None:
        tk = info.ticker
        self._info[tk] = info
        self._seq[tk] = 0
        self._events[tk] = [RecSnapshot(seq=self._next(tk), ts=self.state.clock(), yes=yes, no=no)]

    def _on_event(self, ev: ExchangeEvent) -> None:
        if isinstance(ev, BookDelta):
            events = self._events.get(ev.ticker)
            if events is not None:
                events.append(RecDelta(seq=self._next(ev.ticker), ts=ev.ts, side=ev.side, price=ev.price,
                                       delta=ev.delta))
        elif isinstance(ev, TradeEvent):
            events = self._events.get(ev.ticker)
            if events is not None:
                events.append(RecTrade(seq=self._next(ev.ticker), ts=ev.ts, yes_price=ev.yes_price,
                                       count=ev.count, taker_side=ev.taker_side))
        elif isinstance(ev, LifecycleEvent):
            tk = ev.market.ticker
            if ev.event_type == "created" and tk not in self._events:
                self._start(ev.market, (), ())
            elif tk in self._events and ev.event_type in ("closed", "settled"):
                status: Literal["closed", "settled"] = "closed" if ev.event_type == "closed" else "settled"
                self._events[tk].append(RecStatus(seq=self._next(tk), ts=ev.ts, status=status,
                                                  result=ev.market.result))

    def stop(self) -> None:
        self._remove()

    def streams(self) -> list[InMemoryMarketStream]:
        return [InMemoryMarketStream(self._info[tk], events) for tk, events in self._events.items()]


def record_generated_session(
    config: GeneratorConfig, seed: int, *, seconds: float, start: float = 1_767_225_600.0,
    warmup_s: float = 0.0,
) -> list[InMemoryMarketStream]:
    """Run the synthetic generator for `seconds` (after `warmup_s` unrecorded) and return what a
    collector would have recorded: a "generated session" for replay tests and demos."""
    clock = SimClock(start)
    state = ExchangeState(clock=clock, seed=seed)
    gen = MarketGenerator(config, state, seed, start=start)
    gen.advance(start + warmup_s)
    recorder = SessionRecorder(state)
    gen.advance(start + warmup_s + seconds)
    recorder.stop()
    return recorder.streams()
