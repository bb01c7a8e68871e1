"""The PolicyServer: a Ray Serve deployment answering "which action?" for the live trader.

    handle = deploy_policy_server(PolicyServerConfig(models_dir="models"))   # idempotent
    reply: ActReply = await handle.act.remote(ActRequest(obs=obs, mask=mask, ticker=t))
    many: ActBatchReply = await handle.act_batch.remote(ActBatch(obs=obs_2d, mask=mask_2d))  # per tick
    handle = policy_handle()                                                  # from any other actor
    reply = await act_or_hold(handle, request, timeout_s=0.5)   # HOLD ("unavailable") if late/failed

- Serves the registry's CURRENT model (``models/current``); with none yet it answers HOLD with
  version ``"none"`` (status ``no_model``) rather than failing, so the trader can start first.
- ``act`` requests from concurrent callers are merged into one forward pass by ``@serve.batch``
  (max_batch_size / batch_wait_timeout_s from the config).
- Hot reload: each replica polls the pointer every ``poll_interval_s``; a changed pointer is loaded
  BESIDE the live model in a worker thread, schema-checked, and swapped in between batches
  (kalshiflow.serving.model_slot). A refused or broken version never replaces the live one.
  Deliberately not done in ``reconfigure``: that blocks the replica (Serve #54509) and is not
  always called at start (#60846). The config goes to the constructor instead.
- Commands (``reload``, ``promote``, ``use_version``, ``rollback``) act on the ONE replica the
  handle routes to and are not persisted; the registry pointer is the fleet-wide, durable state
  (every replica follows it, and a restarted replica starts from it). See docs/serving.md.

This module is the shell (Serve wiring, timers, logging); decisions live in kalshiflow.serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgspec
from ray import serve
from ray.serve.handle import DeploymentHandle

from kalshiflow.rl.registry import DEFAULT_MODELS_DIR, Registry
from kalshiflow.serving.messages import (
    ActBatch,
    ActBatchReply,
    ActReply,
    ActRequest,
    ControlReply,
    PolicyServerConfig,
    ServerStats,
    hold_reply,
)
from kalshiflow.serving.model_slot import ModelSlot, SwitchOutcome, code_schema_hash, registry_loader
from kalshiflow.serving.stats import ServingStats
from kalshiflow.serving.watch import PointerWatch, read_pointer, startup_candidates

__all__ = [
    "DEFAULT_APP_NAME", "PolicyServer", "act_or_hold", "deploy_policy_server", "fast_policy_handle",
    "policy_handle", "replica_actor_names",
]

DEFAULT_APP_NAME = PolicyServerConfig().app_name
DEPLOYMENT_NAME = "PolicyServer"
# Serve's replica logger: lines land in the replica's log file with its tag.
log = logging.getLogger("ray.serve")


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25}, health_check_period_s=2.0,
                  logging_config={"enable_access_log": False})
class PolicyServer:
    # Serve awaits an async constructor (so the first model loads before the replica is ready).
    async def __init__(self, config: PolicyServerConfig) -> None:  # type: ignore[misc]
        import torch

        # A 64x64 MLP on a few rows is fastest single-threaded, and extra OpenMP threads would spin
        # against every other process on a 2-core machine (kalshiflow.rl.policy docstring).
        torch.set_num_threads(1)
        self.config = config
        self.root = Path(config.models_dir) if config.models_dir else DEFAULT_MODELS_DIR
        self.schema_hash = config.schema_hash or code_schema_hash(config.sizes, config.max_position)
        self.slot = ModelSlot(registry_loader(self.root, self.schema_hash), self.schema_hash,
                              keep_previous=config.keep_previous)
        self.watch = PointerWatch(config.retry_failed_after_s)
        self.stats_ = ServingStats(config.latency_window, config.rate_window_s)
        self.started = time.monotonic()
        self.replica = _replica_tag()
        # serve.batch takes its limits at class definition; these setters apply the config's.
        self._act_batched.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
        self._act_batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]
        # Load before the replica reports ready, so the first request after deploy is answered by
        # the current model, not HOLD. A failure here is not fatal: the replica starts with no model.
        await self._start_model()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_forever())

    async def _start_model(self) -> None:
        stamp = read_pointer(self.root)
        if stamp.version is not None:
            outcome = await self.slot.switch_to(stamp.version, "startup")
            self.watch.settle(stamp, retry=outcome.retry, now=time.monotonic())
            self._report(outcome, "startup")
        if self.slot.live is not None:
            return
        # Pointer missing, refused or unreadable: serve the newest earlier promotion that loads,
        # rather than HOLD everything (a restarted replica must not be worse than the dead one).
        try:
            promoted = Registry(self.root).stack()
        except (OSError, ValueError, KeyError) as err:
            log.warning("policy server: cannot read the registry history: %r", err)
            promoted = []
        fallback = [v for v in startup_candidates(stamp.version, promoted) if v != stamp.version]
        self._report(await self.slot.first_loadable(fallback, "startup-fallback"), "startup-fallback")

    # ------------------------------------------------------------------ requests

    async def act(self, request: ActRequest) -> ActReply:
        """One decision; concurrent calls share a forward pass. Never raises for a bad request."""
        t0 = time.perf_counter()
        reply = await self._act_batched(request)
        ms = (time.perf_counter() - t0) * 1e3
        self.stats_.record_latency(ms)
        return msgspec.structs.replace(reply, latency_ms=round(ms, 3))

    async def act_batch(self, batch: ActBatch) -> ActBatchReply:
        """Many decisions in one call, column-wise (the trader's per-tick batch): one forward pass."""
        t0 = time.perf_counter()
        reply = self.slot.answer_batch(batch)
        self.stats_.record_batch(len(reply.status), time.monotonic())
        for st in reply.status:
            self.stats_.record_status(st)
        ms = (time.perf_counter() - t0) * 1e3
        self.stats_.record_latency(ms)  # once per call: the call is what the caller waits for
        return msgspec.structs.replace(reply, latency_ms=round(ms, 3))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)  # both reset from the config in __init__
    async def _act_batched(self, requests: list[ActRequest]) -> list[ActReply]:
        return self._answer(requests)

    def _answer(self, requests: list[ActRequest]) -> list[ActReply]:
        replies = self.slot.answer(requests)
        self.stats_.record_batch(len(requests), time.monotonic())
        for r in replies:
            self.stats_.record_status(r.status)
        return replies

    # ------------------------------------------------------------------ model changes

    async def reload(self) -> ControlReply:
        """Serve what the registry pointer names NOW (also undoes local rollback/use_version)."""
        stamp = read_pointer(self.root)
        if stamp.version is None:
            return self._reply("reload", "", None, "no current pointer in the registry; nothing to load")
        outcome = await self.slot.switch_to(stamp.version, "reload")
        self.watch.settle(stamp, retry=outcome.retry, now=time.monotonic())
        return self._reply("reload", stamp.version, outcome)

    async def promote(self, version: str) -> ControlReply:
        """Told that ``version`` was promoted: switch now instead of at the next poll."""
        return self._reply("promote", version, await self.slot.switch_to(version, "promote"))

    async def use_version(self, version: str) -> ControlReply:
        """Serve ``version`` on this replica until the registry pointer changes again."""
        return self._reply("use_version", version, await self.slot.switch_to(version, "use_version"))

    async def rollback(self) -> ControlReply:
        """Back to the version this replica served before (kept in memory: instant)."""
        return self._reply("rollback", "", await self.slot.rollback())

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                stamp = read_pointer(self.root)
                version = self.watch.due(stamp, time.monotonic())
                if version is None:
                    continue
                outcome = await self.slot.switch_to(version, "registry")
                self.watch.settle(stamp, retry=outcome.retry, now=time.monotonic())
                self._report(outcome, "registry")
            except Exception:  # noqa: BLE001 - one bad poll must not end hot reload for good
                log.exception("policy server: registry poll failed")

    def _reply(self, command: str, requested: str, outcome: SwitchOutcome | None,
               message: str = "") -> ControlReply:
        self._report(outcome, command)
        if outcome is None:
            return ControlReply(ok=False, command=command, requested=requested, version=self.slot.version,
                                previous=self.slot.version, message=message, replica=self.replica)
        return ControlReply(ok=outcome.ok, command=command, requested=requested, version=outcome.version,
                            previous=outcome.previous, message=outcome.message, replica=self.replica)

    def _report(self, outcome: SwitchOutcome | None, trigger: str) -> None:
        if outcome is None or outcome.kind == "already":
            return
        if outcome.ok:
            log.info("policy server %s: %s %s -> %s (%s)", self.replica, trigger, outcome.previous,
                     outcome.version, outcome.message)
        else:
            log.warning("policy server %s: %s %s: still serving %s: %s", self.replica, trigger, outcome.kind,
                        outcome.version, outcome.message)

    # ------------------------------------------------------------------ introspection

    async def stats(self) -> ServerStats:
        now, s, slot = time.monotonic(), self.stats_, self.slot
        p50, p99 = s.percentiles()
        live = slot.live
        return ServerStats(
            replica=self.replica, version=slot.version, schema_hash=self.schema_hash,
            live_since=live.loaded_at if live else 0.0, registry_current=read_pointer(self.root).version,
            previous_versions=slot.previous_versions, requests=s.requests,
            requests_per_s=round(s.requests_per_s(now, self.started), 2), window_s=s.rate_window_s,
            batches=s.batches, mean_batch_size=s.mean_batch_size(),
            max_batch_size=max(s.batch_sizes, default=0), batch_size_hist=dict(sorted(s.batch_sizes.items())),
            p50_ms=p50, p99_ms=p99, not_ok=dict(s.not_ok),
            reloads=slot.reloads, refusals=slot.refusals, load_failures=slot.load_failures,
            rollbacks=slot.rollbacks, last_refusal=slot.last_refusal, events=list(slot.events))

    async def check_health(self) -> None:
        """Serve's periodic probe. Restarts a dead watcher instead of failing: serving still works."""
        if self._watcher.done():
            if not self._watcher.cancelled() and self._watcher.exception() is not None:
                log.error("policy server: watcher died: %r; restarting it", self._watcher.exception())
            self._watcher = asyncio.get_running_loop().create_task(self._watch_forever())


def _replica_tag() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside a replica (in-process use): no tag
        return "local"


# ---------------------------------------------------------------------------- deploy / find


def deploy_policy_server(config: PolicyServerConfig | None = None, *,
                         redeploy: bool = False) -> DeploymentHandle:
    """Run the PolicyServer as the Serve app ``config.app_name`` and return its handle.

    Idempotent: when that app is already deployed (running, deploying or recovering) its handle is
    returned and nothing is redeployed; ``redeploy=True`` applies a changed config or new code
    (Serve rolls the replicas). Blocks until the app is RUNNING. Needs ``ray.init`` done.
    """
    config = config or PolicyServerConfig()
    # With no HTTP ingress wanted, "Disabled" keeps Serve's proxy off port 8000 (the UI's port);
    # when Serve is already running this connects to it and its proxy settings stay as they are.
    serve.start(proxy_location=config.proxy_location)
    if not redeploy and _app_status(config.app_name) in ("RUNNING", "DEPLOYING", "UNHEALTHY"):
        return serve.get_app_handle(config.app_name)
    app = PolicyServer.options(  # type: ignore[attr-defined]
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        # User code on the replica's own event loop (Serve's default hops to a second thread per
        # request): our handlers never block it -- models load in a worker thread (model_slot).
        ray_actor_options={"num_cpus": config.num_cpus,
                           "runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}},
        health_check_period_s=config.health_check_period_s,
        logging_config={"enable_access_log": config.access_log},
    ).bind(config)
    return serve.run(app, name=config.app_name, route_prefix=None)


async def act_or_hold(handle: DeploymentHandle, request: ActRequest, timeout_s: float = 0.5) -> ActReply:
    """The caller's side of the contract: the server's reply, or HOLD with status ``unavailable``
    when the call fails or is late (replica restarting, app not deployed, overload). Never raises
    for those, so a trading loop cannot be stopped by the policy server."""
    response = handle.act.remote(request)

    async def reply() -> ActReply:
        return await response

    try:
        return await asyncio.wait_for(reply(), timeout_s)
    except Exception as err:  # noqa: BLE001 - every failure mode of the call means "hold"
        response.cancel()
        return hold_reply(request, "unavailable", f"{type(err).__name__}: {err}")


def policy_handle(app_name: str = DEFAULT_APP_NAME) -> DeploymentHandle:
    """The PolicyServer's handle for another actor (raises RayServeException when not deployed)."""
    return serve.get_app_handle(app_name)


def fast_policy_handle(app_name: str = DEFAULT_APP_NAME) -> DeploymentHandle:
    """The handle a latency-bound caller (the Trader) uses, from inside its event loop: Serve's
    router on the caller's own loop (the default runs it on a second loop: a thread hop each way
    and ~25 % of the Trader's CPU), and the reply by value over gRPC instead of through the object
    store (``_by_reference=False``: about half the round trip, docs/serving.md)."""
    handle = serve.get_app_handle(app_name)
    handle._init(_run_router_in_separate_loop=False)
    return handle.options(_by_reference=False)


def _app_status(app_name: str) -> str | None:
    app = serve.status().applications.get(app_name)
    return str(app.status.value if hasattr(app.status, "value") else app.status) if app else None


def replica_actor_names(app_name: str = DEFAULT_APP_NAME) -> list[str]:
    """Ray actor names of the app's replicas (namespace ``serve``): fault drills kill these."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{DEPLOYMENT_NAME}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(prefix))
