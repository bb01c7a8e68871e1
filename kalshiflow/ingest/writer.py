"""Writing a flush to PostgreSQL, and what a failure means for the rows in it.

Every table of a flush goes through :func:`kalshiflow.storage.copy.copy_insert` (binary COPY into a
staging table, then INSERT ... ON CONFLICT DO NOTHING), so writing the same rows twice stores them
once. Each table commits in its own transaction: a flush that fails half way is simply written
again (spilled, drained, retried), and the tables already committed skip their duplicates.

Failures fall in three kinds, because each asks for a different response:

- ``UNAVAILABLE``: the server is down, unreachable, shutting down, out of resources, or slower
  than ``write_timeout_s``. The rows are fine; spill them and drain once the server is back.
- ``RETRY``: a serialization failure or deadlock (SQLSTATE class 40). Write again at once.
- ``REJECTED``: PostgreSQL (or the driver's encoder) refuses the data itself: a constraint, a
  value of the wrong type. Retrying can never succeed. The batch is quarantined (kept on disk,
  never dropped, never replayed automatically) so that one bad batch cannot block the rest.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from kalshiflow.storage.copy import copy_insert
from kalshiflow.storage.database import DatabaseUnavailableError
from kalshiflow.storage.schema import TABLES

__all__ = ["Failure", "classify", "write_rows"]


class Failure(enum.Enum):
    UNAVAILABLE = "unavailable"
    RETRY = "retry"
    REJECTED = "rejected"


# SQLSTATE classes meaning "the server cannot take writes now", not "these rows are bad":
# 08 connection exception, 53 insufficient resources (disk full, too many connections),
# 57 operator intervention (shutdown, cannot connect now, query canceled by our timeout),
# 58 system error (I/O), XX internal error.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58", "XX"})
_RETRY_CLASSES = frozenset({"40"})


def classify(exc: BaseException) -> Failure:
    """What a write failure means for the rows that were being written."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _UNAVAILABLE_CLASSES:
            return Failure.UNAVAILABLE
        if state[:2] in _RETRY_CLASSES:
            return Failure.RETRY
        return Failure.REJECTED  # 22 data exception, 23 integrity, 42 syntax/undefined, ...
    if isinstance(
        exc,
        (
            OSError,  # ConnectionRefusedError, socket errors
            asyncio.TimeoutError,
            TimeoutError,
            asyncpg.InterfaceError,  # "connection is closed", pool closing
            asyncpg.InternalClientError,
            DatabaseUnavailableError,
            ConnectionError,
        ),
    ):
        return Failure.UNAVAILABLE
    # Anything else came from encoding our values (TypeError, ValueError, OverflowError, ...).
    return Failure.REJECTED


# Bookkeeping rows written twice by design: once when something opens (a connection, a gap) and
# again when it ends, with the end columns filled in. ON CONFLICT DO NOTHING would keep the first
# version forever, so the end columns are filled in afterwards, and only where still NULL: the two
# versions may arrive in either order (a spill drained after the live write) and any number of
# times, and the result is the same. Recorded market data is never updated.
FILL_IN: dict[str, tuple[str, ...]] = {
    "connection_epochs": ("disconnected_at", "reason"),
    "gaps": ("recovered_at", "recovery_method"),
}


# Rows that follow something through states (an order: resting -> partly filled -> cancelled or
# executed): each version is a whole row stamped ``updated_at``, and the newest version wins
# whatever order they arrive in (live, retried, or drained from the spill later).
NEWEST: dict[str, tuple[str, ...]] = {
    "orders": ("fill_count", "remaining_count", "status", "updated_at", "raw"),
}


def _newest_sql(table: str) -> tuple[str, list[int], list[int]]:
    spec = TABLES[table]
    keys = [spec.index(c) for c in spec.key]
    cols = [spec.index(c) for c in NEWEST[table]]
    n = len(keys)
    sets = ", ".join(f"{c} = ${n + i + 1}" for i, c in enumerate(NEWEST[table]))
    where = " AND ".join(f"{c} = ${i + 1}" for i, c in enumerate(spec.key))
    stamp = n + NEWEST[table].index("updated_at") + 1
    return f"UPDATE {table} SET {sets} WHERE {where} AND updated_at < ${stamp}", keys, cols


def _fill_in_sql(table: str) -> tuple[str, list[int], list[int]]:
    spec = TABLES[table]
    fill = FILL_IN[table]
    keys = [spec.index(c) for c in spec.key]
    cols = [spec.index(c) for c in fill]
    sets = ", ".join(f"{c} = COALESCE({table}.{c}, ${len(keys) + i + 1})" for i, c in enumerate(fill))
    where = " AND ".join(f"{c} = ${i + 1}" for i, c in enumerate(spec.key))
    pending = " OR ".join(f"{c} IS NULL" for c in fill)
    return f"UPDATE {table} SET {sets} WHERE {where} AND ({pending})", keys, cols


async def write_rows(
    conn: asyncpg.Connection, rows: Mapping[str, Sequence[Sequence[Any]]], *, timeout: float | None
) -> int:
    """Write every table's rows idempotently; returns how many rows were new."""
    inserted = 0
    # Tables in a fixed order: concurrent writers then take table locks in the same order.
    for table in sorted(rows):
        table_rows = rows[table]
        if not table_rows:
            continue
        inserted += await copy_insert(conn, table, table_rows, timeout=timeout)
        if table in NEWEST:
            sql, keys, cols = _newest_sql(table)
            stamp = TABLES[table].index("updated_at")
            latest: dict[tuple[Any, ...], Sequence[Any]] = {}
            for row in table_rows:  # one UPDATE per key: the batch's newest version
                key = tuple(row[i] for i in keys)
                if key not in latest or row[stamp] > latest[key][stamp]:
                    latest[key] = row
            args = [[row[i] for i in keys] + [row[i] for i in cols] for row in latest.values()]
            await conn.executemany(sql, args, timeout=timeout)
        if table in FILL_IN:
            sql, keys, cols = _fill_in_sql(table)
            args = [
                [row[i] for i in keys] + [row[i] for i in cols]
                for row in table_rows
                if any(row[i] is not None for i in cols)
            ]
            if args:
                await conn.executemany(sql, args, timeout=timeout)
    return inserted
