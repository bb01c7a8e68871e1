"""Decide when the registry's ``current`` pointer asks for a model change (edge-triggered).

The registry replaces ``models/current`` atomically (write temp + rename) on every promote and
rollback, so each change gives the file a new inode and mtime. A :class:`PointerStamp` captures
(version, mtime_ns, inode); the watcher acts once per new stamp, not on every poll where the
pointer differs from what is served. Two consequences, both intended:

- An operator command on the server (``rollback()``, ``use_version()``) is not undone by the next
  poll: the pointer did not change, so there is nothing new to act on. The next promotion in the
  registry (a new stamp) wins again: the most recent instruction, from either side, is served.
- A refused version (schema mismatch) is tried once per stamp, not every poll: one refusal
  reported, not thousands. A load that failed for another reason (e.g. a transient read error)
  is retried after ``retry_after_s``.

:func:`read_pointer` is the only I/O here (one ``stat`` and a few bytes); the decision is pure.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

__all__ = ["PointerStamp", "PointerWatch", "read_pointer", "startup_candidates"]

POINTER = "current"


class PointerStamp(msgspec.Struct, frozen=True):
    version: str | None  # None: no pointer file, or an empty one (nothing promoted yet)
    mtime_ns: int = 0
    inode: int = 0


def read_pointer(models_dir: str | Path) -> PointerStamp:
    path = Path(models_dir) / POINTER
    try:
        with open(path, "rb") as fh:
            # fstat on the open file: the stamp and the text describe the same file even if the
            # registry renames a new pointer over it between the two calls.
            st = os.fstat(fh.fileno())
            text = fh.read(256).decode(errors="replace").strip()
    except FileNotFoundError:
        return PointerStamp(None)
    return PointerStamp(text or None, st.st_mtime_ns, st.st_ino)


class PointerWatch:
    """Which version, if any, to load for the pointer seen now.

    Usage per poll::

        version = watch.due(stamp, now)
        if version is not None:
            ok, retry = try_to_switch(version)
            watch.settle(stamp, retry=retry, now=now)
    """

    def __init__(self, retry_after_s: float = 10.0) -> None:
        self.retry_after_s = retry_after_s
        self._handled: PointerStamp | None = None  # the last stamp acted upon
        self._retry_at: float | None = None  # when a failed load of that stamp may be retried

    def due(self, stamp: PointerStamp, now: float) -> str | None:
        if stamp.version is None:
            # The pointer vanished or was emptied: not an instruction to stop trading; keep the
            # live model (and mark it seen, so it is not reconsidered every poll).
            self._handled, self._retry_at = stamp, None
            return None
        if stamp != self._handled:
            return stamp.version
        if self._retry_at is not None and now >= self._retry_at:
            return stamp.version
        return None

    def settle(self, stamp: PointerStamp, *, retry: bool, now: float) -> None:
        """Record that ``stamp`` was acted upon; ``retry``: the attempt failed transiently."""
        self._handled = stamp
        self._retry_at = now + self.retry_after_s if retry else None

    @property
    def handled(self) -> PointerStamp | None:
        return self._handled


def startup_candidates(pointer: str | None, promoted: list[str]) -> list[str]:
    """Versions a starting replica tries, in order: the pointer, then earlier promotions still in
    effect (``Registry.stack()``, oldest first), newest first. A restarted replica whose pointer
    names a refused version then still serves the last good one instead of HOLDing everything."""
    out = [pointer] if pointer else []
    for v in reversed(promoted):
        if v not in out:
            out.append(v)
    return out
