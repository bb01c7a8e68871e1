"""The risk gate: every rule, every mode transition, and properties no intent sequence can break."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.config import RiskConfig
from kalshiflow.market.prices import CENT, MONEY_SCALE, QTY_SCALE
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce
from kalshiflow.protocol import rest_models as rm
from kalshiflow.trading import OpenOrder, PortfolioView, PositionSummary
from kalshiflow.trading.risk import (
    TRANSITIONS,
    ApprovedOrder,
    BookStatus,
    CancelAll,
    Flatten,
    InvalidTransition,
    Mode,
    ModeEvent,
    OrderIntent,
    Reason,
    RiskGate,
    RiskState,
    RiskViolation,
)

T0 = 1_767_225_600.0 + 3600  # 2026-01-01 01:00 UTC
DOLLAR = MONEY_SCALE
C = QTY_SCALE  # one contract


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def cfg(**kw: Any) -> RiskConfig:
    base: dict[str, Any] = {"max_orders_per_s": 1000.0, "max_open_orders": 1000}
    return RiskConfig(**(base | kw))


def book(clock: Clock, **kw: Any) -> BookStatus:
    base = {"valid": True, "updated_at": clock(), "yes_bid": 40 * CENT, "no_bid": 55 * CENT}
    return BookStatus(**(base | kw))


def state(clock: Clock, *, positions: dict[str, int] | None = None, costs: dict[str, int] | None = None,
          orders: tuple[OpenOrder, ...] = (), cash: int = 10_000 * DOLLAR, value: int | None = None,
          connected: bool = True, accounted: frozenset[str] = frozenset(),
          tickers: tuple[str, ...] = ("M", "N"), **book_kw: Any) -> RiskState:
    return RiskState(positions=positions or {}, position_costs=costs or {}, open_orders=orders,
                     books={t: book(clock, **book_kw) for t in tickers}, available_cash=cash,
                     account_value=cash if value is None else value, connected=connected,
                     accounted_client_order_ids=accounted)


def intent(contracts: float = 10, *, ticker: str = "M", side: Side = Side.YES, action: Action = Action.BUY,
           price: int = 45 * CENT, tif: TimeInForce = TimeInForce.GTC, coid: str = "") -> OrderIntent:
    return OrderIntent(ticker=ticker, side=side, action=action, count=int(contracts * C), price=price,
                       time_in_force=tif, client_order_id=coid)


def exchange_order(req: rm.OrderRequest, *, filled: int, remaining: int) -> rm.Order:
    status = OrderStatus.RESTING if remaining else (OrderStatus.EXECUTED if filled else OrderStatus.CANCELED)
    price = req.price or 0
    yes = price if req.side is Side.YES else 10_000 - price
    return rm.Order(order_id="o-" + req.client_order_id, client_order_id=req.client_order_id,
                    ticker=req.ticker, side=req.side, action=req.action, type="limit", status=status,
                    yes_price=yes, no_price=10_000 - yes, initial_count=req.count, fill_count=filled,
                    remaining_count=remaining, taker_fill_cost=0, maker_fill_cost=0, taker_fees=0,
                    maker_fees=0)


# ------------------------------------------------------------------------------ approval and redeem


def test_approved_order_is_the_only_way_to_a_request_and_works_once() -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    v = gate.check(intent(3, coid="my-1"), state(clock))
    assert v.allowed and v.reason is Reason.OK and v.approved is not None and v.adjusted is None
    req = gate.redeem(v.approved)
    assert (req.ticker, req.side, req.action, req.count, req.price) == ("M", Side.YES, Action.BUY, 300, 4500)
    assert req.client_order_id == "my-1" and req.time_in_force == "good_till_canceled"
    with pytest.raises(RiskViolation, match="already sent"):
        gate.redeem(v.approved)
    forged = ApprovedOrder(approval_id="x", request=req, issued_at=clock(), expires_at=clock() + 9,
                           reducing=False)
    with pytest.raises(RiskViolation):
        gate.redeem(forged)
    # A copy of a real approval with a changed request is not the approval either.
    v2 = gate.check(intent(1), state(clock))
    assert v2.approved is not None
    bigger = msgspec.structs.replace(v2.approved, request=msgspec.structs.replace(req, count=100 * C))
    with pytest.raises(RiskViolation):
        gate.redeem(bigger)
    assert gate.stats().void_redeems == {"unknown": 3}


def test_client_order_id_generated_and_approval_expires() -> None:
    clock = Clock()
    gate = RiskGate(cfg(approval_ttl_s=2.0), clock)
    v = gate.check(intent(1), state(clock))
    assert v.approved is not None and v.approved.request.client_order_id.startswith("kf-")
    clock.t += 2.5
    with pytest.raises(RiskViolation, match="expired"):
        gate.redeem(v.approved)


def test_kill_switch_voids_earlier_approvals_and_refuses_everything() -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    st_ = state(clock, positions={"M": 20 * C}, costs={"M": 20 * C * 40 * CENT})
    v = gate.check(intent(1), st_)
    assert v.approved is not None
    actions = gate.kill("operator pressed the button", st_)
    assert gate.mode is Mode.HALTED
    assert actions == (CancelAll(reason="operator pressed the button"),)  # flatten_on_kill is off
    with pytest.raises(RiskViolation, match="halted"):
        gate.redeem(v.approved)
    for i in (intent(1), intent(1, action=Action.SELL)):
        refused = gate.check(i, st_)
        assert not refused.allowed and refused.reason is Reason.HALTED and refused.approved is None
    gate.resume("all clear")
    assert gate.mode is Mode.ACTIVE and gate.check(intent(1), st_).allowed


def test_kill_switch_with_flatten_generates_sendable_reduce_only_orders() -> None:
    clock = Clock()
    gate = RiskGate(cfg(flatten_on_kill=True), clock)
    st_ = state(clock, positions={"M": 20 * C, "N": -5 * C}, yes_bid=4130, no_bid=2 * CENT)
    cancel, flatten = gate.kill("kill", st_)
    assert isinstance(cancel, CancelAll) and isinstance(flatten, Flatten)
    reqs = {o.request.ticker: gate.redeem(o) for o in flatten.orders}  # sendable while HALTED
    m, n = reqs["M"], reqs["N"]
    assert (m.side, m.action, m.count, m.reduce_only, m.time_in_force) == (
        Side.YES, Action.SELL, 20 * C, True, "immediate_or_cancel")
    assert m.price == 36 * CENT  # 0.4130 - 0.05, floored to a whole cent (valid on every grid)
    assert (n.side, n.action, n.count, n.price) == (Side.NO, Action.SELL, 5 * C, CENT)  # floor 1c


# ------------------------------------------------------------------------------ modes


def test_transition_table_is_enforced() -> None:
    for mode in Mode:
        for event in ModeEvent:
            gate = RiskGate(cfg(), Clock())
            gate.mode = mode
            after = TRANSITIONS.get((mode, event))
            if after is None:
                with pytest.raises(InvalidTransition):
                    gate._go(event, "test")
                assert gate.mode is mode
            else:
                gate._go(event, "test")
                assert gate.mode is after
    assert all(TRANSITIONS[(m, e)] is Mode.HALTED for m in Mode
               for e in (ModeEvent.KILL, ModeEvent.LOSS_STOP, ModeEvent.SHUTDOWN))
    assert (Mode.ACTIVE, ModeEvent.RESUME) not in TRANSITIONS


def test_reducing_mode_passes_only_position_reducing_orders() -> None:
    clock = Clock()
    gate = RiskGate(cfg(resize_to_fit=False), clock)
    gate.reduce("operator")
    st_ = state(clock, positions={"M": 10 * C})
    assert gate.check(intent(5, action=Action.SELL), st_).allowed  # sell YES while long YES
    assert gate.check(intent(5, side=Side.NO), st_).allowed  # buy NO = the same reduction
    for bad in (intent(1), intent(11, action=Action.SELL), intent(1, ticker="N", action=Action.SELL)):
        v = gate.check(bad, st_)
        assert not v.allowed and v.reason is Reason.REDUCING
    # A resting reducing order already claims part of the holding.
    resting = OpenOrder(order_id="o1", client_order_id="c1", ticker="M", side=Side.YES, action=Action.SELL,
                        price=40 * CENT, remaining=8 * C)
    assert not gate.check(intent(5, action=Action.SELL), state(clock, positions={"M": 10 * C},
                                                              orders=(resting,))).allowed
    resized = RiskGate(cfg(), clock)
    resized.reduce()
    v = resized.check(intent(15, action=Action.SELL), st_)
    assert v.allowed and v.adjusted is not None and v.adjusted.count == 10 * C and v.reason is Reason.REDUCING
    assert v.approved is not None and v.approved.reducing
    resized.resume()
    assert resized.check(intent(1), st_).allowed


def test_non_reducing_approval_is_void_after_switch_to_reducing() -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    v = gate.check(intent(1), state(clock))
    assert v.approved is not None
    gate.reduce()
    with pytest.raises(RiskViolation, match="reducing"):
        gate.redeem(v.approved)


def test_shutdown_and_connection_loss_cancel_everything() -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    assert gate.connection_lost("ws closed") == (CancelAll(reason="ws closed"),)
    v = gate.check(intent(1), state(clock, connected=False))
    assert not v.allowed and v.reason is Reason.NOT_CONNECTED
    assert gate.shutdown() == (CancelAll(reason="shutdown"),) and gate.mode is Mode.HALTED


# ------------------------------------------------------------------------------ daily loss


@given(start=st.integers(1, 10**12), loss=st.integers(-10**6, 10**12))
@settings(max_examples=300, deadline=None)
def test_daily_loss_stop_triggers_exactly_at_the_threshold(start: int, loss: int) -> None:
    clock = Clock()
    gate = RiskGate(cfg(flatten_on_loss_stop=True), clock)
    assert gate.evaluate(state(clock, value=start)) == ()
    positions = {"M": 7 * C}
    actions = gate.evaluate(state(clock, value=start - loss, positions=positions))
    should = loss * 100 >= 5 * start  # 5 %, exactly, inclusive
    assert (gate.mode is Mode.HALTED) == should
    if should:
        assert isinstance(actions[0], CancelAll) and isinstance(actions[1], Flatten)
        (order,) = actions[1].orders
        assert order.emergency and order.request.reduce_only and order.request.count == 7 * C
        assert not gate.check(intent(1), state(clock, value=start - loss)).allowed
    else:
        assert actions == ()


def test_loss_stop_latches_until_the_next_utc_day_and_check_reports_actions() -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    gate.evaluate(state(clock, value=1000 * DOLLAR))
    v = gate.check(intent(1), state(clock, value=950 * DOLLAR))
    assert not v.allowed and v.reason is Reason.DAILY_LOSS and "daily loss 50.00$" in v.explanation
    assert [type(a) for a in v.actions] == [CancelAll, Flatten]
    with pytest.raises(InvalidTransition, match="latched"):
        gate.resume()
    gate.reduce("unwind")  # reducing is still possible while latched
    assert gate.mode is Mode.REDUCING
    with pytest.raises(InvalidTransition):
        gate.resume()
    assert gate.evaluate(state(clock, value=900 * DOLLAR)) == ()  # latched: no second cancel+flatten
    clock.t = (T0 // 86_400 + 1) * 86_400 + 5  # next UTC day
    gate.evaluate(state(clock, value=900 * DOLLAR))
    assert gate.stats().usage["start_of_day_value"] == 900 * DOLLAR and not gate.loss_latched
    gate.resume("new day")
    assert gate.check(intent(1), state(clock, value=900 * DOLLAR)).allowed


def test_loss_warning_moves_to_reducing() -> None:
    clock = Clock()
    gate = RiskGate(cfg(reducing_loss_fraction=0.03), clock)
    gate.evaluate(state(clock, value=1000 * DOLLAR))
    gate.evaluate(state(clock, value=970 * DOLLAR))
    assert gate.mode is Mode.REDUCING and gate.transitions[-1].event is ModeEvent.LOSS_WARNING


def test_start_value_waits_for_a_loaded_portfolio_and_can_be_restored() -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    gate.evaluate(state(clock, value=0))
    assert gate.start_value is None
    restored = RiskGate(cfg(), clock, start_of_day_value=1000 * DOLLAR)
    restored.evaluate(state(clock, value=940 * DOLLAR))
    assert restored.mode is Mode.HALTED


# ------------------------------------------------------------------------------ limits


def test_position_cap_counts_resting_orders_and_resizes() -> None:
    clock = Clock()
    gate = RiskGate(cfg(resize_to_fit=False), clock)
    resting = OpenOrder(order_id="o1", client_order_id="c1", ticker="M", side=Side.NO, action=Action.SELL,
                        price=60 * CENT, remaining=30 * C)  # sell NO = buy YES: adds to YES
    st_ = state(clock, positions={"M": 60 * C}, orders=(resting,))
    assert gate.check(intent(10), st_).allowed
    v = gate.check(intent(11), st_)
    assert not v.allowed and v.reason is Reason.POSITION_CAP and "100" in v.explanation
    # Buying NO while long YES is a reduction, allowed up to flipping to 100 NO.
    assert gate.check(intent(160, side=Side.NO), st_).allowed
    assert gate.check(intent(161, side=Side.NO), st_).reason is Reason.POSITION_CAP
    fit = RiskGate(cfg(), clock).check(intent(25), st_)
    assert fit.allowed and fit.adjusted is not None and fit.adjusted.count == 10 * C
    assert fit.reason is Reason.POSITION_CAP and "resized 25 -> 10" in fit.explanation
    frac = RiskGate(cfg(), clock).check(OrderIntent(ticker="M", side=Side.YES, action=Action.BUY, count=1234,
                                                    price=45 * CENT), st_)
    assert frac.adjusted is not None and frac.adjusted.count == 1000  # fractional intents stay exact


def test_approvals_not_yet_visible_in_the_state_count_as_resting() -> None:
    clock = Clock()
    gate = RiskGate(cfg(pending_order_ttl_s=5.0, resize_to_fit=False), clock)
    st_ = state(clock)
    first = gate.check(intent(60), st_)
    assert first.allowed and first.approved is not None
    assert gate.check(intent(60), st_).reason is Reason.POSITION_CAP  # the first is still in flight
    coid = first.approved.request.client_order_id
    # Once the portfolio accounts for it (a fill moved the position), the pending entry goes.
    st2 = state(clock, positions={"M": 60 * C}, accounted=frozenset({coid}))
    assert gate.check(intent(40), st2).allowed
    # A rejected order stops counting at once; an unseen one after the TTL.
    gate2 = RiskGate(cfg(pending_order_ttl_s=5.0, resize_to_fit=False), clock)
    a = gate2.check(intent(100), st_).approved
    assert a is not None and not gate2.check(intent(1), st_).allowed
    gate2.order_result(a, None)
    b = gate2.check(intent(100), st_).approved
    assert b is not None and not gate2.check(intent(1), st_).allowed
    gate2.order_result(b, exchange_order(b.request, filled=0, remaining=0))  # IOC, nothing filled
    assert gate2.check(intent(100), st_).allowed
    clock.t += 5.1
    assert gate2.check(intent(100), st_).allowed


def test_total_exposure_cap() -> None:
    clock = Clock()
    gate = RiskGate(cfg(max_total_exposure_dollars="100.00", resize_to_fit=False), clock)
    resting = OpenOrder(order_id="o1", client_order_id="c1", ticker="N", side=Side.YES, action=Action.BUY,
                        price=50 * CENT, remaining=40 * C)  # $20 of collateral
    st_ = state(clock, positions={"M": 100 * C}, costs={"M": 70 * DOLLAR}, orders=(resting,))
    assert gate.check(intent(20, ticker="N", price=50 * CENT), st_).allowed  # 70 + 20 + 10 = 100
    v = gate.check(intent(21, ticker="N", price=50 * CENT), st_)
    assert not v.allowed and v.reason is Reason.EXPOSURE_CAP
    # Reducing orders never add exposure: selling the M holding is fine even at the cap.
    over = state(clock, positions={"M": 100 * C}, costs={"M": 150 * DOLLAR})
    assert gate.check(intent(50, action=Action.SELL), over).allowed
    assert gate.check(intent(1, ticker="N"), over).reason is Reason.EXPOSURE_CAP


def test_order_rate_token_bucket() -> None:
    clock = Clock()
    gate = RiskGate(cfg(max_orders_per_s=2.0, order_burst=3), clock)
    st_ = state(clock)
    assert [gate.check(intent(1), st_).allowed for _ in range(4)] == [True, True, True, False]
    assert gate.check(intent(1), st_).reason is Reason.RATE_LIMIT
    clock.t += 0.49
    assert not gate.check(intent(1), st_).allowed
    clock.t += 0.02  # 0.51 s x 2/s = 1.02 tokens
    assert gate.check(intent(1), st_).allowed
    assert not gate.check(intent(1), st_).allowed
    # Refused intents consume nothing: a refusal for another reason leaves the bucket alone.
    clock.t += 10
    st_ = state(clock)
    for _ in range(5):
        assert gate.check(intent(1, price=0), st_).reason is Reason.INVALID_INTENT
    assert sum(gate.check(intent(1), st_).allowed for _ in range(5)) == 3


def test_max_open_orders_applies_to_orders_that_can_rest() -> None:
    clock = Clock()
    gate = RiskGate(cfg(max_open_orders=2), clock)
    orders = tuple(OpenOrder(order_id=f"o{i}", client_order_id=f"c{i}", ticker="N", side=Side.YES,
                             action=Action.BUY, price=30 * CENT, remaining=C) for i in range(2))
    st_ = state(clock, orders=orders)
    v = gate.check(intent(1), st_)
    assert not v.allowed and v.reason is Reason.OPEN_ORDERS
    assert gate.check(intent(1, tif=TimeInForce.IOC), st_).allowed


def test_daily_volume_cap_and_rollover() -> None:
    clock = Clock()
    gate = RiskGate(cfg(daily_volume_cap_dollars="100.00", resize_to_fit=False), clock)
    st_ = state(clock)
    gate.record_fill(95 * DOLLAR)
    assert gate.check(intent(10, price=50 * CENT), st_).allowed  # $5 more: exactly the cap
    assert gate.check(intent(1, price=50 * CENT), st_).reason is Reason.DAILY_VOLUME  # pending counts
    gate2 = RiskGate(cfg(daily_volume_cap_dollars="100.00", resize_to_fit=False), clock)
    gate2.record_fill(100 * DOLLAR)
    assert gate2.check(intent(1), st_).reason is Reason.DAILY_VOLUME
    clock.t = (T0 // 86_400 + 1) * 86_400  # midnight UTC: a new day, a new budget
    assert gate2.check(intent(1), state(clock)).allowed and gate2.volume == 0


def test_books_must_be_present_valid_and_fresh() -> None:
    clock = Clock()
    gate = RiskGate(cfg(stale_book_s=10.0), clock)
    assert gate.check(intent(1, ticker="X"), state(clock)).reason is Reason.NO_BOOK
    assert gate.check(intent(1), state(clock, valid=False)).reason is Reason.INVALID_BOOK
    old = state(clock, updated_at=clock() - 10.5)
    v = gate.check(intent(1), old)
    assert not v.allowed and v.reason is Reason.STALE_BOOK and "10.5s" in v.explanation
    assert gate.check(intent(1), state(clock, updated_at=clock() - 9.9)).allowed


def test_insufficient_cash_and_invalid_intents() -> None:
    clock = Clock()
    gate = RiskGate(cfg(resize_to_fit=False), clock)
    poor = state(clock, cash=2 * DOLLAR)
    assert gate.check(intent(10, price=50 * CENT), poor).reason is Reason.INSUFFICIENT_CASH
    assert gate.check(intent(3, price=50 * CENT), poor).allowed
    for bad in (intent(0), intent(1, price=0), intent(1, price=10_000), intent(1, ticker="")):
        assert gate.check(bad, poor).reason is Reason.INVALID_INTENT


def test_refusals_are_counted_with_reasons_and_stats_report_limits_and_usage() -> None:
    clock = Clock()
    gate = RiskGate(cfg(resize_to_fit=False), clock)
    gate.check(intent(1, ticker="X"), state(clock))
    gate.check(intent(1), state(clock, valid=False))
    gate.check(intent(1), state(clock, valid=False))
    gate.check(intent(500), state(clock))
    gate.check(intent(1), state(clock))
    s = gate.stats()
    assert s.refusals == {"no_book": 1, "invalid_book": 2, "position_cap": 1}
    assert s.approvals == 1 and s.mode is Mode.ACTIVE and s.last_refusal is not None
    assert s.limits["max_position_per_market"] == 100 and s.limits["daily_volume_cap_dollars"] == "100000.00"
    assert s.usage["pending_orders"] == 1 and s.usage["start_of_day_value"] == 10_000 * DOLLAR
    msgspec.msgpack.encode(s)  # plain data, sendable to the UI


def test_state_from_portfolio_view_marks_at_last_known_bid() -> None:
    clock = Clock()
    view = PortfolioView(account="a", cash=100 * DOLLAR, reserved=0, available_cash=100 * DOLLAR,
                         realized_pnl=0, fees_paid=0, positions={
                             "M": PositionSummary(ticker="M", qty=10 * C, cost=4 * DOLLAR, avg_price=4000,
                                                  realized_pnl=0, fees_paid=0, volume=10 * C),
                             "N": PositionSummary(ticker="N", qty=-10 * C, cost=5 * DOLLAR, avg_price=5000,
                                                  realized_pnl=0, fees_paid=0, volume=10 * C)},
                         open_orders=(), accounted_client_order_ids=frozenset({"c"}), synced=True,
                         as_of=clock())
    rs = RiskState.from_view(view, {"M": book(clock, valid=False), "N": book(clock, no_bid=None)})
    # M: invalid book still marks at its last bid (40c); N: no NO bid -> 0.
    assert rs.account_value == 100 * DOLLAR + 10 * C * 40 * CENT
    assert rs.positions == {"M": 10 * C, "N": -10 * C} and rs.accounted_client_order_ids == {"c"}


# ------------------------------------------------------------------------------ the property


_op = st.one_of(
    st.tuples(st.just("intent"), st.sampled_from(["M", "N"]), st.sampled_from(list(Side)),
              st.sampled_from(list(Action)), st.integers(1, 150), st.integers(1, 99),
              st.sampled_from([TimeInForce.GTC, TimeInForce.IOC])),
    st.tuples(st.just("fill"), st.integers(0, 50), st.floats(0.0, 1.0)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
)


@given(ops=st.lists(_op, max_size=60), resize=st.booleans(), cap=st.integers(1, 120))
@settings(max_examples=300, deadline=None)
def test_no_sequence_of_intents_breaches_the_position_cap(ops: list[tuple[Any, ...]], resize: bool,
                                                         cap: int) -> None:
    clock = Clock()
    huge = "1000000000.00"
    gate = RiskGate(cfg(max_position_per_market=cap, resize_to_fit=resize, max_total_exposure_dollars=huge,
                        daily_volume_cap_dollars=huge, pending_order_ttl_s=1e9), clock)
    pos = {"M": 0, "N": 0}
    orders: list[OpenOrder] = []
    accounted: set[str] = set()
    limit = cap * C

    def snapshot() -> RiskState:
        return state(clock, positions=dict(pos), orders=tuple(orders), cash=10**15,
                     accounted=frozenset(accounted))

    def fill(ticker: str, bought: Side, qty: int, coid: str) -> None:
        pos[ticker] += qty if bought is Side.YES else -qty
        accounted.add(coid)

    for op in ops:
        if op[0] == "intent":
            _, ticker, side, action, n, cents, tif = op
            v = gate.check(intent(n, ticker=ticker, side=side, action=action, price=cents * CENT, tif=tif),
                           snapshot())
            if v.approved is None:
                continue
            req = gate.redeem(v.approved)
            o = OpenOrder(order_id=req.client_order_id, client_order_id=req.client_order_id, ticker=ticker,
                          side=side, action=action, price=cents * CENT, remaining=req.count)
            if tif is TimeInForce.GTC:
                orders.append(o)
                accounted.add(req.client_order_id)
            else:  # IOC: fills now (maybe partly), the rest is cancelled
                got = req.count * (n % 3) // 2
                if got:
                    fill(ticker, o.bought_side, got, req.client_order_id)
                gate.order_result(v.approved, exchange_order(req, filled=got, remaining=0))
        elif op[0] == "fill" and orders:
            i = op[1] % len(orders)
            o = orders[i]
            got = max(1, int(o.remaining * op[2]))
            fill(o.ticker, o.bought_side, got, o.client_order_id)
            if got >= o.remaining:
                orders.pop(i)
            else:
                orders[i] = msgspec.structs.replace(o, remaining=o.remaining - got)
        elif op[0] == "cancel" and orders:
            orders.pop(op[1] % len(orders))
        elif op[0] == "tick":
            clock.t += op[1]
        for t in pos:
            assert abs(pos[t]) <= limit
            yes = pos[t] + sum(o.remaining for o in orders if o.ticker == t and o.bought_side is Side.YES)
            no = -pos[t] + sum(o.remaining for o in orders if o.ticker == t and o.bought_side is Side.NO)
            assert yes <= limit and no <= limit  # even if every resting order filled
