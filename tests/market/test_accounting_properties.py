"""Accounting invariants (DESIGN §3, prior-system-lessons §8.1/§10.1), as properties that fail if the
economics break: no free money on a static book, cash >= 0, conservation, round trip = spread + fees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.market.fees import taker_fee
from kalshiflow.market.matching import OrderRequest, OrderResult, OrderState, SelfTradePrevention
from kalshiflow.market.prices import MONEY_SCALE, PRICE_SCALE
from kalshiflow.market.types import Action, OrderStatus, OrderType, Side, TimeInForce
from kalshiflow.market.venue import Venue

C = 100
CENT = 100
D = MONEY_SCALE
S = PRICE_SCALE
T = "MKT"
YES, NO, BUY, SELL = Side.YES, Side.NO, Action.BUY, Action.SELL


def order(side: Side, action: Action, cents: int, qty: int, tif: TimeInForce = TimeInForce.GTC,
          **kw) -> OrderRequest:  # type: ignore[no-untyped-def]
    key = "yes_price" if side is YES else "no_price"
    return OrderRequest(side=side, action=action, count=qty, time_in_force=tif, **{key: cents * CENT}, **kw)


def static_venue(yes: list[tuple[int, int]], no: list[tuple[int, int]], **balances: int) -> Venue:
    """A market whose book is resting orders of account "mm" (it has a portfolio, so conservation
    can be checked across all accounts)."""
    v = Venue(clock=lambda: 0.0)
    v.add_market(T)
    v.open_account("mm", 1_000_000 * D)
    for owner, micro in balances.items():
        v.open_account(owner, micro)
    for side, levels in ((YES, yes), (NO, no)):
        for cents, qty in levels:
            assert v.submit("mm", T, order(side, BUY, cents, qty)).ok
    return v


@st.composite
def books(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    yes_top = draw(st.integers(1, 98))
    no_top = draw(st.integers(1, 99 - yes_top))  # yes_top + no_top <= 99: uncrossed, spread >= 1c
    size = st.integers(1, 3000)
    yes = [(yes_top - i, draw(size)) for i in range(draw(st.integers(1, 3))) if yes_top - i >= 1]
    no = [(no_top - i, draw(size)) for i in range(draw(st.integers(1, 3))) if no_top - i >= 1]
    return yes, no


agent_orders = st.tuples(
    st.sampled_from(list(Side)), st.sampled_from(list(Action)), st.integers(1, 99), st.integers(1, 2500),
    st.sampled_from(list(TimeInForce)), st.booleans(), st.booleans(),
    st.sampled_from(list(SelfTradePrevention)),
    st.integers(0, 3),  # 0: cancel one of my orders instead of submitting
)


def to_request(o: tuple) -> OrderRequest:  # type: ignore[type-arg]
    side, action, cents, qty, tif, post, market, stp, _ = o
    if market:
        return OrderRequest(side=side, action=action, count=qty, type=OrderType.MARKET, time_in_force=tif,
                            self_trade_prevention=stp)
    return order(side, action, cents, qty, tif, post_only=post and tif is TimeInForce.GTC,
                 self_trade_prevention=stp)


def check_order_result(r: OrderResult, req: OrderRequest, states: dict[str, OrderState]) -> None:
    """Per-result invariants: $1 per trade, FOK all-or-nothing, post-only never takes, takers never
    pay over their limit, each party priced on its own leg."""
    for f in r.fills:
        assert f.yes_price + f.no_price == S and 0 < f.yes_price < S
        maker = states.get(f.maker_order_id) if f.maker_order_id else None
        if maker is not None:  # the maker's fill is priced on its ladder: NO makers at their NO bid
            assert f.price_paid(False) == maker.ladder_price
            assert (f.no_price if maker.ladder_side is NO else f.yes_price) == maker.ladder_price
    if r.error is not None:
        assert not r.fills and not r.deltas
        return
    o = r.order
    assert o is not None
    states[o.order_id] = o
    for m in r.makers:
        states[m.order_id] = m
    filled = sum(f.count for f in r.fills)
    assert filled == o.fill_count
    for f in r.fills:
        assert f.price_paid(True) <= o.ladder_price
        assert f.taker_outcome_side is o.ladder_side
    if req.time_in_force is TimeInForce.FOK:
        assert filled == req.count
    if req.post_only:
        assert not r.fills


def check_cash(v: Venue) -> None:
    for pf in v.accounts.values():
        assert pf.cash >= 0 and pf.available_cash >= 0 and pf.reserved >= 0


@settings(max_examples=200, deadline=None)
@given(books(), st.lists(agent_orders, min_size=1, max_size=25), st.integers(1, 300 * D))
def test_no_free_money_on_static_book(book: tuple, actions: list[tuple], start: int) -> None:  # type: ignore[type-arg]
    """Any sequence of orders from one account against other parties' static resting orders
    never lifts the account's marked value (cash + holdings at the other parties' bids) above
    its start; cash and available cash never go negative."""
    v = static_venue(*book, agent=start)
    states: dict[str, OrderState] = {}
    for o in v.open_orders("mm"):
        states[o.order_id] = o
    for a in actions:
        if a[-1] == 0:
            mine = v.open_orders("agent")
            if mine:
                assert v.cancel("agent", mine[0].order_id).ok
        else:
            req = to_request(a)
            check_order_result(v.submit("agent", T, req), req, states)
        check_cash(v)
        assert v.account_value("agent") <= start
    # settling against the agent (the side it is short wins) must leave it at or below its start
    yes_wins = v.account("agent").position(T) < 0  # adversarial: the side the agent is short wins
    v.settle_market(T, yes_wins)
    assert v.account("agent").cash <= start


many_orders = st.tuples(
    st.sampled_from(["a", "b", "c"]), st.sampled_from(list(Side)), st.sampled_from(list(Action)),
    st.integers(1, 99), st.integers(1, 3000), st.sampled_from(list(TimeInForce)),
    st.booleans(), st.booleans(),
    st.sampled_from(list(SelfTradePrevention)), st.integers(0, 4),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(many_orders, min_size=1, max_size=40), st.one_of(st.booleans(), st.integers(0, S)),
       st.lists(st.integers(1, 200 * D), min_size=3, max_size=3))
def test_conservation_across_accounts(ops: list[tuple], result: bool | int, balances: list[int]) -> None:  # type: ignore[type-arg]
    """Across all accounts, cash + $1 per open YES/NO pair is start - fees at every step, and after
    settlement total cash == total starting cash - total fees, to the micro-dollar."""
    v = Venue(clock=lambda: 0.0)
    v.add_market(T)
    for owner, bal in zip("abc", balances, strict=True):
        v.open_account(owner, bal)
    start = sum(balances)
    states: dict[str, OrderState] = {}
    for owner, *rest in ops:
        if rest[-1] == 0:
            mine = v.open_orders(owner)
            if mine:
                assert v.cancel(owner, mine[-1].order_id).ok
        else:
            req = to_request(tuple(rest))
            check_order_result(v.submit(owner, T, req), req, states)
        check_cash(v)
        pfs = v.accounts.values()
        assert sum(pf.position(T) for pf in pfs) == 0  # every YES has its NO
        open_pairs = sum(max(0, pf.position(T)) for pf in pfs)
        fees = sum(pf.fees_paid for pf in pfs)
        assert sum(pf.cash for pf in pfs) + open_pairs * S == start - fees
    v.settle_market(T, result)
    pfs = v.accounts.values()
    assert sum(pf.cash for pf in pfs) == start - sum(pf.fees_paid for pf in pfs)
    assert all(pf.reserved == 0 for pf in pfs)


replay_ops = st.one_of(
    many_orders.map(lambda t: ("order", *t)),
    st.tuples(st.just("add"), st.sampled_from(list(Side)), st.integers(1, 99), st.integers(1, 3000)),
    st.tuples(st.just("remove"), st.sampled_from(list(Side)), st.integers(1, 99), st.integers(1, 3000),
              st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(replay_ops, min_size=1, max_size=40),
       st.lists(st.integers(1, 50 * D), min_size=3, max_size=3))
def test_cash_never_negative_with_replay_liquidity(ops: list[tuple], balances: list[int]) -> None:  # type: ignore[type-arg]
    """Agents trading among themselves and with replayed crowd volume (passive fills via recorded
    trades included) never overdraw: collateral always covers what fills cost."""
    v = Venue(clock=lambda: 0.0)
    v.add_market(T)
    for owner, bal in zip("abc", balances, strict=True):
        v.open_account(owner, bal)
    states: dict[str, OrderState] = {}
    for op in ops:
        if op[0] == "add":
            r = v.add_liquidity(T, op[1], op[2] * CENT, op[3])
        elif op[0] == "remove":
            r = v.remove_liquidity(T, op[1], op[2] * CENT, op[3], traded=op[4])
        elif op[-1] == 0:
            mine = v.open_orders(op[1])
            if mine:
                v.cancel(op[1], mine[0].order_id)
            continue
        else:
            req = to_request(tuple(op[2:]))
            r = v.submit(op[1], T, req)
            check_order_result(r, req, states)
        for m in r.makers:
            states[m.order_id] = m
        for f in r.fills:
            assert f.yes_price + f.no_price == S
        check_cash(v)
        assert not v.engine(T).book.is_crossed()
        for owner in "abc":  # reservation equals the recomputed requirement of what rests
            if not v.open_orders(owner):
                assert v.reserved(owner) == 0
    v.settle_market(T, True)
    check_cash(v)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 97), st.integers(1, 97), st.integers(1, 5000), st.sampled_from(list(Side)))
def test_round_trip_at_touch_loses_spread_plus_fees(yes_bid: int, no_bid: int, qty: int, side: Side) -> None:
    no_bid = min(no_bid, 99 - yes_bid)
    v = static_venue([(yes_bid, 10_000)], [(no_bid, 10_000)], agent=1_000 * D)
    bid = yes_bid if side is YES else no_bid  # the bought side's bid
    ask = 100 - (no_bid if side is YES else yes_bid)
    buy = v.submit("agent", T, order(side, BUY, ask, qty, TimeInForce.IOC))
    sell = v.submit("agent", T, order(side, SELL, bid, qty, TimeInForce.IOC))
    assert sum(f.count for f in buy.fills) == qty and sum(f.count for f in sell.fills) == qty
    fees = taker_fee(ask * CENT, qty) + taker_fee((100 - bid) * CENT, qty)
    pf = v.account("agent")
    assert pf.position(T) == 0
    assert pf.cash == 1_000 * D - (ask - bid) * CENT * qty - fees
    assert pf.fees_paid == fees and pf.realized_pnl == -(ask - bid) * CENT * qty


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 98), st.integers(1, 5000))
def test_selling_yes_from_flat_costs_money(yes_bid: int, qty: int) -> None:
    v = static_venue([(yes_bid, 10_000)], [], agent=1_000 * D)
    r = v.submit("agent", T, order(YES, SELL, yes_bid, qty, TimeInForce.IOC))
    (f,) = r.fills
    pf = v.account("agent")
    assert pf.position(T) == -qty  # it now holds NO
    assert pf.cash == 1_000 * D - (100 - yes_bid) * CENT * qty - f.taker_fee  # paid 1 - p, received nothing
    assert pf.cash < 1_000 * D


@pytest.mark.parametrize(
    ("side", "action", "cents"),
    [(None, None, 0), (YES, BUY, 50), (YES, SELL, 48), (NO, BUY, 52), (NO, SELL, 50)],
)
@pytest.mark.parametrize("market", [False, True])
def test_prior_system_probe(side: Side | None, action: Action | None, cents: int, market: bool) -> None:
    """prior-system-lessons §8.1: static book YES 48/47, NO 50/49, 500 per level, $100, 100 steps of
    one repeated 20-contract action. The prior simulator turned SELL_YES into $2,060."""
    v = static_venue([(48, 500 * C), (47, 500 * C)], [(50, 500 * C), (49, 500 * C)], agent=100 * D)
    value = v.account_value("agent")
    assert value == 100 * D
    fills = 0
    for _ in range(100):
        if side is not None and action is not None:
            if market:
                req = OrderRequest(side=side, action=action, count=20 * C, type=OrderType.MARKET)
            else:
                req = order(side, action, cents, 20 * C, TimeInForce.IOC)
            r = v.submit("agent", T, req)
            assert r.ok or r.error == "insufficient_balance"
            fills += len(r.fills)
        now = v.account_value("agent")
        assert now <= value  # every step at best keeps the value
        value = now
        assert v.account("agent").cash >= 0
    if side is None:
        assert value == 100 * D
    else:
        assert fills and value < 100 * D


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p", "q", "r"]), st.integers(40, 45), st.integers(1, 300)),
                min_size=1, max_size=15))
def test_price_time_priority(rests: list[tuple[str, int, int]]) -> None:
    v = Venue(clock=lambda: 0.0)
    v.add_market(T)
    for owner in "pqr":
        v.open_account(owner, 10_000 * D)
    v.open_account("taker", 100_000 * D)
    seq: dict[str, int] = {}
    for i, (owner, cents, qty) in enumerate(rests):
        r = v.submit(owner, T, order(YES, BUY, cents, qty))
        assert r.order is not None
        seq[r.order.order_id] = i
    r = v.submit("taker", T, OrderRequest(side=YES, action=SELL, count=10**6, type=OrderType.MARKET))
    keys = [(-f.yes_price, seq[f.maker_order_id]) for f in r.fills]  # type: ignore[index]
    assert keys == sorted(keys)  # best price first, then earliest order
    assert sum(f.count for f in r.fills) == sum(q for _, _, q in rests)
    assert r.order is not None and r.order.status is OrderStatus.CANCELED  # IOC remainder
