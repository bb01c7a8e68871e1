"""The trader's decision pipeline: train/live parity, cadence, and action -> risk -> commands.

Parity (DESIGN.md §3, prior-system-lessons §8.3): one recorded stream goes through the RL env AND
through the live path (collector-style book updates -> DecisionEngine); the observations and
masks must be bit-identical at every decision.
"""

from __future__ import annotations

import itertools
import math

import msgspec
import numpy as np
import pytest

from kalshiflow.config import RiskConfig
from kalshiflow.exchange.replay.events import (
    InMemoryMarketStream,
    RecDelta,
    RecGap,
    RecSnapshot,
    RecStatus,
    RecTrade,
)
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import CENT, MONEY_SCALE, QTY_SCALE, grid_by_name
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.rl.data import EpisodePool, SyntheticConfig, generate_streams
from kalshiflow.rl.env import EnvConfig, make_env
from kalshiflow.trading import PortfolioView, PositionSummary
from kalshiflow.trading.decision import DecisionEngine, DecisionSettings, observation_hash
from kalshiflow.trading.feed import BookUpdate, FeedClock, MarketMeta, from_top
from kalshiflow.trading.orders import CancelOrder, ClientOrderIds, OrderTracker, PlaceOrder
from kalshiflow.trading.risk import RiskGate, RiskState

DT = 5.0


# ----------------------------------------------------------------------------- helpers


def _stream_with_gap() -> InMemoryMarketStream:
    """A generated liquid market (deltas + trades), with a gap and a fresh snapshot spliced in."""
    cfg = SyntheticConfig(markets_per_seed=4, lifetime_min_s=600, lifetime_max_s=700)
    stream = max(generate_streams("edge", 3, cfg), key=lambda s: len(list(s)))  # the busiest market
    events = list(stream)
    cut = len(events) // 2
    book = OrderBook(stream.market.ticker, grid_by_name(stream.market.price_level_structure))
    for ev in events[:cut]:
        if isinstance(ev, RecSnapshot):
            book.apply_snapshot(ev.yes, ev.no)
        elif isinstance(ev, RecDelta):
            book.apply_delta(ev.side, ev.price, ev.delta)
    t = events[cut].ts
    # Deltas lost in the gap: the book is unknown until the snapshot 20 s later.
    skip = [e for e in events[cut:] if e.ts < t + 20.0]
    for ev in skip:
        if isinstance(ev, RecDelta):
            book.apply_delta(ev.side, ev.price, ev.delta)
    rest = events[cut + len(skip):]
    spliced = (events[:cut] + [RecGap(seq=0, ts=t, reason="test")]
               + [e for e in skip if not isinstance(e, RecDelta)]
               + [RecSnapshot(seq=0, ts=t + 20.0, yes=tuple(book.levels(Side.YES)),
                              no=tuple(book.levels(Side.NO)))]
               + rest)
    renumbered = [msgspec.structs.replace(e, seq=i + 1) for i, e in enumerate(spliced)]
    return InMemoryMarketStream(stream.market, renumbered)


def collector_updates(stream: InMemoryMarketStream) -> list[BookUpdate]:
    """What a collector that forwards every frame would send: the book after each book frame
    (full ladders, or invalid after a gap), and each trade on its own."""
    info = stream.market
    book = OrderBook(info.ticker, grid_by_name(info.price_level_structure))
    gapped = closed = False
    out: list[BookUpdate] = []

    def update(ev: object, valid: bool, **kw: object) -> BookUpdate:
        return BookUpdate(ticker=info.ticker, epoch=1, seq=ev.seq, valid=valid, ts=ev.ts,  # type: ignore[attr-defined]
                          received_ns=int(ev.ts * 1e9), yes=tuple(book.levels(Side.YES)),  # type: ignore[attr-defined]
                          no=tuple(book.levels(Side.NO)), **kw)  # type: ignore[arg-type]

    for ev in stream:
        if closed:
            break
        if isinstance(ev, RecSnapshot):
            gapped = False
            book.apply_snapshot(ev.yes, ev.no)
            out.append(update(ev, True))
        elif isinstance(ev, RecDelta):
            if not gapped:
                book.apply_delta(ev.side, ev.price, ev.delta)
                out.append(update(ev, True))
        elif isinstance(ev, RecGap):
            gapped = True
            out.append(update(ev, False))
        elif isinstance(ev, RecTrade):
            out.append(update(ev, not gapped, trades=(ev,), book_changed=False))
        elif isinstance(ev, RecStatus) and ev.status in ("closed", "settled"):
            closed = True
    return out


def _ms_stream(stream: InMemoryMarketStream) -> InMemoryMarketStream:
    """The stream with its times on whole milliseconds, as Kalshi's ``ts_ms`` and the recorder
    have them (a collector's view carries the exchange time in ms)."""
    return InMemoryMarketStream(stream.market, [msgspec.structs.replace(e, ts=round(e.ts * 1000) / 1000.0)
                                                for e in stream])


def collector_views(stream: InMemoryMarketStream) -> list[BookUpdate]:
    """What a collector that publishes after every frame sends: its book view (top + the best
    levels, kalshiflow.collect.tops) after each book frame, invalid after a gap; trades alone."""
    from kalshiflow.collect.tops import book_view

    info = stream.market
    book = OrderBook(info.ticker, grid_by_name(info.price_level_structure))
    closed = False
    out: list[BookUpdate] = []

    def update(ev: object) -> BookUpdate:
        ts_ms = round(ev.ts * 1000)  # type: ignore[attr-defined]
        return from_top(book_view(book, 1, ev.seq, ts_ms * 1_000_000, ts_ms))  # type: ignore[attr-defined]

    for ev in stream:
        if closed:
            break
        if isinstance(ev, RecSnapshot):
            book.apply_snapshot(ev.yes, ev.no)  # clears ``invalid``
            out.append(update(ev))
        elif isinstance(ev, RecDelta):
            if not book.invalid:
                book.apply_delta(ev.side, ev.price, ev.delta)
                out.append(update(ev))
        elif isinstance(ev, RecGap):
            book.invalidate("gap")
            out.append(update(ev))
        elif isinstance(ev, RecTrade):
            out.append(msgspec.structs.replace(update(ev), trades=(ev,), book_changed=False))
        elif isinstance(ev, RecStatus) and ev.status in ("closed", "settled"):
            closed = True
    return out


def make_engine(settings: DecisionSettings | None = None, risk: RiskConfig | None = None,
                clock: list[float] | None = None) -> DecisionEngine:
    now = clock if clock is not None else [1_000.0]
    gate = RiskGate(risk or RiskConfig(), lambda: now[0])
    return DecisionEngine(settings or DecisionSettings(decision_interval_s=DT), gate,
                          OrderTracker(ClientOrderIds("t", 1)), wall_now=now[0])


def view(positions: dict[str, tuple[int, int]] | None = None,
         cash: int = 10_000 * MONEY_SCALE) -> PortfolioView:
    pos = {t: PositionSummary(ticker=t, qty=q, cost=c, avg_price=c // abs(q) if q else 0, realized_pnl=0,
                              fees_paid=0, volume=abs(q)) for t, (q, c) in (positions or {}).items()}
    return PortfolioView(account="paper", cash=cash, reserved=0, available_cash=cash, realized_pnl=0,
                         fees_paid=0, positions=pos, open_orders=(), accounted_client_order_ids=frozenset(),
                         synced=True, as_of=0.0)


TICKER = "KXT-1"


def one_market(engine: DecisionEngine, yes: tuple[tuple[int, int], ...] = ((40 * CENT, 500),),
               no: tuple[tuple[int, int], ...] = ((55 * CENT, 500),), ts: float = 1_000.0, valid: bool = True
               ) -> None:
    engine.add_market(MarketMeta(ticker=TICKER, close_time=ts + 86_400))
    engine.on_update(BookUpdate(ticker=TICKER, epoch=1, seq=1, valid=valid, ts=ts, received_ns=int(ts * 1e9),
                                yes=yes, no=no), wall=ts)


def state_for(engine: DecisionEngine, v: PortfolioView, wall: float) -> RiskState:
    return RiskState.from_view(v, engine.books(wall))


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("via", ["ladders", "collector_views"])
def test_live_path_observations_equal_the_env_bit_for_bit(via: str) -> None:
    """``ladders``: updates with the whole book; ``collector_views``: the collector's messages as
    published (the best levels only), turned into updates by ``from_top``."""
    stream = _stream_with_gap() if via == "ladders" else _ms_stream(_stream_with_gap())
    pool = EpisodePool("mem", "all", streams=[stream])
    market = pool.market(0)
    env = make_env(EnvConfig(decision_interval_s=DT, window_s=10 * 3600.0, episode_start="open"), pool)
    obs, _ = env.reset(seed=0, options={"market": 0, "t0": market.start_ts})
    engine = make_engine()
    engine.add_market(MarketMeta(ticker=stream.market.ticker, grid_name=stream.market.price_level_structure,
                                 close_time=market.feature_close_time))
    updates = iter(collector_updates(stream) if via == "ladders" else collector_views(stream))
    pending = next(updates, None)
    t, steps, saw = market.start_ts, 0, {"invalid": 0, "flow": 0, "orders": 0}
    flow = engine.observer.table.names  # noqa: F841 - keep the names handy when debugging
    idx_valid = 7
    done = False
    while not done:
        while pending is not None and pending.ts <= t:
            engine.on_update(pending, wall=pending.ts)
            pending = next(updates, None)
        c = engine.prepare(stream.market.ticker, t, None, 0)
        assert np.array_equal(c.obs, obs["observations"]), f"step {steps} t={t}: features differ"
        assert np.array_equal(c.mask, obs["action_mask"]), f"step {steps} t={t}: masks differ"
        saw["invalid"] += c.obs[idx_valid] == 0.0
        saw["flow"] += c.obs[18] != 0.0
        obs, _, terminated, truncated, _ = env.step(0)
        done = terminated or truncated
        steps += 1
        t += DT
    assert steps > 100 and saw["invalid"] >= 3 and saw["flow"] > 10, (steps, saw)


def test_live_path_matches_the_env_with_a_position_and_resting_orders() -> None:
    """The account half: a held position marked at the crowd's bid, own orders at the touch."""
    engine = make_engine()
    one_market(engine, yes=((40 * CENT, 300), (39 * CENT, 200)), no=((55 * CENT, 400),))
    v = view({TICKER: (20 * QTY_SCALE, 20 * QTY_SCALE * 41 * CENT)})
    acct = engine.account(TICKER, v)
    assert acct.position == 20 * QTY_SCALE and acct.reference_cash == 1000 * MONEY_SCALE
    assert acct.cash == (1000 - 8.2) * MONEY_SCALE == acct.available
    c = engine.prepare(TICKER, 1_001.0, v, 0)
    f = dict(zip(engine.observer.table.names, c.mask, strict=True))
    assert f["sell_yes_take_10"] == 1.0 and f["sell_no_take_10"] == 0.0
    pos, avg, unreal = c.obs[23:26]
    assert pos == np.float32(20 / 50) and avg == np.float32(0.41)
    assert unreal == np.float32((20 * 0.40 - 8.2) / 50)


def test_carried_levels_observe_exactly_like_the_whole_book() -> None:
    """A collector's view (the best DEPTH_LEVELS a side) gives the features, mask and mark the
    whole book gives, own orders included (the mark behind own orders at the touch reads the
    next level: never deeper than the view)."""
    from kalshiflow.collect.tops import book_view
    from kalshiflow.rl.actions import AccountView
    from kalshiflow.rl.features import DEPTH_LEVELS

    book = OrderBook(TICKER, grid_by_name("linear_cent"))
    book.apply_snapshot([((40 - i) * CENT, (i + 1) * 100) for i in range(9)],
                        [((55 - i) * CENT, 300 + i) for i in range(7)])
    ts = 1_000.0
    whole, carried = make_engine(), make_engine()
    for engine, u in ((whole, BookUpdate(ticker=TICKER, epoch=1, seq=5, valid=True, ts=ts, received_ns=0,
                                         yes=tuple(book.levels(Side.YES)), no=tuple(book.levels(Side.NO)))),
                      (carried, from_top(book_view(book, 1, 5, int(ts * 1e9), int(ts * 1000))))):
        engine.add_market(MarketMeta(ticker=TICKER, close_time=ts + 3_600))
        assert engine.on_update(u, wall=ts)
    a, b = whole.feeds[TICKER], carried.feeds[TICKER]
    assert b.depth == DEPTH_LEVELS < a.depth and b.depth_complete and carried.shallow([TICKER]) == []
    assert b.book.depth(Side.YES, DEPTH_LEVELS) == a.book.depth(Side.YES, DEPTH_LEVELS)
    obs = carried.observer
    touch, below = (0, 40 * CENT, 60), (0, 38 * CENT, 500)
    cases = {"none": (), "part of the touch": (touch,), "the whole touch": (touch, touch[:2] + (40,)),
             "touch and below": (touch, touch[:2] + (40,), below, below, below),
             "both ladders": (touch, (1, 55 * CENT, 300), (1, 54 * CENT, 1))}
    for position in (10 * QTY_SCALE, -10 * QTY_SCALE, 0):
        for name, orders in cases.items():
            acct = AccountView(position=position, cost=10 * QTY_SCALE * 39 * CENT if position else 0,
                               cash=500 * MONEY_SCALE, available=400 * MONEY_SCALE,
                               reference_cash=1000 * MONEY_SCALE, orders=orders)
            mark = obs.mark(a.state, acct)
            assert mark == obs.mark(b.state, acct), (position, name)
            fa = obs.as_array(obs.observe(a.state, acct, ts + 1, a.meta.close_time, mark))
            fb = obs.as_array(obs.observe(b.state, acct, ts + 1, b.meta.close_time, mark))
            assert fa.tobytes() == fb.tobytes(), (position, name)
            assert (obs.mask(a.state, acct, ts + 1, a.meta.close_time, a.grid, a.fees)
                    == obs.mask(b.state, acct, ts + 1, b.meta.close_time, b.grid, b.fees)), (position, name)
    hidden = AccountView(position=QTY_SCALE, cost=0, cash=1, available=1, reference_cash=1,
                         orders=cases["the whole touch"])
    assert obs.mark(b.state, hidden) == 39 * CENT  # the next level, carried


# ----------------------------------------------------------------------------- cadence


def _add_markets(engine: DecisionEngine, n: int, ts: float) -> list[str]:
    tickers = [f"M{i}" for i in range(n)]
    for t in tickers:
        engine.add_market(MarketMeta(ticker=t))
        engine.on_update(BookUpdate(ticker=t, epoch=1, seq=1, valid=True, ts=ts, received_ns=0,
                                    yes=((40 * CENT, 100),), no=((50 * CENT, 100),)), wall=0.0)
    return tickers


def test_cadence_per_market_and_global_rate_limit() -> None:
    engine = make_engine(DecisionSettings(decision_interval_s=DT, max_decisions_per_s=2.0))
    _add_markets(engine, 4, 100.0)
    assert engine.due(100.0, wall=0.0) == ["M0"]  # the others wait for their phase
    engine.prepare("M0", 100.0, None, 0)
    first = engine.due(100.0 + DT, wall=10.0)  # all four are due now; the bucket holds 2
    assert len(first) == 2 and "M0" not in first  # never-decided markets go first
    for t in first:
        engine.prepare(t, 100.0 + DT, None, 0)
    assert engine.due(100.0 + DT, wall=10.0) == []
    second = engine.due(100.0 + DT, wall=11.0)  # 2 more tokens
    assert sorted(second) == sorted({"M0", "M1", "M2", "M3"} - set(first))
    for t in second:
        engine.prepare(t, 100.0 + DT, None, 0)
    assert engine.due(104.9 + DT, wall=20.0) == []  # each market at most once per interval
    assert len(engine.due(105.0 + DT, wall=20.0)) == 2


@pytest.mark.parametrize("n", [1, 3, 20, 57])
def test_markets_decide_at_spread_phases_not_in_one_burst(n: int) -> None:
    """Markets added together decide once per interval each, spread across it: a clock sweep
    never finds more than its share due (20 markets in lockstep made the live gate refuse most
    orders for its order rate)."""
    sweep = 0.5
    engine = make_engine(DecisionSettings(decision_interval_s=DT))
    tickers = _add_markets(engine, n, 100.0)
    decided: dict[str, list[float]] = {t: [] for t in tickers}
    per_sweep = []
    for k in range(int(10 * DT / sweep)):
        now = 100.0 + k * sweep
        due = engine.due(now, wall=float(k))
        per_sweep.append(len(due))
        for t in due:
            engine.prepare(t, now, None, 0)
            decided[t].append(now)
    share = n * sweep / DT
    assert max(per_sweep) <= math.ceil(share) + 1, per_sweep
    for t, times in decided.items():
        assert times[0] < 100.0 + DT + sweep, t  # every market within its first interval (+ a sweep)
        gaps = np.diff(times)
        assert (gaps >= DT).all() and (gaps <= DT + sweep).all(), (t, times)


def test_stale_updates_are_dropped_and_clock_follows_the_exchange() -> None:
    engine = make_engine()
    one_market(engine)
    late = BookUpdate(ticker=TICKER, epoch=1, seq=0 + 1, valid=True, ts=990.0, received_ns=0,
                      yes=((30 * CENT, 1),), no=())
    assert engine.on_update(msgspec.structs.replace(late, seq=2), wall=0.0)
    assert not engine.on_update(msgspec.structs.replace(late, seq=1), wall=0.0)
    assert engine.feeds[TICKER].state.last_book_ts == 1_000.0  # clamped, never backwards
    clock = FeedClock(rate=60.0)
    assert clock.now(5.0) is None
    clock.observe(1_000.0, wall=5.0)
    assert clock.now(6.0) == 1_060.0
    clock.observe(1_010.0, wall=6.0)  # older than the estimate: ignored
    assert clock.now(6.0) == 1_060.0


def test_top_only_updates_fall_back_to_the_top_level() -> None:
    from kalshiflow.collect.messages import BookTop

    top = BookTop(ticker=TICKER, epoch=3, seq=9, valid=True, yes_bid=40 * CENT, yes_bid_size=500,
                  yes_ask=45 * CENT, yes_ask_size=700, received_ts_ns=2_000_000_000_000,
                  exchange_ts_ms=1_999_999)
    engine = make_engine()
    engine.add_market(MarketMeta(ticker=TICKER))
    engine.on_update(from_top(top), wall=0.0)
    feed = engine.feeds[TICKER]
    assert not feed.depth_complete and feed.state.last_book_ts == 1_999.999
    assert feed.book.levels(Side.NO) == [(55 * CENT, 700)]
    engine.on_update(from_top(msgspec.structs.replace(top, seq=10), ([(40 * CENT, 500), (39 * CENT, 9)], [])),
                     wall=0.0)
    assert feed.depth_complete and feed.book.levels(Side.YES) == [(39 * CENT, 9), (40 * CENT, 500)]
    # Top-only again; the ladders fetched before a decision deepen it at the same time and seq.
    engine.on_update(from_top(msgspec.structs.replace(top, seq=11, exchange_ts_ms=2_000_500)), wall=0.0)
    assert engine.shallow([TICKER]) == [TICKER] and feed.book.levels(Side.YES) == [(40 * CENT, 500)]
    engine.deepen({TICKER: (((39 * CENT, 9), (40 * CENT, 500)), ((55 * CENT, 700), (54 * CENT, 3)))})
    assert engine.shallow([TICKER]) == [] and feed.state.last_book_ts == 2_000.5
    assert feed.book.levels(Side.NO) == [(54 * CENT, 3), (55 * CENT, 700)]
    # An invalid book is never deepened (it waits for the collector's fresh snapshot).
    engine.on_update(from_top(msgspec.structs.replace(top, seq=12, valid=False)), wall=0.0)
    assert engine.shallow([TICKER]) == [] and not feed.deepen((), ())


def test_closed_markets_are_retired_once_no_order_is_open() -> None:
    engine = make_engine()
    one_market(engine)  # closes at 1_000 + 86_400
    assert engine.retire(1_000.0 + 86_400 + 299) == []
    assert engine.retire(1_000.0 + 86_400 + 301) == [TICKER] and TICKER not in engine.feeds


def test_a_market_retired_while_the_policy_answers_is_held_not_a_crash() -> None:
    """A cycle awaits the ladders and the policy; housekeeping may retire a market meanwhile
    (a soak run hit KeyError here)."""
    engine = make_engine()
    one_market(engine)
    v = view()
    c = engine.prepare(TICKER, 1_000.0, v, 0)
    state = state_for(engine, v, 1_000.0)
    assert engine.retire(1_000.0 + 86_400 + 301) == [TICKER]
    assert engine.present([TICKER]) == [] and engine.shallow([TICKER]) == []
    out = engine.decide(c, engine.table.index("buy_yes_take_5"), "v0001", state, 0)
    assert out.record.verdict == "hold" and out.record.reason == "market retired" and not out.commands


# ----------------------------------------------------------------------------- decide


def test_hold_only_mask_is_decided_without_the_policy() -> None:
    engine = make_engine()
    one_market(engine, valid=False)
    c = engine.prepare(TICKER, 1_000.0, view(), 0)
    assert c.forced == 0
    out = engine.decide(c, 0, "v0001", state_for(engine, view(), 1_000.0), 5_000)
    assert out.record.verdict == "hold" and out.record.reason == "forced" and not out.commands
    assert out.record.observation_hash == observation_hash(c.obs) and out.record.latency_us == 5


def test_buy_is_priced_from_the_seen_book_and_needs_the_gates_approval() -> None:
    clock = [1_000.0]
    engine = make_engine(clock=clock)
    one_market(engine)
    v = view()
    c = engine.prepare(TICKER, 1_000.0, v, 0)
    # The book moves after the observation: the order keeps the price the policy saw.
    engine.on_update(BookUpdate(ticker=TICKER, epoch=1, seq=2, valid=True, ts=1_000.5, received_ns=0,
                                yes=((42 * CENT, 10),), no=((50 * CENT, 10),)), wall=1_000.0)
    a = engine.table.index("buy_yes_take_5")
    out = engine.decide(c, a, "v0001", state_for(engine, v, clock[0]), 0)
    assert out.record.verdict == "allowed", out.record
    (cmd,) = out.commands
    assert isinstance(cmd, PlaceOrder)
    req = cmd.request
    assert (req.side, req.action, req.price, req.count) == (Side.YES, Action.BUY, 45 * CENT, 5 * QTY_SCALE)
    assert req.time_in_force == "immediate_or_cancel" and not cmd.reduce_only
    assert req.client_order_id == out.record.client_order_id and req.client_order_id.startswith("t-1-")
    assert engine.tracker.account_orders(TICKER) == ((0, 45 * CENT, 5 * QTY_SCALE),)  # pending counts
    # The sell of a holding is a reduce-only NO bid at 1 - YES bid (the env's venue semantics).
    v2 = view({TICKER: (5 * QTY_SCALE, 5 * QTY_SCALE * 40 * CENT)})
    c2 = engine.prepare(TICKER, 1_010.0, v2, 0)
    sell_join = engine.table.index("sell_yes_join_1")
    out2 = engine.decide(c2, sell_join, "v0001", state_for(engine, v2, clock[0]), 0)
    (sell,) = out2.commands
    assert sell.reduce_only and sell.request.side is Side.YES and sell.request.action is Action.SELL
    assert sell.request.price == 49 * CENT  # NO bid 50c improved to 51c = YES ask 49c
    assert sell.request.post_only


def test_refusal_is_recorded_with_the_gates_reason() -> None:
    engine = make_engine(risk=RiskConfig(max_orders_per_s=1.0, order_burst=1))
    one_market(engine)
    v = view()
    a = engine.table.index("buy_no_join_1")
    out1 = engine.decide(engine.prepare(TICKER, 1_000.0, v, 0), a, "v1", state_for(engine, v, 1_000.0), 0)
    out2 = engine.decide(engine.prepare(TICKER, 1_005.0, v, 0), a, "v1", state_for(engine, v, 1_000.0), 0)
    assert out1.record.verdict == "allowed"
    assert out2.record.verdict == "rejected" and out2.record.reason.startswith("rate_limit")
    assert not out2.commands and len(engine.tracker) == 1


def test_cancel_all_and_kill_switch_cancel_every_open_order() -> None:
    engine = make_engine()
    one_market(engine)
    v = view()
    state = state_for(engine, v, 1_000.0)
    out = engine.decide(engine.prepare(TICKER, 1_000.0, v, 0), engine.table.index("buy_yes_join_1"), "v1",
                        state, 0)
    cid = out.commands[0].client_order_id
    order = _order(cid, "o-1", "resting")
    assert engine.tracker.on_ack(cid, order) == []
    c = engine.prepare(TICKER, 1_005.0, v, 0)
    assert c.mask[1] == 1.0  # cancel_all allowed: an order rests
    out = engine.decide(c, 1, "v1", state, 0)
    assert out.record.verdict == "cancel"
    assert out.commands == (CancelOrder(client_order_id=cid, order_id="o-1", ticker=TICKER,
                                        reason="policy cancel_all"),)
    # Kill switch: the gate halts and asks to cancel everything, the tracker knows what is open.
    engine.tracker.on_cancel_failed(cid, gone=False)
    cmds = engine.risk_commands(engine.gate.kill("test"))
    assert [type(x) for x in cmds] == [CancelOrder]
    refused = engine.decide(engine.prepare(TICKER, 1_010.0, v, 0), engine.table.index("buy_yes_join_1"), "v1",
                            state, 0)
    assert refused.record.verdict == "rejected" and "halted" in refused.record.reason


@pytest.mark.parametrize("status", ["unavailable", "no_model", "schema_mismatch", "error"])
def test_no_usable_answer_is_a_hold_that_says_why(status: str) -> None:
    engine = make_engine()
    one_market(engine)
    out = engine.decide(engine.prepare(TICKER, 1_000.0, view(), 0), 0, None, state_for(engine, view(), 0), 0,
                        status=status, error="boom")
    assert out.record.action == "hold" and not out.commands
    assert out.record.verdict == ("unavailable" if status in ("unavailable", "no_model") else "error")
    assert out.record.reason.startswith(status)


def test_masked_action_from_the_policy_is_never_sent() -> None:
    engine = make_engine()
    one_market(engine)
    c = engine.prepare(TICKER, 1_000.0, view(), 0)
    masked = next(i for i in itertools.count(2) if c.mask[i] == 0.0)
    out = engine.decide(c, masked, "v1", state_for(engine, view(), 0), 0)
    assert out.record.verdict == "error" and not out.commands


def _order(cid: str, oid: str, status: str, remaining: int = 100) -> rm.Order:
    from kalshiflow.market.types import OrderStatus

    return rm.Order(order_id=oid, client_order_id=cid, ticker=TICKER, side=Side.YES, action=Action.BUY,
                    type="limit", status=OrderStatus(status), yes_price=41 * CENT, no_price=59 * CENT,
                    initial_count=100, fill_count=100 - remaining, remaining_count=remaining,
                    taker_fill_cost=0, maker_fill_cost=0, taker_fees=0, maker_fees=0)


def test_close_time_unknown_is_far_away() -> None:
    from kalshiflow.trading.feed import parse_close_time

    assert parse_close_time(None) == math.inf
    assert parse_close_time("2026-01-01T00:00:00Z") == 1_767_225_600.0
