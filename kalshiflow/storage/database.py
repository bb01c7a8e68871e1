"""The asyncpg pool: where the server is, connecting with a clear error, codecs, migrations.

``open_database(config)`` is the one way in::

    async with open_database(app_config.storage) as db:
        inserted = await db.copy_insert("book_deltas", rows)

Server choice: an explicit ``url`` argument, else ``DATABASE_URL`` from the environment, else the
embedded server in the configured data dir (started, or attached to, for the life of the context).
The database named by ``StorageConfig.database`` (or by the URL's path) is created when missing.

Passwords never reach a log line or an exception message: URLs are shown through
:func:`display_url` and driver errors are scrubbed of the password before being re-raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from kalshiflow.config import AppConfig, StorageConfig
from kalshiflow.secrets import Secret, database_url, mask_url
from kalshiflow.storage.copy import copy_insert
from kalshiflow.storage.embedded import EmbeddedPostgres, with_database
from kalshiflow.storage.migrations import migrate

log = logging.getLogger("kalshiflow.storage")

# Errors worth retrying while a server comes up (refused socket, "the database system is starting
# up", a slow handshake). Authentication and configuration errors are final.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
)


_CLOSE_TIMEOUT_S = 10.0


class DatabaseUnavailableError(ConnectionError):
    """PostgreSQL could not be reached or refused us; the message names the (masked) server."""


def _password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for key, value in parse_qsl(parts.query):
        if key == "password" and value:
            return value
    return None


def display_url(url: str) -> str:
    """The URL with any password (userinfo or ``?password=``) replaced by ``***``."""
    shown = mask_url(url)
    parts = urlsplit(shown)
    if "password=" in parts.query:
        pairs = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
        query = urlencode(pairs, safe="*/")
        shown = urlunsplit(parts._replace(query=query))
    return shown


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (raw and percent-encoded) replaced by ``***``."""
    secret = _password(url)
    if not secret:
        return text
    raw = urlsplit(url).password or ""
    for needle in {secret, raw}:
        if needle:
            text = text.replace(needle, "***")
    return text


def _json_encode(value: Any) -> bytes:
    # jsonb's binary wire format is a version byte (1) then the JSON text; binary lets
    # copy_records_to_table (binary COPY) carry jsonb columns without a text round trip.
    return b"\x01" + msgspec.json.encode(value)


def _jsonb_decode(data: bytes) -> Any:
    return msgspec.json.decode(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_json_encode, decoder=_jsonb_decode, format="binary"
    )
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=msgspec.json.encode, decoder=msgspec.json.decode, format="binary"
    )


async def connect(url: str, config: StorageConfig, *, database: str | None = None) -> asyncpg.Connection:
    """One connection, retried while the server is merely not up yet (``connect_retry_s``)."""
    deadline = time.monotonic() + max(config.connect_retry_s, 0.0)
    delay = 0.05
    while True:
        try:
            return await asyncpg.connect(url, database=database, timeout=config.connect_timeout_s)
        except _TRANSIENT as err:
            if time.monotonic() + delay > deadline:
                raise _unavailable(url, database, err) from None
        except asyncpg.InvalidCatalogNameError:
            raise  # the caller may create the database
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise _unavailable(url, database, err) from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _unavailable(url: str, database: str | None, err: BaseException) -> DatabaseUnavailableError:
    # `from None` above: the driver's exception (and its args) must not ride along as __cause__,
    # because a DSN-parsing error can quote the URL verbatim.
    where = display_url(with_database(url, database) if database else url)
    detail = scrub(f"{type(err).__name__}: {err}", url)
    return DatabaseUnavailableError(f"cannot connect to PostgreSQL at {where}: {detail}")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _create_database(url: str, config: StorageConfig, database: str) -> bool:
    admin = await connect(url, config, database="postgres")
    try:
        await admin.execute(f"CREATE DATABASE {_quote_ident(database)}")
        log.info("created database %s on %s", database, display_url(url))
        return True
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False  # another process created it between our check and our CREATE
    finally:
        await admin.close()


async def connect_or_create(url: str, config: StorageConfig, database: str) -> asyncpg.Connection:
    """A connection to ``database`` on the server at ``url``, creating the database if missing."""
    try:
        return await connect(url, config, database=database)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(url, config, database)
    return await connect(url, config, database=database)


async def ensure_database(url: str, config: StorageConfig, database: str) -> None:
    """Create ``database`` on the server at ``url`` if it does not exist yet."""
    conn = await connect_or_create(url, config, database)
    await conn.close()


class Database:
    """An open asyncpg pool plus the bulk writer; obtained from :func:`open_database`."""

    def __init__(self, pool: asyncpg.Pool, url: Secret, embedded: EmbeddedPostgres | None) -> None:
        self.pool = pool
        self.url = url  # a Secret: printing it shows '***'
        self.embedded = embedded

    @property
    def display_url(self) -> str:
        return display_url(self.url.reveal())

    def acquire(self) -> Any:
        """``async with db.acquire() as conn:`` (a pooled asyncpg connection)."""
        return self.pool.acquire()

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        return await self.pool.execute(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[asyncpg.Record]:
        return await self.pool.fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> asyncpg.Record | None:
        return await self.pool.fetchrow(query, *args, timeout=timeout)

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self.pool.fetchval(query, *args, timeout=timeout)

    async def copy_insert(
        self,
        table: str,
        rows: Iterable[Sequence[Any]],
        columns: Sequence[str] | None = None,
        *,
        key: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Idempotent bulk write (see :func:`kalshiflow.storage.copy.copy_insert`); rows written."""
        async with self.pool.acquire() as conn:
            return await copy_insert(conn, table, rows, columns, key=key, update=update, timeout=timeout)

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"


def resolve_url(url: str | Secret | None, environ: Mapping[str, str] | None) -> Secret | None:
    if isinstance(url, Secret):
        return url
    if url:
        return Secret(url)
    return database_url(environ)


@asynccontextmanager
async def open_database(
    config: StorageConfig | AppConfig,
    *,
    url: str | Secret | None = None,
    migrate_schema: bool = True,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[Database]:
    """Open the pool (starting the embedded server if needed), migrate, yield, close everything.

    ``url``: explicit server URL (overrides ``DATABASE_URL``); its database path, when present,
    wins over ``config.database``. Raises :class:`DatabaseUnavailableError` when the server cannot
    be reached within ``connect_retry_s``.
    """
    storage = config.storage if isinstance(config, AppConfig) else config
    secret = resolve_url(url, environ)
    embedded: EmbeddedPostgres | None = None
    if secret is None:
        embedded = EmbeddedPostgres.from_config(storage, environ)
        await asyncio.to_thread(embedded.start)
        server_url = embedded.uri()
        dbname = storage.database
    else:
        server_url = secret.reveal()
        dbname = unquote(urlsplit(server_url).path.lstrip("/")) or storage.database
    try:
        full_url = with_database(server_url, dbname)
        conn = await connect_or_create(server_url, storage, dbname)
        try:
            if migrate_schema:
                await migrate(conn)
        finally:
            await conn.close()
        try:
            pool = await asyncpg.create_pool(
                full_url,
                min_size=storage.pool_min,
                max_size=max(storage.pool_max, storage.pool_min),
                command_timeout=storage.command_timeout_s,
                timeout=storage.connect_timeout_s,
                init=_init_connection,
                server_settings={"application_name": "kalshiflow", "timezone": "UTC"},
            )
        except (*_TRANSIENT, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise _unavailable(full_url, None, err) from None
        log.info("connected to PostgreSQL at %s (pool %d..%d)", display_url(full_url), storage.pool_min,
                 storage.pool_max)
        try:
            yield Database(pool, Secret(full_url), embedded)
        finally:
            try:
                # close() waits for every connection to be released; a leaked one must not hang
                # shutdown (and keep the embedded server alive) forever.
                await asyncio.wait_for(pool.close(), timeout=_CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("PostgreSQL pool: connections still in use after %.0f s; terminating",
                            _CLOSE_TIMEOUT_S)
                pool.terminate()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
