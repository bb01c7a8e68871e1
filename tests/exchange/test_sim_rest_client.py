"""The project's async REST client against the simulator: what the trader and reconciler use."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from kalshiflow.config import SimulatorConfig
from kalshiflow.exchange.embedded import run_simulator
from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.server import Simulator
from kalshiflow.exchange.state import OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, Money
from kalshiflow.market.types import Action, OrderStatus, Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.auth import Signer, generate_credentials
from kalshiflow.protocol.errors import BadRequest, NotFound
from kalshiflow.protocol.rest_client import KalshiRestClient


@pytest.fixture
async def sim_and_client() -> AsyncIterator[tuple[Simulator, KalshiRestClient]]:
    creds, pub = generate_credentials()
    async with run_simulator(SimulatorConfig(generator=False), keys={creds.api_key_id: pub}) as sim:
        now = time.time()
        sim.state.add_market(
            MarketInfo(
                ticker="KXRC-A",
                event_ticker="KXRC-E",
                series_ticker="KXRC",
                title="A",
                open_time=now - 1,
                close_time=now + 600,
                price_level_structure="tapered_deci_cent",
            )
        )
        sim.state.open_market("KXRC-A")
        sim.state.add_account("bot", Money(10**6 * MONEY_SCALE), keep_history=False)
        sim.state.submit(
            "bot", "KXRC-A", OrderRequest(side=Side.NO, action=Action.BUY, count=1234, no_price=9550)
        )
        sim.state.submit(
            "bot", "KXRC-A", OrderRequest(side=Side.YES, action=Action.BUY, count=500, yes_price=300)
        )
        async with KalshiRestClient(sim.rest_url, signer=Signer.from_credentials(creds)) as client:
            yield sim, client


async def test_market_data_round_trips_exactly(sim_and_client: tuple[Simulator, KalshiRestClient]) -> None:
    sim, client = sim_and_client
    market = await client.get_market("KXRC-A")
    assert market.grid.name == "tapered_deci_cent" and market.grid.is_valid(9550)
    assert (market.yes_bid, market.yes_ask) == (300, 450)  # YES ask = 1 - 0.955 NO bid
    book = await client.get_orderbook("KXRC-A")
    state_book = sim.state.book("KXRC-A")
    assert (book.yes, book.no) == (state_book.yes, state_book.no) == (((300, 500),), ((9550, 1234),))
    pages = [m.ticker async for m in client.iter_markets(status="open")]
    assert pages == ["KXRC-A"]
    with pytest.raises(NotFound):
        await client.get_market("NOPE")


async def test_orders_fills_positions_through_our_client(
    sim_and_client: tuple[Simulator, KalshiRestClient],
) -> None:
    sim, client = sim_and_client
    req = rm.OrderRequest(
        ticker="KXRC-A",
        side=Side.YES,
        action=Action.BUY,
        count=250,
        price=450,
        client_order_id="rc-1",
        time_in_force="immediate_or_cancel",
    )
    order = await client.create_order(req)
    assert (order.status, order.fill_count, order.yes_price) == (OrderStatus.EXECUTED, 250, 450)
    fills = (await client.get_fills(ticker="KXRC-A")).fills
    assert fills[-1].count == 250 and fills[-1].price == 450 and fills[-1].fee > 0
    positions = await client.get_all_positions()
    assert [(p.ticker, p.position) for p in positions.market_positions] == [
        ("KXRC-A", sum(f.count for f in fills))
    ]
    resting = await client.create_order(
        rm.OrderRequest(
            ticker="KXRC-A", side=Side.NO, action=Action.BUY, count=100, price=9000, client_order_id="rc-2"
        )
    )
    assert resting.status is OrderStatus.RESTING and resting.price == 9000
    cancelled = await client.cancel_order(resting.order_id)
    assert cancelled.reduced_by == 100 and cancelled.order.status is OrderStatus.CANCELED
    balance = await client.get_balance()
    assert balance.balance == sim.state.balance(sim.accounts.owner_of(client._signer.key_id))  # type: ignore[union-attr, arg-type]
    with pytest.raises(BadRequest):
        await client.create_order(
            rm.OrderRequest(
                ticker="KXRC-A",
                side=Side.YES,
                action=Action.BUY,
                count=100,
                price=4550,
                client_order_id="rc-3",
            )
        )  # 0.455 off-grid mid-range
