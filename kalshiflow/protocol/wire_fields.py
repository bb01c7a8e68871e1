"""Conventions shared by every Kalshi body, REST and WS: the Struct bases, and readers that turn a
field sent in either shape -- current fixed-point string or legacy integer -- into exact ints.

Fixed-point fields win over legacy ones when both are present. Results are the ints of prices.py:
``Price`` ticks of $0.0001, ``Qty`` hundredths of a contract, ``Money`` micro-dollars.

NO-side pricing: Kalshi quotes orders/fills by the YES price. An order/fill on the NO side costs
``no_price = 1 - yes_price``; :class:`SidedRecord` gives every such record the price of its own
side so nobody prices a NO fill with the YES price again (the old system did).
"""

from __future__ import annotations

import msgspec

from kalshiflow.market.prices import (
    ONE_DOLLAR,
    Money,
    Price,
    PriceError,
    Qty,
    complement,
    money_from_cents,
    parse_money,
    parse_price,
    parse_qty,
    price_from_cents,
    qty_from_contracts,
)
from kalshiflow.market.types import Action, Side, bid_side


class WireStruct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of wire Structs: unknown keys ignored (forward compatible). Every optional field
    defaults to None so that omit_defaults drops exactly the absent ones ("" and false are sent)."""


class ModelStruct(msgspec.Struct, frozen=True, kw_only=True):
    """Base of normalised Structs (exact ints from prices.py)."""


class SidedRecord:
    """Mixin of normalised orders and fills (REST Order and Fill, WS FillEvent): the side-aware
    reads of a record quoted by YES and NO price, written once."""

    __slots__ = ()  # msgspec Structs accept only slot-less mixins

    side: Side
    action: Action
    yes_price: Price
    no_price: Price

    @property
    def price(self) -> Price:
        """Price of the record's own side: the NO price (1 - yes_price) for a NO order or fill. An
        order's limit price; a fill's execution price (a NO fill at yes_price 0.75 cost 0.25)."""
        return self.no_price if self.side is Side.NO else self.yes_price

    @property
    def outcome_side(self) -> Side:
        """The contract the order or fill buys: selling YES buys NO."""
        return bid_side(self.side, self.action)


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


def parse_side(value: str | None, what: str) -> Side:
    try:
        return Side(value)
    except ValueError:
        raise PriceError(f"{what} {value!r} is not yes/no") from None


def direction(
    side: str | None, action: str | None, outcome_side: str | None, what: str
) -> tuple[Side, Action]:
    """(side, action) of an order/fill; current-only bodies carry just outcome_side/book_side."""
    if side is None:
        # (buy yes) and (sell no) are the same exposure; call it a buy of the outcome.
        return parse_side(outcome_side, f"{what} outcome_side"), Action.BUY
    try:
        act = Action(action or "buy")
    except ValueError:
        raise PriceError(f"{what} action {action!r} is not buy/sell") from None
    return parse_side(side, f"{what} side"), act
