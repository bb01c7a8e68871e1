"""The WriteQueue's decisions, as pure code: buffer accounting, flush policy, backpressure.

No clock, no asyncio, no I/O: callers pass ``now`` (monotonic seconds) in, and every entry
carries an opaque ``token`` (the actor puts the caller's future there) that this module never
touches. That keeps the rules unit-testable without Ray or PostgreSQL.

Accounting: ``depth`` counts every row the queue holds that is not yet durable, i.e. rows waiting
in the buffer plus rows in a flush that has not finished. Rows leave ``depth`` only when their
flush ends (committed, spilled or put back), so backpressure sees in-flight rows too.

Flush policy: a writer takes a flush when

- the buffer holds ``flush_rows`` or more (size), or
- the oldest buffered entry is ``flush_interval_ms`` old (time), or
- ``eager`` is on and the writer is otherwise idle (group commit), or
- someone asked for ``flush()`` / ``close()`` (forced).

Eager flushing exists because an acknowledgement waits for durability: a caller that awaits each
ack would otherwise sit out the whole interval for nothing while the writer idles. Under load the
writers are busy, entries pile up meanwhile, and flushes grow on their own toward ``flush_rows``.

Backpressure: a new batch is admitted while ``depth + rows <= high_water_rows``, or when the queue
is empty (a batch bigger than the high-water mark must still get in, or it could never be written).
Admission is FIFO: a waiting caller is never overtaken by a later one, so a big batch cannot starve.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from kalshiflow.config import WriteQueueConfig
from kalshiflow.storage.schema import TABLES

__all__ = [
    "Entry",
    "FlushPolicy",
    "WriteBuffer",
    "chunk_records",
    "count_rows",
    "merge_rows",
    "validate_rows",
]

# A batch: table name -> row tuples in TABLES[table].columns order.
Rows = Mapping[str, Sequence[Sequence[Any]]]
T = TypeVar("T")


class FlushPolicy(msgspec.Struct, frozen=True, kw_only=True):
    flush_rows: int = 5000
    flush_interval_s: float = 0.25
    high_water_rows: int = 200_000
    eager: bool = True

    @classmethod
    def from_config(cls, config: WriteQueueConfig) -> FlushPolicy:
        return cls(
            flush_rows=max(1, config.flush_rows),
            flush_interval_s=max(0.0, config.flush_interval_ms / 1000.0),
            high_water_rows=max(1, config.high_water_rows),
            eager=config.eager_flush,
        )

    def flush_due(self, buffered_rows: int, oldest_age_s: float | None, *, forced: bool = False) -> bool:
        """Whether a flush is due now (an idle writer's eager flush is the caller's choice)."""
        if buffered_rows <= 0 or oldest_age_s is None:
            return False
        return forced or buffered_rows >= self.flush_rows or oldest_age_s >= self.flush_interval_s

    def admits(self, depth: int, incoming: int) -> bool:
        return depth <= 0 or depth + incoming <= self.high_water_rows


class Entry:
    """One enqueued batch: its rows, size, arrival time and the owner's token."""

    __slots__ = ("batch_id", "rows", "n_rows", "enqueued_at", "token")

    def __init__(self, batch_id: str, rows: Rows, n_rows: int, enqueued_at: float, token: Any = None) -> None:
        self.batch_id = batch_id
        self.rows = rows
        self.n_rows = n_rows
        self.enqueued_at = enqueued_at
        self.token = token

    def __repr__(self) -> str:
        return f"Entry({self.batch_id!r}, {self.n_rows} rows)"


class WriteBuffer:
    """FIFO of entries waiting for a flush, plus the rows of flushes in progress."""

    __slots__ = (
        "policy",
        "_waiting",
        "_waiting_rows",
        "_pending",
        "_pending_rows",
        "_in_flight_rows",
        "_in_flight_oldest",
        "forced",
    )

    def __init__(self, policy: FlushPolicy) -> None:
        self.policy = policy
        self._waiting: deque[Entry] = deque()  # held back by backpressure, not yet in the buffer
        self._waiting_rows = 0
        self._pending: deque[Entry] = deque()
        self._pending_rows = 0
        self._in_flight_rows = 0
        self._in_flight_oldest: dict[int, float] = {}  # flush id -> oldest enqueued_at in it
        self.forced = False  # set by flush()/close(): flush whatever is there now

    # ---------------------------------------------------------------- accounting

    @property
    def depth(self) -> int:
        """Rows held and not yet durable (waiting + in flight)."""
        return self._pending_rows + self._in_flight_rows

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    @property
    def pending_batches(self) -> int:
        return len(self._pending)

    def oldest(self) -> float | None:
        """Arrival time of the oldest row not yet durable (held back, buffered or in flight)."""
        times = list(self._in_flight_oldest.values())
        if self._pending:
            times.append(self._pending[0].enqueued_at)
        if self._waiting:
            times.append(self._waiting[0].enqueued_at)
        return min(times) if times else None

    def oldest_pending_age(self, now: float) -> float | None:
        return now - self._pending[0].enqueued_at if self._pending else None

    @property
    def waiting_batches(self) -> int:
        return len(self._waiting)

    @property
    def waiting_rows(self) -> int:
        return self._waiting_rows

    def admits(self, incoming: int) -> bool:
        return self.policy.admits(self.depth, incoming)

    def entries(self) -> list[Entry]:
        """Entries not yet taken by a flush: buffered ones, then those held back, in order."""
        return [*self._pending, *self._waiting]

    # ---------------------------------------------------------------- flow

    def offer(self, entry: Entry) -> bool:
        """Buffer ``entry`` if backpressure allows (True), else queue it behind earlier waiters.

        A queued entry enters the buffer, in arrival order, when flushes finish and make room
        (``finish``/``put_back`` return the entries they admitted).
        """
        if not self._waiting and self.admits(entry.n_rows):
            self.add(entry)
            return True
        self._waiting.append(entry)
        self._waiting_rows += entry.n_rows
        return False

    def add(self, entry: Entry) -> None:
        self._pending.append(entry)
        self._pending_rows += entry.n_rows

    def _admit_waiting(self) -> list[Entry]:
        admitted: list[Entry] = []
        while self._waiting and self.admits(self._waiting[0].n_rows):
            entry = self._waiting.popleft()
            self._waiting_rows -= entry.n_rows
            self.add(entry)
            admitted.append(entry)
        return admitted

    def flush_due(self, now: float, *, idle_writer: bool = False) -> bool:
        age = self.oldest_pending_age(now)
        if self.policy.flush_due(self._pending_rows, age, forced=self.forced):
            return True
        return idle_writer and self.policy.eager and self._pending_rows > 0

    def time_until_due(self, now: float) -> float | None:
        """Seconds until the time rule fires for the oldest waiting entry (None: nothing waits)."""
        age = self.oldest_pending_age(now)
        return None if age is None else max(0.0, self.policy.flush_interval_s - age)

    def take(self, flush_id: int) -> list[Entry]:
        """Whole entries, oldest first, up to ``flush_rows`` rows (at least one entry)."""
        taken: list[Entry] = []
        rows = 0
        limit = self.policy.flush_rows
        while self._pending and (not taken or rows + self._pending[0].n_rows <= limit):
            entry = self._pending.popleft()
            taken.append(entry)
            rows += entry.n_rows
        self._pending_rows -= rows
        self._in_flight_rows += rows
        if taken:
            self._in_flight_oldest[flush_id] = min(e.enqueued_at for e in taken)
        if not self._pending:
            self.forced = False
        return taken

    def finish(self, flush_id: int, entries: Iterable[Entry]) -> list[Entry]:
        """The flush ended and its entries are durable: they leave the accounting.

        Returns the waiting entries this made room for (now buffered)."""
        self._in_flight_rows -= sum(e.n_rows for e in entries)
        self._in_flight_oldest.pop(flush_id, None)
        return self._admit_waiting()

    def put_back(self, flush_id: int, entries: Sequence[Entry]) -> None:
        """The flush could not make its entries durable: they go back to the front, in order."""
        self._in_flight_rows -= sum(e.n_rows for e in entries)
        self._in_flight_oldest.pop(flush_id, None)
        for entry in reversed(entries):
            self._pending.appendleft(entry)
            self._pending_rows += entry.n_rows


def validate_rows(rows: Any) -> int:
    """Check a batch's shape (known tables, full-width tuples); returns its row count.

    Done at enqueue time so that a malformed batch is refused to its sender, who can fix it,
    instead of failing a flush that carries other senders' batches too.
    """
    if not isinstance(rows, dict):
        raise TypeError(f"rows must be a dict of table name -> list of tuples, not {type(rows).__name__}")
    total = 0
    for table, table_rows in rows.items():
        spec = TABLES.get(table)
        if spec is None:
            raise ValueError(f"unknown table {table!r}; known: {sorted(TABLES)}")
        if not isinstance(table_rows, (list, tuple)):
            raise TypeError(f"{table}: rows must be a list of tuples, not {type(table_rows).__name__}")
        width = len(spec.columns)
        for row in table_rows:
            if len(row) != width:
                raise ValueError(
                    f"{table}: row has {len(row)} values, the table has {width} columns {spec.columns}"
                )
        total += len(table_rows)
    return total


def count_rows(rows: Rows) -> int:
    return sum(len(r) for r in rows.values())


def chunk_records(records: Sequence[T], limit: int) -> Iterator[list[T]]:
    """Consecutive records (anything with ``.rows``) grouped up to ``limit`` rows per group, order
    kept; a record bigger than ``limit`` is a group of its own. For draining the spill."""
    chunk: list[T] = []
    rows = 0
    for record in records:
        n = count_rows(record.rows)  # type: ignore[attr-defined]
        if chunk and rows + n > limit:
            yield chunk
            chunk, rows = [], 0
        chunk.append(record)
        rows += n
    if chunk:
        yield chunk


def merge_rows(batches: Iterable[Rows]) -> dict[str, list[Sequence[Any]]]:
    """One list per table over many batches, in batch order (one COPY per table per flush)."""
    merged: dict[str, list[Sequence[Any]]] = {}
    for rows in batches:
        for table, table_rows in rows.items():
            if not table_rows:
                continue
            target = merged.get(table)
            if target is None:
                merged[table] = list(table_rows)
            else:
                target.extend(table_rows)
    return merged
