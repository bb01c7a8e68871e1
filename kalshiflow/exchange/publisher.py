"""Turns the Venue's results into the exchange's events, records and figures, and publishes them.

The Venue reports what matching did (book deltas, fills with fees and post-trade positions, the
orders it touched); :class:`Publisher` derives everything observers see from that: one
:class:`BookDelta` per level change (attributed to the account whose order caused it), the public
:class:`TradeEvent`, a :class:`FillEvent` and a :class:`PositionEvent` per involved account, an
:class:`OrderEvent` per order whose state changed, plus history records and market activity.
Listeners run synchronously and in order; one that raises is logged and skipped, so a broken
observer can never leave an operation half-published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from kalshiflow.exchange.events import (
    BookDelta,
    ExchangeEvent,
    FillEvent,
    OrderEvent,
    OrderRecord,
    PositionEvent,
    TradeEvent,
)
from kalshiflow.exchange.history import History, MarketActivity
from kalshiflow.market.matching import BookDelta as EngineDelta
from kalshiflow.market.matching import Fill, OrderResult, OrderState
from kalshiflow.market.prices import Money, Price, Qty
from kalshiflow.market.types import Side
from kalshiflow.market.venue import Venue

log = logging.getLogger("kalshiflow.exchange.state")

Listener = Callable[[ExchangeEvent], None]


class Publisher:
    def __init__(self, venue: Venue, history: History) -> None:
        self.venue = venue
        self.history = history
        self.activity: dict[str, MarketActivity] = {}
        self.position_ts: dict[tuple[str, str], float] = {}  # (owner, ticker) -> last change
        self._listeners: list[Listener] = []

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        self._listeners.append(fn)

        def remove() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return remove

    def publish(self, event: ExchangeEvent) -> None:
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:  # one broken listener must not corrupt an operation half-way
                log.exception("exchange listener %r failed on %s", fn, type(event).__name__)

    def deltas(
        self, ticker: str, deltas: Iterable[EngineDelta], ts: float, owner: str | None, coid: str | None
    ) -> None:
        coid = coid or None
        listeners = self._listeners
        for d in deltas:
            # (Price/Qty are NewTypes: identity at run time, so the engine's ints go in as they are.)
            event = BookDelta(
                ticker=ticker, side=d.side, price=d.price, delta=d.delta, size=d.size, ts=ts, owner=owner,
                client_order_id=coid,
            )
            for fn in listeners:  # publish(), inlined: one call per delta and listener, not two
                try:
                    fn(event)
                except Exception:
                    log.exception("exchange listener %r failed on %s", fn, "BookDelta")

    def result(
        self,
        ticker: str,
        res: OrderResult,
        ts: float,
        owner: str | None,
        coid: str | None,
        *,
        tape: bool = True,
    ) -> list[FillEvent]:
        """Publish an engine result: book deltas, trades, per-account fills and positions, and
        the final state of every resting order it touched. Returns the account fills."""
        self.deltas(ticker, res.deltas, ts, owner, coid)
        coids = {m.order_id: m.client_order_id or "" for m in res.makers}
        if res.order is not None:
            coids[res.order.order_id] = res.order.client_order_id or ""
        out: list[FillEvent] = []
        touched: list[str] = []
        for f in res.fills:
            if tape:
                self.trade(ticker, f.trade_id, Price(f.yes_price), Qty(f.count), f.taker_outcome_side, ts)
            for is_taker in (True, False):
                fill = self._account_fill(f, is_taker, coids, ts)
                if fill is not None:
                    out.append(fill)
                    if fill.owner not in touched:
                        touched.append(fill.owner)
        for fill in out:
            self.publish(fill)
            self.history.add_fill(fill)
        for o in touched:
            self.position_changed(o, ticker, ts)
        for m in res.makers:
            self.order_update(m, ts)
        return out

    def trade(
        self, ticker: str, trade_id: str, yes_price: Price, count: Qty, taker_side: Side, ts: float
    ) -> None:
        self.activity[ticker].trade(yes_price, count, ts)
        trade = TradeEvent(
            ticker=ticker, trade_id=trade_id, yes_price=yes_price, count=count, taker_side=taker_side, ts=ts
        )
        self.history.trades.append(trade)
        self.publish(trade)

    def _account_fill(self, f: Fill, is_taker: bool, coids: dict[str, str], ts: float) -> FillEvent | None:
        owner = f.taker_owner if is_taker else f.maker_owner
        order_id = f.taker_order_id if is_taker else f.maker_order_id
        if owner is None or order_id is None:
            return None
        post = f.taker_position if is_taker else f.maker_position
        fee = f.taker_fee if is_taker else f.maker_fee
        bought = f.taker_outcome_side if is_taker else f.maker_outcome_side
        cost = f.price_paid(is_taker) * f.count
        self.history.add_fill_money(order_id, is_taker, cost, fee)
        post_qty = post or 0
        prior = post_qty - (f.count if bought is Side.YES else -f.count)
        self.activity[f.ticker].position_moved(prior, post_qty)
        return FillEvent(
            owner=owner,
            ticker=f.ticker,
            trade_id=f.trade_id,
            order_id=order_id,
            client_order_id=coids.get(order_id, ""),
            side=f.taker_side if is_taker else f.maker_side,
            action=f.taker_action if is_taker else f.maker_action,
            yes_price=Price(f.yes_price),
            count=Qty(f.count),
            fee=Money(fee),
            is_taker=is_taker,
            post_position=Qty(post_qty),
            ts=ts,
        )

    def position_changed(self, owner: str, ticker: str, ts: float) -> None:
        pos = self.venue.account(owner).positions.get(ticker)
        if pos is None:
            return
        self.position_ts[(owner, ticker)] = ts
        self.publish(
            PositionEvent(
                owner=owner,
                ticker=ticker,
                position=Qty(pos.qty),
                position_cost=Money(pos.cost),
                realized_pnl=Money(pos.realized_pnl),
                fees_paid=Money(pos.fees_paid),
                volume=Qty(pos.volume),
                ts=ts,
            )
        )

    def order_update(self, state: OrderState, ts: float) -> OrderRecord:
        """Record an order's new state (tracked accounts only) and publish it."""
        record = self.history.record(state, ts)
        self.publish(OrderEvent(order=record, ts=ts))
        return record
