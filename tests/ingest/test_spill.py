"""Spill segments: exact round trip, fsync'd appends, rotation, damage detection and recovery."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from kalshiflow.ingest.spill import (
    RECORD_MAGIC,
    SEGMENT_MAGIC,
    SpillLocked,
    SpillLog,
    encode_record,
    scan_segment,
)
from kalshiflow.ingest.throughput import synthetic_deltas

UTC = dt.UTC
SESSION = uuid.UUID("0445cdcb-e22f-4522-9981-aed4b66015ff")
T0 = dt.datetime(2026, 6, 24, 15, 49, 55, 33836, tzinfo=UTC)


def batch(i: int, n: int = 3) -> dict[str, list[tuple[object, ...]]]:
    return {"book_deltas": synthetic_deltas(SESSION, n, start_seq=i * 100 + 1)}


def recorded_rows() -> dict[str, list[tuple[object, ...]]]:
    """Awkward rows of the recorded tables: UUIDs, arrays, jsonb, NULLs, timestamps, big ints."""
    big = 2**62 + 12345
    return {
        "collection_sessions": [
            (
                uuid.UUID(int=1),
                T0,
                None,
                "active",
                "simulator",
                "ws://127.0.0.1:8765/trade-api/ws/v2",
                ["KXHIGHNY-26JUN24-T82"],
                {"markets": 2, "nested": {"a": [1, 2.5, None]}},
                big,
                0,
                1,
                2,
                3,
                None,
            )
        ],
        "book_snapshots": [
            (
                SESSION,
                1,
                1_782_316_195_033_836_000,
                None,
                0,
                1,
                "KXHIGHNY-26JUN24-T82",
                [100, 200, 9999],
                [223099, 80600, big],
                [],
                [],
            )
        ],
        "book_deltas": [
            (
                SESSION,
                2,
                1_782_316_195_033_836_001,
                1_782_316_195_033,
                -big,
                None,
                7,
                2**31 - 1,
                10000,
                "no",
                "KXHIGHNY-26JUN24-T82",
                "my-1",
            ),
        ],
        "gaps": [(SESSION, 0, 1, 100, 105, T0, ["A", "B"], None, None)],
        "public_trades": [
            (
                SESSION,
                "d91bc706",
                1_782_316_195_033_836_000,
                None,
                13600,
                3600,
                None,
                None,
                None,
                "HIGHNY-22DEC23-B53.5",
                "no",
            )
        ],
        "markets": [
            (
                "T1",
                "E",
                "S",
                "≥82°",
                "active",
                T0,
                T0,
                None,
                "linear_cent",
                [{"start": 0, "end": 10000, "step": 100}],
                "quadratic",
                T0,
                T0,
                {"yes_bid": 55},
            )
        ],
    }


def open_log(tmp_path: Path, **kw: int) -> SpillLog:
    log = SpillLog(tmp_path / "wq", **kw)
    log.open(wait_s=0.2)
    return log


def test_every_table_row_round_trips_exactly(tmp_path: Path) -> None:
    rows = recorded_rows()
    odd = [
        (
            uuid.UUID(int=5),
            Decimal("1.2300"),
            dt.datetime(2026, 1, 2, 3, 4, 5, 6),
            dt.date(2026, 1, 2),
            dt.time(1, 2, 3),
            dt.timedelta(days=-1, microseconds=7),
            [uuid.UUID(int=1), [dt.date(2026, 2, 3)]],
            b"\x00\xff",
            2**63 - 1,
            -(2**63),
            None,
            True,
            0.1,
            "é",
            dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        )
    ]
    log = open_log(tmp_path)
    log.append([("b1", rows), ("b2", {"odd": odd})])
    log.seal()
    [path] = log.sealed_segments()
    scan = scan_segment(path)
    assert not scan.damaged and scan.torn_tail_bytes == 0
    assert [r.batch_id for r in scan.records] == ["b1", "b2"]
    for table, table_rows in rows.items():
        assert [tuple(r) for r in scan.records[0].rows[table]] == table_rows, table
    got = scan.records[1].rows["odd"][0]
    # nested arrays come back as lists; every value keeps its type and value
    assert [type(v) for v in got[:6]] == [type(v) for v in odd[0][:6]]
    assert got[:6] == list(odd[0][:6]) and got[6] == [uuid.UUID(int=1), [dt.date(2026, 2, 3)]]
    assert got[7:] == list(odd[0][7:])


def test_segments_rotate_and_drain_in_order(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1024)
    for i in range(12):
        log.append([(f"b{i}", batch(i))])
    log.seal()
    segments = log.sealed_segments()
    assert len(segments) > 2
    ids = [r.batch_id for p in segments for r in scan_segment(p).records]
    assert ids == [f"b{i}" for i in range(12)]
    assert log.segment_count() == len(segments) and log.pending_bytes() > 0
    for p in segments:
        log.remove(p)
    assert not log.has_data()


def test_truncated_tail_keeps_the_intact_prefix(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append([("b0", batch(0)), ("b1", batch(1))])
    log.append([("b2", batch(2))])
    log.seal()
    [path] = log.sealed_segments()
    data = path.read_bytes()
    for cut in (1, 5, 13, len(encode_record("b2", batch(2))) - 1):  # inside the header and inside the payload
        path.write_bytes(data[:-cut])
        scan = scan_segment(path)
        assert [r.batch_id for r in scan.records] == ["b0", "b1"], cut
        assert scan.torn_tail_bytes > 0 and not scan.damaged


def test_corruption_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(4):
        log.append([(f"b{i}", batch(i))])
    log.seal()
    [path] = log.sealed_segments()
    data = bytearray(path.read_bytes())
    second = data.index(RECORD_MAGIC, len(SEGMENT_MAGIC) + 1)
    data[second + 20] ^= 0xFF  # flip a payload byte of record b1: its CRC no longer matches
    path.write_bytes(bytes(data))
    scan = scan_segment(path)
    assert [r.batch_id for r in scan.records] == ["b0", "b2", "b3"]
    assert scan.damaged and scan.bad_regions == 1 and scan.bad_bytes > 0
    assert sum(len(rows) for r in scan.records for rows in r.rows.values()) == scan.rows == 9


def test_garbage_header_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "000000000001.seg"
    path.write_bytes(b"")
    assert scan_segment(path).records == []
    path.write_bytes(SEGMENT_MAGIC[:3])  # died while creating the file
    scan = scan_segment(path)
    assert scan.records == [] and not scan.damaged
    path.write_bytes(b"XXXXXXXX" + encode_record("b0", batch(0)))
    scan = scan_segment(path)
    assert scan.bad_header and [r.batch_id for r in scan.records] == ["b0"]


def test_one_owner_per_directory_and_no_appending_to_a_predecessor(tmp_path: Path) -> None:
    first = open_log(tmp_path)
    first.append([("b0", batch(0))])
    with pytest.raises(SpillLocked):
        open_log(tmp_path)
    first.close()
    second = open_log(tmp_path)
    assert len(second.sealed_segments()) == 1  # the predecessor's segment is ready to drain
    second.append([("b1", batch(1))])
    assert len(list((tmp_path / "wq").glob("*.seg"))) == 2  # a fresh segment, old tail untouched
    assert [p.name for p in second.sealed_segments()] == ["000000000001.seg"]
    second.close()


def test_quarantine_and_damaged_segments_leave_the_drain(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    kept = log.quarantine([("bad", batch(0))], "CheckViolationError: price")
    assert scan_segment(kept).records[0].batch_id == "bad"
    assert kept.with_suffix(".reason.txt").read_text().startswith("CheckViolationError")
    log.append([("b0", batch(0))])
    log.seal()
    [path] = log.sealed_segments()
    moved = log.retire_damaged(path)
    assert moved.parent == log.quarantine_dir and not log.has_data()
    log.close()
