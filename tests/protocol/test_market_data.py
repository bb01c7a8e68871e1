"""market_data: orderbook frames in every wire shape decode to the same exact book updates."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshiflow.market.book import BookError, OrderBook
from kalshiflow.market.prices import DECI_CENT, LINEAR_CENT, PRICE_SCALE, TAPERED_DECI_CENT, PriceGrid
from kalshiflow.market.types import Side
from kalshiflow.protocol.market_data import (
    FrameError,
    OrderbookDelta,
    OrderbookFrameDecoder,
    OrderbookSnapshot,
    encode_delta,
    encode_snapshot,
)

YES, NO = Side.YES, Side.NO
MARKET_ID = "0445cdcb-e22f-4522-9981-aed4b66015ff"

# Verbatim shapes from kalshi-protocol.md §1.7.1 (current, then legacy).
CURRENT_SNAPSHOT = b"""{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{
  "market_ticker":"KXHIGHNY-26JUN24-T82","market_id":"0445cdcb-e22f-4522-9981-aed4b66015ff",
  "yes_dollars_fp":[["0.0100","2230.99"],["0.0200","806.00"],["0.1000","29.00"]],
  "no_dollars_fp":[["0.0100","419.78"],["0.0200","397.00"]]}}"""
CURRENT_DELTA = b"""{"type":"orderbook_delta","sid":1,"seq":2,"msg":{
  "market_ticker":"KXHIGHNY-26JUN24-T82","market_id":"0445cdcb-e22f-4522-9981-aed4b66015ff",
  "price_dollars":"0.1000","delta_fp":"7.00","side":"yes",
  "ts":"2026-06-24T15:49:55.033836Z","ts_ms":1782316195033}}"""
LEGACY_SNAPSHOT = b"""{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{
  "market_ticker":"KXNCAAFGAME-25OCT11ALAMIZZ-ALA","market_id":"x",
  "yes":[[1,250082],[2,3200]],"no":[[1,162774],[2,9000]],
  "yes_dollars":[["0.0100",250082]],"no_dollars":[["0.0100",162774]]}}"""
LEGACY_DELTA = b"""{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"T","market_id":"x",
  "price":3,"price_dollars":"0.0300","delta":1079,"side":"yes","ts":"2025-10-11T18:26:53.361842Z"}}"""


def test_current_shape_from_the_docs() -> None:
    decoder = OrderbookFrameDecoder()
    snap = decoder.decode(CURRENT_SNAPSHOT)
    assert isinstance(snap, OrderbookSnapshot) and (snap.sid, snap.seq) == (1, 1)
    yes, no = decoder.snapshot_levels(snap.msg)
    assert yes == [(100, 223_099), (200, 80_600), (1_000, 2_900)]
    assert no == [(100, 41_978), (200, 39_700)]
    delta = decoder.decode(CURRENT_DELTA)
    assert isinstance(delta, OrderbookDelta) and delta.msg.ts_ms == 1782316195033
    assert decoder.delta_update(delta.msg) == (YES, 1_000, 700)


def test_legacy_shape_from_the_docs() -> None:
    decoder = OrderbookFrameDecoder()
    snap = decoder.decode(LEGACY_SNAPSHOT)
    assert isinstance(snap, OrderbookSnapshot)
    # *_dollars (one level each here) outranks the integer-cent lists when both are present
    assert decoder.snapshot_levels(snap.msg) == ([(100, 25_008_200)], [(100, 16_277_400)])
    ints_only = msgspec.structs.replace(snap.msg, yes_dollars=None, no_dollars=None)
    assert decoder.snapshot_levels(ints_only) == (
        [(100, 25_008_200), (200, 320_000)],
        [(100, 16_277_400), (200, 900_000)],
    )
    delta = decoder.decode(LEGACY_DELTA)
    assert isinstance(delta, OrderbookDelta)
    assert decoder.delta_update(delta.msg) == (YES, 300, 107_900)
    ints_delta = msgspec.structs.replace(delta.msg, price_dollars=None)
    assert decoder.delta_update(ints_delta) == (YES, 300, 107_900)


def test_empty_market_snapshot_has_no_side_keys() -> None:
    frame = encode_snapshot(3, 9, "KXEMPTY", MARKET_ID, [], [])
    assert json.loads(frame) == {
        "type": "orderbook_snapshot", "sid": 3, "seq": 9,
        "msg": {"market_ticker": "KXEMPTY", "market_id": MARKET_ID},
    }
    decoder = OrderbookFrameDecoder()
    assert decoder.snapshot_levels(decoder.decode(frame).msg) == ([], [])  # type: ignore[arg-type]


def test_superset_encoding_of_whole_values() -> None:
    yes, no = [(4_200, 1_300), (100, 20_000)], [(5_600, 1_700)]
    frame = json.loads(encode_snapshot(1, 1, "T", MARKET_ID, yes, no))
    msg = frame["msg"]
    assert msg["yes_dollars_fp"] == [["0.0100", "200.00"], ["0.4200", "13.00"]]  # ascending, best last
    assert msg["no_dollars_fp"] == [["0.5600", "17.00"]]
    assert msg["yes"] == [[1, 200], [42, 13]] and msg["no"] == [[56, 17]]
    assert msg["yes_dollars"] == [["0.0100", 200], ["0.4200", 13]]
    delta = json.loads(encode_delta(1, 2, "T", MARKET_ID, NO, 3_000, 700, 1782316195033, "my-order-1"))
    assert delta == {
        "type": "orderbook_delta", "sid": 1, "seq": 2,
        "msg": {
            "market_ticker": "T", "market_id": MARKET_ID, "price": 30, "price_dollars": "0.3000", "delta": 7,
            "delta_fp": "7.00", "side": "no", "client_order_id": "my-order-1",
            "ts": "2026-06-24T15:49:55.033000Z", "ts_ms": 1782316195033,
        },
    }


def test_legacy_integers_only_when_every_value_is_whole() -> None:
    sub_cent = json.loads(encode_snapshot(1, 1, "T", None, [(4_200, 1_300)], [(5_605, 100)]))["msg"]
    assert {"yes", "no", "yes_dollars", "no_dollars", "market_id"}.isdisjoint(sub_cent)
    fractional = json.loads(encode_delta(1, 2, "T", None, YES, 4_200, 150, None))["msg"]
    assert fractional == {"market_ticker": "T", "price_dollars": "0.4200", "delta_fp": "1.50", "side": "yes"}
    current_only = json.loads(encode_delta(1, 2, "T", None, YES, 4_200, 100, 5, legacy=False))["msg"]
    assert "price" not in current_only and "delta" not in current_only


def test_use_yes_price_reports_no_levels_at_the_yes_equivalent() -> None:
    frame = json.loads(encode_snapshot(1, 1, "T", None, [], [(3_000, 100), (100, 500)], use_yes_price=True))
    assert frame["msg"]["no_dollars_fp"] == [["0.7000", "1.00"], ["0.9900", "5.00"]]
    delta = json.loads(encode_delta(1, 2, "T", None, NO, 3_000, -100, 1, use_yes_price=True))
    assert delta["msg"]["price_dollars"] == "0.7000" and delta["msg"]["price"] == 70
    flipped = OrderbookFrameDecoder(use_yes_price=True)
    assert flipped.snapshot_levels(flipped.decode(json.dumps(frame)).msg) == ([], [(100, 500), (3_000, 100)])  # type: ignore[arg-type]
    assert flipped.delta_update(flipped.decode(json.dumps(delta)).msg) == (NO, 3_000, -100)  # type: ignore[arg-type]
    yes_delta = encode_delta(1, 3, "T", None, YES, 3_000, 100, 1, use_yes_price=True)
    assert flipped.delta_update(flipped.decode(yes_delta).msg) == (YES, 3_000, 100)  # type: ignore[arg-type]


def test_non_canonical_number_spellings_are_exact() -> None:
    decoder = OrderbookFrameDecoder()
    for text in ("0.96", "0.960", "0.9600", "0.96000"):
        frame = CURRENT_DELTA.replace(b'"0.1000"', f'"{text}"'.encode()).replace(b'"7.00"', b'"-2.5"')
        assert decoder.delta_update(decoder.decode(frame).msg) == (YES, 9_600, -250)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (b"", "bad orderbook frame"),
        (b"{", "bad orderbook frame"),
        (b'{"type":"ticker","sid":1,"msg":{}}', "bad orderbook frame"),
        (b'{"type":"orderbook_delta","sid":1,"msg":{}}', "market_ticker"),
        (b'{"type":"orderbook_delta","sid":1,"seq":0,"msg":{"market_ticker":"T","side":"yes"}}', "seq"),
        (b'{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"T","side":"maybe"}}', "side"),
        (b'{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"T","side":"yes","delta_fp":7}}',
         "delta_fp"),
    ],
)
def test_malformed_frames_raise_frame_error(frame: bytes, words: str) -> None:
    with pytest.raises(FrameError) as info:
        OrderbookFrameDecoder().decode(frame)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        ({"side": "yes", "delta_fp": "1.00"}, "no price_dollars or price"),
        ({"side": "yes", "price_dollars": "0.5000"}, "no delta_fp or delta"),
        ({"side": "yes", "price_dollars": "1.5000", "delta_fp": "1.00"}, "outside [0, 1]"),
        ({"side": "yes", "price_dollars": "0.50001", "delta_fp": "1.00"}, "more than 4 decimal"),
        ({"side": "yes", "price_dollars": "0.5000", "delta_fp": "1.001"}, "more than 2 decimal"),
        ({"side": "yes", "price_dollars": "\uff10.\uff15", "delta_fp": "1.00"}, "not a decimal number"),
        ({"side": "no", "price": 101, "delta": 1}, "outside 0..100"),
        ({"side": "no", "price": 50, "delta_fp": "abc"}, "not a decimal number"),
    ],
)
def test_bad_delta_values_raise_frame_error(msg: dict[str, object], words: str) -> None:
    decoder = OrderbookFrameDecoder()
    envelope = {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {"market_ticker": "T", **msg}}
    frame = decoder.decode(json.dumps(envelope))
    with pytest.raises(FrameError) as info:
        decoder.delta_update(frame.msg)  # type: ignore[arg-type]
    assert words in str(info.value) and "'T'" in str(info.value)


@pytest.mark.parametrize(
    "levels", [[["0.5000", "0.00"]], [["0.5000", "-1.00"]], [["x", "1.00"]], [["0.5", "1e3"]]]
)
def test_bad_snapshot_levels_raise_frame_error(levels: list[list[str]]) -> None:
    decoder = OrderbookFrameDecoder()
    frame = decoder.decode(json.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": 1,
                                       "msg": {"market_ticker": "T", "no_dollars_fp": levels}}))
    with pytest.raises(FrameError):
        decoder.snapshot_levels(frame.msg)  # type: ignore[arg-type]


def test_encoders_reject_impossible_values() -> None:
    for yes in ([(0, 100)], [(PRICE_SCALE, 100)], [(4_200, 0)]):
        with pytest.raises(ValueError):
            encode_snapshot(1, 1, "T", None, yes, [])
    with pytest.raises(ValueError):
        encode_delta(1, 2, "T", None, YES, 4_200, 0, None)
    with pytest.raises(ValueError):
        encode_delta(1, 2, "T", None, "maybe", 4_200, 1, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- properties

GRIDS = [LINEAR_CENT, TAPERED_DECI_CENT, DECI_CENT]


@st.composite
def book_levels(draw: st.DrawFn, grid: PriceGrid, whole: bool) -> list[tuple[int, int]]:
    prices = [p for p in grid.prices if p % 100 == 0] if whole else list(grid.prices)
    sizes = st.integers(1, 10**6).map(lambda c: c * 100) if whole else st.integers(1, 10**8)
    return sorted(draw(st.dictionaries(st.sampled_from(prices), sizes, max_size=15)).items())


@settings(max_examples=120, deadline=None)
@given(st.data(), st.sampled_from(GRIDS), st.booleans())
def test_every_shape_and_flag_decodes_to_the_same_book(
    data: st.DataObject, grid: PriceGrid, whole: bool
) -> None:
    yes = data.draw(book_levels(grid, whole))
    no = data.draw(book_levels(grid, whole))
    books = []
    for use_yes_price in (False, True):
        for legacy in (False, True):
            frame = encode_snapshot(7, 1, "T", MARKET_ID, yes, no, use_yes_price, legacy=legacy)
            decoder = OrderbookFrameDecoder(use_yes_price)
            msg = decoder.decode(frame).msg
            assert decoder.snapshot_levels(msg) == (yes, no)  # type: ignore[arg-type]
            if legacy and whole:  # each legacy field alone must give the same levels too
                for keep in ("yes_dollars", "yes"):
                    drop = {"yes_dollars_fp", "no_dollars_fp", "yes_dollars", "no_dollars", "yes", "no"}
                    drop -= {keep, keep.replace("yes", "no")}
                    only = msgspec.structs.replace(msg, **{k: None for k in drop})  # type: ignore[type-var]
                    assert decoder.snapshot_levels(only) == (yes, no)  # type: ignore[arg-type]
            book = OrderBook("T", grid)
            book.apply_snapshot(*decoder.snapshot_levels(msg))  # type: ignore[arg-type]
            books.append(book)
    assert all(b == books[0] for b in books)
    assert books[0].levels(YES) == yes and books[0].levels(NO) == no


@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from([YES, NO]),
    grid=st.sampled_from(GRIDS),
    data=st.data(),
    delta=st.integers(-(10**9), 10**9).filter(bool),
    use_yes_price=st.booleans(),
    legacy=st.booleans(),
    ts_ms=st.none() | st.integers(0, 4_102_444_800_000),
    client_order_id=st.none() | st.text(max_size=20),
)
def test_delta_encode_decode_round_trip(
    side: Side, grid: PriceGrid, data: st.DataObject, delta: int, use_yes_price: bool, legacy: bool,
    ts_ms: int | None, client_order_id: str | None,
) -> None:
    price = data.draw(st.sampled_from(grid.prices))
    frame = encode_delta(
        5, 77, "KX-T", MARKET_ID, side, price, delta, ts_ms, client_order_id, use_yes_price, legacy
    )
    decoder = OrderbookFrameDecoder(use_yes_price)
    decoded = decoder.decode(frame)
    assert isinstance(decoded, OrderbookDelta) and (decoded.sid, decoded.seq) == (5, 77)
    assert decoded.msg.ts_ms == ts_ms and decoded.msg.client_order_id == client_order_id
    assert decoder.delta_update(decoded.msg) == (side, price, delta)
    assert decoder.delta_update(decoded.msg) == (side, price, delta)  # cached path agrees
    if decoded.msg.price is not None:  # legacy integers, when present, say the same thing
        integers_only = msgspec.structs.replace(decoded.msg, price_dollars=None, delta_fp=None)
        assert decoder.delta_update(integers_only) == (side, price, delta)


# ---------------------------------------------------------------------- fuzz: FrameError only

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
DELTA_KEYS = [
    "market_ticker", "market_id", "price", "price_dollars", "delta", "delta_fp", "side", "ts", "ts_ms",
]
SNAP_KEYS = ["market_ticker", "yes_dollars_fp", "no_dollars_fp", "yes", "no", "yes_dollars", "no_dollars"]


def decode_fully(decoder: OrderbookFrameDecoder, data: bytes) -> None:
    """Decode and convert a frame; anything wrong must surface as FrameError and nothing else."""
    frame = decoder.decode(data)
    if isinstance(frame, OrderbookDelta):
        decoder.delta_update(frame.msg)
    else:
        decoder.snapshot_levels(frame.msg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        decode_fully(OrderbookFrameDecoder(), data)
    except FrameError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([CURRENT_DELTA, LEGACY_DELTA, CURRENT_SNAPSHOT, LEGACY_SNAPSHOT]),
    key=st.sampled_from(DELTA_KEYS + SNAP_KEYS + ["sid", "seq", "type"]),
    value=json_values | st.sampled_from(["0.5", "-0.5", "1.0001", "7.001", "NaN", "", "yes", "no"]),
    use_yes_price=st.booleans(),
)
def test_fuzz_one_field_mutated(base: bytes, key: str, value: object, use_yes_price: bool) -> None:
    frame = json.loads(base)
    (frame["msg"] if key not in ("sid", "seq", "type") else frame)[key] = value
    try:
        decode_fully(OrderbookFrameDecoder(use_yes_price), json.dumps(frame).encode())
    except FrameError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.lists(st.lists(json_values, max_size=3), max_size=4), field=st.sampled_from(SNAP_KEYS[1:]))
def test_fuzz_snapshot_levels(levels: list[list[object]], field: str) -> None:
    frame = {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": "T", field: levels}}
    try:
        decode_fully(OrderbookFrameDecoder(), json.dumps(frame).encode())
    except FrameError:
        pass


# ---------------------------------------------------------------------- apply_deltas fast path


def handle_one(decoder: OrderbookFrameDecoder, books: dict[str, OrderBook], data: bytes) -> str:
    """The per-frame reference path a collector takes for a frame the fast path stopped at."""
    try:
        frame = decoder.decode(data)
        if isinstance(frame, OrderbookSnapshot):
            if frame.msg.market_ticker in books:
                books[frame.msg.market_ticker].apply_snapshot(*decoder.snapshot_levels(frame.msg))
            return "snapshot"
        book = books.get(frame.msg.market_ticker)
        if book is None or book.invalid:
            return "skipped"
        book.apply_delta(*decoder.delta_update(frame.msg))
        return "applied"
    except FrameError:
        return "malformed"
    except BookError:
        return "rejected"


@st.composite
def mixed_stream(draw: st.DrawFn) -> tuple[PriceGrid, bool, list[bytes]]:
    """Valid deltas mixed with everything the fast path must stop at or handle slowly."""
    grid = draw(st.sampled_from(GRIDS))
    use_yes_price = draw(st.booleans())
    model: dict[tuple[str, Side, int], int] = {}
    frames: list[bytes] = []
    for seq in range(1, draw(st.integers(1, 50)) + 1):
        ticker = draw(st.sampled_from(["A", "B", "C"]))  # "C" has no book
        side = draw(st.sampled_from([YES, NO]))
        price = draw(st.sampled_from(grid.prices[-6:] if draw(st.booleans()) else grid.prices))
        size = model.get((ticker, side, price), 0)
        kind = draw(st.integers(0, 19))
        if kind == 0:
            levels = draw(book_levels(grid, False))
            frames.append(encode_snapshot(1, seq, ticker, None, levels, [], use_yes_price))
            model = {k: v for k, v in model.items() if k[0] != ticker}
            model |= {(ticker, YES, p): q for p, q in levels}
            continue
        if kind == 1:
            frames.append(draw(st.sampled_from([b"{", b'{"type":"ok","sid":1,"seq":3,"msg":{}}', b"null"])))
            continue
        if kind == 2:  # would go negative: rejected, book unchanged
            too_big = -size - 1
            frames.append(encode_delta(1, seq, ticker, None, side, price, too_big, seq, None, use_yes_price))
            continue
        delta = -size if size and kind < 8 else draw(st.integers(1, 10**6))
        legacy = kind < 12
        frame = encode_delta(1, seq, ticker, None, side, price, delta, seq, None, use_yes_price, legacy)
        if kind == 3:  # legacy-only delta: integers, no fixed-point strings
            msg = json.loads(frame)["msg"]
            if "price" in msg:
                frame = json.dumps({"type": "orderbook_delta", "sid": 1, "seq": seq, "msg": {
                    k: msg[k] for k in ("market_ticker", "price", "delta", "side")}}).encode()
        elif kind == 4:  # non-canonical spelling of the same price
            text = json.loads(frame)["msg"]["price_dollars"]
            frame = frame.replace(f'"{text}"'.encode(), f'"{text.rstrip("0")}"'.encode())
        frames.append(frame)
        if ticker != "C":
            model[(ticker, side, price)] = size + delta
    return grid, use_yes_price, frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed_stream(), st.integers(1, 7))
def test_apply_deltas_equals_the_per_frame_path(
    stream: tuple[PriceGrid, bool, list[bytes]], batch: int
) -> None:
    grid, use_yes_price, frames = stream
    slow_books = {t: OrderBook(t, grid) for t in ("A", "B")}
    fast_books = {t: OrderBook(t, grid) for t in ("A", "B")}
    slow_decoder, fast_decoder = OrderbookFrameDecoder(use_yes_price), OrderbookFrameDecoder(use_yes_price)
    slow_outcomes = [handle_one(slow_decoder, slow_books, data) for data in frames]
    fast_outcomes: list[str] = []
    i = 0
    while i < len(frames):
        applied: list[OrderbookDelta] = []
        stop = min(i + batch, len(frames))
        j = fast_decoder.apply_deltas(frames, fast_books, i, stop, applied)
        assert i <= j <= stop and len(applied) == j - i
        assert [f.seq for f in applied] == [fast_decoder.decode(d).seq for d in frames[i:j]]
        fast_outcomes += ["applied"] * (j - i)
        if j < stop:  # the fast path leaves this frame to the caller
            fast_outcomes.append(handle_one(fast_decoder, fast_books, frames[j]))
            j += 1
        i = j
    assert fast_outcomes == slow_outcomes
    assert fast_books == slow_books
    for ticker, book in fast_books.items():
        for side in (YES, NO):
            assert book.best_bid(side) == slow_books[ticker].best_bid(side)


def test_apply_deltas_stops_at_a_seq_gap_and_at_other_sids() -> None:
    decoder = OrderbookFrameDecoder()
    book = OrderBook("T")
    books = {"T": book}
    frames = [encode_delta(1, seq, "T", None, YES, 4_200, 100, None) for seq in (5, 6, 7, 9, 10)]
    assert decoder.apply_deltas(frames, books, 0, None, None, sid=1, next_seq=5) == 3
    assert book.size(YES, 4_200) == 300
    assert decoder.apply_deltas(frames, books, 3, None, None, sid=1, next_seq=8) == 3  # 9 is not 8
    assert decoder.apply_deltas(frames, books, 3, None, None, sid=2, next_seq=9) == 3  # wrong sid
    assert decoder.apply_deltas(frames, books, 3, None, None, sid=1, next_seq=9) == 5
    assert decoder.apply_deltas(frames, books, 5) == 5  # nothing left


def test_apply_deltas_stops_at_invalid_books_and_off_grid_prices() -> None:
    decoder = OrderbookFrameDecoder()
    book = OrderBook("T")
    books = {"T": book}
    sub_cent = encode_delta(1, 1, "T", None, YES, 4_205, 100, None)
    assert decoder.apply_deltas([sub_cent], books) == 0 and book.is_empty()
    book.invalidate("gap")
    assert decoder.apply_deltas([encode_delta(1, 2, "T", None, YES, 4_200, 100, None)], books) == 0
    assert book.is_empty()
