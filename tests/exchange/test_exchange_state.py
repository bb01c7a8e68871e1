"""ExchangeState: lifecycle, matching through the Venue, events, history, replay deltas."""

from __future__ import annotations

import pytest

from kalshiflow.exchange.events import (
    BookDelta,
    ExchangeEvent,
    FillEvent,
    LifecycleEvent,
    MarketInfo,
    MarketStatus,
    OrderEvent,
    PositionEvent,
    TradeEvent,
)
from kalshiflow.exchange.state import ExchangeState, OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, Money
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def market(ticker: str = "M1", **kw: object) -> MarketInfo:
    fields: dict[str, object] = {
        "ticker": ticker,
        "event_ticker": "E1",
        "series_ticker": "S1",
        "title": f"{ticker}?",
        "open_time": T0,
        "close_time": T0 + 3600,
    }
    fields.update(kw)
    return MarketInfo(**fields)  # type: ignore[arg-type]


def buy(side: Side, price_cents: int, contracts: int, **kw: object) -> OrderRequest:
    key = "yes_price" if side is Side.YES else "no_price"
    return OrderRequest(side=side, action=Action.BUY, count=contracts * 100, **{key: price_cents * 100}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def env() -> tuple[ExchangeState, Clock, list[ExchangeEvent]]:
    clock = Clock()
    state = ExchangeState(clock=clock, starting_balance=Money(1000 * MONEY_SCALE))
    events: list[ExchangeEvent] = []
    state.add_listener(events.append)
    state.add_market(market())
    state.advance()
    for owner in ("alice", "bob"):
        state.add_account(owner)
    return state, clock, events


def test_market_lifecycle_and_orders_only_while_active() -> None:
    clock = Clock()
    state = ExchangeState(clock=clock)
    events: list[ExchangeEvent] = []
    state.add_listener(events.append)
    state.add_market(market(open_time=T0 + 10, close_time=T0 + 20))
    state.add_account("a")
    assert state.submit("a", "M1", buy(Side.YES, 40, 1)).reject.code == "market_closed"  # type: ignore[union-attr]
    clock.now = T0 + 10
    state.advance()
    assert state.market("M1").status is MarketStatus.ACTIVE  # type: ignore[union-attr]
    rest = state.submit("a", "M1", buy(Side.YES, 40, 1))
    assert rest.ok and rest.order.status is OrderStatus.RESTING  # type: ignore[union-attr]
    clock.now = T0 + 20
    state.advance()
    assert state.market("M1").status is MarketStatus.CLOSED  # type: ignore[union-attr]
    assert state.orders("a")[0].status is OrderStatus.CANCELED  # closing cancels resting orders
    assert state.book("M1").yes == ()
    state.settle_market("M1", "no")
    info = state.market("M1")
    assert info.status is MarketStatus.FINALIZED and info.result == "no"  # type: ignore[union-attr]
    kinds = [e.event_type for e in events if isinstance(e, LifecycleEvent)]
    assert kinds == ["created", "opened", "closed", "determined", "settled"]
    with pytest.raises(ValueError):
        state.settle_market("M1", "yes")


def test_trade_publishes_deltas_trade_fills_positions_orders(env: tuple) -> None:
    state, clock, events = env
    maker = state.submit("alice", "M1", buy(Side.YES, 40, 10, client_order_id="a-1"))
    events.clear()
    taker = state.submit("bob", "M1", buy(Side.NO, 60, 4))
    assert taker.ok and taker.order.status is OrderStatus.EXECUTED  # type: ignore[union-attr]
    deltas = [e for e in events if isinstance(e, BookDelta)]
    assert [(d.side, d.price, d.delta, d.size, d.owner) for d in deltas] == [
        (Side.YES, 4000, -400, 600, "bob")
    ]
    trade = next(e for e in events if isinstance(e, TradeEvent))
    assert (trade.yes_price, trade.count, trade.taker_side) == (4000, 400, Side.NO)
    fills = {e.owner: e for e in events if isinstance(e, FillEvent)}
    assert fills["alice"].client_order_id == "a-1" and not fills["alice"].is_taker
    assert fills["alice"].post_position == 400 and fills["bob"].post_position == -400
    assert fills["bob"].fee == 7 * MONEY_SCALE // 100  # ceil(0.07 * 4 * 0.6 * 0.4) = $0.07
    positions = {e.owner: e for e in events if isinstance(e, PositionEvent)}
    assert positions["bob"].position == -400 and positions["bob"].position_cost == 4 * 6000 * 100
    orders = [e.order for e in events if isinstance(e, OrderEvent)]
    assert {o.order_id for o in orders} == {maker.order.order_id, taker.order.order_id}  # type: ignore[union-attr]
    stats = state.stats("M1")
    assert (stats.volume, stats.volume_24h, stats.open_interest, stats.last_price) == (400, 400, 400, 4000)
    clock.now += 86_401
    assert (state.stats("M1").volume, state.stats("M1").volume_24h) == (400, 0)
    assert taker.fills and taker.fills[0].owner == "bob"
    record = state.order("alice", maker.order.order_id)  # type: ignore[union-attr]
    assert record is not None and record.fill_count == 400 and record.maker_fill_cost == 400 * 4000


def test_rejections_are_results_with_kalshi_codes(env: tuple) -> None:
    state, _, _ = env
    assert state.submit("alice", "NOPE", buy(Side.YES, 40, 1)).reject.code == "market_not_found"  # type: ignore[union-attr]
    assert state.submit("alice", "M1", buy(Side.YES, 40, 100_000)).reject.code == "insufficient_balance"  # type: ignore[union-attr]
    off_grid = OrderRequest(side=Side.YES, action=Action.BUY, count=100, yes_price=4050)
    assert state.submit("alice", "M1", off_grid).reject.code == "invalid_price"  # type: ignore[union-attr]
    state.submit("alice", "M1", buy(Side.YES, 40, 1, client_order_id="dup"))
    assert (
        state.submit("alice", "M1", buy(Side.YES, 41, 1, client_order_id="dup")).reject.code
        == "order_already_exists"
    )  # type: ignore[union-attr]
    assert state.cancel("bob", state.orders("alice")[0].order_id).reject.code == "not_found"  # type: ignore[union-attr]


def test_cancel_reports_reduced_by_and_releases_collateral(env: tuple) -> None:
    state, _, events = env
    before = state.balance("alice")
    placed = state.submit("alice", "M1", buy(Side.YES, 30, 5, client_order_id="c"))
    assert state.balance("alice") < before
    events.clear()
    result = state.cancel("alice", placed.order.order_id)  # type: ignore[union-attr]
    assert result.reduced_by == 500 and result.order.status is OrderStatus.CANCELED  # type: ignore[union-attr]
    assert state.balance("alice") == before
    delta = next(e for e in events if isinstance(e, BookDelta))
    assert (delta.delta, delta.size, delta.owner, delta.client_order_id) == (-500, 0, "alice", "c")


def test_good_till_time_orders_expire(env: tuple) -> None:
    state, clock, _ = env
    placed = state.submit("alice", "M1", buy(Side.YES, 30, 1), expiration_ts=T0 + 5)
    assert placed.order.expiration_time == T0 + 5  # type: ignore[union-attr]
    assert state.submit("alice", "M1", buy(Side.YES, 30, 1), expiration_ts=T0 - 1).reject is not None
    ioc = buy(Side.YES, 30, 1, time_in_force=TimeInForce.IOC)
    assert state.submit("alice", "M1", ioc, expiration_ts=T0 + 5).reject.code == "invalid_order"  # type: ignore[union-attr]
    clock.now = T0 + 6
    state.advance()
    assert state.order("alice", placed.order.order_id).status is OrderStatus.CANCELED  # type: ignore[union-attr]


def test_settlement_pays_winners_and_publishes_positions(env: tuple) -> None:
    state, _, events = env
    state.submit("alice", "M1", buy(Side.YES, 40, 10))
    state.submit("bob", "M1", buy(Side.NO, 60, 10))
    alice_cash = state.balance("alice")
    events.clear()
    payouts = state.settle_market("M1", "yes")
    assert payouts == {"alice": 10 * MONEY_SCALE, "bob": 0}
    assert state.balance("alice") == alice_cash + 10 * MONEY_SCALE
    assert {e.owner: e.position for e in events if isinstance(e, PositionEvent)} == {"alice": 0, "bob": 0}
    assert state.positions("alice") == []


def test_external_delta_replay_fills_account_orders_and_prints_trades(env: tuple) -> None:
    state, _, events = env
    state.apply_external_delta("M1", Side.NO, 5000, 300)
    placed = state.submit("alice", "M1", buy(Side.YES, 40, 2))
    state.apply_external_delta("M1", Side.YES, 4000, 300)  # crowd joins behind alice
    events.clear()
    state.apply_external_delta("M1", Side.YES, 4000, -300, traded=True)  # a recorded trade
    fill = next(e for e in events if isinstance(e, FillEvent))
    assert fill.owner == "alice" and fill.count == 200 and fill.order_id == placed.order.order_id  # type: ignore[union-attr]
    trade = next(e for e in events if isinstance(e, TradeEvent))
    assert trade.count == 300 and trade.taker_side is Side.NO
    assert state.book("M1").yes == ((4000, 200),)
    assert state.book("M1").no == ((5000, 300),)


def test_a_failing_listener_does_not_break_the_operation(
    env: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    state, _, events = env

    def broken(event: ExchangeEvent) -> None:
        raise RuntimeError("listener bug")

    remove = state.add_listener(broken)
    assert state.submit("alice", "M1", buy(Side.YES, 40, 1)).ok
    assert any(isinstance(e, BookDelta) for e in events)
    assert "listener" in caplog.text
    remove()


def test_history_is_bounded_and_bots_keep_none() -> None:
    state = ExchangeState(clock=Clock(), history_limit=3)
    state.add_market(market())
    state.open_market("M1")
    state.add_account("user")
    state.add_account("bot", Money(10**6 * MONEY_SCALE), keep_history=False)
    for _ in range(5):
        r = state.submit("user", "M1", buy(Side.YES, 10, 1))
        state.cancel("user", r.order.order_id)  # type: ignore[union-attr]
    resting = state.submit("user", "M1", buy(Side.YES, 11, 1))
    orders = state.orders("user")
    assert len(orders) == 3 and orders[0].order_id == resting.order.order_id  # type: ignore[union-attr]
    state.submit("bot", "M1", buy(Side.NO, 89, 1))
    assert state.orders("bot") == [] and state.fills("bot") == []
    assert len(state.fills("user")) == 1
