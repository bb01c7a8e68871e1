"""The risk gate's day, kept on disk: a restarted Trader must not forget today's loss.

The daily loss stop compares the account with its value at the start of the UTC day, and the
volume cap adds up today's fills. A Trader restarted mid-day (Ray restarts it, or an operator
does) would otherwise take the current value as the start of the day and an empty volume: a
loss stop could be bypassed by crashing. So the gate's day (start value, volume, the loss-stop
latch) and a standing kill switch are written to a small file per account, atomically, and read
back when a Trader starts. A record of an earlier day restores only the kill switch (an operator
action stands until an operator resumes); a record that cannot be read is an error the Trader
reports by staying halted, never a silent fresh start.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import msgspec

from kalshiflow.trading.risk import Mode, ModeEvent, RiskGate

__all__ = ["RiskDay", "RiskDayError", "RiskDayStore", "record_of", "restore", "risk_day_path"]

_VERSION = 1


class RiskDayError(RuntimeError):
    """The saved risk state exists but cannot be used (corrupt, another version)."""


class RiskDay(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int = _VERSION
    day: int  # UTC day number (epoch days) the figures belong to
    start_value: int | None  # Money; None = not known yet that day
    volume: int  # Money filled that day
    loss_latched: bool
    killed: str | None = None  # kill-switch reason while the gate stands killed (any day)
    saved_at: float = 0.0


def record_of(gate: RiskGate) -> RiskDay:
    """What of ``gate`` must outlive its process."""
    killed = None
    if gate.mode is Mode.HALTED and gate.transitions and gate.transitions[-1].event is ModeEvent.KILL:
        killed = gate.mode_reason
    return RiskDay(day=gate.day, start_value=gate.start_value, volume=gate.volume,
                   loss_latched=gate.loss_latched, killed=killed)


def restore(gate: RiskGate, rec: RiskDay) -> list[str]:
    """Put ``rec`` back into a fresh gate; returns what was restored, in words (for the log)."""
    done: list[str] = []
    if rec.day == gate.day:
        gate.start_value, gate.volume = rec.start_value, rec.volume
        done.append(f"start-of-day value {rec.start_value}, volume {rec.volume}")
        if rec.loss_latched:
            gate.latch_loss_stop("daily loss stop latched earlier today (restored)")
            done.append("loss stop latched")
    if rec.killed is not None:
        gate.kill(f"{rec.killed} (restored)")
        done.append(f"kill switch: {rec.killed}")
    return done


def risk_day_path(state_dir: Path, environment: str, account: str) -> Path:
    """One file per exchange environment and account (the API key id where there is one)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{environment}-{account}")
    return state_dir / f"{safe}.json"


class RiskDayStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: RiskDay | None = None

    def load(self) -> RiskDay | None:
        """None when nothing was saved yet; :class:`RiskDayError` when the file is unusable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            rec = msgspec.json.decode(data, type=RiskDay)
        except msgspec.DecodeError as err:
            raise RiskDayError(f"risk state {self.path} is unreadable ({err}); check it, then delete it "
                               "to start the day afresh") from err
        if rec.version != _VERSION:
            raise RiskDayError(f"risk state {self.path} has version {rec.version}, expected {_VERSION}")
        self._last = rec
        return rec

    def save(self, rec: RiskDay) -> bool:
        """Write ``rec`` if it differs from the last one written or read; atomic (tmp, fsync, rename)."""
        if self._last is not None and msgspec.structs.replace(self._last, saved_at=0.0) == rec:
            return False
        rec = msgspec.structs.replace(rec, saved_at=time.time())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(rec))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._last = rec
        return True
