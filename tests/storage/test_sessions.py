"""Session life cycle and listing against a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from kalshiflow.config import AppConfig
from kalshiflow.ingest.throughput import synthetic_deltas
from kalshiflow.storage import Database
from kalshiflow.storage.sessions import (
    close_session,
    get_session,
    list_sessions,
    mark_stale_sessions_aborted,
    record_epoch,
    session_tickers,
    start_session,
)

T0 = datetime(2026, 6, 24, 15, 0, tzinfo=UTC)


def snapshot(session: uuid.UUID, seq: int, ticker: str, epoch: int = 1) -> tuple[object, ...]:
    return (
        session,
        seq,
        1_782_316_195_000_000_000 + seq,
        None,
        epoch,
        1,
        ticker,
        [4000],
        [500],
        [5000],
        [700],
    )


async def test_a_session_survives_reconnects_and_closes_with_counts_from_the_tables(db: Database) -> None:
    session = await start_session(
        db, "simulator", ["A", "B"], AppConfig(), exchange_url="ws://x", started_at=T0
    )
    # one collector, three connections -> two reconnects; a second collector's first epoch is not one
    for epoch in (1, 2, 3):
        await record_epoch(db, session, epoch, "c0", connected_at=T0 + timedelta(minutes=epoch))
    await record_epoch(db, session, 10, "c1", connected_at=T0)
    await record_epoch(
        db, session, 1, "c0", connected_at=T0, disconnected_at=T0 + timedelta(minutes=2), reason="eof"
    )
    await record_epoch(db, session, 1, "c0", connected_at=T0)  # a late "open" copy does not undo the close
    row = await db.fetchrow(
        "SELECT disconnected_at, reason FROM connection_epochs WHERE session_id=$1 AND epoch=1", session
    )
    assert row is not None and row["reason"] == "eof" and row["disconnected_at"] == T0 + timedelta(minutes=2)

    await db.copy_insert("book_snapshots", [snapshot(session, 1, "A"), snapshot(session, 2, "B")])
    await db.copy_insert("book_deltas", synthetic_deltas(session, 40, start_seq=3, markets=2))
    await db.copy_insert("gaps", [(session, 1, 1, 50, 55, T0, ["A"], None, None)])

    live = await get_session(db, session)
    assert live is not None and live.status == "active" and live.deltas == 40  # live counts while active
    summary = await close_session(db, session, ended_at=T0 + timedelta(hours=17, minutes=48))
    assert (summary.status, summary.snapshots, summary.deltas, summary.gaps, summary.trades) == (
        "closed",
        2,
        40,
        1,
        0,
    )
    assert summary.reconnects == 2 and summary.markets == 2 and summary.tickers == ("A", "B")
    assert summary.duration_s == pytest.approx(17.8 * 3600)
    stored = await db.fetchrow("SELECT * FROM collection_sessions WHERE session_id = $1", session)
    assert (
        stored is not None
        and stored["delta_count"] == 40
        and stored["config"]["write_queue"]["flush_rows"] > 0
    )
    assert await session_tickers(db, session) == [
        "A",
        "B",
        *sorted({r[10] for r in synthetic_deltas(session, 40, start_seq=3, markets=2)}),
    ]


async def test_a_session_with_no_rows_is_empty(db: Database) -> None:
    session = await start_session(db, "demo", ["A"], {"note": "dev restart"})
    await record_epoch(db, session, 1, "c0")
    summary = await close_session(db, session)
    assert summary.status == "empty" and summary.deltas == summary.snapshots == 0
    with pytest.raises(LookupError):
        await close_session(db, uuid.uuid4())
    assert await get_session(db, uuid.uuid4()) is None


async def test_stale_active_sessions_are_marked_aborted_at_startup(db: Database) -> None:
    crashed = await start_session(db, "simulator", ["A"], {}, started_at=T0)
    await db.copy_insert("book_snapshots", [snapshot(crashed, 1, "A")])  # received at ~2026-06-24 16:29:55
    nothing = await start_session(db, "simulator", ["A"], {}, started_at=T0 + timedelta(seconds=1))
    running = await start_session(db, "simulator", ["A"], {}, started_at=T0 + timedelta(seconds=2))
    marked = await mark_stale_sessions_aborted(db, exclude=[running])
    assert set(marked) == {crashed, nothing}
    by_id = {s.session_id: s for s in await list_sessions(db)}
    assert by_id[str(crashed)].status == "aborted" and by_id[str(crashed)].snapshots == 1
    # ended at its last recorded activity, not "now": the duration stays truthful
    ended = by_id[str(crashed)].ended_at
    assert ended is not None and abs(ended - datetime.fromtimestamp(1_782_316_195, UTC)) < timedelta(
        milliseconds=1
    )
    assert by_id[str(nothing)].status == "empty"
    assert by_id[str(running)].status == "active"
    assert "never closed cleanly" in (by_id[str(crashed)].error or "")


async def test_list_is_newest_first_and_filters(db: Database) -> None:
    ids = [await start_session(db, "simulator", [], {}, started_at=T0 + timedelta(hours=h)) for h in range(3)]
    await close_session(db, ids[0])
    sessions = await list_sessions(db)
    assert [s.session_id for s in sessions] == [str(i) for i in reversed(ids)]
    assert [s.session_id for s in await list_sessions(db, status="empty")] == [str(ids[0])]
    assert len(await list_sessions(db, limit=2)) == 2
