"""The dashboard's WebSocket protocol: one socket (``/ws``), JSON messages ``{"type", "data"}``.

Server -> browser (each at most once per ``ui.update_interval_s`` per component):

- ``hello``: once per connection: versions, environment, links, which components run.
- ``collection_status``: exchange connection, markets, session, counts, gaps, WriteQueue, memory.
- ``trader_state``: portfolio, positions, open orders, metrics, risk mode, model version.
- ``trades``: recent fills (with the model's decision) and execution statistics.
- ``book``: the ladder of the market this client selected: a full ``snapshot`` first (and after
  any message this client missed), then only the levels that changed (never full-book
  rebroadcasts: prior-system-lessons.md §5.2, §10.14).
- ``pnl_history``: portfolio value over time: the whole capped history once, then appended points.
- ``command_result``: the answer to a command (kill switch, market selection).

Browser -> server: ``select_market`` and ``kill_switch`` (:data:`ClientMessage`).

Money and prices are exact decimal strings in dollars ("0.5600", "10012.3400"), made by
kalshiflow.market.prices; counts are integers; rates and ratios are floats. A value the system
does not have is ``null`` and the page shows a dash: nothing is ever a placeholder number.

Every Struct is frozen; tests decode what the server sends with :data:`ServerMessage` (strict,
unknown fields refused) so the schema and the code cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "Book",
    "BookMsg",
    "ClientMessage",
    "CollectionStatus",
    "CollectionStatusMsg",
    "CommandResult",
    "CommandResultMsg",
    "Components",
    "ExecutionStats",
    "Fill",
    "Hello",
    "HelloMsg",
    "KillSwitch",
    "Level",
    "MarketRow",
    "OpenOrder",
    "PnlHistory",
    "PnlHistoryMsg",
    "PnlPoint",
    "Position",
    "SelectMarket",
    "ServerMessage",
    "TraderMetrics",
    "TraderState",
    "TraderStateMsg",
    "Trades",
    "TradesMsg",
    "WriteQueueStatus",
    "decode_client",
    "decode_server",
    "encode",
]

PROTOCOL_VERSION = 1

RunState = Literal["starting", "running", "stopping", "stopped", "absent"]


class _Data(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


# --------------------------------------------------------------------------- hello


class Components(_Data, frozen=True):
    """Which parts of the system this launch runs (absent ones are shown as such, not faked)."""

    collectors: bool
    write_queue: bool
    trader: bool
    reconciler: bool
    policy_server: bool


class Hello(_Data, frozen=True):
    protocol: int
    client_id: int
    environment: str  # simulator | demo | production
    trading_mode: str | None  # simulator | paper | production (None: no trader)
    ray_dashboard_url: str | None
    update_interval_s: float
    components: Components  # which parts answer right now (found by name in the namespace)


# --------------------------------------------------------------------------- collection


class WriteQueueStatus(_Data, frozen=True):
    database_up: bool
    depth: int  # rows buffered, not yet durable
    waiting_rows: int  # rows held back by backpressure
    rows_written: int
    rows_spilled: int
    spill_segments: int
    spill_bytes: int
    oldest_unflushed_age_s: float | None
    last_error: str | None


class MarketRow(_Data, frozen=True):
    ticker: str
    valid: bool  # False while the book waits for a snapshot after a gap
    deltas: int
    snapshots: int
    gaps: int
    lag_ms_mean: float | None


class CollectionStatus(_Data, frozen=True):
    ts: float  # server time (epoch seconds)
    state: RunState
    environment: str
    exchange_url: str | None
    connected: bool  # every collector holds a live exchange connection
    collectors: int
    collectors_connected: int
    session_id: str | None
    markets_tracked: int
    markets: list[MarketRow]  # the most active first, capped (markets_tracked is the true count)
    snapshots_collected: int
    deltas_collected: int
    trades_collected: int
    gaps: int
    reconnects: int
    messages_per_s: float
    lag_ms_mean: float | None
    lag_ms_max: int | None
    unacked_rows: int  # rows collectors hold until the WriteQueue acknowledges them
    write_queue: WriteQueueStatus | None
    uptime_s: float
    memory_mb: float | None  # resident memory of this launch's processes on the dashboard's node
    ui_clients: int
    ui_dropped: int  # messages dropped for slow browsers (each such browser is resynced)


# --------------------------------------------------------------------------- trader


class Position(_Data, frozen=True):
    ticker: str
    side: str  # yes | no
    contracts: str
    avg_price: str | None
    current_price: str | None  # the price this position could be sold at now (bid of its side)
    unrealized_pnl: str | None


class OpenOrder(_Data, frozen=True):
    order_id: str
    ticker: str
    side: str
    action: str
    price: str
    remaining: str
    created_ts: float | None


class TraderMetrics(_Data, frozen=True):
    orders_placed: int
    orders_filled: int
    orders_cancelled: int
    orders_rejected: int
    fill_rate: float | None  # filled / placed
    win_rate: float | None  # closed round trips with positive PnL / closed round trips
    daily_pnl: str | None
    decisions: int


class TraderState(_Data, frozen=True):
    ts: float
    state: RunState
    environment: str | None  # simulator | paper | production
    portfolio_value: str | None
    cash: str | None
    unrealized_pnl: str | None
    realized_pnl: str | None
    fees: str | None
    positions: list[Position]
    open_orders: list[OpenOrder]
    metrics: TraderMetrics | None
    risk_mode: str | None  # e.g. NORMAL, REDUCE_ONLY, HALTED
    risk_reason: str | None
    model_version: str | None
    policy_requests: int | None
    policy_latency_ms_p50: float | None
    source: str | None  # which actor the portfolio numbers came from (reconciler = exchange truth)


# --------------------------------------------------------------------------- trades


class Fill(_Data, frozen=True):
    ts: float
    ticker: str
    action: str  # buy | sell
    side: str  # yes | no
    quantity: str
    price: str  # per contract of `side` ("sell yes at 0.46": the YES price of the sale)
    order_id: str
    fill_id: str | None
    is_taker: bool | None
    decision: str | None  # the policy's action that led to the order


class ExecutionStats(_Data, frozen=True):
    total_fills: int
    maker_fills: int | None  # None: the split is not known (no fill stream from the reconciler)
    taker_fills: int | None
    avg_fill_time_ms: float | None  # resting orders: created -> filled (exchange timestamps)


class Trades(_Data, frozen=True):
    ts: float
    state: RunState
    recent_fills: list[Fill]  # newest first, capped
    execution_stats: ExecutionStats


# --------------------------------------------------------------------------- book, pnl


Level = tuple[str, str]  # (YES price, contracts); contracts "0.00" in a diff = level removed


class Book(_Data, frozen=True):
    ticker: str
    seq: int  # per-ticker stream counter: a diff applies to the message with seq - 1
    snapshot: bool
    valid: bool | None  # False: the collector's book waits for a snapshot (do not trust it)
    bids: list[Level]  # YES bids, best (highest) first in a snapshot
    asks: list[Level]  # YES asks (= 1 - NO bids), best (lowest) first in a snapshot
    ts: float


PnlPoint = tuple[float, float, float]  # (epoch seconds, portfolio value $, PnL since start $)


class PnlHistory(_Data, frozen=True):
    snapshot: bool
    start_value: float | None
    points: list[PnlPoint]


# --------------------------------------------------------------------------- commands


class CommandResult(_Data, frozen=True):
    command: str
    ok: bool
    detail: str


# --------------------------------------------------------------------------- envelopes


class _Msg(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    pass


class HelloMsg(_Msg, tag="hello", frozen=True):
    data: Hello


class CollectionStatusMsg(_Msg, tag="collection_status", frozen=True):
    data: CollectionStatus


class TraderStateMsg(_Msg, tag="trader_state", frozen=True):
    data: TraderState


class TradesMsg(_Msg, tag="trades", frozen=True):
    data: Trades


class BookMsg(_Msg, tag="book", frozen=True):
    data: Book


class PnlHistoryMsg(_Msg, tag="pnl_history", frozen=True):
    data: PnlHistory


class CommandResultMsg(_Msg, tag="command_result", frozen=True):
    data: CommandResult


ServerMessage = (
    HelloMsg | CollectionStatusMsg | TraderStateMsg | TradesMsg | BookMsg | PnlHistoryMsg | CommandResultMsg
)

_WRAP: dict[type[_Data], type[_Msg]] = {
    Hello: HelloMsg,
    CollectionStatus: CollectionStatusMsg,
    TraderState: TraderStateMsg,
    Trades: TradesMsg,
    Book: BookMsg,
    PnlHistory: PnlHistoryMsg,
    CommandResult: CommandResultMsg,
}


class SelectMarket(
    msgspec.Struct, frozen=True, tag_field="type", tag="select_market", forbid_unknown_fields=True
):
    ticker: str | None  # None: stop receiving book messages


class KillSwitch(
    msgspec.Struct, frozen=True, tag_field="type", tag="kill_switch", forbid_unknown_fields=True
):
    reason: str = "dashboard kill switch"


ClientMessage = SelectMarket | KillSwitch

_encoder = msgspec.json.Encoder()
_server_decoder = msgspec.json.Decoder(ServerMessage)
_client_decoder = msgspec.json.Decoder(ClientMessage)

MAX_CLIENT_MESSAGE_BYTES = 4096


def encode(data: _Data) -> str:
    """``{"type": ..., "data": {...}}`` as text, encoded once and shared by every client."""
    return _encoder.encode(_WRAP[type(data)](data=data)).decode()


def decode_server(text: str | bytes) -> ServerMessage:
    return _server_decoder.decode(text)


def decode_client(text: str | bytes) -> ClientMessage:
    """A browser's command; raises msgspec.ValidationError / DecodeError (or ValueError when too
    long) for anything else, which the server answers with a failed ``command_result``."""
    if len(text) > MAX_CLIENT_MESSAGE_BYTES:
        raise ValueError(f"client message over {MAX_CLIENT_MESSAGE_BYTES} bytes")
    return _client_decoder.decode(text)
