"""Replay of recorded sessions into the exchange: exact books delta by delta, the queue model for
user orders, gaps, lifecycle and pacing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.exchange.events import BookDelta, MarketInfo, MarketStatus, TradeEvent
from kalshiflow.exchange.generator import MarketGenerator, SimClock, load_generator_config, with_overrides
from kalshiflow.exchange.replay import (
    InMemoryMarketStream,
    RecDelta,
    RecGap,
    RecordedMarketStream,
    RecSnapshot,
    RecStatus,
    RecTrade,
    Replayer,
    SessionRecorder,
    load_session,
    record_generated_session,
    replay_driver,
    save_session,
)
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, QTY_SCALE
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce

START = 1_767_225_600.0
C = 100  # ticks per cent
Q = QTY_SCALE  # one contract


def fresh_state(seed: int = 99) -> tuple[ExchangeState, SimClock]:
    clock = SimClock(START)
    return ExchangeState(clock=clock, seed=seed), clock


def info(ticker: str = "KXREC-1") -> MarketInfo:
    return MarketInfo(ticker=ticker, event_ticker="KXREC", series_ticker="KXREC", title="recorded",
                      open_time=START, close_time=START + 3600)


def deltas_by_market(events: list[BookDelta]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for e in events:
        out[e.ticker].append((e.side, e.price, e.delta, e.size))
    return out


def test_generated_session_replays_to_the_same_books_delta_by_delta() -> None:
    cfg = with_overrides(load_generator_config(), markets={"count": 6},
                         schedule={"lifetime_min_s": 900.0, "lifetime_max_s": 1800.0})
    # The original run, recorded (after a warm-up so recording starts from non-empty snapshots).
    clock = SimClock(START)
    original = ExchangeState(clock=clock, seed=3)
    gen = MarketGenerator(cfg, original, seed=3)
    gen.advance(START + 300.0)
    recorder = SessionRecorder(original)
    seen: list[BookDelta] = []
    original.add_listener(lambda ev: seen.append(ev) if isinstance(ev, BookDelta) else None)
    gen.advance(START + 2400.0)  # long enough for markets to close, settle and be relisted
    recorder.stop()
    streams = recorder.streams()
    assert all(isinstance(s, RecordedMarketStream) for s in streams)
    assert len(streams) > 6  # relisted markets were recorded from their creation
    # Replay into a brand-new exchange with nobody else trading.
    state, _ = fresh_state()
    replayed: list[BookDelta] = []
    state.add_listener(lambda ev: replayed.append(ev) if isinstance(ev, BookDelta) else None)
    replayer = Replayer(state, streams)
    replayer.run_to_end()
    assert replayer.done
    stats = replayer.stats
    assert stats.traded_deltas > 50 and stats.split_deltas == 0 and stats.unmatched_trades == 0
    want, got = deltas_by_market(seen), deltas_by_market(replayed)
    for stream in streams:
        tk = stream.market.ticker
        snap = next(iter(stream))
        assert isinstance(snap, RecSnapshot)
        built = len(snap.yes) + len(snap.no)  # the replay builds the snapshot one level at a time
        # Same level, same change, same resulting size, in the same order: exact, delta by delta.
        assert got[tk][built:] == want[tk]
        mine, theirs = state.market(tk), original.market(tk)
        assert mine is not None and theirs is not None
        assert mine.status == theirs.status and mine.result == theirs.result
        if theirs.status is MarketStatus.ACTIVE:
            assert state.order_book(tk) == original.order_book(tk)


def _one_level_session(*events: Any) -> InMemoryMarketStream:
    """YES bid 50c: 150 contracts of crowd, then the given events."""
    return InMemoryMarketStream(info(), [RecSnapshot(seq=1, ts=START, yes=((50 * C, 150 * Q),),
                                                     no=((40 * C, 80 * Q),)), *events])


def _user_bid(state: ExchangeState, contracts: int, price: int = 50 * C) -> str:
    state.add_account("user", 1_000 * MONEY_SCALE)
    res = state.submit("user", "KXREC-1", OrderRequest(side=Side.YES, action=Action.BUY, count=contracts * Q,
                                                       yes_price=price))
    assert res.ok and res.order is not None and res.order.status is OrderStatus.RESTING
    return res.order.order_id


def test_user_order_in_the_queue_is_filled_by_a_later_recorded_trade() -> None:
    stream = _one_level_session(
        # Someone sells 100 YES into the bid (taker bought NO at 50c): the front 100 of the crowd.
        RecDelta(seq=2, ts=START + 10, side=Side.YES, price=50 * C, delta=-100 * Q),
        RecTrade(seq=3, ts=START + 10, yes_price=50 * C, count=100 * Q, taker_side=Side.NO),
        # A recorded cancel of 30: crowd volume leaves from the back, skipping the user's order.
        RecDelta(seq=4, ts=START + 20, side=Side.YES, price=50 * C, delta=-30 * Q),
        # The trade arrives BEFORE its delta this time (separate channels on Kalshi).
        RecTrade(seq=5, ts=START + 30, yes_price=50 * C, count=20 * Q, taker_side=Side.NO),
        RecDelta(seq=6, ts=START + 30, side=Side.YES, price=50 * C, delta=-20 * Q),
    )
    state, clock = fresh_state()
    replayer = Replayer(state, [stream])
    replayer.advance(START)  # the snapshot: 150 crowd at 50c
    order_id = _user_bid(state, 10)  # joins behind the 150
    engine = state.venue.engine("KXREC-1")
    assert engine.queue_ahead(order_id) == 150 * Q
    replayer.advance(START + 10)
    assert state.order("user", order_id).remaining_count == 10 * Q  # type: ignore[union-attr]
    assert engine.queue_ahead(order_id) == 50 * Q
    replayer.advance(START + 20)  # only crowd ahead is left to cancel
    assert engine.queue_ahead(order_id) == 20 * Q
    fills_before = len(state.fills("user"))
    replayer.advance(START + 30)  # 20 traded: exactly the crowd ahead; the user is now first
    assert engine.queue_ahead(order_id) == 0
    assert len(state.fills("user")) == fills_before
    assert replayer.stats.traded_deltas == 2 and replayer.stats.cancel_deltas == 1


def test_recorded_trade_reaching_the_user_fills_it_fifo_and_prints() -> None:
    stream = _one_level_session(
        RecDelta(seq=2, ts=START + 5, side=Side.YES, price=50 * C, delta=-160 * Q),
        RecTrade(seq=3, ts=START + 5, yes_price=50 * C, count=160 * Q, taker_side=Side.NO),
    )
    state, clock = fresh_state()
    tape: list[TradeEvent] = []
    state.add_listener(lambda ev: tape.append(ev) if isinstance(ev, TradeEvent) else None)
    replayer = Replayer(state, [stream])
    replayer.advance(START)
    order_id = _user_bid(state, 25)
    replayer.run_to_end()
    # 150 crowd ahead, then 10 of the user's 25: partial fill at the resting price, FIFO.
    order = state.order("user", order_id)
    assert order is not None and order.fill_count == 10 * Q and order.remaining_count == 15 * Q
    (fill,) = state.fills("user")
    assert fill.yes_price == 50 * C and fill.count == 10 * Q and not fill.is_taker and fill.ts == START + 5
    assert state.venue.account("user").position("KXREC-1") == 10 * Q
    assert sum(t.count for t in tape) == 160 * Q  # the recorded trade is on the public tape
    # The user's remaining 15 rest alone at 50c: the recorded level is gone.
    assert state.order_book("KXREC-1").size(Side.YES, 50 * C) == 15 * Q


def test_user_order_matches_recorded_liquidity() -> None:
    state, _ = fresh_state()
    replayer = Replayer(state, [_one_level_session()])
    replayer.run_to_end()
    state.add_account("user", 1_000 * MONEY_SCALE)
    # Buy NO at 50c = sell YES into the 50c bid: takes recorded crowd volume.
    res = state.submit("user", "KXREC-1", OrderRequest(side=Side.NO, action=Action.BUY, count=30 * Q,
                                                       no_price=50 * C, time_in_force=TimeInForce.IOC))
    assert res.ok and res.order is not None and res.order.fill_count == 30 * Q
    assert state.order_book("KXREC-1").size(Side.YES, 50 * C) == 120 * Q


def test_gap_skips_deltas_until_the_next_snapshot_resyncs() -> None:
    stream = _one_level_session(
        RecDelta(seq=2, ts=START + 1, side=Side.YES, price=49 * C, delta=7 * Q),
        RecGap(seq=3, ts=START + 2, reason="seq gap"),
        RecDelta(seq=4, ts=START + 3, side=Side.YES, price=48 * C, delta=5 * Q),  # untrustworthy
        RecSnapshot(seq=5, ts=START + 4, yes=((50 * C, 90 * Q), (47 * C, 12 * Q)), no=((45 * C, 3 * Q),)),
        RecDelta(seq=6, ts=START + 5, side=Side.NO, price=45 * C, delta=2 * Q),
    )
    state, _ = fresh_state()
    replayer = Replayer(state, [stream])
    replayer.run_to_end()
    book = state.book("KXREC-1")
    assert book.yes == ((47 * C, 12 * Q), (50 * C, 90 * Q))
    assert book.no == ((45 * C, 5 * Q),)
    stats = replayer.stats
    assert stats.gaps == 1 and stats.skipped_after_gap == 1 and stats.snapshots == 2


def test_recorded_settlement_pays_the_user() -> None:
    stream = _one_level_session(
        RecStatus(seq=2, ts=START + 100, status="closed"),
        RecStatus(seq=3, ts=START + 160, status="settled", result="yes"),
    )
    state, _ = fresh_state()
    replayer = Replayer(state, [stream])
    replayer.advance(START)
    state.add_account("user", 1_000 * MONEY_SCALE)
    # Buy YES at 60c = take the recorded NO bid at 40c.
    res = state.submit("user", "KXREC-1", OrderRequest(side=Side.YES, action=Action.BUY, count=10 * Q,
                                                       yes_price=60 * C, time_in_force=TimeInForce.IOC))
    assert res.ok and res.order is not None and res.order.fill_count == 10 * Q
    cash = state.venue.account("user").cash
    replayer.run_to_end()
    market = state.market("KXREC-1")
    assert market is not None and market.status is MarketStatus.FINALIZED and market.result == "yes"
    assert state.venue.account("user").cash - cash == 10 * MONEY_SCALE  # $1 per contract


def test_streams_must_be_in_seq_order_and_markets_interleave_by_time() -> None:
    with pytest.raises(ValueError, match="seq"):
        InMemoryMarketStream(info(), [RecSnapshot(seq=2, ts=START), RecDelta(seq=2, ts=START, side=Side.YES,
                                                                              price=C, delta=Q)])
    a = InMemoryMarketStream(info("A"), [
        RecSnapshot(seq=1, ts=START),
        RecDelta(seq=2, ts=START + 2, side=Side.YES, price=10 * C, delta=Q),
        # A skewed (earlier) timestamp never reorders a market's seqs.
        RecDelta(seq=3, ts=START + 1, side=Side.YES, price=11 * C, delta=Q),
    ])
    b = InMemoryMarketStream(info("B"), [
        RecSnapshot(seq=1, ts=START),
        RecDelta(seq=2, ts=START + 1.5, side=Side.NO, price=20 * C, delta=Q),
    ])
    state, clock = fresh_state()
    order: list[tuple[str, int, float]] = []

    def listen(ev: object) -> None:
        if isinstance(ev, BookDelta):
            order.append((ev.ticker, ev.price, ev.ts))

    state.add_listener(listen)
    Replayer(state, [a, b]).run_to_end()
    assert order == [("B", 20 * C, START + 1.5), ("A", 10 * C, START + 2), ("A", 11 * C, START + 2)]


async def test_run_paces_by_recorded_time_scaled_by_speed() -> None:
    deltas = [RecDelta(seq=k + 1, ts=START + 10.0 * k, side=Side.YES, price=(10 + k) * C, delta=Q)
              for k in range(1, 7)]
    stream = InMemoryMarketStream(info(), [RecSnapshot(seq=1, ts=START), *deltas])
    state, clock = fresh_state()
    fake_wall = [0.0]

    def wall() -> float:  # each look at the wall clock advances it 1 s
        fake_wall[0] += 1.0
        return fake_wall[0]

    replayer = Replayer(state, [stream])
    await asyncio.wait_for(replayer.run(speed=5.0, wall=wall, tick_s=0.0), timeout=10)
    assert replayer.done
    assert clock() == START + 60.0  # stamped with recorded, not wall, time
    assert 60 / 5.0 <= fake_wall[0] <= 60 / 5.0 + 20  # ~12 wall seconds for 60 recorded seconds


def test_record_generated_session_helper() -> None:
    cfg = with_overrides(load_generator_config(), markets={"count": 2})
    streams = record_generated_session(cfg, 5, seconds=120.0, warmup_s=60.0)
    assert len(streams) == 2
    for s in streams:
        first = s.events[0]
        assert isinstance(first, RecSnapshot) and first.yes and first.no and first.ts == START + 60.0
        assert all(e.ts <= START + 180.0 for e in s.events)


def test_trade_pairing_with_coarse_trade_timestamps() -> None:
    # Kalshi's trade channel stamps whole seconds; deltas are finer. A cancel of the same size
    # just before the real fill must not take the trade.
    stream = _one_level_session(
        RecDelta(seq=2, ts=START + 10.2, side=Side.YES, price=50 * C, delta=-20 * Q),  # a cancel
        RecDelta(seq=3, ts=START + 10.7, side=Side.YES, price=50 * C, delta=-20 * Q),  # the fill
        RecTrade(seq=4, ts=START + 10.0, yes_price=50 * C, count=20 * Q, taker_side=Side.NO),
    )
    state, _ = fresh_state()
    replayer = Replayer(state, [stream])
    replayer.advance(START)
    order_id = _user_bid(state, 5)  # behind 150 crowd
    engine = state.venue.engine("KXREC-1")
    replayer.advance(START + 10.2)  # the cancel: crowd leaves (from the back, skipping the user)
    assert replayer.stats.cancel_deltas == 1 and replayer.stats.traded_deltas == 0
    assert engine.queue_ahead(order_id) == 130 * Q
    replayer.run_to_end()  # the fill, paired with the trade recorded right after it
    assert replayer.stats.traded_deltas == 1 and replayer.stats.unmatched_trades == 0
    assert engine.queue_ahead(order_id) == 110 * Q


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**31))
def test_any_generated_session_replays_exactly(seed: int) -> None:
    cfg = with_overrides(load_generator_config(), markets={"count": 3})
    clock = SimClock(START)
    original = ExchangeState(clock=clock, seed=seed)
    gen = MarketGenerator(cfg, original, seed=seed)
    gen.advance(START + 60.0)
    recorder = SessionRecorder(original)
    gen.advance(START + 360.0)
    recorder.stop()
    state, _ = fresh_state()
    replayer = Replayer(state, recorder.streams())
    replayer.run_to_end()
    assert replayer.stats.split_deltas == 0 and replayer.stats.unmatched_trades == 0
    for tk in gen.active_tickers():
        assert state.order_book(tk) == original.order_book(tk)
        assert not state.order_book(tk).is_crossed()


async def test_session_file_round_trip_and_replay_driver(tmp_path: Path) -> None:
    cfg = with_overrides(load_generator_config(), markets={"count": 2})
    streams = record_generated_session(cfg, 4, seconds=300.0, warmup_s=30.0)
    path = save_session(tmp_path / "session.kfr", streams)
    loaded = load_session(path)
    assert [(s.market, s.events) for s in loaded] == [(s.market, s.events) for s in streams]
    with pytest.raises(ValueError, match="no such file"):
        replay_driver("no-such-session")
    (tmp_path / "junk").write_bytes(b"\x00junk")
    with pytest.raises(ValueError, match="not a recorded session"):
        load_session(tmp_path / "junk")
    # The driver replays into whatever state the simulator has; a past recording is rebased to
    # the state's clock so the exchange shows current times.
    state, clock = fresh_state()
    clock.set(START + 86_400.0)

    class FakeSim:
        def __init__(self) -> None:
            self.state = state
            self.replayer: Replayer | None = None

    sim = FakeSim()
    await asyncio.wait_for(replay_driver(str(path), speed=1e6)(sim), timeout=30)
    assert sim.replayer is not None and sim.replayer.done and sim.replayer.offset == pytest.approx(86_370.0)
    for s in streams:
        info = state.market(s.market.ticker)
        assert info is not None and info.close_time == pytest.approx(s.market.close_time + 86_370.0)
    last = max(e.ts for s in streams for e in s.events)
    assert clock() == pytest.approx(last + 86_370.0)  # events stamped with rebased recorded times
