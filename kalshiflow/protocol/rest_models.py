"""Kalshi REST v2 bodies: wire Structs (both shapes) and normalised Structs with exact integers.

Two layers, on purpose:

- ``*Wire`` Structs mirror the JSON. Every numeric field exists in both forms -- the current
  fixed-point strings (``*_dollars``, ``*_fp``) and the legacy integers (cents, whole contracts)
  -- all optional, so one Struct decodes a 2025 body, a 2026 body or the simulator's superset.
  They are public so the simulator can build responses from the very types the client decodes.
- Normalised Structs (Market, Order, Fill, ...) hold only exact ints from prices.py: ``Price``
  ticks of $0.0001, ``Qty`` hundredths of a contract, ``Money`` micro-dollars. Fixed-point fields
  win over legacy ones when both are present.

NO-side pricing: Kalshi quotes orders/fills by the YES price. An order/fill on the NO side costs
``no_price = 1 - yes_price``; ``Order.price`` / ``Fill.price`` give the price of the record's own
side so nobody prices a NO fill with the YES price again (the old system did).

Create-order requests go both ways: ``encode_create_order`` (client) and ``decode_create_order``
(simulator, accepting every price/count form Kalshi accepts).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from kalshiflow.market.prices import (
    CENT,
    GRIDS,
    LINEAR_CENT,
    ONE_DOLLAR,
    Money,
    Price,
    PriceError,
    PriceGrid,
    PriceRange,
    Qty,
    complement,
    format_price,
    format_qty,
    money_from_cents,
    money_to_cents_floor,
    parse_money,
    parse_price,
    parse_qty,
    price_from_cents,
    price_to_cents,
    qty_from_contracts,
    qty_to_contracts,
)
from kalshiflow.market.types import Action, OrderStatus, Side, bid_side
from kalshiflow.protocol.errors import DecodeError

T = TypeVar("T")

# --- conversion helpers -----------------------------------------------------------------------


def to_price(dollars: str | None, cents: int | None, default: int | None = 0) -> Price | None:
    """Fixed-point dollar string if present (legacy tickers send "" for 'never'), else cents."""
    if dollars:
        return parse_price(dollars)
    if cents is not None:
        return price_from_cents(cents)
    return None if default is None else Price(default)


def to_qty(fp: str | None, contracts: int | None, default: int = 0) -> Qty:
    if fp:
        return parse_qty(fp)
    if contracts is not None:
        return qty_from_contracts(contracts)
    return Qty(default)


def to_money(dollars: str | None, cents: int | None, default: int = 0) -> Money:
    if dollars:
        return parse_money(dollars)
    if cents is not None:
        return money_from_cents(cents)
    return Money(default)


def yes_no_prices(yes: Price | None, no: Price | None) -> tuple[Price, Price]:
    """Both legs of a price; one is derived from the other. A pair that does not sum to 1 is refused."""
    if yes is None and no is None:
        raise PriceError("record has neither a YES nor a NO price")
    if yes is None:
        assert no is not None
        return complement(no), no
    if no is None:
        return yes, complement(yes)
    if yes + no != ONE_DOLLAR:
        raise PriceError(f"yes_price {yes} + no_price {no} != 1 dollar")
    return yes, no


def _side(value: str | None, what: str) -> Side:
    try:
        return Side(value)
    except ValueError:
        raise PriceError(f"{what} {value!r} is not yes/no") from None


def _decode(data: bytes | str, typ: type[T], what: str) -> T:
    try:
        return msgspec.json.decode(data, type=typ)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise DecodeError(f"{what}: {err}") from None


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of wire Structs: unknown keys ignored (forward compatible). Every optional field
    defaults to None so that omit_defaults drops exactly the absent ones ("" and false are sent)."""


class _Model(msgspec.Struct, frozen=True, kw_only=True):
    pass


# --- exchange status, errors --------------------------------------------------------------------


class ExchangeStatus(_Model, frozen=True, kw_only=True):
    exchange_active: bool
    trading_active: bool
    exchange_estimated_resume_time: str | None = None


class ErrorBody(_Model, frozen=True, kw_only=True):
    code: str = ""
    message: str = ""
    details: str = ""
    service: str = ""


class _ErrorEnvelope(msgspec.Struct, frozen=True):
    # Kalshi nests under "error"; the spec's flat form and the 429 string form also occur.
    error: ErrorBody | str | None = None
    code: str = ""
    message: str = ""
    details: str = ""
    service: str = ""


def decode_error_body(data: bytes) -> ErrorBody | None:
    """Parse any of Kalshi's error body shapes; None when the body is not a JSON error object."""
    try:
        env = msgspec.json.decode(data, type=_ErrorEnvelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if isinstance(env.error, ErrorBody):
        return env.error
    if isinstance(env.error, str):
        return ErrorBody(code="", message=env.error)
    if env.code or env.message:
        return ErrorBody(code=env.code, message=env.message, details=env.details, service=env.service)
    return None


def encode_error_body(code: str, message: str, details: str = "", service: str = "exchange") -> bytes:
    """The nested form real Kalshi returns: {"error": {"code", "message", "details", "service"}}."""
    return msgspec.json.encode(
        {"error": ErrorBody(code=code, message=message, details=details, service=service)}
    )


# --- markets ------------------------------------------------------------------------------------


class PriceRangeWire(_Wire, frozen=True, kw_only=True):
    start: str
    end: str
    step: str


class MarketWire(_Wire, frozen=True, kw_only=True):
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


class Market(_Model, frozen=True, kw_only=True):
    ticker: str
    event_ticker: str
    market_type: str
    title: str
    subtitle: str
    yes_sub_title: str
    no_sub_title: str
    status: str  # Kalshi market status (initialized/active/inactive/closed/determined/.../finalized)
    result: str
    open_time: str | None
    close_time: str | None
    expiration_time: str | None
    can_close_early: bool
    yes_bid: Price  # 0 = no bid
    yes_ask: Price  # ONE_DOLLAR = no ask
    no_bid: Price
    no_ask: Price
    last_price: Price
    previous_yes_bid: Price
    previous_yes_ask: Price
    previous_price: Price
    yes_bid_size: Qty
    yes_ask_size: Qty
    volume: Qty
    volume_24h: Qty
    open_interest: Qty
    notional_value: Price
    settlement_value: Price | None
    liquidity: Money
    price_level_structure: str
    price_ranges: tuple[PriceRange, ...]

    @property
    def grid(self) -> PriceGrid:
        shared = GRIDS.get(self.price_level_structure)
        if shared is not None and shared.ranges == self.price_ranges:
            return shared
        return PriceGrid(self.price_level_structure, self.price_ranges)


def market_from_wire(w: MarketWire) -> Market:
    if w.price_ranges:
        ranges = tuple(
            PriceRange(parse_price(r.start), parse_price(r.end), parse_price(r.step)) for r in w.price_ranges
        )
    elif w.tick_size and w.tick_size != 1:
        # Legacy whole-cent tick sizes above 1 cent.
        ranges = (PriceRange(0, ONE_DOLLAR, w.tick_size * CENT),)
    else:
        ranges = LINEAR_CENT.ranges
    def p(dollars: str | None, cents: int | None, default: int = 0) -> Price:
        price = to_price(dollars, cents, None)
        return Price(default) if price is None else price

    return Market(
        ticker=w.ticker,
        event_ticker=w.event_ticker or "",
        market_type=w.market_type or "binary",
        title=w.title or "",
        subtitle=w.subtitle or "",
        yes_sub_title=w.yes_sub_title or "",
        no_sub_title=w.no_sub_title or "",
        status=w.status or "",
        result=w.result or "",
        open_time=w.open_time,
        close_time=w.close_time,
        expiration_time=w.expected_expiration_time or w.expiration_time or w.latest_expiration_time,
        can_close_early=bool(w.can_close_early),
        yes_bid=p(w.yes_bid_dollars, w.yes_bid),
        yes_ask=p(w.yes_ask_dollars, w.yes_ask, ONE_DOLLAR),
        no_bid=p(w.no_bid_dollars, w.no_bid),
        no_ask=p(w.no_ask_dollars, w.no_ask, ONE_DOLLAR),
        last_price=p(w.last_price_dollars, w.last_price),
        previous_yes_bid=p(w.previous_yes_bid_dollars, w.previous_yes_bid),
        previous_yes_ask=p(w.previous_yes_ask_dollars, w.previous_yes_ask, ONE_DOLLAR),
        previous_price=p(w.previous_price_dollars, w.previous_price),
        yes_bid_size=to_qty(w.yes_bid_size_fp, None),
        yes_ask_size=to_qty(w.yes_ask_size_fp, None),
        volume=to_qty(w.volume_fp, w.volume),
        volume_24h=to_qty(w.volume_24h_fp, w.volume_24h),
        open_interest=to_qty(w.open_interest_fp, w.open_interest),
        notional_value=p(w.notional_value_dollars, w.notional_value, ONE_DOLLAR),
        settlement_value=to_price(w.settlement_value_dollars, w.settlement_value, None),
        liquidity=to_money(w.liquidity_dollars, w.liquidity),
        price_level_structure=w.price_level_structure or "linear_cent",
        price_ranges=ranges,
    )


class MarketsPageWire(msgspec.Struct, frozen=True, kw_only=True):
    markets: list[MarketWire] | None = None
    cursor: str | None = ""


class MarketResponseWire(msgspec.Struct, frozen=True):
    market: MarketWire


class MarketsPage(_Model, frozen=True, kw_only=True):
    markets: tuple[Market, ...]
    cursor: str  # "" = last page


# --- order book ---------------------------------------------------------------------------------

Level = tuple[Price, Qty]


class BookWire(_Wire, frozen=True, kw_only=True):
    """Both REST book shapes: ``yes_dollars``/``no_dollars`` ([price str, count str|int]) and
    legacy ``yes``/``no`` ([cents, contracts], or null when empty)."""

    yes_dollars: list[tuple[str, str | int]] | None = None
    no_dollars: list[tuple[str, str | int]] | None = None
    yes: list[tuple[int, int]] | None = None
    no: list[tuple[int, int]] | None = None


class OrderbookResponseWire(_Wire, frozen=True, kw_only=True):
    orderbook_fp: BookWire | None = None  # current
    orderbook: BookWire | None = None  # legacy / SDK 3.2.0


class Orderbook(_Model, frozen=True, kw_only=True):
    """Bids only, ascending (best bid last). ``yes`` levels are YES prices, ``no`` levels NO prices."""

    ticker: str
    yes: tuple[Level, ...]
    no: tuple[Level, ...]

    @property
    def best_yes_bid(self) -> Level | None:
        return self.yes[-1] if self.yes else None

    @property
    def best_no_bid(self) -> Level | None:
        return self.no[-1] if self.no else None

    @property
    def best_yes_ask(self) -> Price | None:
        """Best YES ask = 1 - best NO bid."""
        return complement(self.no[-1][0]) if self.no else None


def _levels(
    fixed: list[tuple[str, str | int]] | None, legacy: list[tuple[int, int]] | None
) -> tuple[Level, ...]:
    if fixed is not None:
        out = [
            (parse_price(px), qty_from_contracts(n) if isinstance(n, int) else parse_qty(n))
            for px, n in fixed
        ]
    else:
        out = [(price_from_cents(c), qty_from_contracts(n)) for c, n in legacy or ()]
    out.sort(key=lambda lv: lv[0])
    return tuple(out)


def orderbook_from_wire(ticker: str, w: OrderbookResponseWire) -> Orderbook:
    book = w.orderbook_fp or w.orderbook or BookWire()
    return Orderbook(
        ticker=ticker, yes=_levels(book.yes_dollars, book.yes), no=_levels(book.no_dollars, book.no)
    )


# --- balance and positions ------------------------------------------------------------------------


class BalanceWire(_Wire, frozen=True, kw_only=True):
    balance: int | None = None  # cents
    balance_dollars: str | None = None
    portfolio_value: int | None = None  # cents
    portfolio_value_dollars: str | None = None
    updated_ts: int | None = None  # seconds


class Balance(_Model, frozen=True, kw_only=True):
    balance: Money
    portfolio_value: Money
    updated_ts: int | None


def balance_from_wire(w: BalanceWire) -> Balance:
    return Balance(
        balance=to_money(w.balance_dollars, w.balance),
        portfolio_value=to_money(w.portfolio_value_dollars, w.portfolio_value),
        updated_ts=w.updated_ts,
    )


class MarketPositionWire(_Wire, frozen=True, kw_only=True):
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


class EventPositionWire(_Wire, frozen=True, kw_only=True):
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


class MarketPosition(_Model, frozen=True, kw_only=True):
    ticker: str
    position: Qty  # signed: > 0 long YES, < 0 long NO
    total_traded: Money
    market_exposure: Money
    realized_pnl: Money
    fees_paid: Money
    resting_orders_count: int
    last_updated_ts: str | None


class EventPosition(_Model, frozen=True, kw_only=True):
    event_ticker: str
    total_cost: Money
    total_cost_shares: Qty
    event_exposure: Money
    realized_pnl: Money
    fees_paid: Money


class PositionsPage(_Model, frozen=True, kw_only=True):
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


class OrderWire(_Wire, frozen=True, kw_only=True):
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


class Order(_Model, frozen=True, kw_only=True):
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

    @property
    def price(self) -> Price:
        """Limit price of the order's own side: the NO price for a NO order."""
        return self.no_price if self.side is Side.NO else self.yes_price

    @property
    def outcome_side(self) -> Side:
        """The contract the order buys: selling YES buys NO."""
        return bid_side(self.side, self.action)


def direction(
    side: str | None, action: str | None, outcome_side: str | None, what: str
) -> tuple[Side, Action]:
    """(side, action) of an order/fill; current-only bodies carry just outcome_side/book_side."""
    if side is None:
        # (buy yes) and (sell no) are the same exposure; call it a buy of the outcome.
        return _side(outcome_side, f"{what} outcome_side"), Action.BUY
    try:
        act = Action(action or "buy")
    except ValueError:
        raise PriceError(f"{what} action {action!r} is not buy/sell") from None
    return _side(side, f"{what} side"), act


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


class OrderResponseWire(msgspec.Struct, frozen=True):
    order: OrderWire


class OrdersPageWire(msgspec.Struct, frozen=True, kw_only=True):
    orders: list[OrderWire] | None = None
    cursor: str | None = ""


class OrdersPage(_Model, frozen=True, kw_only=True):
    orders: tuple[Order, ...]
    cursor: str


class CancelResponseWire(_Wire, frozen=True, kw_only=True):
    order: OrderWire
    reduced_by: int | None = None  # legacy whole contracts (SDK 3.2.0 requires it)
    reduced_by_fp: str | None = None


class CancelResult(_Model, frozen=True, kw_only=True):
    order: Order
    reduced_by: Qty


# --- create order -----------------------------------------------------------------------------


class CreateOrderWire(_Wire, frozen=True, kw_only=True):
    """POST /portfolio/orders body (v1). Give one price: yes_price, no_price or a *_dollars string."""

    ticker: str
    side: str
    action: str
    client_order_id: str | None = None
    count: int | None = None
    count_fp: str | None = None
    yes_price: int | None = None
    no_price: int | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    type: str | None = None
    time_in_force: str | None = None
    expiration_ts: int | None = None
    buy_max_cost: int | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    self_trade_prevention_type: str | None = None
    order_group_id: str | None = None
    cancel_order_on_pause: bool | None = None
    subaccount: int | None = None


class OrderRequest(_Model, frozen=True, kw_only=True):
    """An order to place. ``price`` is the limit price OF ``side``: buy NO at 0.30 -> price 3000."""

    ticker: str
    side: Side
    action: Action
    count: Qty
    price: Price | None  # None only for a legacy type="market" order
    client_order_id: str = ""
    time_in_force: str | None = None  # fill_or_kill | good_till_canceled | immediate_or_cancel
    type: str | None = None  # omitted on the wire by default (Kalshi removed it 2026-02-11)
    expiration_ts: int | None = None
    buy_max_cost: Money | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    self_trade_prevention_type: str | None = None
    order_group_id: str | None = None
    cancel_order_on_pause: bool | None = None
    subaccount: int | None = None

    @property
    def yes_price(self) -> Price | None:
        if self.price is None:
            return None
        return complement(self.price) if self.side is Side.NO else self.price


def encode_create_order(req: OrderRequest, *, legacy: bool = False) -> bytes:
    """Request body. Current form: ``count_fp`` + ``{side}_price_dollars``. ``legacy=True`` sends
    integer ``count`` + ``{side}_price`` instead (raises PriceError if not whole contracts/cents).
    Exactly one price field is sent because Kalshi rejects bodies naming two."""
    price_fields: dict[str, Any] = {}
    if req.price is not None:
        key = f"{req.side.value}_price"
        if legacy:
            price_fields[key] = price_to_cents(req.price)
        else:
            price_fields[key + "_dollars"] = format_price(req.price)
    buy_max_cost = None if req.buy_max_cost is None else money_to_cents_floor(req.buy_max_cost)
    wire = CreateOrderWire(
        ticker=req.ticker,
        side=req.side.value,
        action=req.action.value,
        client_order_id=req.client_order_id or None,
        count=qty_to_contracts(req.count) if legacy else None,
        count_fp=None if legacy else format_qty(req.count),
        type=req.type,
        time_in_force=req.time_in_force,
        expiration_ts=req.expiration_ts,
        buy_max_cost=buy_max_cost,
        post_only=req.post_only,
        reduce_only=req.reduce_only,
        self_trade_prevention_type=req.self_trade_prevention_type,
        order_group_id=req.order_group_id,
        cancel_order_on_pause=req.cancel_order_on_pause,
        subaccount=req.subaccount,
        **price_fields,
    )
    return msgspec.json.encode(wire)


def decode_create_order(data: bytes) -> OrderRequest:
    """Simulator side: accept every price/count form; DecodeError names the problem (-> HTTP 400)."""
    w = _decode(data, CreateOrderWire, "create order")
    try:
        side = _side(w.side, "side")
        try:
            action = Action(w.action)
        except ValueError:
            raise PriceError(f"action {w.action!r} is not buy/sell") from None
        counts = {c for c in (to_qty(w.count_fp, None, -1), to_qty(None, w.count, -1)) if c != -1}
        if len(counts) != 1:
            raise PriceError("give count or count_fp (equal if both)")
        count = counts.pop()
        if count <= 0:
            raise PriceError("count must be positive")
        yes = {
            p
            for p in (to_price(w.yes_price_dollars, None, None), to_price(None, w.yes_price, None))
            if p is not None
        }
        no = {
            p
            for p in (to_price(w.no_price_dollars, None, None), to_price(None, w.no_price, None))
            if p is not None
        }
        if len(yes) > 1 or len(no) > 1 or (yes and no):
            raise PriceError("give exactly one price (yes_price, no_price or a *_dollars string)")
        price: Price | None
        if yes:
            yes_price = yes.pop()
            price = complement(yes_price) if side is Side.NO else yes_price
        elif no:
            no_price = no.pop()
            price = no_price if side is Side.NO else complement(no_price)
        elif w.type == "market":
            price = None
        else:
            raise PriceError("a limit order needs a price")
        if price is not None and not 0 < price < ONE_DOLLAR:
            raise PriceError("price must lie strictly between 0 and 1")
    except PriceError as err:
        raise DecodeError(str(err)) from None
    return OrderRequest(
        ticker=w.ticker,
        side=side,
        action=action,
        count=count,
        price=price,
        client_order_id=w.client_order_id or "",
        time_in_force=w.time_in_force,
        type=w.type,
        expiration_ts=w.expiration_ts,
        buy_max_cost=None if w.buy_max_cost is None else money_from_cents(w.buy_max_cost),
        post_only=w.post_only,
        reduce_only=w.reduce_only,
        self_trade_prevention_type=w.self_trade_prevention_type,
        order_group_id=w.order_group_id,
        cancel_order_on_pause=w.cancel_order_on_pause,
        subaccount=w.subaccount,
    )


# --- fills --------------------------------------------------------------------------------------


class FillWire(_Wire, frozen=True, kw_only=True):
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


class Fill(_Model, frozen=True, kw_only=True):
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
    def price(self) -> Price:
        """Execution price of the fill's own side: a NO fill at yes_price 0.75 cost 0.25."""
        return self.no_price if self.side is Side.NO else self.yes_price

    @property
    def outcome_side(self) -> Side:
        return bid_side(self.side, self.action)

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


class FillsPageWire(msgspec.Struct, frozen=True, kw_only=True):
    fills: list[FillWire] | None = None
    cursor: str | None = ""


class FillsPage(_Model, frozen=True, kw_only=True):
    fills: tuple[Fill, ...]
    cursor: str


# --- body decoders (bytes -> normalised) ------------------------------------------------------------


def _convert(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except PriceError as err:
        raise DecodeError(f"{what}: {err}") from None


def decode_exchange_status(data: bytes) -> ExchangeStatus:
    return _decode(data, ExchangeStatus, "exchange status")


def decode_market(data: bytes) -> Market:
    return _convert("market", market_from_wire, _decode(data, MarketResponseWire, "market").market)


def decode_markets_page(data: bytes) -> MarketsPage:
    w = _decode(data, MarketsPageWire, "markets")
    markets = _convert("markets", lambda: tuple(market_from_wire(m) for m in w.markets or ()))
    return MarketsPage(markets=markets, cursor=w.cursor or "")


def decode_orderbook(ticker: str, data: bytes) -> Orderbook:
    return _convert(
        "orderbook", orderbook_from_wire, ticker, _decode(data, OrderbookResponseWire, "orderbook")
    )


def decode_balance(data: bytes) -> Balance:
    return _convert("balance", balance_from_wire, _decode(data, BalanceWire, "balance"))


def decode_positions(data: bytes) -> PositionsPage:
    return _convert("positions", positions_from_wire, _decode(data, PositionsPageWire, "positions"))


def decode_order(data: bytes) -> Order:
    """{"order": Order} -- GET /portfolio/orders/{id} and the create-order 201 response."""
    return _convert("order", order_from_wire, _decode(data, OrderResponseWire, "order").order)


def decode_orders_page(data: bytes) -> OrdersPage:
    w = _decode(data, OrdersPageWire, "orders")
    orders = _convert("orders", lambda: tuple(order_from_wire(o) for o in w.orders or ()))
    return OrdersPage(orders=orders, cursor=w.cursor or "")


def decode_cancel(data: bytes) -> CancelResult:
    w = _decode(data, CancelResponseWire, "cancel")
    order = _convert("cancel", order_from_wire, w.order)
    reduced = _convert("cancel", to_qty, w.reduced_by_fp, w.reduced_by)
    return CancelResult(order=order, reduced_by=reduced)


def decode_fills_page(data: bytes) -> FillsPage:
    w = _decode(data, FillsPageWire, "fills")
    fills = _convert("fills", lambda: tuple(fill_from_wire(f) for f in w.fills or ()))
    return FillsPage(fills=fills, cursor=w.cursor or "")
