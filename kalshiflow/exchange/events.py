"""Value types of the exchange simulator: market metadata, order requests and records, and the
events :class:`kalshiflow.exchange.state.ExchangeState` publishes to its listeners.

Units follow :mod:`kalshiflow.market.prices`: prices are integer ticks of $0.0001, quantities are
hundredths of a contract, money is micro-dollars. Times are epoch seconds (floats) taken from the
state's clock, so a generator running at ``speed`` X can drive a simulated clock.

Orders are submitted as :class:`kalshiflow.market.matching.OrderRequest` (re-exported by
state.py). Price convention of each type is spelled out on the field: orders, trades and fills
carry the YES price (Kalshi's Order/Fill/Trade vocabulary); book events carry the price of the bid ladder they
belong to (a NO bid at 30c is ``side=NO, price=3000``), which is Kalshi's default
(``use_yes_price: false``) orderbook wire convention.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Literal

import msgspec

from kalshiflow.market.fees import FeeType
from kalshiflow.market.prices import Money, Price, Qty
from kalshiflow.market.types import Action, OrderStatus, OrderType, Side, TimeInForce


class MarketStatus(str, Enum):  # noqa: UP042  (same style as market.types)
    """Kalshi's current market statuses (the REST layer maps them to SDK-3.2.0-safe values)."""

    INITIALIZED = "initialized"
    ACTIVE = "active"
    INACTIVE = "inactive"
    CLOSED = "closed"
    DETERMINED = "determined"
    FINALIZED = "finalized"


def new_id() -> str:
    return str(uuid.uuid4())


class MarketInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Static description of one market plus its lifecycle status and result.

    The state keeps the current version and replaces it (``msgspec.structs.replace``) when the
    status or result changes, so a reader always holds a consistent snapshot.
    """

    ticker: str
    event_ticker: str
    series_ticker: str
    title: str
    open_time: float
    close_time: float
    subtitle: str = ""
    yes_sub_title: str = "Yes"
    no_sub_title: str = "No"
    market_id: str = msgspec.field(default_factory=new_id)
    status: MarketStatus = MarketStatus.INITIALIZED
    result: Literal["", "yes", "no"] = ""
    # Name of a grid in kalshiflow.market.prices.GRIDS (Kalshi's price_level_structure).
    price_level_structure: str = "linear_cent"
    # Kalshi series fee_type / fee_multiplier (kalshiflow.market.fees).
    fee_type: FeeType = FeeType.QUADRATIC
    fee_multiplier: float = 1.0
    can_close_early: bool = False
    category: str = "Simulated"
    rules_primary: str = ""
    created_time: float = 0.0


class OrderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An order's state after an operation (REST Order object / user_order payload source)."""

    order_id: str
    owner: str
    ticker: str
    client_order_id: str
    side: Side
    action: Action
    type: OrderType
    time_in_force: TimeInForce
    yes_price: Price
    initial_count: Qty
    fill_count: Qty
    remaining_count: Qty
    status: OrderStatus
    taker_fill_cost: Money
    maker_fill_cost: Money
    taker_fees: Money
    maker_fees: Money
    created_time: float
    last_update_time: float
    expiration_time: float | None = None


class Reject(msgspec.Struct, frozen=True):
    """Why an operation was refused. ``code`` is Kalshi's lower-snake reason code
    (insufficient_balance, market_closed, invalid_price, post_only_cross, order_already_exists,
    market_not_found, not_found, ...)."""

    code: str
    message: str


# --------------------------------------------------------------------------------------------
# Events published to listeners. Every event carries ``ts`` (state clock, epoch seconds).


class BookDelta(msgspec.Struct, frozen=True, kw_only=True, tag="book_delta"):
    """The resting size at one level of one bid ladder changed by ``delta`` (never 0)."""

    ticker: str
    side: Side
    price: Price  # the ladder's own price: a NO bid at 30c is 3000 on side NO
    delta: Qty
    size: Qty  # resulting size at that level (0 = level removed)
    ts: float
    owner: str | None = None  # the account whose order caused the change, if any
    client_order_id: str | None = None


class TradeEvent(msgspec.Struct, frozen=True, kw_only=True, tag="trade"):
    """One match on the public tape. ``taker_side`` is the taker's outcome side."""

    ticker: str
    trade_id: str
    yes_price: Price
    count: Qty
    taker_side: Side
    ts: float


class FillEvent(msgspec.Struct, frozen=True, kw_only=True, tag="fill"):
    """One account's side of a trade (a trade between two accounts yields two fills)."""

    owner: str
    ticker: str
    trade_id: str
    order_id: str
    client_order_id: str
    side: Side
    action: Action
    yes_price: Price
    count: Qty
    fee: Money
    is_taker: bool
    post_position: Qty  # signed net position after the fill: + YES, - NO
    ts: float


class PositionEvent(msgspec.Struct, frozen=True, kw_only=True, tag="position"):
    """An account's position in one market after a change (fill or settlement)."""

    owner: str
    ticker: str
    position: Qty  # signed: + YES, - NO
    position_cost: Money
    realized_pnl: Money
    fees_paid: Money
    volume: Qty
    ts: float


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True, tag="order"):
    """An order was created, filled, cancelled or expired."""

    order: OrderRecord
    ts: float


# Kalshi's market_lifecycle_v2 event types, plus "opened"/"closed" for the time-driven
# initialized->active and active->closed transitions, which Kalshi does not announce (the WS
# layer does not forward them; in-process listeners still learn about every status change).
LifecycleType = Literal[
    "created", "opened", "activated", "deactivated", "close_date_updated", "closed", "determined", "settled"
]


class LifecycleEvent(msgspec.Struct, frozen=True, kw_only=True, tag="lifecycle"):
    """market_lifecycle_v2 source. ``market`` is the market's info after the change."""

    event_type: LifecycleType
    market: MarketInfo
    ts: float


ExchangeEvent = BookDelta | TradeEvent | FillEvent | PositionEvent | OrderEvent | LifecycleEvent


# --------------------------------------------------------------------------------------------
# Results and read views of ExchangeState.


class SubmitResult(msgspec.Struct, frozen=True):
    """Outcome of :meth:`ExchangeState.submit`: the order after matching (None when rejected),
    the submitter's fills from this call, and the rejection if any."""

    order: OrderRecord | None
    fills: tuple[FillEvent, ...] = ()
    reject: Reject | None = None

    @property
    def ok(self) -> bool:
        return self.reject is None


class CancelResult(msgspec.Struct, frozen=True):
    """Outcome of :meth:`ExchangeState.cancel`: the order after cancel and how much was removed."""

    order: OrderRecord | None
    reduced_by: Qty = Qty(0)
    reject: Reject | None = None


class MarketStats(msgspec.Struct, frozen=True, kw_only=True):
    """Activity figures of one market (REST Market object / ticker source)."""

    volume: Qty
    volume_24h: Qty
    open_interest: Qty
    last_price: Price | None
    dollar_volume: Money
    last_trade_ts: float | None


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    """One account's holding in one market (REST market_positions row)."""

    ticker: str
    event_ticker: str
    position: Qty  # signed: + YES, - NO
    position_cost: Money  # what the held contracts cost (Kalshi's market_exposure)
    realized_pnl: Money
    fees_paid: Money
    total_traded: Money
    volume: Qty
    resting_orders_count: int
    last_updated_ts: float


class BookView(msgspec.Struct, frozen=True):
    """Both bid ladders, ascending (best bid last), NO prices in NO-leg terms."""

    yes: tuple[tuple[int, int], ...]  # (price ticks, size in hundredths)
    no: tuple[tuple[int, int], ...]
