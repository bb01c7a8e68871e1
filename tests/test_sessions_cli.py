"""``python -m kalshiflow.sessions``: run as a subprocess against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from kalshiflow.ingest.throughput import synthetic_deltas
from kalshiflow.storage import Database
from kalshiflow.storage.sessions import close_session, start_session

T0 = datetime(2026, 6, 24, 12, 0, tzinfo=UTC)


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KALSHIFLOW_")}
    env["DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "kalshiflow.sessions", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_json_lists_sessions_newest_first_with_counts(db: Database, db_url: str) -> None:
    older = await start_session(db, "simulator", ["A", "B"], {}, started_at=T0)
    await db.copy_insert("book_deltas", synthetic_deltas(older, 25, markets=2))
    await db.copy_insert("gaps", [(older, 1, 1, 30, 33, T0, ["A"], None, None)])
    await close_session(db, older, ended_at=T0 + timedelta(hours=17, minutes=48))
    newer = await start_session(db, "demo", ["C"], {}, started_at=T0 + timedelta(days=1))

    done = run_cli(db_url, "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)  # ONE JSON array
    assert isinstance(listed, list) and [s["session_id"] for s in listed] == [str(newer), str(older)]
    first, second = listed[1], listed[0]
    assert {k: first[k] for k in ("status", "snapshots", "deltas", "gaps", "markets")} == {
        "status": "closed",
        "snapshots": 0,
        "deltas": 25,
        "gaps": 1,
        "markets": 2,
    }
    assert first["duration_s"] == 17.8 * 3600 and first["tickers"] == ["A", "B"]
    assert second["status"] == "active" and second["markets"] == 1 and second["deltas"] == 0

    table = run_cli(db_url)
    assert table.returncode == 0, table.stderr
    assert str(older) in table.stdout and "17h48m00s" in table.stdout and "2 session(s)" in table.stdout


async def test_empty_database_and_bad_config(db_url: str, tmp_path: object) -> None:
    done = run_cli(db_url, "--json", "--status", "aborted")
    assert done.returncode == 0 and json.loads(done.stdout) == []
    bad = run_cli(db_url, "--config", f"/nonexistent/{uuid.uuid4().hex}.toml")
    assert bad.returncode == 2 and "config file not found" in bad.stderr
