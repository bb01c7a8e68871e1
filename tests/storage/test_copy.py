"""The idempotent bulk writer: all-or-nothing batches, upserts, nesting, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from kalshiflow.storage import TABLES, Database, copy_insert
from kalshiflow.storage.bench import delta_rows
from kalshiflow.storage.copy import build_statements

Row = Callable[[str, int], tuple[Any, ...]]


async def test_empty_batch_is_a_no_op(db: Database) -> None:
    assert await db.copy_insert("book_deltas", []) == 0
    assert await db.copy_insert("book_deltas", iter(())) == 0


async def test_large_batch_twice_is_stored_once(db: Database) -> None:
    session = uuid.uuid4()
    rows = delta_rows(10_000, session)
    assert await db.copy_insert("book_deltas", rows) == 10_000
    assert await db.copy_insert("book_deltas", rows) == 0
    # A retry that overlaps the tail of the previous batch and brings new rows.
    assert await db.copy_insert("book_deltas", delta_rows(10_000, session, start_seq=5_001)) == 5_000
    assert await db.fetchval("SELECT count(*) FROM book_deltas WHERE session_id = $1", session) == 15_000


async def test_key_repeated_within_a_batch_is_stored_once(db: Database) -> None:
    # The direct COPY fails on the repeat; the staging path then stores the batch idempotently.
    session = uuid.uuid4()
    rows = delta_rows(1_000, session)
    assert await db.copy_insert("book_deltas", [*rows[:600], rows[10], *rows[600:]]) == 1_000
    assert await db.fetchval("SELECT count(*) FROM book_deltas WHERE session_id = $1", session) == 1_000


async def test_failed_batch_writes_nothing_and_connection_survives(db: Database, sample_row: Row) -> None:
    good = [sample_row("book_deltas", n) for n in range(5)]
    broken = list(good[2])
    broken[TABLES["book_deltas"].index("ticker")] = None  # NOT NULL
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.NotNullViolationError):
            await copy_insert(conn, "book_deltas", [*good[:2], tuple(broken), *good[3:]])
        assert not conn.is_in_transaction()
        assert await copy_insert(conn, "book_deltas", good) == 5  # nothing of the failed batch stuck
    assert await db.fetchval("SELECT count(*) FROM book_deltas") == 5


async def test_column_subset_takes_defaults(db: Database) -> None:
    session = uuid.uuid4()
    columns = ("session_id", "started_at", "environment", "exchange_url")
    row = (session, await db.fetchval("SELECT now()"), "demo", "wss://demo-api.kalshi.co/trade-api/ws/v2")
    assert await db.copy_insert("collection_sessions", [row], columns) == 1
    stored = await db.fetchrow("SELECT status, markets, config, delta_count FROM collection_sessions")
    assert stored is not None
    assert tuple(stored) == ("active", [], {}, 0)


async def test_upsert_updates_named_columns_last_row_wins(db: Database, sample_row: Row) -> None:
    spec = TABLES["collection_sessions"]
    first = sample_row("collection_sessions", 0)
    update = ("status", "delta_count", "error")
    assert await db.copy_insert("collection_sessions", [first], update=update) == 1
    closed = list(first)
    closed[spec.index("status")] = "closed"
    closed[spec.index("delta_count")] = 41
    later = list(closed)
    later[spec.index("delta_count")] = 42
    later[spec.index("environment")] = "production"  # not in `update`: must not change
    assert await db.copy_insert("collection_sessions", [tuple(closed), tuple(later)], update=update) == 1
    row = await db.fetchrow("SELECT status, delta_count, environment FROM collection_sessions")
    assert row is not None and tuple(row) == ("closed", 42, "simulator")
    # Replaying the same upsert changes nothing and reports nothing.
    assert await db.copy_insert("collection_sessions", [tuple(later)], update=update) == 0


async def test_nested_in_caller_transaction(db: Database, sample_row: Row) -> None:
    async with db.acquire() as conn:
        async with conn.transaction():
            assert await copy_insert(conn, "gaps", [sample_row("gaps", 0)]) == 1
            # A second batch in the same transaction must not re-see the first batch's staged rows.
            assert await copy_insert(conn, "gaps", [sample_row("gaps", 1)]) == 1
            assert await copy_insert(conn, "gaps", [sample_row("gaps", 1)]) == 0
        # The caller's rollback undoes everything, including our writes.
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await copy_insert(conn, "gaps", [sample_row("gaps", 2)])
                raise RuntimeError("caller aborts")
    assert await db.fetchval("SELECT count(*) FROM gaps") == 2


async def test_concurrent_overlapping_writers_store_each_row_once(db: Database) -> None:
    session = uuid.uuid4()
    rows = delta_rows(4_000, session)
    # Two writers, overlapping batches in opposite orders: key-ordered moves cannot deadlock.
    a = [rows[i : i + 1_000] for i in range(0, 4_000, 1_000)]
    b = [rows[i : i + 1_500] for i in range(2_500, -1, -500)]

    async def write(batches: list[list[tuple[Any, ...]]]) -> int:
        return sum([await db.copy_insert("book_deltas", batch) for batch in batches])

    written = await asyncio.gather(write(a), write(b))
    assert sum(written) == 4_000
    assert await db.fetchval("SELECT count(DISTINCT seq) FROM book_deltas") == 4_000
    assert await db.fetchval("SELECT count(*) FROM book_deltas") == 4_000


async def test_unknown_table_needs_columns(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        await db.copy_insert("no_such_table", [(1,)])


@pytest.mark.parametrize(
    ("table", "columns", "update"),
    [
        ("book_deltas; DROP TABLE x", ("seq",), None),
        ("book_deltas", ("seq", 'seq"'), None),
        ("book_deltas", ("seq", "seq"), None),
        ("collection_sessions", ("session_id", "status"), ("session_id",)),  # key is not updatable
        ("collection_sessions", ("status",), ("status",)),  # upsert without the key column
    ],
)
def test_statement_builder_refuses_bad_input(table: str, columns: tuple[str, ...], update: Any) -> None:
    key = TABLES["collection_sessions"].key if table == "collection_sessions" else None
    with pytest.raises(ValueError):
        build_statements(table, columns, key, update)


async def test_upsert_never_erases_with_null(db: Database, sample_row: Row) -> None:
    """An epoch row is written at connect and again at disconnect; a replay of the first must not
    reopen it."""
    spec = TABLES["connection_epochs"]
    opened = sample_row("connection_epochs", 0)
    closed = list(opened)
    closed[spec.index("disconnected_at")] = opened[spec.index("connected_at")]
    closed[spec.index("reason")] = "ws silence"
    for row, written in ((opened, 1), (tuple(closed), 1), (opened, 0)):
        assert await db.copy_insert("connection_epochs", [row], update=spec.mutable) == written
    stored = await db.fetchrow("SELECT disconnected_at, reason FROM connection_epochs")
    assert stored is not None and stored["reason"] == "ws silence" and stored["disconnected_at"] is not None


@pytest.mark.parametrize("table", sorted(t for t, spec in TABLES.items() if spec.mutable))
async def test_mutable_columns_upsert(db: Database, sample_row: Row, table: str) -> None:
    spec = TABLES[table]
    assert set(spec.mutable) <= set(spec.columns) and not set(spec.mutable) & set(spec.key)
    assert await db.copy_insert(table, [sample_row(table, 0)], update=spec.mutable) == 1
    assert await db.copy_insert(table, [sample_row(table, 0)], update=spec.mutable) == 0
