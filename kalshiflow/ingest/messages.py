"""What the WriteQueue returns: acknowledgements and statistics (frozen msgspec Structs)."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["COUNTERS", "Ack", "WriteQueueClosedError", "WriteQueueStats"]

Durable = Literal["database", "spill", "quarantine"]


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """A batch is durably accepted; the sender may drop its copy.

    ``durable`` says where the rows are: ``database`` (committed to PostgreSQL), ``spill``
    (fsynced to a spill segment; they reach PostgreSQL when it is back, with no further action
    from the sender), or ``quarantine`` (fsynced to the quarantine dir because PostgreSQL refused
    the data itself, e.g. a constraint violation: kept for inspection, not retried).
    """

    batch_id: str
    rows: int
    durable: Durable


class WriteQueueStats(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    database_up: bool
    closed: bool
    depth: int  # rows buffered and not yet durable (waiting for a flush or in one)
    waiting_enqueues: int  # enqueue calls held back by backpressure (rows not counted in depth)
    waiting_rows: int
    oldest_unflushed_age_s: float | None  # age of the oldest row not yet durable
    batches_enqueued: int
    batches_acked: int
    rows_enqueued: int
    rows_written: int  # rows committed to PostgreSQL by flushes (new + already present)
    rows_inserted: int  # of which new (the rest were duplicates skipped by ON CONFLICT)
    rows_spilled: int  # rows acknowledged from a spill segment (PostgreSQL unreachable)
    rows_drained: int  # spilled rows later committed to PostgreSQL
    rows_quarantined: int
    flushes: int  # flushes committed to PostgreSQL
    spill_flushes: int  # flushes written to the spill log instead
    errors: int  # failed writes (each is followed by a retry, a spill or a quarantine)
    last_error: str | None
    spill_segments: int  # segment files not yet drained
    spill_bytes: int
    spill_damaged_regions: int  # corrupt stretches skipped while draining (kept in quarantine)
    spill_torn_bytes: int  # incomplete tails of segments (a crash mid-append, never acknowledged)


class WriteQueueClosedError(RuntimeError):
    """``enqueue`` after ``close()``: the batch was not accepted; send it elsewhere or retry later."""


# The cumulative counters among the stats (the rest are gauges computed when asked).
COUNTERS = (
    "batches_enqueued", "batches_acked", "rows_enqueued", "rows_written", "rows_inserted", "rows_spilled",
    "rows_drained", "rows_quarantined", "flushes", "spill_flushes", "errors", "spill_damaged_regions",
    "spill_torn_bytes",
)  # fmt: skip
