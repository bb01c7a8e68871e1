"""Getting a collector's rows durable: batches kept until acknowledged, retried until they are.

A batch is one Ray call to the WriteQueue (``enqueue(batch_id, rows)``), which returns only once
the rows are committed or fsynced to its spill. Until that acknowledgement the batch stays here:
a failed call (the WriteQueue restarting, a timeout) is retried with the same ``batch_id`` and the
same rows, which is safe because writes are idempotent by natural key. Nothing is dropped; when
too much is unacknowledged the collector stops reading its socket (:meth:`Shipper.wait_below`).

Several batches may be in flight at once (``max_inflight``) so the round trip of one does not cap
throughput; they may be acknowledged out of order, which the natural keys make harmless.

No Ray import: the actor hands in ``send``; tests hand in a fake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kalshiflow.cancellation import stop_tasks

__all__ = ["RowBatch", "Rows", "Shipper"]

log = logging.getLogger(__name__)

Rows = dict[str, list[tuple[Any, ...]]]
Send = Callable[[str, Rows], Awaitable[object]]


class RowBatch(dict):  # type: ignore[type-arg]
    """A batch as it is shipped: a plain ``dict`` of table -> rows, but ONE object to Ray.

    Ray encodes call arguments with msgpack in strict-types mode, where a tuple is not an array:
    it hands every row tuple separately to its pickle fallback (a Python callback and an ExtType
    per row, ~1.3 us each, more than a collector spends decoding the delta). A dict subclass is
    not msgpack-native either, so the whole batch goes to pickle in one piece (~0.25 us a row).
    The receiver gets a dict (``isinstance`` holds; equality is a dict's).
    """

    __slots__ = ()


class Shipper:
    def __init__(
        self,
        send: Send,
        *,
        max_inflight: int = 4,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._send = send
        self._slots = asyncio.Semaphore(max(1, max_inflight))
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._unacked: dict[str, tuple[Rows, int]] = {}
        self._unacked_rows = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self.n = dict.fromkeys(("sent", "acked", "retried", "rows_acked", "rows_sent"), 0)
        self.last_error: str | None = None

    @property
    def unacked_rows(self) -> int:
        return self._unacked_rows

    @property
    def unacked_batches(self) -> int:
        return len(self._unacked)

    def submit(self, batch_id: str, rows: Rows) -> None:
        """Hold ``rows`` under ``batch_id`` and deliver them in the background until acknowledged."""
        if batch_id in self._unacked:
            raise ValueError(f"batch {batch_id!r} is already pending")
        n_rows = sum(len(v) for v in rows.values())
        if type(rows) is not RowBatch:
            rows = RowBatch(rows)
        self._unacked[batch_id] = (rows, n_rows)
        self._unacked_rows += n_rows
        self.n["rows_sent"] += n_rows
        task = asyncio.get_running_loop().create_task(self._deliver(batch_id), name=f"ship-{batch_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch_id: str) -> None:
        rows, n_rows = self._unacked[batch_id]
        delay = self._backoff
        async with self._slots:
            while True:
                self.n["sent"] += 1
                try:
                    await self._send(batch_id, rows)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # any failure: the rows are still ours, try again
                    self.n["retried"] += 1
                    text = f"{type(err).__name__}: {err}"[:300]
                    if text != self.last_error:
                        log.warning("batch %s not acknowledged (%s); retrying in %.2fs", batch_id, text,
                                    delay)
                    self.last_error = text
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff_max)
        del self._unacked[batch_id]
        self._unacked_rows -= n_rows
        self.n["acked"] += 1
        self.n["rows_acked"] += n_rows
        async with self._changed:
            self._changed.notify_all()

    async def wait_below(self, limit: int) -> None:
        """Until at most ``limit`` rows are unacknowledged (backpressure for the frame reader)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._unacked_rows <= limit)

    async def drain(self, timeout: float | None = None) -> bool:
        """Until every batch is acknowledged; False if ``timeout`` passed first (nothing is lost:
        the batches stay pending)."""
        try:
            await asyncio.wait_for(self.wait_below(0), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop delivering (the actor is going away). Pending batches are abandoned."""
        await stop_tasks(list(self._tasks), timeout=5.0)
