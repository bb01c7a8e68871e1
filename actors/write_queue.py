"""The WriteQueue actor: every recorded row reaches PostgreSQL exactly once, or waits on disk.

Contract (see :mod:`kalshiflow.ingest` for the full statement):

- ``enqueue(batch_id, rows)`` returns an :class:`~kalshiflow.ingest.Ack` only once the batch is
  durable: committed to PostgreSQL, or fsynced to a local spill segment while PostgreSQL is
  unreachable. The sender keeps the batch until then and resends it if the call fails; resending
  is safe because writes are idempotent (COPY to staging, INSERT ... ON CONFLICT DO NOTHING).
- Never drops: above ``high_water_rows`` buffered rows ``enqueue`` waits (backpressure); with
  PostgreSQL down, flushes spill; data PostgreSQL refuses outright is quarantined on disk.
- Spilled segments are drained in order, idempotently, when PostgreSQL is back, and at startup:
  a restarted actor (``max_restarts=-1``) finds its predecessor's segments in its spill dir.

This is the shell: it holds the connection pool, the timers, the tasks and the spill file, and asks
:mod:`kalshiflow.ingest` for every decision (when to flush, how to write, what a failure means).
Ray: ``max_task_retries=0`` (Ray's retry semantics for async actors are unreliable, see
reference-systems.md §4.5); the caller retries, which idempotency makes safe. Async actors may run
calls out of order; nothing here depends on call order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import ray

from kalshiflow.cancellation import stop_tasks
from kalshiflow.config import AppConfig
from kalshiflow.ingest.batching import (
    Entry,
    FlushPolicy,
    Rows,
    WriteBuffer,
    chunk_records,
    count_rows,
    merge_rows,
    validate_rows,
)
from kalshiflow.ingest.messages import COUNTERS, Ack, Durable, WriteQueueClosedError, WriteQueueStats
from kalshiflow.ingest.spill import SpillLog, SpillRecord, scan_segment
from kalshiflow.ingest.writer import Failure, classify, write_rows
from kalshiflow.secrets import Secret
from kalshiflow.storage import Database, data_root, open_database

__all__ = ["WriteQueue", "WriteQueueActor", "start_write_queue"]

log = logging.getLogger("kalshiflow.write_queue")

_RETRIES = 3  # attempts for a serialization failure / deadlock before treating it as unavailable


class WriteQueueActor:
    """The actor's body (``WriteQueue`` is this class under ``ray.remote``); usable in-process."""

    def __init__(
        self, config: AppConfig, *, name: str = "write_queue", url: str | Secret | None = None
    ) -> None:
        cfg = config.write_queue
        self._name = name
        self._cfg = cfg
        # Connect attempts fail fast: the reconnect loop retries on its own schedule, and flushes
        # spill meanwhile instead of waiting.
        self._storage = msgspec.structs.replace(
            config.storage,
            connect_retry_s=min(config.storage.connect_retry_s, 1.0),
            pool_max=max(config.storage.pool_max, cfg.writers + 1),
        )
        self._url = url
        self._buffer = WriteBuffer(FlushPolicy.from_config(cfg))
        root = Path(cfg.spill_dir).expanduser() if cfg.spill_dir.strip() else data_root() / "spill"
        self._spill = SpillLog(root / name, segment_bytes=cfg.spill_segment_bytes)
        self._spill_io = asyncio.Lock()  # one spill file operation at a time (they run in threads)
        self._stack = AsyncExitStack()
        self._db: Database | None = None
        self._db_up = False
        self._down = asyncio.Event()  # set while PostgreSQL is considered unreachable
        self._down.set()
        self._wake = asyncio.Event()  # something may be due for a flush
        self._drain_wanted = asyncio.Event()
        self._first_attempt = asyncio.Event()  # writers hold off until the first connect attempt
        self._closing = False
        self._fatal: BaseException | None = None
        self._flush_ids = itertools.count(1)
        self._in_flight: dict[int, Sequence[Entry]] = {}
        self._n = dict.fromkeys(COUNTERS, 0)
        self._last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = [asyncio.get_running_loop().create_task(self._start())]

    # ------------------------------------------------------------------ public API

    async def enqueue(self, batch_id: str, rows: dict[str, list[tuple[Any, ...]]]) -> Ack:
        """Accept a batch; returns once it is durable (PostgreSQL or spill). Never drops it."""
        if self._closing or self._fatal is not None:
            raise WriteQueueClosedError(
                f"WriteQueue {self._name} is closed" + (f": {self._fatal}" if self._fatal else "")
            )
        n = validate_rows(rows)
        if n == 0:
            return Ack(batch_id=batch_id, rows=0, durable="database")
        token: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._n["batches_enqueued"] += 1
        self._n["rows_enqueued"] += n
        if self._buffer.offer(Entry(batch_id, rows, n, time.monotonic(), token)):
            self._wake.set()
        # shield: a cancelled caller does not un-accept the batch; it is still written.
        return await asyncio.shield(token)

    async def ready(self, *, timeout: float | None = None) -> WriteQueueStats:
        """Wait until the spill dir is open and PostgreSQL is connected (TimeoutError after
        ``timeout``). Enqueueing before that is fine; this is for callers that want to know."""
        async with asyncio.timeout(timeout):
            while not (self._db_up and self._spill.is_open):
                if self._fatal is not None:
                    raise WriteQueueClosedError(f"WriteQueue {self._name} failed: {self._fatal}")
                await asyncio.sleep(0.01)
        return self.stats()

    async def flush(self, *, drain: bool = False, timeout: float | None = None) -> WriteQueueStats:
        """Wait until every batch accepted so far is durable; ``drain``: also until the spill is
        empty (needs PostgreSQL up). Raises TimeoutError after ``timeout`` seconds."""
        tokens = [e.token for e in self._buffer.entries()]
        tokens += [e.token for entries in self._in_flight.values() for e in entries]
        self._buffer.forced = True
        self._wake.set()
        async with asyncio.timeout(timeout):
            if tokens:
                await asyncio.wait(tokens)
            if drain:
                self._drain_wanted.set()
                while self._spill.has_data():
                    if self._fatal is not None:
                        raise WriteQueueClosedError(f"WriteQueue {self._name} failed: {self._fatal}")
                    await asyncio.sleep(0.02)
        return self.stats()

    async def close(self, *, timeout: float = 30.0) -> WriteQueueStats:
        """Stop accepting, make everything durable (draining the spill if PostgreSQL is up, for at
        most ``timeout`` s), release the pool and the spill dir. Kill the actor afterwards."""
        self._closing = True
        try:
            await self.flush(drain=self._db_up, timeout=timeout)
        except TimeoutError:
            log.warning(
                "WriteQueue %s: close() timed out; undrained rows stay in %s",
                self._name,
                self._spill.directory,
            )
        await stop_tasks(self._tasks, timeout=5.0)
        # Whatever is still not durable was never acknowledged: its senders still hold it.
        unfinished = self._buffer.entries() + [e for entries in self._in_flight.values() for e in entries]
        for entry in unfinished:
            if not entry.token.done():
                entry.token.set_exception(
                    WriteQueueClosedError(
                        f"WriteQueue {self._name} closed before batch {entry.batch_id} was durable; resend it"
                    )
                )
        await self._stack.aclose()
        self._db, self._db_up = None, False
        async with self._spill_io:
            await asyncio.to_thread(self._spill.close)
        return self.stats()

    def stats(self) -> WriteQueueStats:
        oldest = self._buffer.oldest()
        spill_exists = self._spill.directory.exists()
        return WriteQueueStats(
            name=self._name,
            database_up=self._db_up,
            closed=self._closing,
            depth=self._buffer.depth,
            waiting_enqueues=self._buffer.waiting_batches,
            waiting_rows=self._buffer.waiting_rows,
            oldest_unflushed_age_s=None if oldest is None else time.monotonic() - oldest,
            last_error=self._last_error,
            spill_segments=self._spill.segment_count() if spill_exists else 0,
            spill_bytes=self._spill.pending_bytes() if spill_exists else 0,
            **self._n,
        )

    # ------------------------------------------------------------------ startup

    async def _start(self) -> None:
        try:
            await asyncio.to_thread(self._spill.open)
        except Exception as exc:  # noqa: BLE001 - the actor cannot work without its spill dir
            self._fatal = exc
            log.error("WriteQueue %s: cannot open spill dir: %s", self._name, exc)
            for entry in self._buffer.entries():
                if not entry.token.done():
                    entry.token.set_exception(WriteQueueClosedError(str(exc)))
            return
        if self._spill.sealed_segments():
            log.info("WriteQueue %s: found spilled segments from a previous run; draining", self._name)
            self._drain_wanted.set()
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._writer()) for _ in range(max(1, self._cfg.writers))]
        self._tasks += [loop.create_task(self._connector()), loop.create_task(self._drainer())]

    # ------------------------------------------------------------------ flushing

    async def _writer(self) -> None:
        # Without this, batches arriving while the pool opens would spill for no reason.
        await self._first_attempt.wait()
        while True:
            now = time.monotonic()
            if self._buffer.flush_due(now, idle_writer=True):
                flush_id = next(self._flush_ids)
                entries = self._buffer.take(flush_id)
                self._in_flight[flush_id] = entries
                try:
                    await self._flush(flush_id, entries)
                finally:
                    self._in_flight.pop(flush_id, None)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._buffer.time_until_due(now))
            except TimeoutError:
                pass

    async def _flush(self, flush_id: int, entries: Sequence[Entry]) -> None:
        if self._db_up:
            failure, inserted, _ = await self._write(merge_rows(e.rows for e in entries))
            if failure is None:
                self._written(sum(e.n_rows for e in entries), inserted)
                self._settle(flush_id, entries, "database")
                return
            if failure is Failure.REJECTED:
                await self._flush_one_by_one(flush_id, entries)
                return
        await self._spill_entries(flush_id, entries)

    async def _flush_one_by_one(self, flush_id: int, entries: Sequence[Entry]) -> None:
        """A flush PostgreSQL refused: find the bad batch(es) so the others still get written."""
        for i, entry in enumerate(entries):
            if not self._db_up:
                await self._spill_entries(flush_id, entries[i:])
                return
            failure, inserted, exc = await self._write(entry.rows)
            if failure is None:
                self._written(entry.n_rows, inserted)
                self._settle(flush_id, [entry], "database")
            elif failure is Failure.REJECTED:
                await self._quarantine(flush_id, [entry], exc)
            else:
                await self._spill_entries(flush_id, entries[i:])
                return

    async def _write(self, rows: Rows) -> tuple[Failure | None, int, BaseException | None]:
        """(None, rows inserted, None) or (failure kind, 0, exception); marks the database down."""
        db = self._db
        for attempt in range(_RETRIES):
            if db is None:
                return Failure.UNAVAILABLE, 0, None
            try:
                async with db.pool.acquire(timeout=self._cfg.write_timeout_s) as conn:
                    return None, await write_rows(conn, rows, timeout=self._cfg.write_timeout_s), None
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
                failure = classify(exc)
                self._error(exc)
                if failure is Failure.RETRY and attempt + 1 < _RETRIES:
                    continue
                if failure is not Failure.REJECTED:
                    self._mark_down(exc)
                    return Failure.UNAVAILABLE, 0, exc
                return failure, 0, exc
        return Failure.UNAVAILABLE, 0, None

    async def _spill_entries(self, flush_id: int, entries: Sequence[Entry]) -> None:
        records = [(e.batch_id, e.rows) for e in entries]
        try:
            async with self._spill_io:
                await asyncio.to_thread(self._spill.append, records)
        except OSError as exc:
            # Cannot make them durable anywhere right now: keep them (callers keep waiting).
            self._error(exc)
            self._buffer.put_back(flush_id, entries)
            await asyncio.sleep(0.5)
            return
        self._n["rows_spilled"] += sum(e.n_rows for e in entries)
        self._n["spill_flushes"] += 1
        self._settle(flush_id, entries, "spill")
        self._drain_wanted.set()

    async def _quarantine(self, flush_id: int, entries: Sequence[Entry], exc: BaseException | None) -> None:
        reason = f"{type(exc).__name__}: {exc}" if exc else "rejected"
        log.error(
            "WriteQueue %s: PostgreSQL refused batch %s (%s); quarantined",
            self._name,
            [e.batch_id for e in entries],
            reason,
        )
        try:
            async with self._spill_io:
                await asyncio.to_thread(
                    self._spill.quarantine, [(e.batch_id, e.rows) for e in entries], reason
                )
        except OSError as err:
            self._error(err)
            self._buffer.put_back(flush_id, entries)
            await asyncio.sleep(0.5)
            return
        self._n["rows_quarantined"] += sum(e.n_rows for e in entries)
        self._settle(flush_id, entries, "quarantine")

    def _written(self, rows: int, inserted: int) -> None:
        self._n["flushes"] += 1
        self._n["rows_written"] += rows
        self._n["rows_inserted"] += inserted

    def _settle(self, flush_id: int, entries: Sequence[Entry], durable: Durable) -> None:
        if self._buffer.finish(flush_id, entries):
            self._wake.set()  # backpressure let waiting batches in
        for entry in entries:
            if not entry.token.done():
                entry.token.set_result(Ack(batch_id=entry.batch_id, rows=entry.n_rows, durable=durable))
        self._n["batches_acked"] += len(entries)

    # ------------------------------------------------------------------ connection

    def _error(self, exc: BaseException) -> None:
        self._n["errors"] += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:500]

    def _mark_down(self, exc: BaseException) -> None:
        if self._db_up:
            log.warning(
                "WriteQueue %s: PostgreSQL unavailable (%s); spilling to %s",
                self._name,
                self._last_error,
                self._spill.directory,
            )
        self._db_up = False
        self._down.set()

    async def _connector(self) -> None:
        delay = 0.05
        while True:
            await self._down.wait()
            try:
                if self._db is None:
                    self._db = await self._stack.enter_async_context(
                        open_database(self._storage, url=self._url)
                    )
                else:
                    await self._db.pool.fetchval("SELECT 1", timeout=self._storage.connect_timeout_s)
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; try again later
                if delay == 0.05:  # once per outage, not once per attempt
                    log.warning("WriteQueue %s: cannot reach PostgreSQL (%s); retrying", self._name, exc)
                self._last_error = f"connect: {type(exc).__name__}: {exc}"[:500]
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._cfg.reconnect_max_s)
                continue
            delay = 0.05
            self._db_up = True
            self._down.clear()
            self._first_attempt.set()
            log.info("WriteQueue %s: PostgreSQL is up (%s)", self._name, self._db.display_url)
            self._drain_wanted.set()
            self._wake.set()

    # ------------------------------------------------------------------ draining the spill

    async def _drainer(self) -> None:
        while True:
            await self._drain_wanted.wait()
            self._drain_wanted.clear()
            if not self._db_up:
                continue  # the connector asks again once PostgreSQL is back
            try:
                await self._drain_once()
            except Exception as exc:  # noqa: BLE001 - a local disk error; segments stay, retry later
                self._error(exc)
                log.error("WriteQueue %s: draining the spill failed: %s", self._name, exc)
                await asyncio.sleep(1.0)
                self._drain_wanted.set()

    async def _drain_once(self) -> None:
        async with self._spill_io:
            await asyncio.to_thread(self._spill.seal)  # new spills go to a fresh segment
            segments = self._spill.sealed_segments()
        for path in segments:
            scan = await asyncio.to_thread(scan_segment, path)
            if not await self._drain_records(scan.records):
                return  # PostgreSQL went away again; the whole segment is replayed later
            self._n["spill_damaged_regions"] += scan.bad_regions
            self._n["spill_torn_bytes"] += scan.torn_tail_bytes
            async with self._spill_io:
                if scan.damaged:
                    kept = await asyncio.to_thread(self._spill.retire_damaged, path)
                    log.error(
                        "WriteQueue %s: %s had %d corrupt region(s) (%d bytes); intact records drained, "
                        "file kept as %s",
                        self._name,
                        path.name,
                        scan.bad_regions,
                        scan.bad_bytes,
                        kept,
                    )
                else:
                    await asyncio.to_thread(self._spill.remove, path)
            if scan.torn_tail_bytes:
                log.warning(
                    "WriteQueue %s: %s ended in a torn record (%d bytes, never acknowledged)",
                    self._name,
                    path.name,
                    scan.torn_tail_bytes,
                )

    async def _drain_records(self, records: Sequence[SpillRecord]) -> bool:
        """Commit spilled records in order, in chunks of about ``flush_rows``; False if PG went down."""
        for chunk in chunk_records(records, self._buffer.policy.flush_rows):
            failure, _, _ = await self._write(merge_rows(r.rows for r in chunk))
            for one in chunk if failure is Failure.REJECTED else ():  # isolate the refused record(s)
                failure, _, exc = await self._write(one.rows)
                if failure is Failure.REJECTED:
                    async with self._spill_io:
                        await asyncio.to_thread(self._spill.quarantine, [(one.batch_id, one.rows)], repr(exc))
                    self._n["rows_quarantined"] += count_rows(one.rows)
                    self._n["rows_drained"] -= count_rows(one.rows)  # added back below with the chunk
                    failure = None
                if failure is not None:
                    return False
            if failure is not None:
                return False
            self._n["rows_drained"] += sum(count_rows(r.rows) for r in chunk)
        return True


# Unlimited restarts, no Ray-level task retries (0 or -1 only; we choose 0 and let callers resend).
WriteQueue = ray.remote(max_restarts=-1, max_task_retries=0)(WriteQueueActor)


def start_write_queue(
    config: AppConfig,
    *,
    name: str = "write_queue",
    url: str | Secret | None = None,
    num_cpus: float = 0.25,
    max_concurrency: int = 256,
    **options: Any,
) -> Any:
    """Create the WriteQueue actor (named ``name``). ``max_concurrency`` bounds the enqueue calls
    the actor holds at once: calls beyond it wait in Ray, their rows still with the caller."""
    return WriteQueue.options(
        name=name, num_cpus=num_cpus, max_concurrency=max_concurrency, **options
    ).remote(config, name=name, url=url)
