"""Sequencer: per-sid verdicts, with hypothesis over arbitrary arrival orders."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.collect.sequencer import DUPLICATE, GAP, OK, OUT_OF_ORDER, Sequencer


def test_in_order_stream_is_all_ok() -> None:
    s = Sequencer()
    assert [s.check(1, n) for n in range(1, 6)] == [OK] * 5
    assert s.last(1) == 5


def test_gap_reports_expected_and_received_once() -> None:
    s = Sequencer()
    s.check(1, 1)
    assert s.check(1, 5) == GAP
    assert s.gap == (2, 5)
    assert s.check(1, 6) == OK  # one hole, one GAP


def test_duplicate_and_late_frames() -> None:
    s = Sequencer()
    for n in (1, 2, 3):
        s.check(1, n)
    assert s.check(1, 3) == DUPLICATE
    assert s.check(1, 2) == DUPLICATE
    assert s.check(1, 6) == GAP
    assert s.check(1, 4) == OUT_OF_ORDER  # skipped, now late
    assert s.check(1, 4) == DUPLICATE  # late twice is a repeat
    assert s.summary() == {"ok": 3, "gap": 1, "duplicate": 3, "out_of_order": 1}


def test_sids_are_independent_and_first_seq_is_one() -> None:
    s = Sequencer()
    assert s.check(1, 1) == OK
    assert s.check(2, 1) == OK
    assert s.check(2, 2) == OK
    assert s.check(1, 2) == OK
    assert s.check(3, 4) == GAP and s.gap == (1, 4)  # a new sid must start at 1


def test_expect_first_forget_and_reset() -> None:
    s = Sequencer()
    s.expect_first(7, 10)
    assert s.check(7, 10) == OK
    s.forget(7)
    assert s.check(7, 1) == OK  # a re-used sid number starts afresh
    s.reset()
    assert s.last(7) is None and s.sids == ()


def test_large_jump_keeps_memory_bounded() -> None:
    s = Sequencer()
    s.check(1, 1)
    assert s.check(1, 10_000_000) == GAP
    assert len(s._missing[1]) <= 4096
    assert s.check(1, 9_999_999) == OUT_OF_ORDER  # the newest skipped numbers are remembered
    assert s.check(1, 5) == DUPLICATE  # beyond memory: still ignored, counted as a duplicate


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Per sid 1..n, with some numbers lost, some repeated, some delivered late."""
    out: list[tuple[int, int]] = []
    for sid in range(1, draw(st.integers(1, 3)) + 1):
        n = draw(st.integers(0, 40))
        seqs = [k for k in range(1, n + 1) if not draw(st.booleans()) or k % 3]  # drop some
        stream = list(seqs)
        for _ in range(draw(st.integers(0, 5))):  # repeats
            if seqs:
                stream.insert(draw(st.integers(0, len(stream))), draw(st.sampled_from(seqs)))
        for _ in range(draw(st.integers(0, 3))):  # swaps (reordering)
            if len(stream) > 1:
                i = draw(st.integers(0, len(stream) - 2))
                stream[i], stream[i + 1] = stream[i + 1], stream[i]
        out.extend((sid, k) for k in stream)
    return out


@settings(max_examples=300, deadline=None)
@given(arrivals())
def test_properties(frames: list[tuple[int, int]]) -> None:
    s = Sequencer()
    accepted: dict[int, list[int]] = {}
    gaps: dict[int, list[tuple[int, int]]] = {}
    for sid, seq in frames:
        v = s.check(sid, seq)
        if v in (OK, GAP):
            accepted.setdefault(sid, []).append(seq)
        if v == GAP:
            gaps.setdefault(sid, []).append(s.gap)
    assert sum(s.counts) == len(frames)
    for sid, seqs in accepted.items():
        # Accepted numbers strictly increase: a frame is never applied twice or backwards.
        assert seqs == sorted(set(seqs))
        # Every number up to the last accepted one was either accepted or inside a reported gap.
        covered = set(seqs)
        for expected, received in gaps.get(sid, []):
            assert expected < received
            covered.update(range(expected, received))
        assert covered == set(range(1, seqs[-1] + 1))
        # With no loss, no reordering and no repeats there would be no gap.
        assert s.last(sid) == seqs[-1]
    for sid in {sid for sid, _ in frames}:
        ordered = [q for i, q in frames if i == sid]
        if ordered == list(range(1, len(ordered) + 1)):
            assert sid not in gaps
