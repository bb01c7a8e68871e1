"""The PolicyServer on real Ray + real Serve, with real (random-weight) model versions written the
way training writes them: serve current, hot swap under concurrent load with zero failed requests,
schema refusal, rollback / use_version, batching, HOLD with no model, and a killed replica.

The tests of the module share one deployment and run in file order (each leaves the registry in
the state the next expects: v1 -> v2 -> refused v3 -> ...)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.policy_server import act_or_hold, deploy_policy_server, policy_handle, replica_actor_names
from kalshiflow.rl.registry import Registry
from kalshiflow.serving import (
    HOLD_ACTION,
    NO_MODEL,
    ActBatch,
    ActReply,
    ActRequest,
    PolicyServerConfig,
    ServerStats,
)
from kalshiflow.serving.model_slot import code_schema_hash
from kalshiflow.serving.testing import write_random_version

APP = "test_policy_server"
SCHEMA = code_schema_hash((1, 5, 10), 50)
N_FEATURES, N_ACTIONS = 33, 26


def config(models_dir: Path, app: str = APP) -> PolicyServerConfig:
    return PolicyServerConfig(app_name=app, models_dir=str(models_dir), poll_interval_s=0.2,
                              max_batch_size=16, batch_wait_timeout_s=0.002, health_check_period_s=1.0)


def request(rng: np.random.Generator, i: int = 0) -> ActRequest:
    mask = (rng.random(N_ACTIONS) < 0.4).astype(np.float32)
    mask[0] = 1.0  # hold is always allowed
    return ActRequest(obs=rng.uniform(-1, 1, N_FEATURES).astype(np.float32), mask=mask, ticker=f"KX-{i % 7}",
                      request_id=i, schema_hash=SCHEMA)


def act(handle: DeploymentHandle, req: ActRequest, timeout_s: float = 10.0) -> ActReply:
    reply = handle.act.remote(req).result(timeout_s=timeout_s)
    assert isinstance(reply, ActReply)
    return reply


def stats(handle: DeploymentHandle) -> ServerStats:
    return handle.stats.remote().result(timeout_s=10)


def wait_for(pred: object, timeout_s: float = 15.0, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(every_s)
    raise AssertionError(f"condition not met in {timeout_s} s")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("models"))
    assert write_random_version(reg, seed=1) == "v0001"
    assert write_random_version(reg, seed=2) == "v0002"
    reg.set_current("v0001", reason="test", forced=True)
    return reg


@pytest.fixture(scope="module")
def server(ray_session: None, models: Registry) -> Iterator[DeploymentHandle]:
    handle = deploy_policy_server(config(models.root))
    yield handle
    serve.delete(APP)


def test_serves_the_current_model_and_deploy_is_idempotent(server: DeploymentHandle,
                                                            models: Registry) -> None:
    rng = np.random.default_rng(0)
    req = request(rng)
    reply = act(server, req)
    assert (reply.version, reply.status, reply.request_id, reply.ticker) == ("v0001", "ok", 0, "KX-0")
    assert req.mask[reply.action] == 1 and reply.latency_ms > 0
    replicas = replica_actor_names(APP)
    again = deploy_policy_server(config(models.root))  # second deploy: same app, nothing restarted
    assert act(again, req).version == "v0001"
    assert act(policy_handle(APP), req).action == reply.action
    assert replica_actor_names(APP) == replicas and len(replicas) == 1
    assert list(serve.status().applications).count(APP) == 1


def test_hot_swap_under_concurrent_load_drops_nothing(server: DeploymentHandle, models: Registry) -> None:
    stop = threading.Event()
    seen_v2 = [0] * 6

    def client(k: int) -> list[tuple[ActRequest, ActReply | BaseException]]:
        rng = np.random.default_rng(100 + k)
        out: list[tuple[ActRequest, ActReply | BaseException]] = []
        i = 0
        while not stop.is_set():
            req = request(rng, k * 1_000_000 + i)
            try:
                reply = act(server, req)
                seen_v2[k] += reply.version == "v0002"
                out.append((req, reply))
            except BaseException as err:  # noqa: BLE001 - every failure is what this test counts
                out.append((req, err))
            i += 1
        return out

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, k) for k in range(6)]
        time.sleep(0.5)
        models.set_current("v0002", reason="test promote under load", forced=True)
        try:
            wait_for(lambda: min(seen_v2) >= 20, timeout_s=20)
        finally:
            stop.set()
        results = [f.result() for f in futures]

    total = sum(len(r) for r in results)
    failures = [(req.request_id, rep) for r in results for req, rep in r if not isinstance(rep, ActReply)]
    assert not failures, failures[:5]
    for r in results:
        versions = [rep.version for _, rep in r]  # type: ignore[union-attr]
        switch = versions.index("v0002")
        assert switch > 0 and set(versions[:switch]) == {"v0001"} and set(versions[switch:]) == {"v0002"}
        for req, rep in r:
            assert rep.status == "ok" and rep.request_id == req.request_id  # type: ignore[union-attr]
            assert req.mask[rep.action] == 1  # type: ignore[union-attr]
    s = stats(server)
    assert s.version == "v0002" and s.previous_versions == ["v0001"] and s.reloads == 2
    assert s.max_batch_size > 1 and s.mean_batch_size > 1.0, s.batch_size_hist  # batching happened
    assert s.not_ok == {} and s.requests >= total
    print(f"\nhot swap under load: {total} requests from 6 clients, 0 failed; "
          f"batch sizes {s.batch_size_hist}; p50 {s.p50_ms} ms p99 {s.p99_ms} ms in-replica")


def test_wrong_schema_is_refused_and_the_old_model_keeps_serving(server: DeploymentHandle,
                                                                  models: Registry) -> None:
    bad = write_random_version(models, seed=3, schema_hash="0" * 64)
    assert bad == "v0003"
    models.set_current(bad, reason="test: a model from other feature code", forced=True)
    wait_for(lambda: stats(server).refusals >= 1)
    rng = np.random.default_rng(3)
    assert act(server, request(rng)).version == "v0002"
    s = stats(server)
    assert s.version == "v0002" and s.registry_current == "v0003" and s.refusals == 1
    assert s.last_refusal.startswith("v0003") and s.events[-1].kind == "refused"
    time.sleep(1.0)  # the pointer is refused once, not at every poll
    assert stats(server).refusals == 1
    cmd = server.use_version.remote("v0003").result(timeout_s=30)
    assert (cmd.ok, cmd.version) == (False, "v0002") and "schema" in cmd.message
    assert stats(server).refusals == 2
    # A caller whose own features differ is answered HOLD, not acted on.
    req = request(rng)
    foreign = ActRequest(obs=req.obs, mask=req.mask, schema_hash="f" * 64)
    reply = act(server, foreign)
    assert (reply.action, reply.status, reply.version) == (HOLD_ACTION, "schema_mismatch", "v0002")


def test_rollback_use_version_promote_and_reload(server: DeploymentHandle) -> None:
    rng = np.random.default_rng(4)
    cmd = server.rollback.remote().result(timeout_s=10)
    assert (cmd.ok, cmd.version, cmd.previous) == (True, "v0001", "v0002")
    assert act(server, request(rng)).version == "v0001"
    time.sleep(1.0)  # polls see an unchanged pointer: the rollback stands
    assert act(server, request(rng)).version == "v0001"
    cmd = server.use_version.remote("v0002").result(timeout_s=30)
    assert (cmd.ok, cmd.version, cmd.previous) == (True, "v0002", "v0001")
    cmd = server.promote.remote("v0001").result(timeout_s=30)
    assert (cmd.ok, cmd.version) == (True, "v0001")
    cmd = server.reload.remote().result(timeout_s=30)  # the registry still names the refused v0003
    assert (cmd.ok, cmd.version, cmd.requested) == (False, "v0001", "v0003")
    assert not server.use_version.remote("v0042").result(timeout_s=30).ok  # unknown: failed, counted
    s = stats(server)
    assert s.version == "v0001" and s.rollbacks == 1 and s.load_failures == 1 and s.refusals == 3


def test_act_batch_and_latency_through_the_handle(server: DeploymentHandle) -> None:
    rng = np.random.default_rng(5)
    reqs = [request(rng, i) for i in range(100)]
    batch = ActBatch(obs=np.stack([r.obs for r in reqs]), mask=np.stack([r.mask for r in reqs]),
                     request_id="tick", schema_hash=SCHEMA)
    many = server.act_batch.remote(batch).result(timeout_s=10)
    assert many.status == ["ok"] * 100 and many.version == "v0001" and many.request_id == "tick"
    assert (batch.mask[np.arange(100), many.actions] == 1).all()
    singles = [act(server, r).action for r in reqs[:10]]
    assert singles == many.actions[:10].tolist()  # same model, same greedy answer either way
    t0 = time.perf_counter()
    for _ in range(50):
        server.act_batch.remote(batch).result(timeout_s=10)
    batch_ms = (time.perf_counter() - t0) / 50 * 1e3
    for _ in range(20):  # warm up
        act(server, request(rng))
    rtt = []
    for i in range(300):
        t0 = time.perf_counter()
        act(server, request(rng, i))
        rtt.append((time.perf_counter() - t0) * 1e3)
    p50, p99 = np.percentile(rtt, [50, 99])
    print(f"\nhandle round trip, sequential, 1 replica: act p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
          f"act_batch of 100 markets {batch_ms:.2f} ms per call")
    assert p50 < 50  # a sanity bound, not a benchmark: shared 2-core CI machines are noisy


def test_killed_replica_is_restarted_and_serves_again(server: DeploymentHandle) -> None:
    (name,) = replica_actor_names(APP)
    old = stats(server).replica
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    rng = np.random.default_rng(6)
    outcomes: list[ActReply] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # The trader's call: an answer, or HOLD "unavailable" while no replica answers in time.
        reply = asyncio.run(act_or_hold(server, request(rng), timeout_s=1.0))
        outcomes.append(reply)
        if reply.status == "ok" and stats(server).replica != old:
            break
    s = stats(server)
    assert s.replica != old and outcomes[-1].status == "ok"
    assert {r.status for r in outcomes} <= {"ok", "unavailable"}
    assert all(r.action == HOLD_ACTION for r in outcomes if r.status == "unavailable")
    # The new replica starts from the registry (durable state), not from the dead one's commands:
    # the pointer names the refused v0003, so it falls back to the last good promotion, v0002.
    assert outcomes[-1].version == "v0002" and s.version == "v0002" and s.refusals == 1
    assert replica_actor_names(APP) != [name]
    held = [r for r in outcomes if r.status == "unavailable"]
    print(f"\nreplica kill: {len(outcomes)} calls until the new replica answered, {len(held)} answered HOLD "
          f"by the caller ({held[0].error if held else '-'})")


def test_no_model_answers_hold_then_picks_up_the_first_promotion(ray_session: None, tmp_path: Path) -> None:
    app = "test_policy_server_empty"
    reg = Registry(tmp_path / "models")
    handle = deploy_policy_server(config(reg.root, app))
    try:
        rng = np.random.default_rng(7)
        reply = act(handle, request(rng, 9))
        assert (reply.action, reply.version, reply.status, reply.request_id) == (HOLD_ACTION, NO_MODEL,
                                                                                  "no_model", 9)
        assert stats(handle).version == NO_MODEL
        version = write_random_version(reg, seed=11)
        reg.set_current(version, reason="first model", forced=True)
        wait_for(lambda: act(handle, request(rng)).version == version)
    finally:
        serve.delete(app)
