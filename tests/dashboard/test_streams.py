"""Book ladders as snapshot + diffs (never full-book rebroadcasts), and the PnL history cap."""

from __future__ import annotations

import random

from kalshiflow.dashboard.streams import LadderStream, PnlTracker, ladder_diff, ladder_from_levels
from kalshiflow.market.prices import CENT


def test_no_bids_become_yes_asks_at_one_minus_p() -> None:
    yes = [(40 * CENT, 1000), (42 * CENT, 250), (10 * CENT, 0)]
    no = [(55 * CENT, 300), (50 * CENT, 100)]
    bids, asks = ladder_from_levels(yes, no, depth=10)
    assert list(bids.items()) == [("0.4200", "2.50"), ("0.4000", "10.00")]  # empty level left out
    assert list(asks.items()) == [("0.4500", "3.00"), ("0.5000", "1.00")]  # best ask = 1 - best NO bid


def test_depth_keeps_the_levels_nearest_the_touch() -> None:
    yes = [(p * CENT, 100) for p in range(1, 40)]
    bids, _ = ladder_from_levels(yes, [], depth=3)
    assert list(bids) == ["0.3900", "0.3800", "0.3700"]


def test_diff_lists_changed_new_and_removed_levels() -> None:
    old = {"0.4000": "1.00", "0.4100": "2.00"}
    new = {"0.4000": "1.00", "0.4100": "5.00", "0.4200": "1.00"}
    assert sorted(ladder_diff(old, new)) == [("0.4100", "5.00"), ("0.4200", "1.00")]
    assert ladder_diff(new, {}) == [(p, "0.00") for p in new]


def apply(side: dict[str, str], levels: list[tuple[str, str]]) -> None:
    for price, size in levels:
        if float(size) == 0:
            side.pop(price, None)
        else:
            side[price] = size


def test_a_client_applying_diffs_always_holds_the_current_ladder() -> None:
    rng = random.Random(3)
    stream = LadderStream("KX-A")
    client_bids: dict[str, str] = {}
    client_asks: dict[str, str] = {}
    seq = 0
    for step in range(300):
        bids = {
            f"0.{rng.randrange(10, 50):02d}00": f"{rng.randrange(1, 9)}.00"
            for _ in range(rng.randrange(0, 6))
        }
        asks = {
            f"0.{rng.randrange(50, 90):02d}00": f"{rng.randrange(1, 9)}.00"
            for _ in range(rng.randrange(0, 6))
        }
        diff = stream.update(True, bids, asks, float(step))
        if diff is None:
            assert (client_bids, client_asks) == (bids, asks)
            continue
        assert diff.seq == seq + 1 and not diff.snapshot
        seq = diff.seq
        apply(client_bids, diff.bids)
        apply(client_asks, diff.asks)
        assert (client_bids, client_asks) == (bids, asks)
        snap = stream.snapshot()
        assert snap.snapshot and snap.seq == seq and dict(snap.bids) == bids and dict(snap.asks) == asks
        assert [float(p) for p, _ in snap.bids] == sorted((float(p) for p in bids), reverse=True)


def test_an_unchanged_ladder_sends_nothing() -> None:
    stream = LadderStream("KX-A")
    assert stream.update(True, {"0.4000": "1.00"}, {}, 1.0) is not None
    assert stream.update(True, {"0.4000": "1.00"}, {}, 2.0) is None
    change = stream.update(False, {"0.4000": "1.00"}, {}, 3.0)
    assert change is not None and change.valid is False and change.bids == [], "validity changes are sent"


def test_pnl_history_is_capped_and_measured_from_the_first_value() -> None:
    pnl = PnlTracker(cap=5)
    for i in range(8):
        diff = pnl.append(float(i), 100.0 + i)
        assert diff.points == [(float(i), 100.0 + i, float(i))] and not diff.snapshot
    snap = pnl.snapshot()
    assert snap.snapshot and snap.start_value == 100.0
    assert [p[0] for p in snap.points] == [3.0, 4.0, 5.0, 6.0, 7.0]
