"""Start, steer and stop a collection: session row, WriteQueue, collector actors, supervision.

``launch`` (and the tests and the ingest benchmark) call::

    collection = await start_collection(config, endpoints, credentials=creds, db_url=url)
    await collection.add_markets(["KX..."])     # runtime changes, sharded over collectors
    await collection.drop_markets(["KX..."])
    stats = await collection.stats()
    summary = await collection.stop()           # flush everything, close the session row

What it sets up:

- a ``collection_sessions`` row (status active; kalshiflow.storage.sessions), closed on stop with
  the counts of what was stored, and ``markets`` rows (the loader reads each market's grid there);
- a WriteQueue actor (unless the caller names one it already runs) and one Collector actor per
  shard of ``markets_per_collector`` markets, all NAMED (``<role>-<session prefix>-<i>``) with
  ``max_restarts=-1`` and ``max_task_retries=0`` (reference-systems.md §4.5: 0 or -1 only;
  collectors resend unacknowledged batches themselves, which idempotent writes make safe);
- a supervisor task that re-applies runtime market changes to a collector that restarted
  (its constructor only knows its original markets) and forgets markets a collector dropped on
  its own (settled / closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import ray

from kalshiflow.collect import rows as R
from kalshiflow.collect import selection
from kalshiflow.collect.messages import CollectorSpec, CollectorStats
from kalshiflow.collect.selection import MarketSpec
from kalshiflow.config import AppConfig
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.endpoints import Endpoints
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.secrets import Credentials, Secret
from kalshiflow.storage import open_database
from kalshiflow.storage.sessions import SessionSummary, close_session, start_session

__all__ = ["Collection", "CollectionSummary", "epoch_bits", "start_collection"]

log = logging.getLogger("kalshiflow.collect")

SUPERVISE_INTERVAL_S = 2.0


class CollectionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What ``stop`` returns. ``session`` holds the counts as stored (computed from the tables)."""

    session_id: str
    markets: tuple[str, ...]
    session: SessionSummary
    snapshots: int  # ... and as the collectors counted them (this incarnation of each)
    deltas: int
    gaps: int
    trades: int
    reconnects: int
    unacked_rows: int  # rows collectors still held at stop (0 unless the WriteQueue was down)
    collectors: tuple[CollectorStats, ...]
    write_queue: Any  # WriteQueueStats (or None when the queue belongs to the caller)


async def epoch_bits(db: Any) -> int:
    """Width of the recorded ``epoch`` columns (32 for INTEGER, 64 for BIGINT): see collect/epochs.py."""
    kind = await db.fetchval(
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_name = 'book_deltas' AND column_name = 'epoch'"
    )
    return 64 if kind == "bigint" else 32


async def _write_markets(db: Any, markets: Mapping[str, rm.Market]) -> None:
    """Upsert the ``markets`` rows (the replay loader takes each market's price grid from them)."""
    if not markets:
        return
    now = time.time_ns()
    update = [c for c in R.MARKET_COLUMNS if c not in ("ticker", "first_seen_at")]
    await db.copy_insert("markets", [R.market_row(m, now) for m in markets.values()], update=update)


class Collection:
    """A running collection (returned by :func:`start_collection`)."""

    def __init__(
        self, config: AppConfig, session_id: str, started: datetime, endpoints: Endpoints,
        credentials: Credentials | None, db_url: str | Secret | None, writequeue: str, wq_handle: Any,
        own_writequeue: bool, namespace: str, epoch_width: int,
    ) -> None:
        self.config = config
        self.session_id = session_id
        self.started = started
        self.endpoints = endpoints
        self._credentials = credentials
        self._db_url = db_url
        self.writequeue_name = writequeue
        self.writequeue = wq_handle
        self._own_wq = own_writequeue
        self.namespace = namespace
        self._epoch_bits = epoch_width
        self._prefix = session_id[:8]
        self.collectors: dict[str, Any] = {}  # collector id -> actor handle
        self.assignment: dict[str, dict[str, MarketSpec]] = {}  # collector id -> desired markets
        self.subscribers: dict[Any, tuple[str, ...] | None] = {}  # book subscriber -> its markets
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopped = False

    # ------------------------------------------------------------------ actors

    def _spec(self, index: int, cid: str, markets: Sequence[MarketSpec]) -> CollectorSpec:
        return CollectorSpec(
            collector_id=cid, shard_index=index, session_id=self.session_id,
            session_start_ns=int(self.started.timestamp() * 1e9), ws_url=self.endpoints.ws_url,
            rest_url=self.endpoints.rest_url, markets=tuple(markets), collector=self.config.collector,
            exchange=self.config.exchange, credentials=self._credentials, writequeue=self.writequeue_name,
            namespace=self.namespace, epoch_bits=self._epoch_bits,
        )

    def _spawn(self, markets: Sequence[MarketSpec]) -> str:
        from actors.collector import Collector

        index = len(self.collectors)
        cid = f"collector-{self._prefix}-{index}"
        handle = Collector.options(  # type: ignore[attr-defined]  # ray.remote class
            name=cid, namespace=self.namespace, num_cpus=self.config.collector.actor_num_cpus,
            max_restarts=-1, max_task_retries=0,
        ).remote(self._spec(index, cid, markets))
        self.collectors[cid] = handle
        self.assignment[cid] = {m.ticker: m for m in markets}
        return cid

    @property
    def markets(self) -> tuple[str, ...]:
        return tuple(t for specs in self.assignment.values() for t in specs)

    async def wait_ready(self, timeout: float = 30.0) -> bool:
        results = await asyncio.gather(*(h.ready.remote(timeout) for h in self.collectors.values()))
        return all(results)

    # ------------------------------------------------------------------ runtime changes

    async def add_markets(self, markets: Sequence[str | MarketSpec]) -> dict[str, list[str]]:
        """Collect more markets: fill collectors with room, start new ones for the rest."""
        async with self._lock:
            known = set(self.markets)
            tickers = [m for m in markets if isinstance(m, str) and m not in known]
            specs = [m for m in markets if isinstance(m, MarketSpec) and m.ticker not in known]
            if tickers:
                async with self._rest() as rest:
                    found = await selection.fetch_markets(rest, tickers)
                specs += selection.specs_for(tickers, found)
                async with self._database() as db:
                    await _write_markets(db, found)
            loads = {cid: len(m) for cid, m in self.assignment.items()}
            placed, new_shards = selection.assign(specs, loads, self.config.collector.markets_per_collector)
            out: dict[str, list[str]] = {}
            for cid, chosen in placed.items():
                self.assignment[cid].update((m.ticker, m) for m in chosen)
                out[cid] = await self.collectors[cid].add_markets.remote(chosen)
            for chosen in new_shards:
                cid = self._spawn(chosen)
                out[cid] = [m.ticker for m in chosen]
                for subscriber, subscribed in self.subscribers.items():
                    await self.collectors[cid].add_subscriber.remote(subscriber, subscribed)
            return out

    async def drop_markets(self, tickers: Sequence[str]) -> list[str]:
        async with self._lock:
            dropped: list[str] = []
            for cid, specs in self.assignment.items():
                mine = [t for t in tickers if t in specs]
                if not mine:
                    continue
                for t in mine:
                    del specs[t]
                await self.collectors[cid].drop_markets.remote(mine)
                dropped += mine
            return dropped

    async def add_subscriber(self, handle: Any, tickers: Sequence[str] | None = None) -> None:
        """``handle.on_books(list[BookTop])`` from every collector, for these markets (None = all).
        Kept across collector restarts and for collectors started later (the supervisor re-adds)."""
        async with self._lock:
            self.subscribers[handle] = None if tickers is None else tuple(tickers)
            await asyncio.gather(*(c.add_subscriber.remote(handle, self.subscribers[handle])
                                   for c in self.collectors.values()))

    async def remove_subscriber(self, handle: Any) -> None:
        async with self._lock:
            self.subscribers.pop(handle, None)
            await asyncio.gather(*(c.remove_subscriber.remote(handle) for c in self.collectors.values()))

    @contextlib.asynccontextmanager
    async def _database(self) -> AsyncIterator[Any]:
        async with open_database(self.config.storage, url=self._db_url, migrate_schema=False) as db:
            yield db

    @contextlib.asynccontextmanager
    async def _rest(self) -> Any:
        signer = Signer.from_credentials(self._credentials) if self._credentials else None
        client = KalshiRestClient(self.endpoints.rest_url, signer=signer, config=self.config.exchange)
        try:
            yield client
        finally:
            await client.close()

    # ------------------------------------------------------------------ supervision

    def start_supervisor(self, interval_s: float = SUPERVISE_INTERVAL_S) -> None:
        loop = asyncio.get_running_loop()
        self._supervisor = loop.create_task(self._supervise(interval_s), name="collection-supervisor")

    async def _supervise(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reconcile()
            except Exception as err:  # a collector restarting mid-call: try again next round
                log.debug("collection supervisor: %s", err)

    async def reconcile(self) -> None:
        """Make each collector's markets and subscribers match the desired ones (after restarts, closes)."""
        async with self._lock:
            for cid, handle in self.collectors.items():
                desired = self.assignment[cid]
                closed = await handle.closed_markets.remote()
                for ticker in closed:
                    desired.pop(ticker, None)
                have = set(await handle.markets.remote())
                missing = [spec for t, spec in desired.items() if t not in have and t not in closed]
                extra = [t for t in have if t not in desired]
                if missing:
                    log.info("collection: re-adding %d markets to %s", len(missing), cid)
                    await handle.add_markets.remote(missing)
                if extra:
                    await handle.drop_markets.remote(extra)
                for subscriber, tickers in self.subscribers.items():  # no-op unless it restarted
                    await handle.add_subscriber.remote(subscriber, tickers)

    # ------------------------------------------------------------------ stats and stop

    async def stats(self) -> list[CollectorStats]:
        return list(await asyncio.gather(*(h.stats.remote() for h in self.collectors.values())))

    async def stop(
        self, timeout: float = 60.0, *, status: str = "closed", error: str | None = None
    ) -> CollectionSummary:
        """Stop collectors (every row acknowledged), flush the WriteQueue, close the session row."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        async with self._lock:
            results = await asyncio.gather(*(h.stop.remote(timeout) for h in self.collectors.values()),
                                           return_exceptions=True)
            finals: list[CollectorStats] = []
            for cid, result in zip(self.collectors, results, strict=True):
                if isinstance(result, BaseException):  # dead for good: its unacknowledged rows are gone
                    log.error("collection %s: collector %s did not stop cleanly: %s", self.session_id, cid,
                              result)
                else:
                    finals.append(result)
            wq_stats = None
            if self._own_wq:
                wq = self.writequeue
                wq_stats = await wq.close.remote(timeout=timeout)
                ray.kill(wq, no_restart=True)
            for handle in self.collectors.values():
                ray.kill(handle, no_restart=True)
            self._stopped = True
        keys = ("snapshots", "deltas", "gaps", "trades", "reconnects")
        total = {k: sum(getattr(s, k) for s in finals) for k in keys}
        async with self._database() as db:
            closing = None if status == "closed" else status  # None: closed, or empty if nothing stored
            session = await close_session(db, self.session_id, closing, error=error)
        return CollectionSummary(
            session_id=self.session_id, markets=self.markets, session=session,
            unacked_rows=sum(s.unacked_rows for s in finals), collectors=tuple(finals), write_queue=wq_stats,
            **total,
        )


async def start_collection(
    config: AppConfig,
    endpoints: Endpoints,
    *,
    credentials: Credentials | None = None,
    db_url: str | Secret | None = None,
    markets: Sequence[str | MarketSpec] | None = None,
    writequeue: str | None = None,
    session_id: str | None = None,
    supervise: bool = True,
    ready_timeout_s: float | None = 30.0,
) -> Collection:
    """Choose markets, open the session, start the WriteQueue and the collectors.

    ``markets``: explicit tickers/specs; default ``config.collector.tickers``, or discovery of the
    top ``discover_top_n`` open markets when that is empty. ``writequeue``: the name of a running
    WriteQueue actor to use (default: start one, owned and closed by this collection). Ray must be
    initialised. ``ready_timeout_s``: wait until every collector is connected and subscribed.
    """
    if not ray.is_initialized():
        raise RuntimeError("start_collection needs Ray: call ray.init() (or join a cluster) first")
    cfg = config.collector
    session_id = session_id or str(uuid.uuid4())
    started = datetime.now(UTC)
    namespace = ray.get_runtime_context().namespace
    signer = Signer.from_credentials(credentials) if credentials else None
    rest = KalshiRestClient(endpoints.rest_url, signer=signer, config=config.exchange,
                            environment=endpoints.environment)
    try:
        chosen = list(markets) if markets is not None else list(cfg.tickers)
        named = [m for m in chosen if isinstance(m, str)]
        if chosen:
            found = await selection.fetch_markets(rest, named)
            specs = [m for m in chosen if isinstance(m, MarketSpec)] + selection.specs_for(named, found)
        else:
            discovered = await selection.discover(rest, cfg.discover_top_n)
            found = {m.ticker: m for m in discovered}
            specs = [MarketSpec.from_market(m) for m in discovered]
    finally:
        await rest.close()
    async with open_database(config.storage, url=db_url) as db:
        width = await epoch_bits(db)
        await start_session(db, endpoints.environment, [m.ticker for m in specs], config,
                            exchange_url=endpoints.ws_url, session_id=session_id, started_at=started)
        await _write_markets(db, found)
    own = writequeue is None
    wq_name = writequeue or f"write-queue-{session_id[:8]}"
    if own:
        from actors.write_queue import start_write_queue

        wq = start_write_queue(config, name=wq_name, url=db_url, namespace=namespace)
    else:
        wq = ray.get_actor(wq_name, namespace=namespace)
    collection = Collection(
        config, session_id, started, endpoints, credentials, db_url, wq_name, wq, own, namespace, width
    )
    for shard in selection.shard(specs, cfg.markets_per_collector):
        collection._spawn(shard)
    log.info("collection %s: %d markets over %d collectors (epoch ids %d-bit)", session_id, len(specs),
             len(collection.collectors), width)
    if ready_timeout_s is not None and collection.collectors:
        if not await collection.wait_ready(ready_timeout_s):
            log.warning("collection %s: not every collector connected within %.0fs", session_id,
                        ready_timeout_s)
    if supervise:
        collection.start_supervisor()
    return collection
