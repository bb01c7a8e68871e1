"""The Trader's running tallies (kalshiflow/trading/state.py): fills listed as placed, round trips."""

from __future__ import annotations

from typing import Any

from kalshiflow.market.prices import CENT, QTY_SCALE
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol import ws_data as wd
from kalshiflow.trading import PortfolioView, PositionSummary, TradeFill
from kalshiflow.trading.decision import DecisionRecord
from kalshiflow.trading.state import Counters

C = QTY_SCALE


def fill(order: str, side: Side, action: Action, yes_cents: int) -> TradeFill:
    return TradeFill.from_ws(wd.FillEvent(
        trade_id="t-" + order, order_id=order, market_ticker="M", client_order_id="c-" + order, side=side,
        action=action, yes_price=yes_cents * CENT, no_price=(100 - yes_cents) * CENT, count=10 * C,
        is_taker=True, fee=0, post_position=None, ts_ms=1_000))


def decision(coid: str, action: str) -> DecisionRecord:
    return DecisionRecord(decision_id="d-" + coid, ts_ns=1, ticker="M", observation_hash="h", action=action,
                          model_version="v0001", verdict="allowed", reason="", latency_us=900,
                          client_order_id=coid)


def view(realized: int) -> PortfolioView:
    pos = PositionSummary(ticker="M", qty=0, cost=0, avg_price=0, realized_pnl=realized, fees_paid=0,
                          volume=0)
    kw: dict[str, Any] = {"account": "a", "cash": 0, "reserved": 0, "available_cash": 0,
                          "realized_pnl": realized, "fees_paid": 0, "open_orders": (),
                          "accounted_client_order_ids": frozenset(), "synced": True, "as_of": 0.0}
    return PortfolioView(positions={"M": pos}, **kw)


def test_fills_are_listed_newest_first_at_the_price_of_the_side_named_with_their_decision() -> None:
    c = Counters(fills=2)
    c.record(decision("c-o1", "buy_yes_take_10"))
    c.record(decision("c-o2", "sell_yes_take_10"))
    c.fill(fill("o1", Side.YES, Action.BUY, 48), now=5.0)
    c.fill(fill("o2", Side.YES, Action.SELL, 46), now=6.0)  # sold YES at 46c (buys NO at 54c)
    c.fill(fill("o3", Side.NO, Action.BUY, 70), now=7.0)  # bought NO at 30c
    rows = [(r.order_id, r.action, r.side, r.price, r.decision) for r in c.fills]
    assert rows == [("o3", "buy", "no", "0.3000", None), ("o2", "sell", "yes", "0.4600", "sell_yes_take_10")]
    assert c.n_fills == 3 and c.filled_orders == {"o1", "o2", "o3"}


def test_round_trips_count_each_change_of_realised_pnl_and_its_sign() -> None:
    c = Counters()
    c.round_trips(view(0))  # first sight: a baseline, not a trip
    c.round_trips(view(-20 * CENT))  # bought 48c, sold 46c: a loss
    c.round_trips(view(-20 * CENT))  # unchanged: nothing closed
    c.round_trips(view(40 * CENT))  # a later winner
    assert (c.trips, c.wins) == (2, 1)
