"""The book views a collector publishes to its subscribers (``on_books``): top of book + best levels.

A subscriber (the Trader) rebuilds each market's book from these views and computes the training
observation on it, which reads the best :data:`PUBLISHED_DEPTH` levels of each ladder
(kalshiflow.rl.features.DEPTH_LEVELS: top-1/3/5 sizes, and the mark price behind own resting
orders). Carrying them here saves the subscriber a Ray call to the collector before every
decision, and the levels are exactly the book the top was read from (same frame, same seq).
"""

from __future__ import annotations

from kalshiflow.collect.market_state import MarketState
from kalshiflow.collect.messages import BookTop
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import PRICE_SCALE
from kalshiflow.market.types import Side
from kalshiflow.rl.features import DEPTH_LEVELS

__all__ = ["PUBLISHED_DEPTH", "book_view", "market_view"]

# Imported, not copied: the depth published can never fall behind what the features read.
PUBLISHED_DEPTH = DEPTH_LEVELS
_YES, _NO = Side.YES, Side.NO


def book_view(book: OrderBook, epoch: int, seq: int, received_ts_ns: int, exchange_ts_ms: int | None,
              depth: int = PUBLISHED_DEPTH) -> BookTop:
    """The view of ``book`` now: top of book, and its best ``depth`` levels a side while valid (an
    invalid book's ladders are not the exchange's: none are sent, and readers must not trade)."""
    if book.invalid or depth <= 0:
        no_bid = book.best_bid(_NO)
        return BookTop(
            ticker=book.ticker, epoch=epoch, seq=seq, valid=not book.invalid,
            yes_bid=book.best_bid(_YES), yes_bid_size=book.best_bid_size(_YES),
            yes_ask=None if no_bid is None else PRICE_SCALE - no_bid, yes_ask_size=book.best_bid_size(_NO),
            received_ts_ns=received_ts_ns, exchange_ts_ms=exchange_ts_ms,
        )
    yes = tuple(book.depth(_YES, depth))
    no = tuple(book.depth(_NO, depth))
    return BookTop(
        ticker=book.ticker, epoch=epoch, seq=seq, valid=True,
        yes_bid=yes[0][0] if yes else None, yes_bid_size=yes[0][1] if yes else 0,
        yes_ask=PRICE_SCALE - no[0][0] if no else None, yes_ask_size=no[0][1] if no else 0,
        received_ts_ns=received_ts_ns, exchange_ts_ms=exchange_ts_ms, depth=depth, yes_bids=yes, no_bids=no,
    )


def market_view(m: MarketState, epoch: int, depth: int = PUBLISHED_DEPTH) -> BookTop:
    """The view of one collected market after the latest frame applied to it."""
    return book_view(m.book, epoch, m.last_seq or 0, m.last_recv_ns or 0, m.last_ts_ms, depth)
