"""Training: the config (plan values, strict keys, overrides), the fixed metric names, and a CLI
smoke run that must leave a loadable model folder, a manifest and a ``models`` row."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kalshiflow.config import ConfigError
from kalshiflow.rl.policy import code_schema_hash, load_policy
from kalshiflow.rl.registry import Registry
from kalshiflow.rl.train import DEFAULT_TRAIN_CONFIG, TrainConfig, iteration_metrics, load_train_config
from kalshiflow.rl.train import main as train_main
from kalshiflow.storage import open_database

NAMES = ("hold", "cancel_all", "buy_yes_take_10")


def test_shipped_config_loads_and_keeps_the_plan_where_it_did_not_change() -> None:
    cfg = load_train_config(DEFAULT_TRAIN_CONFIG)
    assert isinstance(cfg, TrainConfig)
    assert cfg.ppo.clip_param == 0.2  # plan values that stand
    text = DEFAULT_TRAIN_CONFIG.read_text()
    # Every departure from the plan (lr 1e-4, entropy 0.1, minibatch 256, 2048-step rollouts) is
    # explained in a comment on its line (prior-system-lessons §8.5: no silent churn).
    plan_values = (("lr", 1e-4), ("entropy_coeff", 0.1), ("minibatch_size", 256), ("train_batch_size", 2048))
    for key, plan in plan_values:
        value = getattr(cfg.ppo, key)
        if value != plan:
            line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key} ="))
            assert "#" in line and f"plan {plan:g}" in line.replace("e-04", "e-4"), line
    assert cfg.env.data.startswith("synthetic:")


def test_overrides_and_strictness(tmp_path: Path) -> None:
    cfg = load_train_config(None, ["ppo.lr=3e-4", "env.window_s=600", "env.synthetic.markets_per_seed=2",
                                   'env.data="synthetic:driftless:3-4"', "runners.num_env_runners=0"])
    assert (cfg.ppo.lr, cfg.env.window_s, cfg.env.synthetic.markets_per_seed) == (3e-4, 600.0, 2)
    assert cfg.env.data == "synthetic:driftless:3-4" and cfg.runners.num_env_runners == 0
    for bad in (["ppo.lrate=1"], ["env.window_s=soon"], ["nosection"], ["runners.vectorize=turbo"]):
        with pytest.raises(ConfigError):
            load_train_config(None, bad)
    typo = tmp_path / "t.toml"
    typo.write_text("[ppo]\nentropy = 0.1\n")
    with pytest.raises(ConfigError, match="unknown field `entropy`"):
        load_train_config(typo)


def test_iteration_metrics_have_fixed_names_and_survive_missing_values() -> None:
    result: dict[str, Any] = {
        "training_iteration": 3,
        "env_runners": {"num_env_steps_sampled_lifetime": 6000, "episode_return_mean": float("nan"),
                        "num_episodes": 0, "action_counts": {"0": 30, "2": 10.0, "1": float("nan")}},
        "learners": {"default_policy": {"entropy": 1.5, "mean_kl_loss": 0.01, "policy_loss": -0.1,
                                        "vf_loss": 2.0, "vf_explained_var": 0.3}},
    }
    m = iteration_metrics(result, NAMES, wall_s=2.0, steps_before=4000)
    assert m["charts/SPS"] == 1000.0 and m["charts/env_steps"] == 6000
    assert m["charts/episode_return_mean"] is None  # NaN (no episode ended) -> null, not NaN in JSON
    assert m["charts/actions"] == {"hold": 30, "buy_yes_take_10": 10}
    assert m["charts/non_hold_fraction"] == 0.25
    assert m["losses/entropy"] == 1.5 and m["losses/approx_kl"] == 0.01
    json.dumps(m, allow_nan=False)


def test_train_cli_smoke_writes_model_manifest_and_row(tmp_path: Path, db_url: str,
                                                        storage_config: Any) -> None:
    models = tmp_path / "models"
    env = {**os.environ, "DATABASE_URL": db_url}
    cmd = [sys.executable, "-m", "kalshiflow.train", "--data", "static", "--timesteps", "256",
           "--env-runners", "1", "--models-dir", str(models), "--no-progress", "--set", "env.window_s=120.0",
           "--set", "ppo.train_batch_size=128", "--set", "ppo.minibatch_size=64", "--set", "ppo.num_epochs=1",
           "--set", "runners.num_envs_per_env_runner=2", "--set", "run.eval_episodes=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    version = summary["version"]
    assert version == "v0001" and summary["metrics"]["env_steps"] >= 256

    reg = Registry(models)
    assert reg.versions() == [version] and reg.current() is None  # training never promotes
    manifest = reg.manifest(version)
    assert manifest.schema_hash == code_schema_hash(manifest.env)
    assert manifest.env["split"] == "train" and manifest.env["data"] == "static"
    assert manifest.data["spec"] == "static" and {"train", "validation"} <= set(manifest.data)
    assert manifest.config["ppo"]["train_batch_size"] == 128 and manifest.config["run"]["timesteps"] == 256
    assert manifest.code["ray"] and manifest.created_at
    val = manifest.metrics["validation"]
    assert val["split"] == "validation" and "pnl_ci" in val["model"] and "baseline:hold" in val
    log = [json.loads(line) for line in (reg.path(version) / "train_log.jsonl").read_text().splitlines()]
    assert log and {"charts/SPS", "charts/episode_return_mean", "charts/actions", "losses/entropy",
                    "losses/approx_kl"} <= set(log[-1])
    assert sum(log[-1]["charts/actions"].values()) > 0
    assert "SPS" in proc.stdout and "entropy" in proc.stdout  # per-iteration line printed

    policy = load_policy(version, models)
    assert policy.n_actions == 26 and policy.n_features > 0

    async def row() -> Any:
        async with open_database(storage_config, url=db_url) as db:
            return await db.fetchrow("SELECT * FROM models WHERE version = $1", version)

    r = asyncio.run(row())
    assert r is not None and r["status"] == "trained" and r["schema_hash"] == manifest.schema_hash
    assert r["path"] == str(reg.path(version)) and r["algorithm"] == "ppo"
    assert r["metrics"]["env_steps"] == manifest.metrics["env_steps"]
    assert math.isfinite(msgspec.json.decode(msgspec.json.encode(r["metrics"]))["wall_s"])


def test_bad_data_spec_fails_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--data", "bogus:1", "--no-db", "--models-dir", str(tmp_path)]) == 2
    assert "bad data spec" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no version folder reserved for a run that never started
    assert train_main(["--set", "ppo.entropy=0.1", "--no-db", "--models-dir", str(tmp_path)]) == 2
    assert "unknown field `entropy`" in capsys.readouterr().err


def test_bench_train_json_shape() -> None:
    """The benchmark's keys (never its timings: benchmarks report, tests check shape)."""
    cmd = [sys.executable, "-m", "kalshiflow.bench", "train", "--json", "--iterations", "1", "--warmup", "1",
           "--repeat", "2", "--data", "static", "--env-runners", "0", "--set", "ppo.train_batch_size=256",
           "--set", "ppo.minibatch_size=128", "--set", "ppo.num_epochs=1",
           "--set", "runners.num_envs_per_env_runner=2", "--set", "env.window_s=120.0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.strip().splitlines()
    result = json.loads(line)
    for key in ("steps_per_s", "noop_steps_per_s", "ratio", "real", "noop", "targets", "meets_targets",
                "config"):
        assert key in result
    assert result["targets"] == {"steps_per_s": 10_000, "ratio": 0.7}
    assert result["steps_per_s"] > 0 and result["noop_steps_per_s"] > 0 and result["real"]["steps"] >= 256
    assert result["config"]["n_actions"] == 26 and result["config"]["episode_len"] == 24
    rounds = result["rounds_steps_per_s"]
    assert result["repeat"] == 2 and len(rounds["noop"]) == len(rounds["real"]) == 2
    assert result["steps_per_s"] == max(rounds["real"]) and result["noop_steps_per_s"] == max(rounds["noop"])
