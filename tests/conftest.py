"""Shared fixtures: ONE PostgreSQL server per test session, a fresh migrated database per test.

- ``pg_server`` (session): a :class:`kalshiflow.storage.testing.PgServer`. ``DATABASE_URL`` when
  set (its role needs CREATEDB), else an embedded pgserver in a throwaway dir with fsync off.
- ``pg_template`` (session): name of a database migrated once; per-test databases are cloned
  from it instead of re-running migrations.
- ``db_url`` (function): URL (plain ``str``) of a brand-new migrated database, dropped after the
  test. Hand it to actors or subprocesses.
- ``db`` (function): an open :class:`kalshiflow.storage.Database` on ``db_url``.
- ``storage_config`` (function): a StorageConfig for tests (small pool, short retries, a fresh
  ``data_dir``): ``open_database(storage_config, url=db_url)``.
- ``pg_tmp_dir`` (function): a fresh path for a test's own embedded data dir.

Tests never touch the user's real data dir: ``KALSHIFLOW_DATA_DIR`` points into a session scratch
dir unless the caller set it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kalshiflow.config import StorageConfig
from kalshiflow.storage import Database, EmbeddedPostgres, open_database
from kalshiflow.storage.embedded import with_database
from kalshiflow.storage.testing import PgServer, make_test_root


@pytest.fixture(scope="session")
def pg_tmp_root() -> Iterator[Path]:
    """A session scratch dir for PostgreSQL data dirs, outside pytest's basetemp.

    As root, pgserver runs the server as a `pgserver` user and opens the parent dirs up for it,
    but every pytest run (ours or a concurrent one) resets /tmp/pytest-of-<user> to mode 0700,
    which would lock that user out of a data dir below it.
    """
    root = make_test_root()  # also sweeps the roots of killed earlier sessions
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_tmp_dir(pg_tmp_root: Path) -> Path:
    return pg_tmp_root / uuid.uuid4().hex[:12]


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir(pg_tmp_root: Path) -> Iterator[None]:
    if os.environ.get("KALSHIFLOW_DATA_DIR"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KALSHIFLOW_DATA_DIR", str(pg_tmp_root / "data-root"))
        yield


@pytest.fixture(scope="session")
async def pg_server(pg_tmp_root: Path) -> AsyncIterator[PgServer]:
    external = os.environ.get("DATABASE_URL", "").strip()
    if external:
        yield PgServer(admin_url=with_database(external, "postgres"))
        return
    async with EmbeddedPostgres(pg_tmp_root / "session-pgdata") as embedded:
        server = PgServer(admin_url=embedded.uri(), embedded=embedded)
        await server.tune_for_tests()
        yield server


@pytest.fixture(scope="session")
async def pg_template(pg_server: PgServer) -> AsyncIterator[str]:
    name = await pg_server.create_template()
    yield name
    await pg_server.drop_database(name)


@pytest.fixture
async def db_url(pg_server: PgServer, pg_template: str) -> AsyncIterator[str]:
    name = await pg_server.create_database(template=pg_template)
    yield pg_server.url(name)
    await pg_server.drop_database(name)


@pytest.fixture
def storage_config(pg_tmp_dir: Path) -> StorageConfig:
    return StorageConfig(
        data_dir=str(pg_tmp_dir),
        pool_min=1,
        pool_max=4,
        command_timeout_s=30.0,
        connect_timeout_s=5.0,
        connect_retry_s=2.0,
    )


@pytest.fixture
async def db(db_url: str, storage_config: StorageConfig) -> AsyncIterator[Database]:
    async with open_database(storage_config, url=db_url) as database:
        yield database
