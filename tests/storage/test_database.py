"""open_database: server choice (embedded / DATABASE_URL / explicit), errors, secrets, codecs."""

from __future__ import annotations

import asyncio
import logging
import traceback
from pathlib import Path

import asyncpg
import msgspec
import pytest

from kalshiflow.config import StorageConfig
from kalshiflow.storage import Database, DatabaseUnavailableError, display_url, open_database
from kalshiflow.storage.embedded import with_database
from kalshiflow.storage.testing import PgServer

PASSWORD = "S3cr3t-pw_never-shown"


@pytest.fixture(autouse=True)
def _all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def _assert_hidden(text: str) -> None:
    assert PASSWORD not in text
    assert PASSWORD.replace("-", "%2D") not in text


def _with_password(url: str) -> str:
    # postgresql://postgres:@/db?host=... -> postgresql://postgres:<pw>@/db?host=...
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user.split(':')[0]}:{PASSWORD}@{host}"


async def test_embedded_by_default(
    storage_config: StorageConfig, stopped_pgdata: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No DATABASE_URL: start the embedded server in data_dir, create the database, migrate."""
    storage_config = msgspec.structs.replace(
        storage_config, data_dir=str(stopped_pgdata), database="kf_default"
    )
    async with open_database(storage_config, environ={}) as db:
        assert db.embedded is not None
        assert db.embedded.pgdata == Path(storage_config.data_dir).resolve()
        assert await db.fetchval("SELECT current_database()") == storage_config.database
        assert await db.fetchval("SELECT max(version) FROM schema_migrations") >= 1
        assert db.pool.get_min_size() == 1 and db.pool.get_max_size() == 4
        embedded = db.embedded
    assert not embedded.is_running(), "open_database started the server, so closing it stops it"
    async with open_database(storage_config, environ={}) as db:  # reopen: same data, no re-migration
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    assert "applied migration 0001_initial" in caplog.text


async def test_database_url_from_environment(pg_server: PgServer, storage_config: StorageConfig) -> None:
    name = await pg_server.create_database(prefix="envurl")  # empty: open_database migrates it
    try:
        env = {"DATABASE_URL": pg_server.url(name)}
        async with open_database(storage_config, environ=env) as db:
            assert db.embedded is None
            assert await db.fetchval("SELECT current_database()") == name
            assert await db.fetchval("SELECT count(*) FROM schema_migrations") >= 1
        assert not Path(storage_config.data_dir).exists(), "no embedded server when DATABASE_URL is set"
    finally:
        await pg_server.drop_database(name)


async def test_missing_database_is_created(pg_server: PgServer, storage_config: StorageConfig) -> None:
    # A URL without a database path falls back to StorageConfig.database.
    config = msgspec.structs.replace(storage_config, database="created_by_test")
    try:
        async with open_database(config, url=with_database(pg_server.admin_url, "")) as db:
            assert await db.fetchval("SELECT current_database()") == "created_by_test"
    finally:
        await pg_server.drop_database("created_by_test")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://kf:{PASSWORD}@127.0.0.1:9/kalshiflow",
        f"postgresql://kf@127.0.0.1:9/kalshiflow?password={PASSWORD}",
    ],
)
async def test_unreachable_server_is_a_clear_error(
    url: str, storage_config: StorageConfig, caplog: pytest.LogCaptureFixture
) -> None:
    config = msgspec.structs.replace(storage_config, connect_retry_s=0.3, connect_timeout_s=1.0)
    with pytest.raises(DatabaseUnavailableError) as info:
        async with open_database(config, url=url):
            pass
    message = str(info.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://kf")
    assert "127.0.0.1:9" in message and "***" in message
    _assert_hidden(message)
    _assert_hidden(repr(info.value))
    _assert_hidden("".join(traceback.format_exception(info.value)))
    _assert_hidden(caplog.text)
    assert not Path(config.data_dir).exists()


async def test_password_never_logged_on_success(
    pg_server: PgServer, db_url: str, storage_config: StorageConfig, caplog: pytest.LogCaptureFixture
) -> None:
    if pg_server.embedded is None:
        pytest.skip("needs the embedded server's trust authentication to accept any password")
    url = _with_password(db_url)
    async with open_database(storage_config, url=url) as db:
        assert await db.fetchval("SELECT 1") == 1
        shown = f"{db} {db!r} {db.url} {db.display_url}"
    _assert_hidden(shown)
    _assert_hidden(caplog.text)
    assert "***" in caplog.text
    assert display_url(url).count("***") == 1


def test_display_url_masks_every_form() -> None:
    assert display_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    shown = display_url("postgresql://u@h/db?sslmode=require&password=hunter2")
    assert "hunter2" not in shown and shown.endswith("/db?sslmode=require&password=***")
    assert display_url("postgresql:///db?host=/tmp/x") == "postgresql:///db?host=/tmp/x"


async def test_json_codecs(db: Database) -> None:
    value = {"a": [1, 2.5, None, "ü"], "b": {"c": True}, "big": 2**62}
    assert await db.fetchval("SELECT $1::jsonb", value) == value
    assert await db.fetchval("SELECT $1::json", value) == value
    assert await db.fetchval("""SELECT '{"x": [1]}'::jsonb -> 'x'""") == [1]


async def test_command_timeout(db_url: str, storage_config: StorageConfig) -> None:
    config = msgspec.structs.replace(storage_config, command_timeout_s=0.2)
    async with open_database(config, url=db_url) as db:
        with pytest.raises(asyncio.TimeoutError):
            await db.execute("SELECT pg_sleep(5)")
        assert await db.fetchval("SELECT 1") == 1  # the pool recovers


async def test_leaked_connection_does_not_hang_close(
    db_url: str,
    storage_config: StorageConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("kalshiflow.storage.database._CLOSE_TIMEOUT_S", 0.2)
    async with asyncio.timeout(5):
        async with open_database(storage_config, url=db_url) as db:
            leaked = await db.pool.acquire()  # never released
    assert "terminating" in caplog.text
    with pytest.raises(asyncpg.InterfaceError):
        await leaked.fetchval("SELECT 1")
