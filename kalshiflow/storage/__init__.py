"""PostgreSQL storage: embedded server, asyncpg pool, migrations, schema map, idempotent bulk writer.

Importing this package starts nothing; :func:`open_database` does the I/O.
"""

from kalshiflow.storage.copy import copy_insert
from kalshiflow.storage.database import (
    Database,
    DatabaseUnavailableError,
    connect,
    display_url,
    ensure_database,
    open_database,
)
from kalshiflow.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError, data_root, pgdata_dir
from kalshiflow.storage.migrations import MigrationError, load_migrations, migrate, schema_version
from kalshiflow.storage.schema import TABLES, TableSpec

__all__ = [
    "TABLES",
    "Database",
    "DatabaseUnavailableError",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "MigrationError",
    "TableSpec",
    "connect",
    "copy_insert",
    "data_root",
    "display_url",
    "ensure_database",
    "load_migrations",
    "migrate",
    "open_database",
    "pgdata_dir",
    "schema_version",
]
