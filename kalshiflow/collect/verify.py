"""Checks of a recorded session against what the exchange sent (tests and the ingest benchmark).

- :func:`sent_deltas`: a :class:`~kalshiflow.collect.testing.FaultProxy` record -> per connection,
  the set of (sid, seq, ticker, side, price, delta) the client was sent.
- :func:`recorded_deltas`: the same per epoch, from ``book_deltas``.
- :func:`match_epochs`: pairs each connection with the epoch that recorded it.
- :func:`replay_books`: each market's final book, replayed from the session's rows by the
  storage loader.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from kalshiflow.collect.testing import Sent
from kalshiflow.market.book import OrderBook
from kalshiflow.protocol.market_data import OrderbookDelta, OrderbookFrameDecoder

__all__ = ["DeltaKey", "match_epochs", "recorded_deltas", "replay_books", "sent_deltas"]

DeltaKey = tuple[int, int, str, str, int, int]  # sid, seq, ticker, side, price, delta


def delta_key(decoder: OrderbookFrameDecoder, data: bytes) -> DeltaKey | None:
    frame = decoder.decode(data)
    if not isinstance(frame, OrderbookDelta):
        return None
    side, price, qty = decoder.delta_update(frame.msg)
    return (frame.sid, frame.seq, frame.msg.market_ticker, side.value, price, qty)


def sent_deltas(connections: Sequence[Sequence[Sent]]) -> list[set[DeltaKey]]:
    decoder = OrderbookFrameDecoder()
    out: list[set[DeltaKey]] = []
    for frames in connections:
        keys = {delta_key(decoder, f.data) for f in frames if f.type == "orderbook_delta"}
        keys.discard(None)
        out.append(keys)  # type: ignore[arg-type]
    return out


async def recorded_deltas(db: Any, session_id: str) -> dict[int, set[DeltaKey]]:
    """epoch -> its delta keys. The primary key already makes each (epoch, sid, seq) unique."""
    rows = await db.fetch(
        "SELECT epoch, sid, seq, ticker, side, price, delta FROM book_deltas WHERE session_id = $1",
        uuid.UUID(session_id),
    )
    out: dict[int, set[DeltaKey]] = defaultdict(set)
    for r in rows:
        out[r["epoch"]].add((r["sid"], r["seq"], r["ticker"], r["side"], r["price"], r["delta"]))
    return dict(out)


def match_epochs(sent: Sequence[set[DeltaKey]], recorded: dict[int, set[DeltaKey]]) -> list[int | None]:
    """For each connection, the epoch sharing most of its deltas (None if none shares any)."""
    out: list[int | None] = []
    for keys in sent:
        best = max(recorded, key=lambda e: len(recorded[e] & keys), default=None)
        out.append(best if best is not None and recorded[best] & keys else None)
    return out


async def replay_books(db: Any, session_id: str, tickers: Iterable[str]) -> dict[str, OrderBook]:
    """Each market's book at the end of the session, replayed by the storage loader
    (:func:`kalshiflow.storage.sessions.iter_books`, which also checks every applied delta
    against the ``size_after`` the collector recorded)."""
    from kalshiflow.storage.sessions import iter_books

    out: dict[str, OrderBook] = {}
    for ticker in tickers:
        last: OrderBook | None = None
        async for _, book in iter_books(db, session_id, ticker, verify=True, trades=False):
            last = book
        out[ticker] = last.copy() if last is not None else OrderBook(ticker)
    return out
