"""Bulk-write throughput: the idempotent path against raw binary COPY of the same rows.

``python -m kalshiflow.storage.bench [--rows N] [--batch B] [--repeats R] [--data-dir DIR]``
prints one JSON object. Every path writes synthetic ``book_deltas`` rows (the hot table, with its
two indexes) in a fresh session, one transaction per batch, with the server's default (durable)
settings; passes are interleaved and medians reported, and the ratio is what matters on a noisy
machine. Uses DATABASE_URL when set, else an embedded server (a throwaway one unless --data-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from typing import Any

from kalshiflow.config import StorageConfig
from kalshiflow.storage.database import Database, open_database
from kalshiflow.storage.schema import TABLES


def delta_rows(n: int, session_id: uuid.UUID, *, start_seq: int = 1) -> list[tuple[Any, ...]]:
    """Kalshi-shaped deltas: 50 tickers on one sid, prices near the touch, a few own-order ids."""
    now = time.time_ns()
    return [
        (
            session_id,
            seq,
            now + seq * 1000,
            1_782_316_195_033 + seq // 10,
            (seq % 7 - 3) * 100,
            (seq % 50) * 1000,
            0,
            1,
            4000 + (seq % 40) * 50,
            "yes" if seq % 2 else "no",
            f"KXHIGHNY-26JUN24-T{seq % 50:02d}",
            "my-order-1" if seq % 1000 == 0 else None,
        )
        for seq in range(start_seq, start_seq + n)
    ]


async def _one(db: Database, conn: Any, mode: str, total: int, batch: int) -> float:
    """Rows/s of one pass of ``mode`` over ``total`` fresh rows (a new session each pass)."""
    columns = list(TABLES["book_deltas"].columns)
    session = uuid.uuid4()
    batches = [delta_rows(batch, session, start_seq=i + 1) for i in range(0, total, batch)]
    if mode == "idempotent_replay":  # every row already present: the retry / spill-replay path
        for rows in batches:
            await db.copy_insert("book_deltas", rows)
    written = 0
    t0 = time.perf_counter()
    for rows in batches:
        if mode == "raw_copy":
            async with conn.transaction():
                await conn.copy_records_to_table("book_deltas", records=rows, columns=columns)
            written += len(rows)
        else:
            written += await db.copy_insert("book_deltas", rows)
    elapsed = time.perf_counter() - t0
    assert written == (0 if mode == "idempotent_replay" else total), (mode, written)
    return total / elapsed


async def _run(db: Database, total: int, batch: int, repeats: int) -> dict[str, Any]:
    modes = ("raw_copy", "idempotent", "idempotent_replay")
    samples: dict[str, list[float]] = {m: [] for m in modes}
    async with db.acquire() as conn:
        # Warm-up: creates the staging table, caches prepared statements, warms shared buffers.
        for mode in modes:
            await _one(db, conn, mode, min(total, 2 * batch), batch)
        for _ in range(repeats):  # interleaved, so machine noise hits every mode alike
            for mode in modes:
                samples[mode].append(await _one(db, conn, mode, total, batch))
    results: dict[str, Any] = {"rows": total, "batch": batch, "repeats": repeats}
    for mode in modes:
        results[f"{mode}_rows_per_s"] = round(statistics.median(samples[mode]))
    ratio = results["idempotent_rows_per_s"] / results["raw_copy_rows_per_s"]
    results["ratio_idempotent_vs_raw"] = round(ratio, 3)
    return results


async def bench(
    total: int = 200_000, batch: int = 10_000, repeats: int = 3, data_dir: str | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmp:
        config = StorageConfig(data_dir=data_dir or f"{tmp}/pgdata", database="kalshiflow_bench", pool_max=2)
        async with open_database(config) as db:
            return await _run(db, total, batch, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.rows, args.batch, args.repeats, args.data_dir))))


if __name__ == "__main__":
    main()
