"""Collectors against the embedded simulator, real Ray and real PostgreSQL: nothing lost, nothing twice.

The simulator is driven by a DeltaDriver (so the test knows when the exchange is quiet) and reached
through a FaultProxy that records every frame sent to each connection: the database must hold
exactly the deltas each connection was sent, and the recorded rows must replay to the exchange's
final books.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from kalshiflow.collect.messages import BookTop
from kalshiflow.collect.run import start_collection
from kalshiflow.collect.testing import Harness
from kalshiflow.collect.verify import recorded_deltas, replay_books, sent_deltas
from kalshiflow.config import AppConfig, CollectorConfig, WriteQueueConfig
from kalshiflow.exchange.events import TradeEvent

pytestmark = pytest.mark.usefixtures("ray_session")


def app_config(tmp_path: Path, **collector: Any) -> AppConfig:
    return AppConfig(
        collector=CollectorConfig(**({"markets_per_collector": 3, "status_poll_s": 0} | collector)),
        write_queue=WriteQueueConfig(spill_dir=str(tmp_path / "spill")),
    )


@ray.remote(num_cpus=0.1)
class BookSink:
    """A stand-in Trader: remembers the latest top of book per market."""

    def __init__(self) -> None:
        self.tops: dict[str, BookTop] = {}
        self.calls = 0
        self.trades: list[tuple[int, int]] = []  # (yes price, count) of every public trade sent

    def on_books(self, updates: list[BookTop]) -> None:
        self.calls += 1
        self.tops.update((u.ticker, u) for u in updates if u.book_changed)
        self.trades.extend((t.yes_price, t.count) for u in updates for t in u.trades)

    def state(self) -> tuple[int, dict[str, BookTop], list[tuple[int, int]]]:
        return self.calls, self.tops, self.trades


async def caught_up(sink: Any, h: Harness, n_trades: int, timeout: float = 30.0) -> Any:
    """The sink's state once it shows the exchange's final tops and every trade (a loaded machine
    delivers the last views a while after the collector applied the frames); at the timeout, as
    it is (the assertions then say what never arrived)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        calls, tops, trades = state = await sink.state.remote()
        final = h.books()
        if len(trades) >= n_trades and all(
                t in tops and (tops[t].yes_bid, tops[t].yes_ask) == (b.best_bid("yes"), b.best_ask("yes"))
                for t, b in final.items()):
            return state
        if asyncio.get_running_loop().time() > deadline:
            return state
        await asyncio.sleep(0.1)


async def test_collection_stores_every_sent_delta_once_and_replays_to_the_exchange_books(
    db_url: str, db: Any, tmp_path: Path
) -> None:
    async with Harness(8) as h:
        coll = await start_collection(app_config(tmp_path), h.endpoints(), credentials=h.credentials,
                                      db_url=db_url, markets=h.tickers)
        assert len(coll.collectors) == 3
        sink = BookSink.remote()
        await coll.add_subscriber(sink)
        trades: list[Any] = []
        h.sim.state.add_listener(lambda e: trades.append(e) if type(e) is TradeEvent else None)
        h.drive(3000)
        await asyncio.sleep(3.0)
        await h.quiesce()
        stats = await coll.stats()
        live = {t: b for c in coll.collectors.values() for t, b in (await c.books.remote()).items()}
        calls, tops, sink_trades = await caught_up(sink, h, len(trades))
        summary = await coll.stop()
        final = h.books()
        assert h.proxy is not None
        sent = sent_deltas(h.proxy.sent)

    assert len(sent) == 3 and all(sent), "one connection per collector, each with deltas"
    recorded = await recorded_deltas(db, coll.session_id)
    assert sorted(map(sorted, recorded.values())) == sorted(map(sorted, sent))
    assert sum(map(len, sent)) == summary.deltas > 5000
    assert summary.gaps == 0 and summary.unacked_rows == 0 and summary.reconnects == 0
    tape = await db.fetch("SELECT trade_id, yes_price, count FROM public_trades WHERE session_id = $1",
                          uuid.UUID(coll.session_id))
    assert sorted((r["trade_id"], r["yes_price"], r["count"]) for r in tape) == sorted(
        (t.trade_id, t.yes_price, t.count) for t in trades) and len(tape) > 50
    # ... and every trade reached the subscriber too (the live trade features need them all).
    assert sorted(sink_trades) == sorted((t.yes_price, t.count) for t in trades)
    assert await replay_books(db, coll.session_id, h.tickers) == final
    # The live books, and what a subscriber saw last, match the exchange too.
    for ticker, (valid, yes, no) in live.items():
        assert valid and (yes, no) == (final[ticker].levels("yes"), final[ticker].levels("no"))
        top = tops[ticker]
        assert top.valid and top.yes_bid == final[ticker].best_bid("yes")
        assert top.yes_ask == final[ticker].best_ask("yes")
    assert set(tops) == set(live) == set(h.tickers)
    # Tops go out as soon as books change (publish_interval_ms = 0), one call in flight per
    # collector: never more calls than changes (the pacing itself: tests/collect/test_shipping.py).
    assert 0 < calls <= summary.deltas
    assert all(s.messages_per_s > 0 and s.lag_ms_mean is not None for s in stats)
    assert all(s.subscribers == 1 and s.trades_dropped == 0 for s in stats)
    query = "SELECT status, delta_count, markets FROM collection_sessions WHERE session_id = $1"
    row = await db.fetchrow(query, uuid.UUID(coll.session_id))
    assert row["status"] == "closed" and row["delta_count"] == summary.deltas
    assert sorted(row["markets"]) == sorted(h.tickers)
    epochs = await db.fetch("SELECT * FROM connection_epochs WHERE session_id = $1",
                            uuid.UUID(coll.session_id))
    assert {e["epoch"] for e in epochs} == set(recorded) and len({e["collector_id"] for e in epochs}) == 3
    assert all(e["disconnected_at"] > e["connected_at"] and e["reason"] == "stopped" for e in epochs)


async def test_markets_added_and_dropped_at_runtime(db_url: str, db: Any, tmp_path: Path) -> None:
    async with Harness(6) as h:
        first, later = h.tickers[:2], h.tickers[2:]
        coll = await start_collection(app_config(tmp_path), h.endpoints(), credentials=h.credentials,
                                      db_url=db_url, markets=first)
        assert len(coll.collectors) == 1
        h.drive(1500)
        await asyncio.sleep(0.7)
        placed = await coll.add_markets(later)  # one fits the first collector, the rest need another
        assert sum(map(len, placed.values())) == 4 and len(coll.collectors) == 2
        await coll.wait_ready(10)
        await asyncio.sleep(1.0)
        dropped = await coll.drop_markets([first[0]])
        assert dropped == [first[0]]
        await asyncio.sleep(0.7)
        await h.quiesce()
        summary = await coll.stop()
        final = h.books()
    kept = [t for t in h.tickers if t != first[0]]
    assert sorted(summary.markets) == sorted(kept)
    assert await replay_books(db, coll.session_id, kept) == {t: final[t] for t in kept}
    late = await db.fetchval("SELECT count(*) FROM book_deltas WHERE session_id = $1 AND ticker = $2",
                             uuid.UUID(coll.session_id), later[-1])
    assert late > 0


async def test_markets_that_settle_or_close_are_dropped(db_url: str, db: Any, tmp_path: Path) -> None:
    async with Harness(4) as h:
        assert h.driver is not None
        settled, closed, *others = h.tickers
        # The first REST poll comes after the lifecycle message has long been handled, so each
        # market is dropped by the path under test.
        coll = await start_collection(app_config(tmp_path, status_poll_s=2.0), h.endpoints(),
                                      credentials=h.credentials, db_url=db_url, markets=list(h.tickers))
        h.drive(500)
        await asyncio.sleep(0.5)
        for t in (settled, closed):
            h.driver.retire(t)
        h.sim.state.determine_market(settled, "yes")  # announced: market_lifecycle_v2 "determined"
        h.sim.state.close_market(closed)  # not announced (as on Kalshi): found by the REST status poll
        for _ in range(80):
            await asyncio.sleep(0.1)
            await coll.reconcile()
            if settled not in coll.markets and closed not in coll.markets:
                break
        why = {}
        for handle in coll.collectors.values():
            why |= await handle.closed_markets.remote()
        await h.quiesce()
        summary = await coll.stop()
    assert why[settled] == "lifecycle determined" and why[closed] == "closed (REST status)"
    assert sorted(summary.markets) == sorted(others)
    # The closing deltas (resting orders cancelled) were still recorded before the drop.
    emptied = await db.fetchval(
        "SELECT count(*) FROM book_deltas WHERE session_id = $1 AND ticker = $2 AND delta < 0",
        uuid.UUID(coll.session_id), settled,
    )
    assert emptied > 0
