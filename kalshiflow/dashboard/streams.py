"""Streams sent as a snapshot then diffs (book ladder, PnL history), and capped histories.

The prior UI re-sent every whole book on every change (prior-system-lessons.md §5.2); here a
client gets one snapshot of the market it selected, then only changed levels, at most once per
interval. Diffs carry a per-ticker ``seq``: a client that sees a gap ignores diffs until its next
snapshot (the server sends one after any drop for that client: see hub.Outbox).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from kalshiflow.dashboard.messages import Book, Level, PnlHistory, PnlPoint
from kalshiflow.market.prices import PRICE_SCALE, format_price, format_qty

__all__ = ["LadderStream", "PnlTracker", "ladder_from_levels", "ladder_diff"]

Ladder = dict[str, str]  # price -> contracts (one side)
RawLevel = tuple[int, int]  # (price ticks, size in hundredths of a contract), as collectors hold them

REMOVED = format_qty(0)


def ladder_from_levels(yes: Iterable[RawLevel], no: Iterable[RawLevel], depth: int) -> tuple[Ladder, Ladder]:
    """(YES bids, YES asks) from a collector's bid levels: a NO bid at p is a YES ask at 1 - p.
    At most ``depth`` levels per side, nearest the touch."""
    bids = sorted(((p, q) for p, q in yes if q > 0), key=lambda lv: -lv[0])[:depth]
    asks = sorted(((PRICE_SCALE - p, q) for p, q in no if q > 0), key=lambda lv: lv[0])[:depth]
    return (
        {format_price(p): format_qty(q) for p, q in bids},
        {format_price(p): format_qty(q) for p, q in asks},
    )


def ladder_diff(old: Ladder, new: Ladder) -> list[Level]:
    """Levels that changed, appeared or vanished (size "0.00")."""
    out: list[Level] = [(p, q) for p, q in new.items() if old.get(p) != q]
    out += [(p, REMOVED) for p in old if p not in new]
    return out


def _sorted(side: Ladder, descending: bool) -> list[Level]:
    return sorted(side.items(), key=lambda lv: float(lv[0]), reverse=descending)


class LadderStream:
    """One market's ladder as the dashboard last sent it."""

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self.seq = 0
        self.valid: bool | None = None
        self.bids: Ladder = {}
        self.asks: Ladder = {}
        self.ts = 0.0

    def update(self, valid: bool | None, bids: Ladder, asks: Ladder, ts: float) -> Book | None:
        """Take the current ladder; return the diff message, or None when nothing changed."""
        db, da = ladder_diff(self.bids, bids), ladder_diff(self.asks, asks)
        if not db and not da and valid == self.valid and self.seq:
            return None
        self.seq += 1
        self.valid, self.bids, self.asks, self.ts = valid, bids, asks, ts
        return Book(ticker=self.ticker, seq=self.seq, snapshot=False, valid=valid, bids=db, asks=da, ts=ts)

    def snapshot(self) -> Book:
        return Book(
            ticker=self.ticker,
            seq=self.seq,
            snapshot=True,
            valid=self.valid,
            bids=_sorted(self.bids, descending=True),
            asks=_sorted(self.asks, descending=False),
            ts=self.ts,
        )


class PnlTracker:
    """Portfolio value sampled once per interval; the newest ``cap`` points are kept."""

    def __init__(self, cap: int = 3600) -> None:
        self.points: deque[PnlPoint] = deque(maxlen=cap)
        self.start_value: float | None = None

    def append(self, ts: float, value: float) -> PnlHistory:
        if self.start_value is None:
            self.start_value = value
        point: PnlPoint = (ts, value, round(value - self.start_value, 6))
        self.points.append(point)
        return PnlHistory(snapshot=False, start_value=self.start_value, points=[point])

    def snapshot(self) -> PnlHistory:
        return PnlHistory(snapshot=True, start_value=self.start_value, points=list(self.points))
