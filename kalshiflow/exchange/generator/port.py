"""The narrow slice of the exchange the generator's bots use, and the simulated clock.

Bots trade through ``ExchangeState.submit`` / ``cancel`` exactly like a user, so a user's order
meets the same book, queue and fees as everyone else's. This adapter only turns "buy NO at 30c,
IOC" into an ``OrderRequest`` and exposes the few reads the bots need (book, an order's
remaining size, a position); keeping it small is what let the generator be written before the
state existed and lets it follow the state's API in one place.
"""

from __future__ import annotations

from kalshiflow.exchange.events import ExchangeEvent, MarketInfo, OrderEvent
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.book import OrderBook
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import Money, Price, Qty
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce


class SimClock:
    """A settable clock (epoch seconds). The generator sets it to each event's time before
    acting, so every order, fill and delta is stamped with simulated, reproducible time."""

    __slots__ = ("now",)

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def set(self, t: float) -> None:
        # Time never runs backwards: an event scheduled "in the past" happens now.
        if t > self.now:
            self.now = t


class Placed:
    """What a bot order did: its id if it rests, and how much traded immediately."""

    __slots__ = ("order_id", "filled", "resting")

    def __init__(self, order_id: str | None, filled: int, resting: int) -> None:
        self.order_id, self.filled, self.resting = order_id, filled, resting


_REJECTED = Placed(None, 0, 0)


class ExchangePort:
    """Bots' view of the exchange. Resting sizes of the bots' own orders are tracked from the
    state's order events (as a real client tracks its orders from the user_orders feed), which
    avoids building an order snapshot every time a bot asks "is my quote still there?"."""

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self.venue = state.venue
        self._resting: dict[str, int] = {}  # bot order id -> remaining Qty
        self._remove_listener = state.add_listener(self._on_event)

    def _on_event(self, event: ExchangeEvent) -> None:
        if type(event) is OrderEvent:
            order = event.order
            if order.order_id in self._resting:
                if order.status is OrderStatus.RESTING and order.remaining_count:
                    self._resting[order.order_id] = order.remaining_count
                else:
                    del self._resting[order.order_id]

    def detach(self) -> None:
        self._remove_listener()

    # ------------------------------------------------------------------ setup / lifecycle

    def add_bot(self, owner: str, balance: Money) -> None:
        # keep_history=False: bot order/fill history would grow without bound.
        self.state.add_account(owner, balance, keep_history=False)

    def list_market(self, info: MarketInfo) -> None:
        self.state.add_market(info)

    def open(self, ticker: str) -> None:
        self.state.open_market(ticker)

    def close(self, ticker: str) -> None:
        self.state.close_market(ticker)

    def settle(self, ticker: str, yes: bool) -> None:
        self.state.settle_market(ticker, "yes" if yes else "no")

    # ------------------------------------------------------------------ trading

    def buy(self, owner: str, ticker: str, side: Side, price: int, count: int, *,
            ioc: bool = False, post_only: bool = False) -> Placed:
        """Buy `count` (Qty) of `side` at `price` (ticks in that side's terms)."""
        if side is Side.YES:
            req = OrderRequest(side=side, action=Action.BUY, count=Qty(count), yes_price=Price(price),
                               time_in_force=TimeInForce.IOC if ioc else TimeInForce.GTC,
                               post_only=post_only)
        else:
            req = OrderRequest(side=side, action=Action.BUY, count=Qty(count), no_price=Price(price),
                               time_in_force=TimeInForce.IOC if ioc else TimeInForce.GTC,
                               post_only=post_only)
        res = self.state.submit(owner, ticker, req)
        order = res.order
        if order is None:
            return _REJECTED
        resting = order.remaining_count if order.status is OrderStatus.RESTING else 0
        if resting:
            self._resting[order.order_id] = resting
        return Placed(order.order_id if resting else None, order.fill_count, resting)

    def cancel(self, owner: str, order_id: str) -> None:
        if self._resting.pop(order_id, None) is not None:
            self.state.cancel(owner, order_id)

    # ------------------------------------------------------------------ reads

    def book(self, ticker: str) -> OrderBook:
        return self.venue.engine(ticker).book

    def remaining(self, order_id: str) -> int:
        """Resting size of a bot order, 0 once it is filled or cancelled."""
        return self._resting.get(order_id, 0)

    def position(self, owner: str, ticker: str) -> int:
        return self.venue.account(owner).position(ticker)
