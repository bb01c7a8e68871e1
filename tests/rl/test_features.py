"""Features: the schema, the streaming state, and train/live parity (DESIGN.md §3).

The parity tests feed one recorded stream through the live path (``data.StreamFeed``: a plain
OrderBook + FeatureState updated message by message, as the live trader does) and through the
env (precomputed replay and matching-engine replay) and require bit-identical observations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.replay import (
    InMemoryMarketStream,
    RecDelta,
    RecGap,
    RecordedEvent,
    RecSnapshot,
    RecStatus,
)
from kalshiflow.market.book import OrderBook
from kalshiflow.market.fees import FeeCalculator, calculator
from kalshiflow.market.prices import CENT, LINEAR_CENT, MONEY_SCALE
from kalshiflow.market.types import Side
from kalshiflow.rl.actions import AccountView, ActionTable
from kalshiflow.rl.data import EpisodePool, StreamFeed, SyntheticConfig, compile_stream, generate_streams
from kalshiflow.rl.env import EnvConfig, KalshiMarketEnv, make_observer
from kalshiflow.rl.features import (
    FEATURE_NAMES,
    FEATURES,
    N_FEATURES,
    N_MARKET_FEATURES,
    OBS_HIGH,
    OBS_LOW,
    SCHEMA_VERSION,
    FeatureState,
    Observer,
    SchemaMismatchError,
    book_top,
    check_schema,
    market_features,
    schema_hash,
)

START = 1_767_225_600.0
SMALL = SyntheticConfig(markets_per_seed=2, lifetime_min_s=600.0, lifetime_max_s=700.0)


@pytest.fixture(scope="module")
def generated() -> list[InMemoryMarketStream]:
    return generate_streams("driftless", 3, SMALL)


def _info(ticker: str = "KXT-1", close: float = START + 3600.0) -> MarketInfo:
    return MarketInfo(ticker=ticker, event_ticker="KXT", series_ticker="KX", title="t", open_time=START,
                      close_time=close, market_id="00000000-0000-4000-8000-000000000001")


# ----------------------------------------------------------------------------- schema


def test_feature_table_is_consistent() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == N_FEATURES == 33
    assert all(desc for _, desc in FEATURES)
    assert FEATURE_NAMES[N_MARKET_FEATURES] == "position"  # market features first, account last
    obs = make_observer(EnvConfig())
    fs = FeatureState()
    vec = obs.observe(fs, AccountView(cash=10, available=10, reference_cash=10), START, START + 60, 0)
    assert len(vec) == N_FEATURES


def test_schema_hash_covers_actions_cap_and_refuses_mismatch() -> None:
    base = schema_hash(ActionTable((1, 5, 10)), 50)
    assert base == schema_hash(ActionTable((1, 5, 10)), 50)  # stable
    assert base != schema_hash(ActionTable((1, 5)), 50)
    assert base != schema_hash(ActionTable((1, 5, 10)), 20)
    assert base != schema_hash(ActionTable((1, 5, 10)), 50, max_open_orders=8)
    check_schema(base, base)
    with pytest.raises(SchemaMismatchError, match=f"features v{SCHEMA_VERSION}"):
        check_schema(schema_hash(ActionTable((2,)), 50), base)


# ----------------------------------------------------------------------------- streaming state


def test_book_top_matches_the_book() -> None:
    book = OrderBook("T", LINEAR_CENT)
    book.apply_snapshot([(40 * CENT, 100), (45 * CENT, 200), (47 * CENT, 300), (48 * CENT, 400)],
                        [(50 * CENT, 700)])
    assert book_top(book) == (48 * CENT, 50 * CENT, 400, 400 + 300 + 200, 1000, 700, 700, 700)
    assert book_top(OrderBook("E", LINEAR_CENT)) == (0, 0, 0, 0, 0, 0, 0, 0)


def test_mid_history_and_trade_window() -> None:
    book = OrderBook("T", LINEAR_CENT)
    fs = FeatureState()
    book.apply_snapshot([(48 * CENT, 500)], [(50 * CENT, 500)])  # mid 0.49
    fs.on_snapshot(START, book)
    book.apply_delta(Side.YES, 49 * CENT, 500)  # mid 0.495 at +30 s
    fs.on_book(START + 30, book)
    fs.on_trade(START + 31, 50 * CENT, 1000, Side.YES)  # 10 contracts bought YES
    fs.on_trade(START + 95, 50 * CENT, 300, Side.NO)  # 3 contracts bought NO
    f = market_features(fs, START + 100, START + 3600)
    name = dict(zip(FEATURE_NAMES, f, strict=False))
    assert name["mid"] == pytest.approx(0.495)
    assert name["mid_chg_10s"] == 0.0
    assert name["mid_chg_300s"] == pytest.approx(0.05)  # +0.5c -> 0.05 (10c = 1)
    # Only the trade at +95 s is inside (now - 60, now].
    assert name["flow_60s"] == pytest.approx(math.tanh(-3 / 100))
    assert name["activity_60s"] == pytest.approx(math.tanh(3 / 100))
    assert name["book_age"] == 1.0  # 70 s since the last book change, capped at 60 s
    assert name["ttc_1h"] == pytest.approx(3500 / 3600)


def test_gap_invalidates_until_snapshot_and_masks_orders() -> None:
    snap = RecSnapshot(seq=1, ts=START, yes=((48 * CENT, 500),), no=((50 * CENT, 500),))
    early = RecDelta(seq=0, ts=START - 1, side=Side.YES, price=30 * CENT, delta=-100)  # before any snapshot
    events: list[RecordedEvent] = [early, snap, RecGap(seq=2, ts=START + 5),
              RecDelta(seq=3, ts=START + 6, side=Side.YES, price=49 * CENT, delta=100),
              RecSnapshot(seq=4, ts=START + 20, yes=((47 * CENT, 500),), no=((50 * CENT, 500),))]
    feed = StreamFeed("KXT-1", LINEAR_CENT)
    table = ActionTable()
    obs = make_observer(EnvConfig())
    acct = AccountView(cash=10**9, available=10**9, reference_cash=10**9)
    for ev, valid in zip(events, (False, True, False, False, True), strict=True):
        feed.on_event(ev)
        assert feed.state.valid is valid
        mask = obs.mask(feed.state, acct, ev.ts, START + 3600, LINEAR_CENT, _calc())
        assert (sum(mask[2:]) > 0) is valid  # no order action on an invalid book
    assert feed.book.best_bid(Side.YES) == 47 * CENT  # the delta after the gap was skipped
    assert table.n == len(mask)


def _calc() -> FeeCalculator:
    return calculator()


def test_stale_book_masks_orders() -> None:
    fs = FeatureState()
    book = OrderBook("T", LINEAR_CENT)
    book.apply_snapshot([(48 * CENT, 500)], [(50 * CENT, 500)])
    fs.on_snapshot(START, book)
    obs = make_observer(EnvConfig(stale_after_s=60.0))
    acct = AccountView(cash=10**9, available=10**9, reference_cash=10**9)
    assert sum(obs.mask(fs, acct, START + 59, START + 3600, LINEAR_CENT, _calc())[2:]) > 0
    assert sum(obs.mask(fs, acct, START + 61, START + 3600, LINEAR_CENT, _calc())[2:]) == 0
    assert sum(obs.mask(fs, acct, START + 10, START + 5, LINEAR_CENT, _calc())[2:]) == 0  # closed


# ----------------------------------------------------------------------------- parity


def _live_observations(stream: InMemoryMarketStream, times: list[float], observer: Observer,
                       close: float) -> np.ndarray:
    """The live path: every recorded message into a StreamFeed, observe at each decision time."""
    feed = StreamFeed(stream.market.ticker, LINEAR_CENT)
    events = list(stream)
    k = 0
    cash = 1000 * MONEY_SCALE
    acct = AccountView(cash=cash, available=cash, reference_cash=cash)
    out = []
    for t in times:
        while k < len(events) and events[k].ts <= t and not isinstance(events[k], RecStatus):
            feed.on_event(events[k])
            k += 1
        out.append(np.asarray(observer.observe(feed.state, acct, t, close, 0), np.float32))
    return np.stack(out)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_env_and_live_path_give_identical_observations(generated: list[InMemoryMarketStream], fast: bool,
                                                       seed: int) -> None:
    cfg = EnvConfig(window_s=400.0, decision_interval_s=3.0, fast_replay=fast)
    pool = EpisodePool("mem", streams=generated)
    env = KalshiMarketEnv(cfg, pool)
    obs, info = env.reset(seed=seed)
    env_obs, times = [obs["observations"]], [info["t"]]
    done = False
    while not done:
        obs, reward, term, trunc, info = env.step(0)
        assert reward == 0.0
        env_obs.append(obs["observations"])
        times.append(info["t"])
        done = term or trunc
    stream = next(s for s in generated if s.market.ticker == info["ticker"])
    live = _live_observations(stream, times, env.observer, stream.market.close_time)
    assert len(times) > 100
    np.testing.assert_array_equal(np.stack(env_obs), live)
    assert np.all(np.stack(env_obs) >= OBS_LOW) and np.all(np.stack(env_obs) <= OBS_HIGH)


def test_restored_state_and_precomputed_rows_equal_the_live_path(
        generated: list[InMemoryMarketStream]) -> None:
    stream = max(generated, key=len)
    m = compile_stream(stream)
    dt = 2.5
    rows = [m.market_row(dt, k) for k in range(m.grid_len(dt))]
    feed = StreamFeed(stream.market.ticker, LINEAR_CENT)
    events = [e for e in stream if not isinstance(e, RecStatus)]
    k = 0
    rng = np.random.default_rng(0)
    checked = 0
    for j in range(len(rows)):
        t = m.start_ts + j * dt
        while k < len(events) and events[k].ts <= t:
            feed.on_event(events[k])
            k += 1
        live = market_features(feed.state, t, m.close_time)
        assert np.array_equal(rows[j], np.asarray(live, np.float32))
        if rng.random() < 0.2:  # restoring mid-stream gives the same observation
            idx = sum(1 for x in m.ts[: m.close_idx] if x <= t)
            assert market_features(m.state_at(idx, t), t, m.close_time) == live
            checked += 1
    assert checked > 10
