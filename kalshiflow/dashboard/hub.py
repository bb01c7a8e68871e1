"""Fan-out to browsers: one bounded outbox per client, and the per-component rate limit.

A slow browser must never slow the others, nor the Broadcaster: publishing only appends to each
client's :class:`Outbox` (no awaiting a socket); each client's own writer task drains it. When an
outbox is full the OLDEST message is dropped, for that client only, and counted. Most messages
are whole states (the next one supersedes a dropped one); messages of a *stream* (``book`` and
``pnl_history`` diffs) are not, so a drop purges that stream's queued messages and marks it: the
client's next message on it is a snapshot.

:class:`Coalescer` holds the newest message per component and lets at most one through per
interval (reference-systems.md §2.6: coalesce, then broadcast).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["Client", "Coalescer", "Hub", "Outbox"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Outbox:
    """Bounded FIFO of encoded messages for one client: ``max_messages`` and ``max_bytes``."""

    def __init__(self, max_messages: int = 64, max_bytes: int = 256 * 1024) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("an outbox must hold at least one message")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[str, str | None]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._resync: set[str] = set()
        self.dropped = 0
        self.queued = 0  # messages ever accepted
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, text: str, stream: str | None = None) -> int:
        """Queue ``text``; returns how many older messages were dropped to make room."""
        if self.closed:
            return 0
        self._items.append((text, stream))
        self._bytes += len(text)
        self.queued += 1
        dropped = 0
        # Keep the newest message even if it alone exceeds max_bytes: it is the freshest state.
        while len(self._items) > 1 and (len(self._items) > self.max_messages or self._bytes > self.max_bytes):
            old, old_stream = self._items.popleft()
            self._bytes -= len(old)
            dropped += 1
            if old_stream is not None:
                dropped += self._purge(old_stream)
        self.dropped += dropped
        self._ready.set()
        return dropped

    def _purge(self, stream: str) -> int:
        """After losing a message of ``stream``, its queued followers are useless: drop them too."""
        self._resync.add(stream)
        keep = deque(item for item in self._items if item[1] != stream)
        purged = len(self._items) - len(keep)
        self._bytes -= sum(len(t) for t, s in self._items if s == stream)
        self._items = keep
        return purged

    def take_resync(self, stream: str) -> bool:
        """True (once) if this client lost a message of ``stream`` and needs a snapshot."""
        if stream in self._resync:
            self._resync.discard(stream)
            return True
        return False

    def mark_resync(self, stream: str) -> None:
        self._resync.add(stream)

    async def get(self) -> str:
        """The oldest message, waiting for one; raises ConnectionError once closed and empty."""
        while not self._items:
            if self.closed:
                raise ConnectionError("outbox closed")
            self._ready.clear()
            await self._ready.wait()
        text, _ = self._items.popleft()
        self._bytes -= len(text)
        return text

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._bytes = 0
        self._ready.set()


class Client:
    """One connected browser: its outbox and what it asked to see."""

    def __init__(self, client_id: int, outbox: Outbox) -> None:
        self.id = client_id
        self.outbox = outbox
        self.ticker: str | None = None  # market whose book ladder this client receives
        self.sent = 0
        self.connected_at = time.time()


class Hub:
    """The set of connected clients. Every method is synchronous and never blocks on a socket."""

    def __init__(self, max_messages: int = 64, max_bytes: int = 256 * 1024) -> None:
        self._clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self.dropped_closed = 0  # drops counted by clients that have since left

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def add(self) -> Client:
        client = Client(next(self._ids), Outbox(self._max_messages, self._max_bytes))
        self._clients[client.id] = client
        return client

    def remove(self, client: Client) -> None:
        if self._clients.pop(client.id, None) is not None:
            self.dropped_closed += client.outbox.dropped
        client.outbox.close()

    @property
    def dropped(self) -> int:
        return self.dropped_closed + sum(c.outbox.dropped for c in self._clients.values())

    def broadcast(self, text: str, stream: str | None = None) -> None:
        for client in self._clients.values():
            client.outbox.put(text, stream)

    def tickers(self) -> dict[str, list[Client]]:
        """Selected market -> the clients watching it."""
        out: dict[str, list[Client]] = {}
        for client in self._clients.values():
            if client.ticker is not None:
                out.setdefault(client.ticker, []).append(client)
        return out


class Coalescer(Generic[K, V]):
    """At most one value per key per ``interval_s``; a newer offer replaces a pending one."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[K, float] = {}
        self._pending: dict[K, V] = {}
        self.coalesced = 0  # values replaced before they were sent

    def offer(self, key: K, value: V) -> V | None:
        """The value to send now, or None when it must wait (it is kept as the pending one)."""
        now = self._clock()
        last = self._last.get(key)
        if last is None or now - last >= self.interval_s:
            self._last[key] = now
            self._pending.pop(key, None)
            return value
        if key in self._pending:
            self.coalesced += 1
        self._pending[key] = value
        return None

    def allow(self, key: K) -> bool:
        """For streams (no value to keep): True, and the interval restarts, if ``key`` may send now."""
        now = self._clock()
        last = self._last.get(key)
        if last is None or now - last >= self.interval_s:
            self._last[key] = now
            return True
        return False

    def due(self) -> list[tuple[K, V]]:
        """Pending values whose key may send again now (call this a few times per interval)."""
        now = self._clock()
        out: list[tuple[K, V]] = []
        for key in list(self._pending):
            if now - self._last.get(key, float("-inf")) >= self.interval_s:
                self._last[key] = now
                out.append((key, self._pending.pop(key)))
        return out

    def forget(self, key: K) -> None:
        self._last.pop(key, None)
        self._pending.pop(key, None)
