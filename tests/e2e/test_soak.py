"""Compressed soak: simulated hours of paper trading in a short wall budget, nothing crashes.

The simulator runs at ``speed`` x wall time (default 60: 2 minutes of wall = 2 simulated
hours), so markets open, trade, close, settle and get relisted (the paper trader picks new ones
up) many times over. Checked: no actor restarted or died, the Trader kept deciding in every
third of the run, no failed policy answer, every decision row stored. Memory (RSS of every
actor, via Ray's state API + psutil) is printed at start and end as one JSON line each.

    KALSHIFLOW_SOAK_S=600 pytest tests/e2e/test_soak.py -s     # the ~10-minute version
    KALSHIFLOW_SOAK_SPEED=120                                  # more simulated time per second
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
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
from kalshiflow.trading.paper import paper_trading
from kalshiflow.trading.testing import CHURN, write_model_version
from tests.e2e.test_paper_trading import ray_cluster  # noqa: F401 - the session's one Ray

APP = "policy_server_soak"
SOAK_S = float(os.environ.get("KALSHIFLOW_SOAK_S", "120"))
SPEED = float(os.environ.get("KALSHIFLOW_SOAK_SPEED", "60"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve_app(ray_cluster: None) -> Iterator[str]:  # noqa: F811 - the fixture imported above
    """This module's PolicyServer app, deleted when the module is done."""
    yield APP
    from ray import serve

    serve.delete(APP)


def actor_memory() -> dict[str, Any]:
    """RSS (MiB), pid and restarts of every live actor of this cluster, by name (or class).

    Ray's actor table comes from its state API (which needs the dashboard) or, when this cluster
    runs without one, straight from the GCS table the state API itself reads."""
    try:
        from ray.util.state import list_actors

        rows = [{"Name": a.name, "ActorClassName": a.class_name, "ActorID": a.actor_id, "Pid": a.pid,
                 "NumRestarts": a.num_restarts}
                for a in list_actors(address=ray.get_runtime_context().gcs_address,
                                     filters=[("state", "=", "ALIVE")], detail=True, limit=1000)]
    except Exception:  # noqa: BLE001 - no dashboard: the GCS actor table
        import ray._private.state as gcs

        rows = [a for a in gcs.actors().values() if a["State"] == "ALIVE"]
    out: dict[str, Any] = {}
    for a in rows:
        try:
            rss = psutil.Process(a["Pid"]).memory_info().rss / 2**20
        except (psutil.Error, TypeError, ValueError):
            continue
        key = a["Name"] or f"{a['ActorClassName']}:{str(a['ActorID'])[:8]}"
        out[key] = {"class": a["ActorClassName"], "rss_mib": round(rss, 1), "pid": a["Pid"],
                    "restarts": int(a["NumRestarts"] or 0)}
    out["_driver"] = {"class": "pytest", "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
                      "restarts": 0, "pid": os.getpid()}
    return out


@pytest.mark.usefixtures("serve_app")
async def test_soak_simulated_hours_without_a_crash(db_url: str, db: Any, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    write_model_version(registry, {"decision_interval_s": 30.0}, prefer=CHURN, promote=True)
    cfg = AppConfig(
        simulator=SimulatorConfig(markets=12, speed=SPEED, seed=5),
        collector=CollectorConfig(discover_top_n=8, markets_per_collector=4, status_poll_s=2.0),
        write_queue=WriteQueueConfig(spill_dir=str(tmp_path / "spill")),
        trader=TraderConfig(decision_interval_s=30.0, market_refresh_s=5.0, snapshot_interval_s=10.0),
        risk=RiskConfig(max_orders_per_s=20.0),
    )
    async with paper_trading(cfg, db_url=db_url, models_dir=str(registry.root), policy_app=APP) as pt:
        t0, sim_t0 = time.monotonic(), pt.simulator.state.clock()
        await asyncio.sleep(5)
        start = actor_memory()
        print("SOAK memory start", json.dumps(start, sort_keys=True))
        thirds: list[int] = []
        markets_seen: set[str] = set(pt.tickers)
        for _ in range(3):
            before = (await pt.trader.stats.remote()).decisions
            await asyncio.sleep(max(1.0, (SOAK_S - 5) / 3))
            s = await pt.trader.stats.remote()
            thirds.append(s.decisions - before)
            markets_seen |= set(pt.tickers)
        end = actor_memory()
        print("SOAK memory end", json.dumps(end, sort_keys=True))
        simulated_h = (pt.simulator.state.clock() - sim_t0) / 3600
        state = await pt.trader.trader_state.remote()
        print("SOAK summary", json.dumps({
            "wall_s": round(time.monotonic() - t0, 1), "simulated_hours": round(simulated_h, 2),
            "decisions_per_third": thirds, "markets_traded": len(markets_seen), "stats": {
                k: getattr(s, k) for k in (
                    "decisions", "orders_placed", "orders_acked", "orders_cancelled", "orders_rejected",
                    "order_errors", "fills", "policy_errors", "holds_policy_unavailable", "risk_mode")},
            "verdicts": s.verdicts, "refusals": s.refusals, "ack_latency_ms": s.ack_latency_ms,
            "decision_latency_ms": s.decision_latency_ms, "portfolio_value": state.portfolio_value}))
        assert simulated_h >= 0.8 * SOAK_S * SPEED / 3600 * 0.9
        assert all(n > 0 for n in thirds), thirds
        assert s.policy_errors == 0 and s.holds_policy_unavailable == 0 and s.last_error is None, s
        assert s.orders_acked > 0 and s.risk_mode == "active"
        assert s.public_trades_seen > 0  # the trade features are fed live, as in training
        assert len(markets_seen) > 8, "closed markets were replaced by newly listed ones"
        for name, info in end.items():
            assert info["restarts"] == 0, (name, info)
            if name in start:  # same process all along (no crash-and-replace behind our back)
                assert info["pid"] == start[name]["pid"], name
        # Memory: reported above; a leak of the trader's per-decision state would show as growth
        # proportional to decisions. Bound it loosely (2 cores, noisy allocators).
        trader = pt.trader_name
        assert end[trader]["rss_mib"] < 1.5 * start[trader]["rss_mib"] + 150, (start[trader], end[trader])
    rows = await db.fetchval("SELECT count(*) FROM trader_decisions")
    assert rows == pt.summary["trader"]["decisions"] >= s.decisions
