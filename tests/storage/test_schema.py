"""The migrated schema: the Python table map matches it, natural keys dedupe, values round-trip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from kalshiflow.storage import TABLES, Database

Row = Callable[[str, int], tuple[Any, ...]]


async def test_table_map_matches_database(db: Database) -> None:
    tables = {
        r["table_name"]
        for r in await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    assert tables == set(TABLES) | {"schema_migrations"}
    for spec in TABLES.values():
        columns = await db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = $1 ORDER BY ordinal_position",
            spec.name,
        )
        assert tuple(r["column_name"] for r in columns) == spec.columns, spec.name
        key = await db.fetch(
            "SELECT a.attname FROM pg_index i "
            "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY k.pos",
            spec.name,
        )
        assert tuple(r["attname"] for r in key) == spec.key, spec.name


async def test_no_float_columns(db: Database) -> None:
    """Prices, quantities and money are integers everywhere (floats only inside JSON blobs)."""
    floats = await db.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type IN ('real', 'double precision', 'numeric', 'money')"
    )
    assert floats == []


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_natural_key_dedupes_silently(db: Database, sample_row: Row, table: str) -> None:
    batch = [sample_row(table, n) for n in range(3)]
    assert await db.copy_insert(table, batch) == 3
    # The same batch again (a retry), and a batch mixing old and new rows (a replay that overlaps).
    assert await db.copy_insert(table, batch) == 0
    assert await db.copy_insert(table, [batch[1], sample_row(table, 3), batch[1]]) == 1
    assert await db.fetchval(f"SELECT count(*) FROM {table}") == 4


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_rows_round_trip_exactly(db: Database, sample_row: Row, table: str) -> None:
    spec = TABLES[table]
    row = sample_row(table, 0)
    await db.copy_insert(table, [row])
    stored = await db.fetchrow(f"SELECT {', '.join(spec.columns)} FROM {table}")
    assert stored is not None
    assert tuple(stored) == row


async def test_book_delta_constraints(db: Database, sample_row: Row) -> None:
    good = sample_row("book_deltas", 0)
    price = TABLES["book_deltas"].index("price")
    side = TABLES["book_deltas"].index("side")
    for column, bad in ((price, 10001), (price, -1), (side, "maybe")):
        row = list(good)
        row[column] = bad
        with pytest.raises(asyncpg.CheckViolationError):
            await db.copy_insert("book_deltas", [tuple(row)])
    assert await db.fetchval("SELECT count(*) FROM book_deltas") == 0


async def test_snapshot_levels_must_pair(db: Database, sample_row: Row) -> None:
    row = list(sample_row("book_snapshots", 0))
    row[TABLES["book_snapshots"].index("yes_qty")] = [1]  # four prices, one quantity
    with pytest.raises(asyncpg.CheckViolationError):
        await db.copy_insert("book_snapshots", [tuple(row)])


async def test_session_status_is_checked(db: Database, sample_row: Row) -> None:
    row = list(sample_row("collection_sessions", 0))
    row[TABLES["collection_sessions"].index("status")] = "error"
    with pytest.raises(asyncpg.CheckViolationError):
        await db.copy_insert("collection_sessions", [tuple(row)])
