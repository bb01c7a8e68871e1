"""Kalshi REST v2 wire Structs: they mirror the JSON, in both shapes.

Every numeric field exists in both forms -- the current fixed-point strings (``*_dollars``,
``*_fp``) and the legacy integers (cents, whole contracts) -- all optional, so one Struct decodes a
2025 body, a 2026 body or the simulator's superset. They are public so the simulator can build
responses from the very types the client decodes. Normalising them is the job of rest_models.py
and rest_portfolio.py; the create-order request body lives with its codecs in rest_orders.py.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from kalshiflow.market.prices import PriceError
from kalshiflow.protocol.errors import DecodeError
from kalshiflow.protocol.wire_fields import WireStruct

T = TypeVar("T")


def decode_wire(data: bytes | str, typ: type[T], what: str) -> T:
    """JSON body -> ``typ``; a malformed or mistyped body is reported as DecodeError naming ``what``."""
    try:
        return msgspec.json.decode(data, type=typ)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise DecodeError(f"{what}: {err}") from None


def normalised(what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, normalising wire Structs; a value the models refuse (PriceError) is reported
    as DecodeError naming ``what``."""
    try:
        return fn(*args)
    except PriceError as err:
        raise DecodeError(f"{what}: {err}") from None


# --- markets ------------------------------------------------------------------------------------


class PriceRangeWire(WireStruct, frozen=True, kw_only=True):
    start: str
    end: str
    step: str


class MarketWire(WireStruct, frozen=True, kw_only=True):
    ticker: str
    event_ticker: str | None = None
    market_type: str | None = None
    title: str | None = None
    subtitle: str | None = None
    yes_sub_title: str | None = None
    no_sub_title: str | None = None
    status: str | None = None
    result: str | None = None
    created_time: str | None = None
    open_time: str | None = None
    close_time: str | None = None
    expected_expiration_time: str | None = None
    expiration_time: str | None = None
    latest_expiration_time: str | None = None
    can_close_early: bool | None = None
    # current fixed-point
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    no_bid_dollars: str | None = None
    no_ask_dollars: str | None = None
    last_price_dollars: str | None = None
    previous_yes_bid_dollars: str | None = None
    previous_yes_ask_dollars: str | None = None
    previous_price_dollars: str | None = None
    notional_value_dollars: str | None = None
    settlement_value_dollars: str | None = None
    liquidity_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    volume_fp: str | None = None
    volume_24h_fp: str | None = None
    open_interest_fp: str | None = None
    price_level_structure: str | None = None
    price_ranges: list[PriceRangeWire] | None = None
    # legacy integers (cents / whole contracts)
    yes_bid: int | None = None
    yes_ask: int | None = None
    no_bid: int | None = None
    no_ask: int | None = None
    last_price: int | None = None
    previous_yes_bid: int | None = None
    previous_yes_ask: int | None = None
    previous_price: int | None = None
    notional_value: int | None = None
    settlement_value: int | None = None
    liquidity: int | None = None
    volume: int | None = None
    volume_24h: int | None = None
    open_interest: int | None = None
    tick_size: int | None = None
    response_price_units: str | None = None
    category: str | None = None
    risk_limit_cents: int | None = None
    rules_primary: str | None = None
    rules_secondary: str | None = None


class MarketsPageWire(msgspec.Struct, frozen=True, kw_only=True):
    markets: list[MarketWire] | None = None
    cursor: str | None = ""


class MarketResponseWire(msgspec.Struct, frozen=True):
    market: MarketWire


# --- order book ---------------------------------------------------------------------------------


class BookWire(WireStruct, frozen=True, kw_only=True):
    """Both REST book shapes: ``yes_dollars``/``no_dollars`` ([price str, count str|int]) and
    legacy ``yes``/``no`` ([cents, contracts], or null when empty)."""

    yes_dollars: list[tuple[str, str | int]] | None = None
    no_dollars: list[tuple[str, str | int]] | None = None
    yes: list[tuple[int, int]] | None = None
    no: list[tuple[int, int]] | None = None


class OrderbookResponseWire(WireStruct, frozen=True, kw_only=True):
    orderbook_fp: BookWire | None = None  # current
    orderbook: BookWire | None = None  # legacy / SDK 3.2.0


# --- balance and positions ------------------------------------------------------------------------


class BalanceWire(WireStruct, frozen=True, kw_only=True):
    balance: int | None = None  # cents
    balance_dollars: str | None = None
    portfolio_value: int | None = None  # cents
    portfolio_value_dollars: str | None = None
    updated_ts: int | None = None  # seconds


class MarketPositionWire(WireStruct, frozen=True, kw_only=True):
    ticker: str
    position_fp: str | None = None
    position: int | None = None
    total_traded_dollars: str | None = None
    total_traded: int | None = None
    market_exposure_dollars: str | None = None
    market_exposure: int | None = None
    realized_pnl_dollars: str | None = None
    realized_pnl: int | None = None
    fees_paid_dollars: str | None = None
    fees_paid: int | None = None
    resting_orders_count: int | None = None
    last_updated_ts: str | None = None


class EventPositionWire(WireStruct, frozen=True, kw_only=True):
    event_ticker: str
    total_cost_dollars: str | None = None
    total_cost: int | None = None
    total_cost_shares_fp: str | None = None
    total_cost_shares: int | None = None
    event_exposure_dollars: str | None = None
    event_exposure: int | None = None
    realized_pnl_dollars: str | None = None
    realized_pnl: int | None = None
    fees_paid_dollars: str | None = None
    fees_paid: int | None = None


class PositionsPageWire(msgspec.Struct, frozen=True, kw_only=True):
    market_positions: list[MarketPositionWire] | None = None
    event_positions: list[EventPositionWire] | None = None
    cursor: str | None = ""


# --- orders ---------------------------------------------------------------------------------------


class OrderWire(WireStruct, frozen=True, kw_only=True):
    order_id: str
    ticker: str
    user_id: str | None = None
    client_order_id: str | None = None
    side: str | None = None  # deprecated in favour of outcome_side/book_side, still sent
    action: str | None = None
    outcome_side: str | None = None
    book_side: str | None = None
    type: str | None = None
    status: str
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    yes_price: int | None = None
    no_price: int | None = None
    initial_count_fp: str | None = None
    fill_count_fp: str | None = None
    remaining_count_fp: str | None = None
    initial_count: int | None = None
    fill_count: int | None = None
    remaining_count: int | None = None
    taker_fill_cost_dollars: str | None = None
    maker_fill_cost_dollars: str | None = None
    taker_fees_dollars: str | None = None
    maker_fees_dollars: str | None = None
    taker_fill_cost: int | None = None
    maker_fill_cost: int | None = None
    taker_fees: int | None = None
    maker_fees: int | None = None
    queue_position: int | None = None
    created_time: str | None = None
    last_update_time: str | None = None
    expiration_time: str | None = None
    self_trade_prevention_type: str | None = None
    order_group_id: str | None = None


class OrderResponseWire(msgspec.Struct, frozen=True):
    order: OrderWire


class OrdersPageWire(msgspec.Struct, frozen=True, kw_only=True):
    orders: list[OrderWire] | None = None
    cursor: str | None = ""


class CancelResponseWire(WireStruct, frozen=True, kw_only=True):
    order: OrderWire
    reduced_by: int | None = None  # legacy whole contracts (SDK 3.2.0 requires it)
    reduced_by_fp: str | None = None


# --- fills --------------------------------------------------------------------------------------


class FillWire(WireStruct, frozen=True, kw_only=True):
    fill_id: str | None = None
    trade_id: str | None = None
    order_id: str
    ticker: str | None = None
    market_ticker: str | None = None
    client_order_id: str | None = None
    side: str | None = None
    action: str | None = None
    outcome_side: str | None = None
    book_side: str | None = None
    count_fp: str | None = None
    count: int | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    yes_price_fixed: str | None = None  # legacy dollar strings (removed 2026-04-02)
    no_price_fixed: str | None = None
    yes_price: int | None = None
    no_price: int | None = None
    is_taker: bool | None = None
    fee_cost: str | None = None
    created_time: str | None = None
    ts: int | None = None


class FillsPageWire(msgspec.Struct, frozen=True, kw_only=True):
    fills: list[FillWire] | None = None
    cursor: str | None = ""
