"""``python -m kalshiflow.launch`` as a user runs it: a real `ray start --head` cluster, real
subprocesses, the embedded PostgreSQL and exchange simulator, nothing faked.

- launched with ``--duration 20`` it runs, then stops by itself and exits 0; the database then
  holds a closed session with deltas, and no actor of the launch is left alive;
- a second launch against the same cluster and namespace starts nothing: it points at the running
  one and exits 0, and Ray's state API shows every named actor exactly once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kalshiflow.config import PROJECT_ROOT, StorageConfig
from kalshiflow.launch.system import pick_free_port
from kalshiflow.rl.registry import Registry
from kalshiflow.storage import open_database
from kalshiflow.storage.sessions import get_session

RAY = str(Path(sys.executable).parent / "ray")
START_TIMEOUT_S = 240.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DATABASE_URL")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """`ray start --head --block` in a temp dir of its own (so it is not "the" cluster of this
    machine for anyone else), stopped by signalling that process alone (never `ray stop`, which
    would stop every Ray on the machine)."""
    temp = Path(tempfile.mkdtemp(prefix="kfray-", dir="/tmp"))  # short: Ray's socket paths are limited
    port = pick_free_port("127.0.0.1")
    env = clean_env(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=4",
            f"--temp-dir={temp}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={pick_free_port('127.0.0.1')}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    started = time.monotonic()
    for line in proc.stdout:
        if "Ray runtime started" in line:
            break
        assert time.monotonic() - started < 120, "ray start did not come up"
    else:
        pytest.fail(f"ray start exited with {proc.wait()}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def launch(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kalshiflow.launch", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float) -> list[str]:
    """stdout lines up to the first one matching ``pattern`` (the launcher prints few lines)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s: {lines}"
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"launcher exited ({proc.wait()}) before {pattern!r}: {lines}\n{err}")


def named_actors(address: str, namespace: str) -> list[tuple[str, str]]:
    """(name, class) of every ALIVE actor of ``namespace`` and every Serve replica, from Ray's
    state API, asked from a separate process (this one may already be in another Ray)."""
    code = textwrap.dedent(f"""
        import json, ray
        from ray.util.state import list_actors
        ray.init(address={address!r}, logging_level="ERROR")
        ctx = ray.get_runtime_context()
        alive = list_actors(address=ctx.gcs_address, filters=[("state", "=", "ALIVE")], limit=10000)
        print(json.dumps([[a.name, a.class_name] for a in alive
                          if a.ray_namespace == {namespace!r} or (a.name or "").startswith("SERVE_REPLICA")]))
    """)
    env = clean_env()
    if Path.home().joinpath(".ray", "auth_token").exists() or os.environ.get("RAY_AUTH_TOKEN"):
        env.setdefault("RAY_AUTH_MODE", "token")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    import json

    return [tuple(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]


async def test_launch_runs_stops_by_itself_and_a_second_launch_duplicates_nothing(
    ray_cluster: str, pg_tmp_dir: Path
) -> None:
    namespace = f"kf-e2e-{uuid.uuid4().hex[:8]}"
    # The embedded PostgreSQL in a data dir of its own (no DATABASE_URL): the quickstart's path.
    env = clean_env(KALSHIFLOW_DATA_DIR=str(pg_tmp_dir))
    common = ["--address", ray_cluster, "--set", f"ray.namespace={namespace}", "--ui-port", "0"]
    # A fresh install: no model yet, so launch trains a first one (a short budget here) and serves it.
    models = pg_tmp_dir / "models"
    bootstrap = ["--models-dir", str(models), "--set", "trader.bootstrap_timesteps=4096",
                 "--set", "trader.bootstrap_data=synthetic:edge:1-2"]
    first = launch(*common, "--duration", "20", "--markets", "4", *bootstrap, env=env)
    try:
        lines = wait_for_line(first, r"^running;", START_TIMEOUT_S)
        text = "\n".join(lines)
        url = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)$", text, re.M)
        session = re.search(r"^session: ([0-9a-f-]{36}) ", text, re.M)
        assert url and session, text
        assert re.search(r"^ray dashboard: http://127\.0\.0\.1:\d+$", text, re.M), text

        second = subprocess.run(
            [sys.executable, "-m", "kalshiflow.launch", *common, "--duration", "5"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        assert "already running" in second.stdout and url.group(1) in second.stdout, second.stdout

        actors = named_actors(ray_cluster, namespace)
        names = [n for n, _ in actors]
        assert len(names) == len(set(names)), f"duplicated named actors: {sorted(names)}"
        classes = sorted(c for _, c in actors)
        for role in ("Broadcaster", "Collector", "WriteQueueActor", "PositionReconcilerActor", "Trader"):
            assert classes.count(role) == 1, f"{role}: {classes}"
        assert sum(c.startswith("ServeReplica") for c in classes) == 1, classes
        assert first.poll() is None, "the first launch is unaffected"

        rc = first.wait(timeout=120)
        out, err = first.communicate()
        assert rc == 0, err[-5000:]
        assert "--duration 20 s reached" in out and "closed:" in out, out
        # The Trader's last word: what it did and where the account ended.
        pattern = r"^paper trading \(simulator, model v0001\): \d+ decisions, .*; risk mode \w+$"
        assert re.search(pattern, out, re.M), out
        assert "training v0001 on synthetic:edge:1-2" in text, text
        assert Registry(models).current() == "v0001", "the first model is promoted (forced, 'bootstrap')"
    finally:
        if first.poll() is None:
            first.kill()
    assert named_actors(ray_cluster, namespace) == [], "a clean stop leaves no actor behind"

    async with open_database(StorageConfig(data_dir=str(pg_tmp_dir / "pgdata"))) as db:
        stored = await get_session(db, session.group(1))
    assert stored is not None and stored.status == "closed" and stored.ended_at is not None
    assert stored.deltas > 0 and stored.snapshots >= 4 and stored.markets == 4


def test_a_bad_flag_or_config_key_exits_2_before_anything_starts() -> None:
    for args in (["--set", "ui.no_such_key=1"], ["--markets", "0"], ["--ui-port", "70000"]):
        out = subprocess.run(
            [sys.executable, "-m", "kalshiflow.launch", *args],
            cwd=PROJECT_ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, (args, out.stderr[-2000:])
        assert "Ray" not in out.stdout


def test_a_busy_dashboard_port_is_reported_and_nothing_is_left_running(
    ray_cluster: str, pg_tmp_dir: Path
) -> None:
    import socket

    namespace = f"kf-e2e-{uuid.uuid4().hex[:8]}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "kalshiflow.launch",
                "--address",
                ray_cluster,
                "--ui-port",
                str(busy.getsockname()[1]),
                "--set",
                f"ray.namespace={namespace}",
            ],
            cwd=PROJECT_ROOT,
            env=clean_env(KALSHIFLOW_DATA_DIR=str(pg_tmp_dir)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "the dashboard cannot listen on 127.0.0.1" in out.stderr and "Address already in use" in out.stderr
    assert named_actors(ray_cluster, namespace) == []
