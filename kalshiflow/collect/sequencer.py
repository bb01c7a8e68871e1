"""Per-subscription sequence tracking: is this frame next, a repeat, late, or after a hole?

Kalshi numbers frames per subscription id (``sid``), one counter shared by every market on that
sid, starting at 1 for a new sid (kalshi-protocol.md §1.8, S1). ``ok`` and ``unsubscribed`` replies
consume a number too (S2), so every frame that carries a ``seq`` must pass through here, not only
the order-book frames, or a reply would look like a gap.

Verdicts (plain ints, the hot path compares them without attribute lookups):

- ``OK``: the next number (or the first number of a new sid when it is the expected first).
- ``GAP``: numbers were skipped; ``gap`` holds (expected, received). The frame itself is accepted
  and becomes the new high-water mark, so one hole yields one GAP, not one per later frame.
- ``DUPLICATE``: at or below the high-water mark and not a number we know was skipped.
- ``OUT_OF_ORDER``: a number we had skipped (and reported in a GAP) arrives late.

DUPLICATE and OUT_OF_ORDER frames are to be ignored: the books that a late frame would have
updated were already invalidated by the GAP and wait for a snapshot.

Pure code: no clock, no I/O; the owner calls :meth:`reset` on a new connection.
"""

from __future__ import annotations

from typing import Final

__all__ = ["OK", "GAP", "DUPLICATE", "OUT_OF_ORDER", "VERDICT_NAMES", "Sequencer"]

OK: Final = 0
GAP: Final = 1
DUPLICATE: Final = 2
OUT_OF_ORDER: Final = 3
VERDICT_NAMES: Final = ("ok", "gap", "duplicate", "out_of_order")

# How many skipped numbers per sid we remember to tell "late" from "duplicate". Both are ignored,
# so past this bound a late frame is merely counted as a duplicate; memory stays bounded even if
# a peer jumps by millions.
_MISSING_LIMIT: Final = 4096


class Sequencer:
    """Tracks the last ``seq`` of each ``sid`` and classifies every arriving number."""

    __slots__ = ("_last", "_first", "_missing", "gap", "counts")

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self._first: dict[int, int] = {}  # expected first seq of a sid not seen yet (default 1)
        self._missing: dict[int, set[int]] = {}
        self.gap: tuple[int, int] = (0, 0)  # (expected, received) of the latest GAP
        self.counts = [0, 0, 0, 0]  # indexed by verdict

    def check(self, sid: int, seq: int) -> int:
        """Classify ``seq`` on ``sid`` and advance the sid's high-water mark when it moves forward."""
        last = self._last.get(sid)
        if last is not None and seq == last + 1:  # the hot path: one dict get, one set
            self._last[sid] = seq
            self.counts[OK] += 1
            return OK
        verdict = self._slow(sid, seq, last)
        self.counts[verdict] += 1
        return verdict

    def _slow(self, sid: int, seq: int, last: int | None) -> int:
        if last is None:
            expected = self._first.pop(sid, 1)
            self._last[sid] = max(seq, expected - 1)
            if seq == expected:
                return OK
            if seq < expected:
                return DUPLICATE
            self._remember(sid, expected, seq)
            self.gap = (expected, seq)
            return GAP
        if seq <= last:
            missing = self._missing.get(sid)
            if missing is not None and seq in missing:
                missing.discard(seq)
                return OUT_OF_ORDER
            return DUPLICATE
        self._remember(sid, last + 1, seq)
        self._last[sid] = seq
        self.gap = (last + 1, seq)
        return GAP

    def _remember(self, sid: int, first_missing: int, received: int) -> None:
        missing = self._missing.setdefault(sid, set())
        # Keep the newest skipped numbers: late frames arrive shortly after their successors.
        start = max(first_missing, received - _MISSING_LIMIT)
        missing.update(range(start, received))
        if len(missing) > _MISSING_LIMIT:
            keep = sorted(missing)[-_MISSING_LIMIT:]
            missing.clear()
            missing.update(keep)

    # ------------------------------------------------------------------ bookkeeping

    def expect_first(self, sid: int, seq: int) -> None:
        """The first frame of a not-yet-seen ``sid`` should carry ``seq`` (default 1)."""
        if sid not in self._last:
            self._first[sid] = seq

    def last(self, sid: int) -> int | None:
        """Highest number seen on ``sid`` (None before its first frame)."""
        return self._last.get(sid)

    def forget(self, sid: int) -> None:
        """Drop a sid (unsubscribed): a later sid with the same number starts afresh at 1."""
        self._last.pop(sid, None)
        self._first.pop(sid, None)
        self._missing.pop(sid, None)

    def reset(self) -> None:
        """A new connection: every sid and counter restarts (Kalshi has no resume)."""
        self._last.clear()
        self._first.clear()
        self._missing.clear()

    @property
    def sids(self) -> tuple[int, ...]:
        return tuple(self._last)

    def summary(self) -> dict[str, int]:
        return dict(zip(VERDICT_NAMES, self.counts, strict=True))
