"""The embedded server: persistent data dir, shared between processes, stopped by its last holder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg

from kalshiflow.config import StorageConfig
from kalshiflow.storage import EmbeddedPostgres, data_root, load_migrations, pgdata_dir
from kalshiflow.storage.embedded import is_postgres_process
from kalshiflow.storage.testing import sweep_stale_test_roots


def _child(pgdata: Path, body: str) -> subprocess.Popen[str]:
    """A separate Python process holding its own handle on the same data dir."""
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        import asyncpg
        from kalshiflow.storage import EmbeddedPostgres
        pg = EmbeddedPostgres({str(pgdata)!r}).start()
        print(json.dumps({{"pid": pg.pid, "started_here": pg.started_here}}), flush=True)
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


async def _count(pg: EmbeddedPostgres) -> int:
    conn = await asyncpg.connect(pg.uri())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS marks (n int)")
        return int(await conn.fetchval("SELECT count(*) FROM marks"))
    finally:
        await conn.close()


async def _mark(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.uri())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS marks (n int); INSERT INTO marks VALUES (1)")
    finally:
        await conn.close()


async def test_data_persists_across_stop_and_start(stopped_pgdata: Path) -> None:
    pg = EmbeddedPostgres(stopped_pgdata)
    async with pg:
        assert pg.started_here and pg.is_running()
        before = await _count(pg)
        await _mark(pg)
    assert not pg.is_running(), "the process that started the server stops it"
    async with pg:
        assert pg.started_here
        assert await _count(pg) == before + 1


async def test_nested_handles_in_one_process(stopped_pgdata: Path) -> None:
    outer, inner = EmbeddedPostgres(stopped_pgdata), EmbeddedPostgres(stopped_pgdata)
    with outer:
        with inner, outer:  # re-entrant, and a second object on the same dir
            assert inner.pid == outer.pid
        assert outer.is_running(), "an inner release must not stop the server under the outer"
        await _count(outer)
    assert not outer.is_running()


async def test_second_process_reuses_the_running_server(stopped_pgdata: Path) -> None:
    async with EmbeddedPostgres(stopped_pgdata) as pg:
        before = await _count(pg)
        child = _child(
            stopped_pgdata,
            """
            async def main():
                conn = await asyncpg.connect(pg.uri())
                await conn.execute("INSERT INTO marks VALUES (2)")
                await conn.close()
            asyncio.run(main())
            pg.stop()
            """,
        )
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        info = json.loads(out.splitlines()[0])
        assert info == {"pid": pg.pid, "started_here": False}
        # The child let go, but we still hold the server: it keeps running, with the child's row.
        assert pg.is_running()
        assert await _count(pg) == before + 1
    assert not pg.is_running()


async def test_last_holder_stops_the_server(stopped_pgdata: Path) -> None:
    pg = EmbeddedPostgres(stopped_pgdata).start()
    child = _child(stopped_pgdata, "sys.stdin.readline()\npg.stop()\nprint('released', flush=True)\n")
    assert child.stdout is not None and child.stdin is not None
    assert json.loads(child.stdout.readline())["pid"] == pg.pid
    pg.stop()  # we started it, but the child still holds it
    assert pg.is_running()
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "released"
    assert child.wait(timeout=60) == 0
    assert not pg.is_running()


async def test_dead_holder_does_not_pin_the_server(stopped_pgdata: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pg = EmbeddedPostgres(stopped_pgdata).start()
    handles = stopped_pgdata / ".handle_pids.json"
    handles.write_text(json.dumps([*json.loads(handles.read_text()), dead.pid]))  # as if it were SIGKILLed
    pg.stop()
    # pgserver sees another holder and leaves the server running; without pruning it would stay
    # up forever. The next start prunes the dead pid, so the release after that stops it.
    assert pg.is_running()
    pg.start()
    assert dead.pid not in json.loads(handles.read_text())
    pg.stop()
    assert not pg.is_running()


async def test_stale_postmaster_pid_after_a_crash(stopped_pgdata: Path) -> None:
    # After a reboot, postmaster.pid may name a pid now used by an unrelated process (here: us).
    stale = stopped_pgdata / "postmaster.pid"
    stale.write_text(f"{os.getpid()}\n{stopped_pgdata}\n0\n5432\n{stopped_pgdata}\n\n0 0\nready\n")
    async with EmbeddedPostgres(stopped_pgdata) as pg:
        assert pg.started_here
        await _count(pg)
    assert not stale.exists()


def test_data_dir_resolution(tmp_path: Path) -> None:
    assert data_root({"KALSHIFLOW_DATA_DIR": str(tmp_path)}) == tmp_path.resolve()
    xdg = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    if sys.platform.startswith("linux"):
        assert data_root(xdg) == (tmp_path / "xdg" / "kalshiflow").resolve()
        assert data_root({"HOME": str(tmp_path)}) == (tmp_path / ".local/share/kalshiflow").resolve()
    env = {"KALSHIFLOW_DATA_DIR": str(tmp_path / "root")}
    assert pgdata_dir(StorageConfig(), env) == (tmp_path / "root" / "pgdata").resolve()
    # An explicit storage.data_dir is the more specific setting and wins over the data root.
    explicit = StorageConfig(data_dir=str(tmp_path / "mine"))
    assert pgdata_dir(explicit, env) == (tmp_path / "mine").resolve()


async def test_processes_opening_a_fresh_data_dir_at_once(pg_tmp_dir: Path) -> None:
    """Several workers starting together on a data dir that does not exist yet: one initdb, one
    server, one database, migrations applied once, every worker's rows stored."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from kalshiflow.config import StorageConfig
        from kalshiflow.storage import open_database
        async def main():
            config = StorageConfig(data_dir={str(pg_tmp_dir)!r}, connect_retry_s=20.0)
            async with open_database(config, environ={{}}) as db:
                await db.copy_insert("markets", [("w" + sys.argv[1],)], ("ticker",))
                await asyncio.sleep(0.5)  # overlap with the other workers
        asyncio.run(main())
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(errors)
    pg = EmbeddedPostgres(pg_tmp_dir)
    assert not pg.is_running(), "the last worker to leave stopped the server"
    async with pg:
        conn = await asyncpg.connect(pg.uri("kalshiflow"))
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
            tickers = await conn.fetch("SELECT ticker FROM markets ORDER BY ticker")
            assert [r["ticker"] for r in tickers] == ["w0", "w1", "w2"]
        finally:
            await conn.close()


async def test_killed_test_session_is_swept(pg_tmp_root: Path) -> None:
    """A test run killed with its embedded server up leaves a running postmaster behind; the next
    session's make_test_root stops it and deletes the dir."""
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal\n"
            "from kalshiflow.storage import EmbeddedPostgres\n"
            "from kalshiflow.storage.testing import make_test_root\n"
            "root = make_test_root()\n"
            "pg = EmbeddedPostgres(root / 'pgdata').start()\n"
            "print(root, pg.pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    root_text, pid_text = child.stdout.split()
    root, postmaster = Path(root_text), int(pid_text)
    assert is_postgres_process(postmaster), "SIGKILL skipped every cleanup: the server is orphaned"
    assert root in sweep_stale_test_roots()
    assert not root.exists()
    assert not is_postgres_process(postmaster)
    assert pg_tmp_root.exists(), "a live session's root is never swept"
