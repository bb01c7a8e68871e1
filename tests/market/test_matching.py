"""MatchingEngine: price-time priority over two bid ladders, order types, STP, deltas, replay queue."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.market.book import OrderBook
from kalshiflow.market.matching import (
    MatchingEngine,
    OrderNotFound,
    OrderRequest,
    OrderResult,
    SelfTradePrevention,
    SequentialIds,
)
from kalshiflow.market.prices import DECI_CENT, LINEAR_CENT, PRICE_SCALE
from kalshiflow.market.types import Action, OrderStatus, OrderType, Side, TimeInForce

C = 100
CENT = 100
S = PRICE_SCALE
YES, NO, BUY, SELL = Side.YES, Side.NO, Action.BUY, Action.SELL
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def engine(grid=LINEAR_CENT) -> MatchingEngine:  # type: ignore[no-untyped-def]
    t = iter(range(1, 1_000_000))
    return MatchingEngine("MKT", grid, clock=lambda: float(next(t)))


def req(side: Side, action: Action, cents: int, contracts: int, tif: TimeInForce = GTC, **kw) -> OrderRequest:  # type: ignore[no-untyped-def]
    """Price in the order's own side terms (yes_price for YES orders, no_price for NO orders)."""
    key = "yes_price" if side is YES else "no_price"
    return OrderRequest(side=side, action=action, count=contracts * C, time_in_force=tif,
                        **{key: cents * CENT}, **kw)


def rest(e: MatchingEngine, owner: str, side: Side, cents: int, contracts: int) -> str:
    r = e.submit(owner, req(side, BUY, cents, contracts))
    assert r.ok and r.order is not None and r.order.status is OrderStatus.RESTING, r
    return r.order.order_id


def test_buy_yes_takes_no_bid_at_resting_price_with_improvement() -> None:
    e = engine()
    rest(e, "mm", NO, 30, 10)  # NO bid 0.30 = YES ask 0.70
    r = e.submit("t", req(YES, BUY, 75, 4))
    assert r.order is not None and r.order.status is OrderStatus.EXECUTED
    (f,) = r.fills
    assert (f.yes_price, f.no_price, f.count) == (70 * CENT, 30 * CENT, 4 * C)  # improvement: 0.70 not 0.75
    assert f.taker_side is YES and f.taker_action is BUY and f.taker_outcome_side is YES
    assert f.maker_outcome_side is NO and f.maker_side is NO and f.maker_action is BUY
    assert f.price_paid(True) == 70 * CENT and f.price_paid(False) == 30 * CENT
    assert e.book.size(NO, 30 * CENT) == 6 * C
    assert [(d.side, d.price, d.delta, d.size) for d in r.deltas] == [(NO, 3000, -400, 600)]


def test_sell_yes_rests_as_no_bid_and_no_fills_priced_on_no_side() -> None:
    e = engine()
    r = e.submit("a", req(YES, SELL, 60, 5))  # sell YES at 0.60 == NO bid at 0.40
    assert r.order is not None and r.order.ladder_side is NO and r.order.ladder_price == 40 * CENT
    assert r.order.price == 60 * CENT and r.order.yes_price == 60 * CENT and r.order.no_price == 40 * CENT
    assert e.book.best_bid(NO) == 40 * CENT and e.book.best_ask(YES) == 60 * CENT
    t = e.submit("b", req(YES, BUY, 65, 5))
    (f,) = t.fills
    assert f.yes_price == 60 * CENT and f.no_price == 40 * CENT  # the seller bought NO at 0.40
    assert f.maker_side is YES and f.maker_action is SELL and f.maker_outcome_side is NO


def test_buy_no_crosses_yes_bids() -> None:
    e = engine()
    rest(e, "mm", YES, 48, 5)
    r = e.submit("t", req(NO, BUY, 55, 5))  # NO bid 0.55 crosses YES 0.48 (sum >= 1)
    (f,) = r.fills
    assert f.yes_price == 48 * CENT and f.no_price == 52 * CENT  # NO buyer pays 0.52 <= 0.55
    assert f.price_paid(True) == 52 * CENT
    assert e.book.best_bid(YES) is None


def test_equal_sum_crosses_and_below_does_not() -> None:
    e = engine()
    rest(e, "mm", YES, 48, 5)
    r = e.submit("t", req(NO, BUY, 51, 5))
    assert not r.fills and r.order is not None and r.order.status is OrderStatus.RESTING
    r = e.submit("t2", req(NO, BUY, 52, 1))
    assert r.fills and r.fills[0].yes_price == 48 * CENT


def test_price_time_priority() -> None:
    e = engine()
    first = rest(e, "a", YES, 50, 2)
    second = rest(e, "b", YES, 50, 2)
    better = rest(e, "c", YES, 51, 1)
    r = e.submit("t", req(YES, SELL, 50, 4))  # sell YES at 0.50 = NO bid 0.50
    assert [(f.maker_order_id, f.yes_price, f.count) for f in r.fills] == [
        (better, 51 * CENT, 1 * C),
        (first, 50 * CENT, 2 * C),
        (second, 50 * CENT, 1 * C),
    ]
    assert e.get(second) is not None and e.get(second).remaining_count == 1 * C  # type: ignore[union-attr]
    assert e.get(first) is None
    executed = {m.order_id: m for m in r.makers}
    assert executed[first].status is OrderStatus.EXECUTED and executed[second].status is OrderStatus.RESTING


def test_ioc_cancels_remainder_and_gtc_rests_it() -> None:
    e = engine()
    rest(e, "mm", NO, 50, 3)
    r = e.submit("t", req(YES, BUY, 50, 5, IOC))
    assert r.order is not None and r.order.fill_count == 3 * C and r.order.remaining_count == 0
    assert r.order.status is OrderStatus.CANCELED and r.cancel_reason == "immediate_or_cancel"
    assert e.book.best_bid(YES) is None
    rest(e, "mm", NO, 50, 3)
    r = e.submit("t", req(YES, BUY, 50, 5, GTC))
    assert r.order is not None and r.order.status is OrderStatus.RESTING and r.order.remaining_count == 2 * C
    assert e.book.size(YES, 50 * CENT) == 2 * C


def test_fok_all_or_nothing() -> None:
    e = engine()
    rest(e, "mm", NO, 50, 3)
    rest(e, "mm", NO, 49, 3)
    before = e.book.copy()
    r = e.submit("t", req(YES, BUY, 51, 7, FOK))
    assert r.error == "fok_insufficient_volume" and not r.fills and not r.deltas
    assert e.book == before
    r = e.submit("t", req(YES, BUY, 51, 6, FOK))
    assert r.order is not None and r.order.status is OrderStatus.EXECUTED
    assert sum(f.count for f in r.fills) == 6 * C


def test_fok_counts_only_volume_before_own_order_under_taker_stp() -> None:
    e = engine()
    rest(e, "t", NO, 50, 3)  # own order at the front
    rest(e, "mm", NO, 50, 3)
    assert e.submit("t", req(YES, BUY, 50, 2, FOK)).error == "fok_insufficient_volume"
    r = e.submit("t", req(YES, BUY, 50, 3, FOK, self_trade_prevention=SelfTradePrevention.MAKER))
    assert r.ok and sum(f.count for f in r.fills) == 3 * C


def test_post_only() -> None:
    e = engine()
    rest(e, "mm", NO, 50, 3)
    r = e.submit("t", req(YES, BUY, 50, 1, post_only=True))
    assert r.error == "post_only_cross" and not r.fills
    r = e.submit("t", req(YES, BUY, 49, 1, post_only=True))
    assert r.ok and r.order is not None and r.order.status is OrderStatus.RESTING and r.order.post_only
    assert e.submit("t", req(YES, BUY, 40, 1, IOC, post_only=True)).error == "invalid_order"


def test_market_order_walks_book_and_never_rests() -> None:
    e = engine()
    rest(e, "mm", YES, 48, 2)
    rest(e, "mm", YES, 40, 2)
    r = e.submit("t", OrderRequest(side=YES, action=SELL, count=5 * C, type=OrderType.MARKET))
    assert [(f.yes_price, f.count) for f in r.fills] == [(48 * CENT, 2 * C), (40 * CENT, 2 * C)]
    assert r.order is not None and r.order.status is OrderStatus.CANCELED and r.order.fill_count == 4 * C
    assert r.order.time_in_force is IOC and e.book.is_empty()


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"yes_price": 0}, "invalid_price"),
        ({"yes_price": S}, "invalid_price"),
        ({"yes_price": 5050}, "invalid_price"),  # half a cent on a 1-cent grid
        ({"yes_price": 4000, "no_price": 5000}, "invalid_price"),
        ({}, "invalid_price"),
        ({"yes_price": 4000, "count": 0}, "invalid_count"),
        ({"yes_price": 4000, "count": -100}, "invalid_count"),
    ],
)
def test_validation(kw: dict, code: str) -> None:  # type: ignore[type-arg]
    e = engine()
    r = e.submit("t", OrderRequest(side=YES, action=BUY, **{"count": 100, **kw}))
    assert r.error == code and r.order is None and e.book.is_empty()


def test_sub_cent_grid_and_both_prices_consistent() -> None:
    e = engine(DECI_CENT)
    r = e.submit("t", OrderRequest(side=NO, action=BUY, count=100, yes_price=5050, no_price=4950))
    assert r.ok and r.order is not None and r.order.ladder_price == 4950


def test_stp_taker_at_cross_cancels_incoming_at_that_point() -> None:
    e = engine()
    rest(e, "mm", NO, 52, 1)
    mine = rest(e, "t", NO, 50, 2)
    rest(e, "mm", NO, 49, 5)
    r = e.submit("t", req(YES, BUY, 51, 5))
    assert [f.yes_price for f in r.fills] == [48 * CENT]  # took 0.52 NO, stopped at own 0.50
    assert r.order is not None and r.order.status is OrderStatus.CANCELED
    assert r.cancel_reason == "taker_self_trade_prevention" and r.order.fill_count == 1 * C
    assert e.get(mine) is not None and e.book.size(NO, 49 * CENT) == 5 * C


def test_stp_maker_cancels_resting_and_continues() -> None:
    e = engine()
    mine = rest(e, "t", NO, 50, 2)
    rest(e, "mm", NO, 50, 3)
    r = e.submit("t", req(YES, BUY, 50, 3, self_trade_prevention=SelfTradePrevention.MAKER))
    assert r.order is not None and r.order.status is OrderStatus.EXECUTED
    assert [(f.maker_owner, f.count) for f in r.fills] == [("mm", 3 * C)]
    canceled = [m for m in r.makers if m.order_id == mine]
    assert canceled and canceled[0].status is OrderStatus.CANCELED and e.get(mine) is None
    assert [(d.price, d.delta, d.size) for d in r.deltas] == [(5000, -200, 300), (5000, -300, 0)]


def test_deltas_reproduce_book_exactly() -> None:
    e = engine()
    shadow = OrderBook("MKT", LINEAR_CENT)
    ops = [
        e.submit("a", req(YES, BUY, 45, 3)),
        e.submit("b", req(NO, BUY, 50, 4)),
        e.submit("c", req(YES, SELL, 44, 5)),  # NO bid 0.56 crosses YES 0.45
        e.submit("d", req(NO, SELL, 40, 9)),  # YES bid 0.60 crosses NO bids
    ]
    for r in ops:
        for d in r.deltas:
            assert d.delta != 0
            assert shadow.apply_delta(d.side, d.price, d.delta) == d.size
    assert shadow == e.book


def test_cancel_and_decrease() -> None:
    e = engine()
    a = rest(e, "a", YES, 40, 5)
    b = rest(e, "b", YES, 40, 5)
    state, by, deltas = e.decrease(a, reduce_by=2 * C)
    assert by == 2 * C and state.remaining_count == 3 * C and state.status is OrderStatus.RESTING
    assert [d.size for d in deltas] == [8 * C]
    assert e.queue(YES, 40 * CENT) == [(a, 3 * C), (b, 5 * C)]  # kept its place
    assert e.queue_ahead(b) == 3 * C
    state, by, deltas = e.cancel(a)
    assert state.status is OrderStatus.CANCELED and by == 3 * C and state.remaining_count == 0
    assert deltas[0].size == 5 * C and e.get(a) is None
    with pytest.raises(OrderNotFound):
        e.cancel(a)
    with pytest.raises(ValueError):
        e.decrease(b, reduce_by=6 * C)
    state, by, _ = e.decrease(b, reduce_to=1 * C)
    assert by == 4 * C
    assert [o.order_id for o in e.open_orders("b")] == [b] and e.open_orders("a") == []
    assert e.owners() == ["b"]


def test_order_state_fields() -> None:
    e = engine()
    r = e.submit("a", req(NO, SELL, 30, 2, client_order_id="c-1"))  # sell NO 0.30 = YES bid 0.70
    o = r.order
    assert o is not None
    assert (o.owner, o.ticker, o.side, o.action) == ("a", "MKT", NO, SELL)
    assert (o.ladder_side, o.ladder_price) == (YES, 7000)
    assert (o.price, o.yes_price, o.no_price) == (3000, 7000, 3000)
    assert (o.initial_count, o.remaining_count, o.fill_count) == (200, 200, 0)
    assert o.client_order_id == "c-1" and o.created_ts == 1.0 and len(o.order_id) == 36


# ---------------------------------------------------------------------- replay queue model


def test_crowd_liquidity_merges_and_agent_keeps_place() -> None:
    e = engine()
    e.add_liquidity(YES, 40 * CENT, 100)
    e.add_liquidity(YES, 40 * CENT, 50)
    assert e.queue(YES, 40 * CENT) == [(None, 150)]
    a = rest(e, "agent", YES, 40, 1)
    e.add_liquidity(YES, 40 * CENT, 70)
    assert e.queue(YES, 40 * CENT) == [(None, 150), (a, 100), (None, 70)]
    assert e.book.size(YES, 40 * CENT) == 320 and e.queue_ahead(a) == 150


def test_traded_decrease_fills_agent_after_crowd_ahead() -> None:
    e = engine()
    e.add_liquidity(YES, 40 * CENT, 150)
    a = rest(e, "agent", YES, 40, 1)
    e.add_liquidity(YES, 40 * CENT, 70)
    r = e.remove_liquidity(YES, 40 * CENT, 120, traded=True)
    assert not r.fills and e.queue(YES, 40 * CENT) == [(None, 30), (a, 100), (None, 70)]
    r = e.remove_liquidity(YES, 40 * CENT, 80, traded=True)
    (f,) = r.fills
    assert (f.maker_order_id, f.maker_owner, f.taker_owner, f.count) == (a, "agent", None, 50)
    assert f.yes_price == 40 * CENT and f.taker_outcome_side is NO
    assert e.queue(YES, 40 * CENT) == [(a, 50), (None, 70)]
    assert [m.remaining_count for m in r.makers] == [50]
    replay_book = OrderBook("MKT", LINEAR_CENT)
    replay_book.apply_snapshot([(40 * CENT, 120)], [])
    assert e.book == replay_book


def test_cancel_decrease_removes_crowd_from_back_never_agent() -> None:
    e = engine()
    e.add_liquidity(NO, 60 * CENT, 100)
    a = rest(e, "agent", NO, 60, 1)
    e.add_liquidity(NO, 60 * CENT, 30)
    r = e.remove_liquidity(NO, 60 * CENT, 50, traded=False)
    assert not r.fills and e.queue(NO, 60 * CENT) == [(None, 80), (a, 100)]
    e.remove_liquidity(NO, 60 * CENT, 500, traded=False)  # clamps at crowd volume
    assert e.queue(NO, 60 * CENT) == [(a, 100)] and e.book.size(NO, 60 * CENT) == 100


def test_volume_the_agent_took_is_not_removed_twice() -> None:
    e = engine()
    e.add_liquidity(YES, 48 * CENT, 500)
    r = e.submit("agent", req(YES, SELL, 48, 3))  # takes 300 of the crowd's 500
    assert sum(f.count for f in r.fills) == 300 and e.debt(YES, 48 * CENT) == 300
    # agent now bids at the same level behind 200 crowd
    a = rest(e, "agent", YES, 48, 1)
    # the recorded trade of 400 hit the same front contracts the agent took: 300 is owed, 100 real
    r = e.remove_liquidity(YES, 48 * CENT, 400, traded=True)
    assert not r.fills and e.debt(YES, 48 * CENT) == 0
    assert e.queue(YES, 48 * CENT) == [(None, 100), (a, 100)]
    # a recorded cancel larger than the crowd clamps (and pays any debt) instead of going negative
    e.remove_liquidity(YES, 48 * CENT, 1000, traded=False)
    assert e.queue(YES, 48 * CENT) == [(a, 100)]


def test_crossing_crowd_add_trades_with_agent() -> None:
    e = engine()
    a = rest(e, "agent", YES, 49, 1)
    r = e.add_liquidity(NO, 52 * CENT, 300)
    (f,) = r.fills
    assert (f.maker_order_id, f.count, f.yes_price) == (a, 100, 49 * CENT)
    assert e.book.size(NO, 52 * CENT) == 200 and e.debt(NO, 52 * CENT) == 100
    assert not e.book.is_crossed()


def test_close_empties_book_and_cancels_orders() -> None:
    e = engine()
    a = rest(e, "agent", YES, 49, 1)
    e.add_liquidity(NO, 40 * CENT, 300)
    canceled, deltas = e.close()
    assert [c.order_id for c in canceled] == [a] and canceled[0].status is OrderStatus.CANCELED
    assert e.book.is_empty() and e.open_orders("agent") == [] and len(deltas) == 2


# ---------------------------------------------------------------------- properties

op = st.one_of(
    st.tuples(st.just("order"), st.sampled_from(["a", "b", "c"]), st.sampled_from(list(Side)),
              st.sampled_from(list(Action)), st.integers(1, 99), st.integers(1, 500),
              st.sampled_from(list(TimeInForce)), st.booleans(), st.sampled_from(list(SelfTradePrevention))),
    st.tuples(st.just("add"), st.sampled_from(list(Side)), st.integers(1, 99), st.integers(1, 500)),
    st.tuples(st.just("remove"), st.sampled_from(list(Side)), st.integers(1, 99), st.integers(1, 500),
              st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
)


def check_result(e: MatchingEngine, r: OrderResult, shadow: OrderBook, request: OrderRequest | None) -> None:
    for f in r.fills:
        assert f.yes_price + f.no_price == S and 0 < f.yes_price < S and f.count > 0
    for d in r.deltas:
        assert d.delta != 0 and shadow.apply_delta(d.side, d.price, d.delta) == d.size
    if request is None or r.error is not None:
        return
    o = r.order
    assert o is not None
    filled = sum(f.count for f in r.fills)
    assert filled == o.fill_count and o.fill_count + o.remaining_count <= o.initial_count
    for f in r.fills:  # the taker never pays more than its limit
        assert f.price_paid(True) <= o.ladder_price
    if request.time_in_force is FOK:
        assert filled == o.initial_count  # never partial
    if request.post_only:
        assert not r.fills
    if o.status is OrderStatus.RESTING:
        assert not e.book.is_crossed()


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=40))
def test_random_operations_keep_book_consistent(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    e = engine()
    shadow = OrderBook("MKT", LINEAR_CENT)
    ids: list[str] = []
    for o in ops:
        request = None
        if o[0] == "order":
            _, owner, side, action, cents, qty, tif, post, stp = o
            request = OrderRequest(side=side, action=action, count=qty,
                                   **{"yes_price" if side is YES else "no_price": cents * CENT},
                                   time_in_force=tif, post_only=post and tif is GTC,
                                   self_trade_prevention=stp)
            r = e.submit(owner, request)
            if r.order is not None and r.order.status is OrderStatus.RESTING:
                ids.append(r.order.order_id)
        elif o[0] == "add":
            r = e.add_liquidity(o[1], o[2] * CENT, o[3])
        elif o[0] == "remove":
            r = e.remove_liquidity(o[1], o[2] * CENT, o[3], traded=o[4])
        else:
            if not ids:
                continue
            oid = ids[o[1] % len(ids)]
            if e.get(oid) is None:
                continue
            state, by, deltas = e.cancel(oid)
            r = OrderResult(order=state, deltas=deltas)
        check_result(e, r, shadow, request)
        assert shadow == e.book
        assert not e.book.is_crossed()
        for side in Side:  # L3 queues sum to the L2 book
            for price, size in e.book.levels(side):
                assert sum(q for _, q in e.queue(side, price)) == size


def test_sequential_ids_are_deterministic_uuids() -> None:
    a, b = SequentialIds(7), SequentialIds(7)
    ids = [a() for _ in range(3)]
    assert ids == [b() for _ in range(3)]
    assert [uuid.UUID(x).int for x in ids] == [(7 << 64) | n for n in (1, 2, 3)]
    assert SequentialIds(8)() != SequentialIds(7)()


def _l3(e: MatchingEngine) -> tuple[object, ...]:
    """Everything replay can change: L2 book, L3 queues (owned ids, remaining), debts."""
    return (e.book.levels(YES), e.book.levels(NO),
            [(side, p, e.queue(side, p), e.debt(side, p)) for side in Side for p in range(CENT, S, CENT)])


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=40))
def test_lean_replay_equals_add_and_remove_liquidity(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """replay_add / replay_remove (the RL env's replay) change exactly what add_liquidity /
    remove_liquidity change, and decline (changing nothing) only where a fill is possible."""
    # A constant clock: the full methods read it (fill timestamps), the lean ones never do.
    full, lean = (MatchingEngine("MKT", LINEAR_CENT, clock=lambda: 1.0) for _ in range(2))
    for o in ops:
        if o[0] == "order":
            _, owner, side, action, cents, qty, tif, post, stp = o
            request = OrderRequest(side=side, action=action, count=qty,
                                   **{"yes_price" if side is YES else "no_price": cents * CENT},
                                   time_in_force=tif, post_only=post and tif is GTC,
                                   self_trade_prevention=stp)
            assert full.submit(owner, request) == lean.submit(owner, request)
            continue
        if o[0] == "cancel":
            continue
        li = 0 if o[1] is YES else 1
        before = _l3(lean)
        if o[0] == "add":
            expected = full.add_liquidity(o[1], o[2] * CENT, o[3])
            handled = lean.replay_add(li, o[2] * CENT, o[3])
        else:
            expected = full.remove_liquidity(o[1], o[2] * CENT, o[3], traded=o[4])
            handled = lean.replay_remove(li, o[2] * CENT, o[3], o[4])
        if handled:
            assert not expected.fills
        else:
            assert _l3(lean) == before  # declined: untouched, the caller uses the full method
            got = (lean.add_liquidity(o[1], o[2] * CENT, o[3]) if o[0] == "add"
                   else lean.remove_liquidity(o[1], o[2] * CENT, o[3], traded=o[4]))
            assert got == expected
        assert _l3(lean) == _l3(full)
