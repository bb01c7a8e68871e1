"""``python -m kalshiflow.bench ingest``: recording throughput, end to end and WriteQueue alone.

(a) End to end. The simulator (in this process) floods random book changes over ``--markets``
    markets, driving its ExchangeState directly as fast as its WS outboxes drain (below
    ``--backlog`` queued frames). ``--collectors`` collector actors record them through the
    WriteQueue into PostgreSQL. The clock runs from the first flooded delta until the last row is
    acknowledged as durable, so buffering cannot flatter the figure:
    ``deltas_per_s = stored / elapsed``. ``sent`` counts the BookDelta events the exchange published
    (each goes to exactly one collector), ``stored`` the rows in ``book_deltas``; ``lost`` =
    sent - stored must be 0.
    Its limit, measured first in the same run: the same simulator and flood feeding the same number
    of clients that use the collectors' WS client but only count and drop each frame:
    ``feed_limit_per_s``. ``ratio = deltas_per_s / feed_limit_per_s``.
CPU per delta, per process (``cpu_us_per_delta``): CPU seconds (user + system, from psutil)
    that each process spent during a phase, divided by the deltas of that phase, for the bench
    process (the simulator and its flood), each collector / feed sink actor, the WriteQueue actor,
    the PostgreSQL backends of the bench database, the server's shared background processes
    (WAL writer, checkpointer, ...) and Ray's own daemons (raylet, GCS). Unlike the rates, these
    figures hardly move with the load of other jobs, so they say where the time goes.
(b) The WriteQueue alone: :func:`kalshiflow.ingest.throughput.measure_writequeue` (Ray calls into
    a WriteQueue vs a raw COPY of the same rows): ``writequeue_rows_per_s``, ``copy_rows_per_s``,
    ``writequeue_ratio``.

Runs against a throwaway database (created on ``DATABASE_URL``'s server, or the embedded one, and
dropped afterwards). Targets (DESIGN.md §5, 2 cores): >= 50k deltas/s, ratio >= 0.5,
writequeue_ratio >= 0.5, lost = 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import psutil

from kalshiflow.bench import emit
from kalshiflow.config import AppConfig, CollectorConfig, SimulatorConfig, WriteQueueConfig

TARGET_DELTAS_PER_S = 50_000
TARGET_RATIO = 0.5
_CPU_SAMPLE_S = 1.0  # how often the meter re-reads CPU times (a process may exit between reads)


class _CpuMeter:
    """CPU seconds per labelled process over one phase.

    ``discover()`` returns ``{label: [pid, ...]}`` and is re-run at every sample, so processes that
    start during the phase (a new PostgreSQL backend) are counted from their birth and processes
    that exit keep their last reading.
    """

    def __init__(self, discover: Callable[[], Awaitable[dict[str, list[int]]]]) -> None:
        self._discover = discover
        self._procs: dict[int, tuple[str, psutil.Process]] = {}
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._start_wall = 0.0
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _cpu(proc: psutil.Process) -> float | None:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        return float(t.user + t.system)

    async def _refresh(self, first: bool) -> None:
        try:
            found = await self._discover()
        except Exception:  # a failed look-up costs one sample, not the benchmark
            found = {}
        for label, pids in found.items():
            for pid in pids:
                if pid in self._procs:
                    continue
                try:
                    proc = psutil.Process(pid)
                    born = proc.create_time()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                cpu = self._cpu(proc)
                if cpu is None:
                    continue
                self._procs[pid] = (label, proc)
                # Started during the phase: all of its CPU belongs to the phase.
                self._base[pid] = 0.0 if (not first and born >= self._start_wall) else cpu
                self._last[pid] = cpu
        for pid, (_, proc) in self._procs.items():
            cpu = self._cpu(proc)
            if cpu is not None:
                self._last[pid] = cpu

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(_CPU_SAMPLE_S)
            await self._refresh(False)

    async def start(self) -> None:
        self._start_wall = time.time()
        await self._refresh(True)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        """CPU seconds per label since :meth:`start`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._refresh(False)
        out: dict[str, float] = {}
        for pid, (label, _) in self._procs.items():
            out[label] = out.get(label, 0.0) + max(0.0, self._last[pid] - self._base[pid])
        return out


def _per_delta(cpu: dict[str, float], deltas: int) -> dict[str, Any]:
    """CPU seconds per label -> microseconds per delta (and the total)."""
    if deltas <= 0:
        return {}
    us = {label: round(1e6 * s / deltas, 2) for label, s in sorted(cpu.items())}
    us["total"] = round(sum(1e6 * s / deltas for s in cpu.values()), 2)
    return us


def _ray_daemons() -> list[int]:
    """PIDs of this driver's raylet and GCS server (when it started them)."""
    node = getattr(__import__("ray")._private.worker, "_global_node", None)
    pids: list[int] = []
    for kind in ("raylet", "gcs_server"):
        for info in (getattr(node, "all_processes", None) or {}).get(kind, []):
            proc = getattr(info, "process", None)
            if proc is not None and proc.pid:
                pids.append(int(proc.pid))
    return pids


async def _actor_pid(handle: Any) -> int:
    return int(await handle.__ray_call__.remote(lambda _self: os.getpid()))


def _postgres_discover(db: Any, database: str) -> Callable[[], Awaitable[dict[str, list[int]]]]:
    """PostgreSQL's processes on the bench database's server: the bench database's backends, and
    the server's background processes (shared with other databases, if any)."""

    async def discover() -> dict[str, list[int]]:
        # (Not the probe's own backend: its queries are the meter's cost, not the pipeline's.)
        rows = await db.fetch(
            "SELECT pid, datname, backend_type FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
        own = [r["pid"] for r in rows if r["datname"] == database and r["pid"]]
        aux = [r["pid"] for r in rows if r["datname"] is None and r["backend_type"] != "client backend"
               and r["pid"]]
        return {"postgres_backends": own, "postgres_background": aux}

    return discover


@contextlib.asynccontextmanager
async def _bench_database(config: AppConfig) -> AsyncIterator[str]:
    """A fresh, migrated database on the configured server; dropped on exit."""
    from kalshiflow.storage import open_database
    from kalshiflow.storage.embedded import with_database

    async with open_database(config.storage, migrate_schema=False) as admin:
        name = f"kalshiflow_bench_{uuid.uuid4().hex[:10]}"
        url = with_database(admin.url.reveal(), name)
        async with open_database(config.storage, url=url):  # creates and migrates it
            pass
        try:
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _flood(h: Any, seconds: float, backlog: int, warmup: float = 0.0) -> tuple[float, float]:
    """Flood for ``warmup + seconds``; returns the monotonic (start, end) of the measured part."""
    assert h.driver is not None
    task = asyncio.get_running_loop().create_task(h.driver.run(None, sim=h.sim, max_backlog=backlog))
    await asyncio.sleep(warmup)
    start = time.monotonic()
    await asyncio.sleep(seconds)
    end = time.monotonic()
    h.driver.stop()
    await task
    h.driver._stop.clear()  # reusable for the next phase
    return start, end


async def _feed_limit(
    h: Any, shards: list[list[str]], seconds: float, backlog: int, exchange: Any
) -> dict[str, Any]:
    from actors.feed_sink import FeedSink

    sinks = [
        FeedSink.options(num_cpus=0.25).remote(h.sim.ws_url, h.credentials, shard, exchange)  # type: ignore[attr-defined]
        for shard in shards
    ]
    await asyncio.gather(*(s.ready.remote(30.0) for s in sinks))
    pids = {f"feed_sink_{i}": await _actor_pid(s) for i, s in enumerate(sinks)}

    async def discover() -> dict[str, list[int]]:
        return {"simulator": [os.getpid()], "ray_daemons": _ray_daemons()} | {k: [p] for k, p in pids.items()}

    meter = _CpuMeter(discover)
    task = asyncio.get_running_loop().create_task(_flood(h, seconds, backlog, warmup=1.0))
    await asyncio.sleep(1.0)
    first = await asyncio.gather(*(s.count.remote() for s in sinks))
    await meter.start()
    await asyncio.sleep(seconds)
    cpu = await meter.stop()
    last = await asyncio.gather(*(s.count.remote() for s in sinks))
    await task
    await asyncio.gather(*(s.stop.remote() for s in sinks))
    received = sum(n1 - n0 for (n0, _), (n1, _) in zip(first, last, strict=True))
    span = max(t1 - t0 for (_, t0), (_, t1) in zip(first, last, strict=True))
    return {"feed_limit_per_s": received / span, "feed_deltas": received, "feed_seconds": round(span, 3),
            "feed_cpu_us_per_delta": _per_delta(cpu, received)}


async def _end_to_end(h: Any, config: AppConfig, url: str, seconds: float, backlog: int) -> dict[str, Any]:
    from kalshiflow.collect.run import start_collection
    from kalshiflow.exchange.events import BookDelta
    from kalshiflow.protocol.endpoints import Endpoints

    endpoints = Endpoints(environment="simulator", rest_url=h.sim.rest_url, ws_url=h.sim.ws_url)
    coll = await start_collection(config, endpoints, credentials=h.credentials, db_url=url, markets=h.tickers,
                                  supervise=False)
    sent = [0]

    def count(event: object) -> None:
        if type(event) is BookDelta:
            sent[0] += 1

    from kalshiflow.storage import open_database

    pids = {f"collector_{i}": await _actor_pid(c) for i, c in enumerate(coll.collectors.values())}
    pids["writequeue"] = await _actor_pid(coll.writequeue)
    probes = contextlib.AsyncExitStack()
    probe = await probes.enter_async_context(open_database(config.storage, url=url, migrate_schema=False))
    postgres = _postgres_discover(probe, str(await probe.fetchval("SELECT current_database()")))

    async def discover() -> dict[str, list[int]]:
        found = {"simulator": [os.getpid()], "ray_daemons": _ray_daemons()}
        found |= {k: [p] for k, p in pids.items()}
        return found | await postgres()

    meter = _CpuMeter(discover)
    remove = h.sim.state.add_listener(count)
    try:
        await meter.start()
        start = time.monotonic()
        await _flood(h, seconds, backlog)
        flooded = time.monotonic()
        while h.sim.hub.queued_frames():  # the exchange has handed every frame to its socket
            await asyncio.sleep(0.01)
        # ... and the collectors have read them (frames still in socket buffers would be lost when
        # the collectors stop, and a collector that lags by a second or more is no rarity on a
        # loaded machine): wait until they have counted every delta sent, then flush.
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:
            received = await asyncio.gather(*(c.received.remote() for c in coll.collectors.values()))
            if sum(received) >= sent[0]:
                break
            await asyncio.sleep(0.05)
        acked = await asyncio.gather(*(c.flush.remote(300.0) for c in coll.collectors.values()))
        end = time.monotonic()
        cpu = await meter.stop()
    finally:
        remove()
        await probes.aclose()
    stats = await coll.stats()
    summary = await coll.stop()
    async with open_database(config.storage, url=url, migrate_schema=False) as db:
        stored = int(await db.fetchval("SELECT count(*) FROM book_deltas WHERE session_id = $1",
                                       uuid.UUID(coll.session_id)))
    elapsed = end - start
    return {
        "deltas_per_s": stored / elapsed,
        "sent": sent[0],
        "stored": stored,
        "lost": sent[0] - stored,
        "e2e_seconds": round(elapsed, 3),
        "drain_seconds": round(end - flooded, 3),
        "all_acknowledged": all(acked),
        "gaps": summary.gaps,
        "reconnects": summary.reconnects,
        "lag_ms_mean": [None if s.lag_ms_mean is None else round(s.lag_ms_mean, 2) for s in stats],
        "collector_deltas": [s.deltas for s in stats],
        "cpu_us_per_delta": _per_delta(cpu, stored),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from kalshiflow.collect.testing import Harness
    from kalshiflow.ingest.throughput import measure_writequeue

    started_ray = False
    if not ray.is_initialized():
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
                 namespace=f"bench-ingest-{uuid.uuid4().hex[:6]}", configure_logging=False)
        started_ray = True
    per = math.ceil(args.markets / args.collectors)
    spill = tempfile.mkdtemp(prefix="kalshiflow-bench-spill-")
    config = AppConfig(
        collector=CollectorConfig(markets_per_collector=per, status_poll_s=0, lifecycle=False,
                                  max_unacked_rows=args.max_unacked_rows),
        write_queue=WriteQueueConfig(spill_dir=spill),
    )
    sim_config = SimulatorConfig(generator=False, rate_limit=False,
                                 ws_queue_frames=max(10 * args.backlog, 100_000))
    result: dict[str, Any] = {"benchmark": "ingest", "markets": args.markets, "collectors": args.collectors,
                              "seconds": args.seconds}
    try:
        async with _bench_database(config) as url:
            async with Harness(args.markets, sim_config=sim_config) as h:
                shards = [h.tickers[i::args.collectors] for i in range(args.collectors)]
                result |= await _feed_limit(h, shards, args.seconds, args.backlog, config.exchange)
                result |= await _end_to_end(h, config, url, args.seconds, args.backlog)
            feed = result["feed_limit_per_s"]
            result["ratio"] = result["deltas_per_s"] / feed if feed else 0.0
            if not args.skip_writequeue:
                wq = await measure_writequeue(config, url=url, rows=args.wq_rows, repeats=args.wq_repeats)
                result |= {k: wq[k] for k in ("writequeue_rows_per_s", "copy_rows_per_s", "writequeue_ratio")}
                result["writequeue_rows_lost"] = wq.get("rows_lost")
    finally:
        if started_ray:
            ray.shutdown()
    for key in ("deltas_per_s", "feed_limit_per_s", "ratio"):
        result[key] = round(result[key], 4 if key == "ratio" else 1)
    result["targets"] = {
        "deltas_per_s": TARGET_DELTAS_PER_S, "ratio": TARGET_RATIO, "writequeue_ratio": 0.5, "lost": 0,
    }
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kalshiflow.bench ingest",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=20.0, help="flood time of each phase (default 20)")
    parser.add_argument("--markets", type=int, default=40)
    parser.add_argument("--collectors", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=4_000, help="queued frames the flood keeps at most")
    parser.add_argument("--max-unacked-rows", type=int, default=200_000, help="collector backpressure")
    parser.add_argument("--wq-rows", type=int, default=200_000, help="rows for the WriteQueue alone")
    parser.add_argument("--wq-repeats", type=int, default=2)
    parser.add_argument("--skip-writequeue", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    summary = (
        f"end to end {result['deltas_per_s']:,.0f} deltas/s vs feed limit "
        f"{result['feed_limit_per_s']:,.0f}/s (ratio {result['ratio']:.2f}); sent {result['sent']:,} "
        f"stored {result['stored']:,} lost {result['lost']}"
    )
    if "writequeue_ratio" in result:
        summary += (f"; WriteQueue {result['writequeue_rows_per_s']:,.0f} rows/s vs COPY "
                    f"{result['copy_rows_per_s']:,.0f} (ratio {result['writequeue_ratio']:.2f})")
    emit(msgspec.to_builtins(result), args.json, summary)
    return 0 if result["lost"] == 0 else 1
