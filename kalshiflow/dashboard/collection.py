"""``collection_status`` from the collectors' and the WriteQueue's own ``stats()``.

Everything shown is summed from what the actors report; nothing is estimated. Counters of a
collector that restarted start again from zero (its ``stats()`` covers its current incarnation),
which is why the page also shows reconnects and gaps, and the session's stored counts live in the
database (``python -m kalshiflow.sessions``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kalshiflow.collect.messages import CollectorStats
from kalshiflow.dashboard.messages import CollectionStatus, MarketRow, RunState, WriteQueueStatus
from kalshiflow.ingest.messages import WriteQueueStats

__all__ = ["MARKET_ROWS_CAP", "build_collection_status", "redact"]

# Rows listed per message; at 1,000 markets the full list every second would dominate the socket.
MARKET_ROWS_CAP = 100

# user:password@ in any URL, and key=value secrets, in free text such as error messages.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s:]+(?::[^/@\s]*)?@")
_SECRET_KV = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key[_-]?id|private[_-]?key)\b(\s*[=:]\s*)\S+"
)


def redact(text: str | None) -> str | None:
    """Strip credentials from text bound for the browser (DESIGN §3: never sent to the UI)."""
    if text is None:
        return None
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    text = _SECRET_KV.sub(lambda m: m.group(1) + m.group(2) + "***", text)
    if "BEGIN" in text and "PRIVATE KEY" in text:
        return "[redacted: text contained a private key]"
    return text


def write_queue_status(wq: WriteQueueStats) -> WriteQueueStatus:
    return WriteQueueStatus(
        database_up=wq.database_up,
        depth=wq.depth,
        waiting_rows=wq.waiting_rows,
        rows_written=wq.rows_written,
        rows_spilled=wq.rows_spilled,
        spill_segments=wq.spill_segments,
        spill_bytes=wq.spill_bytes,
        oldest_unflushed_age_s=wq.oldest_unflushed_age_s,
        last_error=redact(wq.last_error),
    )


def _mean(pairs: Sequence[tuple[float, int]]) -> float | None:
    weight = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / weight if weight else None


def build_collection_status(
    collectors: Sequence[CollectorStats],
    write_queue: WriteQueueStats | None,
    *,
    now: float,
    state: RunState,
    environment: str,
    exchange_url: str | None,
    session_id: str | None,
    uptime_s: float,
    memory_mb: float | None,
    ui_clients: int,
    ui_dropped: int,
    lag_measurable: bool = True,
) -> CollectionStatus:
    """``lag_measurable=False``: the exchange's timestamps are not wall time (a simulator running
    faster or slower than real time), so receive time minus them is no lag: shown as unknown."""
    markets = [m for c in collectors for m in c.per_market if m.active]
    markets.sort(key=lambda m: (-m.deltas, m.ticker))
    rows = [
        MarketRow(
            ticker=m.ticker,
            valid=m.valid,
            deltas=m.deltas,
            snapshots=m.snapshots,
            gaps=m.gaps,
            lag_ms_mean=None if m.lag_ms_mean is None or not lag_measurable else round(m.lag_ms_mean, 2),
        )
        for m in markets[:MARKET_ROWS_CAP]
    ]
    timed = collectors if lag_measurable else []
    lag_means = [(c.lag_ms_mean, c.deltas + c.snapshots) for c in timed if c.lag_ms_mean is not None]
    lag_maxes = [c.lag_ms_max for c in timed if c.lag_ms_max is not None]
    lag_mean = _mean(lag_means)
    connected = sum(1 for c in collectors if c.connected)
    return CollectionStatus(
        ts=now,
        state=state,
        environment=environment,
        exchange_url=redact(exchange_url),
        connected=bool(collectors) and connected == len(collectors),
        collectors=len(collectors),
        collectors_connected=connected,
        session_id=session_id,
        markets_tracked=len(markets),
        markets=rows,
        snapshots_collected=sum(c.snapshots for c in collectors),
        deltas_collected=sum(c.deltas for c in collectors),
        trades_collected=sum(c.trades for c in collectors),
        gaps=sum(c.gaps for c in collectors),
        reconnects=sum(c.reconnects for c in collectors),
        messages_per_s=round(sum(c.messages_per_s for c in collectors), 1),
        lag_ms_mean=None if lag_mean is None else round(lag_mean, 2),
        lag_ms_max=max(lag_maxes) if lag_maxes else None,
        unacked_rows=sum(c.unacked_rows for c in collectors),
        write_queue=write_queue_status(write_queue) if write_queue is not None else None,
        uptime_s=round(uptime_s, 1),
        memory_mb=None if memory_mb is None else round(memory_mb, 1),
        ui_clients=ui_clients,
        ui_dropped=ui_dropped,
    )


def market_owners(collectors: Sequence[CollectorStats]) -> dict[str, str]:
    """Ticker -> the collector id that holds its book (for the ladder of a selected market)."""
    return {m.ticker: c.collector_id for c in collectors for m in c.per_market if m.active}
