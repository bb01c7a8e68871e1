"""Collection sessions: the session row's life cycle, listing, and the per-market replay loader.

A *session* is one collection run: ONE ``collection_sessions`` row from start to stop, however
many WebSocket connections it goes through. Each connection is a ``connection_epochs`` row; every
recorded row carries (session_id, epoch, sid, seq), so messages of different connections never
collide. Status: ``active`` while running; at the end ``closed``, or ``empty`` when nothing was
recorded (no snapshots, deltas or trades: dev restarts, failed starts), or ``aborted`` for a run
that never closed cleanly (a crash; :func:`mark_stale_sessions_aborted` at the next start).
Counts are computed from the recorded tables when the session closes, not from collector
counters, so they say what is really stored.

The replay loader (events of one market in recorded order, books rebuilt seq by seq, gaps
explicit) lives in :mod:`kalshiflow.storage.session_loader` and is re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from kalshiflow.storage.database import Database
from kalshiflow.storage.session_loader import (
    RecordedDelta,
    RecordedGap,
    RecordedSnapshot,
    RecordedTrade,
    ReplayMismatchError,
    SessionEvent,
    iter_books,
    iter_events,
    load_market_stream,
    market_grid,
)

__all__ = [
    "RecordedDelta",
    "RecordedGap",
    "RecordedSnapshot",
    "RecordedTrade",
    "ReplayMismatchError",
    "SessionEvent",
    "SessionSummary",
    "close_session",
    "get_session",
    "iter_books",
    "iter_events",
    "list_sessions",
    "load_market_stream",
    "mark_stale_sessions_aborted",
    "market_grid",
    "record_epoch",
    "session_tickers",
    "start_session",
]

SessionId = uuid.UUID | str


class SessionSummary(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    status: str
    environment: str
    exchange_url: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float  # ended (or now, while active) minus started
    markets: int
    tickers: tuple[str, ...]
    snapshots: int
    deltas: int
    gaps: int
    trades: int
    reconnects: int
    error: str | None


def _sid(session_id: SessionId) -> uuid.UUID:
    return session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))


# ------------------------------------------------------------------ life cycle


async def start_session(
    db: Database,
    environment: str,
    markets: Sequence[str],
    config: Any,
    *,
    exchange_url: str = "",
    session_id: SessionId | None = None,
    started_at: datetime | None = None,
) -> uuid.UUID:
    """Insert the ``active`` session row; returns its id. ``config``: a dict or a msgspec Struct
    (e.g. AppConfig: it holds no secrets by construction). Idempotent for a given ``session_id``."""
    sid = _sid(session_id) if session_id is not None else uuid.uuid4()
    await db.execute(
        "INSERT INTO collection_sessions"
        " (session_id, started_at, status, environment, exchange_url, markets, config)"
        " VALUES ($1, $2, 'active', $3, $4, $5, $6) ON CONFLICT (session_id) DO NOTHING",
        sid,
        started_at or datetime.now(UTC),
        environment,
        exchange_url,
        list(markets),
        msgspec.to_builtins(config),
    )
    return sid


async def record_epoch(
    db: Database,
    session_id: SessionId,
    epoch: int,
    collector_id: str,
    *,
    connected_at: datetime | None = None,
    disconnected_at: datetime | None = None,
    reason: str | None = None,
) -> None:
    """Record a connection epoch at connect, and again at disconnect (fills the end in).

    Only fills columns that are still NULL, so the two writes may arrive in either order and
    either may be repeated."""
    await db.execute(
        "INSERT INTO connection_epochs"
        " (session_id, epoch, collector_id, connected_at, disconnected_at, reason)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (session_id, epoch) DO UPDATE SET"
        " disconnected_at = COALESCE(connection_epochs.disconnected_at, EXCLUDED.disconnected_at),"
        " reason = COALESCE(connection_epochs.reason, EXCLUDED.reason)",
        _sid(session_id),
        epoch,
        collector_id,
        connected_at or datetime.now(UTC),
        disconnected_at,
        reason,
    )


_COUNTS = """
SELECT (SELECT count(*) FROM book_snapshots WHERE session_id = $1) AS snapshots,
       (SELECT count(*) FROM book_deltas WHERE session_id = $1) AS deltas,
       (SELECT count(*) FROM gaps WHERE session_id = $1) AS gaps,
       (SELECT count(*) FROM public_trades WHERE session_id = $1) AS trades,
       (SELECT greatest(count(*) - count(DISTINCT collector_id), 0) FROM connection_epochs
         WHERE session_id = $1) AS reconnects
"""


async def _counts(db: Database, session_id: uuid.UUID) -> dict[str, int]:
    row = await db.fetchrow(_COUNTS, session_id)
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def close_session(
    db: Database,
    session_id: SessionId,
    status: str | None = None,
    *,
    error: str | None = None,
    ended_at: datetime | None = None,
) -> SessionSummary:
    """Close the session with counts computed from the recorded tables.

    ``status`` None: ``closed``, or ``empty`` when no snapshot, delta or trade was recorded; an
    explicit status (``aborted``, ...) is kept as given. Closing again recomputes the counts."""
    sid = _sid(session_id)
    n = await _counts(db, sid)
    if status is None:
        status = "empty" if n["snapshots"] + n["deltas"] + n["trades"] == 0 else "closed"
    done = await db.execute(
        "UPDATE collection_sessions SET status = $2, ended_at = greatest(started_at, coalesce($3, now())),"
        " snapshot_count = $4, delta_count = $5, gap_count = $6, trade_count = $7, reconnect_count = $8,"
        " error = coalesce($9, error) WHERE session_id = $1",
        sid,
        status,
        ended_at,
        n["snapshots"],
        n["deltas"],
        n["gaps"],
        n["trades"],
        n["reconnects"],
        error,
    )
    if done.endswith(" 0"):
        raise LookupError(f"no collection session {sid}")
    summary = await get_session(db, sid)
    assert summary is not None
    return summary


async def _last_activity(db: Database, session_id: uuid.UUID) -> datetime | None:
    """When a session last recorded anything (its end, for a session that never closed)."""
    ns = await db.fetchval(
        "SELECT greatest((SELECT max(received_ts_ns) FROM book_deltas WHERE session_id = $1),"
        " (SELECT max(received_ts_ns) FROM book_snapshots WHERE session_id = $1),"
        " (SELECT max(received_ts_ns) FROM public_trades WHERE session_id = $1))",
        session_id,
    )
    epoch_end = await db.fetchval(
        "SELECT max(greatest(connected_at, disconnected_at)) FROM connection_epochs WHERE session_id = $1",
        session_id,
    )
    times = [
        t for t in (epoch_end, None if ns is None else datetime.fromtimestamp(ns / 1e9, UTC)) if t is not None
    ]
    return max(times) if times else None


async def mark_stale_sessions_aborted(
    db: Database, *, exclude: Iterable[SessionId] = (), started_before: datetime | None = None
) -> list[uuid.UUID]:
    """Close every ``active`` session (except ``exclude``, and only those started before
    ``started_before`` when given) as ``aborted``, or ``empty`` if it recorded nothing.

    For a launcher's startup, when no collector of those sessions can still be running. The end
    time is the session's last recorded activity, so durations stay truthful."""
    skip = {_sid(s) for s in exclude}
    rows = await db.fetch(
        "SELECT session_id, started_at FROM collection_sessions WHERE status = 'active'"
        " AND ($1::timestamptz IS NULL OR started_at < $1)",
        started_before,
    )
    aborted: list[uuid.UUID] = []
    for row in rows:
        sid = row["session_id"]
        if sid in skip:
            continue
        n = await _counts(db, sid)
        status = "empty" if n["snapshots"] + n["deltas"] + n["trades"] == 0 else "aborted"
        await close_session(
            db,
            sid,
            status,
            ended_at=await _last_activity(db, sid) or row["started_at"],
            error="never closed cleanly (marked at a later start)",
        )
        aborted.append(sid)
    return aborted


# ------------------------------------------------------------------ listing

_SELECT = (
    "SELECT session_id, status, environment, exchange_url, started_at, ended_at, markets, snapshot_count,"
    " delta_count, gap_count, trade_count, reconnect_count, error FROM collection_sessions"
)


async def _summary(db: Database, row: Any, now: datetime) -> SessionSummary:
    n = {
        "snapshots": row["snapshot_count"],
        "deltas": row["delta_count"],
        "gaps": row["gap_count"],
        "trades": row["trade_count"],
        "reconnects": row["reconnect_count"],
    }
    if row["status"] == "active":
        n = await _counts(db, row["session_id"])  # live figures for a running session
    end = row["ended_at"] or now
    tickers = tuple(row["markets"] or ())
    return SessionSummary(
        session_id=str(row["session_id"]),
        status=row["status"],
        environment=row["environment"],
        exchange_url=row["exchange_url"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        duration_s=max(0.0, (end - row["started_at"]).total_seconds()),
        markets=len(tickers),
        tickers=tickers,
        error=row["error"],
        **{k: int(v) for k, v in n.items()},
    )


async def list_sessions(
    db: Database, *, status: str | None = None, limit: int | None = None
) -> list[SessionSummary]:
    """Sessions newest first (active ones with live counts)."""
    rows = await db.fetch(
        _SELECT + " WHERE ($1::text IS NULL OR status = $1) ORDER BY started_at DESC, session_id LIMIT $2",
        status,
        limit,
    )
    now = datetime.now(UTC)
    return [await _summary(db, row, now) for row in rows]


async def get_session(db: Database, session_id: SessionId) -> SessionSummary | None:
    row = await db.fetchrow(_SELECT + " WHERE session_id = $1", _sid(session_id))
    return None if row is None else await _summary(db, row, datetime.now(UTC))


async def session_tickers(db: Database, session_id: SessionId) -> list[str]:
    """Markets with at least one recorded snapshot or delta in the session, sorted."""
    rows = await db.fetch(
        "SELECT ticker FROM book_snapshots WHERE session_id = $1 UNION SELECT ticker FROM book_deltas"
        " WHERE session_id = $1 ORDER BY 1",
        _sid(session_id),
    )
    return [r["ticker"] for r in rows]
