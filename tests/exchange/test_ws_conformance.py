"""Conformance of the simulator's WebSocket v2 API (kalshi-protocol.md §1), over real sockets.

A raw ``websockets`` client checks the exact frames; the project's own WS client and book
decoder check that what we emit is what our collector consumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

from kalshiflow.config import SimulatorConfig
from kalshiflow.exchange.embedded import run_simulator
from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.server import Simulator
from kalshiflow.exchange.state import ExchangeState, OrderRequest
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import MONEY_SCALE, Money
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol.auth import Signer, generate_credentials
from kalshiflow.protocol.market_data import OrderbookDelta, OrderbookFrameDecoder, OrderbookSnapshot
from kalshiflow.protocol.ws_client import KalshiWsClient
from kalshiflow.protocol.ws_commands import peek
from kalshiflow.secrets import Credentials

TICKERS = ["KXWS-A", "KXWS-B", "KXWS-C"]
BOT = "bot"
BOT2 = "bot2"  # a second party: a bot crossing its own order is cancelled (self-trade prevention)
WS_PATH = "/trade-api/ws/v2"


@pytest.fixture(scope="module")
def user() -> tuple[Credentials, str]:
    return generate_credentials()


def add_markets(state: ExchangeState, tickers: list[str]) -> None:
    now = time.time()
    for t in tickers:
        state.add_market(
            MarketInfo(
                ticker=t,
                event_ticker="KXWS-E",
                series_ticker="KXWS",
                title=t,
                open_time=now - 1,
                close_time=now + 3600,
            )
        )
        state.open_market(t)
    state.add_account(BOT, Money(10**6 * MONEY_SCALE), keep_history=False)
    state.add_account(BOT2, Money(10**6 * MONEY_SCALE), keep_history=False)


def order(side: Side, cents: int, contracts: int, **kw: Any) -> OrderRequest:
    key = "yes_price" if side is Side.YES else "no_price"
    return OrderRequest(side=side, action=Action.BUY, count=contracts * 100, **{key: cents * 100}, **kw)


@pytest.fixture
async def sim(user: tuple[Credentials, str]) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(generator=False, ping_interval_s=0.2, ws_queue_frames=200)
    async with run_simulator(config, keys={user[0].api_key_id: user[1]}) as s:
        add_markets(s.state, TICKERS)
        s.state.submit(BOT, "KXWS-A", order(Side.YES, 40, 10))
        s.state.submit(BOT, "KXWS-A", order(Side.NO, 30, 7))
        yield s


class PingRecorder(ClientConnection):
    """Records the payload of every Ping the server sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pings: list[bytes] = []

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings.append(bytes(event.data))
        super().process_event(event)


class Raw:
    """A bare client: send commands, read parsed frames."""

    def __init__(self, ws: PingRecorder) -> None:
        self.ws = ws
        self.ids = 100

    async def send(self, cmd: str, params: dict[str, Any] | None = None, cmd_id: int | None = None) -> int:
        self.ids += 1
        cid = self.ids if cmd_id is None else cmd_id
        body: dict[str, Any] = {"id": cid, "cmd": cmd}
        if params is not None:
            body["params"] = params
        await self.ws.send(json.dumps(body))
        return cid

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def drain(self) -> list[dict[str, Any]]:
        """Every frame up to now: list_subscriptions is answered after everything queued before it."""
        cid = await self.send("list_subscriptions")
        out = []
        while True:
            frame = await self.recv()
            if frame.get("id") == cid and frame["type"] == "ok":
                return out
            out.append(frame)


async def connect(sim: Simulator, creds: Credentials) -> Raw:
    headers = Signer.from_credentials(creds).headers("GET", WS_PATH)
    ws = await websockets.connect(sim.ws_url, additional_headers=headers, create_connection=PingRecorder)
    return Raw(ws)  # type: ignore[arg-type]


def book_of(frame: dict[str, Any]) -> tuple[list, list]:
    msg = frame["msg"]
    return msg.get("yes_dollars_fp", []), msg.get("no_dollars_fp", [])


async def test_snapshot_per_market_then_contiguous_seq_across_markets(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    cid = await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": TICKERS})
    subscribed = await raw.recv()
    assert subscribed == {"type": "subscribed", "id": cid, "msg": {"channel": "orderbook_delta", "sid": 1}}
    snaps = [await raw.recv() for _ in TICKERS]
    assert [(f["type"], f["sid"], f["seq"], f["msg"]["market_ticker"]) for f in snaps] == [
        ("orderbook_snapshot", 1, i + 1, t) for i, t in enumerate(TICKERS)
    ]
    assert book_of(snaps[0]) == ([["0.4000", "10.00"]], [["0.3000", "7.00"]])
    assert snaps[0]["msg"]["yes"] == [[40, 10]]  # legacy ints alongside the fixed-point pairs
    assert "yes_dollars_fp" not in snaps[1]["msg"]  # an empty side is omitted
    sim.state.submit(BOT, "KXWS-B", order(Side.YES, 20, 1))
    sim.state.submit(BOT, "KXWS-C", order(Side.NO, 10, 2))
    sim.state.submit(BOT2, "KXWS-A", order(Side.YES, 70, 3))  # crosses NO 30c: one delta
    deltas = await raw.drain()
    assert [(f["type"], f["seq"], f["msg"]["market_ticker"]) for f in deltas] == [
        ("orderbook_delta", 4, "KXWS-B"),
        ("orderbook_delta", 5, "KXWS-C"),
        ("orderbook_delta", 6, "KXWS-A"),
    ]
    last = deltas[-1]["msg"]
    assert (last["side"], last["price_dollars"], last["delta_fp"], last["price"], last["delta"]) == (
        "no",
        "0.3000",
        "-3.00",
        30,
        -3,
    )
    assert isinstance(last["ts_ms"], int) and last["ts"].endswith("Z")
    await raw.ws.close()


async def test_ok_consumes_seq_and_resubscribe_sends_no_snapshot(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A"]})
    await raw.recv(), await raw.recv()  # subscribed, snapshot seq 1
    again = await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A"]})
    ok = await raw.recv()
    assert ok == {"type": "ok", "id": again, "sid": 1, "seq": 2, "msg": {"market_tickers": ["KXWS-A"]}}
    sim.state.submit(BOT, "KXWS-A", order(Side.YES, 41, 1))
    delta = await raw.recv()
    assert (delta["type"], delta["seq"]) == ("orderbook_delta", 3)  # no snapshot was re-sent
    more = await raw.send(
        "subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A", "KXWS-B"]}
    )
    ok2, snap = await raw.recv(), await raw.recv()
    assert (ok2["id"], ok2["seq"], ok2["msg"]["market_tickers"]) == (more, 4, ["KXWS-A", "KXWS-B"])
    assert (snap["type"], snap["seq"], snap["msg"]["market_ticker"]) == ("orderbook_snapshot", 5, "KXWS-B")
    await raw.ws.close()


async def test_update_subscription_actions_and_errors(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A", "KXWS-B"]})
    await raw.drain()  # subscribed + 2 snapshots (seq 1, 2)
    cid = await raw.send(
        "update_subscription", {"sids": [1], "market_tickers": ["KXWS-A"], "action": "delete_markets"}
    )
    assert await raw.recv() == {
        "type": "ok",
        "id": cid,
        "sid": 1,
        "seq": 3,
        "msg": {"market_tickers": ["KXWS-B"]},
    }
    sim.state.submit(BOT, "KXWS-A", order(Side.YES, 42, 1))  # no longer subscribed: not delivered
    assert await raw.drain() == []
    cid = await raw.send(
        "update_subscription", {"sid": 1, "market_tickers": ["KXWS-A"], "action": "add_markets"}
    )
    ok, snap = await raw.recv(), await raw.recv()
    assert (ok["id"], ok["seq"], ok["msg"]["market_tickers"]) == (cid, 4, ["KXWS-B", "KXWS-A"])
    assert (snap["seq"], snap["msg"]["market_ticker"]) == (5, "KXWS-A")
    assert book_of(snap)[0] == [["0.4000", "10.00"], ["0.4200", "1.00"]]
    cid = await raw.send(
        "update_subscription", {"sids": [1], "market_tickers": ["KXWS-B"], "action": "get_snapshot"}
    )
    ok, snap = await raw.recv(), await raw.recv()
    assert (ok["type"], ok["seq"], snap["type"], snap["seq"]) == ("ok", 6, "orderbook_snapshot", 7)
    errors = {
        12: {"sids": [1, 2], "market_tickers": ["KXWS-A"], "action": "add_markets"},
        7: {"sids": [9], "market_tickers": ["KXWS-A"], "action": "add_markets"},
        15: {"sids": [1], "market_tickers": ["KXWS-A"]},
        13: {"sids": [1], "market_tickers": ["KXWS-A"], "action": "explode"},
        16: {"sids": [1], "market_tickers": ["NOPE"], "action": "add_markets"},
    }
    for code, params in errors.items():
        cid = await raw.send("update_subscription", params)
        reply = await raw.recv()
        assert (reply["type"], reply["id"], reply["msg"]["code"]) == ("error", cid, code), params
    await raw.ws.close()


async def test_unsubscribe_then_subscribe_gives_new_sid_from_seq_1(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A"]})
    await raw.drain()
    cid = await raw.send("unsubscribe", {"sids": [1]})
    assert await raw.recv() == {"type": "unsubscribed", "id": cid, "sid": 1, "seq": 2}
    await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A"]})
    subscribed, snap = await raw.recv(), await raw.recv()
    assert subscribed["msg"]["sid"] == 2 and (snap["sid"], snap["seq"]) == (2, 1)
    cid = await raw.send("unsubscribe", {"sids": [1]})
    assert (await raw.recv())["msg"]["code"] == 7
    await raw.ws.close()


async def test_heartbeat_pings_with_kalshi_payload(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await asyncio.sleep(0.7)  # ping_interval_s = 0.2 in this config
    assert len(raw.ws.pings) >= 2 and set(raw.ws.pings) == {b"heartbeat"}
    pong = await raw.ws.ping(b"client-ping")  # the server answers our pings too
    await asyncio.wait_for(pong, 2)
    await raw.ws.close()


async def test_use_yes_price_reports_no_side_at_yes_equivalent(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await raw.send(
        "subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A"], "use_yes_price": True}
    )
    _, snap = await raw.recv(), await raw.recv()
    assert book_of(snap)[1] == [["0.7000", "7.00"]]  # NO bid 30c = YES ask 70c
    await raw.ws.close()


async def test_private_channels_fill_and_market_positions(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-A"]})
    await raw.send("subscribe", {"channels": ["fill", "market_positions", "trade", "market_lifecycle_v2"]})
    frames = await raw.drain()
    sids = {f["msg"]["channel"]: f["msg"]["sid"] for f in frames if f["type"] == "subscribed"}
    assert set(sids) == {"orderbook_delta", "fill", "market_positions", "trade", "market_lifecycle_v2"}
    owner = sim.accounts.owner_of(user[0].api_key_id)
    assert owner is not None
    placed = sim.state.submit(owner, "KXWS-A", order(Side.NO, 60, 4, client_order_id="mine-1"))
    assert placed.ok
    frames = await raw.drain()
    by_type = {f["type"]: f for f in frames}
    fill = by_type["fill"]["msg"]
    assert by_type["fill"]["sid"] == sids["fill"] and "seq" not in by_type["fill"]
    assert (
        fill["order_id"],
        fill["client_order_id"],
        fill["side"],
        fill["count_fp"],
        fill["yes_price_dollars"],
    ) == (
        placed.order.order_id,
        "mine-1",
        "no",
        "4.00",
        "0.4000",  # type: ignore[union-attr]
    )
    assert fill["post_position_fp"] == "-4.00" and fill["is_taker"] is True and fill["fee_cost"] == "0.0700"
    pos = by_type["market_position"]["msg"]
    assert (pos["market_ticker"], pos["position_fp"], pos["position_cost_dollars"]) == (
        "KXWS-A",
        "-4.00",
        "2.4000",
    )
    trade = by_type["trade"]["msg"]
    assert (trade["count_fp"], trade["taker_side"], trade["yes_price_dollars"]) == ("4.00", "no", "0.4000")
    delta = by_type["orderbook_delta"]["msg"]
    assert delta["client_order_id"] == "mine-1"  # the receiving user's own order caused it
    # The bot's order: no client_order_id leaks to other users, no fill for us.
    sim.state.submit(BOT, "KXWS-A", order(Side.YES, 45, 1, client_order_id="bot-secret"))
    frames = await raw.drain()
    assert [f["type"] for f in frames] == ["orderbook_delta"] and "client_order_id" not in frames[0]["msg"]
    sim.state.close_market("KXWS-B")  # time-driven close: Kalshi sends no lifecycle message
    sim.state.settle_market("KXWS-B", "no")
    frames = await raw.drain()
    lifecycle = [f["msg"]["event_type"] for f in frames if f["type"] == "market_lifecycle_v2"]
    assert lifecycle == ["determined", "settled"]
    await raw.ws.close()


async def test_handshake_auth_failures_are_401_with_flat_body(sim: Simulator, user: tuple) -> None:
    stranger, _ = generate_credentials()
    cases = [
        Signer.from_credentials(stranger).headers("GET", WS_PATH),
        Signer.from_credentials(user[0]).headers(
            "GET", WS_PATH, timestamp_ms=int(time.time() * 1000) - 600_000
        ),
        Signer.from_credentials(user[0]).headers(
            "GET", "/trade-api/v2/portfolio/balance"
        ),  # wrong path signed
    ]
    details = []
    for headers in cases:
        with pytest.raises(websockets.InvalidStatus) as err:
            await websockets.connect(sim.ws_url, additional_headers=headers)
        assert err.value.response.status_code == 401
        body = json.loads(bytes(err.value.response.body))
        assert body["code"] == "authentication_error"
        details.append(body["details"])
    assert details == ["NOT_FOUND", "TIMESTAMP_OUT_OF_WINDOW", "INVALID_SIGNATURE"]


async def test_slow_consumer_gets_error_25_and_only_that_subscription_drops(
    sim: Simulator, user: tuple
) -> None:
    slow = await connect(sim, user[0])
    other = await connect(sim, user[0])
    for raw in (slow, other):
        await raw.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-C"]})
        await raw.send("subscribe", {"channels": ["market_lifecycle_v2"]})
        await raw.drain()
    # 300 deltas in one loop turn: more than the 200-frame outbox holds before its writer runs.
    other_task = asyncio.create_task(other.drain())
    for i in range(150):
        sim.state.submit(BOT, "KXWS-C", order(Side.YES, 10 + i % 20, 1, client_order_id=f"c{i}"))
        sim.state.cancel_all(BOT, "KXWS-C")
    frames = await slow.drain()
    errors = [f for f in frames if f["type"] == "error"]
    assert len(errors) == 1 and errors[0]["msg"]["code"] == 25 and errors[0]["sid"] == 1
    assert sim.hub.overflows >= 1
    cid = await slow.send("list_subscriptions")
    while (reply := await slow.recv())["id"] != cid:
        pass
    assert reply["msg"] == [{"channel": "market_lifecycle_v2", "sid": 2}]  # the other sub lives on
    await other_task
    # The exchange kept going and a fresh subscription works.
    await slow.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXWS-C"]})
    subscribed, snap = await slow.recv(), await slow.recv()
    assert subscribed["msg"]["sid"] == 3 and snap["seq"] == 1
    await slow.ws.close()
    await other.ws.close()


async def test_project_ws_client_books_match_exchange_under_generated_flow(user: tuple) -> None:
    from kalshiflow.exchange.embedded import make_state
    from kalshiflow.exchange.generator import MarketGenerator, load_generator_config

    config = SimulatorConfig(generator=False, markets=4, seed=3)
    state = make_state(config, simulated_clock=True)
    gen = MarketGenerator(load_generator_config(markets={"count": 4}), state, seed=3)
    gen.advance(gen.start + 1)
    async with run_simulator(config, keys={user[0].api_key_id: user[1]}, state=state) as s:
        tickers = [m.ticker for m in s.state.markets() if m.status.value == "active"]
        assert tickers
        decoder = OrderbookFrameDecoder()
        books = {t: OrderBook(t) for t in tickers}
        seqs: list[tuple[int, int]] = []

        def on_frame(data: bytes, recv_ns: int) -> None:
            envelope = peek(data)
            if envelope.type == "ok" and envelope.sid is not None:
                seqs.append((envelope.sid, envelope.seq or 0))  # `ok` takes a number on the sid
            if not envelope.type.startswith("orderbook_"):
                return
            frame = decoder.decode(data)
            seqs.append((frame.sid, frame.seq))
            if isinstance(frame, OrderbookSnapshot):
                yes, no = decoder.snapshot_levels(frame.msg)
                books[frame.msg.market_ticker].apply_snapshot(yes, no)
            elif isinstance(frame, OrderbookDelta):
                books[frame.msg.market_ticker].apply_delta(*decoder.delta_update(frame.msg))

        client = KalshiWsClient(s.ws_url, signer=Signer.from_credentials(user[0]), on_frame=on_frame)
        async with client:
            sub = await client.subscribe("orderbook_delta", tickers)
            for step in range(20):  # 10 min of simulated activity, delivered while we read
                gen.advance(gen.start + 30 * (step + 1))
                await asyncio.sleep(0.01)
            await client.get_snapshot(sub, tickers[:1])
            await client.list_subscriptions()  # answered after every frame queued before it
            assert len(seqs) > len(tickers) + 20
            assert [q for _, q in seqs] == list(range(1, len(seqs) + 1))  # one contiguous counter
            for t in tickers:
                assert books[t] == s.state.order_book(t), t
            await client.resync(sub)
            await client.list_subscriptions()
            assert seqs[-len(tickers) :] == [(2, i + 1) for i in range(len(tickers))]  # new sid, from 1


async def test_ticker_and_user_orders_channels(sim: Simulator, user: tuple) -> None:
    raw = await connect(sim, user[0])
    await raw.send(
        "subscribe", {"channels": ["ticker"], "market_tickers": ["KXWS-A"], "send_initial_snapshot": True}
    )
    await raw.send("subscribe", {"channels": ["user_orders"]})
    frames = await raw.drain()
    initial = [f for f in frames if f["type"] == "ticker"]
    assert len(initial) == 1 and "seq" not in initial[0]
    msg = initial[0]["msg"]
    assert (
        msg["market_ticker"],
        msg["yes_bid_dollars"],
        msg["yes_ask_dollars"],
        msg["yes_bid"],
        msg["yes_ask"],
    ) == ("KXWS-A", "0.4000", "0.7000", 40, 70)
    owner = sim.accounts.owner_of(user[0].api_key_id)
    assert owner is not None
    placed = sim.state.submit(owner, "KXWS-A", order(Side.YES, 45, 2, client_order_id="uo-1"))
    sim.state.submit(BOT, "KXWS-B", order(Side.YES, 45, 2))  # another market: no ticker for it
    frames = await raw.drain()
    tickers = [f["msg"] for f in frames if f["type"] == "ticker"]
    assert [(t["market_ticker"], t["yes_bid_dollars"], t["yes_bid_size_fp"]) for t in tickers] == [
        ("KXWS-A", "0.4500", "2.00")
    ]
    [uo] = [f["msg"] for f in frames if f["type"] == "user_order"]
    assert (uo["order_id"], uo["ticker"], uo["status"], uo["client_order_id"], uo["remaining_count_fp"]) == (
        placed.order.order_id,
        "KXWS-A",
        "resting",
        "uo-1",
        "2.00",  # type: ignore[union-attr]
    )
    sim.state.submit(BOT2, "KXWS-A", order(Side.NO, 55, 2))  # fills our order: a trade moves the ticker
    frames = await raw.drain()
    last = [f["msg"] for f in frames if f["type"] == "ticker"][-1]
    assert (last["price_dollars"], last["volume_fp"], last["last_trade_size_fp"]) == (
        "0.4500",
        "2.00",
        "2.00",
    )
    assert [f["msg"]["status"] for f in frames if f["type"] == "user_order"] == ["executed"]
    await raw.ws.close()
