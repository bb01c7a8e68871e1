"""OrderBook: bids-only L2 book against a trivial dict model, plus Kalshi's documented example."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.market.book import BookError, OrderBook
from kalshiflow.market.prices import DECI_CENT, GRIDS, LINEAR_CENT, PRICE_SCALE, TAPERED_DECI_CENT, PriceGrid
from kalshiflow.market.types import Side

YES, NO = Side.YES, Side.NO


def kalshi_example() -> OrderBook:
    """docs.kalshi.com orderbook_responses: yes 0.01x200, 0.42x13; no 0.01x100, 0.56x17."""
    book = OrderBook("KXEXAMPLE")
    book.apply_snapshot([(100, 20_000), (4_200, 1_300)], [(100, 10_000), (5_600, 1_700)])
    return book


def test_kalshi_documented_example() -> None:
    book = kalshi_example()
    assert book.best_bid(YES) == 4_200 and book.best_bid_size(YES) == 1_300
    assert book.best_bid(NO) == 5_600 and book.best_bid_size(NO) == 1_700
    assert book.best_bids() == (4_200, 5_600)
    assert book.best_ask(YES) == 4_400  # 1 - 0.56
    assert book.best_ask_size(YES) == 1_700  # the NO bid's size
    assert book.best_ask(NO) == 5_800  # 1 - 0.42
    assert book.best_ask_size(NO) == 1_300
    assert book.spread() == 200
    assert book.mid() == pytest.approx(0.43)
    # microprice leans toward the thinner side: 13 bid vs 17 ask -> below the mid
    assert book.microprice() == pytest.approx((0.42 * 17 + 0.44 * 13) / 30)
    assert book.depth(YES, 1) == [(4_200, 1_300)]
    assert book.depth(YES, 5) == [(4_200, 1_300), (100, 20_000)]
    assert book.depth(NO, 2) == [(5_600, 1_700), (100, 10_000)]
    assert book.levels(YES) == [(100, 20_000), (4_200, 1_300)]
    assert book.total_size(YES) == 21_300 and book.total_size(NO) == 11_700
    assert not book.is_crossed() and not book.is_empty()
    assert book.size(NO, 5_600) == 1_700 and book.size(NO, 5_700) == 0


def test_empty_book_reads() -> None:
    book = OrderBook("E")
    assert book.is_empty()
    assert book.best_bid(YES) is None and book.best_ask(YES) is None and book.best_bids() == (None, None)
    assert book.best_bid_size(NO) == 0 and book.best_ask_size(NO) == 0
    assert book.spread() is None and book.mid() is None and book.microprice() is None
    assert book.depth(YES, 3) == [] and book.levels(NO) == []
    assert not book.is_crossed()


def test_one_sided_book_has_no_spread() -> None:
    book = OrderBook("E")
    book.apply_delta(YES, 4_000, 500)
    assert book.best_bid(YES) == 4_000 and book.best_ask(NO) == 6_000
    assert book.best_ask(YES) is None and book.spread() is None and book.mid() is None


def test_delta_at_touch_moves_best_down_and_up() -> None:
    book = kalshi_example()
    assert book.apply_delta(YES, 4_200, -1_300) == 0
    assert book.best_bid(YES) == 100
    assert book.apply_delta(YES, 4_300, 500) == 500
    assert book.best_bid(YES) == 4_300
    assert book.apply_delta(YES, 100, -20_000) == 0
    assert book.apply_delta(YES, 4_300, -500) == 0
    assert book.best_bid(YES) is None and book.best_bid_size(YES) == 0


def test_crossed_and_locked() -> None:
    book = kalshi_example()
    book.apply_delta(YES, 4_400, 100)  # YES bid at the YES ask: locked, would trade
    assert book.is_crossed() and book.spread() == 0
    book.apply_delta(YES, 4_500, 100)
    assert book.spread() == -100


def test_sub_cent_grid() -> None:
    book = OrderBook("SUB", DECI_CENT)
    book.apply_snapshot([(4_410, 150)], [(5_550, 275)])
    assert book.best_ask(YES) == 4_450 and book.spread() == 40
    assert book.apply_delta(YES, 4_420, 1) == 1 and book.best_bid(YES) == 4_420
    with pytest.raises(BookError):
        book.apply_delta(YES, 4_425, 100)  # $0.0001 steps are not on the deci-cent grid


@pytest.mark.parametrize(
    ("side", "price", "delta", "words"),
    [
        (YES, 4_200, -1_301, ["KXEXAMPLE", "yes", "0.4200", "13.00", "-13.01", "negative"]),
        (NO, 100, -10_001, ["KXEXAMPLE", "no", "0.0100", "100.00"]),
        (YES, 4_200, 0, ["zero delta"]),
        (YES, 4_250, 100, ["0.4250", "not a valid price", "linear_cent"]),
        (YES, 0, 100, ["0.0000"]),
        (NO, PRICE_SCALE, 100, ["1.0000"]),
        (YES, -100, 100, ["-0.0100"]),
        (YES, 20_000, 100, ["2.0000"]),
        (YES, 4_200.5, 100, ["4200.5"]),
        (YES, "0.42", 100, ["'0.42'"]),
        (YES, True, 100, ["True"]),
        (YES, [4_200], 100, ["[4200]"]),
        ("maybe", 4_200, 100, ["unknown side 'maybe'"]),
        (None, 4_200, 100, ["unknown side None"]),
        ([YES], 4_200, 100, ["unknown side"]),
        (YES, 4_200, "5", ["delta must be an integer"]),
        (YES, 4_200, None, ["delta must be an integer"]),
        (YES, 4_200, 1.0, ["delta must be an integer"]),
        (YES, 4_200, True, ["delta must be an integer"]),
    ],
)
def test_invalid_deltas_raise_and_leave_the_book_unchanged(
    side: object, price: object, delta: object, words: list[str]
) -> None:
    book = kalshi_example()
    before = book.copy()
    with pytest.raises(BookError) as info:
        book.apply_delta(side, price, delta)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)
    assert book == before
    assert book.best_bid(YES) == 4_200 and book.best_bid(NO) == 5_600


def test_a_price_is_only_a_key_so_equal_numbers_find_the_level() -> None:
    book = kalshi_example()
    assert book.apply_delta(YES, 4_200.0, 100) == 1_400  # type: ignore[arg-type]
    assert book.levels(YES)[-1] == (4_200, 1_400) and type(book.levels(YES)[-1][0]) is int


def test_sides_may_be_given_as_their_wire_strings() -> None:
    book = kalshi_example()
    assert book.apply_delta("no", 5_600, 100) == 1_800  # type: ignore[arg-type]
    assert book.best_bid("yes") == 4_200  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("yes", "no", "words"),
    [
        ([(4_200, 100), (4_200, 200)], [], ["appears twice"]),
        ([(4_200, 0)], [], ["positive integer"]),
        ([], [(5_600, -5)], ["positive integer"]),
        ([(4_250, 100)], [], ["not a valid price"]),
        ([(4_200, 1.5)], [], ["positive integer"]),
        ([], [(0, 100)], ["not a valid price"]),
    ],
)
def test_bad_snapshots_raise_and_leave_the_book_unchanged(
    yes: list[tuple[int, int]], no: list[tuple[int, int]], words: list[str]
) -> None:
    book = kalshi_example()
    book.invalidate("gap at seq 7")
    before = book.copy()
    with pytest.raises(BookError) as info:
        book.apply_snapshot(yes, no)
    for word in words:
        assert word in str(info.value)
    assert book == before and book.invalid  # nothing swapped, still awaiting a good snapshot


def test_snapshot_replaces_wholesale_and_clears_invalid() -> None:
    book = kalshi_example()
    book.invalidate("seq gap 11 -> 13")
    assert book.invalid and book.invalid_reason == "seq gap 11 -> 13" and "INVALID" in repr(book)
    book.apply_snapshot([(3_000, 100)], [])
    assert not book.invalid and book.invalid_reason is None
    assert book.levels(YES) == [(3_000, 100)] and book.levels(NO) == []
    book.clear()
    assert book.is_empty()


def test_set_level() -> None:
    book = kalshi_example()
    assert book.set_level(YES, 4_300, 700) == 0
    assert book.best_bid(YES) == 4_300
    assert book.set_level(YES, 4_300, 0) == 700
    assert book.best_bid(YES) == 4_200
    before = book.copy()
    for bad in (-1, 1.0, None, True):
        with pytest.raises(BookError):
            book.set_level(YES, 4_200, bad)  # type: ignore[arg-type]
    with pytest.raises(BookError):
        book.set_level(YES, 4_201, 5)
    assert book == before


def test_copy_is_independent_and_equality_is_by_content() -> None:
    book = kalshi_example()
    twin = book.copy()
    assert twin == book and twin is not book
    twin.apply_delta(YES, 4_200, 1)
    assert twin != book and book.size(YES, 4_200) == 1_300
    assert OrderBook("A") != OrderBook("B")
    assert OrderBook("A", LINEAR_CENT) != OrderBook("A", DECI_CENT)
    assert OrderBook("A") != "A"
    with pytest.raises(TypeError):
        hash(book)


# ---------------------------------------------------------------------- model-based property


@st.composite
def grid_and_snapshot(draw: st.DrawFn) -> tuple[PriceGrid, dict[tuple[Side, int], int]]:
    grid = draw(st.sampled_from([LINEAR_CENT, TAPERED_DECI_CENT, DECI_CENT]))
    levels = st.dictionaries(st.sampled_from(grid.prices), st.integers(1, 10**7), max_size=12)
    model = {(YES, p): q for p, q in draw(levels).items()} | {(NO, p): q for p, q in draw(levels).items()}
    return grid, model


def model_best(model: dict[tuple[Side, int], int], side: Side) -> int | None:
    prices = [p for (s, p), q in model.items() if s is side and q]
    return max(prices) if prices else None


@settings(max_examples=80, deadline=None)
@given(grid_and_snapshot(), st.data())
def test_any_valid_delta_sequence_matches_a_dict_model(
    start: tuple[PriceGrid, dict[tuple[Side, int], int]], data: st.DataObject
) -> None:
    grid, model = start
    book = OrderBook("PROP", grid)
    book.apply_snapshot(
        [(p, q) for (s, p), q in model.items() if s is YES],
        [(p, q) for (s, p), q in model.items() if s is NO],
    )
    # touch-heavy prices, like real flow: the current bests and their neighbours, plus anywhere
    for _ in range(data.draw(st.integers(0, 60), label="steps")):
        side = data.draw(st.sampled_from([YES, NO]), label="side")
        best = model_best(model, side)
        near = [] if best is None else [p for p in grid.prices if abs(grid.level(p) - grid.level(best)) <= 2]
        touch_heavy = bool(near) and data.draw(st.booleans())
        price = data.draw(st.sampled_from(near) if touch_heavy else st.sampled_from(grid.prices))
        size = model.get((side, price), 0)
        if data.draw(st.integers(0, 9), label="invalid?") == 0:  # an invalid delta: rejected, no change
            delta = data.draw(st.sampled_from([0, -size - 1, -size - 10**6]), label="bad delta")
            before = book.copy()
            with pytest.raises(BookError):
                book.apply_delta(side, price, delta)
            assert book == before
            continue
        if size and data.draw(st.booleans(), label="remove all"):
            delta = -size
        else:
            delta = data.draw(st.integers(-size, 10**6).filter(bool), label="delta")
        model[(side, price)] = size + delta
        assert book.apply_delta(side, price, delta) == size + delta
        # Reads are sparse and random, so the lazily tightened best level goes stale across steps.
        read = data.draw(st.integers(0, 3), label="read")
        if read == 1:
            assert book.best_bids() == (model_best(model, YES), model_best(model, NO))
        elif read == 2:
            for s in (YES, NO):
                best = model_best(model, s)
                assert book.best_bid(s) == best
                assert book.best_bid_size(s) == (model[(s, best)] if best is not None else 0)
    assert book.best_bids() == (model_best(model, YES), model_best(model, NO))
    for s in (YES, NO):
        expected = sorted((p, q) for (side, p), q in model.items() if side is s and q)
        assert book.levels(s) == expected
        assert book.depth(s, 3) == expected[::-1][:3]
        assert book.total_size(s) == sum(q for _, q in expected)
    rebuilt = OrderBook("PROP", grid)
    rebuilt.apply_snapshot(book.levels(YES), book.levels(NO))
    assert rebuilt == book


@pytest.mark.parametrize("grid", list(GRIDS.values()), ids=list(GRIDS))
def test_every_level_of_every_grid_is_addressable(grid: PriceGrid) -> None:
    book = OrderBook("ALL", grid)
    for price in grid.prices:
        book.apply_delta(NO, price, 1)
        assert book.best_bid(NO) == price
    assert book.total_size(NO) == len(grid.prices)
    for price in reversed(grid.prices):
        assert book.best_bid(NO) == price
        book.apply_delta(NO, price, -1)
    assert book.is_empty()
