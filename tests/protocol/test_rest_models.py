"""REST bodies in both Kalshi shapes decode to the same exact integers."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kalshiflow.market.prices import DECI_CENT, LINEAR_CENT, TAPERED_DECI_CENT
from kalshiflow.market.types import Action, OrderStatus, Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.errors import DecodeError


def j(obj) -> bytes:
    return json.dumps(obj).encode()


MARKET_CURRENT = {
    "ticker": "KXFED-27APR-T4.25",
    "event_ticker": "KXFED-27APR",
    "market_type": "binary",
    "yes_sub_title": "Above 4.25%",
    "no_sub_title": "Above 4.25%",
    "status": "active",
    "result": "",
    "created_time": "2026-01-01T00:00:00Z",
    "open_time": "2026-01-02T00:00:00Z",
    "close_time": "2027-04-29T18:00:00Z",
    "latest_expiration_time": "2027-05-06T14:00:00Z",
    "yes_bid_dollars": "0.4200",
    "yes_bid_size_fp": "13.00",
    "yes_ask_dollars": "0.4400",
    "yes_ask_size_fp": "17.50",
    "no_bid_dollars": "0.5600",
    "no_ask_dollars": "0.5800",
    "last_price_dollars": "0.4300",
    "volume_fp": "33896.00",
    "volume_24h_fp": "120.25",
    "open_interest_fp": "20422.00",
    "can_close_early": True,
    "notional_value_dollars": "1.0000",
    "previous_yes_bid_dollars": "0.4000",
    "previous_yes_ask_dollars": "0.4500",
    "previous_price_dollars": "0.4100",
    "price_level_structure": "tapered_deci_cent",
    "price_ranges": [
        {"start": "0.0000", "end": "0.1000", "step": "0.0010"},
        {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
        {"start": "0.9000", "end": "1.0000", "step": "0.0010"},
    ],
    "liquidity_dollars": "0.0000",
    "some_future_field": {"x": 1},
}

MARKET_LEGACY = {
    "ticker": "KXFED-27APR-T4.25",
    "event_ticker": "KXFED-27APR",
    "market_type": "binary",
    "title": "Fed",
    "subtitle": "",
    "yes_sub_title": "",
    "no_sub_title": "",
    "status": "active",
    "result": "",
    "open_time": "2026-01-02T00:00:00Z",
    "close_time": "2027-04-29T18:00:00Z",
    "expiration_time": "2027-05-06T14:00:00Z",
    "response_price_units": "usd_cent",
    "yes_bid": 42,
    "yes_ask": 44,
    "no_bid": 56,
    "no_ask": 58,
    "last_price": 43,
    "previous_yes_bid": 40,
    "previous_yes_ask": 45,
    "previous_price": 41,
    "notional_value": 100,
    "liquidity": 1234,
    "volume": 33896,
    "volume_24h": 120,
    "open_interest": 20422,
    "tick_size": 1,
    "category": "Economics",
    "risk_limit_cents": 2500000,
    "can_close_early": True,
}


def test_market_current_and_legacy_agree():
    cur = rm.decode_market(j({"market": MARKET_CURRENT}))
    leg = rm.decode_market(j({"market": MARKET_LEGACY}))
    for m in (cur, leg):
        assert (m.yes_bid, m.yes_ask, m.no_bid, m.no_ask, m.last_price) == (4200, 4400, 5600, 5800, 4300)
        assert (m.previous_yes_bid, m.previous_yes_ask, m.previous_price) == (4000, 4500, 4100)
        assert m.volume == 3_389_600 and m.open_interest == 2_042_200
        assert m.notional_value == 10_000 and m.can_close_early and m.status == "active"
    assert cur.yes_bid_size == 1300 and cur.yes_ask_size == 1750 and cur.volume_24h == 12_025
    assert cur.grid is TAPERED_DECI_CENT and cur.grid.is_valid(20) and not cur.grid.is_valid(1510)
    assert leg.grid is LINEAR_CENT and leg.liquidity == 12_340_000  # 1234 cents in micro-dollars
    assert leg.expiration_time == "2027-05-06T14:00:00Z"


def test_markets_page_cursor_forms():
    page = rm.decode_markets_page(j({"markets": [MARKET_CURRENT, MARKET_LEGACY], "cursor": "CgwIj66Q"}))
    assert len(page.markets) == 2 and page.cursor == "CgwIj66Q"
    assert rm.decode_markets_page(j({"markets": [], "cursor": None})).cursor == ""
    assert rm.decode_markets_page(j({"markets": None})).markets == ()


def test_orderbook_shapes():
    current = {
        "orderbook_fp": {
            "yes_dollars": [["0.0100", "200.00"], ["0.4200", "13.00"]],
            "no_dollars": [["0.0100", "100.00"], ["0.5600", "17.50"]],
        }
    }
    legacy = {
        "orderbook": {
            "yes": [[1, 200], [42, 13]],
            "no": [[1, 100], [56, 17]],
            "yes_dollars": [["0.0100", 200], ["0.4200", 13]],
            "no_dollars": [["0.0100", 100], ["0.5600", 17]],
        }
    }
    legacy_ints = {"orderbook": {"yes": [[42, 13], [1, 200]], "no": None}}
    sdk = {"orderbook": {"yes_dollars": [["0.0100", "200"], ["0.4200", "13"]], "no_dollars": []}}
    a = rm.decode_orderbook("T", j(current))
    assert a.yes == ((100, 20_000), (4200, 1300)) and a.no == ((100, 10_000), (5600, 1750))
    assert a.best_yes_bid == (4200, 1300) and a.best_yes_ask == 4400
    b = rm.decode_orderbook("T", j(legacy))
    assert b.yes == a.yes and b.no == ((100, 10_000), (5600, 1700))
    c = rm.decode_orderbook("T", j(legacy_ints))
    assert c.yes == a.yes and c.no == () and c.best_yes_ask is None  # sorted ascending
    assert rm.decode_orderbook("T", j(sdk)).yes == a.yes
    assert rm.decode_orderbook("T", j({"orderbook_fp": {"yes_dollars": [], "no_dollars": []}})).yes == ()


def test_balance_and_positions():
    assert rm.decode_balance(
        j({"balance": 1234567, "portfolio_value": 100, "updated_ts": 1700000000})
    ) == rm.Balance(balance=12_345_670_000, portfolio_value=1_000_000, updated_ts=1700000000)
    cur = rm.decode_balance(j({"balance": 1234567, "balance_dollars": "12345.6789", "updated_ts": 1}))
    assert cur.balance == 12_345_678_900  # the fixed-point field wins: it carries sub-cent precision
    current = {
        "market_positions": [
            {
                "ticker": "A",
                "position_fp": "-12.50",
                "total_traded_dollars": "100.0000",
                "market_exposure_dollars": "5.5000",
                "realized_pnl_dollars": "-1.2300",
                "fees_paid_dollars": "0.0700",
                "last_updated_ts": "2026-06-01T00:00:00Z",
            }
        ],
        "event_positions": [
            {
                "event_ticker": "E",
                "total_cost_dollars": "5.5000",
                "total_cost_shares_fp": "12.50",
                "event_exposure_dollars": "5.5000",
                "realized_pnl_dollars": "0",
                "fees_paid_dollars": "0.07",
            }
        ],
        "cursor": "",
    }
    legacy = {
        "market_positions": [
            {
                "ticker": "A",
                "position": -12,
                "total_traded": 10000,
                "market_exposure": 550,
                "realized_pnl": -123,
                "fees_paid": 7,
                "resting_orders_count": 2,
            }
        ],
        "event_positions": [
            {
                "event_ticker": "E",
                "total_cost": 550,
                "total_cost_shares": 12,
                "event_exposure": 550,
                "realized_pnl": 0,
                "fees_paid": 7,
            }
        ],
        "cursor": "",
    }
    a, b = rm.decode_positions(j(current)), rm.decode_positions(j(legacy))
    assert a.market_positions[0].position == -1250 and b.market_positions[0].position == -1200
    for p in (a, b):
        mp = p.market_positions[0]
        assert (mp.total_traded, mp.market_exposure, mp.realized_pnl, mp.fees_paid) == (
            100_000_000,
            5_500_000,
            -1_230_000,
            70_000,
        )
        assert p.event_positions[0].total_cost == 5_500_000
    assert b.market_positions[0].resting_orders_count == 2
    assert rm.decode_positions(j({"cursor": ""})).market_positions == ()


ORDER_CURRENT_NO = {
    "order_id": "o1",
    "user_id": "u",
    "client_order_id": "c1",
    "ticker": "T",
    "side": "no",
    "action": "buy",
    "outcome_side": "no",
    "book_side": "ask",
    "type": "limit",
    "status": "resting",
    "yes_price_dollars": "0.7000",
    "no_price_dollars": "0.3000",
    "fill_count_fp": "2.00",
    "remaining_count_fp": "8.00",
    "initial_count_fp": "10.00",
    "taker_fill_cost_dollars": "0.6000",
    "maker_fill_cost_dollars": "0.0000",
    "taker_fees_dollars": "0.0300",
    "maker_fees_dollars": "0.0000",
    "created_time": "2026-06-01T00:00:00Z",
}
ORDER_LEGACY_NO = {
    "order_id": "o1",
    "client_order_id": "c1",
    "ticker": "T",
    "side": "no",
    "action": "buy",
    "type": "limit",
    "status": "resting",
    "yes_price": 70,
    "no_price": 30,
    "fill_count": 2,
    "remaining_count": 8,
    "initial_count": 10,
    "taker_fill_cost": 60,
    "maker_fill_cost": 0,
    "taker_fees": 3,
    "maker_fees": 0,
    "queue_position": 0,
}


def test_order_no_side_is_priced_on_the_no_leg():
    for body in (ORDER_CURRENT_NO, ORDER_LEGACY_NO):
        o = rm.decode_order(j({"order": body}))
        assert (o.side, o.action, o.status) == (Side.NO, Action.BUY, OrderStatus.RESTING)
        assert (o.yes_price, o.no_price, o.price) == (7000, 3000, 3000)
        assert (o.initial_count, o.fill_count, o.remaining_count) == (1000, 200, 800)
        assert o.taker_fill_cost == 600_000 and o.taker_fees == 30_000 and o.outcome_side is Side.NO
    # Only the YES price on the wire: the NO price is derived, never copied.
    only_yes = {k: v for k, v in ORDER_CURRENT_NO.items() if k != "no_price_dollars"}
    assert rm.decode_order(j({"order": only_yes})).price == 3000
    # Current-only direction fields.
    bare = {k: v for k, v in ORDER_CURRENT_NO.items() if k not in ("side", "action")}
    o = rm.decode_order(j({"order": bare}))
    assert (o.side, o.action, o.price) == (Side.NO, Action.BUY, 3000)
    with pytest.raises(DecodeError):
        rm.decode_order(j({"order": {**ORDER_CURRENT_NO, "no_price_dollars": "0.3100"}}))
    with pytest.raises(DecodeError):
        rm.decode_order(j({"order": {**ORDER_CURRENT_NO, "status": "pending"}}))
    page = rm.decode_orders_page(j({"orders": [ORDER_CURRENT_NO, ORDER_LEGACY_NO], "cursor": "n"}))
    assert len(page.orders) == 2 and page.cursor == "n"


def test_sell_yes_order_buys_no():
    body = {**ORDER_LEGACY_NO, "side": "yes", "action": "sell"}
    o = rm.decode_order(j({"order": body}))
    assert o.price == 7000 and o.outcome_side is Side.NO


def test_cancel_response_shapes():
    done = {**ORDER_CURRENT_NO, "status": "canceled", "remaining_count_fp": "0.00"}
    a = rm.decode_cancel(j({"order": done, "reduced_by_fp": "8.00"}))
    b = rm.decode_cancel(j({"order": done, "reduced_by": 8}))
    c = rm.decode_cancel(j({"order": done, "reduced_by": 8, "reduced_by_fp": "8.00"}))
    assert a.reduced_by == b.reduced_by == c.reduced_by == 800
    assert a.order.status is OrderStatus.CANCELED


FILL_CURRENT_NO = {
    "fill_id": "f1",
    "trade_id": "f1",
    "order_id": "o1",
    "ticker": "T",
    "market_ticker": "T",
    "side": "no",
    "action": "buy",
    "outcome_side": "no",
    "book_side": "ask",
    "count_fp": "5.00",
    "yes_price_dollars": "0.7500",
    "no_price_dollars": "0.2500",
    "is_taker": True,
    "fee_cost": "0.0200",
    "created_time": "2026-06-01T00:00:00Z",
    "ts": 1782316195,
}
FILL_LEGACY_NO = {
    "trade_id": "f1",
    "order_id": "o1",
    "ticker": "T",
    "side": "no",
    "action": "buy",
    "count": 5,
    "yes_price": 75,
    "no_price": 25,
    "price": 0.75,
    "yes_price_fixed": "0.7500",
    "no_price_fixed": "0.2500",
    "is_taker": True,
    "created_time": "2026-06-01T00:00:00Z",
}


def test_fill_no_side_price_and_notional():
    for body in (
        FILL_CURRENT_NO,
        FILL_LEGACY_NO,
        {k: v for k, v in FILL_LEGACY_NO.items() if not k.startswith("no_")},
    ):
        f = rm.decode_fills_page(j({"fills": [body], "cursor": ""})).fills[0]
        assert f.side is Side.NO and f.yes_price == 7500
        assert f.price == 2500 and f.no_price == 2500  # NOT the YES price (the old system's bug)
        assert f.count == 500 and f.notional == 2500 * 500  # $1.25 in micro-dollars
        assert f.notional == 1_250_000 and f.fill_id == "f1" and f.ticker == "T"
    assert rm.decode_fills_page(j({"fills": [FILL_CURRENT_NO]})).fills[0].fee == 20_000


def test_error_bodies():
    assert rm.decode_error_body(
        b'{"error":{"code":"order_already_exists","message":"dup","service":"exchange"}}'
    ) == (rm.ErrorBody(code="order_already_exists", message="dup", service="exchange"))
    assert rm.decode_error_body(b'{"code":"not_found","message":"no"}') == rm.ErrorBody(
        code="not_found", message="no"
    )
    assert rm.decode_error_body(b'{"error":"too many requests"}') == rm.ErrorBody(message="too many requests")
    assert rm.decode_error_body(b"<html>bad gateway</html>") is None
    assert rm.decode_error_body(b"{}") is None
    body = rm.encode_error_body("insufficient_balance", "no money")
    assert json.loads(body) == {
        "error": {"code": "insufficient_balance", "message": "no money", "details": "", "service": "exchange"}
    }


def test_exchange_status():
    s = rm.decode_exchange_status(
        b'{"exchange_active":true,"trading_active":false,"exchange_estimated_resume_time":null}'
    )
    assert s.exchange_active and not s.trading_active
    with pytest.raises(DecodeError):
        rm.decode_exchange_status(b'{"exchange_active":true}')


def test_create_order_encoding():
    req = rm.OrderRequest(
        ticker="T",
        side=Side.NO,
        action=Action.BUY,
        count=1000,
        price=3000,
        client_order_id="c1",
        time_in_force="good_till_canceled",
    )
    cur = json.loads(rm.encode_create_order(req))
    assert cur == {
        "ticker": "T",
        "side": "no",
        "action": "buy",
        "client_order_id": "c1",
        "count_fp": "10.00",
        "no_price_dollars": "0.3000",
        "time_in_force": "good_till_canceled",
    }
    leg = json.loads(rm.encode_create_order(req, legacy=True))
    assert (
        leg["no_price"] == 30
        and leg["count"] == 10
        and "no_price_dollars" not in leg
        and "count_fp" not in leg
    )
    assert req.yes_price == 7000
    # The exact body the official SDK 3.2.0 sends decodes the same way on the simulator side.
    sdk = rm.decode_create_order(
        b'{"ticker":"TEST-1","client_order_id":"c1","side":"yes","action":"buy","count":1,"type":"limit","yes_price":40}'
    )
    assert (sdk.price, sdk.count, sdk.side, sdk.type) == (4000, 100, Side.YES, "limit")
    # NO order priced by its YES price -> stored as the NO price.
    assert (
        rm.decode_create_order(
            b'{"ticker":"T","side":"no","action":"buy","count_fp":"1.00","yes_price_dollars":"0.7000"}'
        ).price
        == 3000
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"ticker":"T","side":"yes","action":"buy","count":1}',
        b'{"ticker":"T","side":"yes","action":"buy","count":1,"yes_price":40,"no_price":60}',
        b'{"ticker":"T","side":"yes","action":"buy","count":1,"yes_price":40,"yes_price_dollars":"0.4100"}',
        b'{"ticker":"T","side":"yes","action":"buy","count":2,"count_fp":"1.00","yes_price":40}',
        b'{"ticker":"T","side":"yes","action":"buy","count":0,"yes_price":40}',
        b'{"ticker":"T","side":"maybe","action":"buy","count":1,"yes_price":40}',
        b'{"ticker":"T","side":"yes","action":"hold","count":1,"yes_price":40}',
        b'{"ticker":"T","side":"yes","action":"buy","count":1,"yes_price":100}',
        b'{"ticker":"T","side":"yes","action":"buy","count_fp":"1.001","yes_price":40}',
        b'{"side":"yes"}',
        b"not json",
    ],
)
def test_create_order_rejections(body):
    with pytest.raises(DecodeError):
        rm.decode_create_order(body)


@given(
    side=st.sampled_from(list(Side)),
    action=st.sampled_from(list(Action)),
    count=st.integers(1, 10_000_000),
    level=st.integers(0, len(DECI_CENT) - 1),
)
def test_create_order_round_trip(side, action, count, level):
    req = rm.OrderRequest(
        ticker="T", side=side, action=action, count=count, price=DECI_CENT.price(level), client_order_id="x"
    )
    assert rm.decode_create_order(rm.encode_create_order(req)) == req


def test_wire_structs_are_frozen_and_round_trip():
    w = msgspec.json.decode(j({"market": MARKET_CURRENT}), type=rm.MarketResponseWire).market
    with pytest.raises(AttributeError):
        w.ticker = "x"  # type: ignore[misc]
    again = msgspec.json.decode(msgspec.json.encode(w), type=rm.MarketWire)
    assert again == w and rm.market_from_wire(again) == rm.market_from_wire(w)
    # "" and false are real values and must be emitted; absent (None) ones are omitted.
    enc = json.loads(msgspec.json.encode(rm.MarketWire(ticker="T", result="", can_close_early=False)))
    assert enc == {"ticker": "T", "result": "", "can_close_early": False}
