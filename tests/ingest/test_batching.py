"""The WriteQueue's pure rules: flush policy, buffer accounting, FIFO backpressure, validation."""

from __future__ import annotations

import uuid

import pytest

from kalshiflow.config import WriteQueueConfig
from kalshiflow.ingest.batching import (
    Entry,
    FlushPolicy,
    WriteBuffer,
    chunk_records,
    merge_rows,
    validate_rows,
)
from kalshiflow.ingest.throughput import synthetic_deltas
from kalshiflow.storage.schema import TABLES

SESSION = uuid.UUID(int=1)


def entry(batch_id: str, n: int, at: float = 0.0) -> Entry:
    return Entry(batch_id, {"book_deltas": synthetic_deltas(SESSION, n)}, n, at)


def test_policy_from_config_converts_units() -> None:
    policy = FlushPolicy.from_config(
        WriteQueueConfig(flush_rows=10, flush_interval_ms=250, high_water_rows=99)
    )
    assert policy == FlushPolicy(flush_rows=10, flush_interval_s=0.25, high_water_rows=99, eager=True)


@pytest.mark.parametrize(
    ("rows", "age", "forced", "due"),
    [
        (0, None, False, False),
        (0, None, True, False),  # nothing to flush even when forced
        (9, 0.1, False, False),
        (10, 0.0, False, True),  # size
        (1, 0.25, False, True),  # time
        (1, 0.0, True, True),  # forced
    ],
)
def test_flush_due(rows: int, age: float | None, forced: bool, due: bool) -> None:
    policy = FlushPolicy(flush_rows=10, flush_interval_s=0.25, high_water_rows=100, eager=False)
    assert policy.flush_due(rows, age, forced=forced) is due


def test_eager_flush_only_for_an_idle_writer() -> None:
    buf = WriteBuffer(FlushPolicy(flush_rows=10, flush_interval_s=0.25, high_water_rows=100, eager=True))
    buf.add(entry("a", 1, at=0.0))
    assert not buf.flush_due(0.01)
    assert buf.flush_due(0.01, idle_writer=True)
    lazy = WriteBuffer(FlushPolicy(flush_rows=10, flush_interval_s=0.25, high_water_rows=100, eager=False))
    lazy.add(entry("a", 1, at=0.0))
    assert not lazy.flush_due(0.01, idle_writer=True)
    assert lazy.time_until_due(0.01) == pytest.approx(0.24)
    assert lazy.flush_due(0.25, idle_writer=True)


def test_take_keeps_whole_batches_up_to_flush_rows() -> None:
    buf = WriteBuffer(FlushPolicy(flush_rows=10, flush_interval_s=1, high_water_rows=1000))
    for i, n in enumerate((4, 4, 4, 30)):
        buf.add(entry(f"b{i}", n, at=float(i)))
    first = buf.take(1)
    assert [e.batch_id for e in first] == ["b0", "b1"]  # a third would exceed 10
    assert buf.depth == 42 and buf.pending_rows == 34
    second = buf.take(2)
    assert [e.batch_id for e in second] == ["b2"]
    third = buf.take(3)
    assert [e.batch_id for e in third] == ["b3"]  # an oversized batch goes alone, never split
    assert buf.oldest() == 0.0  # in-flight rows still count as unflushed
    buf.finish(1, first)
    assert buf.oldest() == 2.0
    buf.finish(2, second)
    buf.finish(3, third)
    assert buf.depth == 0 and buf.oldest() is None


def test_put_back_restores_order_and_depth() -> None:
    buf = WriteBuffer(FlushPolicy(flush_rows=100, flush_interval_s=1, high_water_rows=1000))
    for i in range(3):
        buf.add(entry(f"b{i}", 2, at=float(i)))
    taken = buf.take(1)
    buf.add(entry("late", 2, at=9.0))
    buf.put_back(1, taken)
    assert [e.batch_id for e in buf.entries()] == ["b0", "b1", "b2", "late"]
    assert buf.depth == buf.pending_rows == 8


def test_backpressure_is_fifo_and_never_drops() -> None:
    buf = WriteBuffer(FlushPolicy(flush_rows=100, flush_interval_s=1, high_water_rows=10))
    assert buf.offer(entry("a", 8))
    assert not buf.offer(entry("big", 5))  # 13 > 10: held back
    assert not buf.offer(entry("small", 1))  # would fit, but must not overtake "big"
    assert buf.waiting_batches == 2 and buf.waiting_rows == 6
    assert [e.batch_id for e in buf.entries()] == ["a", "big", "small"]
    taken = buf.take(1)
    admitted = buf.finish(1, taken)
    assert [e.batch_id for e in admitted] == ["big", "small"]
    assert buf.waiting_batches == 0 and buf.depth == 6


def test_a_batch_larger_than_high_water_gets_in_when_empty() -> None:
    buf = WriteBuffer(FlushPolicy(flush_rows=100, flush_interval_s=1, high_water_rows=10))
    assert buf.offer(entry("huge", 50))
    assert not buf.offer(entry("next", 1))


def test_validate_rows() -> None:
    assert validate_rows({"book_deltas": synthetic_deltas(SESSION, 1), "gaps": []}) == 1
    with pytest.raises(ValueError, match="unknown table"):
        validate_rows({"nope": []})
    with pytest.raises(ValueError, match="columns"):
        validate_rows({"book_deltas": [(1, 2)]})
    with pytest.raises(TypeError):
        validate_rows([("book_deltas", [])])


def test_merge_rows_keeps_batch_order() -> None:
    a = {"book_deltas": [(1,), (2,)], "gaps": [(9,)]}
    b = {"book_deltas": [(3,)], "public_trades": []}
    merged = merge_rows([a, b])
    assert merged == {"book_deltas": [(1,), (2,), (3,)], "gaps": [(9,)]}
    assert a["book_deltas"] == [(1,), (2,)]  # inputs untouched
    assert len(TABLES["book_deltas"].columns) == 12


def test_chunk_records_groups_in_order_up_to_the_limit() -> None:
    records = [entry(f"b{i}", n) for i, n in enumerate((3, 3, 3, 9, 1))]
    groups = [[e.batch_id for e in chunk] for chunk in chunk_records(records, 6)]
    assert groups == [["b0", "b1"], ["b2"], ["b3"], ["b4"]]
