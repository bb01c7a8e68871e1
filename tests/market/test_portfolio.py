"""Binary-contract accounting: netting, settlement, marking, collateral, persistence."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kalshiflow.market.book import OrderBook
from kalshiflow.market.portfolio import InsufficientFunds, Portfolio
from kalshiflow.market.prices import MONEY_SCALE, PRICE_SCALE
from kalshiflow.market.types import Side

C = 100  # Qty per contract
CENT = 100  # ticks per cent
D = MONEY_SCALE  # micro-dollars per dollar
T = "MKT"


def dollars(x: float) -> int:
    return round(x * D)


def book(yes: list[tuple[int, int]] = (), no: list[tuple[int, int]] = ()) -> OrderBook:  # type: ignore[assignment]
    b = OrderBook(T)
    b.apply_snapshot([(p * CENT, q * C) for p, q in yes], [(p * CENT, q * C) for p, q in no])
    return b


def test_buy_yes_debits_price_and_fee() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 40 * CENT, 10 * C, dollars(0.17))
    assert pf.cash == dollars(100 - 4 - 0.17)
    assert pf.position(T) == 10 * C
    assert pf.positions[T].cost == dollars(4)
    assert pf.fees_paid == dollars(0.17)
    assert pf.positions[T].volume == 10 * C


def test_selling_yes_from_flat_is_buying_no_and_costs_money() -> None:
    pf = Portfolio(dollars(100))
    # "sell YES at 0.45" = buy NO at 0.55: pays 0.55 per contract, never receives 0.45
    pf.apply_fill(T, Side.NO, 55 * CENT, 10 * C, 0)
    assert pf.cash == dollars(100 - 5.5)
    assert pf.position(T) == -10 * C
    assert pf.positions[T].cost == dollars(5.5)


def test_netting_pays_one_dollar_per_pair() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 40 * CENT, 10 * C, 0)
    realized = pf.apply_fill(T, Side.NO, 55 * CENT, 10 * C, 0)  # = sell YES at 0.45
    assert pf.position(T) == 0
    assert realized == dollars(10 * (1 - 0.40 - 0.55))
    assert pf.cash == dollars(100 - 4 - 5.5 + 10)  # = 100 + 0.5
    assert pf.positions[T].cost == 0
    assert pf.realized_pnl == dollars(0.5)


def test_netting_then_flip_opens_remainder_on_bought_side() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 40 * CENT, 10 * C, 0)
    pf.apply_fill(T, Side.NO, 70 * CENT, 15 * C, 0)
    assert pf.position(T) == -5 * C
    assert pf.positions[T].cost == dollars(3.5)  # 5 NO at 0.70
    assert pf.realized_pnl == dollars(10 * (1 - 0.4 - 0.7))
    assert pf.cash == dollars(100 - 4 - 10.5 + 10)


def test_partial_netting_keeps_pro_rata_cost_and_loses_no_microdollar() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 3333, 3, 0)  # cost 9999 micro for 0.03 contracts
    pf.apply_fill(T, Side.NO, 5000, 1, 0)
    pos = pf.positions[T]
    assert pos.qty == 2 and pos.cost == 9999 - 3333
    # cost removed + cost kept == cost paid, so realized + cost basis is exact
    assert pos.realized_pnl == 1 * PRICE_SCALE - 3333 - 5000


@pytest.mark.parametrize(
    ("result", "payout"), [(True, dollars(10)), (False, 0), (70 * CENT, dollars(7))]
)
def test_settle_long_yes(result: bool | int, payout: int) -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 40 * CENT, 10 * C, 0)
    assert pf.settle(T, result) == payout
    assert pf.position(T) == 0
    assert pf.cash == dollars(96) + payout
    assert pf.positions[T].realized_pnl == payout - dollars(4)
    assert pf.positions[T].settled


@pytest.mark.parametrize(("result", "payout"), [(True, 0), (False, dollars(10)), (70 * CENT, dollars(3))])
def test_settle_long_no(result: bool | int, payout: int) -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.NO, 60 * CENT, 10 * C, 0)
    assert pf.settle(T, result) == payout
    assert pf.cash == dollars(94) + payout


def test_settle_rejects_bad_value_and_unknown_market_pays_nothing() -> None:
    pf = Portfolio(dollars(1))
    assert pf.settle("OTHER", True) == 0
    with pytest.raises(ValueError):
        pf.settle(T, PRICE_SCALE + 1)


def test_mark_to_market_at_bid_of_held_side() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 50 * CENT, 10 * C, 0)
    b = book(yes=[(48, 5), (47, 5)], no=[(50, 5)])
    assert pf.market_value(T, b) == dollars(4.8)
    assert pf.unrealized_pnl(T, b) == dollars(-0.2)
    assert pf.total_value({T: b}) == dollars(95 + 4.8)
    short = Portfolio(dollars(100))
    short.apply_fill(T, Side.NO, 52 * CENT, 10 * C, 0)
    assert short.market_value(T, b) == dollars(5.0)  # NO held marks at the NO bid, not 1 - YES ask


def test_missing_bid_marks_at_zero() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 50 * CENT, 10 * C, 0)
    assert pf.market_value(T, book(no=[(50, 5)])) == 0
    assert pf.market_value(T, None) == 0
    assert pf.total_value({}) == dollars(95)


def test_reserve_release_and_available_cash() -> None:
    pf = Portfolio(dollars(10))
    pf.reserve(dollars(6))
    assert pf.available_cash == dollars(4)
    with pytest.raises(InsufficientFunds):
        pf.reserve(dollars(5))
    with pytest.raises(ValueError):
        pf.release(dollars(7))
    pf.release(dollars(6))
    assert pf.available_cash == dollars(10)
    with pytest.raises(ValueError):
        pf.reserve(-1)


def test_fill_that_would_overdraw_raises_and_changes_nothing() -> None:
    pf = Portfolio(dollars(1))
    before = pf.snapshot()
    with pytest.raises(InsufficientFunds):
        pf.apply_fill(T, Side.YES, 50 * CENT, 3 * C, 0)
    assert pf.snapshot() == before
    with pytest.raises(ValueError):
        pf.apply_fill(T, Side.YES, 0, 1, 0)
    with pytest.raises(InsufficientFunds):
        Portfolio(-1)


def test_netting_fill_needs_no_cash_for_price() -> None:
    pf = Portfolio(dollars(1))
    pf.apply_fill(T, Side.YES, 90 * CENT, 1 * C, 0)
    assert pf.cash == dollars(0.1)
    pf.apply_fill(T, Side.NO, 95 * CENT, 1 * C, 0)  # costs 0.95 but nets: +$1 back
    assert pf.cash == dollars(0.15)


def test_snapshot_restore_roundtrip_through_json() -> None:
    pf = Portfolio(dollars(100), "alice")
    pf.apply_fill(T, Side.YES, 41 * CENT, 7 * C, dollars(0.12))
    pf.apply_fill("B", Side.NO, 30 * CENT, 3 * C, dollars(0.05))
    pf.reserve(dollars(2))
    raw = msgspec.json.decode(msgspec.json.encode(pf.snapshot()))
    back = Portfolio.restore(raw)
    assert back.snapshot() == pf.snapshot()
    assert back.owner == "alice" and back.available_cash == pf.available_cash
    raw["positions"][T]["qty"] = 1.5
    with pytest.raises(ValueError):
        Portfolio.restore(raw)


def test_position_and_cash_override() -> None:
    pf = Portfolio(dollars(100))
    pf.apply_fill(T, Side.YES, 40 * CENT, 10 * C, 0)
    assert pf.apply_position_override(T, -3 * C, dollars(1.8), realized_pnl=5, fees_paid=7) == -13 * C
    pos = pf.positions[T]
    assert (pos.qty, pos.cost, pos.realized_pnl, pos.fees_paid) == (-3 * C, dollars(1.8), 5, 7)
    assert pf.apply_cash_override(dollars(50)) == dollars(50) - dollars(96)
    with pytest.raises(ValueError):
        pf.apply_position_override(T, 0, 5)
    with pytest.raises(InsufficientFunds):
        pf.apply_cash_override(-1)


fills = st.lists(
    st.tuples(st.sampled_from([Side.YES, Side.NO]), st.integers(1, 99), st.integers(1, 2000)),
    min_size=1,
    max_size=30,
)


@given(fills, st.one_of(st.booleans(), st.integers(0, PRICE_SCALE)))
def test_two_sided_conservation_and_settlement(
    trades: list[tuple[Side, int, int]], result: bool | int
) -> None:
    """Every fill between two portfolios moves exactly $1 per contract into the market; after
    settlement both portfolios together hold their starting cash (no fees here)."""
    a, b = Portfolio(dollars(10_000)), Portfolio(dollars(10_000))
    for side, cents_, qty in trades:
        p = cents_ * CENT
        a.apply_fill(T, side, p, qty, 0)
        b.apply_fill(T, side.other, PRICE_SCALE - p, qty, 0)
        assert a.position(T) == -b.position(T)
        assert a.cash + b.cash + abs(a.position(T)) * PRICE_SCALE == dollars(20_000)
        assert a.cash - a.starting_cash + a.cost_basis() == a.realized_pnl
    a.settle(T, result)
    b.settle(T, result)
    assert a.cash + b.cash == dollars(20_000)
    assert a.realized_pnl + b.realized_pnl == 0
