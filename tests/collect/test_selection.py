"""Market selection: ranking by activity, sharding, runtime placement; discovery against the simulator."""

from __future__ import annotations

import time

from kalshiflow.collect.selection import MarketSpec, assign, describe, discover, rank, shard
from kalshiflow.collect.testing import make_keys
from kalshiflow.config import SimulatorConfig
from kalshiflow.exchange.embedded import run_simulator
from kalshiflow.exchange.events import MarketInfo, MarketStatus
from kalshiflow.market.prices import DECI_CENT, LINEAR_CENT
from kalshiflow.market.types import Side
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.protocol.rest_models import Market


def specs(n: int) -> list[MarketSpec]:
    return [MarketSpec(ticker=f"T{i}") for i in range(n)]


def test_shard_deals_round_robin_in_rank_order() -> None:
    shards = shard(specs(7), 3)
    assert [[m.ticker for m in s] for s in shards] == [["T0", "T3", "T6"], ["T1", "T4"], ["T2", "T5"]]
    assert shard([], 3) == [] and len(shard(specs(3), 3)) == 1


def test_assign_fills_collectors_with_room_then_opens_shards() -> None:
    placed, new = assign(specs(5), {"a": 2, "b": 3}, per_collector=3)
    assert {k: [m.ticker for m in v] for k, v in placed.items()} == {"a": ["T0"]}
    assert [[m.ticker for m in s] for s in new] == [["T1", "T3"], ["T2", "T4"]]


def test_spec_grid() -> None:
    assert MarketSpec(ticker="x").grid() is LINEAR_CENT
    assert MarketSpec(ticker="x", grid_name="deci_cent").grid() is DECI_CENT
    custom = MarketSpec(ticker="x", grid_name="odd", ranges=DECI_CENT.ranges).grid()
    assert custom.prices == DECI_CENT.prices


async def test_discovery_ranks_open_markets_by_activity() -> None:
    creds, keys = make_keys()
    async with run_simulator(SimulatorConfig(generator=False, rate_limit=False), keys=keys) as sim:
        now = time.time()
        for i, status in enumerate([MarketStatus.ACTIVE] * 4 + [MarketStatus.INITIALIZED]):
            sim.state.add_market(MarketInfo(
                ticker=f"KXD-{i}", event_ticker="KXD", series_ticker="KXD", title="d", open_time=now - 10,
                close_time=now + 3600, status=status,
                price_level_structure="deci_cent" if i == 2 else "linear_cent",
            ))
        for i, trades in ((1, 3), (2, 1), (3, 2)):  # volume via crossing crowd liquidity
            for _ in range(trades):
                sim.state.apply_external_delta(f"KXD-{i}", Side.YES, 4000, 500)
                sim.state.apply_external_delta(f"KXD-{i}", Side.YES, 4000, -500, traded=True)
        async with KalshiRestClient(sim.rest_url) as rest:
            top = await discover(rest, 3)
            named = await describe(rest, ["KXD-2", "NOPE"])
    assert [m.ticker for m in top] == ["KXD-1", "KXD-3", "KXD-2"]
    assert MarketSpec.from_market(top[2]).grid() is DECI_CENT
    assert named[0].grid() is DECI_CENT and named[1] == MarketSpec(ticker="NOPE")


def test_rank_skips_closed_markets() -> None:
    def market(ticker: str, status: str, volume_24h: int) -> Market:
        import msgspec

        from kalshiflow.protocol.rest_models import decode_market

        body = {"market": {"ticker": ticker, "event_ticker": "E", "status": status, "volume_24h": volume_24h}}
        return decode_market(msgspec.json.encode(body))

    ranked = rank([market("A", "active", 1), market("B", "closed", 9), market("C", "active", 5)], 0)
    assert [m.ticker for m in ranked] == ["C", "A"]
