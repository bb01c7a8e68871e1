"""Kalshi trading fees: the one implementation used by the simulator, the RL env and paper fills.

Schedule (reference/kalshi-protocol.md §3, "Fees"):

    fee = round_up(multiplier x coef x C x P x (1 - P))

- C = contracts traded (``Qty`` / 100, fractional counts allowed), P = the price paid for the
  contract bought, in dollars. P(1 - P) is symmetric, so a YES buy at p and a NO buy at 1 - p pay
  the same; we still always pass the bought leg's own price.
- coef = 0.07 for takers. Makers pay nothing unless the series' ``fee_type`` charges them:
  ``quadratic_with_maker_fees`` 0.0175 (= taker / 4), ``quadratic_with_combo_maker_fees``
  0.035 (= taker / 2).
- ``fee_multiplier`` is the series' scale factor.
- Rounding: up to the cent (the classic schedule, default) or up to $0.0001 (``centicent``, the
  2026 schedule).

No float ever touches a fee: coefficients are exact rationals and the fee of C contracts at P is
computed as an integer numerator over a fixed denominator, then rounded up once.

Per-order accumulation. Splitting an order into many small fills must not multiply the rounding:
a 0.01-contract fill at 50c has an exact fee of $0.000175 but would round up to a whole cent,
57x the exact amount. Kalshi refunds that overpayment through a per-order accumulator; we model
it exactly with :class:`FeeAccumulator`: each fill is charged ``ceil(cumulative exact fee) -
already charged``, so a single-fill order pays exactly the schedule's fee, an order filled in
pieces pays the same as if filled at once (at the same prices), and the total an order can ever
pay is bounded by :func:`max_order_fee` — which is what collateral reserves.
"""

from __future__ import annotations

from enum import StrEnum
from fractions import Fraction
from typing import Literal

import msgspec

from kalshiflow.market.prices import MONEY_PER_CENT, PRICE_SCALE, Money

__all__ = [
    "DEFAULT_FEES",
    "FeeAccumulator",
    "FeeCalculator",
    "FeeSchedule",
    "FeeType",
    "calculator",
    "maker_fee",
    "max_order_fee",
    "taker_fee",
    "trade_fee",
]

TAKER_COEF = Fraction(7, 100)
_HALF = PRICE_SCALE // 2  # P = 0.5 maximises P(1 - P)
# exact micro-dollars = K x qty x price x (S - price) / 10**4 with qty in hundredths and price in
# ticks of 1e-4: (qty/100) x (price/1e4) x ((S-price)/1e4) x 1e6 = qty x price x (S-price) / 1e4.
_UNIT_DENOM = 10_000


class FeeType(StrEnum):
    QUADRATIC = "quadratic"
    QUADRATIC_WITH_MAKER_FEES = "quadratic_with_maker_fees"
    QUADRATIC_WITH_COMBO_MAKER_FEES = "quadratic_with_combo_maker_fees"
    # No fees at all (promotional markets; handy for tests that isolate price effects).
    FREE = "free"


_MAKER_COEF: dict[FeeType, Fraction] = {
    FeeType.QUADRATIC: Fraction(0),
    FeeType.QUADRATIC_WITH_MAKER_FEES: TAKER_COEF / 4,  # 0.0175
    FeeType.QUADRATIC_WITH_COMBO_MAKER_FEES: TAKER_COEF / 2,  # 0.035
    FeeType.FREE: Fraction(0),
}


class FeeSchedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A series' fee configuration (Kalshi's ``fee_type`` / ``fee_multiplier``).

    ``fee_multiplier`` may be given as an int, a decimal string or a float (Kalshi's JSON and
    TOML configs carry floats); a float is taken at its shortest decimal repr ("0.5", "1.25"),
    which is exactly what the series published, never at its binary value.
    """

    fee_type: FeeType = FeeType.QUADRATIC
    fee_multiplier: int | float | str = 1
    rounding: Literal["cent", "centicent"] = "cent"

    def multiplier(self) -> Fraction:
        m = self.fee_multiplier
        try:
            value = Fraction(str(m)) if not isinstance(m, int) else Fraction(m)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"fee_multiplier {m!r} is not a decimal number") from None
        if value < 0:
            raise ValueError(f"fee_multiplier {m!r} is negative")
        return value


DEFAULT_FEES = FeeSchedule()


class FeeCalculator:
    """A compiled :class:`FeeSchedule`: integer coefficients over one common denominator.

    ``units(price, qty, is_taker)`` is the exact fee as an integer numerator; ``money(units)``
    rounds a (cumulative) numerator up to the schedule's step, in micro-dollars.
    """

    __slots__ = ("schedule", "taker_num", "maker_num", "den", "step", "_step_den", "_max_num")

    def __init__(self, schedule: FeeSchedule = DEFAULT_FEES) -> None:
        mult = schedule.multiplier()
        try:  # a plain str is accepted too (Struct __init__ does not convert)
            fee_type = FeeType(schedule.fee_type)
        except ValueError:
            known = ", ".join(t.value for t in FeeType)
            raise ValueError(f"unsupported fee_type {schedule.fee_type!r}; supported: {known}") from None
        taker = Fraction(0) if fee_type is FeeType.FREE else TAKER_COEF * mult
        maker = _MAKER_COEF[fee_type] * mult
        common = taker.denominator * maker.denominator
        self.schedule = schedule
        self.taker_num = taker.numerator * (common // taker.denominator)
        self.maker_num = maker.numerator * (common // maker.denominator)
        self.step = MONEY_PER_CENT if schedule.rounding == "cent" else MONEY_PER_CENT // 100
        # units / den = micro-dollars; the extra step factor makes rounding one ceil-division.
        self.den = common * _UNIT_DENOM
        self._step_den = self.den * self.step  # money()'s divisor
        self._max_num = max(self.taker_num, self.maker_num)  # max_units()'s coefficient

    def units(self, price: int, qty: int, is_taker: bool = True) -> int:
        """Exact fee numerator (over ``den``) for ``qty`` bought at ``price`` (its own leg)."""
        return (self.taker_num if is_taker else self.maker_num) * qty * price * (PRICE_SCALE - price)

    def money(self, units: int) -> Money:
        """Round an exact numerator up to the schedule's step (cent or $0.0001), micro-dollars."""
        return Money(-((-units) // self._step_den) * self.step)

    def fee(self, price: int, qty: int, is_taker: bool = True) -> Money:
        return self.money(self.units(price, qty, is_taker))

    def max_units(self, limit_price: int, qty: int) -> int:
        """Worst-case exact fee of buying ``qty`` at any price <= ``limit_price`` (own leg).

        Takers can be filled below their limit (price improvement) and P(1 - P) peaks at 0.5, so
        the worst price is min(limit, 0.5). Maker coefficients never exceed the taker's.
        """
        worst = limit_price if limit_price < _HALF else _HALF
        return self._max_num * qty * worst * (PRICE_SCALE - worst)


_CALCULATORS: dict[FeeSchedule, FeeCalculator] = {}


def calculator(schedule: FeeSchedule = DEFAULT_FEES) -> FeeCalculator:
    """The compiled calculator of a schedule (memoised: schedules are frozen and hashable)."""
    calc = _CALCULATORS.get(schedule)
    if calc is None:
        calc = _CALCULATORS[schedule] = FeeCalculator(schedule)
    return calc


def taker_fee(price: int, qty: int, schedule: FeeSchedule = DEFAULT_FEES) -> Money:
    """Taker fee of one fill of ``qty`` (hundredths) bought at ``price`` (ticks, own leg)."""
    return calculator(schedule).fee(price, qty, True)


def maker_fee(price: int, qty: int, schedule: FeeSchedule = DEFAULT_FEES) -> Money:
    """Maker fee of one fill (0 unless the series charges makers)."""
    return calculator(schedule).fee(price, qty, False)


def trade_fee(price: int, qty: int, is_taker: bool, schedule: FeeSchedule = DEFAULT_FEES) -> Money:
    return calculator(schedule).fee(price, qty, is_taker)


def max_order_fee(limit_price: int, qty: int, schedule: FeeSchedule = DEFAULT_FEES) -> Money:
    """Upper bound on everything an order of ``qty`` at ``limit_price`` can pay in fees."""
    calc = calculator(schedule)
    return calc.money(calc.max_units(limit_price, qty))


class FeeAccumulator:
    """Fees of one order across its fills: charge ceil(cumulative exact) - already charged.

    Invariants: ``paid == money(units)``; ``paid`` never exceeds :func:`max_order_fee` of the
    order; a one-fill order pays exactly ``trade_fee``.
    """

    __slots__ = ("calc", "units", "paid", "_bound")

    def __init__(self, calc: FeeCalculator) -> None:
        self.calc = calc
        self.units = 0
        self.paid: Money = Money(0)
        self._bound: tuple[int, int, Money] | None = None  # (limit, remaining, bound) since the last fill

    def charge(self, price: int, qty: int, is_taker: bool) -> Money:
        """Fee due for one more fill of this order (may be 0 when earlier rounding covered it)."""
        self._bound = None
        self.units += self.calc.units(price, qty, is_taker)
        total = self.calc.money(self.units)
        due = total - self.paid
        self.paid = total
        return Money(due)

    def bound(self, limit_price: int, remaining: int) -> Money:
        """Most the order can still be charged if ``remaining`` more fills at <= ``limit_price``.
        Memoised until the next fill: the venue asks again after every change of the account."""
        memo = self._bound
        if memo is not None and memo[0] == limit_price and memo[1] == remaining:
            return memo[2]
        out = Money(self.calc.money(self.units + self.calc.max_units(limit_price, remaining)) - self.paid)
        self._bound = (limit_price, remaining, out)
        return out
