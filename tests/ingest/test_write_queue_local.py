"""WriteQueue behaviour against a real PostgreSQL, driven in-process (no Ray: fast, inspectable).

The Ray-level guarantees (restart after a kill, a stopped server) are in tests/actors.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.write_queue import WriteQueueActor
from kalshiflow.config import AppConfig, StorageConfig, WriteQueueConfig
from kalshiflow.ingest import Ack, WriteQueueClosedError
from kalshiflow.ingest.spill import SpillLog, encode_record, scan_segment
from kalshiflow.ingest.throughput import synthetic_deltas
from kalshiflow.storage import Database

MakeWQ = Callable[..., WriteQueueActor]
UNREACHABLE = "postgresql://postgres@/kalshiflow?host=/nonexistent-kalshiflow-socket-dir"


@pytest.fixture
async def make_wq(db_url: str, storage_config: StorageConfig, tmp_path: Path) -> AsyncIterator[MakeWQ]:
    made: list[WriteQueueActor] = []

    def make(*, url: str | None = None, name: str = "wq", **settings: Any) -> WriteQueueActor:
        settings.setdefault("spill_dir", str(tmp_path / "spill"))
        settings.setdefault("reconnect_max_s", 0.2)
        config = AppConfig(storage=storage_config, write_queue=WriteQueueConfig(**settings))
        wq = WriteQueueActor(config, name=name, url=url or db_url)
        made.append(wq)
        return wq

    yield make
    for wq in made:
        if not wq.stats().closed:
            await wq.close(timeout=5)


async def count(db: Database, session: uuid.UUID) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT seq) AS keys FROM book_deltas WHERE session_id = $1", session
    )
    assert row is not None
    return row["n"], row["keys"]


async def test_same_batch_twice_is_stored_once(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq()
    session = uuid.uuid4()
    rows = {"book_deltas": synthetic_deltas(session, 500)}
    first, second = await asyncio.gather(wq.enqueue("b1", rows), wq.enqueue("b1", rows))
    assert first == second == Ack(batch_id="b1", rows=500, durable="database")
    assert await wq.enqueue("b1", rows) == first  # and once more, after it committed
    assert await count(db, session) == (500, 500)
    stats = wq.stats()
    assert stats.rows_written == 1500 and stats.rows_inserted == 500
    assert stats.batches_acked == 3 and stats.depth == 0 and stats.rows_spilled == 0


async def test_flush_by_size(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq(eager_flush=False, flush_rows=100, flush_interval_ms=60_000, writers=1)
    await wq.ready(timeout=10)
    session = uuid.uuid4()
    half = asyncio.create_task(wq.enqueue("a", {"book_deltas": synthetic_deltas(session, 50)}))
    await asyncio.sleep(0.3)
    assert not half.done() and wq.stats().depth == 50  # below flush_rows: waits (interval is 60 s)
    other = synthetic_deltas(session, 50, start_seq=51)
    start = time.monotonic()
    acks = await asyncio.gather(half, wq.enqueue("b", {"book_deltas": other}))
    assert time.monotonic() - start < 5
    assert [a.durable for a in acks] == ["database", "database"]
    assert wq.stats().flushes == 1 and await count(db, session) == (100, 100)


async def test_flush_by_time(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq(eager_flush=False, flush_rows=10_000, flush_interval_ms=300, writers=1)
    await wq.ready(timeout=10)
    session = uuid.uuid4()
    start = time.monotonic()
    ack = await wq.enqueue("a", {"book_deltas": synthetic_deltas(session, 10)})
    elapsed = time.monotonic() - start
    assert ack.durable == "database"
    assert 0.25 <= elapsed < 3.0, elapsed
    assert await count(db, session) == (10, 10)


async def test_eager_flush_does_not_wait_for_the_interval(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq(flush_rows=10_000, flush_interval_ms=5_000)
    await wq.ready(timeout=10)
    start = time.monotonic()
    await wq.enqueue("a", {"book_deltas": synthetic_deltas(uuid.uuid4(), 10)})
    assert time.monotonic() - start < 2.0


async def test_backpressure_waits_while_the_database_is_slow(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq(flush_rows=300, high_water_rows=1000, writers=1)
    await wq.ready(timeout=10)
    session = uuid.uuid4()
    batches = [synthetic_deltas(session, 300, start_seq=1 + 300 * i) for i in range(10)]
    async with db.acquire() as blocker:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "LOCK TABLE book_deltas IN EXCLUSIVE MODE"
        )  # INSERTs now block: a slow database
        try:
            calls = [
                asyncio.create_task(wq.enqueue(f"b{i}", {"book_deltas": b})) for i, b in enumerate(batches)
            ]
            await asyncio.sleep(0.5)
            stats = wq.stats()
            assert not any(c.done() for c in calls)
            assert stats.depth <= 1000 and stats.waiting_enqueues > 0 and stats.waiting_rows > 0
            assert stats.depth + stats.waiting_rows == 3000  # everything is held, nothing dropped
            assert stats.oldest_unflushed_age_s is not None and stats.oldest_unflushed_age_s >= 0.4
        finally:
            await tx.rollback()
        acks = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert {a.durable for a in acks} == {"database"}
    assert await count(db, session) == (3000, 3000)
    stats = wq.stats()
    assert stats.rows_spilled == 0 and stats.depth == 0 and stats.waiting_enqueues == 0


async def test_refused_batch_is_quarantined_and_the_others_written(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq(eager_flush=False, flush_interval_ms=200)  # both batches land in one flush
    session = uuid.uuid4()
    good = synthetic_deltas(session, 20)
    bad = [
        row[:8] + (20_000,) + row[9:] for row in synthetic_deltas(session, 5, start_seq=100)
    ]  # CHECK price
    ack_good, ack_bad = await asyncio.gather(
        wq.enqueue("good", {"book_deltas": good}), wq.enqueue("bad", {"book_deltas": bad})
    )
    assert (ack_good.durable, ack_bad.durable) == ("database", "quarantine")
    assert await count(db, session) == (20, 20)
    stats = wq.stats()
    assert stats.rows_quarantined == 5 and stats.errors >= 1 and "CheckViolation" in (stats.last_error or "")
    [kept] = wq._spill.quarantine_dir.glob("rejected-*.seg")
    assert [r.batch_id for r in scan_segment(kept).records] == ["bad"]


async def test_malformed_batch_is_refused_to_its_sender(make_wq: MakeWQ) -> None:
    wq = make_wq()
    with pytest.raises(ValueError, match="unknown table"):
        await wq.enqueue("x", {"no_such_table": [(1,)]})
    with pytest.raises(ValueError, match="columns"):
        await wq.enqueue("x", {"book_deltas": [(1, 2, 3)]})
    assert await wq.enqueue("empty", {"book_deltas": []}) == Ack(batch_id="empty", rows=0, durable="database")
    assert wq.stats().batches_enqueued == 0


async def test_unreachable_database_spills_then_a_successor_drains(make_wq: MakeWQ, db: Database) -> None:
    down = make_wq(url=UNREACHABLE, name="wq-spill")
    session = uuid.uuid4()
    batches = [synthetic_deltas(session, 200, start_seq=1 + 200 * i) for i in range(5)]
    acks = await asyncio.gather(*(down.enqueue(f"b{i}", {"book_deltas": b}) for i, b in enumerate(batches)))
    assert {a.durable for a in acks} == {"spill"}
    stats = await down.close(timeout=1)
    assert stats.rows_spilled == 1000 and not stats.database_up and stats.spill_segments >= 1
    assert await count(db, session) == (0, 0)

    up = make_wq(name="wq-spill")  # same spill dir: a restarted WriteQueue
    await up.enqueue("b0", {"book_deltas": batches[0]})  # a resent batch overlaps the spill: harmless
    stats = await up.flush(drain=True, timeout=20)
    assert stats.rows_drained == 1000 and stats.spill_segments == 0
    assert await count(db, session) == (1000, 1000)


async def test_leftover_segment_with_a_torn_tail_drains_its_intact_prefix(
    make_wq: MakeWQ, db: Database, tmp_path: Path
) -> None:
    session = uuid.uuid4()
    spill = SpillLog(tmp_path / "spill" / "wq-torn")
    spill.open(wait_s=0.1)
    for i in range(3):
        spill.append([(f"b{i}", {"book_deltas": synthetic_deltas(session, 100, start_seq=1 + 100 * i)})])
    spill.close()
    [path] = spill.sealed_segments()
    torn = encode_record("b3", {"book_deltas": synthetic_deltas(session, 100, start_seq=301)})
    with path.open("ab") as fh:
        fh.write(torn[: len(torn) // 2])  # a crash mid-append: b3 was never acknowledged

    wq = make_wq(name="wq-torn")
    stats = await wq.flush(drain=True, timeout=20)
    assert stats.rows_drained == 300 and stats.spill_torn_bytes == len(torn) // 2
    assert stats.spill_damaged_regions == 0 and not path.exists()
    assert await count(db, session) == (300, 300)


async def test_close_refuses_new_batches(make_wq: MakeWQ) -> None:
    wq = make_wq()
    await wq.enqueue("a", {"book_deltas": synthetic_deltas(uuid.uuid4(), 3)})
    stats = await wq.close()
    assert stats.closed and stats.depth == 0 and stats.rows_written == 3
    with pytest.raises(WriteQueueClosedError):
        await wq.enqueue("b", {"book_deltas": synthetic_deltas(uuid.uuid4(), 3)})


async def test_bookkeeping_rows_fill_in_their_end_in_any_order(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq()
    session = uuid.uuid4()
    t0 = datetime(2026, 6, 24, 12, 0, tzinfo=UTC)
    opened = [(session, 1, "c0", t0, None, None), (session, 2, "c0", t0, None, None)]
    closed = [(session, 1, "c0", t0, t0 + timedelta(minutes=5), "eof"), (session, 2, "c0", t0, t0, "ping")]
    await wq.enqueue("open", {"connection_epochs": opened[:1]})
    await wq.enqueue("close", {"connection_epochs": closed})  # epoch 1: the end arrives after the start
    await wq.enqueue("late-open", {"connection_epochs": opened})  # epoch 2: the start arrives after the end
    gap_open = (session, 1, 1, 10, 12, t0, ["A"], None, "get_snapshot")
    gap_done = gap_open[:7] + (t0 + timedelta(seconds=1), "get_snapshot")
    await wq.enqueue("gaps", {"gaps": [gap_open]})
    await wq.enqueue("gaps-done", {"gaps": [gap_done]})
    rows = await db.fetch(
        "SELECT epoch, disconnected_at, reason FROM connection_epochs WHERE session_id = $1 ORDER BY epoch",
        session,
    )
    assert [tuple(r) for r in rows] == [(1, t0 + timedelta(minutes=5), "eof"), (2, t0, "ping")]
    assert await db.fetchval("SELECT recovered_at FROM gaps WHERE session_id = $1", session) == gap_done[7]


async def test_a_spilled_record_postgres_refuses_is_quarantined_and_the_rest_drained(
    make_wq: MakeWQ, db: Database, tmp_path: Path
) -> None:
    session = uuid.uuid4()
    spill = SpillLog(tmp_path / "spill" / "wq-poison")
    spill.open(wait_s=0.1)
    bad = [row[:8] + (20_000,) + row[9:] for row in synthetic_deltas(session, 3, start_seq=1000)]
    spill.append([("ok-1", {"book_deltas": synthetic_deltas(session, 50)})])
    spill.append([("bad", {"book_deltas": bad})])
    spill.append([("ok-2", {"book_deltas": synthetic_deltas(session, 50, start_seq=51)})])
    spill.close()
    wq = make_wq(name="wq-poison")
    stats = await wq.flush(drain=True, timeout=20)
    assert stats.rows_drained == 100 and stats.rows_quarantined == 3 and stats.spill_segments == 0
    assert await count(db, session) == (100, 100)
    [kept] = (tmp_path / "spill" / "wq-poison" / "quarantine").glob("rejected-*.seg")
    assert [r.batch_id for r in scan_segment(kept).records] == ["bad"]


async def test_order_rows_keep_the_newest_version_in_any_order(make_wq: MakeWQ, db: Database) -> None:
    wq = make_wq()
    t0 = datetime(2026, 6, 24, 12, 0, tzinfo=UTC)
    oid = f"ord-{uuid.uuid4().hex[:8]}"

    def version(minutes: int, fill: int, status: str) -> tuple[object, ...]:
        return (oid, f"kf-{oid}", "paper", "simulator", "M-1", "yes", "buy", "limit", 4500, 1000, fill,
                1000 - fill, "good_till_canceled", status, t0, t0 + timedelta(minutes=minutes), "v0001", None,
                {"event": status})

    await wq.enqueue("ack", {"orders": [version(0, 0, "resting")]})
    await wq.enqueue("cancel", {"orders": [version(2, 300, "canceled")]})
    await wq.enqueue("late-fill", {"orders": [version(1, 300, "resting")]})  # older: must not win
    # Both versions in one batch: the newer one is kept whatever its place in the batch.
    other = f"{oid}-b"
    both = [tuple([other, f"kf-{other}", *version(5, 1000, "executed")[2:]]),
            tuple([other, f"kf-{other}", *version(4, 0, "resting")[2:]])]
    await wq.enqueue("batch", {"orders": both})
    rows = await db.fetch("SELECT order_id, fill_count, remaining_count, status, updated_at,"
                          " raw->>'event' AS ev FROM orders WHERE order_id LIKE $1 ORDER BY order_id",
                          f"{oid}%")
    assert [tuple(r) for r in rows] == [
        (oid, 300, 700, "canceled", t0 + timedelta(minutes=2), "canceled"),
        (other, 1000, 0, "executed", t0 + timedelta(minutes=5), "executed"),
    ]
