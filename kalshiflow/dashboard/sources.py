"""Where the Broadcaster's numbers come from: named actors, found by name, called with timeouts.

The only module of the dashboard that talks to Ray. Lookups are by NAME every few seconds rather
than by handles given at start, so collectors added later, restarted actors and a Trader started
after the Broadcaster all appear without telling it. A call that fails or times out yields None
(shown as "no data" on the page), never an exception in the poll loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import ray

from kalshiflow.launch.spec import ActorNames

__all__ = ["ActorDirectory", "BackgroundLookup", "memory_of_launch"]

log = logging.getLogger("kalshiflow.broadcaster")

REFRESH_S = 3.0
T = TypeVar("T")


class BackgroundLookup(Generic[T]):
    """A blocking lookup run in a thread beside the poll loop: ``start()`` begins one unless one
    is still running, and ``value`` keeps the last result meanwhile. Some lookups take seconds
    or longer on a loaded machine (the state API's actor list took ~5 s a call; the Serve status
    lookup did not come back within a whole test): awaited in the poll round they froze every
    panel of the dashboard; here they only leave their own figure stale."""

    def __init__(self, lookup: Callable[[], T], initial: T, what: str) -> None:
        self._lookup, self.value, self._what = lookup, initial, what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._what)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        try:
            self.value = await asyncio.to_thread(self._lookup)
        except Exception as err:  # noqa: BLE001 - keep the last value; the next start retries
            log.debug("broadcaster: %s failed: %r", self._what, err)

    def cancel(self) -> None:
        """Stop waiting (the thread itself runs to its end; nothing reads its result)."""
        if self._task is not None:
            self._task.cancel()


class ActorDirectory:
    def __init__(self, namespace: str, names: ActorNames) -> None:
        self.namespace = namespace
        self.names = names
        self._handles: dict[str, Any] = {}
        self._collectors: list[str] = []
        self._write_queue: str | None = None
        self._refreshed = 0.0
        self._refreshing = asyncio.Lock()
        self.policy_lookup = BackgroundLookup(self._policy_lookup, (None, False), "policy server lookup")

    @property
    def _policy(self) -> Any:
        return self.policy_lookup.value[0]

    @property
    def has_policy_server(self) -> bool:
        return self.policy_lookup.value[1]

    async def refresh(self) -> None:
        """Look the actors up again, at most every REFRESH_S (list_named_actors asks the GCS); the
        PolicyServer's lookup runs in the background (see BackgroundLookup). A caller that comes
        while another's lookup runs waits for its answer: it must not see the names of before."""
        async with self._refreshing:
            if time.monotonic() - self._refreshed < REFRESH_S:
                return
            self._refreshed = time.monotonic()
            self.policy_lookup.start()
            self._collectors, self._write_queue, self._handles = await asyncio.to_thread(self._lookup)

    def _lookup(self) -> tuple[list[str], str | None, dict[str, Any]]:
        # All namespaces, filtered: inside an actor, "current namespace" is the job's, which need
        # not be the one the launch named its actors in.
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == self.namespace
        ]
        collectors = sorted(n for n in names if n.startswith(self.names.collector_prefix))
        # The collection names its WriteQueue "write-queue-<session prefix>"; one per launch.
        queues = sorted(n for n in names if n.startswith(self.names.write_queue))
        handles: dict[str, Any] = {}
        for name in collectors + queues[:1] + [self.names.trader, self.names.reconciler]:
            if name in names:
                with contextlib.suppress(ValueError):
                    handles[name] = self._handles.get(name) or ray.get_actor(name, namespace=self.namespace)
        return collectors, queues[0] if queues else None, handles

    def _policy_lookup(self) -> tuple[Any, bool]:
        try:
            from ray import serve

            app = serve.status().applications.get(self.names.policy_app)
            if app is None:
                return None, False
            return self._policy or serve.get_app_handle(self.names.policy_app), True
        except Exception:  # noqa: BLE001 - Serve not started in this cluster: no policy server
            return None, False

    def collectors(self) -> list[Any]:
        return [self._handles[n] for n in self._collectors if n in self._handles]

    def collector(self, collector_id: str) -> Any:
        return self._handles.get(collector_id)

    def write_queue(self) -> Any:
        return self._handles.get(self._write_queue) if self._write_queue else None

    def trader(self) -> Any:
        return self._handles.get(self.names.trader)

    def reconciler(self) -> Any:
        return self._handles.get(self.names.reconciler)

    async def call(self, handle: Any, method: str, *args: Any, timeout: float) -> Any:
        if handle is None:
            return None
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout)
        except Exception as err:  # noqa: BLE001 - dead, restarting, slow or lacking the method
            log.debug("broadcaster: %s() failed: %r", method, err)
            return None

    async def call_all(self, handles: Sequence[Any], method: str, *args: Any, timeout: float) -> list[Any]:
        results = await asyncio.gather(*(self.call(h, method, *args, timeout=timeout) for h in handles))
        return [r for r in results if r is not None]

    async def policy_stats(self, timeout: float) -> Any:
        if self._policy is None:
            return None
        try:
            return await asyncio.wait_for(self._policy.stats.remote(), timeout)
        except Exception as err:  # noqa: BLE001
            log.debug("broadcaster: policy stats failed: %r", err)
            return None


def memory_of_launch(namespace: str, launcher_pid: int, names: ActorNames) -> float | None:
    """Resident memory (MiB) of this launch's processes on this node: the launcher (simulator and
    session bookkeeping live there) and every live actor of the namespace plus the PolicyServer's
    replicas. Found with Ray's state API; None when it is unavailable (no Ray dashboard)."""
    try:
        import psutil
        from ray.util.state import list_actors

        context = ray.get_runtime_context()
        node = context.get_node_id()
        # The address explicitly: "find the cluster" fails where several run on one machine.
        actors = list_actors(
            address=context.gcs_address,
            filters=[("state", "=", "ALIVE")],
            limit=10_000,
            raise_on_missing_output=False,
        )
        pids = {launcher_pid}
        replica = f"SERVE_REPLICA::{names.policy_app}#"
        for a in actors:
            ours = a.ray_namespace == namespace or (a.name or "").startswith(replica)
            if ours and a.node_id == node and a.pid:
                pids.add(int(a.pid))
        total = 0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total / 2**20
    except Exception as err:  # noqa: BLE001 - memory is informative; never fail the poll for it
        log.debug("broadcaster: memory unavailable: %r (pid %d)", err, os.getpid())
        return None
