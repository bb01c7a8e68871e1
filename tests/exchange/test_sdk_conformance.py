"""Conformance: Kalshi's official SDK (kalshi_python_sync 3.2.0) drives every REST endpoint of the
simulator, error paths included, over a real socket on 127.0.0.1.

The SDK validates every response with pydantic (required legacy fields, enum values), so these
tests fail if the simulator's wire form drifts from what real Kalshi clients accept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kalshi_python_sync import Configuration, KalshiClient
from kalshi_python_sync.exceptions import (
    ApiException,
    BadRequestException,
    ConflictException,
    NotFoundException,
    UnauthorizedException,
)

from kalshiflow.config import SimulatorConfig
from kalshiflow.exchange.embedded import SimulatorThread
from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.server import Simulator
from kalshiflow.exchange.state import ExchangeState, OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, Money
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol.auth import generate_credentials
from kalshiflow.secrets import Credentials

BOT = "bot-maker"


def sdk(url: str, creds: Credentials | None) -> KalshiClient:
    cfg = Configuration(host=url)
    if creds is not None:
        cfg.api_key_id = creds.api_key_id
        cfg.private_key_pem = creds.private_key_pem.reveal()
    return KalshiClient(cfg)


def populate(state: ExchangeState) -> None:
    now = time.time()

    def info(ticker: str, event: str, **kw: object) -> MarketInfo:
        base: dict[str, object] = {
            "ticker": ticker,
            "event_ticker": event,
            "series_ticker": "KXSDK",
            "title": f"{ticker}?",
            "open_time": now - 60,
            "close_time": now + 3600,
        }
        base.update(kw)
        return MarketInfo(**base)  # type: ignore[arg-type]

    for i in range(5):
        state.add_market(info(f"KXSDK-A{i}", "KXSDK-EA"))
        state.open_market(f"KXSDK-A{i}")
    state.add_market(info("KXSDK-SUB", "KXSDK-EB", price_level_structure="deci_cent"))
    state.open_market("KXSDK-SUB")
    state.add_market(info("KXSDK-LATER", "KXSDK-EB", open_time=now + 3000))
    state.add_market(info("KXSDK-DONE", "KXSDK-EB"))
    state.open_market("KXSDK-DONE")
    state.settle_market("KXSDK-DONE", "yes")
    state.add_account(BOT, Money(10**6 * MONEY_SCALE), keep_history=False)
    # Resting liquidity on A0: YES bids 40c x 30, 41c x 20; NO bids 55c x 25 (YES ask 45c).
    for side, cents, contracts in ((Side.YES, 40, 30), (Side.YES, 41, 20), (Side.NO, 55, 25)):
        key = "yes_price" if side is Side.YES else "no_price"
        req = OrderRequest(side=side, action=Action.BUY, count=contracts * 100, **{key: cents * 100})  # type: ignore[arg-type]
        assert state.submit(BOT, "KXSDK-A0", req).ok


@pytest.fixture(scope="module")
def creds_pair() -> tuple[Credentials, Credentials, str, str]:
    user, user_pub = generate_credentials()
    other, other_pub = generate_credentials()
    return user, other, user_pub, other_pub


@pytest.fixture(scope="module")
def simulator(creds_pair: tuple) -> Iterator[tuple[SimulatorThread, Simulator]]:
    user, other, user_pub, other_pub = creds_pair
    config = SimulatorConfig(generator=False, rate_limit=False)
    thread = SimulatorThread(config, keys={user.api_key_id: user_pub, other.api_key_id: other_pub})
    sim = thread.start()
    thread.call(populate, sim.state)
    yield thread, sim
    thread.stop()


@pytest.fixture(scope="module")
def client(simulator: tuple, creds_pair: tuple) -> KalshiClient:
    return sdk(simulator[1].rest_url, creds_pair[0])


def test_exchange_status(client: KalshiClient) -> None:
    status = client.get_exchange_status()
    assert status.exchange_active and status.trading_active


def test_markets_filters_and_cursor_pagination(client: KalshiClient) -> None:
    every = client.get_markets(limit=1000)
    assert every.cursor == ""
    assert {m.ticker for m in every.markets} >= {"KXSDK-A0", "KXSDK-SUB", "KXSDK-LATER", "KXSDK-DONE"}
    open_ = client.get_markets(status="open", limit=1000).markets
    assert {m.status for m in open_} == {"active"} and "KXSDK-LATER" not in {m.ticker for m in open_}
    unopened = client.get_markets(status="unopened").markets
    assert [(m.ticker, m.status) for m in unopened] == [("KXSDK-LATER", "initialized")]
    settled = client.get_markets(status="settled").markets
    assert [(m.ticker, m.status, m.result) for m in settled] == [("KXSDK-DONE", "settled", "yes")]
    by_event = client.get_markets(event_ticker="KXSDK-EA").markets
    assert len(by_event) == 5
    chosen = client.get_markets(tickers="KXSDK-A1,KXSDK-A3").markets
    assert sorted(m.ticker for m in chosen) == ["KXSDK-A1", "KXSDK-A3"]
    seen: list[str] = []
    cursor = None
    while True:
        page = client.get_markets(limit=3, cursor=cursor)
        seen += [m.ticker for m in page.markets]
        if not page.cursor:
            break
        cursor = page.cursor
    assert seen == [m.ticker for m in every.markets]
    with pytest.raises(BadRequestException):
        client.get_markets(status="bogus")


def test_market_fields_and_404(client: KalshiClient) -> None:
    m = client.get_market("KXSDK-A0").market
    assert (m.yes_bid, m.yes_ask, m.no_bid, m.no_ask) == (41, 45, 55, 59)
    assert (m.yes_bid_dollars, m.yes_ask_dollars) == ("0.4100", "0.4500")
    assert m.response_price_units == "usd_cent" and m.price_level_structure == "linear_cent"
    sub = client.get_market("KXSDK-SUB").market
    assert sub.price_level_structure == "deci_cent" and sub.price_ranges[0].step == "0.0010"
    with pytest.raises(NotFoundException) as err:
        client.get_market("NO-SUCH-MARKET")
    assert json.loads(err.value.body)["error"]["code"] == "market_not_found"


def test_orderbook_depth(client: KalshiClient, simulator: tuple) -> None:
    book = client.get_market_orderbook("KXSDK-A0").orderbook
    assert book.yes_dollars == [["0.4000", "30.00"], ["0.4100", "20.00"]]
    assert book.no_dollars == [["0.5500", "25.00"]]
    top = client.get_market_orderbook("KXSDK-A0", depth=1).orderbook
    assert top.yes_dollars == [["0.4100", "20.00"]]
    with pytest.raises(NotFoundException):
        client.get_market_orderbook("NO-SUCH-MARKET")


def test_order_lifecycle_fills_positions_balance(client: KalshiClient) -> None:
    start = client.get_balance()
    assert start.balance == 1_000_000 and start.portfolio_value == 0
    # Crosses the NO bid at 55c: buys 5 YES at 45c (price improvement is not possible here).
    taken = client.create_order(
        ticker="KXSDK-A0",
        side="yes",
        action="buy",
        count=5,
        type="limit",
        yes_price=45,
        client_order_id="sdk-take",
    ).order
    assert taken.status == "executed" and taken.fill_count == 5 and taken.taker_fill_cost == 225
    fee = taken.taker_fees
    assert fee == 9  # ceil(0.07 * 5 * 0.45 * 0.55 * 100) cents
    fills = client.get_fills(ticker="KXSDK-A0").fills
    assert [(f.order_id, f.count, f.yes_price, f.side, f.is_taker) for f in fills] == [
        (taken.order_id, 5, 45, "yes", True)
    ]
    assert client.get_fills(order_id="nope").fills == []
    tape = client.get_trades(ticker="KXSDK-A0")
    assert [(t.count, t.yes_price, t.no_price, t.taker_side) for t in tape.trades] == [(5, 45, 55, "yes")]
    assert tape.cursor == ""
    positions = client.get_positions()
    [pos] = positions.market_positions
    assert (pos.ticker, pos.position, pos.market_exposure, pos.fees_paid) == ("KXSDK-A0", 5, 225, fee)
    assert positions.event_positions[0].event_ticker == "KXSDK-EA"
    assert client.get_balance().balance == 1_000_000 - 225 - fee
    # A resting order, read back, then cancelled.
    resting = client.create_order(
        ticker="KXSDK-A1", side="no", action="buy", count=3, no_price=20, client_order_id="sdk-rest"
    ).order
    assert resting.status == "resting" and resting.no_price == 20 and resting.yes_price == 80
    assert client.get_order(resting.order_id).order.client_order_id == "sdk-rest"
    listed = client.get_orders(status="resting").orders
    assert [o.order_id for o in listed] == [resting.order_id]
    assert {o.order_id for o in client.get_orders(ticker="KXSDK-A0").orders} == {taken.order_id}
    cancelled = client.cancel_order(resting.order_id)
    assert cancelled.reduced_by == 3 and cancelled.order.status == "canceled"
    assert cancelled.order.remaining_count == 0
    with pytest.raises(NotFoundException):
        client.cancel_order(resting.order_id)
    with pytest.raises(NotFoundException):
        client.get_order("00000000-dead-beef-0000-000000000000")


def test_price_and_count_forms(client: KalshiClient) -> None:
    dollars = client.create_order(
        ticker="KXSDK-SUB",
        side="yes",
        action="buy",
        count=1,
        yes_price_dollars="0.1230",
        client_order_id="sdk-sub",
    ).order
    assert dollars.yes_price_dollars == "0.1230" and dollars.status == "resting"
    sell = client.create_order(ticker="KXSDK-A2", side="yes", action="sell", count=2, yes_price=90).order
    assert (sell.side, sell.action, sell.yes_price, sell.no_price) == ("yes", "sell", 90, 10)
    market = client.create_order(ticker="KXSDK-A3", side="yes", action="buy", count=1, type="market").order
    assert market.status == "canceled" and market.fill_count == 0  # IOC into an empty book
    client.cancel_order(dollars.order_id)
    client.cancel_order(sell.order_id)


def test_error_paths(client: KalshiClient, simulator: tuple, creds_pair: tuple) -> None:
    client.create_order(
        ticker="KXSDK-A4", side="yes", action="buy", count=1, yes_price=5, client_order_id="dup-1"
    )
    with pytest.raises(ConflictException) as conflict:
        client.create_order(
            ticker="KXSDK-A4", side="yes", action="buy", count=1, yes_price=6, client_order_id="dup-1"
        )
    assert json.loads(conflict.value.body)["error"]["code"] == "order_already_exists"
    with pytest.raises(BadRequestException) as off_grid:
        client.create_order(ticker="KXSDK-A4", side="yes", action="buy", count=1, yes_price_dollars="0.4050")
    assert json.loads(off_grid.value.body)["error"]["code"] == "invalid_price"
    with pytest.raises(BadRequestException) as broke:
        client.create_order(ticker="KXSDK-A4", side="yes", action="buy", count=100_000, yes_price=50)
    assert json.loads(broke.value.body)["error"]["code"] == "insufficient_balance"
    with pytest.raises(NotFoundException):
        client.create_order(ticker="NO-SUCH-MARKET", side="yes", action="buy", count=1, yes_price=50)
    with pytest.raises(BadRequestException) as closed:
        client.create_order(ticker="KXSDK-DONE", side="yes", action="buy", count=1, yes_price=50)
    assert json.loads(closed.value.body)["error"]["code"] == "market_closed"
    stranger, _ = generate_credentials()
    with pytest.raises(UnauthorizedException) as unauth:
        sdk(simulator[1].rest_url, stranger).get_balance()
    body = json.loads(unauth.value.body)
    assert body["error"]["code"] == "authentication_error" and body["error"]["details"] == "NOT_FOUND"
    with pytest.raises(UnauthorizedException):  # signed public requests are verified too
        sdk(simulator[1].rest_url, stranger).get_markets()
    with pytest.raises(UnauthorizedException):  # private endpoints need a signature
        sdk(simulator[1].rest_url, None).get_balance()
    assert sdk(simulator[1].rest_url, None).get_markets(limit=1).markets  # public: unsigned is fine


def test_accounts_are_separate(simulator: tuple, creds_pair: tuple) -> None:
    other = sdk(simulator[1].rest_url, creds_pair[1])
    assert other.get_balance().balance == 1_000_000
    assert other.get_orders().orders == [] and other.get_fills().fills == []


def test_rate_limit_429_with_separate_read_and_write_buckets() -> None:
    user, pub = generate_credentials()
    config = SimulatorConfig(
        generator=False, write_tokens_per_s=1, read_tokens_per_s=100, request_cost_tokens=10
    )
    with SimulatorThread(config, keys={user.api_key_id: pub}) as sim:
        client = sdk(sim.rest_url, user)
        # The write bucket holds one request (10 tokens, refilling at 1 token/s).
        with pytest.raises(NotFoundException):
            client.create_order(ticker="NONE", side="yes", action="buy", count=1, yes_price=50)
        with pytest.raises(ApiException) as limited:
            client.create_order(ticker="NONE", side="yes", action="buy", count=1, yes_price=50)
        assert limited.value.status == 429
        assert json.loads(limited.value.body) == {"error": "too many requests"}
        assert client.get_balance().balance == 1_000_000  # reads use their own bucket
        assert sim.limiter.rejected == 1
