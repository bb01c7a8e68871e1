"""prices.py: exact round trips between wire text, legacy integers and internal ticks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kalshiflow.market.prices import (
    CENT,
    DECI_CENT,
    GRIDS,
    LINEAR_CENT,
    MONEY_SCALE,
    PRICE_SCALE,
    QTY_SCALE,
    TAPERED_DECI_CENT,
    PriceError,
    PriceGrid,
    PriceRange,
    complement,
    format_money,
    format_price,
    format_qty,
    grid_by_name,
    money_ceil_to_cent,
    money_from_cents,
    notional,
    parse_money,
    parse_price,
    parse_qty,
    price_from_cents,
    price_to_cents,
    qty_from_contracts,
    qty_to_contracts,
)

ticks = st.integers(0, PRICE_SCALE)
qtys = st.integers(-(10**12), 10**12)


@given(ticks)
def test_price_text_round_trips(price: int) -> None:
    text = format_price(price)
    assert len(text.split(".")[1]) == 4
    assert parse_price(text) == price


@given(ticks)
def test_price_parse_accepts_shorter_and_zero_padded_forms(price: int) -> None:
    text = format_price(price)
    assert parse_price(text.rstrip("0")) == price  # "0.9600" == "0.96" == "0.960"
    assert parse_price(text + "00") == price  # extra zeros past 4 decimals are still exact


@given(qtys)
def test_qty_text_round_trips(qty: int) -> None:
    assert parse_qty(format_qty(qty)) == qty


@given(st.integers(-(10**15), 10**15))
def test_money_text_round_trips_at_six_decimals(money: int) -> None:
    assert parse_money(format_money(money, 6)) == money


def test_money_format_truncates_toward_zero() -> None:
    assert format_money(1_234_567) == "1.2345"
    assert format_money(-1_234_567) == "-1.2345"
    assert format_money(5, 6) == "0.000005"


@given(st.integers(0, 100))
def test_cents_ticks_round_trip(cents: int) -> None:
    assert price_to_cents(price_from_cents(cents)) == cents
    assert price_from_cents(cents) == cents * CENT


@given(st.integers(-(10**9), 10**9))
def test_contracts_round_trip(contracts: int) -> None:
    assert qty_to_contracts(qty_from_contracts(contracts)) == contracts


@given(ticks)
def test_complement_is_an_involution(price: int) -> None:
    assert complement(complement(price)) == price
    assert price + complement(price) == PRICE_SCALE


@given(ticks, st.integers(0, 10**9))
def test_notional_is_exact(price: int, qty: int) -> None:
    assert notional(price, qty) * PRICE_SCALE * QTY_SCALE == price * qty * MONEY_SCALE


def test_money_helpers() -> None:
    assert money_from_cents(7) == 70_000
    assert money_ceil_to_cent(70_001) == 80_000
    assert money_ceil_to_cent(70_000) == 70_000


@pytest.mark.parametrize(
    "text",
    ["", ".", "abc", "0.5x", "1.5", "-0.01", "0.00001", "0.12345", "1e-2", "0x10", "0. 5", "--1"],
)
def test_bad_price_strings_are_rejected(text: str) -> None:
    with pytest.raises(PriceError):
        parse_price(text)


def test_non_ascii_digits_are_rejected() -> None:
    with pytest.raises(PriceError):
        parse_price("\uff10.\uff15")  # fullwidth "0.5"


@pytest.mark.parametrize("text", ["", "1.001", "abc", "1_000.00", "1.2.3", "nan", "inf"])
def test_bad_qty_strings_are_rejected(text: str) -> None:
    with pytest.raises(PriceError):
        parse_qty(text)


@pytest.mark.parametrize("value", [None, 56, 0.56, b"0.56"])
def test_non_string_prices_are_rejected(value: object) -> None:
    with pytest.raises(PriceError):
        parse_price(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 101, True, 1.0, "5"])
def test_bad_legacy_cents_are_rejected(value: object) -> None:
    with pytest.raises(PriceError):
        price_from_cents(value)  # type: ignore[arg-type]


def test_sub_cent_prices_have_no_legacy_form() -> None:
    with pytest.raises(PriceError):
        price_to_cents(5_605)
    with pytest.raises(PriceError):
        qty_to_contracts(150)


@pytest.mark.parametrize("grid", list(GRIDS.values()), ids=list(GRIDS))
def test_every_grid_level_round_trips(grid: PriceGrid) -> None:
    assert list(grid.prices) == sorted(set(grid.prices))
    assert 0 not in grid.prices and PRICE_SCALE not in grid.prices
    for level, price in enumerate(grid.prices):
        assert grid.level(price) == level
        assert grid.price(level) == price
        assert grid.is_valid(price)
        assert parse_price(format_price(price)) == price
    assert grid.is_symmetric()
    assert grid_by_name(grid.name) is grid


def test_grid_sizes_and_steps() -> None:
    assert len(LINEAR_CENT) == 99
    assert len(DECI_CENT) == 999
    assert len(TAPERED_DECI_CENT) == 100 + 79 + 100  # 0.001..0.100, 0.11..0.89, 0.900..0.999
    assert TAPERED_DECI_CENT.tick_above(1_000) == 1_100
    assert TAPERED_DECI_CENT.tick_below(1_000) == 990
    assert LINEAR_CENT.tick_above(9_900) is None


@pytest.mark.parametrize("grid", list(GRIDS.values()), ids=list(GRIDS))
@given(price=ticks)
def test_off_grid_prices_raise(grid: PriceGrid, price: int) -> None:
    if price in set(grid.prices):
        assert grid.level(price) >= 0
    else:
        with pytest.raises(PriceError):
            grid.level(price)


def test_bad_grids_are_rejected() -> None:
    with pytest.raises(PriceError):
        PriceGrid("bad", (PriceRange(0, 100, 30),))
    with pytest.raises(PriceError):
        grid_by_name("centi_cent")
