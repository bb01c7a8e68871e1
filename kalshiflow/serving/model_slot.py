"""The double-buffered model holder behind the PolicyServer (no Ray, no Serve: testable alone).

- ``live``: the model every batch reads. A batch takes ONE reference to it at its start and uses
  only that, so a swap can never mix two models inside a batch or drop a request.
- A new version is loaded BESIDE the live one, in a worker thread (``switch_to``), checked
  against the schema hash this code builds, and only then installed with a single attribute
  assignment on the event loop: requests keep being answered by the old model while the new one
  loads, and a version that fails to load or is refused never replaces anything. (Loading inside
  Serve's ``reconfigure`` would instead mark the replica unready for the whole load, Serve
  #54509.)
- Replaced models stay in memory (``keep_previous``), so ``rollback()`` and going back to a recent
  version are instant and need no disk.
- Refusals, failures, swaps and rollbacks are counted and logged as ControlEvents for ``stats()``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import msgspec
import numpy as np

from kalshiflow.rl.features import SchemaMismatchError
from kalshiflow.serving.messages import (
    HOLD_ACTION,
    ActBatch,
    ActBatchReply,
    ActReply,
    ActRequest,
    ControlEvent,
    EventKind,
    ReplyStatus,
    hold_reply,
)

__all__ = [
    "LoadedModel", "Loader", "ModelSlot", "Policy", "SwitchOutcome", "code_schema_hash", "registry_loader",
]


class Policy(Protocol):
    """What the slot needs of a loaded model (kalshiflow.rl.policy.ModelPolicy satisfies it)."""

    schema_hash: str
    n_features: int
    n_actions: int

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


Loader = Callable[[str], Policy]  # version -> loaded policy; raises SchemaMismatchError to refuse


def code_schema_hash(sizes: Sequence[int], max_position: int) -> str:
    """The schema hash the running feature + action code builds for the live trader's settings."""
    from kalshiflow.rl.actions import ActionTable
    from kalshiflow.rl.features import schema_hash

    return schema_hash(ActionTable(tuple(sizes)), max_position)


def registry_loader(models_dir: str | Path | None, expected_schema_hash: str) -> Loader:
    """A Loader over the RL team's registry: ``load_policy`` refuses a mismatch before reading weights."""

    def load(version: str) -> Policy:
        from kalshiflow.rl.policy import load_policy

        return load_policy(version, models_dir, expected_schema_hash=expected_schema_hash)

    return load


@dataclass(frozen=True, slots=True)
class LoadedModel:
    version: str
    policy: Policy
    loaded_at: float  # time.time()
    load_ms: float


class SwitchOutcome(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    kind: Literal["swap", "already", "refused", "failed", "rollback"]
    version: str  # served after the attempt
    previous: str  # served before
    message: str = ""
    retry: bool = False  # a transient failure: worth trying the same version again later


class ModelSlot:
    def __init__(self, loader: Loader, schema_hash: str, *, keep_previous: int = 2, max_events: int = 64,
                 no_model: str = "none") -> None:
        self.loader = loader
        self.schema_hash = schema_hash
        self.keep_previous = keep_previous
        self.no_model = no_model
        self._live: LoadedModel | None = None
        self._previous: list[LoadedModel] = []  # newest last
        self._lock = asyncio.Lock()  # one load at a time: a poll and a command never race
        self.events: deque[ControlEvent] = deque(maxlen=max_events)
        self.reloads = self.refusals = self.load_failures = self.rollbacks = 0
        self.last_refusal = ""

    # ------------------------------------------------------------------ state

    @property
    def live(self) -> LoadedModel | None:
        return self._live

    @property
    def version(self) -> str:
        return self._live.version if self._live else self.no_model

    @property
    def previous_versions(self) -> list[str]:
        return [m.version for m in self._previous]

    def _event(self, kind: EventKind, version: str, trigger: str, message: str = "") -> None:
        self.events.append(ControlEvent(at=time.time(), kind=kind, version=version, trigger=trigger,
                                        message=message))

    # ------------------------------------------------------------------ load beside, swap

    def prepare(self, version: str) -> LoadedModel:
        """Load ``version`` without touching the live model (blocking: call it from a thread)."""
        t0 = time.perf_counter()
        policy = self.loader(version)
        # Belt and braces: a loader that skipped the check must still not get a foreign model in.
        if policy.schema_hash != self.schema_hash:
            raise SchemaMismatchError(f"model {version} has schema {policy.schema_hash[:12]}…, this server "
                                      f"accepts {self.schema_hash[:12]}…")
        return LoadedModel(version, policy, time.time(), round((time.perf_counter() - t0) * 1e3, 3))

    def install(self, model: LoadedModel, trigger: str, note: str = "") -> str:
        """Make ``model`` live (one assignment: atomic for the batches) -> the version it replaced."""
        old = self._live
        self._live = model
        if old is not None and old.version != model.version:
            self._previous = [m for m in self._previous if m.version not in (old.version, model.version)]
            self._previous.append(old)
            del self._previous[:max(0, len(self._previous) - self.keep_previous)]
        self.reloads += 1
        self._event("swap", model.version, trigger, note or f"loaded in {model.load_ms:.0f} ms")
        return old.version if old else self.no_model

    async def switch_to(self, version: str, trigger: str) -> SwitchOutcome:
        """Serve ``version``: from memory when it was live recently, else loaded beside in a thread."""
        async with self._lock:
            before = self.version
            if self._live is not None and self._live.version == version:
                return SwitchOutcome(ok=True, kind="already", version=version, previous=before)
            kept = next((m for m in self._previous if m.version == version), None)
            if kept is not None:
                self._previous.remove(kept)
                self.install(kept, trigger, "from memory")
                return SwitchOutcome(ok=True, kind="swap", version=version, previous=before,
                                     message="from memory")
            try:
                model = await asyncio.to_thread(self.prepare, version)
            except SchemaMismatchError as err:
                self.refusals += 1
                self.last_refusal = f"{version}: {err}"
                self._event("refused", version, trigger, str(err))
                return SwitchOutcome(ok=False, kind="refused", version=before, previous=before,
                                     message=str(err))
            except Exception as err:  # noqa: BLE001 - any load failure leaves the live model serving
                self.load_failures += 1
                self._event("failed", version, trigger, repr(err))
                return SwitchOutcome(ok=False, kind="failed", version=before, previous=before,
                                     message=repr(err), retry=True)
            self.install(model, trigger)
            return SwitchOutcome(ok=True, kind="swap", version=version, previous=before,
                                 message=f"loaded in {model.load_ms:.0f} ms")

    async def first_loadable(self, candidates: Sequence[str], trigger: str) -> SwitchOutcome | None:
        """Try ``candidates`` in order until one serves -> the last outcome (None: no candidates)."""
        outcome: SwitchOutcome | None = None
        for version in candidates:
            outcome = await self.switch_to(version, trigger)
            if outcome.ok:
                break
        return outcome

    async def rollback(self, trigger: str = "rollback") -> SwitchOutcome:
        """Back to the version served before the live one; the live one is dropped (not re-stacked)."""
        async with self._lock:
            before = self.version
            if not self._previous:
                return SwitchOutcome(ok=False, kind="rollback", version=before, previous=before,
                                     message="nothing to roll back to on this replica")
            back = self._previous.pop()
            self._live = back
            self.rollbacks += 1
            self._event("rollback", back.version, trigger, f"from {before}")
            return SwitchOutcome(ok=True, kind="rollback", version=back.version, previous=before)

    # ------------------------------------------------------------------ inference

    def answer(self, requests: Sequence[ActRequest]) -> list[ActReply]:
        """Replies in request order. Never raises: one bad request cannot fail its batch-mates."""
        model = self._live  # ONE model for the whole batch, whatever a swap does meanwhile
        if model is None:
            return [hold_reply(r, "no_model") for r in requests]
        policy, n = model.policy, len(requests)
        obs = np.empty((n, policy.n_features), np.float32)
        mask = np.empty((n, policy.n_actions), np.float32)
        replies: list[ActReply | None] = [None] * n
        rows: list[int] = []
        for i, r in enumerate(requests):
            problem = _copy_in(r, policy, obs[len(rows)], mask[len(rows)])
            if problem is not None:
                replies[i] = hold_reply(r, problem[0], problem[1], model.version)
            else:
                rows.append(i)
        k = len(rows)
        actions, problems, used = _forward(policy, obs[:k], mask[:k])
        for j, i in enumerate(rows):
            r, p = requests[i], problems.get(j)
            replies[i] = (hold_reply(r, p[0], p[1], model.version) if p else
                          ActReply(action=int(actions[j]), version=model.version, batch_size=used,
                                   ticker=r.ticker, request_id=r.request_id))
        return replies  # type: ignore[return-value]

    def answer_batch(self, batch: ActBatch) -> ActBatchReply:
        """The column-wise form of :meth:`answer` (same checks, one forward pass)."""
        model = self._live
        obs, mask = np.asarray(batch.obs), np.asarray(batch.mask)
        n = obs.shape[0] if obs.ndim == 2 else 0

        def all_rows(status: ReplyStatus, error: str, version: str) -> ActBatchReply:
            return ActBatchReply(actions=np.full(n, HOLD_ACTION, np.int64), status=[status] * n,
                                 version=version, request_id=batch.request_id,
                                 errors=dict.fromkeys(range(n), error))

        if model is None:
            return all_rows("no_model", "", self.no_model)
        policy = model.policy
        if batch.schema_hash is not None and batch.schema_hash != policy.schema_hash:
            return all_rows("schema_mismatch", _schema_error(batch.schema_hash, policy.schema_hash),
                            model.version)
        if obs.shape != (n, policy.n_features) or mask.shape != (n, policy.n_actions):
            return all_rows("bad_request", f"expected obs (B, {policy.n_features}) and mask "
                            f"(B, {policy.n_actions}), got {obs.shape} and {mask.shape}", model.version)
        # Arrays that come through Ray are read-only views of the message buffer, which torch warns
        # about; np.require copies only when needed (B x 59 floats: nothing next to the call).
        actions, problems, _ = _forward(policy, np.require(obs, np.float32, ("C", "W")),
                                        np.require(mask, np.float32, ("C", "W")))
        status: list[ReplyStatus] = ["ok"] * n
        for j, (st, _err) in problems.items():
            status[j] = st
        errors = {j: err for j, (_st, err) in problems.items()}
        return ActBatchReply(actions=actions, status=status, version=model.version,
                             request_id=batch.request_id, errors=errors)


def _schema_error(theirs: str, ours: str) -> str:
    return f"request schema {theirs[:12]}… != model schema {ours[:12]}…: built by other feature/action code"


def _copy_in(r: ActRequest, policy: Policy, obs_row: np.ndarray, mask_row: np.ndarray
             ) -> tuple[ReplyStatus, str] | None:
    """Copy one request into its batch row; (status, error) when it cannot be served."""
    if r.schema_hash is not None and r.schema_hash != policy.schema_hash:
        return "schema_mismatch", _schema_error(r.schema_hash, policy.schema_hash)
    try:
        # The length checks stop numpy from broadcasting a 1-element or scalar input over the row.
        if len(r.obs) != policy.n_features or len(r.mask) != policy.n_actions:
            raise ValueError(f"got {len(r.obs)} features and {len(r.mask)} mask entries")
        obs_row[:] = r.obs
        mask_row[:] = r.mask
    except (TypeError, ValueError) as err:
        return "bad_request", (f"expected {policy.n_features} features and {policy.n_actions} mask entries: "
                               f"{err}")
    return None


def _forward(policy: Policy, obs: np.ndarray, mask: np.ndarray
             ) -> tuple[np.ndarray, dict[int, tuple[ReplyStatus, str]], int]:
    """(actions, {row: (status, error)} for rows answered HOLD, rows in the forward pass).

    Row checks are vectorized; rows that fail them never reach the model. An exception from the
    model, or a choice outside the row's mask (the masked policy never does that; if it ever did,
    HOLD is the safe answer), turns into HOLD + "error" instead of failing the batch.
    """
    n = len(obs)
    actions = np.full(n, HOLD_ACTION, np.int64)
    problems: dict[int, tuple[ReplyStatus, str]] = {}
    finite = np.isfinite(obs).all(axis=1)
    allowed = (mask > 0).any(axis=1)
    for j in np.flatnonzero(~finite):
        problems[int(j)] = ("bad_request", "obs has NaN or inf")
    for j in np.flatnonzero(finite & ~allowed):
        problems[int(j)] = ("bad_request", "mask allows no action")
    good = finite & allowed
    rows = np.flatnonzero(good)
    if len(rows) == 0:
        return actions, problems, 0
    all_good = len(rows) == n
    try:
        chosen = np.asarray(policy.act(obs if all_good else obs[rows], mask if all_good else mask[rows]),
                            np.int64)
    except Exception as err:  # noqa: BLE001 - answered as HOLD + "error", counted in stats
        problems.update({int(j): ("error", repr(err)) for j in rows})
        return actions, problems, len(rows)
    in_range = (chosen >= 0) & (chosen < mask.shape[1])
    legal = in_range & (mask[rows, np.where(in_range, chosen, 0)] > 0)
    actions[rows[legal]] = chosen[legal]
    for j, a in zip(rows[~legal], chosen[~legal], strict=True):
        problems[int(j)] = ("error", f"model chose masked action {int(a)}")
    return actions, problems, len(rows)
