"""Migrations: applied once, recorded, idempotent, serialised, refused when they don't match."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from kalshiflow.storage import MigrationError, load_migrations, migrate, schema_version
from kalshiflow.storage.migrations import Migration
from kalshiflow.storage.testing import PgServer


@pytest.fixture
async def empty_conn(pg_server: PgServer) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a brand-new database that has never been migrated."""
    name = await pg_server.create_database(prefix="mig")
    conn = await asyncpg.connect(pg_server.url(name))
    try:
        yield conn
    finally:
        await conn.close()
        await pg_server.drop_database(name)


async def _schema_fingerprint(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    )
    return [tuple(r) for r in rows]


def test_shipped_migrations_are_contiguous() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "initial"


async def test_apply_twice_is_a_no_op(empty_conn: asyncpg.Connection) -> None:
    assert await schema_version(empty_conn) == 0
    latest = len(load_migrations())
    assert await migrate(empty_conn) == list(range(1, latest + 1))
    before = await _schema_fingerprint(empty_conn)
    recorded = await empty_conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == [
        (m.version, m.name, m.checksum) for m in load_migrations()
    ]
    assert await migrate(empty_conn) == []
    assert await _schema_fingerprint(empty_conn) == before
    assert await schema_version(empty_conn) == latest


async def test_concurrent_starters_apply_once(pg_server: PgServer) -> None:
    name = await pg_server.create_database(prefix="mig")
    conns = [await asyncpg.connect(pg_server.url(name)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        # Exactly one starter did the work; the others waited on the lock and found nothing to do.
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
    finally:
        for c in conns:
            await c.close()
        await pg_server.drop_database(name)


async def test_edited_migration_is_refused(empty_conn: asyncpg.Connection) -> None:
    await migrate(empty_conn)
    first = load_migrations()[0]
    edited = [Migration(first.version, first.name, first.sql + "\n-- edited"), *load_migrations()[1:]]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_conn, edited)


async def test_newer_database_is_refused(empty_conn: asyncpg.Connection) -> None:
    migrations = [*load_migrations(), Migration(len(load_migrations()) + 1, "future", "SELECT 1")]
    await migrate(empty_conn, migrations)
    with pytest.raises(MigrationError, match="newer than this code"):
        await migrate(empty_conn)


async def test_failing_migration_rolls_back_whole(empty_conn: asyncpg.Connection) -> None:
    shipped = load_migrations()
    sql = "CREATE TABLE half_done (x int); SELECT no_such_column FROM half_done;"
    bad = Migration(len(shipped) + 1, "broken", sql)
    with pytest.raises(asyncpg.UndefinedColumnError):
        await migrate(empty_conn, [*shipped, bad])
    # The good migrations committed; the broken one left neither its table nor its record.
    assert await schema_version(empty_conn) == len(shipped)
    assert await empty_conn.fetchval("SELECT to_regclass('half_done')") is None
    # The advisory lock was released: another migrate runs (and finds nothing to do).
    assert await asyncio.wait_for(migrate(empty_conn), 5) == []
