"""ShardState: frames in (as the simulator encodes them), books / rows / requests out."""

from __future__ import annotations

import msgspec
import pytest

from kalshiflow.collect import rows as R
from kalshiflow.collect.shard_state import ShardState
from kalshiflow.market.book import OrderBook
from kalshiflow.market.types import Side
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.market_data import encode_delta, encode_snapshot
from kalshiflow.storage.schema import TABLES

SESSION = "0445cdcb-e22f-4522-9981-aed4b66015ff"
T0 = 1_782_316_195_033_836_000
TS_MS = 1_782_316_195_000
A, B = "KXA-1", "KXB-2"


def subscribed(sid: int, channel: str = "orderbook_delta", cid: int = 1) -> bytes:
    return wd.encode_message(wc.Subscribed(id=cid, msg=wc.SubscriptionInfo(channel=channel, sid=sid)))


def ok(sid: int, seq: int, tickers: list[str] | None = None) -> bytes:
    return wd.encode_message(wc.Ok(id=9, sid=sid, seq=seq, msg=wc.OkMarkets(market_tickers=tickers)))


def snap(sid: int, seq: int, ticker: str, yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> bytes:
    return encode_snapshot(sid, seq, ticker, None, yes, no)


def delta(sid: int, seq: int, ticker: str, side: Side, price: int, qty: int, ts_ms: int | None = TS_MS,
          ) -> bytes:
    return encode_delta(sid, seq, ticker, None, side, price, qty, ts_ms)


def fresh(*tickers: str, epoch: int = 1000) -> ShardState:
    s = ShardState(SESSION, "c0")
    for t in tickers:
        s.add_market(t)
    s.begin_epoch(epoch, T0, "start")
    s.on_frame(subscribed(1), T0)
    return s


def feed(s: ShardState, *frames: bytes) -> None:
    for i, f in enumerate(frames):
        s.on_frame(f, T0 + 1000 * (i + 1))


def started(*tickers: str) -> ShardState:
    s = fresh(*tickers)
    for i, t in enumerate(tickers):
        feed(s, snap(1, i + 1, t, [(4000, 1000), (4500, 500)], [(5000, 700)]))
    return s


def test_rows_follow_the_schema() -> None:
    assert R.DELTA_COLUMNS == TABLES["book_deltas"].columns
    s = started(A)
    feed(s, delta(1, 2, A, Side.YES, 4500, -200))
    s.on_frame(msgspec.json.encode({"type": "trade", "sid": 2, "msg": {
        "trade_id": "t1", "market_ticker": A, "yes_price_dollars": "0.4500", "count_fp": "3.00",
        "taker_outcome_side": "yes", "ts_ms": 1_782_316_195_000}}), T0)
    s.end_epoch(T0 + 10**9, "bye")
    rows = s.take_rows()
    for table, table_rows in rows.items():
        for row in table_rows:
            assert len(row) == len(TABLES[table].columns), table
    d = dict(zip(TABLES["book_deltas"].columns, rows["book_deltas"][0], strict=True))
    assert d | {"received_ts_ns": 0} == {
        "session_id": SESSION, "seq": 2, "received_ts_ns": 0, "exchange_ts_ms": 1_782_316_195_000,
        "delta": -200, "size_after": 300, "epoch": 1000, "sid": 1, "price": 4500, "side": "yes", "ticker": A,
        "client_order_id": None,
    }
    snap_row = dict(zip(TABLES["book_snapshots"].columns, rows["book_snapshots"][0], strict=True))
    assert snap_row["yes_price"] == [4000, 4500] and snap_row["yes_qty"] == [1000, 500]
    assert snap_row["no_price"] == [5000] and snap_row["no_qty"] == [700]
    trade = dict(zip(TABLES["public_trades"].columns, rows["public_trades"][0], strict=True))
    assert [trade[k] for k in ("trade_id", "yes_price", "count", "taker_side")] == ["t1", 4500, 300, "yes"]
    assert [r[4] for r in rows["connection_epochs"]] == [None, R.ts(T0 + 10**9)]
    assert s.take_rows() == {}


def test_deltas_update_the_book_and_tops() -> None:
    s = started(A, B)
    feed(s, delta(1, 3, A, Side.YES, 4600, 100), delta(1, 4, B, Side.NO, 5000, -700))
    book = s.book(A)
    assert book is not None and not book.invalid
    assert book.levels(Side.YES) == [(4000, 1000), (4500, 500), (4600, 100)]
    assert sorted(s.take_changed()) == [A, B]
    a, b = s.view(A), s.view(B)
    assert a is not None and b is not None
    assert a.yes_bid == 4600 and a.yes_ask == 5000 and a.valid and a.seq == 3
    assert b.yes_ask is None  # the NO side emptied
    assert s.take_changed() == []


def test_views_carry_the_best_levels_the_observation_reads() -> None:
    from kalshiflow.collect.tops import PUBLISHED_DEPTH
    from kalshiflow.rl.features import DEPTH_LEVELS

    assert PUBLISHED_DEPTH == DEPTH_LEVELS
    s = fresh(A, B)
    assert sorted(s.take_changed()) == [A, B]  # a new connection: every book invalid, to publish
    yes = [(3000 + 100 * i, 10 + i) for i in range(8)]  # 8 levels: only the best 5 travel
    # The touch (3700 x 17) empties: the next five levels travel.
    feed(s, snap(1, 1, A, yes, [(5000, 700), (4900, 3)]), delta(1, 2, A, Side.YES, 3700, -17))
    assert s.take_changed() == [A] and s.take_changed() == []
    v = s.view(A)
    assert v is not None and v.valid and v.seq == 2 and v.depth == DEPTH_LEVELS
    assert v.yes_bids == ((3600, 16), (3500, 15), (3400, 14), (3300, 13), (3200, 12))  # best first
    assert v.no_bids == ((5000, 700), (4900, 3))  # fewer than depth: the whole ladder
    assert (v.yes_bid, v.yes_bid_size, v.yes_ask, v.yes_ask_size) == (3600, 16, 5000, 700)
    book = s.book(A)
    assert book is not None and list(v.yes_bids) == book.depth(Side.YES, DEPTH_LEVELS)
    invalid = s.view(B)  # no snapshot yet: the top fields only, no levels, never tradable
    assert invalid is not None and not invalid.valid and invalid.depth == 0 and invalid.yes_bids == ()
    assert s.view("UNKNOWN") is None


def test_gap_invalidates_every_book_on_the_sid_and_recovers_by_snapshot() -> None:
    s = started(A, B)
    s.take_rows()
    feed(s, delta(1, 5, A, Side.YES, 4000, 10))  # 3 and 4 lost
    assert s.book(A).invalid and s.book(B).invalid  # type: ignore[union-attr]
    [req] = s.take_requests()
    assert (req.kind, req.tickers) == ("get_snapshot", (A, B))
    rows = s.take_rows()
    assert rows["book_deltas"][0][5] is None  # recorded, but the invalid book was not updated
    [opened] = rows["gaps"]  # durable at once; its end is filled in when it closes
    assert opened[3:5] == (3, 5) and opened[7] is None and opened[8] is None
    feed(s, ok(1, 6), snap(1, 7, A, [(4100, 5)], []), delta(1, 8, A, Side.YES, 4100, 5))
    assert not s.book(A).invalid and s.book(B).invalid  # type: ignore[union-attr]
    assert s.take_rows()["book_deltas"][0][5] == 10
    feed(s, snap(1, 9, B, [], [(100, 1)]))
    gap = dict(zip(TABLES["gaps"].columns, s.take_rows()["gaps"][0], strict=True))
    assert (gap["sid"], gap["expected_seq"], gap["received_seq"], gap["tickers"]) == (1, 3, 5, [A, B])
    assert gap["recovered_at"] is not None and gap["recovery_method"] == "get_snapshot"
    assert not s.recovering and s.n["gaps"] == 1


def test_ok_replies_consume_a_seq_and_duplicates_are_ignored() -> None:
    s = started(A)
    feed(s, ok(1, 2, [A]), delta(1, 3, A, Side.YES, 4000, 1))
    feed(s, delta(1, 3, A, Side.YES, 4000, 1), delta(1, 2, A, Side.YES, 4000, 1))
    assert s.book(A).size(Side.YES, 4000) == 1001  # type: ignore[union-attr]
    assert len(s.take_rows()["book_deltas"]) == 1
    assert s.sequencer_counts()["duplicate"] == 2 and s.n["gaps"] == 0


def test_late_frame_after_gap_is_ignored() -> None:
    s = started(A)
    feed(s, delta(1, 4, A, Side.YES, 4000, 1), delta(1, 3, A, Side.YES, 4000, 2))
    assert s.sequencer_counts()["out_of_order"] == 1
    assert [r[1] for r in s.take_rows()["book_deltas"]] == [4]


def test_book_error_resnapshots_that_market_only() -> None:
    s = started(A, B)
    feed(s, delta(1, 3, A, Side.YES, 4000, -5000))  # more than rests there
    assert s.book(A).invalid and not s.book(B).invalid  # type: ignore[union-attr]
    [req] = s.take_requests()
    assert req.tickers == (A,) and req.kind == "get_snapshot"
    feed(s, snap(1, 4, A, [(4000, 1)], []))
    gap = s.take_rows()["gaps"][0]
    assert (gap[3], gap[4]) == (3, 3) and s.n["book_errors"] == 1


def test_new_epoch_resets_seq_and_records_a_connection_gap() -> None:
    s = started(A)
    s.begin_epoch(2000, T0 + 5, "reconnect")
    assert s.book(A).invalid  # type: ignore[union-attr]
    feed(s, subscribed(1), snap(1, 1, A, [(4000, 3)], []), delta(1, 2, A, Side.YES, 4000, 1))
    rows = s.take_rows()
    opened, gap = rows["gaps"]
    assert opened[1:5] == gap[1:5] == (2000, 0, 0, 0) and opened[7] is None
    assert gap[8] == "reconnect" and gap[7] is not None
    assert [r[1] for r in rows["connection_epochs"]] == [1000, 1000, 2000]
    assert rows["book_deltas"][-1][6] == 2000 and rows["book_deltas"][-1][5] == 4


def test_unresolved_gap_is_written_when_the_epoch_ends() -> None:
    s = started(A)
    feed(s, delta(1, 9, A, Side.YES, 4000, 1))
    s.end_epoch(T0 + 10, "lost")
    opened, closed = s.take_rows()["gaps"]
    assert opened[3:5] == closed[3:5] == (2, 9) and closed[7] is None
    assert closed[8] == "unrecovered: connection ended"


def test_recovery_escalates_snapshot_then_resync_then_reconnect() -> None:
    s = started(A)
    feed(s, delta(1, 9, A, Side.YES, 4000, 1))
    assert s.take_requests()[0].kind == "get_snapshot"
    kinds = []
    for k in range(1, 5):
        s.check_recovery(T0 + k * 10**10, 10**9)
        kinds += [r.kind for r in s.take_requests()]
    assert kinds == ["get_snapshot", "resync", "reconnect", "reconnect"]


def test_terminal_error_on_a_sid_requests_a_resync() -> None:
    s = started(A)
    s.on_frame(wd.encode_message(wc.ErrorReply(sid=1, msg=wc.ErrorMsg(code=25, msg="overflow"))), T0)
    [req] = s.take_requests()
    assert (req.kind, req.channel, req.tickers) == ("resync", "orderbook_delta", (A,))
    assert s.book(A).invalid  # type: ignore[union-attr]


def test_lifecycle_settlement_requests_a_drop() -> None:
    s = started(A)
    s.on_frame(subscribed(3, "market_lifecycle_v2"), T0)
    s.on_frame(msgspec.json.encode({"type": "market_lifecycle_v2", "sid": 3, "msg": {
        "market_ticker": A, "event_type": "determined", "result": "yes"}}), T0)
    [req] = s.take_requests()
    assert (req.kind, req.tickers) == ("drop", (A,))
    assert s.drop_market(A, T0) and s.tickers == ()


BAD_FRAMES = [b"not json", b'{"type":"orderbook_delta","sid":1}', b'{"type":"ticker","sid":4,"msg":{}}',
              b"[]"]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_bad_frames_are_counted_never_raised(frame: bytes) -> None:
    s = started(A)
    s.on_frame(frame, T0)
    assert s.n["decode_errors"] + s.n["unknown_frames"] == 1


def test_recorded_rows_replay_to_the_same_books() -> None:
    """Snapshots replace, deltas add: the rows alone rebuild what the state holds."""
    s = started(A, B)
    feed(s, *(delta(1, 3 + i, A if i % 2 else B, Side.YES if i % 3 else Side.NO, 4000 + 100 * (i % 5), 10 + i)
              for i in range(50)))
    rows = s.take_rows()
    books = {t: OrderBook(t) for t in (A, B)}
    events = [(r[1], "s", r) for r in rows["book_snapshots"]] + [(r[1], "d", r) for r in rows["book_deltas"]]
    for _, kind, r in sorted(events, key=lambda e: e[0]):
        if kind == "s":
            books[r[6]].apply_snapshot(zip(r[7], r[8], strict=True), zip(r[9], r[10], strict=True))
        else:
            books[r[10]].apply_delta(Side(r[9]), r[8], r[4])
    assert books[A] == s.book(A) and books[B] == s.book(B)
