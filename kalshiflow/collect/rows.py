"""Row builders: collector observations -> tuples in ``storage.schema.TABLES[t].columns`` order.

Kept apart from the state machine so the column order lives next to nothing else; a test checks
each builder against the schema map. The hot ``book_deltas`` row is built inline in
``shard_state._on_delta`` (a function call per delta is measurable) -- its order is checked by
the same test through :data:`DELTA_COLUMNS`.

Units as in ``sql/0001_initial.sql``: prices in ticks, quantities in hundredths, receive times in
epoch ns, exchange times in epoch ms, bookkeeping times as aware datetimes (TIMESTAMPTZ).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol import ws_data as wd

if TYPE_CHECKING:
    from kalshiflow.collect.recovery import OpenGap
    from kalshiflow.collect.shard_state import ShardState

Row = tuple[Any, ...]

TABLES_WRITTEN = ("book_deltas", "book_snapshots", "public_trades", "gaps", "connection_epochs")
MARKET_COLUMNS = (
    "ticker", "event_ticker", "series_ticker", "title", "status", "open_time", "close_time", "result",
    "price_level_structure", "price_ranges", "fee_type", "first_seen_at", "last_seen_at", "raw",
)
# The order shard_state builds book_deltas tuples in (must equal the schema's column order).
DELTA_COLUMNS = (
    "session_id", "seq", "received_ts_ns", "exchange_ts_ms", "delta", "size_after", "epoch", "sid", "price",
    "side", "ticker", "client_order_id",
)


def ts(ns: int | None) -> datetime | None:
    """Epoch ns -> aware datetime (microsecond precision, what TIMESTAMPTZ keeps)."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)


def epoch_row(state: ShardState, epoch: int, connected_ns: int, disconnected_ns: int | None,
              reason: str | None) -> Row:
    """connection_epochs. Written at connect and again at disconnect (the WriteQueue fills in
    disconnected_at and reason, whichever version arrives first)."""
    return (state.session_id, epoch, state.collector_id, ts(connected_ns), ts(disconnected_ns), reason)


def snapshot_row(state: ShardState, seq: int, recv_ns: int, sid: int, ticker: str,
                 yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> Row:
    """book_snapshots: levels as parallel arrays in wire (ascending price) order; no exchange time."""
    return (
        state.session_id, seq, recv_ns, None, state.epoch, sid, ticker,
        [p for p, _ in yes], [q for _, q in yes], [p for p, _ in no], [q for _, q in no],
    )


def gap_row(state: ShardState, gap: OpenGap, recovered_ns: int | None, method: str | None) -> Row:
    """gaps. Written when the gap opens (recovered_at and recovery_method NULL), so it is durable
    at once, and again when it closes: the WriteQueue fills in the NULL end columns."""
    return (
        state.session_id, state.epoch, gap.sid, gap.expected, gap.received, ts(gap.detected_ns),
        list(gap.tickers), ts(recovered_ns), method,
    )


def trade_row(state: ShardState, t: wd.TradeEvent, recv_ns: int, sid: int | None, seq: int | None) -> Row:
    # trade_id is the natural key; a trade without one (never seen from Kalshi) gets a stable
    # stand-in from where it arrived, so it is stored once, not merged with other id-less trades.
    trade_id = t.trade_id or f"noid:{state.epoch}:{sid}:{seq}:{recv_ns}"
    side = t.taker_side.value if t.taker_side is not None else None
    return (
        state.session_id, trade_id, recv_ns, t.ts_ms, t.count, t.yes_price, state.epoch, sid, seq,
        t.market_ticker, side,
    )


def _rfc3339(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def market_row(m: rm.Market, seen_ns: int) -> Row:
    """markets (upserted at collection start and when markets are added; ``raw`` = REST's view)."""
    seen = ts(seen_ns)
    ranges = [{"start": r.start, "end": r.end, "step": r.step} for r in m.price_ranges]
    return (
        m.ticker, m.event_ticker or None, None, m.title or None, m.status or None, _rfc3339(m.open_time),
        _rfc3339(m.close_time), m.result or None, m.price_level_structure, ranges, None, seen, seen,
        msgspec.to_builtins(m),
    )
