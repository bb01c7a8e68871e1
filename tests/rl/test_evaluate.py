"""Evaluation: the ``--json`` shape for every policy kind, paired/deterministic episodes, the
statistics, the report folder, the ``evaluations`` row, and the reward-hacking probe (no constant
policy makes money on a static book)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kalshiflow.evaluate import main as evaluate_main
from kalshiflow.rl.evaluate import (
    EvalRequest,
    bootstrap_ci,
    make_policy,
    paired_difference,
    run_evaluation,
    summarize,
)
from kalshiflow.rl.registry import Registry
from kalshiflow.serving.testing import write_random_version
from kalshiflow.storage import open_database

SHORT = ["--set", "env.window_s=120.0"]  # 24 decisions per episode: fast, still trades
KEYS = ("start_value", "end_value", "pnl", "fees", "trades", "non_hold_fraction", "win_rate", "max_drawdown",
        "sharpe")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("models"))
    version = write_random_version(reg, seed=7, env={"data": "static", "window_s": 120.0})
    reg.set_current(version, reason="test", forced=True)
    return reg


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert evaluate_main([*args, "--json", "--no-db"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines  # ONE JSON object, nothing else on stdout
    return json.loads(lines[0])


POLICIES = ["baseline:hold", "baseline:random", "baseline:edge", "baseline:momentum", "constant:buy_yes",
            "constant:sell_yes", "constant:buy_no", "constant:sell_no", "constant:hold",
            "constant:buy_no_join_5", "model:v0001", "model:current"]


@pytest.mark.parametrize("policy", POLICIES)
def test_json_shape_for_every_policy_kind(policy: str, models: Registry, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--policy", policy, "--data", "static", "--episodes", "3", "--models-dir",
                   str(models.root), "--report", str(tmp_path / "r"), *SHORT)
    for key in KEYS:
        assert key in out and f"{key}_ci" in out
    assert out["policy"] == policy and out["episodes"] == 3 and out["data"] == "static"
    assert out["start_value"] == 1000.0 and out["end_value"] == pytest.approx(1000.0 + out["pnl"])
    lo, hi = out["pnl_ci"]
    assert lo <= out["pnl"] + 1e-9 and out["pnl"] <= hi + 1e-9
    assert 0.0 <= out["non_hold_fraction"] <= 1.0
    assert set(out["ship_criteria"]) == {"non_hold_gt_20pct", "win_rate_gt_30pct"}
    assert out["model_version"] == ("v0001" if policy.startswith("model:") else None)
    # Reward-hacking probe (prior-system-lessons §8.1): on a static book nothing makes money.
    assert out["pnl"] <= 1e-9
    if policy in ("baseline:hold", "constant:hold"):
        assert out["pnl"] == 0.0 and out["trades"] == 0 and out["win_rate"] is None
    for name in ("summary.json", "episodes.jsonl", "equity.png", "actions.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0


def test_bad_policy_and_readable_output(models: Registry, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    assert evaluate_main(["--policy", "greedy:x", "--data", "static", "--no-db", *SHORT]) == 2
    assert "bad policy" in capsys.readouterr().err
    assert evaluate_main(["--policy", "model:v0042", "--data", "static", "--no-db", "--models-dir",
                          str(models.root)]) == 2
    assert evaluate_main(["--policy", "baseline:random", "--data", "static", "--episodes", "2", "--no-db",
                          "--report", str(tmp_path), *SHORT]) == 0
    text = capsys.readouterr().out
    assert "95% CI" in text and "ship criteria" in text and str(tmp_path) in text


def test_same_request_same_episodes_and_paired_comparison() -> None:
    request = EvalRequest(data="static", episodes=6, seed=3, env={"window_s": 120.0}, batch=4)
    a = run_evaluation(make_policy("baseline:random", request), request)
    b = run_evaluation(make_policy("baseline:random", request), request)
    hold = run_evaluation(make_policy("baseline:hold", request), request)
    assert [r.pnl for r in a] == [r.pnl for r in b]  # deterministic
    assert [(r.market, r.steps) for r in a] == [(r.market, r.steps) for r in hold]
    diff = paired_difference(a, hold)
    assert diff["diff_mean"] == pytest.approx(np.mean([r.pnl for r in a]))
    assert diff["ci_high"] < 0.0  # random pays spread + fees on a book that never moves
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(a[:3], hold)
    s = summarize(a)
    assert s["episodes"] == 6 and s["steps"] == sum(r.steps for r in a)
    assert sum(s["actions"].values()) == s["steps"]


def test_bootstrap_ci() -> None:
    assert bootstrap_ci(np.array([2.0])) == (2.0, 2.0)
    assert bootstrap_ci(np.zeros(5)) == (0.0, 0.0)
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.15)
    assert bootstrap_ci(x) == (lo, hi)  # fixed resampling seed: reports are reproducible


def test_cli_writes_an_evaluations_row(db_url: str, storage_config: Any, tmp_path: Path) -> None:
    import asyncio
    import os

    env = {**os.environ, "DATABASE_URL": db_url}
    cmd = [sys.executable, "-m", "kalshiflow.evaluate", "--policy", "baseline:random", "--data", "static",
           "--episodes", "2", "--json", "--report", str(tmp_path), *SHORT]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    async def rows() -> list[Any]:
        async with open_database(storage_config, url=db_url) as db:
            return await db.fetch("SELECT * FROM evaluations")

    (row,) = asyncio.run(rows())
    assert str(row["evaluation_id"]) == out["evaluation_id"] and row["policy_name"] == "baseline:random"
    assert row["model_version"] is None and row["report_path"] == str(tmp_path)
    assert row["data_spec"]["spec"] == "static" and row["metrics"]["pnl"] == pytest.approx(out["pnl"])
