"""Kalshi REST v2 portfolio bodies, normalised: balance, positions, orders, cancels and fills,
with their body decoders. Exact ints from prices.py, built from the wire Structs of rest_wire.py.

NO-side pricing: Kalshi quotes orders/fills by the YES price. An order/fill on the NO side costs
``no_price = 1 - yes_price``; ``Order.price`` / ``Fill.price`` give the price of the record's own
side (wire_fields.SidedRecord) so nobody prices a NO fill with the YES price again.
"""

from __future__ import annotations

from kalshiflow.market.prices import Money, Price, PriceError, Qty
from kalshiflow.market.types import Action, OrderStatus, Side
from kalshiflow.protocol.rest_wire import (
    BalanceWire,
    CancelResponseWire,
    FillsPageWire,
    FillWire,
    OrderResponseWire,
    OrdersPageWire,
    OrderWire,
    PositionsPageWire,
    decode_wire,
    normalised,
)
from kalshiflow.protocol.wire_fields import (
    ModelStruct,
    SidedRecord,
    direction,
    to_money,
    to_price,
    to_qty,
    yes_no_prices,
)

# --- balance and positions ------------------------------------------------------------------------


class Balance(ModelStruct, frozen=True, kw_only=True):
    balance: Money
    portfolio_value: Money
    updated_ts: int | None


def balance_from_wire(w: BalanceWire) -> Balance:
    return Balance(
        balance=to_money(w.balance_dollars, w.balance),
        portfolio_value=to_money(w.portfolio_value_dollars, w.portfolio_value),
        updated_ts=w.updated_ts,
    )


class MarketPosition(ModelStruct, frozen=True, kw_only=True):
    ticker: str
    position: Qty  # signed: > 0 long YES, < 0 long NO
    total_traded: Money
    market_exposure: Money
    realized_pnl: Money
    fees_paid: Money
    resting_orders_count: int
    last_updated_ts: str | None


class EventPosition(ModelStruct, frozen=True, kw_only=True):
    event_ticker: str
    total_cost: Money
    total_cost_shares: Qty
    event_exposure: Money
    realized_pnl: Money
    fees_paid: Money


class PositionsPage(ModelStruct, frozen=True, kw_only=True):
    market_positions: tuple[MarketPosition, ...]
    event_positions: tuple[EventPosition, ...]
    cursor: str


def positions_from_wire(w: PositionsPageWire) -> PositionsPage:
    return PositionsPage(
        market_positions=tuple(
            MarketPosition(
                ticker=m.ticker,
                position=to_qty(m.position_fp, m.position),
                total_traded=to_money(m.total_traded_dollars, m.total_traded),
                market_exposure=to_money(m.market_exposure_dollars, m.market_exposure),
                realized_pnl=to_money(m.realized_pnl_dollars, m.realized_pnl),
                fees_paid=to_money(m.fees_paid_dollars, m.fees_paid),
                resting_orders_count=m.resting_orders_count or 0,
                last_updated_ts=m.last_updated_ts,
            )
            for m in w.market_positions or ()
        ),
        event_positions=tuple(
            EventPosition(
                event_ticker=e.event_ticker,
                total_cost=to_money(e.total_cost_dollars, e.total_cost),
                total_cost_shares=to_qty(e.total_cost_shares_fp, e.total_cost_shares),
                event_exposure=to_money(e.event_exposure_dollars, e.event_exposure),
                realized_pnl=to_money(e.realized_pnl_dollars, e.realized_pnl),
                fees_paid=to_money(e.fees_paid_dollars, e.fees_paid),
            )
            for e in w.event_positions or ()
        ),
        cursor=w.cursor or "",
    )


# --- orders ---------------------------------------------------------------------------------------


class Order(ModelStruct, SidedRecord, frozen=True, kw_only=True):
    order_id: str
    client_order_id: str
    ticker: str
    side: Side
    action: Action
    type: str
    status: OrderStatus
    yes_price: Price
    no_price: Price
    initial_count: Qty
    fill_count: Qty
    remaining_count: Qty
    taker_fill_cost: Money
    maker_fill_cost: Money
    taker_fees: Money
    maker_fees: Money
    created_time: str | None = None
    last_update_time: str | None = None
    expiration_time: str | None = None


def order_from_wire(w: OrderWire) -> Order:
    side, action = direction(w.side, w.action, w.outcome_side, "order")
    yes, no = yes_no_prices(
        to_price(w.yes_price_dollars, w.yes_price, None), to_price(w.no_price_dollars, w.no_price, None)
    )
    try:
        status = OrderStatus(w.status)
    except ValueError:
        raise PriceError(f"order status {w.status!r} is not resting/canceled/executed") from None
    return Order(
        order_id=w.order_id,
        client_order_id=w.client_order_id or "",
        ticker=w.ticker,
        side=side,
        action=action,
        type=w.type or "limit",
        status=status,
        yes_price=yes,
        no_price=no,
        initial_count=to_qty(w.initial_count_fp, w.initial_count),
        fill_count=to_qty(w.fill_count_fp, w.fill_count),
        remaining_count=to_qty(w.remaining_count_fp, w.remaining_count),
        taker_fill_cost=to_money(w.taker_fill_cost_dollars, w.taker_fill_cost),
        maker_fill_cost=to_money(w.maker_fill_cost_dollars, w.maker_fill_cost),
        taker_fees=to_money(w.taker_fees_dollars, w.taker_fees),
        maker_fees=to_money(w.maker_fees_dollars, w.maker_fees),
        created_time=w.created_time,
        last_update_time=w.last_update_time,
        expiration_time=w.expiration_time,
    )


class OrdersPage(ModelStruct, frozen=True, kw_only=True):
    orders: tuple[Order, ...]
    cursor: str


class CancelResult(ModelStruct, frozen=True, kw_only=True):
    order: Order
    reduced_by: Qty


# --- fills --------------------------------------------------------------------------------------


class Fill(ModelStruct, SidedRecord, frozen=True, kw_only=True):
    fill_id: str
    order_id: str
    ticker: str
    side: Side
    action: Action
    count: Qty
    yes_price: Price
    no_price: Price
    is_taker: bool
    fee: Money
    created_time: str | None = None
    ts: int | None = None  # seconds

    @property
    def notional(self) -> Money:
        """price x count in micro-dollars (paid for a buy, received for a sell), before fees."""
        return Money(self.price * self.count)


def fill_from_wire(w: FillWire) -> Fill:
    side, action = direction(w.side, w.action, w.outcome_side, "fill")
    yes, no = yes_no_prices(
        to_price(w.yes_price_dollars or w.yes_price_fixed, w.yes_price, None),
        to_price(w.no_price_dollars or w.no_price_fixed, w.no_price, None),
    )
    return Fill(
        fill_id=w.fill_id or w.trade_id or "",
        order_id=w.order_id,
        ticker=w.ticker or w.market_ticker or "",
        side=side,
        action=action,
        count=to_qty(w.count_fp, w.count),
        yes_price=yes,
        no_price=no,
        is_taker=bool(w.is_taker),
        fee=to_money(w.fee_cost, None),
        created_time=w.created_time,
        ts=w.ts,
    )


class FillsPage(ModelStruct, frozen=True, kw_only=True):
    fills: tuple[Fill, ...]
    cursor: str


# --- body decoders (bytes -> normalised) ------------------------------------------------------------


def decode_balance(data: bytes) -> Balance:
    return normalised("balance", balance_from_wire, decode_wire(data, BalanceWire, "balance"))


def decode_positions(data: bytes) -> PositionsPage:
    return normalised("positions", positions_from_wire, decode_wire(data, PositionsPageWire, "positions"))


def decode_order(data: bytes) -> Order:
    """{"order": Order} -- GET /portfolio/orders/{id} and the create-order 201 response."""
    return normalised("order", order_from_wire, decode_wire(data, OrderResponseWire, "order").order)


def decode_orders_page(data: bytes) -> OrdersPage:
    w = decode_wire(data, OrdersPageWire, "orders")
    orders = normalised("orders", lambda: tuple(order_from_wire(o) for o in w.orders or ()))
    return OrdersPage(orders=orders, cursor=w.cursor or "")


def decode_cancel(data: bytes) -> CancelResult:
    w = decode_wire(data, CancelResponseWire, "cancel")
    order = normalised("cancel", order_from_wire, w.order)
    reduced = normalised("cancel", to_qty, w.reduced_by_fp, w.reduced_by)
    return CancelResult(order=order, reduced_by=reduced)


def decode_fills_page(data: bytes) -> FillsPage:
    w = decode_wire(data, FillsPageWire, "fills")
    fills = normalised("fills", lambda: tuple(fill_from_wire(f) for f in w.fills or ()))
    return FillsPage(fills=fills, cursor=w.cursor or "")
