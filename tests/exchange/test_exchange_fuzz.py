"""Fuzz (hypothesis) the simulator's WS and REST surfaces with malformed input.

Every malformed command must get a Kalshi-style error reply on a connection that stays open;
bad, replayed or expired signatures must get 401; off-grid prices 400 ``invalid_price``; the
server must keep serving other clients throughout; and no secret may reach the logs.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from kalshiflow.config import SimulatorConfig
from kalshiflow.exchange.embedded import SimulatorThread
from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.server import Simulator
from kalshiflow.exchange.state import ExchangeState, OrderRequest
from kalshiflow.market.prices import CENT, MONEY_SCALE, Money
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol.auth import Signer, generate_credentials
from kalshiflow.secrets import Credentials

WS_PATH = "/trade-api/ws/v2"
MAX_FRAME = 4096
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SENTINEL = 999_999


def populate(state: ExchangeState) -> None:
    now = time.time()
    state.add_market(
        MarketInfo(
            ticker="KXFZ-A",
            event_ticker="KXFZ-E",
            series_ticker="KXFZ",
            title="A",
            open_time=now - 1,
            close_time=now + 3600,
        )
    )
    state.open_market("KXFZ-A")
    state.add_account("bot", Money(10**6 * MONEY_SCALE), keep_history=False)


class Env:
    def __init__(self, thread: SimulatorThread, sim: Simulator, creds: Credentials) -> None:
        self.thread, self.sim, self.creds = thread, sim, creds
        self.signer = Signer.from_credentials(creds)
        url = urlsplit(sim.rest_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80

    def ws(self) -> ClientConnection:
        return ws_connect(
            self.sim.ws_url, additional_headers=self.signer.headers("GET", WS_PATH), open_timeout=5
        )

    def rest(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return resp.status, json.loads(data) if data else None

    def signed(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        return self.rest(method, path, body, self.signer.headers(method, path))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    creds, pub = generate_credentials()
    config = SimulatorConfig(generator=False, rate_limit=False, max_frame_bytes=MAX_FRAME)
    thread = SimulatorThread(config, keys={creds.api_key_id: pub})
    sim = thread.start()
    thread.call(populate, sim.state)
    yield Env(thread, sim, creds)
    thread.stop()


@pytest.fixture(scope="module")
def fuzz_ws(env: Env) -> Iterator[ClientConnection]:
    ws = env.ws()
    yield ws
    ws.close()


def exchange(ws: ClientConnection, frame: str | bytes) -> list[dict[str, Any]]:
    """Send one frame, then a sentinel command; return every frame that came before its reply."""
    ws.send(frame)
    ws.send(json.dumps({"id": SENTINEL, "cmd": "list_subscriptions"}))
    out = []
    while True:
        reply = json.loads(ws.recv(timeout=5))
        if reply.get("id") == SENTINEL and reply["type"] == "ok":
            return out
        out.append(reply)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
commands = st.fixed_dictionaries(
    {
        "id": st.integers(1, 1000) | st.text(max_size=3) | st.none(),
        "cmd": st.sampled_from(
            [
                "subscribe",
                "unsubscribe",
                "update_subscription",
                "list_subscriptions",
                "explode",
                "",
                "SUBSCRIBE",
            ]
        ),
    },
    optional={
        "params": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "channels": json_values
                | st.lists(st.sampled_from(["orderbook_delta", "ticker_v2", "fill", "nope"]), max_size=3),
                "market_tickers": json_values | st.lists(st.sampled_from(["KXFZ-A", "NOPE", ""]), max_size=3),
                "sids": json_values | st.lists(st.integers(-2, 5), max_size=3),
                "sid": json_values,
                "action": st.sampled_from(["add_markets", "delete_markets", "get_snapshot", "x"]),
            },
        )
    },
)


@FUZZ
@given(frame=st.text(max_size=200) | json_values.map(json.dumps) | commands.map(json.dumps))
def test_ws_malformed_commands_get_error_replies_and_the_connection_survives(
    env: Env, fuzz_ws: ClientConnection, frame: str
) -> None:
    replies = exchange(fuzz_ws, frame)
    for reply in replies:
        assert reply["type"] in {
            "error",
            "ok",
            "subscribed",
            "unsubscribed",
            "orderbook_snapshot",
            "orderbook_delta",
            "fill",
            "market_position",
        }, reply
        if reply["type"] == "error":
            assert isinstance(reply["msg"]["code"], int) and reply["msg"]["msg"]
    try:
        parsed = json.loads(frame)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("cmd") not in (
        "subscribe",
        "unsubscribe",
        "update_subscription",
        "list_subscriptions",
    ):
        assert replies and replies[0]["type"] == "error"
        assert replies[0]["msg"]["code"] in (1, 5)


def test_ws_oversized_and_binary_frames_get_error_1(env: Env, fuzz_ws: ClientConnection) -> None:
    big = json.dumps({"id": 5, "cmd": "subscribe", "params": {"channels": ["trade"], "pad": "x" * MAX_FRAME}})
    assert [r["msg"]["code"] for r in exchange(fuzz_ws, big)] == [1]
    assert [r["msg"]["code"] for r in exchange(fuzz_ws, b"\x00\x01binary")] == [1]


def test_ws_other_clients_keep_receiving_during_fuzz(env: Env, fuzz_ws: ClientConnection) -> None:
    with env.ws() as watcher:
        watcher.send(
            json.dumps(
                {
                    "id": 1,
                    "cmd": "subscribe",
                    "params": {"channels": ["orderbook_delta"], "market_tickers": ["KXFZ-A"]},
                }
            )
        )
        assert json.loads(watcher.recv(timeout=5))["type"] == "subscribed"
        assert json.loads(watcher.recv(timeout=5))["type"] == "orderbook_snapshot"
        for junk in ("{", '{"cmd": 5}', '{"id": 1, "cmd": "subscribe", "params": {"channels": 7}}'):
            assert exchange(fuzz_ws, junk)[0]["type"] == "error"
        env.thread.call(
            env.sim.state.submit,
            "bot",
            "KXFZ-A",
            OrderRequest(side=Side.YES, action=Action.BUY, count=100, yes_price=3000),
        )
        delta = json.loads(watcher.recv(timeout=5))
        assert (delta["type"], delta["seq"], delta["msg"]["price_dollars"]) == (
            "orderbook_delta",
            2,
            "0.3000",
        )


order_bodies = st.fixed_dictionaries(
    {},
    optional={
        "ticker": st.sampled_from(["KXFZ-A", "NOPE", ""]) | st.integers(),
        "side": st.sampled_from(["yes", "no", "maybe"]) | st.none(),
        "action": st.sampled_from(["buy", "sell", "hold"]),
        "count": st.integers(-5, 10**9) | st.text(max_size=4) | st.floats(allow_nan=False),
        "count_fp": st.text(max_size=8) | st.sampled_from(["1.00", "0.5", "-1", "1e3"]),
        "yes_price": st.integers(-5, 120) | st.text(max_size=3),
        "no_price": st.integers(-5, 120),
        "yes_price_dollars": st.text(max_size=8) | st.sampled_from(["0.5", "0.4050", "1.2", "0"]),
        "time_in_force": st.sampled_from(
            ["good_till_canceled", "immediate_or_cancel", "fill_or_kill", "gtc", ""]
        ),
        "type": st.sampled_from(["limit", "market", "stop"]),
        "post_only": st.booleans() | st.integers(),
        "client_order_id": st.text(max_size=70),
        "expiration_ts": st.integers(-1, 2**40),
    },
)


@FUZZ
@given(body=order_bodies.map(json.dumps).map(str.encode) | st.binary(max_size=100))
def test_rest_malformed_order_bodies_are_kalshi_errors_never_500(env: Env, body: bytes) -> None:
    status, payload = env.signed("POST", "/trade-api/v2/portfolio/orders", body)
    assert status in (201, 400, 404, 409), (status, payload)
    if status != 201:
        assert set(payload["error"]) == {"code", "message", "details", "service"} and payload["error"]["code"]
    else:
        env.signed("DELETE", f"/trade-api/v2/portfolio/orders/{payload['order']['order_id']}")
    assert env.rest("GET", "/trade-api/v2/exchange/status")[0] == 200  # still serving


@FUZZ
@given(ticks=st.integers(1, 9999).filter(lambda p: p % CENT))
def test_rest_prices_off_the_grid_are_invalid_price(env: Env, ticks: int) -> None:
    body = json.dumps(
        {
            "ticker": "KXFZ-A",
            "side": "yes",
            "action": "buy",
            "count": 1,
            "yes_price_dollars": f"0.{ticks:04d}",
        }
    ).encode()
    status, payload = env.signed("POST", "/trade-api/v2/portfolio/orders", body)
    assert (status, payload["error"]["code"]) == (400, "invalid_price")


@FUZZ
@given(
    mutation=st.sampled_from(
        ["flip", "garbage", "expired", "future", "other_path", "other_method", "no_ts", "bad_ts"]
    ),
    byte=st.integers(0, 255),
)
def test_bad_replayed_or_expired_signatures_are_401(env: Env, mutation: str, byte: int) -> None:
    path = "/trade-api/v2/portfolio/balance"
    now = int(time.time() * 1000)
    headers = env.signer.headers("GET", path)
    if mutation == "flip":
        sig = bytearray(headers["KALSHI-ACCESS-SIGNATURE"].encode())
        sig[byte % 40] = ord("A") if sig[byte % 40] != ord("A") else ord("B")
        headers["KALSHI-ACCESS-SIGNATURE"] = sig.decode()
    elif mutation == "garbage":
        headers["KALSHI-ACCESS-SIGNATURE"] = f"not base64 {byte}!"
    elif mutation == "expired":
        headers = env.signer.headers("GET", path, timestamp_ms=now - 120_000 - byte)
    elif mutation == "future":
        headers = env.signer.headers("GET", path, timestamp_ms=now + 120_000 + byte)
    elif mutation == "other_path":  # a signature replayed on another endpoint
        headers = env.signer.headers("GET", "/trade-api/v2/portfolio/fills")
    elif mutation == "other_method":  # ... or with another method
        headers = env.signer.headers("DELETE", path)
    elif mutation == "no_ts":
        del headers["KALSHI-ACCESS-TIMESTAMP"]
    else:
        headers["KALSHI-ACCESS-TIMESTAMP"] = f"{byte}x"
    status, payload = env.rest("GET", path, headers=headers)
    assert status == 401 and payload["error"]["code"] == "authentication_error"


def test_no_secret_reaches_the_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    creds, pub = generate_credentials()
    env.thread.call(env.sim.add_key, creds.api_key_id, pub)
    signer = Signer.from_credentials(creds)
    headers = signer.headers("GET", "/trade-api/v2/portfolio/balance")
    assert env.rest("GET", "/trade-api/v2/portfolio/balance", headers=headers)[0] == 200
    bad = dict(headers, **{"KALSHI-ACCESS-SIGNATURE": headers["KALSHI-ACCESS-SIGNATURE"][::-1]})
    assert env.rest("GET", "/trade-api/v2/portfolio/balance", headers=bad)[0] == 401
    with ws_connect(env.sim.ws_url, additional_headers=signer.headers("GET", WS_PATH)) as ws:
        ws.send("{broken")
        ws.recv(timeout=5)
    pem = creds.private_key_pem.reveal()
    body_lines = [line for line in pem.splitlines() if "-----" not in line]
    # Everything the server side logged (the test's own websockets client logs its headers at
    # DEBUG; that is the client's business, not the simulator's).
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client"))
    assert "registered API key" in text  # the registration was logged ...
    assert creds.api_key_id not in text  # ... with the key id masked
    assert headers["KALSHI-ACCESS-SIGNATURE"] not in text and bad["KALSHI-ACCESS-SIGNATURE"] not in text
    assert not any(line in text for line in body_lines) and "PRIVATE KEY" not in text and pub not in text
