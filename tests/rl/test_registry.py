"""Model registry: version folders, the atomic ``current`` pointer, the promotion gate, rollback,
schema refusal, the ``models`` table mirror and the ``python -m kalshiflow.models`` CLI.

Versions are real RLlib RLModule checkpoints with seeded random weights (laid out exactly as
training writes them), so every load goes through the production path without a training run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from kalshiflow.rl import evaluate as ev
from kalshiflow.rl.features import SchemaMismatchError
from kalshiflow.rl.policy import code_schema_hash, load_policy
from kalshiflow.rl.registry import Registry, RegistryError, promote, record_model, rollback, run_db
from kalshiflow.serving.testing import write_random_version

STATIC_ENV = {"data": "static", "window_s": 300.0}


def _versions(registry: Registry, n: int) -> list[str]:
    return [write_random_version(registry, seed=i, env=STATIC_ENV) for i in range(n)]


def test_reserve_names_are_unique_and_ordered(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    names: list[str] = []
    lock = threading.Lock()

    def grab() -> None:
        version, path = reg.reserve()
        assert path.is_dir()
        with lock:
            names.append(version)

    threads = [threading.Thread(target=grab) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == [f"v{i:04d}" for i in range(1, 13)]
    assert reg.versions() == []  # none has a manifest yet: unfinished runs are not models
    assert len(reg.versions(complete_only=False)) == 12
    with pytest.raises(RegistryError, match="bad version name"):
        reg.path("../etc")
    with pytest.raises(RegistryError, match="no model"):
        reg.manifest("v0099")


def test_load_checks_schema_and_acts_within_the_mask(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    (v1,) = _versions(reg, 1)
    policy = reg.load(v1)
    assert policy.schema_hash == code_schema_hash(reg.manifest(v1).env)
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (64, policy.n_features)).astype(np.float32)
    mask = (rng.random((64, policy.n_actions)) < 0.3).astype(np.float32)
    mask[:, 0] = 1.0
    for greedy in (True, False):
        actions = policy.act(obs, mask, greedy=greedy, rng=rng)
        assert actions.shape == (64,) and all(mask[i, a] == 1 for i, a in enumerate(actions))
    probs = policy.probabilities(obs, mask)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and np.all(probs[mask == 0] < 1e-6)
    assert np.array_equal(policy.act(obs[:1], mask[:1]), policy.act(obs[0], mask[0]))  # 1-D accepted
    with pytest.raises(ValueError, match="expects obs"):
        policy.act(obs[:, :5], mask)


def test_schema_mismatch_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    bad = write_random_version(reg, seed=3, schema_hash="0" * 64, env=STATIC_ENV)
    with pytest.raises(SchemaMismatchError, match="retrain the model"):
        reg.load(bad)
    with pytest.raises(SchemaMismatchError):
        load_policy(bad, tmp_path)
    # The caller's own schema (the live trader's Observer) is checked too.
    (good,) = _versions(reg, 1)
    with pytest.raises(SchemaMismatchError):
        load_policy(good, tmp_path, expected_schema_hash="f" * 64)
    # Forcing skips the evaluation gate, never the schema check.
    with pytest.raises(SchemaMismatchError):
        promote(reg, bad, force=True, use_db=False, progress=False)
    assert reg.current() is None


def _fake_results(pnl_by_policy: dict[str, list[float]]) -> dict[str, list[ev.EpisodeResult]]:
    def ep(i: int, pnl: float) -> ev.EpisodeResult:
        return ev.EpisodeResult(market=f"M{i}", steps=10, start_value=1000.0, end_value=1000.0 + pnl, pnl=pnl,
                                fees=0.0, trades=0, contracts=0.0, non_hold_fraction=0.0, max_drawdown=0.0,
                                sharpe=0.0, round_trips=0, wins=0, actions=[10], equity=[pnl])

    return {k: [ep(i, p) for i, p in enumerate(v)] for k, v in pnl_by_policy.items()}


def test_promotion_gate_needs_a_win_outside_the_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path)
    v1, v2, v3 = _versions(reg, 3)
    rng = np.random.default_rng(0)
    scripted: dict[str, dict[str, list[float]]] = {
        # v1 clearly beats hold and random on every episode.
        v1: {f"model:{v1}": list(1.0 + 0.1 * rng.standard_normal(30)), "baseline:hold": [0.0] * 30,
             "baseline:random": list(-5.0 + rng.standard_normal(30))},
        # v2's mean is above the current model's, but not outside the CI of the paired difference.
        v2: {f"model:{v2}": list(1.0 + 3.0 * rng.standard_normal(30)), f"model:{v1}": [1.0] * 30,
             "baseline:hold": [0.0] * 30, "baseline:random": [-5.0] * 30},
    }
    seen: list[tuple[list[str], ev.EvalRequest]] = []

    def fake_many(refs: list[str], request: ev.EvalRequest,
                  **kwargs: Any) -> dict[str, list[ev.EpisodeResult]]:
        seen.append((refs, request))
        return _fake_results(scripted[refs[0].removeprefix("model:")])

    monkeypatch.setattr(ev, "evaluate_many", fake_many)
    first = promote(reg, v1, episodes=30, use_db=False, progress=False)
    assert first.promoted and not first.forced and reg.current() == v1
    assert set(first.comparisons) == {"baseline:hold", "baseline:random"}  # no current model yet
    assert seen[0][1].data == "static" and seen[0][1].env == reg.manifest(v1).env  # its validation data
    assert seen[0][1].split == "validation"

    second = promote(reg, v2, episodes=30, use_db=False, progress=False)
    assert not second.promoted and reg.current() == v1
    assert seen[1][0][:2] == [f"model:{v2}", f"model:{v1}"]  # the current model defends its place
    assert not second.comparisons[f"model:{v1}"]["beats"] and "does not beat" in second.reason

    scripted[v3] = scripted[v2] | {f"model:{v3}": scripted[v2][f"model:{v2}"]}
    del scripted[v3][f"model:{v2}"]
    forced = promote(reg, v3, force=True, episodes=30, use_db=False, progress=False)
    assert forced.promoted and forced.forced and reg.current() == v3
    events = reg.history()
    assert [e["event"] for e in events] == ["promote", "promote"] and events[-1]["forced"] is True
    assert events[-1]["previous"] == v1 and events[-1]["evidence"]["episodes"] == 30


def test_rollback_walks_back_the_promotions(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    v1, v2, v3 = _versions(reg, 3)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    for v in (v1, v2, v3):
        reg.set_current(v, reason="test", forced=True)
    assert reg.rollback() == (v2, v3) and reg.current() == v2
    assert reg.rollback() == (v1, v2) and reg.current() == v1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    assert reg.current() == v1 and reg.stack() == [v1]
    # The pointer is one line with the version; no temp files are left behind.
    assert (tmp_path / "current").read_text() == f"{v1}\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert reg.resolve("current") == v1 and reg.resolve("model:current") == v1


def test_status_mirrors_into_the_models_table(tmp_path: Path, db_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)  # run_db opens what DATABASE_URL names, as the CLIs do
    reg = Registry(tmp_path)
    v1, v2 = _versions(reg, 2)

    async def record_both(db: Any) -> None:
        for v in (v1, v2):
            await record_model(db, reg.manifest(v), reg.path(v))

    async def statuses(db: Any) -> tuple[dict[str, Any], int]:
        rows = await db.fetch("SELECT version, status, promoted_at FROM models")
        return {r["version"]: (r["status"], r["promoted_at"]) for r in rows}, await db.fetchval(
            "SELECT count(*) FROM evaluations")

    run_db(record_both)
    for v in (v1, v2):  # in-process: the gate's evaluations run for real on the static book
        assert promote(reg, v, force=True, episodes=2, progress=False).promoted
    rows, evaluations = run_db(statuses)
    assert rows[v1][0] == "retired" and rows[v2][0] == "current" and rows[v2][1] is not None
    assert evaluations == 7  # v1 + hold + random, then v2 + v1 (current) + hold + random
    assert rollback(reg) == (v1, v2)
    rows, _ = run_db(statuses)
    assert {v: st for v, (st, _) in rows.items()} == {v1: "current", v2: "rolled_back"}
    assert reg.current() == v1

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "kalshiflow.models", "--models-dir", str(tmp_path), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    payload = json.loads(listed.stdout)
    assert payload["current"] == v1 and [r["version"] for r in payload["versions"]] == [v1, v2]
    shown = cli("show", "current")
    assert shown.returncode == 0 and msgspec.json.decode(shown.stdout)["version"] == v1
    missing = cli("show", "v0042")
    assert missing.returncode == 2 and "no model" in missing.stderr


def test_promote_cli_reports_and_refuses(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    bad = write_random_version(reg, seed=3, schema_hash="0" * 64, env=STATIC_ENV)
    cmd = [sys.executable, "-m", "kalshiflow.models", "--models-dir", str(tmp_path), "--no-db",
           "promote", bad, "--force"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 3 and "schema" in out.stderr and reg.current() is None
