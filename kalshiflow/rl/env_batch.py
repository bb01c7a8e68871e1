"""Batched stepping: ``KalshiVectorEnv``, N market episodes stepped in one call.

A ``gymnasium.vector.VectorEnv`` (so RLlib can take it whole with
``gym_env_vectorize_mode="VECTOR_ENTRY_POINT"``, see env.rllib_env_creator) that loops over N
:class:`~kalshiflow.rl.sim.MarketSim` episodes in-process and writes observations straight into
preallocated float32 arrays: no per-env wrappers, no SyncVectorEnv (which halves throughput for
cheap envs, reference-systems.md §2.2). Same MarketSim, same Observer as the single env, so a
sub-env given the same seed produces the same trajectory as ``KalshiMarketEnv``.

``reset(options={"market": [3, 4, 5]})`` pins each sub-env's episode (lists are per sub-env).

Autoreset: NEXT_STEP (gymnasium's default, what RLlib's SingleAgentEnvRunner expects): the step
after a sub-env ends resets it and returns its first observation with reward 0 and
terminated = truncated = False, ignoring that step's action.

info (arrays of length N): pnl, value, position (contracts, + YES), traded (contracts bought so
far this episode), settled, invalid_action, rejected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from kalshiflow.market.prices import MONEY_SCALE, QTY_SCALE
from kalshiflow.rl.data import EpisodePool
from kalshiflow.rl.env import make_observer, make_pool, pick_episode, spaces_for
from kalshiflow.rl.features import N_MARKET_FEATURES
from kalshiflow.rl.sim import EnvConfig, MarketSim, StepResult

__all__ = ["KalshiVectorEnv", "make_vector_env"]


class KalshiVectorEnv(VectorEnv[Any, Any, Any]):
    """N independent market episodes (see the module docstring)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, config: EnvConfig, num_envs: int, pool: EpisodePool | None = None) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.config = config
        self.num_envs = num_envs
        self.pool = pool or make_pool(config)
        self.observer = make_observer(config)
        self.single_observation_space, self.single_action_space = spaces_for(self.observer, config.flat_obs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        n, f, a = num_envs, self.observer.n_features, self.observer.n_actions
        self._features = np.zeros((n, f), np.float32)
        self._mask = np.zeros((n, a), np.float32)
        self._rngs = [np.random.default_rng() for _ in range(n)]
        self._sims: list[MarketSim | None] = [None] * n
        self._needs_reset = [True] * n
        self._res = [StepResult() for _ in range(n)]
        self._value = [0] * n  # marked value (Money) per sub-env, kept by step()

    # ------------------------------------------------------------------ API

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, list):
            seeds = seed
        else:  # one int seeds sub-env i with seed + i
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i] = np.random.default_rng(s)
            self._reset_one(i, _options_for(options, i))
        self._needs_reset = [False] * self.num_envs
        n = self.num_envs
        return self._obs(), self._info([False] * n, [0] * n)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        raw = np.asarray(actions).reshape(n)
        # Masked (or out-of-range) actions are holds: checked for the whole batch at once.
        inside = (raw >= 0) & (raw < self._mask.shape[1])
        allowed = inside & (self._mask[np.arange(n), np.where(inside, raw, 0)] > 0)
        acts = np.where(allowed, raw, 0).tolist()
        invalid = (~allowed).tolist()
        rewards = [0.0] * n
        terminated = [False] * n
        truncated = [False] * n
        rejected = [0] * n
        value = self._value
        mask, features, sims, needs = self._mask, self._features, self._sims, self._needs_reset
        rows: list[np.ndarray] = [None] * n  # type: ignore[list-item]
        for i in range(n):
            if needs[i]:
                self._reset_one(i, None)
                needs[i] = invalid[i] = False  # this step's action is ignored, never "invalid"
                rows[i] = features[i, :N_MARKET_FEATURES].copy()
                continue
            sim = sims[i]
            assert sim is not None
            a = acts[i]
            if not a and sim.fs is None:  # idle on the precomputed path: the lean step
                res = self._res[i]
                rows[i] = sim.idle_step_into(res, features, mask, i)
            else:
                res = sim.step(a, self._res[i])
                rows[i] = sim.market_row()
                sim.observe_into(features, mask, i, market=False)
            value[i] = sim.value
            rewards[i] = res.reward
            rejected[i] = res.rejected
            if res.terminated or res.truncated:
                terminated[i], truncated[i] = res.terminated, res.truncated
                needs[i] = True
        features[:, :N_MARKET_FEATURES] = np.array(rows)  # one copy for the batch
        info = self._info(invalid, rejected)
        return (self._obs(), np.asarray(rewards, np.float64), np.asarray(terminated), np.asarray(truncated),
                info)

    def close_extras(self, **kwargs: Any) -> None:
        self._sims = [None] * self.num_envs

    # ------------------------------------------------------------------ internals

    def _reset_one(self, i: int, options: dict[str, Any] | None) -> None:
        rng = self._rngs[i]
        market, t0 = pick_episode(self.pool, self.config, rng, options)
        sim = MarketSim(market, self.observer, self.config, t0, int(rng.integers(2**63)))
        self._sims[i] = sim
        sim.observe_into(self._features, self._mask, i)
        self._value[i] = sim.value

    def _obs(self) -> Any:
        if self.config.flat_obs:
            return self._features.copy()
        return {"observations": self._features.copy(), "action_mask": self._mask.copy()}

    def _info(self, invalid: list[bool], rejected: list[int]) -> dict[str, Any]:
        sims = self._sims
        value = np.asarray(self._value, np.int64)
        info: dict[str, Any] = {
            "value": value / MONEY_SCALE,
            "pnl": (value - self.config.starting_cash * MONEY_SCALE) / MONEY_SCALE,  # as the single env
            "position": np.asarray([s.acct.position if s else 0 for s in sims], np.float64) / QTY_SCALE,
            "traded": np.asarray([s.volume if s is not None else 0 for s in sims], np.float64) / QTY_SCALE,
            "settled": np.asarray([s is not None and s.settled for s in sims]),
            "invalid_action": np.asarray(invalid),
            "rejected": np.asarray(rejected),
        }
        if self.config.flat_obs:
            info["action_mask"] = self._mask.copy()
        return info


def _options_for(options: dict[str, Any] | None, i: int) -> dict[str, Any] | None:
    """Reset options of sub-env i: a list value gives each sub-env its own entry."""
    if not options:
        return options
    return {k: (v[i] if isinstance(v, (list, tuple)) else v) for k, v in options.items()}


def make_vector_env(config: EnvConfig, num_envs: int, pool: EpisodePool | None = None) -> KalshiVectorEnv:
    """N sub-envs sharing one episode pool (markets compiled once)."""
    return KalshiVectorEnv(config, num_envs, pool)

