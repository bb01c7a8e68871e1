"""Gymnasium env over recorded / generated Kalshi books: ``make_env(EnvConfig(...))``.

API (stable; the training/evaluation code builds on it):

    env = make_env(EnvConfig(data="synthetic:edge:0-31", split="train"))
    obs, info = env.reset(seed=7)          # same seed -> same market, window and trajectory
    obs["observations"]   float32 (N_FEATURES,)   features.FEATURES, fixed scales, in [-2, 2]
    obs["action_mask"]    float32 (n_actions,)    1 = allowed (RLlib's action-masking RLModule)
    obs, reward, terminated, truncated, info = env.step(action)

- reward: change of the marked account value in dollars (x ``reward_scale``): cash + holding at
  the bid of the held side (own orders excluded), fees included. Hold earns exactly 0.
- terminated: the market settled inside the episode (value final); truncated: window or data end.
- info: ticker, t, value, pnl, cash, position (contracts, + YES), fees, traded (contracts),
  settled, rejected (orders the venue refused this step), invalid_action (a masked action was
  sent; it is treated as hold), schema_hash; with ``flat_obs`` also action_mask.
- ``reset(options={"market": i, "t0": t})`` pins the episode (evaluation sweeps).
- ``env.observer.schema_hash`` goes into model artifacts (features.check_schema refuses others).
- Batched stepping: env_batch.KalshiVectorEnv / ``make_vector_env(config, n)``; RLlib:
  ``rllib_env_creator`` (returns the vector env when RLlib asks for ``num_envs``; use
  ``gym_env_vectorize_mode="VECTOR_ENTRY_POINT"``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import msgspec
import numpy as np

from kalshiflow.rl.actions import ActionTable
from kalshiflow.rl.data import CompiledMarket, EpisodePool
from kalshiflow.rl.features import N_FEATURES, OBS_HIGH, OBS_LOW, Observer
from kalshiflow.rl.sim import EnvConfig, MarketSim, StepResult

__all__ = [
    "EnvConfig", "KalshiMarketEnv", "make_env", "make_observer", "make_pool", "pick_episode",
    "rllib_env_creator", "spaces_for",
]


def make_observer(config: EnvConfig) -> Observer:
    return Observer(ActionTable(tuple(config.sizes)), config.max_position, config.stale_after_s,
                    config.max_open_orders)


def make_pool(config: EnvConfig) -> EpisodePool:
    return EpisodePool(config.data, config.split, validation_fraction=config.validation_fraction,
                       synthetic=config.synthetic)


def spaces_for(observer: Observer, flat: bool) -> tuple[gym.Space[Any], gym.spaces.Discrete]:
    features = gym.spaces.Box(OBS_LOW, OBS_HIGH, (N_FEATURES,), np.float32)
    actions: gym.spaces.Discrete = gym.spaces.Discrete(observer.n_actions)
    if flat:
        return features, actions
    mask = gym.spaces.Box(0.0, 1.0, (observer.n_actions,), np.float32)
    return gym.spaces.Dict({"observations": features, "action_mask": mask}), actions


def pick_episode(pool: EpisodePool, config: EnvConfig, rng: np.random.Generator,
                 options: dict[str, Any] | None = None) -> tuple[CompiledMarket, float]:
    """(market, first decision time) from the rng (or ``options`` "market" / "t0")."""
    options = options or {}
    i = int(options["market"]) if "market" in options else int(rng.integers(len(pool)))
    m = pool.market(i)
    if "t0" in options:
        return m, float(options["t0"])
    # Decision clocks sit on the market's grid start_ts + k * dt, where the market half of the
    # observation is precomputed once for all episodes (sim.MarketSim).
    lo, dt = m.start_ts, config.decision_interval_s
    k_max = int(max(0.0, m.end_ts - config.window_s - lo) // dt)
    if config.episode_start == "open" or k_max == 0:
        return m, lo
    return m, lo + int(rng.integers(k_max + 1)) * dt


class KalshiMarketEnv(gym.Env[Any, np.int64]):
    """One market window per episode (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, pool: EpisodePool | None = None) -> None:
        self.config = config or EnvConfig()
        self.pool = pool or make_pool(self.config)
        self.observer = make_observer(self.config)
        self.observation_space, self.action_space = spaces_for(self.observer, self.config.flat_obs)
        self.sim: MarketSim | None = None
        self._features = np.zeros((1, self.observer.n_features), np.float32)
        self._mask = np.zeros((1, self.observer.n_actions), np.float32)
        self._result = StepResult()

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        market, t0 = pick_episode(self.pool, self.config, self.np_random, options)
        ids_seed = int(self.np_random.integers(2**63))
        self.sim = MarketSim(market, self.observer, self.config, t0, ids_seed)
        self.sim.observe_into(self._features, self._mask)
        return self._obs(), self._info(rejected=0, invalid=False)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        sim = self.sim
        if sim is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        invalid = not 0 <= a < self._mask.shape[1] or not self._mask[0, a]
        res = sim.step(0 if invalid else a, self._result)
        sim.observe_into(self._features, self._mask)
        info = self._info(rejected=res.rejected, invalid=invalid)
        return self._obs(), res.reward, res.terminated, res.truncated, info

    def action_masks(self) -> np.ndarray:
        """The current mask as a bool array (sb3-contrib / generic masking convention)."""
        return self._mask[0].astype(bool)

    def _obs(self) -> Any:
        if self.config.flat_obs:
            return self._features[0].copy()
        return {"observations": self._features[0].copy(), "action_mask": self._mask[0].copy()}

    def _info(self, *, rejected: int, invalid: bool) -> dict[str, Any]:
        assert self.sim is not None
        info: dict[str, Any] = self.sim.info()
        info["rejected"] = rejected
        info["invalid_action"] = invalid
        info["schema_hash"] = self.observer.schema_hash
        if self.config.flat_obs:
            info["action_mask"] = self._mask[0].copy()
        return info


def make_env(config: EnvConfig | None = None, pool: EpisodePool | None = None) -> gym.Env[Any, Any]:
    """The env for ``config``; pass a shared ``pool`` to reuse compiled markets across envs."""
    return KalshiMarketEnv(config or EnvConfig(), pool)


def rllib_env_creator(env_config: dict[str, Any]) -> gym.Env[Any, Any] | gym.vector.VectorEnv[Any, Any, Any]:
    """RLlib env creator: ``env_config`` holds EnvConfig fields (unknown keys rejected). When
    RLlib adds ``num_envs`` (VECTOR_ENTRY_POINT mode) it returns a KalshiVectorEnv of that size.
    RLlib's EnvContext extras (worker_index, ...) are not fields and are dropped here."""
    fields = {f.name for f in msgspec.structs.fields(EnvConfig)}
    data = {k: v for k, v in dict(env_config).items() if k in fields}
    unknown = set(dict(env_config)) - fields - {"num_envs", "worker_index", "num_workers", "vector_index",
                                                "remote", "recreated_worker"}
    if unknown:
        raise ValueError(f"unknown EnvConfig keys: {sorted(unknown)}")
    config = msgspec.convert(data, EnvConfig)
    if "num_envs" in env_config:
        from kalshiflow.rl.env_batch import make_vector_env

        return make_vector_env(config, int(env_config["num_envs"]))
    return make_env(config)
