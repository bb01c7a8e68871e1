"""Book updates to subscriber actors (Trader, Broadcaster): coalesced, one call in flight each.

Each subscriber names the markets it wants (or all). Every batch interval the collector publishes
the tops of the markets that changed; a subscriber gets them in one ``on_books(updates)`` call.
While its previous call is still running, newer tops replace older ones for the same market
(coalescing), so a slow subscriber sees the latest state later, never a growing backlog, and
never holds the collector up. A subscriber whose calls keep failing (it died) is removed.

No Ray import: the actor hands in ``send(handle, updates)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kalshiflow.collect.messages import BookTop

__all__ = ["Fanout"]

log = logging.getLogger(__name__)

Send = Callable[[Any, list[BookTop]], Awaitable[object]]
_MAX_FAILURES = 3


class _Subscriber:
    __slots__ = ("handle", "tickers", "pending", "busy", "failures", "sent")

    def __init__(self, handle: Any, tickers: frozenset[str] | None) -> None:
        self.handle = handle
        self.tickers = tickers  # None = every market of the collector
        self.pending: dict[str, BookTop] = {}
        self.busy = False
        self.failures = 0
        self.sent = 0


class Fanout:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._subs: dict[Any, _Subscriber] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.removed = 0

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, handle: Any, tickers: Iterable[str] | None) -> bool:
        """Subscribe ``handle``; False (and nothing changes) if it already has exactly these markets."""
        wanted = None if tickers is None else frozenset(tickers)
        current = self._subs.get(handle)
        if current is not None and current.tickers == wanted:
            return False
        self._subs[handle] = _Subscriber(handle, wanted)
        return True

    def remove(self, handle: Any) -> bool:
        return self._subs.pop(handle, None) is not None

    def publish(self, tops: dict[str, BookTop]) -> None:
        for sub in list(self._subs.values()):
            if sub.tickers is None:
                sub.pending.update(tops)
            else:
                sub.pending.update((t, top) for t, top in tops.items() if t in sub.tickers)
            if sub.pending and not sub.busy:
                self._start(sub)

    def _start(self, sub: _Subscriber) -> None:
        updates = list(sub.pending.values())
        sub.pending = {}
        sub.busy = True
        task = asyncio.get_running_loop().create_task(self._deliver(sub, updates))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, sub: _Subscriber, updates: list[BookTop]) -> None:
        try:
            await self._send(sub.handle, updates)
            sub.failures = 0
            sub.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as err:
            sub.failures += 1
            if sub.failures >= _MAX_FAILURES and self._subs.get(sub.handle) is sub:
                log.warning("book subscriber %r removed after %d failed calls (%s)", sub.handle, sub.failures,
                            err)
                del self._subs[sub.handle]
                self.removed += 1
        finally:
            sub.busy = False
        # Tops that arrived during the call go out now: waiting for the next publish would leave a
        # subscriber on a stale top for good once the market goes quiet.
        if sub.pending and self._subs.get(sub.handle) is sub:
            self._start(sub)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
