"""Reward-hacking probes (prior-system-lessons §8.1, §10.2): nothing a policy can farm.

- On a static book every constant action and random play end at or below the start value, in
  every episode (deterministic: no price moves to hide behind).
- On driftless generated markets (a martingale latent value) every constant action and random
  play have no significantly positive mean PnL: the lower confidence bound is <= 0.
- Hold ends exactly at the start value.
- In the ``edge`` scenario a simple public-information heuristic has a significantly positive
  mean PnL after spread, fees, latency and queueing: the env can reward skill.
"""

from __future__ import annotations

import numpy as np
import pytest

from kalshiflow.exchange.generator.config import TierConfig
from kalshiflow.rl.actions import ActionTable
from kalshiflow.rl.baselines import make_policy, rollout
from kalshiflow.rl.data import EpisodePool, SyntheticConfig
from kalshiflow.rl.env import EnvConfig
from kalshiflow.rl.env_batch import make_vector_env

ALL_POLICIES = ["hold", "random", *(f"constant:{name}" for name in ActionTable().names[1:])]
Z = 3.0  # one-sided ~99.9 %: the probes are deterministic (fixed seeds), the margin is for honesty


def _pnls(cfg: EnvConfig, pool: EpisodePool, policy: str, episodes: int, seed: int = 0) -> np.ndarray:
    env = make_vector_env(cfg, min(episodes, 16), pool)
    rows = rollout(env, make_policy(policy, env.observer.table, seed=seed), episodes, seed=seed)
    return np.array([r["pnl"] for r in rows])


def _lower_bound(x: np.ndarray) -> float:
    return float(x.mean() - Z * x.std(ddof=1) / np.sqrt(len(x)))


def test_static_book_nothing_ends_above_its_start() -> None:
    cfg = EnvConfig(data="static", window_s=120.0, decision_interval_s=1.0, episode_start="open")
    pool = EpisodePool("static", "all")
    for policy in ALL_POLICIES:
        pnl = _pnls(cfg, pool, policy, episodes=4 if policy == "random" else 1)
        assert (pnl <= 0).all(), (policy, pnl)
        if policy in ("hold", "constant:cancel_all") or policy.startswith("constant:sell_"):
            assert (pnl == 0).all(), (policy, pnl)  # nothing to sell from flat: no trade at all
    # Taking and then being marked at the bid costs the spread: buying is never free.
    assert _pnls(cfg, pool, "constant:buy_yes_take_1", 1)[0] < 0


@pytest.fixture(scope="module")
def driftless() -> tuple[EnvConfig, EpisodePool]:
    syn = SyntheticConfig(markets_per_seed=4, lifetime_min_s=600.0, lifetime_max_s=900.0)
    cfg = EnvConfig(data="synthetic:driftless:0-3", split="all", synthetic=syn, window_s=600.0,
                    decision_interval_s=5.0)
    return cfg, EpisodePool(cfg.data, "all", synthetic=syn)


def test_driftless_markets_no_constant_or_random_policy_profits(
        driftless: tuple[EnvConfig, EpisodePool]) -> None:
    cfg, pool = driftless
    report = {}
    for policy in ALL_POLICIES:
        pnl = _pnls(cfg, pool, policy, episodes=32 if policy == "random" else 16)
        report[policy] = (round(float(pnl.mean()), 3), round(_lower_bound(pnl), 3))
        if policy == "hold":
            assert (pnl == 0).all()
        assert _lower_bound(pnl) <= 0.0 or pnl.std() == 0 and pnl.mean() <= 0, (policy, report[policy])
    traders = [p for p in report if p.startswith("constant:buy")]
    assert sum(report[p][0] < 0 for p in traders) >= len(traders) // 2, report  # costs bite


# One tight, moderately active tier (1-2c spreads): where the edge scenario's pull toward the
# opening value is worth more than the spread and fees (docs/generator.md "Scenarios").
TIGHT = SyntheticConfig(
    markets_per_seed=6, lifetime_min_s=4 * 3600.0, lifetime_max_s=4 * 3600.0, session_s=2400.0,
    tiers=(TierConfig(name="tight", share=1.0, spread_cents_min=1, spread_cents_max=2, activity_median=0.5,
                      activity_sigma=0.3, market_makers=2, quote_levels=2, quote_size_median=60.0),),
)


def _heuristic(scenario: str, seeds: str = "0-3") -> np.ndarray:
    cfg = EnvConfig(data=f"synthetic:{scenario}:{seeds}", split="all", synthetic=TIGHT, window_s=2400.0,
                    decision_interval_s=10.0, episode_start="open")
    pool = EpisodePool(cfg.data, "all", synthetic=TIGHT)
    n = len(pool)
    env = make_vector_env(cfg, n, pool)
    policy = make_policy("baseline:edge", env.observer.table)
    # Every market once, from its open (then the anchor is the opening mid).
    obs, _ = env.reset(options={"market": list(range(n))})
    new = np.ones(n, bool)
    pnl = np.full(n, np.nan)
    while np.isnan(pnl).any():
        actions = policy.act(obs["observations"], obs["action_mask"], new)
        new[:] = False
        obs, _, term, trunc, info = env.step(actions)
        ended = (term | trunc) & np.isnan(pnl)
        pnl[ended] = info["pnl"][ended]
    return pnl


def test_edge_scenario_rewards_a_simple_heuristic() -> None:
    edge = _heuristic("edge")
    assert len(edge) == 24
    se = edge.std(ddof=1) / np.sqrt(len(edge))
    assert edge.mean() - 2.0 * se > 0.0, (edge.mean(), se)
    flat = _heuristic("driftless")
    assert _lower_bound(flat) <= 0.0 and flat.mean() < edge.mean(), (flat.mean(), edge.mean())
