"""Learning test (DESIGN.md §6): a SHORT PPO run, with the shipped PPO settings (configs/train.toml),
learns on generated markets.

- edge: markets whose latent probability reverts to its opening value (the generator's ``edge``
  scenario). PPO trained on the early seeds must beat HOLD and RANDOM on the held-out later seeds
  (time-based validation split) by a margin outside the 95 % CI of the paired per-episode PnL
  difference. The plan's ship criteria (non-HOLD > 20 % of steps, win rate > 30 %) are reported.
- driftless: martingale markets, no edge after costs. The trained policy must lose no more than
  HOLD plus a small tolerance (it learns to stay flat) and still beat RANDOM.

Difficulty knobs (the generator's and the env's, not the learner's): the edge reverts with a 30 s
half-life at 6 logit/sqrt(h) (stationary s.d. ~ 11c at 50c) instead of the shipped 300 s / 2.5,
because the observation has no memory of the opening price -- only 10/60/300 s mid changes -- and
with a 300 s half-life no public-feature rule beats spread + fees (measured: the 300 s-change fade
loses $1.5-2.7 per episode there, and makes +$3.4 with the settings here). Markets are one tight
tier (1-2c spreads, 2 makers, moderate activity) so compiling them stays cheap; episodes are 15
simulated minutes; one order size (10 contracts: 10 actions instead of 26 -- with the full table
150k steps were not enough to beat HOLD, docs/training.md). ``KF_LEARNING_SCALE=3`` multiplies
the budget and the evaluation episodes.

Results land in test-artifacts/learning-<scenario>.json (git-ignored) and in the test's output.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from kalshiflow.config import PROJECT_ROOT
from kalshiflow.rl.evaluate import EvalRequest, evaluate_many, paired_difference, summarize
from kalshiflow.rl.registry import Manifest, Registry
from kalshiflow.rl.train import TrainConfig, load_train_config, train

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("KF_LEARNING_SCALE", "1"))
STEPS = int(150_000 * SCALE)  # ~100 s of PPO per scenario on 2 idle cores; 5/5 training seeds pass
EPISODES = int(64 * SCALE)
DRIFTLESS_TOLERANCE = 0.50  # dollars per 15-minute episode, on $1,000 of capital
TIGHT_TIER = ('{name="tight", share=1.0, spread_cents_min=1, spread_cents_max=2, activity_median=1.0, '
              'activity_sigma=0.3, market_makers=2, quote_levels=2, quote_size_median=60.0}')


@pytest.fixture(scope="module")
def generator_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/generator.toml with a faster, stronger edge (see the module docstring)."""
    text = (PROJECT_ROOT / "configs" / "generator.toml").read_text()
    text, n1 = re.subn(r"(?m)^edge_half_life_s = [0-9.]+", "edge_half_life_s = 30.0", text)
    text, n2 = re.subn(r"(?m)^edge_vol_per_sqrt_hour = [0-9.]+", "edge_vol_per_sqrt_hour = 6.0", text)
    assert n1 == n2 == 1, "configs/generator.toml changed shape: update the learning test's knobs"
    path = tmp_path_factory.mktemp("generator") / "generator-edge-fast.toml"
    path.write_text(text)
    return path


def learning_config(scenario: str, generator: Path, models: Path) -> TrainConfig:
    return load_train_config(None, [
        f'env.data="synthetic:{scenario}:1-5"',  # seeds 1-4 train, seed 5 (the latest) held out
        f'env.synthetic.generator_config="{generator}"',
        f"env.synthetic.tiers=[{TIGHT_TIER}]",
        "env.synthetic.lifetime_min_s=1800.0", "env.synthetic.lifetime_max_s=2400.0",
        "env.window_s=900.0",
        "env.sizes=[10]",  # 10 actions; the 26-action default table needs a longer budget than a test
        f"run.timesteps={STEPS}", "run.eval_episodes=0", f'run.models_dir="{models}"',
    ])


def train_and_evaluate(scenario: str, generator: Path, models: Path) -> tuple[Manifest, dict[str, Any]]:
    cfg = learning_config(scenario, generator, models)
    manifest = train(cfg, registry=Registry(models), use_db=False, progress=False)
    request = EvalRequest(data=cfg.env.data, split="validation", episodes=EPISODES, seed=1, env=manifest.env,
                          models_dir=str(models))
    model = f"model:{manifest.version}"
    results = evaluate_many([model, "baseline:hold", "baseline:random"], request)
    summary = summarize(results[model])
    report = {
        "scenario": scenario, "steps": manifest.metrics["env_steps"], "wall_s": manifest.metrics["wall_s"],
        "episodes": EPISODES, "validation_markets": manifest.data["validation"]["markets"],
        "pnl": summary["pnl"], "pnl_ci": summary["pnl_ci"], "trades": summary["trades"],
        "non_hold_fraction": summary["non_hold_fraction_pooled"], "win_rate": summary["win_rate"],
        "ship_criteria": summary["ship_criteria"], "actions": summary["actions"],
        "vs_hold": paired_difference(results[model], results["baseline:hold"]),
        "vs_random": paired_difference(results[model], results["baseline:random"]),
        "random_pnl": summarize(results["baseline:random"])["pnl"],
    }
    out = PROJECT_ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / f"learning-{scenario}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nlearning[{scenario}]: " + json.dumps(report))
    return manifest, report


def test_ppo_beats_hold_and_random_on_held_out_edge_markets(generator_toml: Path, tmp_path: Path) -> None:
    manifest, r = train_and_evaluate("edge", generator_toml, tmp_path / "models")
    data = manifest.data
    assert data["train"]["time_range"][1] < data["validation"]["time_range"][0]  # no look-ahead
    assert r["vs_hold"]["ci_low"] > 0.0, f"PPO does not beat HOLD outside the CI: {r['vs_hold']}"
    assert r["vs_random"]["ci_low"] > 0.0, f"PPO does not beat RANDOM outside the CI: {r['vs_random']}"
    # The plan's ship criteria are reported (above and in the artifact); a policy that beats HOLD
    # must at least trade and win more often than it loses a coin flip's worth.
    assert r["trades"] > 0 and r["win_rate"] is not None and r["win_rate"] > 0.30


def test_ppo_stays_flat_without_an_edge(generator_toml: Path, tmp_path: Path) -> None:
    _, r = train_and_evaluate("driftless", generator_toml, tmp_path / "models")
    assert r["vs_hold"]["diff_mean"] >= -DRIFTLESS_TOLERANCE, \
        f"loses more than HOLD + tolerance: {r['vs_hold']}"
    assert r["vs_random"]["ci_low"] > 0.0, f"not better than RANDOM: {r['vs_random']}"
