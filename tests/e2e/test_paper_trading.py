"""Paper trading end to end: the simulator, real Ray + Serve + PostgreSQL, real model versions.

One Serve app and one model registry serve the module (promotion IS how a model changes live);
each test starts its own exchange, collection, reconciler and trader with ``paper_trading``.

- test_trading_reload_refusal_failover_kill_and_reconcile: a policy trades several markets; the
  kill switch halts and cancels (exchange truth); a second version is promoted mid-run with zero
  failed decisions; a schema-mismatched version is refused and trading goes on with the old one;
  a killed PolicyServer replica means HOLD ("unavailable"), then recovery with nothing done;
  an injected ledger divergence is corrected by the reconciler; decisions / orders / fills /
  position snapshots are in PostgreSQL and agree with the actors.
- test_daily_loss_stop_cancels_flattens_and_halts: a tiny loss stop trips on the first losses;
  the gate cancels, flattens (exchange positions flat) and halts for the day.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray

from kalshiflow.config import (
    AppConfig,
    CollectorConfig,
    RiskConfig,
    SimulatorConfig,
    TraderConfig,
    WriteQueueConfig,
)
from kalshiflow.rl.registry import Registry
from kalshiflow.trading.paper import PaperTrading, paper_trading
from kalshiflow.trading.testing import CHURN, TAKER, write_model_version

APP = "policy_server_e2e"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One Ray for the whole test session (re-initialising Ray in one process confuses Serve's
    cached client): started here unless another fixture already did, shut down at the end."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=int(os.environ.get("KALSHIFLOW_TEST_RAY_CPUS", "4")), include_dashboard=False,
                 namespace="kalshiflow-test", log_to_driver=True, configure_logging=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def serve_app(ray_cluster: None) -> Iterator[str]:
    """This module's PolicyServer app, deleted when the module is done."""
    yield APP
    from ray import serve

    serve.delete(APP)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(tmp_path_factory.mktemp("models"))


pytestmark = pytest.mark.usefixtures("serve_app")


def config(tmp_path: Path, *, markets: int = 4, speed: float = 10.0,
           risk: RiskConfig | None = None) -> AppConfig:
    return AppConfig(
        simulator=SimulatorConfig(markets=2 * markets, speed=speed, seed=11),
        collector=CollectorConfig(discover_top_n=markets, markets_per_collector=2, status_poll_s=0),
        write_queue=WriteQueueConfig(spill_dir=str(tmp_path / "spill")),
        # 5 exchange seconds per decision and market, as the env trains (0.5 s wall at speed 10).
        trader=TraderConfig(decision_interval_s=5.0, policy_timeout_s=0.5),
        risk=msgspec.structs.replace(risk or RiskConfig(max_orders_per_s=50.0),
                                     state_dir=str(tmp_path / "risk")),
    )


async def until(what: Callable[[], Awaitable[Any]], timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(every)


async def served(version: str) -> bool:
    from actors.policy_server import policy_handle

    try:
        return (await policy_handle(APP).stats.remote()).version == version
    except Exception:  # noqa: BLE001 - not deployed yet / replica restarting
        return False


def resting(pt: PaperTrading, tickers: list[str] | None = None) -> int:
    """Our resting orders (in these markets) as the exchange itself holds them."""
    owner = pt.owner
    assert owner is not None
    return sum(o.ticker in tickers if tickers is not None else 1
               for o in pt.simulator.state.venue.open_orders(owner))


def exchange_positions(pt: PaperTrading) -> dict[str, int]:
    owner = pt.owner
    assert owner is not None
    return {t: p.qty for t, p in pt.simulator.state.venue.account(owner).positions.items() if p.qty}


async def test_trading_reload_refusal_failover_kill_and_reconcile(db_url: str, db: Any, tmp_path: Path,
                                                                  registry: Registry) -> None:
    v1 = write_model_version(registry, prefer=CHURN, promote=True)
    cfg = config(tmp_path)
    async with paper_trading(cfg, db_url=db_url, models_dir=str(registry.root), policy_app=APP) as pt:
        trader, reconciler = pt.trader, pt.reconciler

        async def stats() -> Any:
            return await trader.stats.remote()

        # 1. The policy trades: orders placed, acknowledged and cancelled in several markets.
        await until(lambda: served(v1))
        s = await until(lambda: _has(stats, lambda s: s.orders_acked >= 8 and s.orders_cancelled >= 4), 60)
        assert s.model_version == v1 and s.markets == 4
        # Book views came over the book link (TCP), one connection per collector, not by Ray call.
        assert s.book_link_frames > 0 and s.book_link_connections == len(pt.collection.collectors), s
        assert set(s.actions) <= {"hold", "cancel_all", "buy_yes_join_1", "buy_no_join_1"}

        # 2. Kill switch with orders resting: halted, every order cancelled on the exchange.
        await until(lambda: _now(resting(pt) > 0), 20, 0.02)
        result = await trader.kill_switch.remote("e2e kill switch")
        assert result == {"mode": "halted", "reason": "e2e kill switch", "open_orders": 0}
        assert resting(pt) == 0
        before = (await stats()).orders_placed
        await asyncio.sleep(1.5)
        s = await stats()
        assert s.risk_mode == "halted" and s.orders_placed == before and s.refusals.get("halted", 0) > 0
        # A crash does not lift the kill switch: the restarted Trader reads its risk day back.
        first_life = (await stats()).decisions  # the counters restart with the actor
        assert await trader.flush.remote(10.0)  # ... and those decisions are stored before it dies
        ray.kill(trader, no_restart=False)

        async def restarted() -> Any:
            with contextlib.suppress(Exception):
                if await trader.ready.remote(5.0):
                    return await stats()
            return None

        s = await until(restarted, 60)
        assert s.risk_mode == "halted" and "e2e kill switch (restored)" in s.risk_reason, s
        await pt.collection.add_subscriber(trader, list(pt.collection.markets))  # a no-op if still there
        await reconciler.add_subscriber.remote(trader, "on_fill")
        assert await trader.set_mode.remote("active", "e2e resume") == "active"
        # The collectors found the new Trader's link (a new port and token) by themselves.
        await until(lambda: _has(stats, lambda s: s.book_link_frames > 0), 20)

        # 3. A collector loses its connection (killed; Ray restarts it): the orders resting in its
        #    markets are cancelled; trading there resumes when its data flows again. A policy that
        #    only joins (never cancels) makes sure orders rest there when it dies.
        vj = write_model_version(registry, prefer=("buy_yes_join_1", "buy_no_join_1"), promote=True)
        await until(lambda: _has(stats, lambda s: s.model_version == vj), 20)
        cid, collector = next(iter(pt.collection.collectors.items()))
        theirs = list(pt.collection.assignment[cid])
        await until(lambda: _now(resting(pt, theirs) > 0), 20, 0.05)
        ray.kill(collector, no_restart=False)
        try:
            await until(lambda: _has(stats, lambda s: s.cancels.get("market data connection lost", 0)), 30)
        except TimeoutError:
            s = await stats()
            raise AssertionError(f"no lost-connection cancel: {s.markets_lost=} {s.cancels=} "
                                 f"{s.open_orders=} {s.last_error=} {resting(pt, theirs)=}") from None
        await until(lambda: _now(resting(pt, theirs) > 0), 60, 0.2)  # reconnected: trading there again

        # 4. Hot reload: v2 promoted while trading; every decision answered, none failed.
        v2 = write_model_version(registry, prefer=TAKER, promote=True)
        await until(lambda: _has(stats, lambda s: s.model_version == v2), 20)
        s = await until(lambda: _has(stats, lambda s: s.fills >= 4), 60)
        assert s.policy_errors == 0 and s.holds_policy_unavailable == 0, s
        assert "error" not in s.verdicts and "unavailable" not in s.verdicts, s.verdicts

        # 5. A schema-mismatched version is refused; trading goes on with v2.
        from actors.policy_server import policy_handle, replica_actor_names

        v3 = write_model_version(registry, prefer=CHURN, schema_hash="0" * 64, promote=True)
        server = await until(lambda: _served_stats(lambda st: st.refusals >= 1 and v3 in st.last_refusal), 20)
        assert server.version == v2
        d0 = (await stats()).decisions
        s = await until(lambda: _has(stats, lambda s: s.decisions >= d0 + 8), 20)
        assert s.model_version == v2 and s.policy_errors == 0 and s.verdicts.get("allowed", 0) > 0

        # 6. The replica dies: HOLD with "unavailable", then recovery on its own (v2 again).
        (name,) = replica_actor_names(APP)
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        s = await until(lambda: _has(stats, lambda s: s.holds_policy_unavailable > 0), 30, 0.05)
        assert s.verdicts.get("unavailable", 0) == s.holds_policy_unavailable
        allowed = s.verdicts.get("allowed", 0)
        s = await until(lambda: _has(stats, lambda s: s.policy_available
                                     and s.verdicts.get("allowed", 0) > allowed), 90, 0.5)
        assert s.model_version == v2 and s.policy_errors == 0
        assert (await policy_handle(APP).stats.remote()).version == v2

        # 7. Freeze trading, corrupt the reconciler's ledger, reconcile: back to the exchange's truth.
        await trader.kill_switch.remote("e2e freeze")
        await asyncio.sleep(0.5)
        await reconciler.reconcile_now.remote()
        truth = exchange_positions(pt)
        ticker = pt.tickers[0]
        await reconciler.inject_divergence.remote(positions={ticker: (truth.get(ticker, 0) + 700, 123_456)})
        report = await reconciler.reconcile_now.remote()
        assert any(d.ticker == ticker for d in report.discrepancies)
        view = await reconciler.portfolio.remote()
        assert {t: p.qty for t, p in view.positions.items() if p.qty} == truth
        final = await stats()
        state = await trader.trader_state.remote()
        assert state.environment == "simulator" and state.model_version == v2 and state.risk_mode == "halted"
        metrics = state.metrics
        assert (metrics.orders_placed, metrics.decisions) == (final.orders_placed, final.decisions)
        assert {p.ticker for p in state.positions} == set(truth)

    # 8. What was stored: every decision, the orders with their decisions, fills, snapshots.
    summary = pt.summary["trader"]
    decisions = await db.fetchval("SELECT count(*) FROM trader_decisions")
    # Every decision of the restarted Trader, and at least those of its first life flushed before the crash.
    assert decisions >= summary["decisions"] + first_life and summary["decisions"] >= final.decisions
    versions = {r[0] for r in await db.fetch("SELECT DISTINCT model_version FROM trader_decisions")}
    assert {v1, vj, v2} <= versions
    verdicts = {r[0] for r in await db.fetch("SELECT DISTINCT risk_verdict FROM trader_decisions")}
    assert {"allowed", "cancel", "rejected", "unavailable"} <= verdicts
    orders = await db.fetch("SELECT o.order_id, o.decision_id, d.action FROM orders o "
                            "JOIN trader_decisions d ON d.decision_id = o.decision_id")
    assert len(orders) >= final.orders_acked and all(isinstance(r["decision_id"], uuid.UUID) for r in orders)
    fills = await db.fetchval("SELECT count(*) FROM fills")
    assert fills >= final.fills >= 4
    # Order rows follow their orders: a cancelled order's row says so, not just what the ack said
    # (CHURN cancels every order it placed; fills of resting orders are stored the same way).
    states = dict(await db.fetch("SELECT raw->>'event', count(*) FROM orders WHERE raw ? 'event' GROUP BY 1"))
    assert states.get("cancel", 0) > 0, states
    assert await db.fetchval("SELECT count(*) FROM orders WHERE raw->>'event' = 'cancel'"
                             " AND status NOT IN ('canceled', 'executed')") == 0
    assert await db.fetchval("SELECT count(*) FROM position_snapshots") > 0


async def test_daily_loss_stop_cancels_flattens_and_halts(db_url: str, db: Any, tmp_path: Path,
                                                          registry: Registry) -> None:
    # Buy at the ask: marked at the bid, the spread + fees are a loss at once. One contract at a
    # time, so the flatten (IOC sells a few cents under the bid) finds enough bids to fill.
    version = write_model_version(registry, prefer=("buy_yes_take_1", "buy_no_take_1"), promote=True)
    await until(lambda: served(version), 30)
    risk = RiskConfig(daily_loss_stop_fraction=0.000001, flatten_on_loss_stop=True, max_orders_per_s=50.0)
    cfg = config(tmp_path, markets=2, risk=risk)
    async with paper_trading(cfg, db_url=db_url, models_dir=str(registry.root), policy_app=APP) as pt:
        trader = pt.trader
        s = await until(lambda: _has(trader.stats.remote, lambda s: s.risk_mode == "halted"), 60)
        assert "daily loss" in s.risk_reason
        risk_stats = await trader.risk_stats.remote()
        assert risk_stats.usage["loss_latched"] == 1
        assert any(t.event == "loss_stop" for t in risk_stats.transitions)
        # The gate's flatten orders sold what was held; nothing rests.
        await until(lambda: _now(not exchange_positions(pt)), 20)
        assert resting(pt) == 0
        with pytest.raises(Exception, match="latched"):
            await trader.set_mode.remote("active")
        placed = (await trader.stats.remote()).orders_placed
        await asyncio.sleep(1.5)
        s = await trader.stats.remote()
        # Every later order is refused: halted for the day (the gate names the loss stop).
        assert s.orders_placed == placed and s.refusals.keys() & {"halted", "daily_loss_stop"}, s.refusals
    flatten = await db.fetchval("SELECT count(*) FROM orders WHERE raw->>'reason' = 'flatten'")
    assert flatten >= 1


async def _has(fetch: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool]) -> Any:
    value = await fetch()
    return value if ok(value) else None


async def _now(value: bool) -> bool:
    return value


async def _served_stats(ok: Callable[[Any], bool]) -> Any:
    from actors.policy_server import policy_handle

    st = await policy_handle(APP).stats.remote()
    return st if ok(st) else None
