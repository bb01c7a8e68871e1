"""Book updates to subscriber actors (the Trader): as soon as they change, one call in flight each.

Each subscriber names the markets it wants (or all). The collector tells the fanout which markets
changed right after applying a burst of frames (:meth:`Fanout.touch`); an idle subscriber gets
their views at once, in one ``on_books(updates)`` call. While its previous call is still running,
changes only mark the market (coalescing): when the call returns, the next one carries the views
of every market marked meanwhile, built at that moment -- so a slow subscriber sees the latest
state later, never a growing backlog, never holds the collector up, and costs the collector one
view per market per call, however many frames arrived in between. ``min_interval_s`` spaces
the calls to one subscriber further (fewer, larger calls: less CPU, more latency).

Public trades are not coalesced: each subscriber keeps the trades of its markets that it has not
been sent yet (:meth:`Fanout.touch` ``trades``) and gets them all, in order, with the market's
next view (``BookTop.trades``; a market with trades and no book change gets a view marked
``book_changed=False``). At most ``_MAX_TRADES`` wait per market and subscriber; beyond that
the oldest are dropped and counted (``trades_dropped``): the trade features read 60 s.

:meth:`Fanout.publish` sends given views instead (a new subscriber's starting state). A
subscriber whose calls keep failing (it died) is removed.

No Ray import: the actor hands in ``send(handle, updates)`` and ``view(ticker)``; the collector's
send goes over the subscriber's book link when it offers one (kalshiflow.collect.book_link), else
by ``on_books`` Ray call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from kalshiflow.cancellation import stop_tasks
from kalshiflow.collect.messages import BookTop
from kalshiflow.exchange.replay.events import RecTrade

__all__ = ["Fanout"]

log = logging.getLogger(__name__)

Send = Callable[[Any, list[BookTop]], Awaitable[object]]
View = Callable[[str], BookTop | None]
_MAX_FAILURES = 3
_MAX_TRADES = 10_000


class _Subscriber:
    __slots__ = ("handle", "tickers", "pending", "trades", "busy", "failures", "sent", "last_start")

    def __init__(self, handle: Any, tickers: frozenset[str] | None) -> None:
        self.handle = handle
        self.tickers = tickers  # None = every market of the collector
        # ticker -> the view to send, or None: build it when the call starts (the newest state).
        self.pending: dict[str, BookTop | None] = {}
        self.trades: dict[str, deque[RecTrade]] = {}  # ticker -> trades not sent yet, oldest first
        self.busy = False  # a call in flight, or the next one waiting for min_interval_s
        self.failures = 0
        self.sent = 0
        self.last_start = -1e18


class Fanout:
    def __init__(self, send: Send, view: View, *, min_interval_s: float = 0.0) -> None:
        self._send = send
        self._view = view
        self._min_interval = max(0.0, min_interval_s)
        # Public so the collector's per-frame callback can test "anyone listening?" without a call.
        self.subscribers: dict[Any, _Subscriber] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.removed = 0
        self.calls = 0
        self.trades_dropped = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self.subscribers)

    def add(self, handle: Any, tickers: Iterable[str] | None) -> bool:
        """Subscribe ``handle``; False (and nothing changes) if it already has exactly these markets."""
        wanted = None if tickers is None else frozenset(tickers)
        current = self.subscribers.get(handle)
        if current is not None and current.tickers == wanted:
            return False
        self.subscribers[handle] = _Subscriber(handle, wanted)
        return True

    def remove(self, handle: Any) -> bool:
        return self.subscribers.pop(handle, None) is not None

    def touch(self, tickers: Iterable[str], trades: Iterable[tuple[str, RecTrade]] = ()) -> None:
        """These markets changed (and these trades happened): each subscriber that wants them gets
        their views with its next call."""
        changed = dict.fromkeys(tickers)
        trades = list(trades)
        if not changed and not trades:
            return
        for sub in list(self.subscribers.values()):
            wanted = sub.tickers
            if wanted is None:
                sub.pending.update(changed)
            else:
                sub.pending.update((t, None) for t in changed if t in wanted)
            for ticker, trade in trades:
                if wanted is None or ticker in wanted:
                    queue = sub.trades.get(ticker)
                    if queue is None:
                        queue = sub.trades[ticker] = deque(maxlen=_MAX_TRADES)
                    elif len(queue) == _MAX_TRADES:
                        self.trades_dropped += 1  # the append below pushes the oldest out
                    queue.append(trade)
            if (sub.pending or sub.trades) and not sub.busy:
                self._start(sub)

    def publish(self, tops: dict[str, BookTop]) -> None:
        """Send these views (unless a newer change of the market comes first)."""
        for sub in list(self.subscribers.values()):
            if sub.tickers is None:
                sub.pending.update(tops)
            else:
                sub.pending.update((t, top) for t, top in tops.items() if t in sub.tickers)
            if (sub.pending or sub.trades) and not sub.busy:
                self._start(sub)

    def _start(self, sub: _Subscriber) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        wait = sub.last_start + self._min_interval - loop.time()
        if wait > 0:
            sub.busy = True
            loop.call_later(wait, self._resume, sub)
            return
        view = self._view
        pending, trades = sub.pending, sub.trades
        updates = [v for t, top in pending.items() if (v := view(t) if top is None else top) is not None]
        if trades:
            replace = msgspec.structs.replace
            for i, v in enumerate(updates):
                if (ts := trades.pop(v.ticker, None)) is not None:
                    updates[i] = replace(v, trades=tuple(ts))
            for t, ts in trades.items():  # trades alone: the book is as last sent
                if (v := view(t)) is not None:
                    updates.append(replace(v, trades=tuple(ts), book_changed=False))
            sub.trades = {}
        sub.pending = {}
        if not updates:
            sub.busy = False
            return
        sub.busy = True
        sub.last_start = loop.time()
        self.calls += 1
        task = loop.create_task(self._deliver(sub, updates))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resume(self, sub: _Subscriber) -> None:
        sub.busy = False
        if not self._closed and (sub.pending or sub.trades) and self.subscribers.get(sub.handle) is sub:
            self._start(sub)

    async def _deliver(self, sub: _Subscriber, updates: list[BookTop]) -> None:
        try:
            await self._send(sub.handle, updates)
            sub.failures = 0
            sub.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as err:
            sub.failures += 1
            if sub.failures >= _MAX_FAILURES and self.subscribers.get(sub.handle) is sub:
                log.warning("book subscriber %r removed after %d failed calls (%s)", sub.handle, sub.failures,
                            err)
                del self.subscribers[sub.handle]
                self.removed += 1
        finally:
            sub.busy = False
        # Changes that arrived during the call go out now: waiting for the next change would leave
        # a subscriber on a stale view for good once the market goes quiet.
        if (sub.pending or sub.trades) and self.subscribers.get(sub.handle) is sub:
            self._start(sub)

    async def close(self) -> None:
        self._closed = True
        await stop_tasks(list(self._tasks), timeout=5.0)
