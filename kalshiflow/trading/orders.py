"""Order bookkeeping for the live trader: client order ids, open orders, the commands to send.

Pure (no I/O, no clock): the Trader actor sends the commands this module produces through the
REST client and reports every outcome back (``on_ack``, ``on_reject``, ``on_cancelled``, fills).

- Every order carries a ``client_order_id`` made here, unique across restarts (prefix +
  incarnation + counter) and recognisable as ours (:meth:`ClientOrderIds.owns`), so a retried
  create is idempotent (the REST client resolves 409 by looking the id up) and a restarted
  trader can adopt and cancel what its predecessor left resting (:meth:`OrderTracker.sync`).
  The prior system sent none (prior-system-lessons §8.7).
- Open orders are tracked from the moment the create is sent (``pending``), so the policy sees
  them at its next decision exactly as the env shows an order that has reached the venue: as
  ``(ladder, ladder price, remaining)`` oldest first (:meth:`OrderTracker.account_orders`).
- A cancel requested while a create is still in flight is remembered and sent on its ack, so a
  kill switch cannot miss an order that was on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from kalshiflow.market.fees import FeeSchedule
from kalshiflow.market.prices import PRICE_SCALE, Money
from kalshiflow.market.types import Action, OrderStatus, Side, bid_side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.trading import OpenOrder
from kalshiflow.trading.reconcile import estimate_reserve
from kalshiflow.trading.risk import ApprovedOrder

__all__ = [
    "CancelOrder", "ClientOrderIds", "OpenOrderView", "OrderCommand", "OrderTracker", "PlaceOrder",
    "TrackedOrder",
]

Status = Literal["pending", "resting", "executed", "canceled", "rejected"]
TERMINAL: frozenset[str] = frozenset({"executed", "canceled", "rejected"})


class PlaceOrder(msgspec.Struct, frozen=True, kw_only=True):
    """Send the order the risk gate approved (the router redeems ``approved`` just before sending)."""

    approved: ApprovedOrder
    # The action table's sells are reduce-only (the env's venue enforces it); the gate's request
    # does not carry the flag, so the router adds it: it can only make an order smaller.
    reduce_only: bool = False
    decision_id: str | None = None
    model_version: str | None = None
    reason: str = "policy"  # policy | flatten

    @property
    def request(self) -> rm.OrderRequest:
        return self.approved.request

    @property
    def client_order_id(self) -> str:
        return self.approved.request.client_order_id

    @property
    def ticker(self) -> str:
        return self.approved.request.ticker


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    order_id: str
    ticker: str
    reason: str


OrderCommand = PlaceOrder | CancelOrder


class OpenOrderView(msgspec.Struct, frozen=True, kw_only=True):
    """An open order as the dashboard shows it."""

    client_order_id: str
    order_id: str | None
    ticker: str
    side: str
    action: str
    price: int  # the order's own-side limit price, ticks
    count: int  # Qty
    remaining: int
    status: str
    tif: str | None
    model_version: str | None


class ClientOrderIds:
    """``<prefix>-<incarnation hex>-<n hex>``: short (Kalshi accepts up to 64 characters) and
    never reused (the incarnation is the actor's start time in ns)."""

    def __init__(self, prefix: str, incarnation: int) -> None:
        if not prefix or "-" in prefix or len(prefix) > 16:
            raise ValueError("client order id prefix: 1-16 characters without '-'")
        self.prefix = prefix
        self._head = f"{prefix}-{incarnation:x}-"
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._head}{self._n:x}"

    def owns(self, client_order_id: str | None) -> bool:
        return bool(client_order_id) and client_order_id.startswith(self.prefix + "-")  # type: ignore[union-attr]


class TrackedOrder:
    """One of our orders, from send to its end. Mutable: only the tracker changes it."""

    __slots__ = ("client_order_id", "ticker", "side", "action", "price", "ladder", "ladder_price", "count",
                 "remaining", "order_id", "status", "tif", "decision_id", "model_version", "cancel_wanted",
                 "cancel_sent", "reason")

    def __init__(self, req: rm.OrderRequest, *, decision_id: str | None = None,
                 model_version: str | None = None, reason: str = "policy") -> None:
        assert req.price is not None
        self.client_order_id = req.client_order_id
        self.ticker = req.ticker
        self.side, self.action, self.price = req.side, req.action, int(req.price)
        self.ladder = 0 if bid_side(req.side, req.action) is Side.YES else 1
        # Ladder price: what the order pays per contract of its ladder's side (sell YES at p = NO bid 1-p).
        self.ladder_price = self.price if req.action is Action.BUY else PRICE_SCALE - self.price
        self.count = self.remaining = int(req.count)
        self.order_id: str | None = None
        self.status: Status = "pending"
        self.tif = req.time_in_force
        self.decision_id, self.model_version, self.reason = decision_id, model_version, reason
        self.cancel_wanted = ""  # why a cancel was asked for ("" = not asked)
        self.cancel_sent = False

    def view(self) -> OpenOrderView:
        return OpenOrderView(client_order_id=self.client_order_id, order_id=self.order_id, ticker=self.ticker,
                             side=self.side.value, action=self.action.value, price=self.price,
                             count=self.count, remaining=self.remaining, status=self.status, tif=self.tif,
                             model_version=self.model_version)


def _status(order: rm.Order) -> Status:
    if order.status is OrderStatus.RESTING:
        return "resting"
    return "executed" if order.status is OrderStatus.EXECUTED else "canceled"


class OrderTracker:
    """Our open orders, oldest first, and counters (see the module docstring)."""

    def __init__(self, ids: ClientOrderIds) -> None:
        self.ids = ids
        self._open: dict[str, TrackedOrder] = {}  # client_order_id -> order, insertion = age
        self._by_order_id: dict[str, str] = {}
        self.n = dict.fromkeys(("placed", "acked", "rejected", "cancelled", "cancel_failed", "executed",
                                "adopted", "fills", "filled_qty"), 0)

    # ------------------------------------------------------------------ new orders

    def track(self, cmd: PlaceOrder) -> TrackedOrder:
        """An approved order about to be sent: open (pending) from now on."""
        order = self._add(cmd.request, decision_id=cmd.decision_id, model_version=cmd.model_version,
                          reason=cmd.reason)
        self.n["placed"] += 1
        return order

    def _add(self, req: rm.OrderRequest, **meta: str | None) -> TrackedOrder:
        order = TrackedOrder(req, **meta)  # type: ignore[arg-type]
        self._open[order.client_order_id] = order
        return order

    # ------------------------------------------------------------------ outcomes

    def on_ack(self, client_order_id: str, order: rm.Order) -> list[CancelOrder]:
        """The exchange accepted the create; returns a cancel if one was asked for meanwhile."""
        tracked = self._open.get(client_order_id)
        if tracked is None:
            return []
        self.n["acked"] += 1
        tracked.order_id = order.order_id
        self._by_order_id[order.order_id] = client_order_id
        self._update(tracked, order)
        if tracked.status == "resting" and tracked.cancel_wanted and not tracked.cancel_sent:
            return self._cancel(tracked, tracked.cancel_wanted)
        return []

    def on_reject(self, client_order_id: str) -> TrackedOrder | None:
        tracked = self._open.pop(client_order_id, None)
        if tracked is not None:
            tracked.status = "rejected"
            self.n["rejected"] += 1
        return tracked

    def on_cancelled(self, client_order_id: str, order: rm.Order | None = None) -> TrackedOrder | None:
        tracked = self._open.get(client_order_id)
        if tracked is None:
            return None
        if order is not None:
            self._update(tracked, order)
        if tracked.status not in TERMINAL:
            tracked.status = "canceled"
            self._close(tracked)
        self.n["cancelled"] += 1
        return tracked

    def on_cancel_failed(self, client_order_id: str, *, gone: bool) -> None:
        """A cancel that failed: ``gone`` (404) means the order is no longer resting (filled or
        cancelled already); otherwise it may be sent again."""
        self.n["cancel_failed"] += 1
        tracked = self._open.get(client_order_id)
        if tracked is None:
            return
        if gone:
            tracked.status = "canceled"
            self._close(tracked)
        else:
            tracked.cancel_sent = False

    def on_fill(self, order_id: str, count: int) -> TrackedOrder | None:
        """One of our fills (from the reconciler): the order's remaining shrinks."""
        cid = self._by_order_id.get(order_id)
        tracked = self._open.get(cid) if cid else None
        self.n["fills"] += 1
        self.n["filled_qty"] += count
        if tracked is None:
            return None
        tracked.remaining = max(0, tracked.remaining - count)
        if tracked.remaining == 0:
            tracked.status = "executed"
            self._close(tracked)
        return tracked

    def _update(self, tracked: TrackedOrder, order: rm.Order) -> None:
        tracked.remaining = int(order.remaining_count)
        tracked.status = _status(order)
        if tracked.status in TERMINAL:
            self._close(tracked)

    def _close(self, tracked: TrackedOrder) -> None:
        self._open.pop(tracked.client_order_id, None)
        if tracked.order_id:
            self._by_order_id.pop(tracked.order_id, None)
        if tracked.status == "executed":
            self.n["executed"] += 1

    # ------------------------------------------------------------------ cancels

    def cancel(self, ticker: str | None = None, *, reason: str) -> list[CancelOrder]:
        """Cancel every open order (of ``ticker``, or all): commands for the acked ones; the
        pending ones are cancelled as soon as their ack arrives."""
        out: list[CancelOrder] = []
        for tracked in list(self._open.values()):
            if ticker is None or tracked.ticker == ticker:
                out += self._cancel(tracked, reason)
        return out

    def _cancel(self, tracked: TrackedOrder, reason: str) -> list[CancelOrder]:
        tracked.cancel_wanted = tracked.cancel_wanted or reason
        if tracked.order_id is None or tracked.cancel_sent or tracked.status != "resting":
            return []
        tracked.cancel_sent = True
        return [CancelOrder(client_order_id=tracked.client_order_id, order_id=tracked.order_id,
                            ticker=tracked.ticker, reason=reason)]

    # ------------------------------------------------------------------ exchange truth

    def sync(self, resting: Iterable[rm.Order]) -> tuple[int, int]:
        """Make the open set agree with the exchange's resting orders (REST ``status=resting``).

        Acked orders we hold as resting that the exchange no longer lists are closed (their
        fills arrive through the reconciler); resting orders with our id prefix that we do not
        know (a predecessor's) are adopted so they show and get cancelled. -> (closed, adopted).
        Pending orders are left alone: their create may still be on its way.
        """
        listed = {o.order_id: o for o in resting}
        closed = adopted = 0
        for tracked in list(self._open.values()):
            if tracked.order_id is None:
                continue
            order = listed.pop(tracked.order_id, None)
            if order is None:
                tracked.status = "canceled" if tracked.remaining else "executed"
                self._close(tracked)
                closed += 1
            else:
                tracked.remaining = int(order.remaining_count)
        for order in listed.values():
            if not self.ids.owns(order.client_order_id) or order.client_order_id in self._open:
                continue
            req = rm.OrderRequest(ticker=order.ticker, side=order.side, action=order.action,
                                  count=order.initial_count, price=order.price,
                                  client_order_id=order.client_order_id)
            tracked = self._add(req, reason="adopted")
            self.n["adopted"] += 1
            self._update(tracked, order)
            tracked.order_id = order.order_id
            self._by_order_id[order.order_id] = order.client_order_id
            adopted += 1
        return closed, adopted

    # ------------------------------------------------------------------ views

    def __len__(self) -> int:
        return len(self._open)

    def get(self, client_order_id: str) -> TrackedOrder | None:
        return self._open.get(client_order_id)

    def open_orders(self, ticker: str | None = None) -> list[TrackedOrder]:
        return [o for o in self._open.values() if ticker is None or o.ticker == ticker]

    def account_orders(self, ticker: str) -> tuple[tuple[int, int, int], ...]:
        """(ladder 0 YES / 1 NO, ladder price, remaining Qty), oldest first: AccountView.orders."""
        return tuple((o.ladder, o.ladder_price, o.remaining) for o in self._open.values()
                     if o.ticker == ticker and o.remaining > 0)

    def reserved(self, ticker: str, position: int, fees: FeeSchedule) -> Money:
        """Collateral the venue holds for our open orders in ``ticker``: the reconciler's
        :func:`~kalshiflow.trading.reconcile.estimate_reserve` (the Venue's rule), oldest first."""
        orders = [OpenOrder(order_id=o.order_id or o.client_order_id, client_order_id=o.client_order_id,
                            ticker=ticker, side=o.side, action=o.action, price=o.price, remaining=o.remaining,
                            created_ts=float(age))
                  for age, o in enumerate(self._open.values()) if o.ticker == ticker and o.remaining]
        return estimate_reserve({ticker: position}, orders, fees) if orders else Money(0)
