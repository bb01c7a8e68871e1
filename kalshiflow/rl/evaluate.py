"""``python -m kalshiflow.evaluate``: run a policy over many episodes and report with confidence.

    python -m kalshiflow.evaluate --policy model:current --data synthetic:edge:41-60 --episodes 64
        [--split all|train|validation] [--seed 0] [--json] [--report DIR] [--no-db]

POLICY: ``model:<version>`` | ``model:current`` | ``baseline:hold`` | ``baseline:random`` |
``baseline:<name>`` (kalshiflow.rl.baselines) | ``constant:<action>`` (``buy_yes``, ``sell_yes``,
``buy_no``, ``sell_no``, ``hold`` or any action-table name).

Episodes are chosen independently of the policy: episode k runs market ``k mod markets`` of the
split from a start time drawn by seed (``seed``, k). So two policies evaluated with the same
request see identical episodes, and their per-episode PnL can be compared pairwise (the
registry's promotion gate does). Episodes run in lockstep batches so a model does one forward
pass per step for the whole batch.

Per-episode metrics (each reported as the mean over episodes with a 95 % percentile-bootstrap
CI, 2,000 resamples, fixed seed):
  start_value / end_value / pnl (dollars; value = cash + holdings marked at the bid, fees paid)
  fees (dollars), trades (steps on which contracts were bought), contracts, non_hold_fraction
  max_drawdown (dollars, peak-to-trough of the value curve)
  sharpe (mean / std of the step PnL x sqrt(steps): per episode, NOT annualised; 0 if flat)
  win_rate: round trips (flat -> position -> flat, or to the episode's end, marked) with a
  positive PnL / round trips, pooled over episodes (CI: bootstrap over episodes); null when the
  policy never traded.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import msgspec
import numpy as np

from kalshiflow.rl.env import EnvConfig, make_env, make_observer, make_pool

__all__ = ["EpisodeResult", "EvalRequest", "Policy", "bootstrap_ci", "evaluate_many", "make_policy",
           "paired_difference", "run_evaluation", "summarize"]

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
METRICS = ("start_value", "end_value", "pnl", "fees", "trades", "contracts", "non_hold_fraction",
           "max_drawdown", "sharpe")
CONSTANT_ALIASES = ("buy_yes", "sell_yes", "buy_no", "sell_no")


class Policy(Protocol):
    """kalshiflow.rl.baselines' interface, which ModelPolicy shares."""

    name: str

    def act(self, features: np.ndarray, mask: np.ndarray, new_episode: np.ndarray) -> np.ndarray: ...


class EvalRequest(msgspec.Struct, frozen=True, kw_only=True):
    data: str
    split: str = "all"
    episodes: int = 32
    seed: int = 0
    env: dict[str, Any] = {}  # EnvConfig fields (a model's manifest env); data/split set from above
    models_dir: str = ""
    batch: int = 32  # episodes stepped in lockstep

    def env_config(self) -> EnvConfig:
        fields = {**self.env, "data": self.data, "split": self.split}
        return msgspec.convert(fields, EnvConfig)


class EpisodeResult(msgspec.Struct, frozen=True, kw_only=True):
    market: str
    steps: int
    start_value: float
    end_value: float
    pnl: float
    fees: float
    trades: int
    contracts: float
    non_hold_fraction: float
    max_drawdown: float
    sharpe: float
    round_trips: int
    wins: int
    actions: list[int]  # count per action id
    equity: list[float]  # pnl after each step


class _Tracker:
    """Accumulates one episode from the env's info dicts."""

    def __init__(self, info: dict[str, Any], n_actions: int) -> None:
        self.market = str(info.get("ticker", ""))
        self.start = float(info["value"])
        self.values = [self.start]
        self.actions = [0] * n_actions
        self.traded = float(info.get("traded", 0.0))
        self.trades = 0
        self.position = float(info.get("position", 0.0))
        self.entry: float | None = self.start if self.position else None
        self.round_trips = self.wins = 0
        self.info = info

    def step(self, action: int, info: dict[str, Any]) -> None:
        self.actions[action] += 1
        value = float(info["value"])
        traded = float(info.get("traded", 0.0))
        if traded > self.traded:
            self.trades += 1
        self.traded = traded
        position = float(info.get("position", 0.0))
        if self.entry is None and position:
            self.entry = self.values[-1]  # the value before the step that opened the position
        elif self.entry is not None and not position:
            self._close(value)
        self.position = position
        self.values.append(value)
        self.info = info

    def _close(self, value: float) -> None:
        self.round_trips += 1
        self.wins += value > (self.entry or 0.0)
        self.entry = None

    def finish(self) -> EpisodeResult:
        if self.entry is not None:
            self._close(self.values[-1])  # an open position counts at its final mark
        v = np.asarray(self.values)
        diffs = np.diff(v)
        sd = float(diffs.std()) if diffs.size > 1 else 0.0
        steps = int(diffs.size)
        return EpisodeResult(
            market=self.market, steps=steps, start_value=self.start, end_value=float(v[-1]),
            pnl=float(v[-1] - self.start), fees=float(self.info.get("fees", 0.0)), trades=self.trades,
            contracts=self.traded, non_hold_fraction=(steps - self.actions[0]) / steps if steps else 0.0,
            max_drawdown=float((np.maximum.accumulate(v) - v).max()),
            sharpe=float(diffs.mean() / sd * math.sqrt(steps)) if sd > 1e-12 else 0.0,
            round_trips=self.round_trips, wins=self.wins, actions=self.actions,
            equity=[round(float(x - self.start), 6) for x in v[1:]])


def run_evaluation(policy: Policy, request: EvalRequest, *, progress: bool = False) -> list[EpisodeResult]:
    """Run ``request.episodes`` episodes of ``policy`` (see the module docstring).

    The policy always sees the full batch width (finished slots show a hold-only mask), so
    stateful baselines keep their per-row state aligned; ``new_episode`` flags a slot's first step.
    """
    from tqdm import tqdm

    cfg = request.env_config()
    pool = make_pool(cfg)
    n_markets = len(pool)
    observer = make_observer(cfg)
    width = max(1, min(request.batch, request.episodes))
    envs = [make_env(cfg, pool) for _ in range(width)]
    results: list[EpisodeResult | None] = [None] * request.episodes
    trackers: list[tuple[int, _Tracker] | None] = [None] * width
    features = np.zeros((width, observer.n_features), np.float32)
    mask = np.zeros((width, observer.n_actions), np.float32)
    new_episode = np.zeros(width, bool)
    next_episode = 0

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= request.episodes:
            trackers[slot] = None
            features[slot], mask[slot] = 0.0, 0.0
            mask[slot, 0] = 1.0  # an idle slot can only hold
            return
        k = next_episode
        next_episode += 1
        obs, info = envs[slot].reset(seed=_episode_seed(request.seed, k), options={"market": k % n_markets})
        trackers[slot] = (k, _Tracker(info, observer.n_actions))
        features[slot], mask[slot] = obs["observations"], obs["action_mask"]
        new_episode[slot] = True

    for s in range(width):
        start(s)
    with tqdm(total=request.episodes, unit="episode", disable=not progress, desc=policy.name,
              leave=False) as bar:
        while any(t is not None for t in trackers):
            actions = np.asarray(policy.act(features, mask, new_episode), dtype=np.int64)
            new_episode[:] = False
            for s, slot in enumerate(trackers):
                if slot is None:
                    continue
                k, tracker = slot
                a = int(actions[s])
                obs, _reward, terminated, truncated, info = envs[s].step(a)
                tracker.step(0 if info.get("invalid_action") else a, info)
                if terminated or truncated:
                    results[k] = tracker.finish()
                    bar.update(1)
                    start(s)
                else:
                    features[s], mask[s] = obs["observations"], obs["action_mask"]
    return [r for r in results if r is not None]


def _episode_seed(seed: int, k: int) -> int:
    return (seed * 1_000_003 + k) % 2**32


# ---------------------------------------------------------------------------- statistics


def bootstrap_ci(x: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 12345) -> tuple[float, float]:
    """95 % percentile-bootstrap CI of the mean (deterministic for a given ``x``)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    idx = np.random.default_rng(seed).integers(0, x.size, (resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - CI_LEVEL) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def _ratio_ci(wins: np.ndarray, trips: np.ndarray) -> tuple[float, float] | None:
    if trips.sum() == 0:
        return None
    idx = np.random.default_rng(54321).integers(0, trips.size, (BOOTSTRAP_RESAMPLES, trips.size))
    w, t = wins[idx].sum(axis=1), trips[idx].sum(axis=1)
    ratios = w[t > 0] / t[t > 0]
    alpha = (1.0 - CI_LEVEL) / 2.0
    return (float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1.0 - alpha)))


def summarize(results: list[EpisodeResult], action_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Means + CIs over episodes (keys: each metric and ``<metric>_ci``), win rate, histogram."""
    out: dict[str, Any] = {"episodes": len(results), "steps": int(sum(r.steps for r in results))}
    for name in METRICS:
        x = np.asarray([getattr(r, name) for r in results], dtype=np.float64)
        out[name] = float(x.mean()) if x.size else math.nan
        out[f"{name}_ci"] = list(bootstrap_ci(x))
    wins = np.asarray([r.wins for r in results], dtype=np.float64)
    trips = np.asarray([r.round_trips for r in results], dtype=np.float64)
    out["round_trips"] = int(trips.sum())
    out["win_rate"] = float(wins.sum() / trips.sum()) if trips.sum() else None
    ci = _ratio_ci(wins, trips)
    out["win_rate_ci"] = list(ci) if ci else None
    counts = np.sum([r.actions for r in results], axis=0) if results else np.zeros(0)
    steps = max(1, int(counts.sum()))
    # Non-HOLD share of ALL steps pooled (the plan's ship criterion) next to the per-episode mean.
    out["non_hold_fraction_pooled"] = float(1.0 - counts[0] / steps) if counts.size else 0.0
    names = action_names or tuple(str(i) for i in range(len(counts)))
    out["actions"] = {names[i]: int(c) for i, c in enumerate(counts.tolist()) if c}
    out["ship_criteria"] = {"non_hold_gt_20pct": out["non_hold_fraction_pooled"] > 0.20,
                            "win_rate_gt_30pct": bool(out["win_rate"] is not None and out["win_rate"] > 0.30)}
    return out


def paired_difference(a: list[EpisodeResult], b: list[EpisodeResult], metric: str = "pnl") -> dict[str, Any]:
    """mean and 95 % CI of a - b per episode (same request => same episodes, in order)."""
    if len(a) != len(b) or any(x.market != y.market for x, y in zip(a, b, strict=True)):
        raise ValueError("paired comparison needs the same episodes (same EvalRequest) on both sides")
    d = np.asarray([getattr(x, metric) - getattr(y, metric) for x, y in zip(a, b, strict=True)])
    lo, hi = bootstrap_ci(d)
    return {"diff_mean": float(d.mean()), "ci_low": lo, "ci_high": hi, "episodes": int(d.size)}


# ---------------------------------------------------------------------------- policies


def make_policy(ref: str, request: EvalRequest) -> Policy:
    """The policy named by ``ref`` for the env ``request`` describes (see the module docstring)."""
    kind, _, name = ref.partition(":")
    if kind == "model":
        from kalshiflow.rl.policy import load_policy

        return load_policy(name or "current", request.models_dir or None)  # type: ignore[return-value]
    table = make_observer(request.env_config()).table
    if kind == "constant" and name in CONSTANT_ALIASES:
        name = f"{name}_take_{table.sizes[0]}"  # the smallest take order of that intent
    if kind in ("baseline", "constant") and name:
        from kalshiflow.rl.baselines import make_policy as make_baseline

        # baselines names hold/random bare and the rule-based ones as "baseline:<name>".
        bare = name if kind == "baseline" and name in ("hold", "random") else f"{kind}:{name}"
        policy = make_baseline(bare, table, seed=request.seed)
        policy.name = ref  # type: ignore[misc]  # reports and DB rows use the caller's spelling
        return policy
    raise ValueError(f"bad policy {ref!r}: model:<version>|model:current|baseline:<name>|constant:<action>")


def evaluate_many(refs: list[str], request: EvalRequest, *, progress: bool = False,
                  use_db: bool = False) -> dict[str, list[EpisodeResult]]:
    """Evaluate several policies on the same episodes; optionally one ``evaluations`` row each."""
    out: dict[str, list[EpisodeResult]] = {}
    for ref in refs:
        policy = make_policy(ref, request)
        out[ref] = run_evaluation(policy, request, progress=progress)
        if use_db:
            from kalshiflow.rl.registry import record_evaluation, run_db

            summary = summarize(out[ref], make_observer(request.env_config()).table.names)
            version = getattr(policy, "version", None)

            async def record(db: Any, ref: str = ref, s: dict[str, Any] = summary,
                             v: str | None = version) -> Any:
                return await record_evaluation(db, policy=ref, model_version=v, data_spec=data_spec(request),
                                               metrics=s, report_path=None)

            run_db(record)
    return out


def data_spec(request: EvalRequest) -> dict[str, Any]:
    return {"spec": request.data, "split": request.split, "episodes": request.episodes, "seed": request.seed,
            "env": request.env}
