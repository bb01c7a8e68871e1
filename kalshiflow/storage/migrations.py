"""Versioned schema migrations: ``kalshiflow/storage/sql/NNNN_name.sql``, applied in order.

- ``schema_migrations`` records each applied version with the SHA-256 of its file, so an edited
  migration is refused instead of silently diverging from what the database really has.
- Each migration runs in its own transaction together with its bookkeeping row: a failure leaves
  the database at the previous version, never half-migrated.
- A session-level advisory lock serialises concurrent starters (several actors opening the
  database at once): the second waits, then finds nothing left to do.
- A database newer than this code (a version we have no file for) is refused: running old code
  against a newer schema is how rows get written in the wrong shape.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("kalshiflow.storage")

# Arbitrary fixed 64-bit key for pg_advisory_lock; advisory locks are per database.
MIGRATION_LOCK_KEY = 0x6B616C7368690001
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's recorded schema does not match the migrations shipped with this code."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The shipped migrations (package data), sorted by version; versions must be 1..N."""
    found: list[Migration] = []
    for entry in resources.files("kalshiflow.storage").joinpath("sql").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    expected = list(range(1, len(found) + 1))
    if [mig.version for mig in found] != expected:
        found_versions = [mig.version for mig in found]
        raise MigrationError(f"migration versions must be contiguous from 1, found {found_versions}")
    return found


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    checksum   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


async def schema_version(conn: asyncpg.Connection) -> int:
    """Highest applied version, 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the connected database up to date; returns the versions applied by this call."""
    wanted = load_migrations() if migrations is None else migrations
    # Session-level, not transaction-level: it must span several migration transactions.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=None)
    try:
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        applied = {r["version"]: r for r in rows}
        known = {mig.version: mig for mig in wanted}
        newer = sorted(set(applied) - set(known))
        if newer:
            raise MigrationError(
                f"database schema is at version {max(applied)}, newer than this code knows "
                f"(up to {max(known, default=0)}); upgrade kalshiflow"
            )
        for version, row in applied.items():
            if row["checksum"] != known[version].checksum:
                raise MigrationError(
                    f"migration {version:04d}_{row['name']} was changed after it was applied "
                    f"(checksum differs); add a new migration instead of editing an applied one"
                )
        done: list[int] = []
        for mig in wanted:
            if mig.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql, timeout=None)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            log.info("applied migration %04d_%s", mig.version, mig.name)
            done.append(mig.version)
        return done
    finally:
        # A dead connection releases the lock by itself; don't let that mask the real error.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
