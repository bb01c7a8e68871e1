"""Kalshi fee schedule: taker ceil(0.07·C·P·(1−P)) to the cent, maker fees, multipliers, rounding."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kalshiflow.market.fees import (
    DEFAULT_FEES,
    FeeAccumulator,
    FeeSchedule,
    FeeType,
    calculator,
    maker_fee,
    max_order_fee,
    taker_fee,
    trade_fee,
)
from kalshiflow.market.prices import MONEY_PER_CENT, MONEY_SCALE, PRICE_SCALE

C = 100  # one contract in Qty
CENT = 100  # one cent in price ticks


def cents(n: int) -> int:
    return n * MONEY_PER_CENT


def reference_fee(coef: Fraction, price: int, qty: int, step: int = MONEY_PER_CENT) -> int:
    """Independent statement of the schedule with Fractions, in micro-dollars."""
    p = Fraction(price, PRICE_SCALE)
    dollars = coef * Fraction(qty, C) * p * (1 - p)
    micro = dollars * MONEY_SCALE
    steps = -((-micro.numerator) // (micro.denominator * step))
    return steps * step


def test_taker_fee_known_values() -> None:
    assert taker_fee(50 * CENT, 1 * C) == cents(2)  # 0.0175 -> 2c
    assert taker_fee(50 * CENT, 100 * C) == cents(175)  # exactly $1.75
    assert taker_fee(30 * CENT, 10 * C) == cents(15)  # 0.147 -> 15c
    assert taker_fee(1 * CENT, 1 * C) == cents(1)  # 0.000693 -> 1c
    assert taker_fee(99 * CENT, 100 * C) == cents(7)  # 0.0693 -> 7c
    assert taker_fee(50 * CENT, 1) == cents(1)  # 0.01 contract: 0.000175 -> 1c


def test_default_schedule_has_no_maker_fee() -> None:
    assert maker_fee(50 * CENT, 100 * C) == 0
    assert trade_fee(50 * CENT, 100 * C, is_taker=False) == 0
    assert trade_fee(50 * CENT, 100 * C, is_taker=True) == cents(175)


def test_maker_fee_series() -> None:
    sched = FeeSchedule(fee_type=FeeType.QUADRATIC_WITH_MAKER_FEES)
    assert maker_fee(50 * CENT, 100 * C, sched) == cents(44)  # 0.0175 * 25 = 0.4375 -> 44c
    assert taker_fee(50 * CENT, 100 * C, sched) == cents(175)
    combo = FeeSchedule(fee_type=FeeType.QUADRATIC_WITH_COMBO_MAKER_FEES)
    assert maker_fee(50 * CENT, 100 * C, combo) == cents(88)  # 0.035 * 25 = 0.875 -> 88c


def test_fee_multiplier_exact_from_float_and_string() -> None:
    half = FeeSchedule(fee_multiplier=0.5)
    assert taker_fee(50 * CENT, 100 * C, half) == cents(88)  # 0.875 -> 88c
    assert taker_fee(50 * CENT, 100 * C, FeeSchedule(fee_multiplier="0.5")) == cents(88)
    # 0.1 as a float is not exactly 1/10 in binary; the schedule takes the decimal the series published
    tenth = FeeSchedule(fee_multiplier=0.1)
    assert calculator(tenth).fee(50 * CENT, 400 * C) == cents(70)  # $0.70 exactly, not 71c


def test_free_schedule_and_centicent_rounding() -> None:
    assert taker_fee(50 * CENT, 100 * C, FeeSchedule(fee_type=FeeType.FREE)) == 0
    fine = FeeSchedule(rounding="centicent")
    assert taker_fee(50 * CENT, 1 * C, fine) == 17_500  # $0.0175 exactly
    assert taker_fee(1 * CENT, 1 * C, fine) == 700  # 0.000693 -> $0.0007


def test_schedule_config_is_strict() -> None:
    sched = msgspec.convert({"fee_type": "quadratic_with_maker_fees", "fee_multiplier": 2}, FeeSchedule)
    assert sched.fee_type is FeeType.QUADRATIC_WITH_MAKER_FEES
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"fee_typo": "quadratic"}, FeeSchedule)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"fee_type": "flat"}, FeeSchedule)
    with pytest.raises(ValueError):
        calculator(FeeSchedule(fee_multiplier=-1))
    with pytest.raises(ValueError):
        calculator(FeeSchedule(fee_multiplier="abc"))
    with pytest.raises(ValueError, match="unsupported fee_type 'flat'"):
        calculator(FeeSchedule(fee_type="flat"))  # type: ignore[arg-type]
    assert calculator(FeeSchedule(fee_type="quadratic_with_maker_fees")).maker_num > 0  # type: ignore[arg-type]


prices = st.integers(1, PRICE_SCALE - 1)
qtys = st.integers(1, 1_000_000)


@given(prices, qtys)
def test_taker_fee_matches_reference_and_is_cent_multiple(price: int, qty: int) -> None:
    fee = taker_fee(price, qty)
    assert fee == reference_fee(Fraction(7, 100), price, qty)
    assert fee % MONEY_PER_CENT == 0
    assert fee == taker_fee(PRICE_SCALE - price, qty)  # P(1-P) symmetric: YES and NO legs agree


@given(st.sampled_from(list(FeeType)), st.sampled_from([1, 2, "0.5", "1.25"]), prices, qtys)
def test_maker_fee_matches_reference(fee_type: FeeType, mult: int | str, price: int, qty: int) -> None:
    sched = FeeSchedule(fee_type=fee_type, fee_multiplier=mult)
    coef = {
        FeeType.QUADRATIC: Fraction(0),
        FeeType.QUADRATIC_WITH_MAKER_FEES: Fraction(175, 10_000),
        FeeType.QUADRATIC_WITH_COMBO_MAKER_FEES: Fraction(35, 1000),
        FeeType.FREE: Fraction(0),
    }[fee_type]
    assert maker_fee(price, qty, sched) == reference_fee(coef * Fraction(str(mult)), price, qty)


@given(prices, prices, qtys)
def test_max_order_fee_bounds_any_fill_price(limit: int, fill: int, qty: int) -> None:
    fill = min(fill, limit)  # a buyer never pays above its limit
    assert taker_fee(fill, qty) <= max_order_fee(limit, qty)


def test_accumulator_single_fill_is_the_schedule_fee() -> None:
    acc = FeeAccumulator(calculator(DEFAULT_FEES))
    assert acc.charge(50 * CENT, 7 * C, True) == taker_fee(50 * CENT, 7 * C)


@given(st.lists(st.tuples(prices, st.integers(1, 5000), st.booleans()), min_size=1, max_size=20),
       st.sampled_from(list(FeeType)))
def test_accumulator_charges_ceil_of_cumulative_and_respects_bound(
    fills: list[tuple[int, int, bool]], fee_type: FeeType
) -> None:
    calc = calculator(FeeSchedule(fee_type=fee_type))
    acc = FeeAccumulator(calc)
    limit = max(p for p, _, _ in fills)
    total_qty = sum(q for _, q, _ in fills)
    bound = acc.bound(limit, total_qty)
    assert bound == max_order_fee(limit, total_qty, FeeSchedule(fee_type=fee_type))
    charged = 0
    exact = 0
    remaining = total_qty
    for price, qty, taker in fills:
        assert acc.bound(limit, remaining) <= bound - charged  # the bound only tightens
        charged += acc.charge(price, qty, taker)
        remaining -= qty
        exact += calc.units(price, qty, taker)
        assert charged == calc.money(exact)
        assert charged % MONEY_PER_CENT == 0
    assert charged <= bound
    # never more than charging each fill on its own
    assert charged <= sum(calc.fee(p, q, t) for p, q, t in fills)
