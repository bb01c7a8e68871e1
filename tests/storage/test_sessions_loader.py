"""The replay loader rebuilds, seq by seq, exactly the books the collector saw; gaps are explicit.

A recorder here plays the collector: it keeps real OrderBooks for two markets on one order-book
subscription, records snapshot / delta / gap / trade rows exactly as the collector does
(``size_after`` from its own book, NULL while the book is invalid), and notes what market T's book
looked like after every event that concerns T. The loader must reproduce that list.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from kalshiflow.exchange.replay import (
    InMemoryMarketStream,
    RecDelta,
    RecGap,
    RecordedMarketStream,
    RecSnapshot,
    RecTrade,
)
from kalshiflow.market.book import OrderBook
from kalshiflow.market.types import Side
from kalshiflow.storage import Database
from kalshiflow.storage.sessions import (
    RecordedDelta,
    RecordedGap,
    RecordedSnapshot,
    RecordedTrade,
    ReplayMismatchError,
    iter_books,
    iter_events,
    load_market_stream,
    start_session,
)

T, U = "KXTEST-26JUN24-T", "KXTEST-26JUN24-U"
BOOK_SID, TRADE_SID = 1, 2


class Recorder:
    def __init__(self, session: uuid.UUID) -> None:
        self.session = session
        self.rng = random.Random(11)
        self.books = {t: OrderBook(t) for t in (T, U)}
        self.rows: dict[str, list[tuple[Any, ...]]] = {
            "book_snapshots": [],
            "book_deltas": [],
            "gaps": [],
            "public_trades": [],
        }
        self.expected: list[tuple[Any, ...]] = []  # what T's replay must show, in order
        self.epoch = 1
        self.seq = {BOOK_SID: 0, TRADE_SID: 0}
        self.now_ns = 1_782_316_195_000_000_000
        for book in self.books.values():
            book.invalidate("no snapshot yet")

    def _tick(self) -> int:
        self.now_ns += 1_000_000  # whole microseconds, so gap times (TIMESTAMPTZ) stay exact
        return self.now_ns

    def _note(self, kind: str, key: Any) -> None:
        b = self.books[T]
        self.expected.append((kind, self.epoch, key, b.levels(Side.YES), b.levels(Side.NO), b.invalid))

    def snapshot(self, ticker: str) -> None:
        self.seq[BOOK_SID] += 1
        yes = sorted({100 * self.rng.randint(1, 45): 100 * self.rng.randint(1, 50) for _ in range(5)}.items())
        no = sorted({100 * self.rng.randint(1, 45): 100 * self.rng.randint(1, 50) for _ in range(5)}.items())
        self.books[ticker].apply_snapshot(yes, no)
        self.rows["book_snapshots"].append(
            (
                self.session,
                self.seq[BOOK_SID],
                self._tick(),
                None,
                self.epoch,
                BOOK_SID,
                ticker,
                [p for p, _ in yes],
                [q for _, q in yes],
                [p for p, _ in no],
                [q for _, q in no],
            )
        )
        if ticker == T:
            self._note("RecordedSnapshot", self.seq[BOOK_SID])

    def delta(self, ticker: str) -> None:
        self.seq[BOOK_SID] += 1
        book = self.books[ticker]
        side = self.rng.choice((Side.YES, Side.NO))
        levels = book.levels(side)
        if levels and self.rng.random() < 0.5:
            price, size = self.rng.choice(levels)
            delta = -self.rng.randint(1, size)
        else:
            price, delta = 100 * self.rng.randint(1, 45), 100 * self.rng.randint(1, 30)
        size_after = None if book.invalid else book.apply_delta(side, price, delta)
        self.rows["book_deltas"].append(
            (
                self.session,
                self.seq[BOOK_SID],
                self._tick(),
                self.now_ns // 1_000_000,
                delta,
                size_after,
                self.epoch,
                BOOK_SID,
                price,
                side.value,
                ticker,
                None,
            )
        )
        if ticker == T:
            self._note("RecordedDelta", self.seq[BOOK_SID])

    def trade(self, ticker: str, trade_id: str) -> None:
        self.seq[TRADE_SID] += 1
        self.rows["public_trades"].append(
            (
                self.session,
                trade_id,
                self._tick(),
                None,
                500,
                4200,
                self.epoch,
                TRADE_SID,
                self.seq[TRADE_SID],
                ticker,
                "yes",
            )
        )
        if ticker == T:
            self._note("RecordedTrade", trade_id)

    def book_gap(self, skipped: int) -> None:
        """Messages seq+1 .. seq+skipped never arrived; the next one revealed the hole."""
        expected = self.seq[BOOK_SID] + 1
        self.seq[BOOK_SID] += skipped
        detected = self.now_ns + 1_000_000  # the time of the message that reveals it (next _tick)
        self.rows["gaps"].append(
            (
                self.session,
                self.epoch,
                BOOK_SID,
                expected,
                expected + skipped,
                _ts(detected),
                [T, U],
                None,
                "get_snapshot",
            )
        )
        for book in self.books.values():
            book.invalidate("gap")
        self._note("RecordedGap", expected)

    def trade_gap(self) -> None:
        expected = self.seq[TRADE_SID] + 1
        self.seq[TRADE_SID] += 2
        self.rows["gaps"].append(
            (self.session, self.epoch, TRADE_SID, expected, expected + 2, _ts(self._tick()), [], None, "none")
        )
        self._note("RecordedGap", expected)  # shown, but the book stays as it is

    def reconnect(self, *, record_gap: bool) -> None:
        self.epoch += 1
        self.seq = {BOOK_SID: 0, TRADE_SID: 0}
        for book in self.books.values():
            book.invalidate("new connection")
        if record_gap:  # what the collector writes for a reconnect: sid 0, expected 0, every ticker
            self.rows["gaps"].append(
                (self.session, self.epoch, 0, 0, 0, _ts(self._tick()), [T, U], None, "reconnect")
            )
        self._note("RecordedGap", 0)  # recorded, or synthesized by the loader


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC)


def record_session(session: uuid.UUID) -> Recorder:
    r = Recorder(session)
    r.snapshot(T)
    r.snapshot(U)
    for i in range(30):
        r.delta(T if i % 3 else U)
        if i % 7 == 0:
            r.trade(T if i % 2 else U, f"t{i}")
    r.trade_gap()
    r.trade(T, "t-after-trade-gap")
    r.book_gap(3)
    for i in range(6):  # recorded while the books are invalid: kept, not applied
        r.delta(T if i % 2 else U)
    r.snapshot(T)
    r.snapshot(U)
    for _ in range(10):
        r.delta(T)
    r.reconnect(record_gap=True)
    r.snapshot(T)
    for _ in range(5):
        r.delta(T)
    r.reconnect(record_gap=False)
    r.snapshot(T)
    for _ in range(5):
        r.delta(T)
    r.trade(T, "t-last")
    return r


async def store(db: Database, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    for table, table_rows in rows.items():
        shuffled = list(table_rows)
        random.Random(5).shuffle(shuffled)  # stored order must not matter
        await db.copy_insert(table, shuffled)


def observed(event: Any, book: OrderBook) -> tuple[Any, ...]:
    key = (
        event.trade_id
        if isinstance(event, RecordedTrade)
        else (event.expected_seq if isinstance(event, RecordedGap) else event.seq)
    )
    return (type(event).__name__, event.epoch, key, book.levels(Side.YES), book.levels(Side.NO), book.invalid)


async def test_loader_reproduces_the_books_seq_by_seq_with_gaps_explicit(db: Database) -> None:
    session = await start_session(db, "simulator", [T, U], {})
    recorder = record_session(session)
    await store(db, recorder.rows)

    replay = [observed(event, book) async for event, book in iter_books(db, session, T)]
    assert replay == recorder.expected
    events = [e async for e in iter_events(db, session, T)]
    gaps = [e for e in events if isinstance(e, RecordedGap)]
    assert [(g.sid, g.invalidates_book, g.recorded) for g in gaps] == [
        (TRADE_SID, False, True),
        (BOOK_SID, True, True),
        (0, True, True),
        (0, True, False),
    ]
    # deltas recorded while the book was invalid are yielded, with the collector's NULL size_after
    invalid_deltas = [e for e in events if isinstance(e, RecordedDelta) and e.size_after is None]
    assert len(invalid_deltas) == 3 and all(e.ticker == T for e in events)
    assert isinstance(events[0], RecordedSnapshot) and events[0].yes == tuple(
        zip(recorder.rows["book_snapshots"][0][7], recorder.rows["book_snapshots"][0][8], strict=True)
    )


async def test_replay_refuses_a_book_that_disagrees_with_the_recording(db: Database) -> None:
    session = await start_session(db, "simulator", [T], {})
    recorder = Recorder(session)
    recorder.snapshot(T)
    for _ in range(5):
        recorder.delta(T)
    row = recorder.rows["book_deltas"][2]
    recorder.rows["book_deltas"][2] = row[:5] + (row[5] + 1,) + row[6:]  # tamper with size_after
    await store(db, recorder.rows)
    with pytest.raises(ReplayMismatchError, match="recorded"):
        async for _ in iter_books(db, session, T):
            pass
    assert len([e async for e, _ in iter_books(db, session, T, verify=False)]) == 6


async def test_a_market_as_the_simulators_recorded_stream(db: Database) -> None:
    session = await start_session(db, "simulator", [T, U], {})
    recorder = record_session(session)
    await store(db, recorder.rows)
    stream = await load_market_stream(db, session, T)
    assert isinstance(stream, RecordedMarketStream) and isinstance(stream, InMemoryMarketStream)
    kinds = [type(e) for e in stream]
    names = {
        RecSnapshot: "RecordedSnapshot",
        RecDelta: "RecordedDelta",
        RecTrade: "RecordedTrade",
        RecGap: "RecordedGap",
    }
    # every event but the trade-subscription gap (it does not invalidate the book), renumbered 1..N
    expected = [e[0] for e in recorder.expected]
    expected.remove("RecordedGap")
    assert [names[k] for k in kinds] == expected
    assert [e.seq for e in stream] == list(range(1, len(expected) + 1))
    assert stream.market.ticker == T


async def test_simulator_replays_a_recorded_session_to_the_recorded_books(db: Database) -> None:
    # The `--replay SESSION_ID` path: the database loader feeds the simulator's replayer, and the
    # exchange ends on exactly the books the collector recorded.
    from kalshiflow.config import SimulatorConfig
    from kalshiflow.exchange.embedded import run_simulator
    from kalshiflow.exchange.replay import replay_driver
    from kalshiflow.storage.session_loader import load_session_streams

    session = await start_session(db, "simulator", [T, U], {})
    recorder = record_session(session)
    await store(db, recorder.rows)
    streams = await load_session_streams(db, session)
    assert sorted(s.market.ticker for s in streams) == sorted([T, U])
    final = {ticker: None for ticker in (T, U)}
    async for _, book in iter_books(db, session, T):
        final[T] = (book.levels(Side.YES), book.levels(Side.NO))
    async for _, book in iter_books(db, session, U):
        final[U] = (book.levels(Side.YES), book.levels(Side.NO))

    config = SimulatorConfig(markets=0, generator=False, rate_limit=False)
    async with run_simulator(config, keys={}, driver=replay_driver(streams, speed=1e9)) as sim:
        for _ in range(200):
            if getattr(sim, "replayer", None) is not None and sim.replayer.done:
                break
            await asyncio.sleep(0.05)
        assert sim.replayer.done
        for ticker, (yes, no) in final.items():
            book = sim.state.order_book(ticker)
            assert (book.levels(Side.YES), book.levels(Side.NO)) == (yes, no)
