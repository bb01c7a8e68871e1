"""Connection epoch ids: unique within a session, never reused, without any coordination.

Recorded rows are keyed by (session_id, epoch, sid, seq) and written with ON CONFLICT DO NOTHING.
Sids and seqs restart on every connection, so if two connections of one session ever shared an
epoch id, the second one's rows would collide with the first's and be dropped SILENTLY. Ids
therefore come from the wall clock (a restarted actor has no memory of the ids it used, but time
has moved on) and are strictly increasing within a process.

Two layouts, chosen by the width of the ``epoch`` columns (run.py reads it from the database):

- 64-bit (BIGINT, migration 0002): wall-clock microseconds times ``SLOTS`` + the collector's
  shard index modulo ``SLOTS``, so two collectors never collide even within one microsecond, and
  the per-process strictly-increasing rule covers one collector.
- 32-bit (INTEGER): 1 + deciseconds since the session started times ``SLOTS`` + the collector's
  shard index modulo ``SLOTS``, so collectors never collide with each other. A restarted actor
  first skips ``RESTART_SKIP_S`` ahead: its previous incarnation may have run ahead of the clock by
  reconnecting several times within one decisecond. Range: 2**31 / SLOTS deciseconds (19 days);
  past that the ids would overflow, which :meth:`EpochClock.next` refuses loudly.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EpochClock", "SLOTS", "INT32_MAX"]

SLOTS: Final = 128
INT32_MAX: Final = 2**31 - 1
RESTART_SKIP_S: Final = 5.0
_DECISECOND_NS: Final = 100_000_000


class EpochClock:
    """Hands out epoch ids for one collector process."""

    __slots__ = ("bits", "session_start_ns", "slot", "_last", "_skip_ns")

    def __init__(
        self, *, bits: int = 64, session_start_ns: int = 0, shard_index: int = 0, restarted: bool = False
    ) -> None:
        if bits not in (32, 64):
            raise ValueError(f"epoch columns are 32 or 64 bits wide, not {bits}")
        self.bits = bits
        self.session_start_ns = session_start_ns
        self.slot = shard_index % SLOTS
        # 32-bit ids are 1 + ticks * SLOTS + slot: never 0 (the shard's "not connected"), and
        # starting one step below the first id keeps "last + SLOTS" on this collector's slot.
        self._last = self.slot - SLOTS if bits == 64 else 1 + self.slot - SLOTS
        self._skip_ns = int(RESTART_SKIP_S * 1e9) if restarted else 0

    def next(self, now_ns: int) -> int:
        """A fresh id for a connection made at ``now_ns`` (wall clock), > every id handed out before."""
        now_ns += self._skip_ns
        if self.bits == 64:
            epoch = max((now_ns // 1000) * SLOTS + self.slot, self._last + SLOTS)
        else:
            ticks = max(0, now_ns - self.session_start_ns) // _DECISECOND_NS
            epoch = max(1 + ticks * SLOTS + self.slot, self._last + SLOTS)
            if epoch > INT32_MAX:
                raise OverflowError(
                    "32-bit epoch ids are exhausted for this session (it ran past ~19 days); "
                    "widen the epoch columns to BIGINT or start a new session"
                )
        self._last = epoch
        return epoch
