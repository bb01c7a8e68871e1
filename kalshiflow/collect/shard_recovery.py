"""Gap recovery of a collector shard (``ShardState``): a seq hole, a frame a book refused, or a
server ending a subscription invalidates books, records a gap row and asks the actor for
snapshots or a re-subscribe. Plain functions of the shard, bound by it as methods.

Gap rows: one per hole, plus one per new connection after the first (sid 0, expected/received
0: everything between the two connections is unknown). Each is written when the gap opens and
again when it closes -- every invalidated book has its snapshot again (``recovered_at`` and
``recovery_method`` set), or the connection ended first (``recovered_at`` NULL); the WriteQueue
fills the end columns in. The hole is visible in the recorded seqs either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kalshiflow.collect import rows as R
from kalshiflow.collect.market_state import MarketState
from kalshiflow.collect.recovery import ORDERBOOK, OpenGap, Request
from kalshiflow.protocol import ws_commands as wc

if TYPE_CHECKING:
    from kalshiflow.collect.shard_state import ShardState

__all__ = ["on_error", "on_gap", "book_error", "open_gap", "resolved"]


def on_error(self: ShardState, frame: wc.ErrorReply, recv_ns: int) -> None:
    """Command errors are the actor's business (its command raised); a TERMINAL error on a sid
    means the server dropped that subscription (e.g. 25: we were too slow) -- re-create it."""
    self.n["command_errors"] += 1
    sid = frame.sid
    if sid is None or frame.msg.code not in wc.TERMINAL_ERROR_CODES:
        return
    channel = self._channel_of.pop(sid, ORDERBOOK)
    reason = f"server ended sid {sid} ({channel}): error {frame.msg.code} {frame.msg.msg}"
    tickers = self._book_tickers.pop(sid, set()) if channel == ORDERBOOK else set()
    last = self._seq.last(sid) or 0
    self._seq.forget(sid)
    self.n["gaps"] += 1
    gap = OpenGap(sid, last + 1, 0, recv_ns, (), "resync")
    if channel != ORDERBOOK:
        # Nothing to re-snapshot: what the channel sent meanwhile is gone; record it, re-subscribe.
        self._rows["gaps"].append(R.gap_row(self, gap, None, "resync"))
        self._recovery.requests.append(Request("resync", (), reason, channel))
        return
    tickers = tickers or set(self.tickers)
    for ticker in tickers:
        self._markets[ticker].book.invalidate(reason)
        self._markets[ticker].gaps += 1
        self._changed.add(ticker)
    gap = OpenGap(sid, last + 1, 0, recv_ns, tickers, "resync")
    self._open_gap(gap, "resync", reason, channel)


def on_gap(self: ShardState, sid: int, recv_ns: int) -> None:
    expected, received = self._seq.gap
    self.n["gaps"] += 1
    if self._channel_of.get(sid, ORDERBOOK) != ORDERBOOK:
        # Trade / lifecycle channels have no snapshot to recover with: record the hole only.
        gap = OpenGap(sid, expected, received, recv_ns, (), "none")
        self._rows["gaps"].append(R.gap_row(self, gap, None, "none"))
        return
    tickers = self._book_tickers.get(sid)
    if not tickers:
        tickers = set(self.tickers)
    reason = f"gap on sid {sid}: expected seq {expected}, got {received}"
    for ticker in tickers:
        m = self._markets[ticker]
        m.book.invalidate(reason)
        m.gaps += 1
        self._changed.add(ticker)
    gap = OpenGap(sid, expected, received, recv_ns, tickers, "get_snapshot")
    self._open_gap(gap, "get_snapshot", reason)


def book_error(self: ShardState, m: MarketState, sid: int, seq: int, recv_ns: int, reason: str) -> None:
    """A frame the book refused: it no longer mirrors the exchange; re-snapshot that market."""
    self.n["book_errors"] += 1
    m.book_errors += 1
    ticker = m.book.ticker
    m.book.invalidate(reason)
    self._changed.add(ticker)
    if self._recovery.has(sid, seq):
        return
    # Recorded like a gap at this seq (expected == received): the stream had no hole, the book did.
    self._open_gap(OpenGap(sid, seq, seq, recv_ns, (ticker,), "get_snapshot"), "get_snapshot",
                   f"book error at seq {seq}: {reason}")


def open_gap(self: ShardState, gap: OpenGap, request: Literal["get_snapshot", "resync"] | None, reason: str,
             channel: str = ORDERBOOK) -> None:
    self._rows["gaps"].append(R.gap_row(self, gap, None, None))
    self._recovery.open_gap(gap, request, reason, channel)


def resolved(self: ShardState, ticker: str, now_ns: int) -> None:
    for gap in self._recovery.resolve(ticker):
        self._rows["gaps"].append(R.gap_row(self, gap, now_ns, gap.method))
