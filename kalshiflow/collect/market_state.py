"""One collected market inside a shard: its book and its counters, and the views sent out of it."""

from __future__ import annotations

from kalshiflow.collect.messages import BookTop, MarketStats
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import PRICE_SCALE, PriceGrid
from kalshiflow.market.types import Side

__all__ = ["MarketState", "book_top"]

_YES, _NO = Side.YES, Side.NO


def book_top(
    book: OrderBook, epoch: int, seq: int, received_ts_ns: int, exchange_ts_ms: int | None
) -> BookTop:
    no_bid = book.best_bid(_NO)
    return BookTop(
        ticker=book.ticker, epoch=epoch, seq=seq, valid=not book.invalid,
        yes_bid=book.best_bid(_YES), yes_bid_size=book.best_bid_size(_YES),
        yes_ask=None if no_bid is None else PRICE_SCALE - no_bid, yes_ask_size=book.best_bid_size(_NO),
        received_ts_ns=received_ts_ns, exchange_ts_ms=exchange_ts_ms,
    )


class MarketState:
    """Mutable and owned by the shard (the hot path updates the slots directly); ``stats`` and
    ``top`` export immutable copies."""

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

    def top(self, epoch: int) -> BookTop:
        return book_top(self.book, epoch, self.last_seq or 0, self.last_recv_ns or 0, self.last_ts_ms)

    def stats(self) -> MarketStats:
        return MarketStats(
            ticker=self.book.ticker, active=self.active, valid=self.active and not self.book.invalid,
            deltas=self.deltas, snapshots=self.snapshots, trades=self.trades, gaps=self.gaps,
            book_errors=self.book_errors, last_seq=self.last_seq, last_received_ts_ns=self.last_recv_ns,
            lag_ms_mean=self.lag_sum / self.lag_n if self.lag_n else None, lag_ms_max=self.lag_max,
        )
