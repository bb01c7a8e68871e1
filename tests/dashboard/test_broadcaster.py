"""The Broadcaster actor on real Ray, fed by stand-in actors that answer like the real ones.

It finds its sources by name, shows what they report, serves a ladder from the collector that
holds the market, counts fills the reconciler pushes, accepts pushed states, and turns the
dashboard's kill switch into ``Trader.kill_switch``. (tests/e2e runs it with the real actors.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
import ray
from dashboard_factories import (
    collector,
    market,
    open_order,
    portfolio,
    trade_fill,
    trader_stats,
    trader_view,
)
from dashboard_factories import write_queue as wq_stats
from websockets.asyncio.client import ClientConnection, connect

from actors.reconciler import FillNotice
from kalshiflow.config import PROJECT_ROOT, UIConfig
from kalshiflow.dashboard import messages as M
from kalshiflow.launch.spec import ActorNames, BroadcasterSpec
from kalshiflow.launch.system import pick_free_port
from kalshiflow.market.prices import CENT


@pytest.fixture(scope="module")
def ray_running() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            namespace="kalshiflow-dashboard-test",
            log_to_driver=True,
            configure_logging=False,
        )
    yield
    if started:
        ray.shutdown()


@ray.remote(num_cpus=0)
class FakeCollector:
    def __init__(self, stats: Any, books: dict[str, Any]) -> None:
        self._stats, self._books = stats, books

    def stats(self) -> Any:
        return self._stats

    def books(self, tickers: list[str]) -> dict[str, Any]:
        return {t: self._books[t] for t in tickers if t in self._books}


@ray.remote(num_cpus=0)
class FakeStats:
    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def stats(self) -> Any:
        return self._stats


@ray.remote(num_cpus=0)
class FakeTrader:
    def __init__(self, active: Any, halted: Any, stats: Any) -> None:
        self.views = {"active": active, "halted": halted}
        self.mode = "active"
        self._stats = stats
        self.kills: list[str] = []

    def trader_state(self) -> Any:
        return self.views[self.mode]

    def stats(self) -> Any:
        return self._stats

    def kill_switch(self, reason: str = "kill switch") -> dict[str, Any]:
        self.kills.append(reason)
        self.mode = "halted"
        return {"mode": "halted", "reason": reason, "open_orders": 0}

    def killed(self) -> list[str]:
        return self.kills


@ray.remote(num_cpus=0)
class FakeReconciler:
    def __init__(self, view: Any) -> None:
        self.view = view
        self.subs: list[tuple[Any, str]] = []
        self.replays: list[int] = []

    def portfolio(self) -> Any:
        return self.view

    def add_subscriber(self, handle: Any, method: str, replay: int = 0) -> bool:
        if any(h == handle for h, _ in self.subs):
            return False
        self.subs.append((handle, method))
        self.replays.append(replay)
        return True

    def replay_requests(self) -> list[int]:
        return self.replays

    async def fire(self, notices: list[Any]) -> int:
        for handle, method in self.subs:
            for n in notices:
                await getattr(handle, method).remote(n)
        return len(self.subs)


@pytest.fixture(scope="module")
async def system(ray_running: None) -> AsyncIterator[dict[str, Any]]:
    from actors.broadcaster import Broadcaster

    ns = f"kf-dash-{uuid.uuid4().hex[:8]}"
    names = ActorNames()
    stats = collector("collector-t-0", [market("KX-A", 50), market("KX-B", 5, valid=False, gaps=1)])
    book = (True, [(40 * CENT, 1000), (39 * CENT, 300)], [(57 * CENT, 200)])
    actors = {
        "collector": FakeCollector.options(name="collector-t-0", namespace=ns).remote(stats, {"KX-A": book}),
        "wq": FakeStats.options(name=names.write_queue, namespace=ns).remote(wq_stats(depth=42)),
        "trader": FakeTrader.options(name=names.trader, namespace=ns).remote(
            trader_view(), trader_view(risk_mode="halted"), trader_stats()
        ),
        "reconciler": FakeReconciler.options(name=names.reconciler, namespace=ns).remote(
            portfolio((open_order("o-1", 100.0),))
        ),
    }
    ui = UIConfig(port=pick_free_port("127.0.0.1"), update_interval_s=0.5, poll_timeout_s=1.0)
    spec = BroadcasterSpec(
        launch_id="test",
        launcher_pid=os.getpid(),
        started_at=time.time(),
        ui=ui,
        ui_dir=str(PROJECT_ROOT / "ui"),
        namespace=ns,
        environment="simulator",
        exchange_url="ws://127.0.0.1:1/trade-api/ws/v2",
        ray_dashboard_url=None,
        names=names,
    )
    b = Broadcaster.options(name=names.broadcaster, namespace=ns).remote(spec)
    url = await b.ready.remote()
    await b.set_state.remote("running", "simulator")
    yield {"broadcaster": b, "url": url, "ws": url.replace("http", "ws") + "ws", **actors}
    with contextlib.suppress(Exception):
        await asyncio.wait_for(b.shutdown.remote(), 10)
    for h in [b, *actors.values()]:
        ray.kill(h)


async def until(ws: ClientConnection, pred: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        msg = M.decode_server(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if pred(msg):
            return msg


async def test_the_broadcaster_shows_its_sources_and_halts_the_trader(system: dict[str, Any]) -> None:
    async with connect(system["ws"]) as ws:
        hello = await until(ws, lambda m: isinstance(m, M.HelloMsg))
        c = hello.data.components
        assert (c.collectors, c.write_queue, c.trader, c.reconciler, c.policy_server) == (
            True,
            True,
            True,
            True,
            False,
        )
        coll = await until(ws, lambda m: isinstance(m, M.CollectionStatusMsg) and m.data.collectors == 1)
        c = coll.data
        assert (c.markets_tracked, c.deltas_collected, c.gaps, c.state) == (2, 55, 1, "running")
        assert c.write_queue is not None and c.write_queue.depth == 42
        assert c.session_id == "11111111-2222-3333-4444-555555555555"
        trader = await until(ws, lambda m: isinstance(m, M.TraderStateMsg) and m.data.source == "trader")
        assert trader.data.risk_mode == "active" and trader.data.portfolio_value == "10012.50"
        await until(
            ws, lambda m: isinstance(m, M.PnlHistoryMsg) and m.data.points and m.data.points[-1][1] == 10012.5
        )

        await ws.send(json.dumps({"type": "select_market", "ticker": "KX-A"}))
        book = await until(ws, lambda m: isinstance(m, M.BookMsg))
        assert book.data.snapshot and book.data.valid
        assert book.data.bids == [("0.4000", "10.00"), ("0.3900", "3.00")] and book.data.asks == [
            ("0.4300", "2.00")
        ]

        fired = await system["reconciler"].fire.remote(
            [
                # The reconciler says when the order was made (the portfolio poll may not have yet).
                FillNotice(fill=trade_fill("o-1", taker=False, ts_ms=100_250), position=None, received_ns=1,
                           order_created_ts=100.0),
                FillNotice(fill=trade_fill("o-2", taker=True, ts_ms=101_000), position=None, received_ns=1),
            ]
        )
        assert fired == 1, "the Broadcaster subscribed itself to the reconciler's fills"
        assert await system["reconciler"].replay_requests.remote() == [UIConfig().recent_fills], \
            "it asks for the fills listed on the page that came before it subscribed"
        # Counted from the reconciler's notices (until they arrive, the Trader's own count stands in:
        # the same total, no fill times).
        trades = await until(
            ws, lambda m: isinstance(m, M.TradesMsg) and m.data.execution_stats.total_fills == 2
            and m.data.execution_stats.avg_fill_time_ms is not None
        )
        s = trades.data.execution_stats
        assert (s.maker_fills, s.taker_fills, s.avg_fill_time_ms) == (1, 1, 250.0)
        assert trades.data.recent_fills[0].decision == "buy_yes_5", "the trader's fills name the decision"

        await ws.send(json.dumps({"type": "kill_switch", "reason": "test halt"}))
        result = await until(
            ws, lambda m: isinstance(m, M.CommandResultMsg) and m.data.command == "kill_switch"
        )
        assert result.data.ok
        assert result.data.detail == "trading halted (test halt); no order left open"
        assert await system["trader"].killed.remote() == ["test halt"]
        halted = await until(ws, lambda m: isinstance(m, M.TraderStateMsg) and m.data.risk_mode == "halted")
        assert halted.data.state == "running"


async def test_pushed_states_replace_polled_ones_and_bad_pushes_are_refused(system: dict[str, Any]) -> None:
    b = system["broadcaster"]
    pushed = M.Trades(
        ts=1.0,
        state="running",
        recent_fills=[],
        execution_stats=M.ExecutionStats(
            total_fills=777, maker_fills=None, taker_fills=None, avg_fill_time_ms=None
        ),
    )
    await b.publish.remote("trades", msgspec.to_builtins(pushed))
    with pytest.raises(ray.exceptions.RayTaskError):
        await b.publish.remote("orderbook_snapshot", {})
    with pytest.raises(ray.exceptions.RayTaskError):
        await b.publish.remote("trades", {"ts": 1.0})
    async with connect(system["ws"]) as ws:
        # The push went through the same rate limit; polling no longer overwrites it.
        await until(ws, lambda m: isinstance(m, M.TradesMsg) and m.data.execution_stats.total_fills == 777)
        deadline = time.monotonic() + 1.5
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                msg = M.decode_server(await asyncio.wait_for(ws.recv(), left))
                if isinstance(msg, M.TradesMsg):
                    assert msg.data.execution_stats.total_fills == 777
        stats = await b.stats.remote()
        assert stats["clients"] == 1 and stats["state"] == "running"
    assert (await b.owner.remote()).launch_id == "test"


async def test_a_crashed_broadcaster_comes_back_on_the_same_port(system: dict[str, Any]) -> None:
    b = system["broadcaster"]
    old_pid = await b.__ray_call__.remote(lambda self: os.getpid())
    ray.kill(b, no_restart=False)  # as a crash would: Ray rebuilds it from its spec
    deadline = time.monotonic() + 60
    while True:
        try:
            # ray.kill is asynchronous: the dying process may still answer (and accept a socket)
            # for a moment, so wait for the new incarnation, not just for an answer.
            pid = await asyncio.wait_for(b.__ray_call__.remote(lambda self: os.getpid()), 10)
            assert pid != old_pid
            assert await asyncio.wait_for(b.ready.remote(), 10) == system["url"]
            break
        except (AssertionError, ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                TimeoutError):
            assert time.monotonic() < deadline, "the Broadcaster did not come back"
            await asyncio.sleep(0.2)
    async with connect(system["ws"]) as ws:
        await until(ws, lambda m: isinstance(m, M.CollectionStatusMsg) and m.data.deltas_collected == 55)


async def test_the_directory_does_not_wait_for_a_hanging_policy_server_lookup(ray_running: None) -> None:
    """serve.status() can hang while no Serve controller answers (seen on a loaded machine): the
    poll round must go on without it (it froze every panel before)."""
    from kalshiflow.dashboard.sources import ActorDirectory, BackgroundLookup

    release = threading.Event()
    d = ActorDirectory(f"kf-none-{uuid.uuid4().hex[:6]}", ActorNames())
    d.policy_lookup = BackgroundLookup(lambda: (release.wait(30), (None, True))[1], (None, False), "policy")
    try:
        await asyncio.wait_for(d.refresh(), 10)  # the actor names only
        assert d.policy_lookup.running and not d.has_policy_server
        assert d.collectors() == [] and d.trader() is None
    finally:
        release.set()
    async with asyncio.timeout(10):
        while d.policy_lookup.running:
            await asyncio.sleep(0.05)
    assert d.has_policy_server
