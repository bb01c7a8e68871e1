"""The Python-side map of the schema: each table's columns (in table order) and natural key.

Writers build row tuples in ``TABLES[name].columns`` order and hand them to the bulk writer, which
uses ``key`` for the ON CONFLICT target and for lock ordering. A test checks this map against the
migrated database, so the two cannot drift apart. Units are documented in ``sql/0001_initial.sql``:
prices in ticks of $0.0001 (INTEGER), quantities in hundredths of a contract and money in
micro-dollars (BIGINT), recorded times as integer epoch ms (exchange) / ns (ours).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    columns: tuple[str, ...]  # every column, in table order (= row tuple order)
    key: tuple[str, ...]  # the natural key (the primary key)
    # Columns a later write of the same key may fill in or change (``copy_insert(update=...)``),
    # e.g. an epoch row written at connect and again at disconnect. Empty: rows are immutable facts.
    mutable: tuple[str, ...] = ()

    def index(self, column: str) -> int:
        return self.columns.index(column)


def _spec(name: str, columns: str, key: str, mutable: str = "") -> TableSpec:
    return TableSpec(name, tuple(columns.split()), tuple(key.split()), tuple(mutable.split()))


_ALL = (
    _spec(
        "collection_sessions",
        "session_id started_at ended_at status environment exchange_url markets config snapshot_count"
        " delta_count gap_count trade_count reconnect_count error",
        "session_id",
        "ended_at status markets config snapshot_count delta_count gap_count trade_count reconnect_count"
        " error",
    ),
    _spec(
        "connection_epochs",
        "session_id epoch collector_id connected_at disconnected_at reason",
        "session_id epoch",
        "disconnected_at reason",
    ),
    _spec(
        "markets",
        "ticker event_ticker series_ticker title status open_time close_time result price_level_structure"
        " price_ranges fee_type first_seen_at last_seen_at raw",
        "ticker",
        "event_ticker series_ticker title status open_time close_time result price_level_structure"
        " price_ranges fee_type last_seen_at raw",
    ),
    _spec(
        "book_snapshots",
        "session_id seq received_ts_ns exchange_ts_ms epoch sid ticker yes_price yes_qty no_price no_qty",
        "session_id epoch sid seq",
    ),
    _spec(
        "book_deltas",
        "session_id seq received_ts_ns exchange_ts_ms delta size_after epoch sid price side ticker"
        " client_order_id",
        "session_id epoch sid seq",
    ),
    _spec(
        "gaps",
        "session_id epoch sid expected_seq received_seq detected_at tickers recovered_at recovery_method",
        "session_id epoch sid expected_seq",
        "recovered_at recovery_method",
    ),
    _spec(
        "public_trades",
        "session_id trade_id received_ts_ns exchange_ts_ms count yes_price epoch sid seq ticker taker_side",
        "session_id trade_id",
    ),
    _spec(
        "orders",
        "order_id client_order_id account environment ticker side action order_type yes_price count"
        " fill_count remaining_count tif status created_at updated_at model_version decision_id raw",
        "order_id",
        "fill_count remaining_count status updated_at raw",
    ),
    _spec(
        "fills",
        "trade_id order_id client_order_id account environment ticker side action yes_price no_price count"
        " fee is_taker post_position ts received_at",
        "trade_id order_id",
    ),
    _spec(
        "position_snapshots",
        "account ticker source ts environment position cost realized_pnl fees",
        "account ticker source ts",
    ),
    _spec(
        "trader_decisions",
        "decision_id ts account ticker observation_hash action model_version risk_verdict reason latency_us"
        " client_order_id",
        "decision_id",
    ),
    _spec(
        "models",
        "version created_at schema_hash algorithm path data_manifest config metrics status promoted_at",
        "version",
        "metrics status promoted_at",
    ),
    _spec(
        "evaluations",
        "evaluation_id model_version policy_name data_spec created_at metrics report_path",
        "evaluation_id",
    ),
)

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in _ALL}
