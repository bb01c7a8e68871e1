"""Lossless ingest: how the WriteQueue actor (actors/write_queue.py) decides and stores.

- :mod:`~kalshiflow.ingest.batching`: buffer accounting, flush policy, backpressure (pure).
- :mod:`~kalshiflow.ingest.writer`: idempotent PostgreSQL write of a flush; failure kinds.
- :mod:`~kalshiflow.ingest.spill`: the fsynced segment log used while PostgreSQL is unreachable.
- :mod:`~kalshiflow.ingest.messages`: ``Ack`` and ``WriteQueueStats``.
- :mod:`~kalshiflow.ingest.throughput`: the WriteQueue-alone benchmark (vs a raw COPY).

What "acknowledged" means: ``enqueue`` returns an :class:`Ack` only after every row of the batch is
durable, either committed to PostgreSQL or written and fsynced to a spill segment on local disk
(or, for data PostgreSQL refuses outright, fsynced to the quarantine dir). Until then the sender
must keep the batch and resend it (same rows) if the call fails; resending is always safe because
every write is INSERT ... ON CONFLICT DO NOTHING on natural keys. Nothing is ever dropped: a full
queue makes ``enqueue`` wait, an unreachable database makes it spill.

Importing this package does no I/O.
"""

from kalshiflow.ingest.batching import Entry, FlushPolicy, WriteBuffer, merge_rows, validate_rows
from kalshiflow.ingest.messages import Ack, WriteQueueClosedError, WriteQueueStats
from kalshiflow.ingest.spill import SegmentScan, SpillLocked, SpillLog, SpillRecord, scan_segment
from kalshiflow.ingest.writer import Failure, classify, write_rows

__all__ = [
    "Ack",
    "Entry",
    "Failure",
    "FlushPolicy",
    "SegmentScan",
    "SpillLocked",
    "SpillLog",
    "SpillRecord",
    "WriteBuffer",
    "WriteQueueClosedError",
    "WriteQueueStats",
    "classify",
    "merge_rows",
    "scan_segment",
    "validate_rows",
    "write_rows",
]
