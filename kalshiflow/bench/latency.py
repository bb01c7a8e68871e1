"""``python -m kalshiflow.bench latency``: book delta -> order acknowledged, through Serve, at 100 markets.

The live path, all of it, in one run: the simulator (this process) changes books on ``--markets``
markets at ``--rate`` deltas/s (kalshiflow.collect.testing.DeltaDriver); collector actors decode
them and publish book views (top + the best 5 levels a side) to the Trader right after each
receive burst; the Trader builds each observation (the training feature code) and starts a
decision cycle at once, asks the PolicyServer (Ray Serve, one ``act_batch`` per cycle), passes
the action through the risk gate and sends the order over REST; the exchange acknowledges it.

Latency of one order = the exchange's acknowledgement (wall clock, in the Trader) minus the
moment the collector received the frame behind the observation (``BookTop.received_ts_ns``).
The policy is a real model version whose choice is fixed (``trading.testing.CHURN``: join the
bid with one contract, cancel it next time), so every decision sends one REST call; creates are
timed. The Trader decides on book changes only (``clock_decisions = false``), at most once per
``--interval`` exchange seconds per market: each measured order answers the delta that triggered
its decision, and the book changes our own orders cause (echoes, milliseconds later) do not
trigger decisions of their own, as with the trained cadence (5 s) live.

Same-run baselines, measured on the idle system first: the REST create round trip alone (the
order's physical floor from this process), and one ``act_batch`` call to the PolicyServer.
Targets (DESIGN.md §5): p50 <= 5 ms, p99 <= 25 ms. ``stages`` splits the way: ``delivery``
(collector receive -> the Trader has the update: one Ray call, plus the wait while the previous
call to the Trader is in flight), ``decision`` (update applied -> verdict: observation and the
Serve round trip; ``policy`` is that round trip alone) and ``rest`` (the create round trip).
``book_link_frames``: view batches that reached the Trader over the book link (the rest by Ray
call). ``--publish-ms`` > 0 spaces the
collectors' calls to the Trader (``collector.publish_interval_ms``); ``--batch-ms`` is the row
batch interval, which no longer delays book updates.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import time
import uuid
from typing import Any

import msgspec
import numpy as np

from kalshiflow.bench import emit
from kalshiflow.config import (
    AppConfig,
    CollectorConfig,
    RiskConfig,
    SimulatorConfig,
    TraderConfig,
    WriteQueueConfig,
)

TARGET_P50_MS = 5.0
TARGET_P99_MS = 25.0
APP = "policy_server_bench"


def _pct(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "n": 0}
    p50, p99 = np.percentile(np.asarray(samples), [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "n": len(samples)}


async def _rest_baseline(sim: Any, ticker: str, n: int) -> dict[str, float]:
    """Create + cancel round trips from this process on a second account (idle system)."""
    from kalshiflow.collect.testing import make_keys
    from kalshiflow.market.prices import CENT, QTY_SCALE
    from kalshiflow.market.types import Action, Side
    from kalshiflow.protocol import rest_models as rm
    from kalshiflow.protocol.auth import Signer
    from kalshiflow.protocol.rest_client import KalshiRestClient

    creds, public = make_keys()
    for key_id, pem in public.items():
        sim.accounts.register(key_id, pem)
    times: list[float] = []
    async with KalshiRestClient(sim.rest_url, signer=Signer.from_credentials(creds)) as rest:
        for i in range(n):
            req = rm.OrderRequest(ticker=ticker, side=Side.YES, action=Action.BUY, count=QTY_SCALE,  # type: ignore[arg-type]
                                  price=2 * CENT, client_order_id=f"bench-{uuid.uuid4().hex[:12]}-{i}",  # type: ignore[arg-type]
                                  time_in_force="good_till_canceled")
            t0 = time.perf_counter()
            order = await rest.create_order(req)
            times.append((time.perf_counter() - t0) * 1e3)
            await rest.cancel_order(order.order_id)
    return _pct(times)


async def _serve_baseline(handle: Any, n_features: int, n_actions: int, n: int) -> dict[str, float]:
    from kalshiflow.serving.messages import ActBatch

    batch = ActBatch(obs=np.zeros((1, n_features), np.float32), mask=np.ones((1, n_actions), np.float32))
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await handle.act_batch.remote(batch)
        times.append((time.perf_counter() - t0) * 1e3)
    return _pct(times)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from actors.policy_server import deploy_policy_server, fast_policy_handle
    from actors.trader import Trader
    from kalshiflow.bench.ingest import _bench_database  # the same throwaway-database helper
    from kalshiflow.collect.run import start_collection
    from kalshiflow.collect.testing import Harness
    from kalshiflow.protocol.endpoints import Endpoints
    from kalshiflow.rl.actions import ActionTable
    from kalshiflow.rl.features import N_FEATURES
    from kalshiflow.rl.registry import Registry
    from kalshiflow.trading.paper import policy_config
    from kalshiflow.trading.spec import TraderSpec
    from kalshiflow.trading.testing import CHURN, write_model_version

    started_ray = not ray.is_initialized()
    if started_ray:
        # Ray runs its workers (every actor, the Serve replica) at nice 15 by default, below anything
        # else on the machine: on a shared box they wait for other people's jobs. --worker-niceness 0
        # measures them at the priority of this process (and of the simulator in it).
        system = {} if args.worker_niceness is None else {"worker_niceness": args.worker_niceness}
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
                 namespace=f"bench-latency-{uuid.uuid4().hex[:6]}", configure_logging=False,
                 _system_config=system)
    namespace = ray.get_runtime_context().namespace
    tmp = tempfile.mkdtemp(prefix="kalshiflow-bench-latency-")
    config = AppConfig(
        collector=CollectorConfig(markets_per_collector=math.ceil(args.markets / args.collectors),
                                  status_poll_s=0, lifecycle=False, batch_interval_ms=args.batch_ms,
                                  publish_interval_ms=args.publish_ms),
        write_queue=WriteQueueConfig(spill_dir=os.path.join(tmp, "spill")),
        trader=TraderConfig(decision_interval_s=args.interval, clock_decisions=False,
                            max_decisions_per_s=100_000.0, policy_timeout_s=5.0),
        risk=RiskConfig(max_orders_per_s=100_000.0, max_open_orders=100_000, stale_book_s=3600.0),
    )
    registry = Registry(os.path.join(tmp, "models"))
    version = write_model_version(registry, prefer=CHURN, promote=True)
    result: dict[str, Any] = {"benchmark": "latency", "markets": args.markets, "collectors": args.collectors,
                              "rate_deltas_per_s": args.rate, "seconds": args.seconds,
                              "decision_interval_s": args.interval,
                              "collector_batch_interval_ms": args.batch_ms,
                              "collector_publish_interval_ms": args.publish_ms,
                              "worker_niceness": args.worker_niceness if started_ray else "cluster's",
                              "model_version": version}
    coll = trader = None
    try:
        async with _bench_database(config) as url:
            sim_config = SimulatorConfig(generator=False, rate_limit=False)
            async with Harness(args.markets, sim_config=sim_config) as h:
                deploy_policy_server(msgspec.structs.replace(
                    policy_config(config, str(registry.root), APP), max_ongoing_requests=256))
                result["rest_create_round_trip"] = await _rest_baseline(h.sim, h.tickers[0], args.baseline_n)
                n_actions = ActionTable(tuple(config.trader.sizes)).n
                result["serve_act_batch_round_trip"] = await _serve_baseline(
                    fast_policy_handle(APP), N_FEATURES, n_actions, args.baseline_n)
                endpoints = Endpoints(environment="simulator", rest_url=h.sim.rest_url, ws_url=h.sim.ws_url)
                coll = await start_collection(config, endpoints, credentials=h.credentials, db_url=url,
                                              markets=h.tickers, supervise=False)
                spec = TraderSpec(name=f"trader-bench-{uuid.uuid4().hex[:6]}", namespace=namespace,
                                  environment="simulator", rest_url=h.sim.rest_url, exchange=config.exchange,
                                  credentials=h.credentials, trader=config.trader, risk=config.risk,
                                  markets=tuple(h.tickers), writequeue=coll.writequeue_name, policy_app=APP,
                                  collector_prefix=f"collector-{coll.session_id[:8]}-")
                trader = Trader.options(name=spec.name, namespace=namespace, num_cpus=0.25).remote(spec)  # type: ignore[attr-defined]
                assert await trader.ready.remote(60.0), "trader did not start"
                await coll.add_subscriber(trader, list(h.tickers))
                h.drive(args.rate)
                await asyncio.sleep(args.warmup)
                await trader.latency.remote(reset=True)
                d0, t0 = (await trader.stats.remote()).decisions, time.monotonic()
                await asyncio.sleep(args.seconds)
                samples = await trader.latency.remote()
                s = await trader.stats.remote()
                elapsed = time.monotonic() - t0
                await h.quiesce(0.2)
                result |= _pct(samples["ack"])
                result["stages"] = {k: _pct(samples[k]) for k in ("delivery", "decision", "policy", "rest")}
                result["decisions_per_s"] = round((s.decisions - d0) / elapsed, 1)
                result["orders_acked"] = s.orders_acked
                result["policy_errors"] = s.policy_errors
                result["holds_policy_unavailable"] = s.holds_policy_unavailable
                result["refusals"] = s.refusals
                result["depth_unavailable"] = s.depth_unavailable
                result["book_link_frames"] = s.book_link_frames
                await trader.shutdown.remote(20.0)
                await coll.stop()
    finally:
        if trader is not None:
            ray.kill(trader, no_restart=True)
        from ray import serve

        serve.delete(APP)
        if started_ray:
            ray.shutdown()
    rest = result["rest_create_round_trip"]["p50_ms"]
    result["ratio_p50_to_rest"] = round(result["p50_ms"] / rest, 2) if rest else None
    result["targets"] = {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS}
    result["meets_targets"] = bool(result["p50_ms"] <= TARGET_P50_MS and result["p99_ms"] <= TARGET_P99_MS)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kalshiflow.bench latency",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--markets", type=int, default=100)
    parser.add_argument("--collectors", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="book deltas per second, all markets (Kalshi: ~1.2/s per busy book)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="decision_interval_s: at most one decision per market per interval")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--batch-ms", type=int, default=CollectorConfig().batch_interval_ms,
                        help="collector row batch interval (default: the config default)")
    parser.add_argument("--publish-ms", type=int, default=CollectorConfig().publish_interval_ms,
                        help="collector publish interval to the Trader (default: the config default, 0)")
    parser.add_argument("--worker-niceness", type=int, default=None,
                        help="nice value of Ray's workers when the benchmark starts Ray (default: Ray's, 15)")
    parser.add_argument("--baseline-n", type=int, default=200, help="round trips per baseline")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    summary = (f"delta -> ack p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms "
               f"({result['n']} orders, {result['decisions_per_s']:.0f} decisions/s, "
               f"{args.markets} markets); "
               f"REST create alone p50 {result['rest_create_round_trip']['p50_ms']:.2f} ms; "
               f"targets p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms")
    emit(msgspec.to_builtins(result), args.json, summary)
    return 0
