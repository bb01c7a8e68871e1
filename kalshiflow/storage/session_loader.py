"""Replay loader: one market of a recorded session, event by event, book by book.

:func:`iter_events` yields one market's recorded events in recorded order, exact integers
throughout; :func:`iter_books` also applies them to a :class:`~kalshiflow.market.book.OrderBook`.
Ordering: book events (snapshots, deltas, gaps) by (epoch, sid, seq): sids and seqs restart per
connection and a resubscription gets a higher sid. Trades come on their own subscription with
their own seq counter, so they are merged in by receive time (a tie goes to the book event).

**A gap means the book is invalid until the next snapshot.** Deltas between a gap and the next
snapshot are yielded (nothing is hidden) but not applied; the book's ``invalid`` flag is set.
A gap row is placed just before the seq it expected. A gap on a trade subscription (a gap row with
no tickers) is yielded, merged by time with the trades, with ``invalidates_book=False``: trades may
be missing, the book is fine. Entering a new
connection epoch whose first event is not a recorded gap yields a synthesized gap
(``recorded=False``), because the book is unknown between connections.

:func:`load_market_stream` adapts one market to the exchange simulator's ``RecordedMarketStream``
(kalshiflow.exchange.replay).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec

from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.replay.events import (
    InMemoryMarketStream,
    RecDelta,
    RecGap,
    RecordedEvent,
    RecSnapshot,
    RecTrade,
)
from kalshiflow.market.book import BookError, OrderBook
from kalshiflow.market.prices import GRIDS, LINEAR_CENT, PriceGrid, PriceRange
from kalshiflow.market.types import Side
from kalshiflow.storage.database import Database

__all__ = [
    "RecordedDelta",
    "RecordedGap",
    "RecordedSnapshot",
    "RecordedTrade",
    "ReplayMismatchError",
    "SessionEvent",
    "iter_books",
    "iter_events",
    "load_market_stream",
    "load_session_streams",
    "market_grid",
]

SessionId = uuid.UUID | str


def _sid(session_id: SessionId) -> uuid.UUID:
    return session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))


# ------------------------------------------------------------------ loader: events

Levels = tuple[tuple[int, int], ...]


class RecordedSnapshot(msgspec.Struct, frozen=True, kw_only=True, tag="snapshot"):
    ticker: str
    epoch: int
    sid: int
    seq: int
    received_ts_ns: int
    exchange_ts_ms: int | None
    yes: Levels  # (price ticks, qty hundredths), ascending price, as received
    no: Levels


class RecordedDelta(msgspec.Struct, frozen=True, kw_only=True, tag="delta"):
    ticker: str
    epoch: int
    sid: int
    seq: int
    received_ts_ns: int
    exchange_ts_ms: int | None
    side: Side
    price: int
    delta: int  # signed hundredths
    size_after: int | None  # the collector's level size after it (None: its book was invalid)
    client_order_id: str | None


class RecordedGap(msgspec.Struct, frozen=True, kw_only=True, tag="gap"):
    ticker: str
    epoch: int
    sid: int
    expected_seq: int
    received_seq: int
    received_ts_ns: int  # when it was detected
    recovered_at: datetime | None
    recovery_method: str | None
    invalidates_book: bool = True
    recorded: bool = True  # False: synthesized at a connection change


class RecordedTrade(msgspec.Struct, frozen=True, kw_only=True, tag="trade"):
    ticker: str
    trade_id: str
    epoch: int | None
    sid: int | None
    seq: int | None
    received_ts_ns: int
    exchange_ts_ms: int | None
    yes_price: int
    count: int
    taker_side: Side | None


SessionEvent = RecordedSnapshot | RecordedDelta | RecordedGap | RecordedTrade

# Book events in recorded order. A gap sorts just before the seq it expected (rank 0).
_BOOK_EVENTS = """
SELECT 1 AS kind, epoch, sid, seq AS k, 1 AS rank, seq, received_ts_ns, exchange_ts_ms,
       yes_price, yes_qty, no_price, no_qty, NULL::text AS side, NULL::int AS price,
       NULL::bigint AS delta, NULL::bigint AS size_after, NULL::text AS coid,
       NULL::bigint AS received_seq, NULL::timestamptz AS rec_at, NULL::text AS method
  FROM book_snapshots WHERE session_id = $1 AND ticker = $2
UNION ALL
SELECT 2, epoch, sid, seq, 1, seq, received_ts_ns, exchange_ts_ms, NULL, NULL, NULL, NULL, side, price,
       delta, size_after, client_order_id, NULL, NULL, NULL
  FROM book_deltas WHERE session_id = $1 AND ticker = $2
UNION ALL
SELECT 3, epoch, sid, expected_seq, 0, expected_seq,
       (extract(epoch FROM detected_at) * 1000000)::bigint * 1000, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, received_seq, recovered_at, recovery_method
  FROM gaps WHERE session_id = $1 AND $2 = ANY(tickers)
ORDER BY epoch, sid, k, rank
"""
# The tape: the market's trades, plus holes in a trade subscription it traded on (a gap row with
# no tickers invalidates no book), merged by receive / detection time.
_TAPE = """
SELECT 4 AS kind, trade_id, epoch, sid, seq, received_ts_ns, exchange_ts_ms, yes_price, count, taker_side,
       NULL::bigint AS received_seq, NULL::timestamptz AS rec_at, NULL::text AS method
  FROM public_trades WHERE session_id = $1 AND ticker = $2
UNION ALL
SELECT 3, NULL, g.epoch, g.sid, g.expected_seq, (extract(epoch FROM g.detected_at) * 1000000)::bigint * 1000,
       NULL, NULL, NULL, NULL, g.received_seq, g.recovered_at, g.recovery_method
  FROM gaps g
 WHERE g.session_id = $1 AND cardinality(g.tickers) = 0 AND EXISTS (
       SELECT 1 FROM public_trades t
        WHERE t.session_id = $1 AND t.ticker = $2 AND t.epoch = g.epoch AND t.sid = g.sid)
ORDER BY received_ts_ns, epoch, sid, seq, trade_id
"""


def _book_event(ticker: str, r: Any) -> RecordedSnapshot | RecordedDelta | RecordedGap:
    kind = r["kind"]
    if kind == 2:
        return RecordedDelta(
            ticker=ticker,
            epoch=r["epoch"],
            sid=r["sid"],
            seq=r["seq"],
            received_ts_ns=r["received_ts_ns"],
            exchange_ts_ms=r["exchange_ts_ms"],
            side=Side(r["side"]),
            price=r["price"],
            delta=r["delta"],
            size_after=r["size_after"],
            client_order_id=r["coid"],
        )
    if kind == 1:
        return RecordedSnapshot(
            ticker=ticker,
            epoch=r["epoch"],
            sid=r["sid"],
            seq=r["seq"],
            received_ts_ns=r["received_ts_ns"],
            exchange_ts_ms=r["exchange_ts_ms"],
            yes=tuple(zip(r["yes_price"], r["yes_qty"], strict=True)),
            no=tuple(zip(r["no_price"], r["no_qty"], strict=True)),
        )
    return _gap(ticker, r, invalidates_book=True)


def _gap(ticker: str, r: Any, *, invalidates_book: bool) -> RecordedGap:
    return RecordedGap(
        ticker=ticker,
        epoch=r["epoch"],
        sid=r["sid"],
        expected_seq=r["seq"],
        received_seq=r["received_seq"],
        received_ts_ns=r["received_ts_ns"],
        recovered_at=r["rec_at"],
        recovery_method=r["method"],
        invalidates_book=invalidates_book,
    )


def _tape_event(ticker: str, r: Any) -> RecordedTrade | RecordedGap:
    if r["kind"] == 3:
        return _gap(ticker, r, invalidates_book=False)  # a hole in the trade subscription
    side = r["taker_side"]
    return RecordedTrade(
        ticker=ticker,
        trade_id=r["trade_id"],
        epoch=r["epoch"],
        sid=r["sid"],
        seq=r["seq"],
        received_ts_ns=r["received_ts_ns"],
        exchange_ts_ms=r["exchange_ts_ms"],
        yes_price=r["yes_price"],
        count=r["count"],
        taker_side=None if side is None else Side(side),
    )


class _Tape:
    """The tape cursor (trades and trade-subscription gaps), read ahead one chunk at a time."""

    def __init__(self, cursor: Any, ticker: str, chunk: int) -> None:
        self.cursor, self.ticker, self.chunk = cursor, ticker, chunk
        self.buffer: deque[RecordedTrade | RecordedGap] = deque()
        self.done = cursor is None

    async def head(self) -> RecordedTrade | RecordedGap | None:
        if not self.buffer and not self.done:
            rows = await self.cursor.fetch(self.chunk)
            self.buffer.extend(_tape_event(self.ticker, r) for r in rows)
            self.done = len(rows) < self.chunk
        return self.buffer[0] if self.buffer else None


async def iter_events(
    db: Database, session_id: SessionId, ticker: str, *, trades: bool = True, chunk: int = 5000
) -> AsyncIterator[SessionEvent]:
    """One market's recorded events in recorded order (see the module doc), streamed."""
    sid = _sid(session_id)
    async with db.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        books = await conn.cursor(_BOOK_EVENTS, sid, ticker)
        tape = _Tape(await conn.cursor(_TAPE, sid, ticker) if trades else None, ticker, chunk)
        epoch: int | None = None
        while True:
            rows = await books.fetch(chunk)
            for row in rows:
                event = _book_event(ticker, row)
                while (
                    trade := await tape.head()
                ) is not None and trade.received_ts_ns < event.received_ts_ns:
                    yield tape.buffer.popleft()
                if (
                    epoch is not None
                    and event.epoch != epoch
                    and not (isinstance(event, RecordedGap) and event.invalidates_book)
                ):
                    yield RecordedGap(
                        ticker=ticker,
                        epoch=event.epoch,
                        sid=0,
                        expected_seq=0,
                        received_seq=0,
                        received_ts_ns=event.received_ts_ns,
                        recovered_at=None,
                        recovery_method="new connection",
                        recorded=False,
                    )
                epoch = event.epoch
                yield event
            if len(rows) < chunk:
                break
        while await tape.head() is not None:
            yield tape.buffer.popleft()


# ------------------------------------------------------------------ loader: books


class ReplayMismatchError(AssertionError):
    """The replayed book disagrees with the level size the collector recorded."""


async def market_grid(db: Database, ticker: str) -> PriceGrid:
    """The market's price grid from the ``markets`` table (linear cents when unknown)."""
    row = await db.fetchrow(
        "SELECT price_level_structure, price_ranges FROM markets WHERE ticker = $1", ticker
    )
    if row is None:
        return LINEAR_CENT
    if row["price_level_structure"] in GRIDS:
        return GRIDS[row["price_level_structure"]]
    if row["price_ranges"]:
        ranges = tuple(
            PriceRange(int(r["start"]), int(r["end"]), int(r["step"])) for r in row["price_ranges"]
        )
        return PriceGrid(row["price_level_structure"] or "custom", ranges)
    return LINEAR_CENT


async def iter_books(
    db: Database,
    session_id: SessionId,
    ticker: str,
    *,
    grid: PriceGrid | None = None,
    verify: bool = True,
    trades: bool = True,
) -> AsyncIterator[tuple[SessionEvent, OrderBook]]:
    """(event, book after it) for every event of :func:`iter_events`.

    The SAME book object is yielded each time (copy it to keep a state). It is invalid until the
    first snapshot and after every gap until the next snapshot; deltas meanwhile are not applied.
    ``verify``: check each applied delta against the recorded ``size_after`` (ReplayMismatchError)."""
    book = OrderBook(ticker, grid or await market_grid(db, ticker))
    book.invalidate("no snapshot yet")
    async for event in iter_events(db, session_id, ticker, trades=trades):
        if isinstance(event, RecordedDelta):
            if not book.invalid:
                try:
                    size = book.apply_delta(event.side, event.price, event.delta)
                except BookError as err:  # the collector's book refused it too: invalid until a snapshot
                    book.invalidate(f"book error at seq {event.seq}: {err}")
                    size = None
                if verify and event.size_after is not None and size != event.size_after:
                    raise ReplayMismatchError(
                        f"{ticker} epoch {event.epoch} sid {event.sid} seq {event.seq}: replayed"
                        f" size {size}, recorded {event.size_after}"
                    )
            elif verify and event.size_after is not None:
                raise ReplayMismatchError(
                    f"{ticker} seq {event.seq}: the collector's book was valid, ours is not"
                    f" ({book.invalid_reason})"
                )
        elif isinstance(event, RecordedSnapshot):
            try:
                book.apply_snapshot(event.yes, event.no)
            except BookError as err:
                book.invalidate(f"bad snapshot at seq {event.seq}: {err}")
        elif isinstance(event, RecordedGap) and event.invalidates_book:
            book.invalidate(
                f"gap: expected seq {event.expected_seq} on sid {event.sid} (epoch {event.epoch})"
            )
        yield event, book


async def load_market_stream(db: Database, session_id: SessionId, ticker: str) -> InMemoryMarketStream:
    """The market as the exchange simulator's ``RecordedMarketStream`` (kalshiflow.exchange.replay).

    Events are renumbered 1..N in recorded order (replay wants one increasing ``seq`` per market;
    recorded seqs restart per connection and trades have their own); ``ts`` is the exchange time
    when recorded, else the receive time. Trades without a taker side are left out (replay needs
    it; Kalshi always sends it)."""
    row = await db.fetchrow(
        "SELECT event_ticker, series_ticker, title, price_level_structure FROM markets WHERE ticker = $1",
        ticker,
    )
    known = dict(row) if row is not None else {}
    info = MarketInfo(
        ticker=ticker,
        event_ticker=known.get("event_ticker") or ticker,
        series_ticker=known.get("series_ticker") or "",
        title=known.get("title") or ticker,
        open_time=0.0,
        close_time=0.0,
        price_level_structure=known.get("price_level_structure") or "linear_cent",
    )
    events: list[RecordedEvent] = []
    async for ev in iter_events(db, session_id, ticker):
        ts = ev.received_ts_ns / 1e9
        if not isinstance(ev, RecordedGap) and ev.exchange_ts_ms is not None:
            ts = ev.exchange_ts_ms / 1000.0
        n = len(events) + 1
        if isinstance(ev, RecordedSnapshot):
            events.append(RecSnapshot(seq=n, ts=ts, yes=ev.yes, no=ev.no))
        elif isinstance(ev, RecordedDelta):
            events.append(RecDelta(seq=n, ts=ts, side=ev.side, price=ev.price, delta=ev.delta))
        elif isinstance(ev, RecordedGap):
            if ev.invalidates_book:
                events.append(
                    RecGap(seq=n, ts=ts, reason=f"epoch {ev.epoch} sid {ev.sid} expected {ev.expected_seq}")
                )
        elif ev.taker_side is not None:
            events.append(
                RecTrade(seq=n, ts=ts, yes_price=ev.yes_price, count=ev.count, taker_side=ev.taker_side)
            )
    return InMemoryMarketStream(info, events)


async def load_session_streams(db: Database, session_id: SessionId) -> list[InMemoryMarketStream]:
    """Every market of a session as recorded streams, for the simulator's ``--replay``."""
    from kalshiflow.storage.sessions import session_tickers  # sessions imports this module

    tickers = await session_tickers(db, session_id)
    return [await load_market_stream(db, session_id, ticker) for ticker in tickers]
