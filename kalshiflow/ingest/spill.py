"""The spill log: batches the WriteQueue acknowledged while PostgreSQL was unreachable.

Layout: ``<spill_dir>/<instance>/`` holds numbered segment files ``000000000001.seg``, ... (drained
in number order), a ``LOCK`` file (one live WriteQueue per directory) and ``quarantine/`` (records
PostgreSQL refused outright, and segments that had corrupt regions: kept for a human, never
replayed automatically).

Segment format: the 8-byte header ``KFSPILL1``, then records::

    b"KFR1" | u32 payload length | u32 CRC-32 of payload | payload (msgpack SpillRecord)

Little-endian. A record is appended with one ``write`` and made durable with ``fsync`` before the
batch is acknowledged, so an acknowledged record is always whole on disk. A crash mid-append
leaves a torn tail: the reader stops there, keeps the intact prefix and reports the damage. A
bad region in the middle (bit rot, a bad sector) is skipped by scanning for the next record magic
whose CRC checks out, so one bad record does not cost the records after it.

Values round-trip exactly: msgpack's native types come back as they went in, and the types it
would silently turn into strings (UUID, Decimal, date, time, timedelta, naive datetime) travel as
msgpack extension types instead. Rows come back as lists (asyncpg's COPY takes any sequence).

This module does blocking file I/O; the actor calls it from a worker thread, one call at a time.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "SegmentScan",
    "SpillLocked",
    "SpillLog",
    "SpillRecord",
    "decode_record",
    "encode_record",
    "scan_segment",
]

log = logging.getLogger("kalshiflow.ingest")

SEGMENT_MAGIC = b"KFSPILL1"
RECORD_MAGIC = b"KFR1"
_HEADER = struct.Struct("<4sII")  # magic, payload length, crc32
_MAX_RECORD = 1 << 30  # a length above this is corruption, not a record

Rows = dict[str, list[Any]]


class SpillRecord(msgspec.Struct, frozen=True, array_like=True):
    batch_id: str
    rows: Rows


class SpillLocked(RuntimeError):
    """Another live WriteQueue holds this spill directory."""


# ------------------------------------------------------------------ exact value round trip

_EXT_UUID, _EXT_DECIMAL, _EXT_NAIVE_DATETIME, _EXT_DATE, _EXT_TIME, _EXT_TIMEDELTA = range(1, 7)
_TD = struct.Struct("<qqq")
# Types msgspec would encode as strings (or that may hold them): checked per value, spill path only.
_SPECIAL = frozenset({uuid.UUID, Decimal, dt.datetime, dt.date, dt.time, dt.timedelta, list, tuple})


def _ext(value: Any) -> Any:
    kind = type(value)
    if kind is uuid.UUID:
        return msgspec.msgpack.Ext(_EXT_UUID, value.bytes)
    if kind is dt.datetime:
        # Aware datetimes are native msgpack timestamps; naive ones would become strings.
        return (
            value
            if value.tzinfo is not None
            else msgspec.msgpack.Ext(_EXT_NAIVE_DATETIME, value.isoformat().encode())
        )
    if kind is Decimal:
        return msgspec.msgpack.Ext(_EXT_DECIMAL, str(value).encode())
    if kind is dt.date:
        return msgspec.msgpack.Ext(_EXT_DATE, value.isoformat().encode())
    if kind is dt.time:
        return msgspec.msgpack.Ext(_EXT_TIME, value.isoformat().encode())
    if kind is dt.timedelta:
        return msgspec.msgpack.Ext(_EXT_TIMEDELTA, _TD.pack(value.days, value.seconds, value.microseconds))
    if kind is list or kind is tuple:
        return [_ext(v) for v in value]
    return value


def _from_ext(code: int, data: memoryview) -> Any:
    raw = bytes(data)
    if code == _EXT_UUID:
        return uuid.UUID(bytes=raw)
    if code == _EXT_DECIMAL:
        return Decimal(raw.decode())
    if code == _EXT_NAIVE_DATETIME:
        return dt.datetime.fromisoformat(raw.decode())
    if code == _EXT_DATE:
        return dt.date.fromisoformat(raw.decode())
    if code == _EXT_TIME:
        return dt.time.fromisoformat(raw.decode())
    if code == _EXT_TIMEDELTA:
        days, seconds, micros = _TD.unpack(raw)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    raise ValueError(f"unknown spill extension type {code}")


def _portable(rows: Mapping[str, Sequence[Sequence[Any]]]) -> Rows:
    out: Rows = {}
    special = _SPECIAL
    for table, table_rows in rows.items():
        converted: list[Any] = []
        for row in table_rows:
            if any(type(v) in special for v in row):
                converted.append([_ext(v) for v in row])
            else:
                converted.append(row)
        out[table] = converted
    return out


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpillRecord, ext_hook=_from_ext)


def encode_record(batch_id: str, rows: Mapping[str, Sequence[Sequence[Any]]]) -> bytes:
    """One framed record (header + payload), ready to append."""
    payload = _encoder.encode(SpillRecord(batch_id, _portable(rows)))
    return _HEADER.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_record(payload: bytes | memoryview) -> SpillRecord:
    return _decoder.decode(payload)


# ------------------------------------------------------------------ reading


class SegmentScan(msgspec.Struct, kw_only=True):
    """What a segment held: the intact records, and how much of the file was not readable."""

    path: str
    records: list[SpillRecord]
    bad_regions: int = 0  # corrupt stretches skipped in the middle
    bad_bytes: int = 0  # bytes in those stretches
    torn_tail_bytes: int = 0  # an incomplete last record (a crash mid-append: never acknowledged)
    bad_header: bool = False

    @property
    def damaged(self) -> bool:
        return self.bad_regions > 0 or self.bad_header

    @property
    def rows(self) -> int:
        return sum(len(r) for rec in self.records for r in rec.rows.values())


def _record_at(data: bytes, offset: int) -> tuple[SpillRecord | None, int]:
    """(record, end offset) if a whole, valid record starts at ``offset``; (None, -1) if the bytes
    there are damaged; (None, -2) if the file ends inside the record."""
    if offset + _HEADER.size > len(data):
        return None, -2
    magic, length, crc = _HEADER.unpack_from(data, offset)
    if magic != RECORD_MAGIC or length > _MAX_RECORD:
        return None, -1
    start = offset + _HEADER.size
    end = start + length
    if end > len(data):
        return None, -2
    payload = memoryview(data)[start:end]
    if zlib.crc32(payload) != crc:
        return None, -1
    try:
        return decode_record(payload), end
    except (msgspec.DecodeError, ValueError):
        return None, -1


def scan_segment(path: Path) -> SegmentScan:
    """Read every intact record of a segment, skipping and counting damaged bytes."""
    data = path.read_bytes()
    scan = SegmentScan(path=str(path), records=[])
    offset = len(SEGMENT_MAGIC)
    if data[:offset] != SEGMENT_MAGIC:
        if len(data) < offset and SEGMENT_MAGIC.startswith(data):
            scan.torn_tail_bytes = len(data)  # died while creating the file: nothing was in it
            return scan
        scan.bad_header = True
        offset = 0
    while offset < len(data):
        record, end = _record_at(data, offset)
        if record is not None:
            scan.records.append(record)
            offset = end
            continue
        # Damaged or incomplete here: look for the next place a whole valid record starts.
        probe = data.find(RECORD_MAGIC, offset + 1)
        while probe != -1:
            found, _ = _record_at(data, probe)
            if found is not None:
                break
            probe = data.find(RECORD_MAGIC, probe + 1)
        if probe == -1:
            if end == -2:
                scan.torn_tail_bytes = len(data) - offset
            else:
                scan.bad_regions += 1
                scan.bad_bytes += len(data) - offset
            break
        scan.bad_regions += 1
        scan.bad_bytes += probe - offset
        offset = probe
    return scan


# ------------------------------------------------------------------ the log


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpillLog:
    """Append-only, fsynced segment files in one directory, owned by one process at a time."""

    def __init__(self, directory: str | Path, *, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.quarantine_dir = self.directory / "quarantine"
        self.segment_bytes = max(1024, segment_bytes)
        self._lock_fd: int | None = None
        self._active: Path | None = None
        self._active_fd: int | None = None
        self._active_size = 0
        self._next_number = 1

    # -------------------------------------------------------------- ownership

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def open(self, *, wait_s: float = 30.0) -> None:
        """Take the directory's lock (waiting for a dying predecessor to let go), find segments."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    os.close(fd)
                    raise SpillLocked(
                        f"spill directory {self.directory} is held by another WriteQueue"
                    ) from err
                time.sleep(0.05)
        self._lock_fd = fd
        numbers = [int(p.stem) for p in self._segment_paths(self.directory)]
        self._next_number = max(numbers, default=0) + 1
        # Never append to a predecessor's segment: its tail may be torn. Start a new one on demand.

    def close(self) -> None:
        self.seal()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -------------------------------------------------------------- writing

    def append(self, records: Sequence[tuple[str, Mapping[str, Sequence[Sequence[Any]]]]]) -> int:
        """Append (batch_id, rows) records durably (one write, one fsync); returns bytes written."""
        if self._lock_fd is None:
            raise RuntimeError("spill log is not open")
        blob = b"".join(encode_record(batch_id, rows) for batch_id, rows in records)
        if self._active_fd is None:
            self._start_segment()
        fd = self._active_fd
        assert fd is not None
        try:
            view = memoryview(blob)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError:
            # Leave no half record behind (a full disk): the caller keeps the batches and retries.
            try:
                os.ftruncate(fd, self._active_size)
            except OSError:
                pass
            raise
        self._active_size += len(blob)
        if self._active_size >= self.segment_bytes:
            self.seal()
        return len(blob)

    def _start_segment(self) -> None:
        path = self.directory / f"{self._next_number:012d}.seg"
        self._next_number += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, SEGMENT_MAGIC)
        os.fsync(fd)
        _fsync_dir(self.directory)  # the new file's name must survive a crash too
        self._active, self._active_fd, self._active_size = path, fd, len(SEGMENT_MAGIC)

    def seal(self) -> None:
        """Close the active segment so it can be drained; the next append starts a new one."""
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active, self._active_fd, self._active_size = None, None, 0

    def quarantine(
        self, records: Sequence[tuple[str, Mapping[str, Sequence[Sequence[Any]]]]], reason: str
    ) -> Path:
        """Keep records PostgreSQL refused (bad data) in their own fsynced file, out of the drain."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = self.quarantine_dir / f"rejected-{stamp}-{time.time_ns() % 10**9:09d}.seg"
        with open(path, "wb") as fh:
            fh.write(SEGMENT_MAGIC)
            fh.write(b"".join(encode_record(batch_id, rows) for batch_id, rows in records))
            fh.flush()
            os.fsync(fh.fileno())
        path.with_suffix(".reason.txt").write_text(reason + "\n", encoding="utf-8")
        _fsync_dir(self.quarantine_dir)
        return path

    # -------------------------------------------------------------- draining

    @staticmethod
    def _segment_paths(directory: Path) -> list[Path]:
        return sorted(p for p in directory.glob("*.seg") if p.stem.isdigit())

    def sealed_segments(self) -> list[Path]:
        """Segments ready to drain, oldest first (everything but the one being appended to)."""
        return [p for p in self._segment_paths(self.directory) if p != self._active]

    def segment_count(self) -> int:
        """Segment files not yet drained (the one being appended to included)."""
        return len(self._segment_paths(self.directory))

    def has_data(self) -> bool:
        return bool(self.sealed_segments()) or self._active_size > len(SEGMENT_MAGIC)

    def pending_bytes(self) -> int:
        total = 0
        for p in self._segment_paths(self.directory):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def remove(self, path: Path) -> None:
        """A fully drained segment goes away (its rows are committed in PostgreSQL)."""
        path.unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def retire_damaged(self, path: Path) -> Path:
        """A drained segment that had corrupt regions is kept in quarantine for inspection."""
        target = self.quarantine_dir / f"damaged-{path.name}"
        os.replace(path, target)
        _fsync_dir(self.directory)
        return target
