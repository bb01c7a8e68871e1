"""Helpers for tests that need a real PostgreSQL (used by tests/conftest.py; no pytest import).

One server per test session; each test gets its own database cloned from a migrated template,
so tests never see each other's rows and migrations run once per session.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from kalshiflow.storage.embedded import (
    EmbeddedPostgres,
    is_postgres_process,
    pid_alive,
    postmaster_pid,
    with_database,
)
from kalshiflow.storage.migrations import migrate

log = logging.getLogger("kalshiflow.storage")

TEST_ROOT_PREFIX = "kalshiflow-test-"
_OWNER_FILE = "owner.pid"


def make_test_root() -> Path:
    """A scratch dir for a test session's data dirs, tagged with this process's pid.

    Roots of earlier sessions that were killed (their owner pid is gone) are swept first: their
    embedded servers never got a clean shutdown, would keep running, and would fill the disk.
    """
    sweep_stale_test_roots()
    root = Path(tempfile.mkdtemp(prefix=TEST_ROOT_PREFIX))
    root.chmod(0o755)  # the `pgserver` user (when running as root) must traverse it
    (root / _OWNER_FILE).write_text(str(os.getpid()))
    return root


def sweep_stale_test_roots() -> list[Path]:
    """Stop the servers of, and delete, test roots whose owning process is dead."""
    swept: list[Path] = []
    for root in Path(tempfile.gettempdir()).glob(TEST_ROOT_PREFIX + "*"):
        try:
            owner = int((root / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge (or still being created)
        if pid_alive(owner):
            continue
        postmasters = []
        for pid_file in root.glob("**/postmaster.pid"):
            pid = postmaster_pid(pid_file.parent)
            if pid is not None and is_postgres_process(pid):
                try:
                    postmasters.append(psutil.Process(pid))
                    os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
                except (OSError, psutil.Error):
                    pass
        psutil.wait_procs(postmasters, timeout=10)  # let them exit before their files go
        shutil.rmtree(root, ignore_errors=True)
        log.info("swept stale test data root %s", root)
        swept.append(root)
    return swept


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PgServer:
    """A server the test session may create and drop databases on."""

    admin_url: str  # URL of the maintenance database ("postgres"); may hold a password
    embedded: EmbeddedPostgres | None = None

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    async def create_database(self, *, template: str | None = None, prefix: str = "test") -> str:
        """Create a uniquely named database (cloned from ``template`` if given); returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        clause = f" TEMPLATE {_quote_ident(template)}" if template else ""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}{clause}")
        finally:
            await conn.close()
        return name

    async def create_template(self, prefix: str = "kf_template") -> str:
        """A new database with every migration applied, closed so that it can be cloned."""
        name = await self.create_database(prefix=prefix)
        conn = await asyncpg.connect(self.url(name))
        try:
            await migrate(conn)
        finally:
            await conn.close()  # CREATE DATABASE ... TEMPLATE refuses a template with sessions
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            # FORCE: a test that leaked a connection must not leak its database too.
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()

    async def tune_for_tests(self) -> None:
        """Durability off (fsync, synchronous commit): only for a throwaway embedded server."""
        if self.embedded is None:
            raise RuntimeError("refusing to turn off durability on an external server")
        conn = await asyncpg.connect(self.admin_url)
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
