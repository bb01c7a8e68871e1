"""Prices, quantities and money as exact integers.

Kalshi quotes YES prices as fixed-point dollar strings ("0.5600"; up to 4 decimals, sub-cent
grids since 2026-03) and, in legacy payloads, as integer cents. Counts are fixed-point strings
with 2 decimals ("2230.99"). Internally everything is an integer so that no float ever touches
money:

- price: ticks of $0.0001 (``PRICE_SCALE`` ticks = $1). Always the YES price unless a name says NO.
- quantity: hundredths of a contract (``QTY_SCALE`` = 1 contract).
- money: micro-dollars (``MONEY_SCALE`` = $1) so that price x quantity is exact.

Conversion happens here, at the edge, and nowhere else.
"""

from __future__ import annotations

import re
from typing import NewType

import msgspec

Price = NewType("Price", int)
Qty = NewType("Qty", int)
Money = NewType("Money", int)

PRICE_SCALE = 10_000
QTY_SCALE = 100
MONEY_SCALE = PRICE_SCALE * QTY_SCALE  # price ticks x qty units = micro-dollars
CENT = PRICE_SCALE // 100  # ticks per cent
MONEY_PER_CENT = MONEY_SCALE // 100
ONE_DOLLAR = Price(PRICE_SCALE)


class PriceError(ValueError):
    """A price, count or amount that cannot be represented exactly or is out of range."""


# ASCII digits only: str.isdigit() would let fullwidth or Arabic-Indic digits through.
_DECIMAL = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?", re.ASCII)


def _parse_fixed(text: str, decimals: int, what: str) -> int:
    """Parse a non-negative decimal string into an integer scaled by 10**decimals, exactly."""
    if not isinstance(text, str):
        raise PriceError(f"{what} must be a decimal string, was {type(text).__name__} {text!r}")
    m = _DECIMAL.fullmatch(text.strip())
    if m is None or not (m.group(2) or m.group(3)):
        raise PriceError(f"{what} {text!r} is not a decimal number")
    negative = m.group(1) == "-"
    whole, frac = m.group(2), m.group(3) or ""
    if len(frac) > decimals:
        extra = frac[decimals:]
        if extra.strip("0"):
            raise PriceError(f"{what} {text!r} has more than {decimals} decimal places")
        frac = frac[:decimals]
    value = int(whole or "0") * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    return -value if negative else value


def _format_fixed(value: int, decimals: int) -> str:
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"


def parse_price(text: str) -> Price:
    """"0.5600" / "0.56" / "0.560" -> 5600 ticks. Must lie in [0, 1]."""
    ticks = _parse_fixed(text, 4, "price")
    if not 0 <= ticks <= PRICE_SCALE:
        raise PriceError(f"price {text!r} outside [0, 1]")
    return Price(ticks)


def format_price(price: int) -> str:
    """5600 -> "0.5600" (Kalshi's current 4-decimal form)."""
    return _format_fixed(price, 4)


def price_from_cents(cents: int) -> Price:
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise PriceError(f"legacy price must be integer cents, was {cents!r}")
    if not 0 <= cents <= 100:
        raise PriceError(f"legacy price {cents} outside 0..100 cents")
    return Price(cents * CENT)


def price_to_cents(price: int) -> int:
    """Exact whole cents; raises for sub-cent prices (legacy fields cannot carry them)."""
    cents, rest = divmod(price, CENT)
    if rest:
        raise PriceError(f"price {format_price(price)} is not a whole number of cents")
    return cents


def is_whole_cent(price: int) -> bool:
    return price % CENT == 0


def complement(price: int) -> Price:
    """YES price <-> NO price: a YES bid at p is a NO ask at 1 - p."""
    return Price(PRICE_SCALE - price)


def parse_qty(text: str) -> Qty:
    """Contract count "2230.99" -> 223099 hundredths. May be negative for signed deltas."""
    return Qty(_parse_fixed(text, 2, "count"))


def format_qty(qty: int) -> str:
    return _format_fixed(qty, 2)


def qty_from_contracts(contracts: int) -> Qty:
    if isinstance(contracts, bool) or not isinstance(contracts, int):
        raise PriceError(f"legacy count must be an integer, was {contracts!r}")
    return Qty(contracts * QTY_SCALE)


def qty_to_contracts(qty: int) -> int:
    whole, rest = divmod(qty, QTY_SCALE)
    if rest:
        raise PriceError(f"count {format_qty(qty)} is not a whole number of contracts")
    return whole


def is_whole_contracts(qty: int) -> bool:
    return qty % QTY_SCALE == 0


def notional(price: int, qty: int) -> Money:
    """Exact cost of qty at price, in micro-dollars."""
    return Money(price * qty)


def parse_money(text: str) -> Money:
    """"12.3456" dollars -> micro-dollars (up to 6 decimals, as portfolio fields use)."""
    return Money(_parse_fixed(text, 6, "amount"))


def format_money(money: int, decimals: int = 4) -> str:
    """Micro-dollars -> dollar string, truncated toward zero to `decimals` places (exact if it fits)."""
    if decimals > 6:
        raise PriceError("at most 6 decimals of a dollar are represented")
    step = 10 ** (6 - decimals)
    sign = -1 if money < 0 else 1
    return _format_fixed(sign * (abs(money) // step), decimals)


def money_from_cents(cents: int) -> Money:
    return Money(cents * MONEY_PER_CENT)


def money_to_cents_floor(money: int) -> int:
    """Whole cents, rounded down (how Kalshi reports integer-cent balances)."""
    return money // MONEY_PER_CENT


def ceil_div(numerator: int, denominator: int) -> int:
    return -((-numerator) // denominator)


def money_ceil_to_cent(money: int) -> Money:
    return Money(ceil_div(money, MONEY_PER_CENT) * MONEY_PER_CENT)


class PriceRange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One segment of a tick grid: prices start, start+step, ..., end (ticks, inclusive)."""

    start: int
    end: int
    step: int


class PriceGrid:
    """The set of valid order prices of a market (Kalshi's price_level_structure / price_ranges).

    Valid prices are strictly inside (0, 1). Levels are numbered 0..n-1 in ascending price so
    books can be plain arrays indexed by level.
    """

    __slots__ = ("name", "ranges", "prices", "_index")

    def __init__(self, name: str, ranges: tuple[PriceRange, ...]) -> None:
        valid: set[int] = set()
        for r in ranges:
            if r.step <= 0 or r.start > r.end or r.start < 0 or r.end > PRICE_SCALE:
                raise PriceError(f"bad price range {r!r} in grid {name!r}")
            if (r.end - r.start) % r.step:
                raise PriceError(f"price range {r!r} in grid {name!r} does not end on its step")
            valid.update(range(r.start, r.end + 1, r.step))
        valid.discard(0)
        valid.discard(PRICE_SCALE)
        if not valid:
            raise PriceError(f"price grid {name!r} has no valid prices")
        self.name = name
        self.ranges = ranges
        self.prices: tuple[int, ...] = tuple(sorted(valid))
        index = [-1] * (PRICE_SCALE + 1)
        for i, p in enumerate(self.prices):
            index[p] = i
        self._index = index

    def __repr__(self) -> str:
        return f"PriceGrid({self.name!r}, {len(self.prices)} levels)"

    def __len__(self) -> int:
        return len(self.prices)

    def is_valid(self, price: int) -> bool:
        return 0 <= price <= PRICE_SCALE and self._index[price] >= 0

    def level(self, price: int) -> int:
        """Level index of a valid price; raises PriceError if the price is off the grid."""
        if 0 <= price <= PRICE_SCALE:
            i = self._index[price]
            if i >= 0:
                return i
        raise PriceError(f"price {format_price(price)} is not on the {self.name} grid")

    def price(self, level: int) -> Price:
        return Price(self.prices[level])

    def tick_above(self, price: int) -> Price | None:
        """The next valid price strictly above `price`, or None."""
        i = self.level(price) + 1
        return Price(self.prices[i]) if i < len(self.prices) else None

    def tick_below(self, price: int) -> Price | None:
        i = self.level(price) - 1
        return Price(self.prices[i]) if i >= 0 else None

    def is_symmetric(self) -> bool:
        """True when p valid <=> 1 - p valid, so YES and NO prices share the grid."""
        return all(self.is_valid(PRICE_SCALE - p) for p in self.prices)

    def to_wire(self) -> list[dict[str, str]]:
        """Kalshi's `price_ranges` form: dollar strings."""
        return [
            {"start": format_price(r.start), "end": format_price(r.end), "step": format_price(r.step)}
            for r in self.ranges
        ]


LINEAR_CENT = PriceGrid("linear_cent", (PriceRange(0, PRICE_SCALE, CENT),))
DECI_CENT = PriceGrid("deci_cent", (PriceRange(0, PRICE_SCALE, CENT // 10),))
TAPERED_DECI_CENT = PriceGrid(
    "tapered_deci_cent",
    (
        PriceRange(0, 10 * CENT, CENT // 10),
        PriceRange(10 * CENT, 90 * CENT, CENT),
        PriceRange(90 * CENT, PRICE_SCALE, CENT // 10),
    ),
)
GRIDS: dict[str, PriceGrid] = {g.name: g for g in (LINEAR_CENT, DECI_CENT, TAPERED_DECI_CENT)}


def grid_by_name(name: str) -> PriceGrid:
    try:
        return GRIDS[name]
    except KeyError:
        raise PriceError(f"unknown price_level_structure {name!r}; known: {sorted(GRIDS)}") from None
