"""Kalshi REST v2 bodies, normalised: Structs with exact integers, and the body decoders.

Normalised Structs hold only exact ints from prices.py: ``Price`` ticks of $0.0001, ``Qty``
hundredths of a contract, ``Money`` micro-dollars. They are built from the wire Structs of
rest_wire.py (both shapes; fixed-point fields win over legacy ones when both are present).

This module holds the exchange-wide bodies: status, errors, markets, order books. The rest lives
by concept and is re-exported here, so callers keep using ``rest_models`` as one namespace: wire
Structs (rest_wire.py), portfolio bodies -- balance, positions, orders, fills -- (rest_portfolio.py),
create-order requests (rest_orders.py), field readers (wire_fields.py).
"""

from __future__ import annotations

import msgspec

from kalshiflow.market.prices import (
    CENT,
    GRIDS,
    LINEAR_CENT,
    ONE_DOLLAR,
    Money,
    Price,
    PriceGrid,
    PriceRange,
    Qty,
    complement,
    parse_price,
    parse_qty,
    price_from_cents,
    qty_from_contracts,
)
from kalshiflow.protocol.rest_orders import (
    CreateOrderWire,
    OrderRequest,
    decode_create_order,
    encode_create_order,
)
from kalshiflow.protocol.rest_portfolio import (
    Balance,
    CancelResult,
    EventPosition,
    Fill,
    FillsPage,
    MarketPosition,
    Order,
    OrdersPage,
    PositionsPage,
    balance_from_wire,
    decode_balance,
    decode_cancel,
    decode_fills_page,
    decode_order,
    decode_orders_page,
    decode_positions,
    fill_from_wire,
    order_from_wire,
    positions_from_wire,
)
from kalshiflow.protocol.rest_wire import (
    BalanceWire,
    BookWire,
    CancelResponseWire,
    EventPositionWire,
    FillsPageWire,
    FillWire,
    MarketPositionWire,
    MarketResponseWire,
    MarketsPageWire,
    MarketWire,
    OrderbookResponseWire,
    OrderResponseWire,
    OrdersPageWire,
    OrderWire,
    PositionsPageWire,
    PriceRangeWire,
    decode_wire,
    normalised,
)
from kalshiflow.protocol.wire_fields import (
    ModelStruct,
    direction,
    to_money,
    to_price,
    to_qty,
    yes_no_prices,
)

# Re-exported names included: this is the namespace callers import (``rm.MarketWire``, ...).
__all__ = [
    "Balance", "BalanceWire", "BookWire", "CancelResponseWire", "CancelResult", "CreateOrderWire",
    "ErrorBody", "EventPosition", "EventPositionWire", "ExchangeStatus", "Fill", "FillWire", "FillsPage",
    "FillsPageWire", "Level", "Market", "MarketPosition", "MarketPositionWire", "MarketResponseWire",
    "MarketWire", "MarketsPage", "MarketsPageWire", "Order", "OrderRequest", "OrderResponseWire",
    "OrderWire", "Orderbook", "OrderbookResponseWire", "OrdersPage", "OrdersPageWire", "PositionsPage",
    "PositionsPageWire", "PriceRangeWire", "balance_from_wire", "decode_balance", "decode_cancel",
    "decode_create_order", "decode_error_body", "decode_exchange_status", "decode_fills_page",
    "decode_market", "decode_markets_page", "decode_order", "decode_orderbook", "decode_orders_page",
    "decode_positions", "direction", "encode_create_order", "encode_error_body", "fill_from_wire",
    "market_from_wire", "order_from_wire", "orderbook_from_wire", "positions_from_wire", "to_money",
    "to_price", "to_qty", "yes_no_prices",
]

# --- exchange status, errors --------------------------------------------------------------------


class ExchangeStatus(ModelStruct, frozen=True, kw_only=True):
    exchange_active: bool
    trading_active: bool
    exchange_estimated_resume_time: str | None = None


class ErrorBody(ModelStruct, frozen=True, kw_only=True):
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


class Market(ModelStruct, frozen=True, kw_only=True):
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


class MarketsPage(ModelStruct, frozen=True, kw_only=True):
    markets: tuple[Market, ...]
    cursor: str  # "" = last page


# --- order book ---------------------------------------------------------------------------------

Level = tuple[Price, Qty]


class Orderbook(ModelStruct, frozen=True, kw_only=True):
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


# --- body decoders (bytes -> normalised) ------------------------------------------------------------


def decode_exchange_status(data: bytes) -> ExchangeStatus:
    return decode_wire(data, ExchangeStatus, "exchange status")


def decode_market(data: bytes) -> Market:
    return normalised("market", market_from_wire, decode_wire(data, MarketResponseWire, "market").market)


def decode_markets_page(data: bytes) -> MarketsPage:
    w = decode_wire(data, MarketsPageWire, "markets")
    markets = normalised("markets", lambda: tuple(market_from_wire(m) for m in w.markets or ()))
    return MarketsPage(markets=markets, cursor=w.cursor or "")


def decode_orderbook(ticker: str, data: bytes) -> Orderbook:
    return normalised(
        "orderbook", orderbook_from_wire, ticker, decode_wire(data, OrderbookResponseWire, "orderbook")
    )
