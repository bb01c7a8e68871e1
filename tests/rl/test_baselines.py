"""Baseline policies: names, mask discipline, the heuristics' decisions, rollout bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.rl.actions import ActionTable
from kalshiflow.rl.baselines import POLICY_NAMES, make_policy, rollout
from kalshiflow.rl.data import EpisodePool
from kalshiflow.rl.env import EnvConfig
from kalshiflow.rl.env_batch import make_vector_env
from kalshiflow.rl.features import FEATURE_NAMES, N_FEATURES

TABLE = ActionTable()
F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _features(n: int = 1, **values: float) -> np.ndarray:
    x = np.zeros((n, N_FEATURES), np.float32)
    x[:, F["mid"]] = 0.5
    x[:, F["spread"]] = 0.01
    x[:, F["ttc_1h"]] = 1.0
    for name, v in values.items():
        x[:, F[name]] = v
    return x


ALL = np.ones((1, TABLE.n), np.float32)


def test_policy_names() -> None:
    assert "baseline:edge" in POLICY_NAMES
    for name in ("hold", "random", "constant:buy_no_join_5", "constant:3", "baseline:edge",
                 "baseline:meanrev", "baseline:momentum"):
        assert make_policy(name, TABLE, seed=0).act(_features(), ALL, np.ones(1, bool)).shape == (1,)
    assert make_policy("constant:3", TABLE).name == f"constant:{TABLE.names[3]}"
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("greedy", TABLE)
    with pytest.raises(KeyError, match="unknown action"):
        make_policy("constant:sell_maybe", TABLE)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=TABLE.n - 1, max_size=TABLE.n - 1), min_size=1, max_size=8),
       st.integers(0, 2**31))
def test_random_and_constant_only_pick_allowed_actions(rows: list[list[bool]], seed: int) -> None:
    mask = np.array([[True, *r] for r in rows], np.float32)  # hold is always allowed
    new = np.zeros(len(rows), bool)
    picks = make_policy("random", TABLE, seed=seed).act(_features(len(rows)), mask, new)
    assert all(mask[i, a] for i, a in enumerate(picks))
    for a in (1, 7, TABLE.n - 1):
        picks = make_policy(f"constant:{a}", TABLE).act(_features(len(rows)), mask, new)
        assert all(p == (a if mask[i, a] else 0) for i, p in enumerate(picks))


def test_edge_fade_enters_against_the_deviation_and_exits_near_the_anchor() -> None:
    p = make_policy("baseline:edge", TABLE)
    buy_yes, buy_no = TABLE.index("buy_yes_take_10"), TABLE.index("buy_no_take_10")
    assert p.act(_features(mid=0.50), ALL, np.ones(1, bool))[0] == 0  # anchors at 0.50
    assert p.act(_features(mid=0.45), ALL, np.zeros(1, bool))[0] == 0  # 5c: not enough
    assert p.act(_features(mid=0.41), ALL, np.zeros(1, bool))[0] == buy_yes
    assert p.act(_features(mid=0.59), ALL, np.zeros(1, bool))[0] == buy_no
    assert p.act(_features(mid=0.41, spread=0.05), ALL, np.zeros(1, bool))[0] == 0  # too wide
    held = _features(mid=0.47, position=0.2)
    assert p.act(held, ALL, np.zeros(1, bool))[0] == 0  # still 3c below: keep
    back = _features(mid=0.49, position=0.2)
    assert p.act(back, ALL, np.zeros(1, bool))[0] == TABLE.index("sell_yes_take_10")
    late = _features(mid=0.40, position=0.2, ttc_1h=60 / 3600)
    assert p.act(late, ALL, np.zeros(1, bool))[0] == TABLE.index("sell_yes_take_10")  # flat before close
    assert p.act(_features(mid=0.41), ALL, np.ones(1, bool))[0] == 0  # a new episode re-anchors


def test_momentum_follows_the_move() -> None:
    p = make_policy("baseline:momentum", TABLE)
    up = _features(mid_chg_60s=0.3)  # +3c in 60 s
    assert p.act(up, ALL, np.ones(1, bool))[0] == TABLE.index("buy_yes_take_10")
    down = _features(mid_chg_60s=-0.3, position=0.2)
    assert p.act(down, ALL, np.zeros(1, bool))[0] == TABLE.index("sell_yes_take_10")


def test_rollout_counts_finished_episodes() -> None:
    cfg = EnvConfig(data="static", window_s=20.0, decision_interval_s=1.0)
    env = make_vector_env(cfg, 3, EpisodePool("static", "all"))
    rows = rollout(env, make_policy("constant:buy_yes_take_1", env.observer.table), 7, seed=0)
    assert len(rows) == 7
    assert all(r["steps"] == 20 and r["pnl"] < 0 and r["traded"] > 0 for r in rows)
    assert all(r["return"] == pytest.approx(r["pnl"]) for r in rows)
