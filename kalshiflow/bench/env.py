"""``python -m kalshiflow.bench env``: RL env steps per second with the full fill model.

Measured in one run on one core (this process), over generated markets (driftless seeds; the
generation time is reported, not timed), each against a no-op env with the same spaces stepped by
the same loop (the loop's own limit), because shared machines are noisy; ``--repeat`` rounds in
alternating order, each figure its best round:
  (a) ``steps_per_s``: one ``KalshiMarketEnv``, a uniformly random *allowed* action every step
      (orders arrive after the latency through the Venue, rest in queues, take liquidity,
      cancel); ``noop_steps_per_s``: a no-op ``gym.Env`` with the same Dict spaces; ``ratio``.
  (b) ``batched_steps_per_s``: ``KalshiVectorEnv`` (``--num-envs``), random allowed actions
      drawn for the whole batch at once; ``batched_noop_steps_per_s``: a no-op VectorEnv with
      the same spaces; ``batched_ratio``.
  (c) the same vector env under ``hold`` (the agent idle: the precomputed replay path) and
      under ``baseline:edge`` (a trading heuristic: idle most of the time, trading at times; the
      engine replays only while it has orders resting or owes the recording volume, see
      rl/replay.py).
Every figure is also given per CPU second of this process (``per_cpu_s``): on a shared machine
the wall-clock figures mostly measure how much of a core we were given.
Random play is the worst case (it trades nearly every step, so every recorded event goes
through the matching engine and every step sends an order through the Venue); a trained policy
that mostly waits runs near (c).
Targets (DESIGN.md §5): >= 100k steps/s batched; the prior system did 2,410 steps/s.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from kalshiflow.bench import emit
from kalshiflow.rl.baselines import make_policy
from kalshiflow.rl.data import EpisodePool, SyntheticConfig
from kalshiflow.rl.env import EnvConfig, KalshiMarketEnv, make_observer, spaces_for
from kalshiflow.rl.env_batch import make_vector_env

TARGET_BATCHED = 100_000
PRIOR_SYSTEM = 2_410


class NoopEnv(gym.Env[Any, Any]):
    """The same spaces, constant observations, fixed-length episodes: the loop's own limit."""

    def __init__(self, obs_space: gym.Space[Any], act_space: gym.Space[Any], length: int) -> None:
        self.observation_space, self.action_space, self.length = obs_space, act_space, length
        self._obs = obs_space.sample()
        self._obs["action_mask"][:] = 1.0
        self._t = 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return {k: v.copy() for k, v in self._obs.items()}, {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return {k: v.copy() for k, v in self._obs.items()}, 0.0, False, self._t >= self.length, {}


class NoopVectorEnv(VectorEnv[Any, Any, Any]):
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, obs_space: gym.Space[Any], act_space: gym.Space[Any], n: int) -> None:
        self.num_envs = n
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = batch_space(obs_space, n)
        self.action_space = batch_space(act_space, n)
        self._obs = self.observation_space.sample()
        self._obs["action_mask"][:] = 1.0

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[Any, dict[str, Any]]:
        return {k: v.copy() for k, v in self._obs.items()}, {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        obs = {k: v.copy() for k, v in self._obs.items()}
        return obs, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), {"pnl": np.zeros(n)}


def _single(env: gym.Env[Any, Any], seconds: float, seed: int) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second) of one env under random allowed actions."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(200):
            allowed = np.flatnonzero(obs["action_mask"])
            obs, _, term, trunc, _ = env.step(allowed[int(rng.integers(len(allowed)))])
            if term or trunc:
                obs, _ = env.reset()
        steps += 200
        if time.perf_counter() >= deadline:
            return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def _batched(env: VectorEnv[Any, Any, Any], policy: str, seconds: float, seed: int) -> tuple[float, float]:
    """(steps per wall second, per CPU second) of a vector env under a policy (one call per batch)."""
    table = make_observer(EnvConfig()).table
    pol = make_policy(policy, table, seed=seed)
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    new = np.ones(n, bool)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(20):
            actions = pol.act(obs["observations"], obs["action_mask"], new)
            obs, _, term, trunc, _ = env.step(actions)
            new = term | trunc
        steps += 20 * n
        if time.perf_counter() >= deadline:
            return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def run(seeds: str, num_envs: int, seconds: float, dt: float, window_s: float, seed: int,
        repeat: int = 3) -> dict[str, object]:
    syn = SyntheticConfig(markets_per_seed=4, lifetime_min_s=1200.0, lifetime_max_s=3600.0)
    cfg = EnvConfig(data=f"synthetic:driftless:{seeds}", split="all", synthetic=syn, window_s=window_s,
                    decision_interval_s=dt)
    t0 = time.perf_counter()
    pool = EpisodePool(cfg.data, "all", synthetic=syn)
    markets = [pool.market(i) for i in range(len(pool))]
    generate_s = time.perf_counter() - t0
    events = sum(m.n for m in markets)
    span = sum(m.end_ts - m.start_ts for m in markets)
    observer = make_observer(cfg)
    obs_space, act_space = spaces_for(observer, flat=False)
    length = int(window_s // dt)
    def vec() -> VectorEnv[Any, Any, Any]:
        return make_vector_env(cfg, num_envs, pool)

    measures = {
        "real": lambda: _single(KalshiMarketEnv(cfg, pool), seconds, seed),
        "noop": lambda: _single(NoopEnv(obs_space, act_space, length), seconds, seed),
        "batched": lambda: _batched(vec(), "random", seconds, seed),
        "batched_noop": lambda: _batched(NoopVectorEnv(obs_space, act_space, num_envs), "random", seconds,
                                         seed),
        "hold": lambda: _batched(vec(), "hold", seconds, seed),
        "edge": lambda: _batched(vec(), "baseline:edge", seconds, seed),
    }
    # Warm-up (precomputed rows, caches), then `repeat` rounds in alternating order; each figure
    # keeps its best round: a neighbour's burst costs one round of one figure, not the result.
    _batched(vec(), "hold", min(seconds, 2.0), seed)
    best = dict.fromkeys(measures, 0.0)
    best_cpu = dict.fromkeys(measures, 0.0)
    gc.collect()
    for r in range(repeat):
        for name in (list(measures) if r % 2 == 0 else list(reversed(measures))):
            wall, cpu = measures[name]()
            best[name], best_cpu[name] = max(best[name], wall), max(best_cpu[name], cpu)
    real, noop, batched, batched_noop, hold, edge = (best[k] for k in measures)
    cpu_ = {k: round(v) for k, v in best_cpu.items()}
    return {
        "benchmark": "env",
        "data": cfg.data,
        "markets": len(markets),
        "recorded_events": events,
        "events_per_decision": round(events / span * dt, 2),
        "decision_interval_s": dt,
        "latency_s": cfg.latency_s,
        "window_s": window_s,
        "n_actions": observer.n_actions,
        "n_features": observer.n_features,
        "num_envs": num_envs,
        "repeat": repeat,
        "seconds_per_measure": seconds,
        "generate_s": round(generate_s, 2),
        "steps_per_s": round(real),
        "noop_steps_per_s": round(noop),
        "ratio": round(real / noop, 3),
        "batched_steps_per_s": round(batched),
        "batched_noop_steps_per_s": round(batched_noop),
        "batched_ratio": round(batched / batched_noop, 3),
        "batched_hold_steps_per_s": round(hold),
        "batched_hold_ratio": round(hold / batched_noop, 3),
        "batched_edge_steps_per_s": round(edge),
        # The same figures per CPU second of this process (time.process_time): what the env costs,
        # independent of how much of a core the shared machine gave us.
        "per_cpu_s": {"steps": cpu_["real"], "noop_steps": cpu_["noop"], "batched_steps": cpu_["batched"],
                      "batched_noop_steps": cpu_["batched_noop"], "batched_hold_steps": cpu_["hold"],
                      "batched_edge_steps": cpu_["edge"]},
        "prior_system_steps_per_s": PRIOR_SYSTEM,
        "speedup_vs_prior": round(real / PRIOR_SYSTEM, 2),
        "targets": {"batched_steps_per_s": TARGET_BATCHED},
        "meets_target_random": batched >= TARGET_BATCHED,
        "meets_target_hold": hold >= TARGET_BATCHED,
        "meets_target_hold_per_cpu_s": best_cpu["hold"] >= TARGET_BATCHED,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kalshiflow.bench env",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seeds", default="0-3", help="synthetic driftless seeds (4 markets each)")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure keeps its best")
    parser.add_argument("--decision-interval", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.seeds, args.num_envs, args.seconds, args.decision_interval, args.window, args.seed,
                 args.repeat)
    summary = (f"env: single {result['steps_per_s']:,}/s (no-op {result['noop_steps_per_s']:,}/s, ratio "
               f"{result['ratio']}); batched x{args.num_envs}: random {result['batched_steps_per_s']:,}/s, "
               f"hold {result['batched_hold_steps_per_s']:,}/s, "
               f"edge {result['batched_edge_steps_per_s']:,}/s "
               f"(no-op {result['batched_noop_steps_per_s']:,}/s); target {TARGET_BATCHED:,}/s batched; "
               f"prior system {PRIOR_SYSTEM:,}/s")
    emit(result, args.json, summary)
    return 0
