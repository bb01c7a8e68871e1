"""The model registry: ``models/<version>/`` folders, the ``current`` pointer, promotion, rollback.

Layout (see models/README.md)::

    models/
      current              one line: the version the live PolicyServer serves (atomic replace)
      history.jsonl        append-only promote / rollback events (what rollback walks back)
      .lock                flock'd around every pointer change
      v0001/
        manifest.json      written LAST: a folder without it is an unfinished or crashed run
        checkpoint/        the RLlib checkpoint (algo.save_to_path)
        train_log.jsonl    per-iteration training metrics
        validation/        the held-out evaluation report made at the end of training

The folder is the source of truth for artifacts; the ``models`` table mirrors manifests and
statuses so the UI and SQL can see them. Promotion is gated on evaluation (the prior system's
"current model" was a hand-edited JSON file, prior-system-lessons §4.10): a version becomes
current only when, on its own held-out validation data, its PnL beats the current model and the
hold and random baselines by a margin outside the 95 % confidence interval of the paired
per-episode difference, unless forced. A schema mismatch is refused even when forced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from kalshiflow.config import PROJECT_ROOT

__all__ = [
    "DEFAULT_MODELS_DIR", "Manifest", "PromotionResult", "Registry", "RegistryError", "promote",
    "record_evaluation", "record_model", "rollback", "run_db", "utc_now",
]

DEFAULT_MODELS_DIR = PROJECT_ROOT / "models"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint"
# The policy module inside an RLlib checkpoint (new API stack, single-agent default module id).
MODULE_SUBPATH = "checkpoint/learner_group/learner/rl_module/default_policy"
_VERSION = re.compile(r"^v(\d{4,})$")
T = TypeVar("T")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to, ...)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to rebuild, judge and reproduce one trained version.

    Unknown fields are tolerated on read so that an older checkout can still list newer models.
    """

    version: str
    created_at: str  # ISO 8601, UTC
    schema_hash: str  # kalshiflow.rl.features.schema_hash of the env the model was trained on
    schema_version: int
    algorithm: str = "ppo"
    module_path: str = MODULE_SUBPATH  # relative to the version folder
    env: dict[str, Any] = {}  # EnvConfig as builtins: rebuilds the same observation/action schema
    data: dict[str, Any] = {}  # data manifest: spec, kind, scenario, seeds/sessions, split, markets
    config: dict[str, Any] = {}  # the TrainConfig it was trained with
    metrics: dict[str, Any] = {}  # final training metrics + held-out validation summary
    code: dict[str, Any] = {}  # git commit, library versions


class Registry:
    """The ``models/`` folder. Cheap to construct; every method reads the disk afresh."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else DEFAULT_MODELS_DIR

    # ------------------------------------------------------------------ versions

    def path(self, version: str) -> Path:
        if not _VERSION.match(version):
            raise RegistryError(f"bad version name {version!r} (expected v0001, v0002, ...)")
        return self.root / version

    def versions(self, *, complete_only: bool = True) -> list[str]:
        """Version names in creation order; ``complete_only`` skips folders without a manifest."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        if complete_only:
            found = [v for v in found if (self.root / v / MANIFEST).is_file()]
        return sorted(found, key=lambda v: int(v[1:]))

    def reserve(self) -> tuple[str, Path]:
        """Claim the next version name by creating its folder (``mkdir`` is atomic, so two
        concurrent trainings never get the same name)."""
        self.root.mkdir(parents=True, exist_ok=True)
        taken = self.versions(complete_only=False)
        n = int(taken[-1][1:]) + 1 if taken else 1
        while True:
            version = f"v{n:04d}"
            try:
                (self.root / version).mkdir()
                return version, self.root / version
            except FileExistsError:
                n += 1

    def manifest(self, version: str) -> Manifest:
        path = self.path(version) / MANIFEST
        try:
            return msgspec.json.decode(path.read_bytes(), type=Manifest)
        except FileNotFoundError:
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"no model {version!r} in {self.root} (known: {known})") from None

    def write_manifest(self, manifest: Manifest) -> Path:
        path = self.path(manifest.version) / MANIFEST
        _atomic_write(path, msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
        return path

    def resolve(self, ref: str) -> str:
        """``current`` -> the current version; a version name -> itself (checked to exist)."""
        if ref in ("current", "model:current"):
            current = self.current()
            if current is None:
                raise RegistryError(f"no current model in {self.root}; promote one first")
            return current
        version = ref.removeprefix("model:")
        self.manifest(version)
        return version

    def load(self, ref: str, *, expected_schema_hash: str | None = None, device: str = "cpu") -> Any:
        """The loaded policy (:class:`kalshiflow.rl.policy.ModelPolicy`); refuses a schema mismatch."""
        from kalshiflow.rl.policy import load_policy

        return load_policy(ref, self.root, expected_schema_hash=expected_schema_hash, device=device)

    # ------------------------------------------------------------------ pointer + history

    def current(self) -> str | None:
        try:
            text = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def history(self) -> list[dict[str, Any]]:
        try:
            lines = (self.root / "history.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def stack(self) -> list[str]:
        """Promotions still in effect, oldest first: a promote pushes, a rollback pops."""
        out: list[str] = []
        for event in self.history():
            if event["event"] == "promote":
                out.append(event["version"])
            elif event["event"] == "rollback" and out:
                out.pop()
        return out

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _set_current(self, version: str | None, event: dict[str, Any]) -> None:
        # History first, pointer second: a crash in between leaves a history that a retry repairs,
        # never a pointer that history cannot explain.
        with open(self.root / "history.jsonl", "a") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _atomic_write(self.root / "current", f"{version}\n".encode() if version else b"")

    def set_current(self, version: str, *, reason: str, forced: bool = False,
                    evidence: dict[str, Any] | None = None) -> None:
        self.manifest(version)
        with self.locked():
            event = {"event": "promote", "version": version, "previous": self.current(), "forced": forced,
                     "reason": reason, "at": utc_now().isoformat(), "evidence": evidence or {}}
            self._set_current(version, event)

    def rollback(self) -> tuple[str | None, str]:
        """Make the previously promoted version current again -> (new current, rolled-back one)."""
        with self.locked():
            stack = self.stack()
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: fewer than two promotions in effect")
            gone, back = stack[-1], stack[-2]
            event = {"event": "rollback", "version": gone, "restored": back, "at": utc_now().isoformat()}
            self._set_current(back, event)
            return back, gone


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a temp file in the same folder, fsync, rename over: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- database mirror


def run_db(fn: Callable[[Any], Awaitable[T]], *, url: str | None = None) -> T:
    """Open the configured PostgreSQL (``DATABASE_URL`` or the embedded server), run ``fn(db)``."""
    from kalshiflow.config import load_config
    from kalshiflow.storage import open_database

    async def go() -> T:
        async with open_database(load_config(), url=url) as db:
            return await fn(db)

    return asyncio.run(go())


async def record_model(db: Any, manifest: Manifest, path: Path, *, status: str = "trained") -> None:
    created = dt.datetime.fromisoformat(manifest.created_at)
    row = (manifest.version, created, manifest.schema_hash, manifest.algorithm, str(path), manifest.data,
           manifest.config, manifest.metrics, status, None)
    await db.copy_insert("models", [row], update=("metrics", "status"))


async def set_status(db: Any, version: str, status: str) -> None:
    if status == "current":
        # One current model: whatever was current is retired in the same transaction.
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE models SET status = 'retired' WHERE status = 'current'")
            await conn.execute("UPDATE models SET status = 'current', promoted_at = now() WHERE version = $1",
                               version)
    else:
        await db.execute("UPDATE models SET status = $2 WHERE version = $1", version, status)


async def record_evaluation(db: Any, *, policy: str, model_version: str | None, data_spec: dict[str, Any],
                            metrics: dict[str, Any], report_path: str | None) -> uuid.UUID:
    evaluation_id = uuid.uuid4()
    row = (evaluation_id, model_version, policy, data_spec, utc_now(), metrics, report_path)
    await db.copy_insert("evaluations", [row])
    return evaluation_id


# ---------------------------------------------------------------------------- promotion gate


class PromotionResult(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    promoted: bool
    forced: bool
    data: str  # the data spec every policy was evaluated on
    split: str  # its split ("validation" unless a spec was given)
    episodes: int
    # competitor -> {"diff_mean", "ci_low", "ci_high", "beats"}: paired per-episode PnL difference
    comparisons: dict[str, dict[str, Any]]
    reason: str


def promote(registry: Registry, version: str, *, force: bool = False, episodes: int = 32,
            data: str | None = None, competitors: tuple[str, ...] = ("baseline:hold", "baseline:random"),
            seed: int = 0, use_db: bool = True, progress: bool = True) -> PromotionResult:
    """Evaluate ``version`` against the current model and the baselines; make it current if it wins.

    Every policy runs on the same episodes (same markets, same start points) of the candidate's
    held-out validation data, so the comparison is paired: for each competitor, the 95 % bootstrap
    CI of mean(candidate PnL - competitor PnL) per episode must lie entirely above zero.
    """
    from kalshiflow.rl.evaluate import EvalRequest, evaluate_many, paired_difference
    from kalshiflow.rl.policy import load_policy

    manifest = registry.manifest(version)
    load_policy(version, registry.root)  # raises SchemaMismatchError: never promotable, even forced
    # Default: the time-based validation split of the data the version trained on (its manifest
    # env carries the spec and the split fraction); an explicit spec is evaluated whole.
    spec = data or str(manifest.env.get("data") or manifest.data.get("spec"))
    split = "all" if data else "validation"
    current = registry.current()
    rivals = list(competitors)
    if current and current != version:
        try:
            load_policy(current, registry.root)
            rivals.insert(0, f"model:{current}")
        except Exception as err:  # noqa: BLE001 - an unloadable current model cannot defend its place
            print(f"note: current model {current} cannot be loaded ({err}); comparing with baselines only")
    request = EvalRequest(data=spec, split=split, episodes=episodes, seed=seed, env=manifest.env,
                          models_dir=str(registry.root))
    results = evaluate_many([f"model:{version}", *rivals], request, progress=progress, use_db=use_db)
    mine = results[f"model:{version}"]
    comparisons: dict[str, dict[str, Any]] = {}
    for rival in rivals:
        diff = paired_difference(mine, results[rival])
        comparisons[rival] = {**diff, "beats": diff["ci_low"] > 0.0}
    wins = all(c["beats"] for c in comparisons.values())
    losers = [r for r, c in comparisons.items() if not c["beats"]]
    if wins:
        reason = "beats " + ", ".join(rivals) + " outside the 95% CI"
    else:
        reason = "does not beat " + ", ".join(losers) + " outside the 95% CI"
    promoted = wins or force
    if promoted:
        registry.set_current(version, reason=reason if wins else f"forced; {reason}", forced=not wins,
                             evidence={"data": spec, "split": split, "episodes": episodes,
                                       "comparisons": comparisons})
        if use_db:
            run_db(lambda db: set_status(db, version, "current"))
    return PromotionResult(version=version, promoted=promoted, forced=promoted and not wins, data=spec,
                           split=split, episodes=episodes, comparisons=comparisons, reason=reason)


def rollback(registry: Registry, *, use_db: bool = True) -> tuple[str | None, str]:
    back, gone = registry.rollback()
    if use_db:
        async def mark(db: Any) -> None:
            await set_status(db, gone, "rolled_back")
            if back:
                await set_status(db, back, "current")

        run_db(mark)
    return back, gone
