"""Venue: market/account routing, collateral, fees on both sides, lifecycle, replay fills."""

from __future__ import annotations

import pytest

from kalshiflow.market.fees import FeeSchedule, FeeType, maker_fee, max_order_fee, taker_fee
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, PRICE_SCALE
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce
from kalshiflow.market.venue import TradingStatus, Venue

C = 100
CENT = 100
D = MONEY_SCALE
S = PRICE_SCALE
T = "MKT"
YES, NO, BUY, SELL = Side.YES, Side.NO, Action.BUY, Action.SELL


def req(side: Side, action: Action, cents: int, contracts: float, tif: TimeInForce = TimeInForce.GTC,
        **kw) -> OrderRequest:  # type: ignore[no-untyped-def]
    key = "yes_price" if side is YES else "no_price"
    return OrderRequest(side=side, action=action, count=round(contracts * C), time_in_force=tif,
                        **{key: cents * CENT}, **kw)


DEFAULT = FeeSchedule()


def venue(fees: FeeSchedule = DEFAULT, **balances: int) -> Venue:
    v = Venue(clock=lambda: 0.0)
    v.add_market(T, fees=fees)
    for owner, dollars in {"mm": 10_000, "a": 100, **balances}.items():
        v.open_account(owner, dollars * D)
    return v


def test_routing_rejections() -> None:
    v = venue()
    assert v.submit("a", "NOPE", req(YES, BUY, 50, 1)).error == "market_not_found"
    assert v.submit("ghost", T, req(YES, BUY, 50, 1)).error == "user_not_found"
    assert v.submit("a", T, req(YES, BUY, 0, 1)).error == "invalid_price"
    assert v.submit("a", T, req(YES, BUY, 50, 0)).error == "invalid_count"
    resting = v.submit("a", T, req(YES, BUY, 40, 1))
    v.pause_market(T)
    assert v.submit("a", T, req(YES, BUY, 50, 1)).error == "trading_paused"
    assert resting.order is not None and v.cancel("a", resting.order.order_id).ok  # cancels still work
    v.pause_market(T, False)
    v.close_market(T)
    assert v.markets[T].status is TradingStatus.CLOSED
    assert v.submit("a", T, req(YES, BUY, 50, 1)).error == "market_closed"


def test_duplicate_client_order_id_among_open_orders() -> None:
    v = venue()
    first = v.submit("a", T, req(YES, BUY, 40, 1, client_order_id="x"))
    assert first.ok
    assert v.submit("a", T, req(YES, BUY, 41, 1, client_order_id="x")).error == "order_already_exists"
    assert v.submit("mm", T, req(YES, BUY, 41, 1, client_order_id="x")).ok  # other owner: fine
    assert first.order is not None and v.cancel("a", first.order.order_id).ok
    assert v.submit("a", T, req(YES, BUY, 41, 1, client_order_id="x")).ok  # no longer open


def test_resting_order_reserves_price_plus_worst_fee_and_cancel_releases() -> None:
    v = venue()
    r = v.submit("a", T, req(YES, BUY, 40, 10))
    need = 40 * CENT * 10 * C + max_order_fee(40 * CENT, 10 * C)
    assert v.reserved("a", T) == need and v.account("a").available_cash == 100 * D - need
    assert r.order is not None
    c = v.cancel("a", r.order.order_id)
    assert c.ok and c.reduced_by == 10 * C and c.order is not None and c.order.status is OrderStatus.CANCELED
    assert v.reserved("a") == 0 and v.account("a").available_cash == 100 * D
    assert v.cancel("a", r.order.order_id).error == "not_found"


def test_cancel_and_decrease_check_owner_and_amounts() -> None:
    v = venue()
    r = v.submit("a", T, req(YES, BUY, 40, 10))
    assert r.order is not None
    oid = r.order.order_id
    assert v.cancel("mm", oid).error == "not_found"
    assert v.decrease("a", oid, reduce_by=11 * C).error == "invalid_order"
    d = v.decrease("a", oid, reduce_by=4 * C)
    assert d.ok and d.order is not None and d.order.remaining_count == 6 * C
    assert v.reserved("a", T) == 40 * CENT * 6 * C + max_order_fee(40 * CENT, 6 * C)
    assert len(v.cancel_all("a")) == 1 and v.open_orders("a") == []


def test_insufficient_balance() -> None:
    v = venue()
    assert v.submit("a", T, req(YES, BUY, 50, 200)).error == "insufficient_balance"  # $100 + fee > $100
    assert v.submit("a", T, req(YES, BUY, 50, 190)).ok
    assert v.submit("a", T, req(YES, BUY, 50, 10)).error == "insufficient_balance"  # reserved counts


def test_netting_order_needs_only_fee_collateral() -> None:
    v = venue(poor=1)
    v.submit("mm", T, req(NO, BUY, 50, 10))  # YES ask 0.50
    r = v.submit("poor", T, req(YES, BUY, 50, 1, TimeInForce.IOC))
    assert r.fills and v.account("poor").position(T) == 1 * C
    cash = v.account("poor").cash
    assert cash == 1 * D - 50 * CENT * C - taker_fee(50 * CENT, C)
    # selling 1 YES (= buying NO at 0.55) would need $0.55 from flat; netting needs only the fee
    r = v.submit("poor", T, req(YES, SELL, 45, 1))
    assert r.ok and r.order is not None and r.order.status is OrderStatus.RESTING
    assert v.reserved("poor", T) == max_order_fee(55 * CENT, C)
    # a second sell cannot claim the same holding: it would open NO exposure
    assert v.submit("poor", T, req(YES, SELL, 45, 1)).error == "insufficient_balance"


def test_fill_updates_both_portfolios_with_taker_and_maker_fees() -> None:
    sched = FeeSchedule(fee_type=FeeType.QUADRATIC_WITH_MAKER_FEES)
    v = venue(sched)
    m = v.submit("mm", T, req(NO, BUY, 40, 10))  # YES ask 0.60
    assert m.order is not None
    r = v.submit("a", T, req(YES, BUY, 65, 10))
    (f,) = r.fills
    assert f.taker_fee == taker_fee(60 * CENT, 10 * C) and f.maker_fee == maker_fee(40 * CENT, 10 * C, sched)
    assert f.maker_fee > 0
    assert (f.taker_position, f.maker_position) == (10 * C, -10 * C)
    a, mm = v.account("a"), v.account("mm")
    assert a.cash == 100 * D - 60 * CENT * 10 * C - f.taker_fee
    assert mm.cash == 10_000 * D - 40 * CENT * 10 * C - f.maker_fee
    assert a.position(T) == 10 * C and mm.position(T) == -10 * C
    assert v.reserved("mm") == 0 and v.reserved("a") == 0  # both orders done, collateral released
    assert [x.order_id for x in r.makers] == [m.order.order_id] and r.makers[0].status is OrderStatus.EXECUTED


def test_partial_maker_fill_releases_pro_rata() -> None:
    v = venue()
    m = v.submit("mm", T, req(NO, BUY, 40, 10))
    assert m.order is not None
    v.submit("a", T, req(YES, BUY, 60, 4, TimeInForce.IOC))
    assert v.reserved("mm", T) == 40 * CENT * 6 * C + v.markets[T].calc.money(
        v.markets[T].calc.max_units(40 * CENT, 6 * C) + v.markets[T].calc.units(40 * CENT, 4 * C, False)
    )
    assert v.get_order(m.order.order_id) is not None


def test_settlement_cancels_pays_and_conserves() -> None:
    v = venue(b=100)
    v.submit("mm", T, req(NO, BUY, 40, 10))
    v.submit("a", T, req(YES, BUY, 60, 10, TimeInForce.IOC))  # a long 10 YES @0.60, mm long 10 NO @0.40
    resting = v.submit("b", T, req(YES, BUY, 30, 5))
    assert resting.order is not None
    s = v.settle_market(T, True)
    assert s.settlement_value == S and [c.order_id for c in s.canceled] == [resting.order.order_id]
    assert s.payouts == {"a": 10 * D, "mm": 0}
    assert v.reserved("b") == 0 and v.account("b").cash == 100 * D
    total = sum(pf.cash for pf in v.accounts.values())
    fees = sum(pf.fees_paid for pf in v.accounts.values())
    assert total == (10_000 + 100 + 100) * D - fees
    assert v.markets[T].status is TradingStatus.SETTLED
    with pytest.raises(ValueError):
        v.settle_market(T, False)
    assert v.submit("a", T, req(YES, BUY, 50, 1)).error == "market_closed"


def test_scalar_settlement() -> None:
    v = venue()
    v.submit("mm", T, req(NO, BUY, 40, 10))
    v.submit("a", T, req(YES, BUY, 60, 10, TimeInForce.IOC))
    s = v.settle_market(T, 25 * CENT)
    assert s.payouts == {"a": D * 10 // 4, "mm": D * 10 * 3 // 4}


def test_replay_trade_fills_agent_and_updates_portfolio() -> None:
    v = venue()
    v.add_liquidity(T, YES, 40 * CENT, 5 * C)
    r = v.submit("a", T, req(YES, BUY, 40, 2))
    assert r.order is not None
    assert v.reserved("a", T) > 0
    out = v.remove_liquidity(T, YES, 40 * CENT, 6 * C, traded=True)
    (f,) = out.fills
    assert f.maker_owner == "a" and f.count == 1 * C and f.taker_owner is None
    a = v.account("a")
    assert a.position(T) == 1 * C and a.cash == 100 * D - 40 * CENT * C - f.maker_fee
    assert f.maker_fee == 0  # default series: no maker fee
    out = v.remove_liquidity(T, YES, 40 * CENT, 1 * C, traded=True)
    assert out.makers[0].status is OrderStatus.EXECUTED and v.reserved("a") == 0
    assert v.get_order(r.order.order_id) is None


def test_account_value_ignores_own_bids() -> None:
    v = venue()
    v.submit("mm", T, req(YES, BUY, 48, 10))
    v.submit("mm", T, req(NO, BUY, 50, 10))
    v.submit("a", T, req(YES, BUY, 50, 10, TimeInForce.IOC))  # bought at the 0.50 ask
    base = v.account_value("a")
    assert base == 100 * D - 50 * CENT * 10 * C - taker_fee(50 * CENT, 10 * C) + 48 * CENT * 10 * C
    v.submit("a", T, req(YES, BUY, 49, 1))  # own better bid must not raise the mark
    assert v.account_value("a") == base


def test_reduce_only_caps_to_position() -> None:
    v = venue()
    assert v.submit("a", T, req(YES, SELL, 50, 1, reduce_only=True)).error == "invalid_order"
    v.submit("mm", T, req(NO, BUY, 50, 10))
    v.submit("a", T, req(YES, BUY, 50, 3, TimeInForce.IOC))
    r = v.submit("a", T, req(YES, SELL, 60, 10, reduce_only=True))
    assert r.ok and r.order is not None and r.order.initial_count == 3 * C
