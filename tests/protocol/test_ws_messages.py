"""WS commands, replies and non-orderbook data messages (both Kalshi shapes)."""

from __future__ import annotations

import json

import pytest

from kalshiflow.market.types import Action, Side
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.errors import DecodeError, WsCommandError


def j(obj) -> bytes:
    return json.dumps(obj).encode()


def test_command_encoding_matches_spec_examples():
    sub = wc.Subscribe(
        id=1, params=wc.SubscribeParams(channels=["orderbook_delta"], market_tickers=["KXFED-27APR-T4.25"])
    )
    assert json.loads(wc.encode_command(sub)) == {
        "id": 1,
        "cmd": "subscribe",
        "params": {"channels": ["orderbook_delta"], "market_tickers": ["KXFED-27APR-T4.25"]},
    }
    assert json.loads(
        wc.encode_command(wc.Unsubscribe(id=124, params=wc.UnsubscribeParams(sids=[1, 2])))
    ) == {"id": 124, "cmd": "unsubscribe", "params": {"sids": [1, 2]}}
    upd = wc.UpdateSubscription(
        id=125, params=wc.UpdateSubscriptionParams(sids=[456], market_tickers=["NEW-1"], action="add_markets")
    )
    assert json.loads(wc.encode_command(upd)) == {
        "id": 125,
        "cmd": "update_subscription",
        "params": {"action": "add_markets", "sids": [456], "market_tickers": ["NEW-1"]},
    }
    assert json.loads(wc.encode_command(wc.ListSubscriptions(id=3))) == {"id": 3, "cmd": "list_subscriptions"}


def test_decode_command_normalises():
    cmd = wc.decode_command(
        b'{"id":7,"cmd":"subscribe","params":{"channels":["orderbook_delta"],"market_ticker":"A","use_yes_price":true}}'
    )
    assert isinstance(cmd, wc.Subscribe) and cmd.id == 7
    assert (
        cmd.params.market_tickers == ["A"] and cmd.params.market_ticker is None and cmd.params.use_yes_price
    )
    upd = wc.decode_command(
        b'{"id":8,"cmd":"update_subscription","params":{"sid":4,"action":"get_snapshot"}}'
    )
    assert isinstance(upd, wc.UpdateSubscription) and upd.params.sids == [4] and upd.params.sid is None
    for cmd_bytes in (
        wc.encode_command(wc.ListSubscriptions(id=3)),
        wc.encode_command(wc.Unsubscribe(id=2, params=wc.UnsubscribeParams(sids=[1]))),
    ):
        assert wc.encode_command(wc.decode_command(cmd_bytes)) == cmd_bytes
    assert wc.decode_command(b'{"cmd":"subscribe","params":{"channels":["trade"]}}').id == 0


@pytest.mark.parametrize(
    "body,code",
    [
        (b"nope", 1),
        (b'{"id":"x","cmd":"subscribe"}', 1),
        (b'{"id":1,"cmd":"dance","params":{}}', 5),
        (b'{"id":1}', 5),
        (b'{"id":1,"cmd":"subscribe"}', 2),
        (b'{"id":1,"cmd":"subscribe","params":{}}', 3),
        (b'{"id":1,"cmd":"subscribe","params":{"channels":[]}}', 3),
        (b'{"id":1,"cmd":"subscribe","params":{"channels":["ticker_v2"]}}', 8),
        (b'{"id":1,"cmd":"subscribe","params":{"channels":["orderbook_delta"]}}', 14),
        (
            b'{"id":1,"cmd":"subscribe","params":{"channels":["trade"],"market_ticker":"A","market_tickers":["B"]}}',
            11,
        ),
        (b'{"id":1,"cmd":"subscribe","params":{"channels":"trade"}}', 11),
        (b'{"id":1,"cmd":"unsubscribe","params":{}}', 4),
        (b'{"id":1,"cmd":"unsubscribe","params":{"sids":[]}}', 4),
        (
            b'{"id":1,"cmd":"update_subscription","params":{"sids":[1,2],"action":"add_markets","market_tickers":["A"]}}',
            12,
        ),
        (
            b'{"id":1,"cmd":"update_subscription","params":{"action":"add_markets","market_tickers":["A"]}}',
            12,
        ),
        (b'{"id":1,"cmd":"update_subscription","params":{"sids":[1],"market_tickers":["A"]}}', 15),
        (b'{"id":1,"cmd":"update_subscription","params":{"sids":[1],"action":"explode"}}', 13),
        (b'{"id":1,"cmd":"update_subscription","params":{"sids":[1],"action":"add_markets"}}', 14),
    ],
)
def test_decode_command_error_codes(body, code):
    with pytest.raises(wc.InvalidCommand) as info:
        wc.decode_command(body)
    assert info.value.code == code and info.value.message == wc.WS_ERROR_CODES[code]
    if code > 1 and b'"id":1' in body:
        assert info.value.cmd_id == 1
    reply = wc.error_reply(info.value.code, info.value.cmd_id)
    assert json.loads(wd.encode_message(reply))["msg"]["code"] == code


def test_error_code_table():
    assert len(wc.WS_ERROR_CODES) == 28 and set(wc.WS_ERROR_CODES) == set(range(1, 29))
    assert (
        wc.WS_ERROR_CODES[6] == "Already subscribed"
        and wc.WS_ERROR_CODES[25] == "Subscription buffer overflow"
    )
    assert wc.TERMINAL_ERROR_CODES == {10, 17, 25}


SPEC_REPLIES = [
    b'{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}',
    b'{"id":123,"sid":456,"seq":222,"type":"ok","msg":{"market_tickers":["MARKET-1","MARKET-2","MARKET-3"]}}',
    b'{"id":102,"sid":2,"seq":7,"type":"unsubscribed"}',
    b'{"id":3,"type":"ok","msg":[{"channel":"orderbook_delta","sid":1},{"channel":"ticker","sid":2}]}',
    b'{"id":123,"type":"error","msg":{"code":6,"msg":"Already subscribed"}}',
    b'{"id":127,"type":"error","msg":{"code":16,"msg":"Market not found","market_ticker":"INVALID-MARKET"}}',
]


def test_spec_replies_decode_and_reencode():
    sub, ok, unsub, listing, err, err16 = (wd.decode_message(r) for r in SPEC_REPLIES)
    assert isinstance(sub, wc.Subscribed) and (sub.id, sub.msg.channel, sub.msg.sid) == (
        1,
        "orderbook_delta",
        1,
    )
    assert isinstance(ok, wc.Ok) and (ok.sid, ok.seq, ok.tickers) == (
        456,
        222,
        ["MARKET-1", "MARKET-2", "MARKET-3"],
    )
    assert isinstance(unsub, wc.Unsubscribed) and (unsub.sid, unsub.seq) == (2, 7)
    assert isinstance(listing, wc.Ok) and [s.sid for s in listing.msg] == [1, 2] and listing.tickers is None
    assert isinstance(err, wc.ErrorReply) and err.msg.code == 6
    exc = err16.exception()
    assert isinstance(exc, WsCommandError) and exc.code == 16 and exc.market_ticker == "INVALID-MARKET"
    for raw in SPEC_REPLIES:
        assert json.loads(wd.encode_message(wd.decode_message(raw))) == json.loads(raw)
    old_ok = wd.decode_message(b'{"id":5,"sid":1,"seq":3,"type":"ok","market_tickers":["A"]}')
    assert isinstance(old_ok, wc.Ok) and old_ok.tickers == ["A"]
    assert wd.encode_message(sub).startswith(b'{"type":"subscribed"')


def test_peek_reads_envelope_of_any_frame():
    snap = (
        b'{"type":"orderbook_snapshot","sid":1,"seq":9,'
        b'"msg":{"market_ticker":"A","yes_dollars_fp":[["0.0100","2230.99"]]}}'
    )
    assert wc.peek(snap) == wc.Envelope(type="orderbook_snapshot", sid=1, seq=9)
    assert wc.peek(SPEC_REPLIES[1]) == wc.Envelope(type="ok", id=123, sid=456, seq=222)
    with pytest.raises(DecodeError):
        wc.peek(b"{")
    with pytest.raises(DecodeError):
        wd.decode_message(snap)  # order-book frames belong to market_data.py


TRADE_CURRENT = {
    "type": "trade",
    "sid": 11,
    "msg": {
        "trade_id": "d91bc706-ee49-470d-82d8-11418bda6fed",
        "market_ticker": "HIGHNY-22DEC23-B53.5",
        "yes_price_dollars": "0.360",
        "no_price_dollars": "0.640",
        "count_fp": "136.00",
        "taker_side": "no",
        "taker_outcome_side": "no",
        "taker_book_side": "ask",
        "is_block_trade": False,
        "ts": 1669149841,
        "ts_ms": 1669149841000,
    },
}
TRADE_LEGACY = {
    "type": "trade",
    "sid": 11,
    "msg": {
        "trade_id": "d91bc706-ee49-470d-82d8-11418bda6fed",
        "market_ticker": "HIGHNY-22DEC23-B53.5",
        "yes_price": 36,
        "no_price": 64,
        "count": 136,
        "taker_side": "no",
        "ts": 1669149841,
    },
}


def test_trade_both_shapes():
    a, b = wd.decode_message(j(TRADE_CURRENT)), wd.decode_message(j(TRADE_LEGACY))
    assert isinstance(a, wd.DataMessage) and a.type == "trade" and a.sid == 11 and a.seq is None
    assert a.msg == b.msg
    t = a.msg
    assert (t.yes_price, t.no_price, t.count, t.taker_side, t.ts_ms) == (
        3600,
        6400,
        13600,
        Side.NO,
        1669149841000,
    )
    with_seq = wd.decode_message(j({**TRADE_CURRENT, "seq": 5}))
    assert with_seq.seq == 5
    again = wd.decode_message(wd.encode_message(wd.trade_frame(11, t, seq=5)))
    assert again == with_seq
    raw = json.loads(wd.encode_message(wd.trade_frame(11, t)))
    assert (
        raw["msg"]["yes_price"] == 36
        and raw["msg"]["count"] == 136
        and raw["msg"]["yes_price_dollars"] == "0.3600"
    )
    with pytest.raises(DecodeError):
        wd.decode_message(
            j(
                {
                    "type": "trade",
                    "sid": 1,
                    "msg": {"market_ticker": "A", "yes_price": 30, "no_price": 60, "count": 1},
                }
            )
        )


FILL_CURRENT = {
    "type": "fill",
    "sid": 13,
    "msg": {
        "trade_id": "d91bc706",
        "order_id": "ee587a1c",
        "market_ticker": "HIGHNY-22DEC23-B53.5",
        "exchange_index": 0,
        "is_taker": True,
        "side": "no",
        "action": "buy",
        "purchased_side": "no",
        "outcome_side": "no",
        "book_side": "ask",
        "yes_price_dollars": "0.750",
        "count_fp": "278.00",
        "fee_cost": "0.0400",
        "post_position_fp": "-500.00",
        "client_order_id": "my-1",
        "ts": 1671899397,
        "ts_ms": 1671899397000,
    },
}
FILL_LEGACY = {
    "type": "fill",
    "sid": 13,
    "msg": {
        "trade_id": "d91bc706",
        "order_id": "ee587a1c",
        "market_ticker": "HIGHNY-22DEC23-B53.5",
        "is_taker": True,
        "side": "no",
        "action": "buy",
        "yes_price": 75,
        "count": 278,
        "post_position": -500,
        "client_order_id": "my-1",
        "ts": 1671899397,
    },
}


def test_fill_both_shapes_price_no_leg():
    a, b = wd.decode_message(j(FILL_CURRENT)).msg, wd.decode_message(j(FILL_LEGACY)).msg
    for f in (a, b):
        assert isinstance(f, wd.FillEvent)
        assert (f.side, f.action, f.outcome_side) == (Side.NO, Action.BUY, Side.NO)
        assert f.yes_price == 7500 and f.price == 2500  # a NO fill costs 1 - yes_price
        assert f.count == 27_800 and f.post_position == -50_000 and f.ts_ms == 1671899397000
    assert a.fee == 40_000 and b.fee == 0
    round_trip = wd.decode_message(wd.encode_message(wd.fill_frame(13, a))).msg
    assert round_trip == a
    sell_yes = wd.decode_message(
        j({**FILL_LEGACY, "msg": {**FILL_LEGACY["msg"], "side": "yes", "action": "sell"}})
    ).msg
    assert sell_yes.price == 7500 and sell_yes.outcome_side is Side.NO


def test_market_position_both_shapes():
    cur = {
        "type": "market_position",
        "sid": 14,
        "msg": {
            "user_id": "user123",
            "market_ticker": "FED-23DEC-T3.00",
            "position_fp": "100.00",
            "position_cost_dollars": "50.0000",
            "realized_pnl_dollars": "10.0000",
            "fees_paid_dollars": "1.0000",
            "position_fee_cost_dollars": "0.5000",
            "volume_fp": "15.00",
        },
    }
    leg = {
        "type": "market_position",
        "sid": 14,
        "msg": {
            "user_id": "user123",
            "market_ticker": "FED-23DEC-T3.00",
            "position": 100,
            "position_cost": 500000,
            "realized_pnl": 100000,
            "fees_paid": 10000,
            "volume": 15,
        },
    }
    a, b = wd.decode_message(j(cur)).msg, wd.decode_message(j(leg)).msg
    assert a == b  # legacy money is in centi-cents: 500000 = $50
    assert (a.position, a.position_cost, a.realized_pnl, a.fees_paid, a.volume) == (
        10_000,
        50_000_000,
        10_000_000,
        1_000_000,
        1500,
    )
    assert wd.decode_message(wd.encode_message(wd.market_position_frame(14, a, legacy=True))).msg == a
    assert (
        json.loads(wd.encode_message(wd.market_position_frame(14, a, legacy=True)))["msg"]["position_cost"]
        == 500000
    )


def test_lifecycle_messages():
    created = {
        "type": "market_lifecycle_v2",
        "sid": 5,
        "msg": {
            "market_ticker": "A",
            "event_type": "created",
            "open_ts": 1,
            "close_ts": 2,
            "additional_metadata": {"title": "t", "event_ticker": "E", "can_close_early": True},
            "exchange_index": 0,
        },
    }
    determined = {
        "type": "market_lifecycle_v2",
        "sid": 5,
        "msg": {
            "market_ticker": "A",
            "event_type": "determined",
            "result": "yes",
            "determination_ts": 3,
            "settlement_value": "1.0000",
        },
    }
    legacy = {
        "type": "market_lifecycle_v2",
        "sid": 5,
        "msg": {
            "market_ticker": "A",
            "event_type": "determined",
            "result": "yes",
            "determination_ts": 3,
            "settlement_value": 100,
        },
    }
    c = wd.decode_message(j(created)).msg
    assert c.event_type == "created" and c.additional_metadata["event_ticker"] == "E"
    d, e = wd.decode_message(j(determined)).msg, wd.decode_message(j(legacy)).msg
    assert d == e and d.settlement_value == 10_000
    assert wd.decode_message(wd.encode_message(wd.lifecycle_frame(5, d))).msg == d
    ev = wd.decode_message(
        j(
            {
                "type": "event_lifecycle",
                "sid": 5,
                "msg": {"event_ticker": "E", "title": "T", "series_ticker": "S"},
            }
        )
    )
    assert ev.type == "event_lifecycle" and ev.msg.event_ticker == "E"
    with pytest.raises(DecodeError):
        wd.decode_message(b'{"type":"event_fee_update","sid":5,"msg":{}}')
