"""The WriteQueue-alone measurement: Ray calls into the WriteQueue vs a raw COPY of the same rows.

``measure_writequeue`` builds book_deltas rows shaped like the collector's (Kalshi-like prices,
sides and tickers), then, in the same run and the same database:

1. ``copy``: writes them with a plain binary COPY straight into ``book_deltas`` (asyncpg
   ``copy_records_to_table`` on one connection, in batches of the larger of ``batch_rows`` and
   the WriteQueue's ``flush_rows``). This is the physical limit of
   getting these rows into this table: no staging, no conflict check, no Ray, no idempotency.
2. ``writequeue``: a fresh WriteQueue actor, fed the same rows (another session id, so the keys
   differ) as ready batches, one Ray call per batch, with ``in_flight`` calls outstanding like
   collectors that keep their unacknowledged batches. Timed until the last ack, i.e. until
   every row is durable.

The two runs alternate ``repeats`` times (copy first, then writequeue, each on fresh keys), and the
best rate of each is reported, so a noisy neighbour does not decide the ratio. Rows are deleted
afterwards. ``writequeue_ratio = writequeue_rows_per_s / copy_rows_per_s``; the target is >= 0.5.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from typing import Any

import msgspec
import ray

from kalshiflow.config import AppConfig
from kalshiflow.secrets import Secret
from kalshiflow.storage import open_database
from kalshiflow.storage.schema import TABLES

__all__ = ["measure_writequeue", "synthetic_deltas"]

_BASE_TS_NS = 1_782_316_195_000_000_000


def synthetic_deltas(
    session_id: uuid.UUID,
    n: int,
    *,
    start_seq: int = 1,
    markets: int = 20,
    epoch: int = 1,
    sid: int = 1,
    seed: int = 7,
) -> list[tuple[Any, ...]]:
    """``n`` book_deltas rows (``TABLES['book_deltas'].columns`` order) on one sid, seq ascending."""
    rng = random.Random(seed)
    tickers = [f"KXSYN-26JUN24-T{m:03d}" for m in range(markets)]
    rows: list[tuple[Any, ...]] = []
    for k in range(n):
        seq = start_seq + k
        delta = rng.choice((-1000, -300, 100, 500, 2500))
        rows.append(
            (
                session_id,
                seq,
                _BASE_TS_NS + seq * 20_000,
                1_782_316_195_000 + seq // 50,
                delta,
                abs(delta) * 3,
                epoch,
                sid,
                100 * rng.randint(1, 99),
                "yes" if rng.random() < 0.5 else "no",
                tickers[rng.randrange(markets)],
                None,
            )
        )
    return rows


def _batches(rows: list[tuple[Any, ...]], batch_rows: int) -> list[list[tuple[Any, ...]]]:
    return [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]


async def _raw_copy(url: str, config: AppConfig, rows: list[tuple[Any, ...]], batch_rows: int) -> float:
    async with open_database(config.storage, url=url, migrate_schema=False) as db, db.acquire() as conn:
        columns = list(TABLES["book_deltas"].columns)
        start = time.perf_counter()
        for chunk in _batches(rows, batch_rows):
            await conn.copy_records_to_table("book_deltas", records=chunk, columns=columns)
        return time.perf_counter() - start


async def _through_writequeue(
    config: AppConfig, url: str, rows: list[tuple[Any, ...]], batch_rows: int, in_flight: int, num_cpus: float
) -> tuple[float, dict[str, Any]]:
    from actors.write_queue import WriteQueue  # the actor lives outside the package (actors/)

    name = f"wq-bench-{uuid.uuid4().hex[:8]}"
    actor: Any = WriteQueue.options(num_cpus=num_cpus, max_concurrency=max(64, 4 * in_flight)).remote(
        config, name=name, url=Secret(url)
    )
    try:
        await actor.ready.remote(timeout=60.0)  # started and connected before the clock runs
        batches = [ray.put({"book_deltas": chunk}) for chunk in _batches(rows, batch_rows)]
        pending: set[Any] = set()
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            if len(pending) >= in_flight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    fut.result()
            pending.add(asyncio.ensure_future(actor.enqueue.remote(f"bench-{i}", batch)))
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
        stats = msgspec.to_builtins(await actor.close.remote())
        return elapsed, stats
    finally:
        ray.kill(actor, no_restart=True)


async def measure_writequeue(
    config: AppConfig | None = None,
    *,
    url: str | Secret | None = None,
    rows: int = 200_000,
    batch_rows: int = 2_000,
    in_flight: int = 8,
    repeats: int = 2,
    num_cpus: float = 0.5,
) -> dict[str, Any]:
    """WriteQueue rows/s vs raw COPY rows/s of the same rows, same database, same run.

    Needs Ray initialised (the caller's cluster); ``url`` (or DATABASE_URL, or the embedded server)
    names the database. Returns writequeue_rows_per_s, copy_rows_per_s, writequeue_ratio and details.
    """
    if not ray.is_initialized():
        raise RuntimeError("measure_writequeue needs ray.init() first")
    config = config or AppConfig()
    # The baseline COPYs in the larger of the two sizes in play (what callers send, what the
    # WriteQueue flushes): bigger COPYs are faster, so the baseline is never handicapped.
    copy_rows = max(batch_rows, config.write_queue.flush_rows)
    if not config.write_queue.spill_dir:
        spill = tempfile.mkdtemp(prefix="kalshiflow-bench-spill-")
        config = msgspec.structs.replace(
            config, write_queue=msgspec.structs.replace(config.write_queue, spill_dir=spill)
        )
    async with open_database(config.storage, url=url) as db:
        full_url = db.url.reveal()
        sessions: list[uuid.UUID] = []
        copy_s: list[float] = []
        wq_s: list[float] = []
        stats: dict[str, Any] = {}
        try:
            for r in range(max(1, repeats)):
                for target in ("copy", "writequeue"):
                    session = uuid.uuid4()
                    sessions.append(session)
                    data = synthetic_deltas(session, rows, seed=r)
                    if target == "copy":
                        copy_s.append(await _raw_copy(full_url, config, data, copy_rows))
                    else:
                        elapsed, stats = await _through_writequeue(
                            config, full_url, data, batch_rows, in_flight, num_cpus
                        )
                        wq_s.append(elapsed)
            stored = await db.fetchval(
                "SELECT count(*) FROM book_deltas WHERE session_id = ANY($1::uuid[])", sessions
            )
        finally:
            await db.execute("DELETE FROM book_deltas WHERE session_id = ANY($1::uuid[])", sessions)
    copy_rate = rows / min(copy_s)
    wq_rate = rows / min(wq_s)
    expected = rows * len(sessions)
    return {
        "writequeue_rows_per_s": round(wq_rate, 1),
        "copy_rows_per_s": round(copy_rate, 1),
        "writequeue_ratio": round(wq_rate / copy_rate, 4),
        "rows": rows,
        "batch_rows": batch_rows,
        "copy_batch_rows": copy_rows,
        "in_flight": in_flight,
        "repeats": len(wq_s),
        "rows_lost": expected - int(stored),
        "writequeue_seconds": [round(s, 4) for s in wq_s],
        "copy_seconds": [round(s, 4) for s in copy_s],
        "writequeue_stats": stats,
    }
