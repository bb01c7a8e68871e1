"""One collected market inside a shard: its book and its counters (its views: collect.tops)."""

from __future__ import annotations

from kalshiflow.collect.messages import MarketStats
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import PriceGrid

__all__ = ["MarketState"]


class MarketState:
    """Mutable and owned by the shard (the hot path updates the slots directly); ``stats``
    exports an immutable copy."""

    __slots__ = (
        "book", "active", "deltas", "snapshots", "trades", "gaps", "book_errors", "last_seq",
        "last_recv_ns", "last_ts_ms", "lag_sum", "lag_n", "lag_max",
    )

    def __init__(self, ticker: str, grid: PriceGrid) -> None:
        self.book = OrderBook(ticker, grid)
        self.book.invalidate("awaiting first snapshot")
        self.active = True
        self.deltas = self.snapshots = self.trades = self.gaps = self.book_errors = 0
        self.last_seq: int | None = None
        self.last_recv_ns: int | None = None
        self.last_ts_ms: int | None = None
        self.lag_sum = self.lag_n = 0  # receive ms - exchange ts_ms, summed over deltas
        self.lag_max: int | None = None

    def stats(self) -> MarketStats:
        return MarketStats(
            ticker=self.book.ticker, active=self.active, valid=self.active and not self.book.invalid,
            deltas=self.deltas, snapshots=self.snapshots, trades=self.trades, gaps=self.gaps,
            book_errors=self.book_errors, last_seq=self.last_seq, last_received_ts_ns=self.last_recv_ns,
            lag_ms_mean=self.lag_sum / self.lag_n if self.lag_n else None, lag_ms_max=self.lag_max,
        )
