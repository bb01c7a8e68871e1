"""The PolicyServer's pure parts: ModelSlot (load beside, swap, refuse, rollback, answer),
PointerWatch (edge-triggered registry pointer), ServingStats, and real registry models loaded
through the production loader. No Ray actors, no Serve."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from kalshiflow.config import ConfigError
from kalshiflow.rl.features import SchemaMismatchError
from kalshiflow.rl.registry import Registry
from kalshiflow.serving import (
    HOLD_ACTION,
    NO_MODEL,
    ActBatch,
    ActRequest,
    ModelSlot,
    PointerStamp,
    PointerWatch,
    PolicyServerConfig,
    ServingStats,
    code_schema_hash,
    read_pointer,
    registry_loader,
    startup_candidates,
)

HASH = "a" * 64
F, A = 5, 4


class FakePolicy:
    """Chooses the highest allowed action id (+ ``shift`` mod A when allowed): easy to predict."""

    def __init__(self, name: str, schema_hash: str = HASH, fail: bool = False, rogue: bool = False) -> None:
        self.name, self.schema_hash, self.fail, self.rogue = name, schema_hash, fail, rogue
        self.n_features, self.n_actions = F, A
        self.calls: list[int] = []

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.calls.append(len(obs))
        if self.fail:
            raise RuntimeError("boom")
        if self.rogue:
            return np.full(len(obs), A - 1)
        return np.array([int(np.flatnonzero(m)[-1]) for m in mask], np.int64)


class FakeLoader:
    def __init__(self, policies: dict[str, FakePolicy | Exception],
                 gate: threading.Event | None = None) -> None:
        self.policies, self.gate = policies, gate
        self.loaded: list[str] = []

    def __call__(self, version: str) -> FakePolicy:
        if self.gate is not None:
            assert self.gate.wait(5)
        self.loaded.append(version)
        p = self.policies[version]
        if isinstance(p, Exception):
            raise p
        return p


def req(i: int = 0, *, obs: Any = None, mask: Any = None, schema_hash: str | None = None) -> ActRequest:
    return ActRequest(obs=np.zeros(F, np.float32) if obs is None else obs,
                      mask=np.array([1, 1, 1, 0], np.float32) if mask is None else mask,
                      ticker=f"T{i}", request_id=i, schema_hash=schema_hash)


# ---------------------------------------------------------------------------- ModelSlot


async def test_no_model_answers_hold_with_version_none() -> None:
    slot = ModelSlot(FakeLoader({}), HASH)
    replies = slot.answer([req(1), req(2)])
    assert [(r.action, r.version, r.status, r.request_id) for r in replies] == [
        (HOLD_ACTION, NO_MODEL, "no_model", 1), (HOLD_ACTION, NO_MODEL, "no_model", 2)]


async def test_loads_beside_and_swaps_only_when_ready() -> None:
    gate = threading.Event()
    loader = FakeLoader({"v0001": FakePolicy("v1"), "v0002": FakePolicy("v2")})
    slot = ModelSlot(loader, HASH)
    loader.gate = None
    assert (await slot.switch_to("v0001", "test")).ok
    loader.gate = gate
    switching = asyncio.create_task(slot.switch_to("v0002", "test"))
    await asyncio.sleep(0.05)  # the load is blocked in its thread: v1 keeps answering meanwhile
    assert not switching.done()
    assert {r.version for r in slot.answer([req(i) for i in range(3)])} == {"v0001"}
    gate.set()
    outcome = await switching
    assert (outcome.ok, outcome.kind, outcome.version, outcome.previous) == (True, "swap", "v0002", "v0001")
    assert slot.answer([req()])[0].version == "v0002"
    assert slot.previous_versions == ["v0001"] and slot.reloads == 2
    assert (await slot.switch_to("v0002", "test")).kind == "already"


async def test_schema_mismatch_is_refused_and_reported_live_model_keeps_serving() -> None:
    loader = FakeLoader({"v0001": FakePolicy("v1"),
                         "v0002": SchemaMismatchError("model v0002 was trained on another schema"),
                         "v0003": FakePolicy("v3", schema_hash="b" * 64)})  # a loader that did not check
    slot = ModelSlot(loader, HASH)
    await slot.switch_to("v0001", "startup")
    for version in ("v0002", "v0003"):
        outcome = await slot.switch_to(version, "registry")
        assert (outcome.ok, outcome.kind, outcome.version) == (False, "refused", "v0001")
        assert not outcome.retry
    assert slot.refusals == 2 and slot.version == "v0001"
    assert slot.last_refusal.startswith("v0003")
    assert [e.kind for e in slot.events] == ["swap", "refused", "refused"]
    assert slot.answer([req()])[0].version == "v0001"


async def test_load_failure_is_retryable_and_keeps_the_live_model() -> None:
    slot = ModelSlot(FakeLoader({"v0001": FakePolicy("v1"), "v0002": FileNotFoundError("gone")}), HASH)
    await slot.switch_to("v0001", "startup")
    outcome = await slot.switch_to("v0002", "registry")
    assert (outcome.ok, outcome.kind, outcome.retry, slot.load_failures, slot.version) == (
        False, "failed", True, 1, "v0001")


async def test_rollback_is_in_memory_and_bounded() -> None:
    loader = FakeLoader({f"v000{i}": FakePolicy(f"v{i}") for i in range(1, 5)})
    slot = ModelSlot(loader, HASH, keep_previous=2)
    assert not (await slot.rollback()).ok  # nothing loaded yet
    for i in range(1, 5):
        await slot.switch_to(f"v000{i}", "test")
    assert slot.previous_versions == ["v0002", "v0003"]  # v0001 fell off the bounded stack
    outcome = await slot.rollback()
    assert (outcome.ok, outcome.version, outcome.previous) == (True, "v0003", "v0004")
    assert slot.previous_versions == ["v0002"] and slot.rollbacks == 1
    n_loads = len(loader.loaded)
    assert (await slot.switch_to("v0002", "use_version")).message == "from memory"
    assert len(loader.loaded) == n_loads  # no disk load for a version still in memory
    assert slot.previous_versions == ["v0003"]


async def test_answer_isolates_bad_requests_from_their_batch() -> None:
    policy = FakePolicy("v1")
    slot = ModelSlot(FakeLoader({"v0001": policy}), HASH)
    await slot.switch_to("v0001", "test")
    batch = [req(0), req(1, obs=np.zeros(F + 1)), req(2, obs=[np.nan] * F), req(3, mask=[0, 0, 0, 0]),
             req(4, schema_hash="c" * 64), req(5, obs=["x"] * F), req(6, mask=[1, 0, 0, 0], schema_hash=HASH)]
    replies = slot.answer(batch)
    assert [r.status for r in replies] == ["ok", "bad_request", "bad_request", "bad_request",
                                           "schema_mismatch", "bad_request", "ok"]
    assert [r.request_id for r in replies] == list(range(7))
    assert (replies[0].action, replies[6].action) == (2, 0)  # highest allowed per its own mask
    assert all(r.action == HOLD_ACTION for r in replies[1:6])
    assert policy.calls == [2] and replies[0].batch_size == 2  # ONE forward pass over the valid rows


async def test_inference_error_and_masked_choice_become_hold() -> None:
    loader = FakeLoader({"v0001": FakePolicy("v1", fail=True), "v0002": FakePolicy("v2", rogue=True)})
    slot = ModelSlot(loader, HASH)
    await slot.switch_to("v0001", "test")
    assert {(r.action, r.status) for r in slot.answer([req(0), req(1)])} == {(HOLD_ACTION, "error")}
    await slot.switch_to("v0002", "test")
    r = slot.answer([req(0)])[0]  # mask forbids action 3, the rogue policy picks it anyway
    assert (r.action, r.status) == (HOLD_ACTION, "error") and "masked" in r.error


async def test_answer_batch_column_wise() -> None:
    slot = ModelSlot(FakeLoader({"v0001": FakePolicy("v1"), "v0002": FakePolicy("v2", rogue=True)}), HASH)
    obs = np.zeros((4, F), np.float32)
    mask = np.tile(np.array([1, 1, 0, 0], np.float32), (4, 1))
    assert slot.answer_batch(ActBatch(obs=obs, mask=mask)).status == ["no_model"] * 4
    await slot.switch_to("v0001", "test")
    obs[1, 2] = np.inf
    mask[2] = 0
    reply = slot.answer_batch(ActBatch(obs=obs, mask=mask, request_id="tick-7", schema_hash=HASH))
    assert reply.status == ["ok", "bad_request", "bad_request", "ok"] and reply.version == "v0001"
    assert reply.actions.tolist() == [1, HOLD_ACTION, HOLD_ACTION, 1] and set(reply.errors) == {1, 2}
    assert reply.request_id == "tick-7" and slot.live.policy.calls == [2]  # type: ignore[union-attr]
    wrong = slot.answer_batch(ActBatch(obs=np.zeros((4, F + 1)), mask=mask))
    assert wrong.status == ["bad_request"] * 4 and wrong.actions.tolist() == [HOLD_ACTION] * 4
    foreign = slot.answer_batch(ActBatch(obs=obs, mask=mask, schema_hash="c" * 64))
    assert foreign.status == ["schema_mismatch"] * 4
    await slot.switch_to("v0002", "test")  # picks action 3, masked in every row
    allowed = slot.answer_batch(ActBatch(obs=np.zeros((2, F), np.float32), mask=np.ones((2, A), np.float32)))
    assert allowed.status == ["ok", "ok"] and allowed.actions.tolist() == [3, 3]
    one_row_mask = np.array([[1, 1, 1, 0]], np.float32)
    rogue = slot.answer_batch(ActBatch(obs=np.zeros((1, F), np.float32), mask=one_row_mask))
    assert rogue.status == ["error"] and rogue.actions.tolist() == [HOLD_ACTION]


# ---------------------------------------------------------------------------- PointerWatch


def test_pointer_watch_is_edge_triggered() -> None:
    w = PointerWatch(retry_after_s=10.0)
    s1 = PointerStamp("v0001", 1, 11)
    assert w.due(s1, 0.0) == "v0001"
    w.settle(s1, retry=False, now=0.0)
    assert w.due(s1, 100.0) is None  # same stamp: nothing new (a local rollback is not undone)
    s1b = PointerStamp("v0001", 2, 12)  # the same version written again is a new instruction
    assert w.due(s1b, 1.0) == "v0001"
    s2 = PointerStamp("v0002", 3, 13)
    w.settle(s2, retry=True, now=5.0)  # failed transiently: retried after retry_after_s only
    assert w.due(s2, 14.0) is None and w.due(s2, 15.0) == "v0002"
    w.settle(s2, retry=False, now=15.0)  # refused: never retried for this stamp
    assert w.due(s2, 1e9) is None
    assert w.due(PointerStamp(None), 16.0) is None and w.handled == PointerStamp(None)


def test_read_pointer_sees_every_registry_write(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert read_pointer(tmp_path) == PointerStamp(None)
    for v in ("v0001", "v0002"):
        (tmp_path / v).mkdir()
        (tmp_path / v / "manifest.json").write_bytes(msgspec.json.encode(
            {"version": v, "created_at": "2026-01-01T00:00:00+00:00", "schema_hash": HASH,
             "schema_version": 1}))
    stamps = []
    for v in ("v0001", "v0002", "v0002"):
        reg.set_current(v, reason="test", forced=True)
        stamps.append(read_pointer(tmp_path))
    assert [s.version for s in stamps] == ["v0001", "v0002", "v0002"]
    assert len(set(stamps)) == 3  # re-promoting v0002 is visible too (new inode/mtime)
    reg.rollback()
    assert read_pointer(tmp_path).version == "v0002"  # stack: v1, v2, v2 -> rollback pops one v2


def test_startup_candidates_fall_back_through_promotions() -> None:
    assert startup_candidates(None, []) == []
    assert startup_candidates("v0003", ["v0001", "v0002", "v0001", "v0003"]) == ["v0003", "v0001", "v0002"]


# ---------------------------------------------------------------------------- stats + config


def test_serving_stats_window_and_percentiles() -> None:
    s = ServingStats(latency_window=4, rate_window_s=10.0)
    assert s.percentiles() == (0.0, 0.0) and s.mean_batch_size() == 0.0
    for ms in (100.0, 1.0, 2.0, 3.0, 4.0):  # the ring keeps the last 4: 100 is gone
        s.record_latency(ms)
    p50, p99 = s.percentiles()
    assert p50 == 2.5 and 3.9 < p99 <= 4.0
    s.record_batch(3, now=0.0)
    s.record_batch(5, now=9.0)
    assert s.requests_per_s(now=10.0, started=-100.0) == pytest.approx(0.8)
    assert s.requests_per_s(now=15.0, started=-100.0) == pytest.approx(0.5)  # the 3 left the window
    assert (s.requests, s.batches, s.mean_batch_size(), dict(s.batch_sizes)) == (8, 2, 4.0, {3: 1, 5: 1})
    s.record_status("ok")
    s.record_status("no_model")
    assert dict(s.not_ok) == {"no_model": 1}


def test_config_rejects_unknown_and_bad_values() -> None:
    assert msgspec.convert({"max_batch_size": 8}, PolicyServerConfig).max_batch_size == 8
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_batch": 8}, PolicyServerConfig)
    with pytest.raises(ConfigError):
        PolicyServerConfig(poll_interval_s=0)


# ---------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def real_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    from kalshiflow.serving.testing import write_random_version

    reg = Registry(tmp_path_factory.mktemp("models"))
    write_random_version(reg, seed=1)
    write_random_version(reg, seed=2)
    write_random_version(reg, seed=3, schema_hash="0" * 64)
    return reg


async def test_real_versions_load_refuse_and_act_within_the_mask(real_registry: Registry) -> None:
    expected = code_schema_hash((1, 5, 10), 50)
    slot = ModelSlot(registry_loader(real_registry.root, expected), expected)
    assert (await slot.switch_to("v0001", "test")).ok
    refused = await slot.switch_to("v0003", "test")
    assert refused.kind == "refused" and slot.version == "v0001"
    t0 = time.perf_counter()
    assert (await slot.switch_to("v0002", "test")).ok
    assert time.perf_counter() - t0 < 5.0
    live = slot.live
    assert live is not None
    n_f, n_a = live.policy.n_features, live.policy.n_actions
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (64, n_f)).astype(np.float32)
    mask = (rng.random((64, n_a)) < 0.3).astype(np.float32)
    mask[:, 0] = 1.0
    batch = [ActRequest(obs=obs[i], mask=mask[i], request_id=i, schema_hash=expected) for i in range(64)]
    replies = slot.answer(batch)
    assert all(r.status == "ok" and r.version == "v0002" for r in replies)
    assert all(mask[i, r.action] == 1 for i, r in enumerate(replies))
    assert [r.action for r in slot.answer(batch)] == [r.action for r in replies]  # greedy: deterministic
    # A wrong-sized request (another feature set) is answered HOLD, not crashed on.
    bad = slot.answer([ActRequest(obs=np.zeros(52, np.float32), mask=mask[0])])[0]
    assert bad.status == "bad_request" and bad.action == HOLD_ACTION
