"""Baseline policies over the env's observation (features + action mask), batched.

Names (``make_policy(name, table, seed)``):
- ``hold``: always action 0.
- ``random``: uniform over the allowed actions.
- ``constant:<action>``: one action every step (its name, e.g. ``buy_yes_take_5``, or its id);
  hold whenever that action is masked. The reward-hacking probes run every one of them.
- ``baseline:edge`` (alias ``baseline:meanrev``): fades the mid's deviation from the episode's
  first mid — the edge generator's documented exploitable pull toward the opening value
  (docs/generator.md "Scenarios"): enter ``size`` contracts at the ask when the mid is more than
  ``entry`` below (buy YES) or above (buy NO) that anchor, exit at the bid when back within
  ``exit``. Meant for ``episode_start="open"`` (then the anchor IS the opening mid).
- ``baseline:momentum``: follows the 60 s mid change (enter on a move of ``entry``, exit when
  the move reverses); a foil that should not profit in either scenario.

Every policy is ``act(features (N, F), mask (N, A), new_episode (N,) bool) -> actions (N,)``;
``new_episode[i]`` is True on the first observation of an episode (stateful policies reset).
``rollout`` runs a policy on a vector env and returns the final PnL of each finished episode.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from kalshiflow.rl.actions import ActionTable
from kalshiflow.rl.features import FEATURE_NAMES

__all__ = ["POLICY_NAMES", "Policy", "make_policy", "rollout"]

POLICY_NAMES = ("hold", "random", "constant:<action>", "baseline:edge", "baseline:meanrev",
                "baseline:momentum")
_F = {name: i for i, name in enumerate(FEATURE_NAMES)}


class Policy(Protocol):
    name: str

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray: ...


class Hold:
    name = "hold"

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        return np.zeros(len(mask), np.int64)


class RandomPolicy:
    """Uniform over allowed actions (Gumbel-max over the mask: one vectorised draw per step)."""

    def __init__(self, seed: int | None = None) -> None:
        self.name = "random"
        self.rng = np.random.default_rng(seed)

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        noise = self.rng.gumbel(size=mask.shape)
        return np.argmax(np.where(mask > 0, noise, -np.inf), axis=1).astype(np.int64)


class Constant:
    def __init__(self, action: int, name: str) -> None:
        self.action, self.name = action, f"constant:{name}"

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        return np.where(mask[:, self.action] > 0, self.action, 0).astype(np.int64)


class _Trader:
    """Shared entry/exit plumbing: one position at a time, entered and exited at the touch."""

    def __init__(self, table: ActionTable, size: int) -> None:
        size = max((s for s in table.sizes if s <= size), default=min(table.sizes))
        self.buy_yes = table.index(f"buy_yes_take_{size}")
        self.buy_no = table.index(f"buy_no_take_{size}")
        self.sell_yes = table.index(f"sell_yes_take_{max(table.sizes)}")
        self.sell_no = table.index(f"sell_no_take_{max(table.sizes)}")

    def decide(self, features: np.ndarray, mask: np.ndarray, long_signal: np.ndarray,
               short_signal: np.ndarray, exit_long: np.ndarray, exit_short: np.ndarray) -> np.ndarray:
        pos = features[:, _F["position"]]
        flat = pos == 0
        actions = np.zeros(len(mask), np.int64)
        want = np.full(len(mask), -1)
        want[flat & long_signal] = self.buy_yes
        want[flat & short_signal] = self.buy_no
        want[(pos > 0) & exit_long] = self.sell_yes
        want[(pos < 0) & exit_short] = self.sell_no
        ok = want >= 0
        rows = np.flatnonzero(ok)
        allowed = mask[rows, want[rows]] > 0
        actions[rows[allowed]] = want[rows[allowed]]
        return actions


class EdgeFade(_Trader):
    """Fade the deviation from the episode's first mid (see the module docstring)."""

    def __init__(self, table: ActionTable, *, entry: float = 0.08, exit: float = 0.02, size: int = 10,
                 max_spread: float = 0.03, flat_before_close_s: float = 120.0) -> None:
        super().__init__(table, size)
        self.name = "baseline:edge"
        self.entry, self.exit, self.max_spread = entry, exit, max_spread
        self.late = flat_before_close_s / 3600.0  # in ttc_1h units
        self.anchor: np.ndarray | None = None

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        mid = features[:, _F["mid"]].astype(np.float64)
        if self.anchor is None or len(self.anchor) != len(mid):
            self.anchor = mid.copy()
        self.anchor = np.where(new_episode, mid, self.anchor)
        dev = mid - self.anchor
        # Flat before the close: a position held into settlement is a coin flip (no edge left,
        # only variance).
        late = features[:, _F["ttc_1h"]] < self.late
        go = (features[:, _F["spread"]] <= self.max_spread + 1e-9) & ~late
        return self.decide(features, mask, go & (dev < -self.entry), go & (dev > self.entry),
                           late | (dev > -self.exit), late | (dev < self.exit))


class Momentum(_Trader):
    """Follow the 60 s mid change (enter on |move| > entry, exit when it reverses)."""

    def __init__(self, table: ActionTable, *, entry: float = 0.02, size: int = 10,
                 max_spread: float = 0.03) -> None:
        super().__init__(table, size)
        self.name = "baseline:momentum"
        self.entry, self.max_spread = entry, max_spread

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        move = features[:, _F["mid_chg_60s"]].astype(np.float64) / 10.0  # back to dollars
        tight = features[:, _F["spread"]] <= self.max_spread + 1e-9
        return self.decide(features, mask, tight & (move > self.entry), tight & (move < -self.entry),
                           move < 0, move > 0)


def make_policy(name: str, table: ActionTable, seed: int | None = None) -> Policy:
    """A policy by name (see the module docstring)."""
    if name == "hold":
        return Hold()
    if name == "random":
        return RandomPolicy(seed)
    if name.startswith("constant:"):
        what = name.partition(":")[2]
        action = int(what) if what.isdigit() else table.index(what)
        if not 0 <= action < table.n:
            raise ValueError(f"action {action} outside 0..{table.n - 1}")
        return Constant(action, table.names[action])
    if name in ("baseline:edge", "baseline:meanrev"):
        return EdgeFade(table)
    if name == "baseline:momentum":
        return Momentum(table)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}")


def rollout(env: Any, policy: Policy, episodes: int, seed: int | None = None,
            max_steps: int = 10_000_000) -> list[dict[str, float]]:
    """Run ``policy`` on a vector env (``KalshiVectorEnv``) until ``episodes`` episodes finished;
    return one dict per finished episode: pnl, traded (contracts), settled, steps, return."""
    obs, info = env.reset(seed=seed)
    n = env.num_envs
    new = np.ones(n, bool)
    returns = np.zeros(n)
    lengths = np.zeros(n, np.int64)
    done_rows: list[dict[str, float]] = []
    resetting = np.zeros(n, bool)
    for _ in range(max_steps):
        features = obs["observations"] if isinstance(obs, dict) else obs
        mask = obs["action_mask"] if isinstance(obs, dict) else info["action_mask"]  # flat: in info
        actions = policy.act(features, mask, new)
        obs, reward, term, trunc, info = env.step(actions)
        new = resetting.copy()  # NEXT_STEP autoreset: this step returned the first observation
        returns += np.where(resetting, 0.0, reward)
        lengths += ~resetting
        ended = (term | trunc) & ~resetting
        for i in np.flatnonzero(ended):
            done_rows.append({"pnl": float(info["pnl"][i]), "traded": float(info["traded"][i]),
                              "settled": float(info["settled"][i]), "steps": float(lengths[i]),
                              "return": float(returns[i])})
            returns[i] = 0.0
            lengths[i] = 0
            if len(done_rows) >= episodes:
                return done_rows
        resetting = ended
    raise RuntimeError(f"rollout: only {len(done_rows)} of {episodes} episodes finished in {max_steps} steps")
