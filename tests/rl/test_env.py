"""The env: Gymnasium contract, determinism, fill model (latency, queue, impact), accounting,
settlement, masks, the fast replay path and the vector env."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import gymnasium as gym
import msgspec
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.vector import DictInfoToList

from kalshiflow.config import ConfigError
from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.replay import (
    InMemoryMarketStream,
    RecDelta,
    RecordedEvent,
    RecSnapshot,
    RecStatus,
    RecTrade,
)
from kalshiflow.market.fees import taker_fee
from kalshiflow.market.prices import CENT, MONEY_SCALE, QTY_SCALE
from kalshiflow.market.types import Side
from kalshiflow.rl.data import EpisodePool, SyntheticConfig
from kalshiflow.rl.env import EnvConfig, KalshiMarketEnv, rllib_env_creator
from kalshiflow.rl.env_batch import KalshiVectorEnv, make_vector_env
from kalshiflow.rl.features import FEATURE_NAMES

START = 1_767_225_600.0
SMALL = SyntheticConfig(markets_per_seed=2, lifetime_min_s=600.0, lifetime_max_s=700.0)
C = QTY_SCALE  # one contract


@pytest.fixture(scope="module")
def synth_pool() -> EpisodePool:
    return EpisodePool("synthetic:driftless:0-1", "all", synthetic=SMALL)


def _stream(events: list[RecordedEvent], *, close: float = START + 3600.0) -> EpisodePool:
    info = MarketInfo(ticker="KXT-1", event_ticker="KXT", series_ticker="KX", title="t", open_time=START,
                      close_time=close, market_id="00000000-0000-4000-8000-000000000001")
    return EpisodePool("mem", streams=[InMemoryMarketStream(info, events)], end_ts=min(close, START + 600.0))


def _snap(yes: tuple[tuple[int, int], ...], no: tuple[tuple[int, int], ...]) -> RecSnapshot:
    return RecSnapshot(seq=1, ts=START, yes=yes, no=no)


def _env(pool: EpisodePool, **kw: Any) -> KalshiMarketEnv:
    base = {"window_s": 60.0, "decision_interval_s": 1.0, "latency_s": 0.2, "episode_start": "open"}
    cfg = EnvConfig(**{**base, **kw})
    return KalshiMarketEnv(cfg, pool)


def _act(env: KalshiMarketEnv, name: str) -> tuple[Any, float, bool, bool, dict[str, Any]]:
    a = env.observer.table.index(name)
    assert env.action_masks()[a], f"{name} is masked"
    return env.step(a)


def _random_run(env: gym.Env[Any, Any], seed: int, hold_p: float = 0.0) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    out: list[tuple[Any, ...]] = [(obs["observations"].tobytes(), obs["action_mask"].tobytes(),
                                   info["value"])]
    done = False
    while not done:
        allowed = np.flatnonzero(obs["action_mask"])
        a = 0 if rng.random() < hold_p else int(rng.choice(allowed))
        obs, r, term, trunc, info = env.step(a)
        out.append((obs["observations"].tobytes(), obs["action_mask"].tobytes(), r, term, trunc,
                    info["value"], info["position"], info["fees"], info["rejected"]))
        done = term or trunc
    return out


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("flat", [False, True])
def test_check_env_passes(synth_pool: EpisodePool, flat: bool) -> None:
    check_env(KalshiMarketEnv(EnvConfig(window_s=120.0, flat_obs=flat), synth_pool), skip_render_check=True)


def test_same_seed_same_trajectory(synth_pool: EpisodePool) -> None:
    cfg = EnvConfig(window_s=300.0, decision_interval_s=2.0)
    a = _random_run(KalshiMarketEnv(cfg, synth_pool), seed=5)
    b = _random_run(KalshiMarketEnv(cfg, synth_pool), seed=5)
    assert a == b and len(a) > 100
    assert _random_run(KalshiMarketEnv(cfg, synth_pool), seed=6) != a


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_precomputed_replay_equals_engine_replay(synth_pool: EpisodePool, seed: int) -> None:
    """The idle fast path (precomputed live-path state) and full engine replay agree exactly,
    step by step, under a policy that trades and idles in turns (idle <-> engine switches)."""
    cfg = EnvConfig(window_s=400.0, decision_interval_s=2.0)
    fast = _random_run(KalshiMarketEnv(cfg, synth_pool), seed, 0.8)
    engine_only = msgspec.structs.replace(cfg, fast_replay=False)
    slow = _random_run(KalshiMarketEnv(engine_only, synth_pool), seed, 0.8)
    assert fast == slow
    assert any(row[6] for row in fast[1:])  # it held positions at some point


def test_config_is_strict() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"window": 10}, EnvConfig)
    with pytest.raises(ConfigError, match="latency_s"):
        EnvConfig(latency_s=5.0, decision_interval_s=5.0)
    with pytest.raises(ValueError, match="unknown EnvConfig keys"):
        rllib_env_creator({"data": "static", "bogus": 1})


def test_rllib_creator_gives_single_or_vector_env() -> None:
    single = rllib_env_creator({"data": "static", "window_s": 30.0})
    assert isinstance(single, KalshiMarketEnv)
    vec = rllib_env_creator({"data": "static", "window_s": 30.0, "num_envs": 3})
    assert isinstance(vec, KalshiVectorEnv) and vec.num_envs == 3


def test_gymnasium_make_vec_entry_point_as_rllib_builds_it() -> None:
    """RLlib's SingleAgentEnvRunner: gym.register(vector_entry_point=...), make_vec in
    VECTOR_ENTRY_POINT mode, DictInfoToList around it."""
    conf = {"data": "static", "window_s": 5.0, "decision_interval_s": 1.0}
    gym.register("kalshiflow-test-v0", entry_point=lambda: rllib_env_creator(conf),  # type: ignore[arg-type]
                 vector_entry_point=lambda num_envs: rllib_env_creator({**conf, "num_envs": num_envs}))  # type: ignore[arg-type]
    try:
        env: Any = DictInfoToList(gym.make_vec("kalshiflow-test-v0", num_envs=2,
                                               vectorization_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT))
        obs, infos = env.reset(seed=0)
        assert obs["observations"].shape == (2, len(FEATURE_NAMES)) and len(infos) == 2
        for _ in range(5):  # a 5 s window at 1 s decisions
            obs, rew, term, trunc, infos = env.step(np.zeros(2, np.int64))
        assert trunc.all() and infos[0]["pnl"] == 0.0
        assert env.single_observation_space.contains({k: v[0] for k, v in obs.items()})
    finally:
        gym.registry.pop("kalshiflow-test-v0", None)


# ----------------------------------------------------------------------------- accounting and fills


def test_hold_keeps_exactly_the_start_value(synth_pool: EpisodePool) -> None:
    env = KalshiMarketEnv(EnvConfig(window_s=600.0), synth_pool)
    for seed in range(3):
        env.reset(seed=seed)
        done = False
        while not done:
            _, r, term, trunc, info = env.step(0)
            assert r == 0.0
            done = term or trunc
        assert info["value"] == 1000.0 and info["pnl"] == 0.0


def test_rewards_sum_to_the_pnl(synth_pool: EpisodePool) -> None:
    env = KalshiMarketEnv(EnvConfig(window_s=600.0, decision_interval_s=2.0), synth_pool)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=11)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        total += r
        done = term or trunc
    assert info["traded"] > 0
    assert total == pytest.approx(info["pnl"], abs=1e-9)
    assert info["cash"] >= 0


def test_sell_from_flat_is_masked_and_round_trip_costs_spread_plus_fees() -> None:
    pool = _stream([_snap(((47 * CENT, 500 * C), (48 * CENT, 500 * C)),
                          ((49 * CENT, 500 * C), (50 * CENT, 500 * C)))])
    env = _env(pool)
    env.reset(seed=0)
    names = env.observer.table.names
    mask = env.action_masks()
    assert not any(mask[i] for i, n in enumerate(names) if n.startswith("sell_"))
    assert not mask[names.index("cancel_all")]
    _act(env, "buy_yes_take_10")  # pays the ask, 0.50
    _, _, _, _, info = _act(env, "sell_yes_take_10")  # hits the bid, 0.48
    # Selling YES at 0.48 is buying NO at 0.52.
    fee = taker_fee(50 * CENT, 10 * C) + taker_fee(52 * CENT, 10 * C)
    assert info["position"] == 0
    assert round(info["pnl"] * MONEY_SCALE) == -(10 * C * 2 * CENT) - fee


def test_taking_consumes_liquidity() -> None:
    pool = _stream([_snap(((48 * CENT, 500 * C),), ((50 * CENT, 5 * C), (49 * CENT, 500 * C)))])
    env = _env(pool)
    env.reset(seed=0)
    _, _, _, _, info = _act(env, "buy_yes_take_10")  # IOC at 0.50: only 5 there
    assert info["position"] == 5
    obs, _, _, _, info = _act(env, "buy_yes_take_10")  # the ask is now 0.51: our own impact
    assert info["position"] == 15
    assert obs["observations"][1] == pytest.approx(0.51)  # yes_ask feature sees the impact
    cost = 5 * 50 + 10 * 51  # cents
    assert info["cash"] == pytest.approx(1000 - cost / 100 - info["fees"])
    assert info["value"] == pytest.approx(info["cash"] + 15 * 0.48)  # marked at the crowd's bid


def test_orders_arrive_after_latency() -> None:
    """The ask disappears 0.1 s after the decision: a 0.2 s order misses it, a 0.05 s one gets it."""
    events: list[RecordedEvent] = [
        _snap(((48 * CENT, 500 * C),), ((50 * CENT, 5 * C), (45 * CENT, 500 * C))),
        RecDelta(seq=2, ts=START + 0.1, side=Side.NO, price=50 * CENT, delta=-5 * C),
    ]
    for latency, filled in ((0.2, 0), (0.05, 5)):
        env = _env(_stream(events), latency_s=latency)
        env.reset(seed=0)
        _, _, _, _, info = _act(env, "buy_yes_take_5")
        assert info["position"] == filled


def test_passive_order_waits_in_the_queue_for_recorded_trades() -> None:
    """Joining a 5-contract bid: a recorded cancel never fills us (crowd leaves from the back);
    crowd arriving later queues behind us; a recorded 3-lot trade eats crowd ahead of us, the
    next 2-lot reaches us (FIFO) although the recorded level still has crowd volume."""
    def trade(seq: int, ts: float, n: int) -> list[RecordedEvent]:
        return [RecDelta(seq=seq, ts=ts, side=Side.YES, price=49 * CENT, delta=-n * C),
                RecTrade(seq=seq + 1, ts=ts, yes_price=49 * CENT, count=n * C, taker_side=Side.NO)]

    events = [_snap(((49 * CENT, 5 * C),), ((50 * CENT, 500 * C),)),  # 1-tick spread: join = 0.49
              RecDelta(seq=2, ts=START + 1.5, side=Side.YES, price=49 * CENT, delta=-1 * C),  # cancel
              RecDelta(seq=3, ts=START + 2.2, side=Side.YES, price=49 * CENT, delta=5 * C),  # joins behind
              *trade(4, START + 2.5, 3), *trade(6, START + 3.5, 2)]
    env = _env(_stream(events))
    env.reset(seed=0)
    obs, _, _, _, info = _act(env, "buy_yes_join_1")  # t = 1: resting behind 5 crowd contracts
    assert info["position"] == 0 and obs["observations"][FEATURE_YES_ORDER] == 1.0
    _, _, _, _, info = env.step(0)  # t = 2: the cancel left from the back
    assert info["position"] == 0
    _, _, _, _, info = env.step(0)  # t = 3: 3 traded, 1 crowd contract still ahead
    assert info["position"] == 0
    _, _, _, _, info = env.step(0)  # t = 4: the next trade fills us at 0.49, maker: no fee
    assert info["position"] == 1 and info["fees"] == 0.0
    assert info["cash"] == pytest.approx(1000 - 0.49)


FEATURE_YES_ORDER = FEATURE_NAMES.index("yes_order")


def test_settlement_pays_one_dollar_and_terminates() -> None:
    events: list[RecordedEvent] = [
              _snap(((48 * CENT, 500 * C),), ((50 * CENT, 500 * C),)),
              RecStatus(seq=2, ts=START + 3.0, status="closed"),
              RecStatus(seq=3, ts=START + 60.0, status="settled", result="yes")]
    env = _env(_stream(events, close=START + 3.0))
    env.reset(seed=0)
    _act(env, "buy_yes_take_10")
    _, r, term, trunc, info = env.step(0)
    assert not term
    _, r, term, trunc, info = env.step(0)
    assert term and not trunc and info["settled"]
    fee = taker_fee(50 * CENT, 10 * C) / MONEY_SCALE
    assert info["pnl"] == pytest.approx(10 * (1.0 - 0.50) - fee)
    assert info["position"] == 0


def test_masks_respect_cash_and_position_cap() -> None:
    pool = _stream([_snap(((48 * CENT, 500 * C),), ((50 * CENT, 500 * C),))])
    env = _env(pool, starting_cash=2)  # $2: 5 contracts at 0.50 + up to 9c fees do not fit
    env.reset(seed=0)
    names = env.observer.table.names
    mask = env.action_masks()
    assert mask[names.index("buy_yes_take_1")] and not mask[names.index("buy_yes_take_5")]
    env = _env(pool, max_position=12)
    env.reset(seed=0)
    _act(env, "buy_yes_take_10")
    mask = env.action_masks()
    assert mask[names.index("buy_yes_take_1")] and not mask[names.index("buy_yes_take_5")]
    assert mask[names.index("buy_no_take_10")]  # buying NO nets the YES holding
    assert mask[names.index("sell_yes_take_10")] and not mask[names.index("sell_no_take_1")]


def test_invalid_action_is_a_hold(synth_pool: EpisodePool) -> None:
    env = KalshiMarketEnv(EnvConfig(window_s=60.0), synth_pool)
    env.reset(seed=0)
    names = env.observer.table.names
    _, r, _, _, info = env.step(names.index("sell_yes_take_1"))  # nothing held: masked
    assert info["invalid_action"] and r == 0.0 and info["position"] == 0


# ----------------------------------------------------------------------------- vector env


def test_vector_env_invalid_actions_are_holds_except_on_the_reset_step(synth_pool: EpisodePool) -> None:
    cfg = EnvConfig(window_s=10.0, decision_interval_s=5.0)
    vec = make_vector_env(cfg, 3, synth_pool)
    names = vec.observer.table.names
    vec.reset(seed=0)
    sell = names.index("sell_yes_take_1")  # nothing held: masked
    _, rew, _, _, info = vec.step(np.array([sell, 0, 99]))  # masked, hold, out of range
    assert info["invalid_action"].tolist() == [True, False, True] and not rew.any()
    assert (info["position"] == 0).all()
    _, _, term, trunc, _ = vec.step(np.zeros(3, np.int64))  # the 10 s window ends
    assert (term | trunc).all()
    _, rew, _, _, info = vec.step(np.array([sell, sell, 99]))  # the autoreset step ignores actions
    assert not info["invalid_action"].any() and not rew.any()


def test_vector_env_matches_single_envs(synth_pool: EpisodePool) -> None:
    cfg = EnvConfig(window_s=120.0, decision_interval_s=2.0)
    n = 3
    vec = make_vector_env(cfg, n, synth_pool)
    singles = [KalshiMarketEnv(cfg, synth_pool) for _ in range(n)]
    obs, _ = vec.reset(seed=40)
    s_obs = [e.reset(seed=40 + i)[0] for i, e in enumerate(singles)]
    rng = np.random.default_rng(0)
    ended = np.zeros(n, bool)
    steps = 0
    while not ended.all():
        actions = np.array([rng.choice(np.flatnonzero(obs["action_mask"][i])) for i in range(n)])
        for i in range(n):
            if not ended[i]:
                np.testing.assert_array_equal(obs["observations"][i], s_obs[i]["observations"])
        obs, rew, term, trunc, info = vec.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:
                continue
            s_obs[i], r, t1, t2, s_info = env.step(actions[i])
            assert (rew[i], term[i], trunc[i]) == (r, t1, t2)
            assert info["pnl"][i] == s_info["pnl"]
            ended[i] = t1 or t2
        steps += 1
    assert steps >= 60
    # NEXT_STEP autoreset: the step after the end returns a fresh episode with reward 0.
    obs, rew, term, trunc, info = vec.step(np.zeros(n, np.int64))
    assert not rew.any() and not term.any() and not trunc.any()
    assert (info["pnl"] == 0).all()


def test_bench_env_prints_one_json_object_with_the_promised_keys() -> None:
    command = [sys.executable, "-m", "kalshiflow.bench", "env", "--json", "--seeds", "0", "--num-envs", "4",
               "--seconds", "0.1", "--repeat", "1", "--window", "120"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("steps_per_s", "noop_steps_per_s", "ratio", "batched_steps_per_s", "batched_noop_steps_per_s",
                "batched_ratio", "batched_hold_steps_per_s", "per_cpu_s", "targets",
                "prior_system_steps_per_s"):
        assert key in result, key
    assert result["targets"] == {"batched_steps_per_s": 100_000}
    assert result["steps_per_s"] > 0 and result["batched_hold_steps_per_s"] > 0
