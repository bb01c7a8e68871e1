"""The REST client against a small real Starlette/uvicorn server that verifies Kalshi signatures."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections import deque
from typing import Any

import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kalshiflow.config import ExchangeConfig
from kalshiflow.market.types import Action, OrderStatus, Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.auth import Signer, Verifier, generate_private_key
from kalshiflow.protocol.errors import (
    AuthError,
    Conflict,
    InsufficientBalance,
    KalshiConnectionError,
    NotFound,
    OrderPlacementRefused,
    RateLimited,
    ServerError,
)
from kalshiflow.protocol.rest_client import KalshiRestClient, backoff_delay

KEY = generate_private_key()
KEY_ID = "11111111-2222-3333-4444-555555555555"
PREFIX = "/trade-api/v2"


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status_code=status, media_type="application/json")


def _err(status: int, code: str, message: str) -> Response:
    return Response(rm.encode_error_body(code, message), status_code=status, media_type="application/json")


class FakeKalshi:
    """Just enough of Kalshi: signature check, scripted failures, an order store."""

    def __init__(self) -> None:
        self.verifier = Verifier({KEY_ID: KEY.public_key()}, max_skew_s=5)
        self.log: list[tuple[str, str, str, float]] = []  # method, signed path, query, time
        self.script: dict[str, deque[tuple[int, Any]]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.create_delay_s = 0.0  # > client timeout simulates a lost response after placing
        self.markets = [
            {"ticker": f"M-{i}", "status": "active", "yes_bid": 40 + i, "yes_ask": 45 + i} for i in range(5)
        ]
        routes = [
            Route(PREFIX + "/exchange/status", self.status),
            Route(PREFIX + "/markets", self.markets_list),
            Route(PREFIX + "/markets/{ticker}", self.market),
            Route(PREFIX + "/markets/{ticker}/orderbook", self.orderbook),
            Route(PREFIX + "/portfolio/balance", self.balance),
            Route(PREFIX + "/portfolio/positions", self.positions),
            Route(PREFIX + "/portfolio/orders", self.orders_route, methods=["GET", "POST"]),
            Route(PREFIX + "/portfolio/orders/{order_id}", self.order_route, methods=["GET", "DELETE"]),
            Route(PREFIX + "/portfolio/fills", self.fills),
        ]
        self.app = Starlette(routes=routes)
        inner = self.app.build_middleware_stack
        self.app.build_middleware_stack = lambda: self._auth(inner())  # type: ignore[method-assign]

    def _auth(self, app):
        async def asgi(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            # Verify against the raw path exactly as sent (percent-encoding included).
            path = scope["raw_path"].decode()
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.log.append((scope["method"], path, scope["query_string"].decode(), time.monotonic()))
            try:
                self.verifier.verify(scope["method"], path, headers)
            except AuthError as err:
                resp = _err(401, err.code, err.message)
                return await resp(scope, receive, send)
            key = f"{scope['method']} {scope['path'][len(PREFIX) :]}"
            queue = self.script.get(key)
            if queue:
                status, body = queue.popleft()
                resp = (
                    _json(body, status) if not isinstance(body, bytes) else Response(body, status_code=status)
                )
                return await resp(scope, receive, send)
            return await app(scope, receive, send)

        return asgi

    def fail(self, key: str, *answers: tuple[int, Any]) -> None:
        self.script.setdefault(key, deque()).extend(answers)

    def requests(self, method: str, path: str) -> list[tuple[str, str, str, float]]:
        return [r for r in self.log if r[0] == method and r[1] == PREFIX + path]

    async def status(self, request: Request) -> Response:
        return _json({"exchange_active": True, "trading_active": True})

    async def markets_list(self, request: Request) -> Response:
        limit = int(request.query_params.get("limit", "100"))
        start = int(request.query_params.get("cursor") or 0)
        status = request.query_params.get("status")
        items = [m for m in self.markets if status in (None, "open")]
        page = items[start : start + limit]
        nxt = str(start + limit) if start + limit < len(items) else ""
        return _json({"markets": page, "cursor": nxt})

    async def market(self, request: Request) -> Response:
        t = request.path_params["ticker"]
        for m in self.markets:
            if m["ticker"] == t:
                return _json({"market": m})
        return _err(404, "market_not_found", f"market {t} not found")

    async def orderbook(self, request: Request) -> Response:
        depth = request.query_params.get("depth")
        return _json(
            {
                "orderbook_fp": {
                    "yes_dollars": [["0.0100", "5.00"], ["0.4200", "13.00"]][-int(depth or 2) :],
                    "no_dollars": [["0.5600", "17.00"]],
                },
                "depth_seen": depth,
            }
        )

    async def balance(self, request: Request) -> Response:
        return _json({"balance": 1_000_000, "portfolio_value": 0, "updated_ts": 1})

    async def positions(self, request: Request) -> Response:
        cursor = request.query_params.get("cursor")
        if not cursor:
            return _json(
                {
                    "market_positions": [{"ticker": "M-0", "position_fp": "-3.00"}],
                    "event_positions": [],
                    "cursor": "p2",
                }
            )
        return _json(
            {"market_positions": [{"ticker": "M-1", "position": 4}], "event_positions": [], "cursor": ""}
        )

    async def orders_route(self, request: Request) -> Response:
        if request.method == "GET":
            ticker = request.query_params.get("ticker")
            limit = int(request.query_params.get("limit", "100"))
            start = int(request.query_params.get("cursor") or 0)
            items = [o for o in self.orders.values() if ticker in (None, o["ticker"])]
            page = items[start : start + limit]
            return _json({"orders": page, "cursor": str(start + limit) if start + limit < len(items) else ""})
        req = rm.decode_create_order(await request.body())
        if req.client_order_id in {o["client_order_id"] for o in self.orders.values()}:
            return _err(409, "order_already_exists", "duplicate client_order_id")
        if req.count > 1_000_000:
            return _err(400, "insufficient_balance", "not enough cash")
        oid = f"ord-{len(self.orders) + 1}"
        yes = req.yes_price
        self.orders[oid] = {
            "order_id": oid,
            "client_order_id": req.client_order_id,
            "ticker": req.ticker,
            "side": req.side.value,
            "action": req.action.value,
            "type": "limit",
            "status": "resting",
            "yes_price_dollars": f"{yes / 10000:.4f}",
            "no_price_dollars": f"{(10000 - yes) / 10000:.4f}",
            "initial_count_fp": f"{req.count / 100:.2f}",
            "remaining_count_fp": f"{req.count / 100:.2f}",
            "fill_count_fp": "0.00",
        }
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)  # the client gives up: response lost
        return _json({"order": self.orders[oid]}, 201)

    async def order_route(self, request: Request) -> Response:
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return _err(404, "not_found", "order not found")
        if request.method == "DELETE":
            reduced = order["remaining_count_fp"]
            order.update(status="canceled", remaining_count_fp="0.00")
            return _json({"order": order, "reduced_by_fp": reduced, "reduced_by": int(float(reduced))})
        return _json({"order": order})

    async def fills(self, request: Request) -> Response:
        return _json(
            {
                "fills": [
                    {
                        "trade_id": "t1",
                        "order_id": "ord-1",
                        "ticker": "M-0",
                        "side": "no",
                        "action": "buy",
                        "count_fp": "2.00",
                        "yes_price_dollars": "0.6000",
                        "is_taker": False,
                        "fee_cost": "0.0000",
                        "ts": 5,
                    }
                ],
                "cursor": "",
            }
        )


@pytest.fixture(scope="module")
async def server():
    fake = FakeKalshi()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:
        await asyncio.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{port}{PREFIX}"  # type: ignore[attr-defined]
    yield fake
    srv.should_exit = True
    await task


CFG = ExchangeConfig(max_retries=3, backoff_base_s=0.02, backoff_max_s=0.05, request_timeout_s=2.0)


def make_client(
    fake: FakeKalshi, config: ExchangeConfig = CFG, **kw: Any
) -> tuple[KalshiRestClient, list[float]]:
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(d)

    signer = kw.pop("signer", Signer(KEY_ID, KEY))
    return KalshiRestClient(
        fake.base_url, signer=signer, config=config, rng=random.Random(1), sleep=sleep, **kw
    ), delays


async def test_typed_reads(server):
    client, _ = make_client(server)
    async with client:
        assert (await client.exchange_status()).trading_active
        m = await client.get_market("M-2")
        assert m.yes_bid == 4200 and m.yes_ask == 4700
        markets = [m async for m in client.iter_markets(status="open", page_size=2)]
        assert [m.ticker for m in markets] == [f"M-{i}" for i in range(5)]
        assert [r[2] for r in server.requests("GET", "/markets")][-3:] == [
            "status=open&limit=2",
            "status=open&limit=2&cursor=2",
            "status=open&limit=2&cursor=4",
        ]
        book = await client.get_orderbook("M-1", depth=1)
        assert book.yes == ((4200, 1300),) and book.best_yes_ask == 4400
        assert (await client.get_balance()).balance == 10_000_000_000
        pos = await client.get_all_positions()
        assert [p.position for p in pos.market_positions] == [-300, 400]
        fills = (await client.get_fills(ticker="M-0")).fills
        assert fills[0].price == 4000 and fills[0].side is Side.NO
    # Every request was signed over the bare path (the server verified it, query strings included).
    assert client.stats().errors == 0


async def test_retries_on_429_and_500_with_backoff(server):
    client, delays = make_client(server)
    server.fail(
        "GET /portfolio/balance",
        (429, {"error": "too many requests"}),
        (500, {"error": {"code": "internal"}}),
    )
    before = len(server.requests("GET", "/portfolio/balance"))
    async with client:
        assert (await client.get_balance()).balance == 10_000_000_000
    times = [r[3] for r in server.requests("GET", "/portfolio/balance")[before:]]
    assert len(times) == 3
    assert len(delays) == 2 and 0 <= delays[0] <= 0.02 and 0 <= delays[1] <= 0.04
    assert delays == [backoff_delay(i, 0.02, 0.05, r) for i, r in enumerate([random.Random(1)] * 2)]
    assert times[1] - times[0] >= delays[0] * 0.9 and times[2] - times[1] >= delays[1] * 0.9
    s = client.stats()
    assert (s.requests, s.retries, s.rate_limited, s.server_errors, s.errors) == (3, 2, 1, 1, 0)


async def test_retries_are_bounded(server):
    client, delays = make_client(server)
    server.fail("GET /exchange/status", *[(503, {"error": {"code": "unavailable", "message": "down"}})] * 4)
    async with client:
        with pytest.raises(ServerError) as info:
            await client.exchange_status()
    assert info.value.status == 503 and info.value.code == "unavailable"
    assert len(delays) == 3 and all(d <= 0.05 for d in delays)
    assert client.stats().requests == 4 and client.stats().errors == 1
    client, _ = make_client(server)
    server.fail("GET /exchange/status", *[(429, {"error": "too many requests"})] * 4)
    async with client:
        with pytest.raises(RateLimited):
            await client.exchange_status()


async def test_error_mapping(server):
    client, delays = make_client(server)
    async with client:
        with pytest.raises(NotFound) as nf:
            await client.get_market("NOPE")
        assert nf.value.code == "market_not_found" and "NOPE" in nf.value.message
        with pytest.raises(InsufficientBalance):
            await client.create_order(
                rm.OrderRequest(ticker="M-0", side=Side.YES, action=Action.BUY, count=2_000_000, price=4000)
            )
        server.fail("GET /portfolio/balance", (400, b"<html>bad</html>"))
        with pytest.raises(Exception) as bad:
            await client.get_balance()
        assert getattr(bad.value, "status", None) == 400
    assert delays == []  # 4xx are never retried
    unsigned, _ = make_client(server, signer=None)
    async with unsigned:
        with pytest.raises(AuthError) as auth:
            await unsigned.get_balance()
        assert auth.value.status == 401 and auth.value.reason == ""
    wrong, _ = make_client(server, signer=Signer(KEY_ID, generate_private_key()))
    async with wrong:
        with pytest.raises(AuthError):
            await wrong.get_balance()


async def test_connection_errors_retry_then_raise():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)

    client = KalshiRestClient(f"http://127.0.0.1:{port}{PREFIX}", config=CFG, sleep=sleep)
    async with client:
        with pytest.raises(KalshiConnectionError):
            await client.exchange_status()
    assert len(delays) == 3 and client.stats().connection_errors == 4


async def test_create_cancel_and_duplicate_handling(server):
    client, _ = make_client(server)
    req = rm.OrderRequest(
        ticker="M-3", side=Side.NO, action=Action.BUY, count=1000, price=3000, client_order_id="cid-1"
    )
    async with client:
        order = await client.create_order(req)
        assert order.price == 3000 and order.yes_price == 7000 and order.status is OrderStatus.RESTING
        # Replaying the same client_order_id returns the same order instead of a second one.
        again = await client.create_order(req)
        assert again.order_id == order.order_id
        assert sum(o["client_order_id"] == "cid-1" for o in server.orders.values()) == 1
        assert client.stats().duplicate_orders_resolved == 1
        # Same id, different order -> a real conflict.
        with pytest.raises(Conflict):
            await client.create_order(
                rm.OrderRequest(
                    ticker="M-3",
                    side=Side.YES,
                    action=Action.BUY,
                    count=100,
                    price=100,
                    client_order_id="cid-1",
                )
            )
        # A generated client_order_id is always sent.
        auto = await client.create_order(
            rm.OrderRequest(ticker="M-3", side=Side.YES, action=Action.BUY, count=100, price=4100)
        )
        assert auto.client_order_id
        got = await client.get_order(order.order_id)
        assert got == order
        listed = [o.order_id async for o in client.iter_orders(ticker="M-3", page_size=1)]
        assert order.order_id in listed and auto.order_id in listed
        cancel = await client.cancel_order(order.order_id)
        assert cancel.reduced_by == 1000 and cancel.order.status is OrderStatus.CANCELED
        with pytest.raises(NotFound):
            await client.cancel_order("missing")


async def test_creates_use_presigned_signatures_off_the_request_path(server):
    client, _ = make_client(server)
    async with client:
        for i in range(4):
            req = rm.OrderRequest(ticker="M-3", side=Side.YES, action=Action.BUY, count=100, price=1000 + i,
                                  client_order_id=f"pre-{i}")
            assert (await client.create_order(req)).client_order_id == f"pre-{i}"  # the fake verified it
        pool = client._presigned[("POST", PREFIX + "/portfolio/orders")]
        assert pool.used == 3  # the first create signed inline; the pool was filled behind it
        await client.get_balance()  # other routes sign as they go
        assert ("GET", PREFIX + "/portfolio/balance") not in client._presigned
    off, _ = make_client(server, msgspec.structs.replace(CFG, presign_max_age_ms=0))
    async with off:
        await off.create_order(rm.OrderRequest(ticker="M-3", side=Side.YES, action=Action.BUY, count=100,
                                               price=1100, client_order_id="pre-off"))
        assert off._presigned == {}


async def test_lost_create_response_does_not_double_place(server):
    cfg = ExchangeConfig(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.02, request_timeout_s=0.3)
    client, delays = make_client(server, cfg)
    server.create_delay_s = 0.6  # placed, but the answer arrives after the client timed out
    req = rm.OrderRequest(
        ticker="M-4", side=Side.YES, action=Action.BUY, count=500, price=4200, client_order_id="lost-1"
    )
    try:
        async with client:
            order = await client.create_order(req)
    finally:
        server.create_delay_s = 0.0
    assert order.client_order_id == "lost-1" and order.price == 4200
    assert sum(o["client_order_id"] == "lost-1" for o in server.orders.values()) == 1
    s = client.stats()
    assert s.connection_errors >= 1 and s.retries >= 1 and s.duplicate_orders_resolved == 1


async def test_production_guard_blocks_before_sending(server):
    prod = ExchangeConfig(environment="production")
    client = KalshiRestClient(
        "https://api.elections.kalshi.com/trade-api/v2", signer=Signer(KEY_ID, KEY), config=prod
    )
    req = rm.OrderRequest(ticker="M-0", side=Side.YES, action=Action.BUY, count=100, price=4000)
    async with client:
        with pytest.raises(OrderPlacementRefused):
            await client.create_order(req)
        with pytest.raises(OrderPlacementRefused):
            await client.cancel_order("x")
    assert client.stats().requests == 0
    # A simulator/demo config whose URL is a production host is refused too.
    sneaky = KalshiRestClient(
        "https://external-api.kalshi.com/trade-api/v2", config=ExchangeConfig(environment="demo")
    )
    async with sneaky:
        with pytest.raises(OrderPlacementRefused):
            await sneaky.create_order(req)
    assert "PRIVATE" not in repr(client)
