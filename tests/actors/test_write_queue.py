"""The WriteQueue as a Ray actor: idempotent batches, a PostgreSQL outage, a killed actor.

The outage tests stop and restart a PostgreSQL server, so they use a dedicated embedded server in
a tmp dir (started once for this module), never the session's shared one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray
from ray.exceptions import RayActorError

from actors.write_queue import start_write_queue
from kalshiflow.config import AppConfig, StorageConfig, WriteQueueConfig
from kalshiflow.ingest import Ack, WriteQueueStats
from kalshiflow.ingest.throughput import synthetic_deltas
from kalshiflow.storage import Database, EmbeddedPostgres, open_database

pytestmark = pytest.mark.usefixtures("ray_session")


class Outage:
    """A dedicated embedded PostgreSQL that tests may stop and start again (same URL)."""

    def __init__(self, pgdata: Path) -> None:
        self.server = EmbeddedPostgres(pgdata)
        self.url = ""

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)
        self.url = self.server.uri("kalshiflow")

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)
        assert not self.server.is_running()


@pytest.fixture(scope="module")
async def outage(pg_tmp_root: Path) -> AsyncIterator[Outage]:
    server = Outage(pg_tmp_root / f"outage-{uuid.uuid4().hex[:8]}")
    await server.start()
    yield server
    if server.server.is_running():
        await server.stop()


@pytest.fixture
async def outage_db(outage: Outage, storage_config: StorageConfig) -> AsyncIterator[Database]:
    if not outage.server.is_running():
        await outage.start()
    async with open_database(storage_config, url=outage.url) as database:  # creates + migrates
        yield database


@pytest.fixture
def config(storage_config: StorageConfig, tmp_path: Path) -> AppConfig:
    spill = tmp_path / "spill"
    spill.mkdir()
    spill.chmod(0o777)
    return AppConfig(
        storage=storage_config,
        write_queue=WriteQueueConfig(spill_dir=str(spill), reconnect_max_s=0.2, write_timeout_s=10.0),
    )


@pytest.fixture
def actors() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for actor in made:
        ray.kill(actor, no_restart=True)


def rows_of(session: uuid.UUID, i: int, n: int = 250) -> dict[str, list[tuple[Any, ...]]]:
    return {"book_deltas": synthetic_deltas(session, n, start_seq=1 + n * i, seed=i)}


async def stored(db: Database, session: uuid.UUID) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT count(*), count(DISTINCT seq) FROM book_deltas WHERE session_id = $1", session
    )
    assert row is not None
    return row[0], row[1]


async def call_until_up(make_call: Any, timeout: float = 60.0) -> Any:
    """Call a restarting actor: calls made while it restarts fail fast (max_task_retries=0)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await make_call()
        except RayActorError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_batches_through_ray_are_stored_exactly_once(
    config: AppConfig, db_url: str, db: Database, actors: list[Any]
) -> None:
    actor = start_write_queue(config, name=f"wq-{uuid.uuid4().hex[:6]}", url=db_url, num_cpus=0.1)
    actors.append(actor)
    session = uuid.uuid4()
    batches = [rows_of(session, i) for i in range(8)]
    refs = [actor.enqueue.remote(f"b{i}", b) for i, b in enumerate(batches)]
    refs += [actor.enqueue.remote(f"b{i}", b) for i, b in enumerate(batches)]  # every batch resent
    acks: list[Ack] = await asyncio.gather(*refs)
    assert {a.durable for a in acks} == {"database"} and sum(a.rows for a in acks) == 4000
    assert await stored(db, session) == (2000, 2000)
    stats: WriteQueueStats = await actor.stats.remote()
    assert stats.rows_inserted == 2000 and stats.rows_written == 4000 and stats.depth == 0


async def test_postgres_outage_spills_then_drains_every_row_once(
    config: AppConfig, outage: Outage, outage_db: Database, actors: list[Any]
) -> None:
    actor = start_write_queue(config, name=f"wq-{uuid.uuid4().hex[:6]}", url=outage.url, num_cpus=0.1)
    actors.append(actor)
    await actor.ready.remote(timeout=30)
    session = uuid.uuid4()
    assert (await actor.enqueue.remote("b0", rows_of(session, 0))).durable == "database"

    await outage.stop()
    acks = await asyncio.gather(*(actor.enqueue.remote(f"b{i}", rows_of(session, i)) for i in range(1, 9)))
    assert {a.durable for a in acks} == {"spill"}  # acknowledged: durable on local disk
    stats: WriteQueueStats = await actor.stats.remote()
    assert not stats.database_up and stats.rows_spilled == 2000 and stats.spill_segments >= 1

    await outage.start()
    stats = await actor.flush.remote(drain=True, timeout=60)
    assert stats.database_up and stats.rows_drained == 2000 and stats.spill_segments == 0
    async with open_database(config.storage, url=outage.url, migrate_schema=False) as db:
        assert await stored(db, session) == (2250, 2250)


async def test_killed_actor_restarts_and_loses_nothing_it_acknowledged(
    config: AppConfig, outage: Outage, outage_db: Database, actors: list[Any]
) -> None:
    name = f"wq-{uuid.uuid4().hex[:6]}"
    actor = start_write_queue(config, name=name, url=outage.url, num_cpus=0.1)
    actors.append(actor)
    await actor.ready.remote(timeout=30)
    session = uuid.uuid4()

    # 1. Acknowledged from the spill while PostgreSQL is down, then the actor is killed.
    await outage.stop()
    acks = await asyncio.gather(*(actor.enqueue.remote(f"s{i}", rows_of(session, i)) for i in range(4)))
    assert {a.durable for a in acks} == {"spill"}
    ray.kill(actor, no_restart=False)
    await outage.start()
    # The restarted actor (same constructor arguments, same spill dir) drains what it left behind.
    stats = await call_until_up(lambda: actor.flush.remote(drain=True, timeout=60))
    assert stats.rows_drained == 1000 and stats.batches_enqueued == 0  # counters are the new actor's
    async with open_database(config.storage, url=outage.url, migrate_schema=False) as db:
        assert await stored(db, session) == (1000, 1000)

        # 2. Killed with calls in flight: unacknowledged batches are the sender's to resend.
        batches = {f"k{i}": rows_of(session, i) for i in range(4, 24)}
        refs = {bid: actor.enqueue.remote(bid, rows) for bid, rows in batches.items()}
        await asyncio.sleep(0.05)
        ray.kill(actor, no_restart=False)
        unacked = []
        for bid, ref in refs.items():
            try:
                assert (await ref).batch_id == bid
            except RayActorError:
                unacked.append(bid)
        for bid in unacked:
            ack = await call_until_up(lambda bid=bid: actor.enqueue.remote(bid, batches[bid]))
            assert ack.durable == "database"
        await call_until_up(lambda: actor.flush.remote(drain=True, timeout=60))
        assert await stored(db, session) == (6000, 6000)
    stats_after: WriteQueueStats = await actor.stats.remote()
    assert msgspec.to_builtins(stats_after)["name"] == name
