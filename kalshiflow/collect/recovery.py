"""Open gaps and the wire requests that repair them (the recovery half of the shard's core).

A gap is "open" from the moment books are invalidated (a seq hole, a book that refused a frame,
a subscription the server ended, a new connection) until every one of those books has been
replaced by a fresh snapshot. Requests ask the actor to act on the wire:

- ``get_snapshot``: ``update_subscription`` ``get_snapshot`` for the invalidated markets, on the
  same sid (seq continues). Kalshi's plain re-subscribe would send NO snapshot (§1.8 S3).
- ``resync``: unsubscribe + subscribe: a new sid, seq from 1, fresh snapshots for every market.
- ``reconnect``: drop the connection; the next one is a new epoch with fresh snapshots.
- ``drop``: stop collecting markets that closed.

Escalation when snapshots do not come: get_snapshot is asked twice, then resync, then reconnect
(see :meth:`Recovery.check`). Pure code; times are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

__all__ = ["ORDERBOOK", "OpenGap", "Recovery", "Request"]

ORDERBOOK = "orderbook_delta"
_SNAPSHOT_ATTEMPTS = 2


class Request(msgspec.Struct, frozen=True):
    """Something the actor must do on the wire for the state to make progress."""

    kind: Literal["get_snapshot", "resync", "reconnect", "drop"]
    tickers: tuple[str, ...]
    reason: str
    channel: str = ORDERBOOK  # resync: which subscription to re-create


class OpenGap:
    """One gap row in the making. ``sid`` 0 with expected = received = 0 marks a new connection."""

    __slots__ = ("sid", "expected", "received", "detected_ns", "tickers", "waiting", "method", "attempts",
                 "requested_ns")

    def __init__(
        self, sid: int, expected: int, received: int, now_ns: int, tickers: Iterable[str], method: str
    ) -> None:
        self.sid, self.expected, self.received, self.detected_ns = sid, expected, received, now_ns
        self.tickers = tuple(sorted(tickers))
        self.waiting = set(self.tickers)
        self.method = method  # how it is being repaired: get_snapshot | resync | reconnect | ...
        self.attempts = 1
        self.requested_ns = now_ns


class Recovery:
    def __init__(self) -> None:
        self.open: list[OpenGap] = []
        self.requests: list[Request] = []
        self.snapshot_requests = 0
        self.resyncs = 0

    def open_gap(self, gap: OpenGap, request: Literal["get_snapshot", "resync"] | None, reason: str,
                 channel: str = ORDERBOOK) -> None:
        self.open.append(gap)
        if request == "get_snapshot":
            self.ask_snapshots(gap.tickers, reason)
        elif request == "resync":
            self.resyncs += 1
            self.requests.append(Request("resync", gap.tickers, reason, channel))

    def has(self, sid: int, expected: int) -> bool:
        return any(g.sid == sid and g.expected == expected for g in self.open)

    def ask_snapshots(self, tickers: Iterable[str], reason: str) -> None:
        self.snapshot_requests += 1
        self.requests.append(Request("get_snapshot", tuple(sorted(tickers)), reason))

    def resolve(self, ticker: str) -> list[OpenGap]:
        """``ticker`` has a fresh book (or left): the gaps that waited only for it are closed."""
        if not self.open:
            return []
        done: list[OpenGap] = []
        still: list[OpenGap] = []
        for gap in self.open:
            gap.waiting.discard(ticker)
            (still if gap.waiting else done).append(gap)
        self.open = still
        return done

    def close_all(self) -> list[OpenGap]:
        """The connection ended: every open gap is closed unrepaired."""
        out, self.open = self.open, []
        return out

    def check(self, now_ns: int, timeout_ns: int) -> None:
        """Escalate gaps whose snapshots did not arrive within ``timeout_ns`` of the last request."""
        for gap in self.open:
            if not gap.waiting or now_ns - gap.requested_ns < timeout_ns:
                continue
            gap.requested_ns = now_ns
            gap.attempts += 1
            waiting = tuple(sorted(gap.waiting))
            reason = f"no snapshot {timeout_ns / 1e9:.1f}s after request {gap.attempts - 1}"
            if gap.attempts <= _SNAPSHOT_ATTEMPTS and gap.sid:
                self.ask_snapshots(waiting, reason)
            elif gap.attempts <= _SNAPSHOT_ATTEMPTS + 1:
                gap.method = "resync"
                self.resyncs += 1
                self.requests.append(Request("resync", waiting, reason))
            else:
                gap.method = "reconnect"
                self.requests.append(Request("reconnect", waiting, reason))
                return  # the reconnect ends the epoch and every open gap with it

    def take(self) -> list[Request]:
        out, self.requests = self.requests, []
        return out
