"""What a write failure means for the rows in it."""

from __future__ import annotations

import asyncpg
import pytest

from kalshiflow.ingest.writer import FILL_IN, Failure, _fill_in_sql, classify
from kalshiflow.storage import DatabaseUnavailableError
from kalshiflow.storage.schema import TABLES


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(111, "refused"), Failure.UNAVAILABLE),
        (TimeoutError(), Failure.UNAVAILABLE),
        (asyncpg.InterfaceError("connection is closed"), Failure.UNAVAILABLE),
        (asyncpg.ConnectionDoesNotExistError("gone"), Failure.UNAVAILABLE),
        (
            asyncpg.AdminShutdownError("terminating connection due to administrator command"),
            Failure.UNAVAILABLE,
        ),
        (asyncpg.CannotConnectNowError("the database system is starting up"), Failure.UNAVAILABLE),
        (asyncpg.DiskFullError("no space"), Failure.UNAVAILABLE),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), Failure.UNAVAILABLE),
        (DatabaseUnavailableError("cannot connect"), Failure.UNAVAILABLE),
        (asyncpg.SerializationError("could not serialize"), Failure.RETRY),
        (asyncpg.DeadlockDetectedError("deadlock"), Failure.RETRY),
        (asyncpg.CheckViolationError("price"), Failure.REJECTED),
        (asyncpg.NotNullViolationError("ticker"), Failure.REJECTED),
        (asyncpg.DataError("invalid input for query argument"), Failure.REJECTED),
        (asyncpg.UndefinedTableError("no table"), Failure.REJECTED),
        (TypeError("an int is required"), Failure.REJECTED),
    ],
)
def test_classify(exc: BaseException, kind: Failure) -> None:
    assert classify(exc) is kind


def test_fill_in_updates_only_null_end_columns_by_natural_key() -> None:
    for table, cols in FILL_IN.items():
        sql, keys, fill = _fill_in_sql(table)
        spec = TABLES[table]
        assert [spec.columns[i] for i in keys] == list(spec.key)
        assert [spec.columns[i] for i in fill] == list(cols)
        assert all(f"COALESCE({table}.{c}" in sql and f"{c} IS NULL" in sql for c in cols)
