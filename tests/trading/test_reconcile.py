"""Reconciliation: fills priced on the bought side, every discrepancy kind, strict snapshots."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.market.fees import max_order_fee
from kalshiflow.market.orders import OrderRequest as EngineOrder
from kalshiflow.market.prices import CENT, MONEY_SCALE, QTY_SCALE
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce
from kalshiflow.market.venue import Venue
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol import ws_data as wd
from kalshiflow.trading import OpenOrder, TradeFill
from kalshiflow.trading.reconcile import (
    DiscrepancyKind,
    DropOrder,
    ExchangeSnapshot,
    Ledger,
    SchemaError,
    SetCash,
    SetPosition,
    decode_balance_strict,
    decode_orders_strict,
    decode_positions_strict,
    estimate_reserve,
    reconcile,
)

DOLLAR = MONEY_SCALE
C = QTY_SCALE
K = DiscrepancyKind


def ledger(cash: int = 100 * DOLLAR) -> Ledger:
    led = Ledger("acct")
    led.apply([SetCash(cash=cash)])
    return led


def ws_fill(**kw: Any) -> TradeFill:
    base: dict[str, Any] = {
        "trade_id": "t1", "order_id": "o1", "market_ticker": "M", "client_order_id": "c1",
        "side": Side.YES, "action": Action.BUY, "yes_price": 40 * CENT, "no_price": 60 * CENT,
        "count": 10 * C, "is_taker": True, "fee": 0, "post_position": None, "ts_ms": 1,
    }
    return TradeFill.from_ws(wd.FillEvent(**(base | kw)))


def market_position(ticker: str, qty: int, cost: int, realized: int = 0, fees: int = 0) -> rm.MarketPosition:
    return rm.MarketPosition(ticker=ticker, position=qty, total_traded=0, market_exposure=cost,
                             realized_pnl=realized, fees_paid=fees, resting_orders_count=0,
                             last_updated_ts=None)


def order(oid: str, *, ticker: str = "M", side: Side = Side.YES, action: Action = Action.BUY,
          price: int = 30 * CENT, remaining: int = 5 * C, status: OrderStatus = OrderStatus.RESTING,
          coid: str = "") -> rm.Order:
    yes = price if side is Side.YES else 10_000 - price
    return rm.Order(order_id=oid, client_order_id=coid or f"c-{oid}", ticker=ticker, side=side,
                    action=action, type="limit", status=status, yes_price=yes, no_price=10_000 - yes,
                    initial_count=remaining, fill_count=0, remaining_count=remaining, taker_fill_cost=0,
                    maker_fill_cost=0, taker_fees=0, maker_fees=0, created_time="2026-01-01T00:00:00Z")


def snapshot(positions: tuple[rm.MarketPosition, ...] = (), orders: tuple[rm.Order, ...] = (),
             balance: int = 100 * DOLLAR, value: int | None = None) -> ExchangeSnapshot:
    return ExchangeSnapshot(positions=positions, orders=orders, balance=balance, portfolio_value=value)


# ------------------------------------------------------------------------------ fills


def test_no_fill_is_priced_on_the_no_side() -> None:
    led = ledger()
    # Buying NO at yes_price 0.70 costs the NO price, 0.30, per contract.
    fill = ws_fill(side=Side.NO, yes_price=70 * CENT, no_price=30 * CENT, fee=14 * 10_000,
                   post_position=-10 * C)
    assert fill.bought_side is Side.NO and fill.bought_price == 30 * CENT and fill.notional == 3 * DOLLAR
    out = led.apply_fill(fill)
    assert out.discrepancy is None
    pos = led.portfolio.positions["M"]
    assert pos.qty == -10 * C and pos.cost == 3 * DOLLAR and pos.fees_paid == 140_000
    assert led.portfolio.cash == 100 * DOLLAR - 3 * DOLLAR - 140_000
    assert led.view(0).positions["M"].avg_price == 30 * CENT


def test_selling_yes_from_flat_buys_no_at_the_complement() -> None:
    led = ledger()
    led.apply_fill(ws_fill(side=Side.YES, action=Action.SELL, yes_price=70 * CENT, no_price=30 * CENT))
    pos = led.portfolio.positions["M"]
    assert pos.qty == -10 * C and pos.cost == 3 * DOLLAR  # cost, not income
    assert led.portfolio.cash == 97 * DOLLAR


@given(st.integers(1, 99), st.sampled_from(list(Side)), st.sampled_from(list(Action)))
def test_a_fill_reads_at_the_price_of_its_named_side(cents: int, side: Side, action: Action) -> None:
    """"sell yes at p" is p (the YES price), though the money moved is the NO price it buys."""
    fill = ws_fill(side=side, action=action, yes_price=cents * CENT, no_price=(100 - cents) * CENT)
    assert fill.side_price == (cents if side is Side.YES else 100 - cents) * CENT
    assert fill.bought_price == (fill.side_price if action is Action.BUY else (100 * CENT - fill.side_price))


def test_no_fill_decoded_from_the_wire_and_from_rest() -> None:
    frame = {"type": "fill", "sid": 3, "msg": {
        "trade_id": "t9", "order_id": "o9", "market_ticker": "M", "is_taker": True, "side": "no",
        "action": "buy", "yes_price_dollars": "0.7500", "count_fp": "4.00", "fee_cost": "0.0200",
        "post_position_fp": "-4.00", "client_order_id": "c9", "ts_ms": 5}}
    msg = wd.decode_message(json.dumps(frame).encode())
    assert isinstance(msg, wd.DataMessage) and isinstance(msg.msg, wd.FillEvent)
    fill = TradeFill.from_ws(msg.msg)
    assert (fill.bought_side, fill.bought_price, fill.count, fill.post_position) == (Side.NO, 2500, 400, -400)
    rest = rm.decode_fills_page(json.dumps({"fills": [{
        "fill_id": "t9", "order_id": "o9", "ticker": "M", "side": "no", "action": "buy", "count_fp": "4.00",
        "yes_price_dollars": "0.7500", "no_price_dollars": "0.2500", "is_taker": True, "fee_cost": "0.0200",
        "ts": 7}], "cursor": ""}).encode()).fills[0]
    assert TradeFill.from_rest(rest).bought_price == 2500
    led = ledger()
    led.apply_fill(fill)
    assert led.portfolio.positions["M"].cost == 400 * 2500


def test_netting_fill_and_duplicates() -> None:
    led = ledger()
    led.apply_fill(ws_fill(post_position=10 * C))
    # Buying NO while long YES nets: each pair pays $1 back; realized = 1 - 0.40 - 0.45 per pair.
    out = led.apply_fill(ws_fill(trade_id="t2", side=Side.NO, yes_price=55 * CENT, no_price=45 * CENT,
                                 count=4 * C, post_position=6 * C))
    assert out.realized == 4 * C * (10_000 - 4000 - 4500)
    # Paid $4 for the YES, $1.80 for the NO; the 4 netted pairs paid $4 back.
    assert led.position("M") == 6 * C
    assert led.portfolio.cash == 100 * DOLLAR - 4 * DOLLAR - 180 * 10_000 + 4 * DOLLAR
    assert led.apply_fill(ws_fill(trade_id="t2", side=Side.NO, count=4 * C)).duplicate
    assert led.position("M") == 6 * C


def test_fill_already_reflected_by_a_position_event_moves_only_cash() -> None:
    led = ledger()
    ev = wd.PositionEvent(market_ticker="M", position=10 * C, position_cost=4 * DOLLAR, realized_pnl=0,
                          fees_paid=0, volume=10 * C)
    issue = led.apply_position(ev)  # the snapshot overtook its fill
    assert issue is not None and issue.kind is K.MISSING_POSITION
    assert led.apply_fill(ws_fill(post_position=10 * C)).discrepancy is None
    assert led.position("M") == 10 * C and led.portfolio.cash == 96 * DOLLAR


def test_fill_contradicting_post_position_is_reported_and_set_to_the_exchange_figure() -> None:
    led = ledger()
    led.apply_fill(ws_fill(post_position=10 * C))
    out = led.apply_fill(ws_fill(trade_id="t2", count=5 * C, post_position=25 * C))  # we missed 10
    assert out.discrepancy is not None and out.discrepancy.kind is K.FILL_POSITION
    assert led.position("M") == 25 * C


def test_fills_shrink_tracked_orders_and_the_collateral_estimate() -> None:
    led = ledger()
    led.track_order(order("o1", price=40 * CENT, remaining=10 * C))
    assert led.portfolio.reserved == 4 * DOLLAR + max_order_fee(40 * CENT, 10 * C)
    led.apply_fill(ws_fill(count=4 * C, order_id="o1", client_order_id="c-o1"))
    assert led.orders["o1"].remaining == 6 * C
    led.apply_fill(ws_fill(trade_id="t2", count=6 * C, order_id="o1"))
    assert "o1" not in led.orders and led.portfolio.reserved == 0
    assert "c-o1" in led.view(0).accounted_client_order_ids


# ------------------------------------------------------------------------------ diff


def test_each_discrepancy_kind_is_found_and_corrected() -> None:
    led = ledger()
    led.apply_fill(ws_fill(market_ticker="A"))  # A: 10 YES at 0.40
    led.apply_fill(ws_fill(trade_id="t2", market_ticker="B"))  # B: phantom
    led.apply_fill(ws_fill(trade_id="t3", market_ticker="D"))  # D: wrong cost
    led.track_order(order("stale"))
    led.track_order(order("changed", remaining=5 * C))
    cash_before = led.portfolio.available_cash
    snap = snapshot(
        positions=(market_position("A", 12 * C, 480 * 10_000), market_position("C", -3 * C, 90 * 10_000),
                   market_position("D", 10 * C, 5 * DOLLAR)),
        orders=(order("changed", remaining=2 * C), order("new", ticker="C"),
                order("done", status=OrderStatus.EXECUTED)),
        balance=cash_before + 7 * DOLLAR)
    res = reconcile(led, snap)
    kinds = {(d.kind, d.order_id or d.ticker) for d in res.discrepancies}
    assert kinds == {(K.WRONG_QTY, "A"), (K.MISSING_POSITION, "C"), (K.WRONG_COST, "D"),
                     (K.PHANTOM_POSITION, "B"), (K.UNKNOWN_ORDER, "new"), (K.ORDER_MISMATCH, "changed"),
                     (K.STALE_ORDER, "stale"), (K.BALANCE_DRIFT, "")}
    assert SetPosition(ticker="B", qty=0, cost=0) in res.corrections
    assert DropOrder(order_id="stale") in res.corrections
    assert any(isinstance(c, SetCash) for c in res.corrections)
    led.apply(res.corrections)
    again = reconcile(led, snap)
    assert again.discrepancies == () and again.corrections == ()
    assert led.portfolio.available_cash == snap.balance
    assert {t: p.qty for t, p in led.portfolio.positions.items() if p.qty} == {"A": 12 * C, "C": -3 * C,
                                                                              "D": 10 * C}


def test_market_positions_key_never_wipes_local_positions() -> None:
    """prior-system-lessons §8.7: a positions sync read a non-existent key and deleted everything."""
    led = ledger()
    led.apply_fill(ws_fill(post_position=10 * C))
    led.apply_fill(ws_fill(trade_id="t2", market_ticker="N", side=Side.NO, post_position=-10 * C))
    body = json.dumps({
        "market_positions": [
            {"ticker": "M", "position_fp": "10.00", "market_exposure_dollars": "4.0000",
             "realized_pnl_dollars": "0.0000", "fees_paid_dollars": "0.0000",
             "total_traded_dollars": "4.0000", "resting_orders_count": 0},
            {"ticker": "N", "position_fp": "-10.00", "market_exposure_dollars": "6.0000",
             "realized_pnl_dollars": "0.0000", "fees_paid_dollars": "0.0000", "resting_orders_count": 0}],
        "event_positions": [], "cursor": ""}).encode()
    page = decode_positions_strict(body)
    res = reconcile(led, snapshot(positions=page.market_positions, balance=led.portfolio.available_cash))
    assert res.discrepancies == () and res.corrections == ()
    assert led.position("M") == 10 * C and led.position("N") == -10 * C
    # A body without the key is an error, never "no positions".
    for bad in ({"positions": []}, {"market_positions": None}, {}):
        with pytest.raises(SchemaError):
            decode_positions_strict(json.dumps(bad).encode())
    with pytest.raises(SchemaError):
        decode_orders_strict(b'{"order": []}')
    with pytest.raises(SchemaError):
        decode_balance_strict(b'{"portfolio_value": 5}')
    assert decode_balance_strict(b'{"balance": 1234, "portfolio_value": 5}').balance == 1234 * 10_000
    # An empty list while positions are worth money contradicts itself: positions are kept.
    res = reconcile(led, snapshot(balance=led.portfolio.available_cash, value=5 * DOLLAR))
    assert [d.kind for d in res.discrepancies] == [K.SNAPSHOT_REJECTED]
    assert not any(isinstance(c, SetPosition) for c in res.corrections)
    assert set(res.deferred) == {"M", "N"}
    # A genuinely flat account (nothing held, nothing worth anything) is flat.
    res = reconcile(led, snapshot(balance=led.portfolio.available_cash, value=0))
    assert {d.kind for d in res.discrepancies} == {K.PHANTOM_POSITION}


def test_markets_changed_while_fetching_are_deferred() -> None:
    led = ledger()
    led.apply_fill(ws_fill(post_position=10 * C))
    led.track_order(order("o1"))
    res = reconcile(led, snapshot(balance=1), skip_tickers=frozenset({"M"}), skip_balance=True)
    assert res.discrepancies == () and res.corrections == () and res.deferred == ("M",)
    res = reconcile(led, snapshot(balance=1), skip_orders=frozenset({"o1"}), skip_balance=True)
    assert [d.kind for d in res.discrepancies] == [K.PHANTOM_POSITION]


def test_cost_and_balance_tolerances() -> None:
    led = ledger()
    led.apply_fill(ws_fill(count=333, post_position=333))  # 3.33 contracts at 0.40 = $1.332
    snap = snapshot(positions=(market_position("M", 333, 1_332_000 - 60),),
                    balance=led.portfolio.available_cash + 9_000)
    res = reconcile(led, snap)
    assert res.discrepancies == ()  # $0.00006 and $0.009 are rounding, not drift
    assert res.corrections == (SetCash(cash=snap.balance),)  # the exchange's cash still wins


def test_corrections_round_trip_as_tagged_messages() -> None:
    res = reconcile(ledger(), snapshot(orders=(order("x"),), balance=3))
    data = msgspec.msgpack.encode(res)
    assert msgspec.msgpack.decode(data, type=type(res)) == res


# ------------------------------------------------------------------------------ collateral


@given(ops=st.lists(st.tuples(st.sampled_from(list(Side)), st.sampled_from(list(Action)), st.integers(1, 30),
                              st.integers(5, 95), st.booleans()), min_size=1, max_size=25))
@settings(max_examples=150, deadline=None)
def test_collateral_estimate_matches_the_venue(ops: list[tuple[Side, Action, int, int, bool]]) -> None:
    now = [1000.0]
    venue = Venue(clock=lambda: now[0])
    venue.add_market("M")
    venue.open_account("me", 10**6 * DOLLAR)
    venue.open_account("mm", 10**6 * DOLLAR)
    partial = False
    for side, action, n, cents, cross in ops:
        now[0] += 1
        if cross:  # someone rests liquidity our order will take (partly)
            other = side.other if action is Action.BUY else side
            venue.submit("mm", "M", EngineOrder(side=other, action=Action.BUY, count=n * C // 2 or C,
                                                **{f"{other.value}_price": 100 * CENT - cents * CENT}))
        price = {f"{side.value}_price": cents * CENT}
        res = venue.submit("me", "M", EngineOrder(side=side, action=action, count=n * C,
                                                  time_in_force=TimeInForce.GTC, **price))
        partial |= bool(res.order and res.order.fill_count and res.order.remaining_count)
    mine = [OpenOrder(order_id=o.order_id, client_order_id="", ticker="M", side=o.side, action=o.action,
                      price=o.price, remaining=o.remaining_count, created_ts=o.created_ts)
            for o in venue.open_orders("me")]
    est = estimate_reserve({"M": venue.account("me").position("M")}, mine)
    actual = venue.account("me").reserved
    if partial:  # a partly filled order's fee bound depends on fees already paid: within a cent each
        assert abs(est - actual) <= 10_000 * len(mine)
    else:
        assert est == actual

