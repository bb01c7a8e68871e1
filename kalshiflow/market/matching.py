"""Price-time priority matching for one Kalshi market (L3), shared by the exchange simulator, the
RL env and paper fills. Pure code: no I/O, no fees, no accounting (the venue adds those).

Model
- Kalshi books hold bids only. Every order is normalised onto one ladder, ``bid_side(side,
  action)``: buy YES / sell NO rest on the YES ladder, buy NO / sell YES on the NO ladder. Its
  ladder price is what it pays per contract of the ladder's side (sell YES at p -> NO bid at 1-p).
- A bid at p on one ladder crosses bids at q on the other when p + q >= $1. Trades execute at the
  RESTING order's price (yes_price = resting YES bid, or 1 - resting NO bid), so a taker can get
  price improvement; every trade has yes_price + no_price = $1.
- Each level is a FIFO deque; the aggregated size lives in an :class:`OrderBook`, updated with
  every delta we emit, so ``engine.book`` is always the exact L2 view.

Replaying recorded crowd volume (the RL env's queue model) is in ``replay_liquidity``; the queue
entries are ``resting_order.RestingOrder``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from kalshiflow.market import replay_liquidity
from kalshiflow.market.book import OrderBook
from kalshiflow.market.orders import (
    BookDelta,
    Fill,
    OrderRequest,
    OrderResult,
    OrderState,
    SelfTradePrevention,
    SequentialIds,
)
from kalshiflow.market.prices import PRICE_SCALE, Price, PriceGrid, Qty
from kalshiflow.market.resting_order import RestingOrder
from kalshiflow.market.types import Action, OrderStatus, OrderType, Side, TimeInForce, bid_side

# The value types live in orders.py and RestingOrder in resting_order.py; they are re-exported here
# (``from ...matching import Fill``).
__all__ = [
    "BookDelta", "Fill", "MatchingEngine", "OrderNotFound", "OrderRequest", "OrderResult",
    "OrderState", "RestingOrder", "SelfTradePrevention", "SequentialIds",
]

S = PRICE_SCALE
_SIDES = (Side.YES, Side.NO)
_IDX = {Side.YES: 0, Side.NO: 1}
_BUY, _GTC, _FOK = Action.BUY, TimeInForce.GTC, TimeInForce.FOK


class OrderNotFound(LookupError):
    pass


def _reject(code: str, message: str) -> OrderResult:
    return OrderResult(error=code, message=message)


class MatchingEngine:
    """L3 book of one market. ``book`` is the aggregated L2 view (an :class:`OrderBook`)."""

    def __init__(self, ticker: str, grid: PriceGrid, *, clock: Callable[[], float] = time.time,
                 ids: Callable[[], str] | None = None) -> None:
        self.ticker, self.grid, self.clock = ticker, grid, clock
        self.ids = ids or SequentialIds()
        self.book = OrderBook(ticker, grid)
        self._queues: tuple[dict[int, deque[RestingOrder]], ...] = ({}, {})
        self._debt: tuple[dict[int, int], ...] = ({}, {})
        self._live: dict[str, RestingOrder] = {}
        self._by_owner: dict[str, dict[str, RestingOrder]] = {}
        self._top = grid.prices[-1]

    # ------------------------------------------------------------------ orders

    def ladder_price(self, req: OrderRequest) -> tuple[int, int] | OrderResult:
        """(ladder index, ladder price) of a request, or a rejection (invalid_price/_count)."""
        count = req.count
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            return _reject("invalid_count", f"count must be a positive integer of hundredths, was {count!r}")
        li = _IDX[bid_side(req.side, req.action)]
        if req.type is OrderType.MARKET:
            return li, self._top
        yes_p, no_p = req.yes_price, req.no_price
        if yes_p is None:
            if no_p is None:
                return _reject("invalid_price", "a limit order needs yes_price or no_price")
            yes: int = S - no_p
        elif no_p is not None and yes_p + no_p != S:
            return _reject("invalid_price", f"yes_price {yes_p} + no_price {no_p} must be $1")
        else:
            yes = yes_p
        own = yes if req.side is Side.YES else S - yes
        lp = own if req.action is _BUY else S - own
        if not (0 < own < S and self.grid.is_valid(own) and self.grid.is_valid(lp)):
            return _reject("invalid_price", f"price {own} not strictly inside (0, 1) on {self.grid.name}")
        return li, lp

    def submit(self, owner: str, req: OrderRequest, ladder: tuple[int, int] | None = None) -> OrderResult:
        """Match and/or rest an order. ``ladder``: ``ladder_price(req)`` if the caller already has it."""
        lad = ladder or self.ladder_price(req)
        if isinstance(lad, OrderResult):
            return lad
        li, lp = lad
        tif = req.time_in_force
        if req.type is OrderType.MARKET and tif is _GTC:
            tif = TimeInForce.IOC
        if req.post_only and tif is not _GTC:
            return _reject("invalid_order", "post_only needs good_till_canceled")
        best = self.book.best_bid(_SIDES[1 - li])
        crosses = best is not None and best + lp >= S
        if crosses and req.post_only:
            return _reject("post_only_cross", "post-only order would take liquidity")
        if tif is _FOK and self.fillable(owner, li, lp, req.count, req.self_trade_prevention) < req.count:
            return _reject("fok_insufficient_volume", "fill-or-kill order cannot be filled in full")
        o = RestingOrder(li, lp, req.count, self.ids(), owner, req.side, req.action)
        o.type, o.tif, o.coid, o.ts = req.type, tif, req.client_order_id, self.clock()
        o.stp, o.post_only = req.self_trade_prevention, req.post_only
        fills: list[Fill] = []
        deltas: list[BookDelta] = []
        makers: list[OrderState] = []
        reason = self._match(o, fills, deltas, makers) if crosses else None
        if o.remaining and reason is None:
            if tif is _GTC:
                self._rest(o, deltas)
            else:
                reason = "immediate_or_cancel" if tif is TimeInForce.IOC else "fill_or_kill"
        if o.status is OrderStatus.RESTING and (reason or not o.remaining):
            o.status = OrderStatus.EXECUTED if not o.remaining else OrderStatus.CANCELED
        return OrderResult(order=self.state(o), fills=tuple(fills), deltas=tuple(deltas),
                           makers=tuple(makers), cancel_reason=reason)

    def fillable(self, owner: str | None, li: int, lp: int, need: int, stp: SelfTradePrevention) -> int:
        """Volume an order could take right now (stops counting once ``need`` is reached)."""
        queues, total = self._queues[1 - li], 0
        for q in sorted((q for q in queues if q + lp >= S), reverse=True):
            for m in queues[q]:
                if m.owner is not None and m.owner == owner:
                    if stp is SelfTradePrevention.TAKER_AT_CROSS:
                        return total
                    continue
                total += m.remaining
                if total >= need:
                    return total
        return total

    def _match(self, t: RestingOrder, fills: list[Fill], deltas: list[BookDelta],
               makers: list[OrderState]) -> str | None:
        """Take liquidity for ``t`` until its limit; return a cancel reason if STP stopped it."""
        oi = 1 - t.li
        opp = _SIDES[oi]
        queues, debt, book = self._queues[oi], self._debt[oi], self.book
        limit, ts, owner = S - t.lprice, self.clock(), t.owner
        while t.remaining:
            q = book.best_bid(opp)
            if q is None or q < limit:
                break
            dq = queues[q]
            yes_price = q if oi == 0 else S - q
            while dq and t.remaining:
                m = dq[0]
                if m.owner is not None and m.owner == owner:
                    if t.stp is SelfTradePrevention.TAKER_AT_CROSS:
                        return "taker_self_trade_prevention"
                    dq.popleft()
                    self._finish(m, OrderStatus.CANCELED)
                    deltas.append(self._delta(opp, q, -m.remaining))
                    makers.append(self.state(m))
                    continue
                n = t.remaining if t.remaining < m.remaining else m.remaining
                m.remaining -= n
                m.filled += n
                t.remaining -= n
                t.filled += n
                if m.owner is None:  # recorded crowd volume consumed off-record: owe it
                    debt[q] = debt.get(q, 0) + n
                if owner is None:
                    tdebt = self._debt[t.li]
                    tdebt[t.lprice] = tdebt.get(t.lprice, 0) + n
                deltas.append(self._delta(opp, q, -n))
                fills.append(Fill(
                    trade_id=self.ids(), ticker=self.ticker, taker_order_id=t.order_id,
                    maker_order_id=m.order_id, taker_owner=owner, maker_owner=m.owner,
                    yes_price=Price(yes_price), no_price=Price(S - yes_price), count=Qty(n),
                    taker_side=t.side, taker_action=t.action, maker_side=m.side, maker_action=m.action,
                    taker_outcome_side=_SIDES[t.li], ts=ts))
                if not m.remaining:
                    dq.popleft()
                    if m.order_id is not None:
                        self._finish(m, OrderStatus.EXECUTED)
                if m.order_id is not None and (not m.remaining or not t.remaining):
                    makers.append(self.state(m))
            if not dq:
                del queues[q]
        return None

    def _rest(self, o: RestingOrder, deltas: list[BookDelta]) -> None:
        dq = self._queues[o.li].get(o.lprice)
        if dq is None:
            dq = self._queues[o.li][o.lprice] = deque()
        dq.append(o)
        side = _SIDES[o.li]
        deltas.append(self._delta(side, o.lprice, o.remaining))
        if o.order_id is not None:
            self._live[o.order_id] = o
            self._by_owner.setdefault(o.owner, {})[o.order_id] = o  # type: ignore[arg-type]

    def _delta(self, side: Side, price: int, delta: int) -> BookDelta:
        return BookDelta(side, Price(price), Qty(delta), Qty(self.book.apply_delta(side, price, delta)))

    def _finish(self, o: RestingOrder, status: OrderStatus) -> None:
        """Drop a no-longer-resting owned order from the indexes (not from its deque)."""
        o.status = status
        if self._live.pop(o.order_id, None) is not None:  # type: ignore[arg-type]
            mine = self._by_owner[o.owner]  # type: ignore[index]
            del mine[o.order_id]  # type: ignore[arg-type]
            if not mine:
                del self._by_owner[o.owner]  # type: ignore[arg-type]

    def decrease(self, order_id: str, *, reduce_by: int | None = None,
                 reduce_to: int | None = None) -> tuple[OrderState, int, tuple[BookDelta, ...]]:
        """Shrink a resting order in place (keeps its queue position); 0 left = cancelled."""
        o = self._live.get(order_id)
        if o is None:
            raise OrderNotFound(order_id)
        if (reduce_by is None) == (reduce_to is None):
            raise ValueError("give exactly one of reduce_by / reduce_to")
        by = reduce_by if reduce_by is not None else o.remaining - reduce_to  # type: ignore[operator]
        if by <= 0 or by > o.remaining:
            raise ValueError(f"cannot reduce {o.remaining} by {by}")
        side = _SIDES[o.li]
        o.remaining -= by
        delta = self._delta(side, o.lprice, -by)
        if not o.remaining:
            dq = self._queues[o.li][o.lprice]
            dq.remove(o)
            if not dq:
                del self._queues[o.li][o.lprice]
            self._finish(o, OrderStatus.CANCELED)
        return self.state(o), by, (delta,)

    def cancel(self, order_id: str) -> tuple[OrderState, int, tuple[BookDelta, ...]]:
        """Cancel a resting order: (final state, quantity removed, book deltas)."""
        o = self._live.get(order_id)
        if o is None:
            raise OrderNotFound(order_id)
        return self.decrease(order_id, reduce_by=o.remaining)

    # ------------------------------------------------------------------ replay liquidity

    # Recorded crowd volume joining and leaving (the queue model is in replay_liquidity). Plain
    # functions bound as methods: a call costs what it would if they were written here.
    add_liquidity = replay_liquidity.add_liquidity
    remove_liquidity = replay_liquidity.remove_liquidity
    replay_add = replay_liquidity.replay_add
    replay_remove = replay_liquidity.replay_remove

    # ------------------------------------------------------------------ close

    def close(self) -> tuple[list[OrderState], list[BookDelta]]:
        """Empty the book (market closed): cancel every owned order, drop all crowd volume."""
        canceled: list[OrderState] = []
        deltas: list[BookDelta] = []
        for li, queues in enumerate(self._queues):
            side = _SIDES[li]
            for q, dq in sorted(queues.items()):
                for m in dq:
                    if m.order_id is not None:
                        self._finish(m, OrderStatus.CANCELED)
                        canceled.append(self.state(m))
                    deltas.append(self._delta(side, q, -m.remaining))
            queues.clear()
            self._debt[li].clear()
        return canceled, deltas

    # ------------------------------------------------------------------ reads

    def state(self, o: RestingOrder) -> OrderState:
        own = o.lprice if o.action is _BUY else S - o.lprice
        yes = own if o.side is Side.YES else S - own
        left = o.remaining if o.status is OrderStatus.RESTING else 0
        return OrderState(
            order_id=o.order_id or "", owner=o.owner or "", ticker=self.ticker, side=o.side,
            action=o.action, type=o.type, time_in_force=o.tif, ladder_side=_SIDES[o.li],
            ladder_price=Price(o.lprice), price=Price(own), yes_price=Price(yes), no_price=Price(S - yes),
            initial_count=Qty(o.initial), remaining_count=Qty(left), fill_count=Qty(o.filled),
            status=o.status, client_order_id=o.coid,
            created_ts=o.ts, post_only=o.post_only)

    def get(self, order_id: str) -> OrderState | None:
        """A resting order's state (terminal orders are reported in results, not kept)."""
        o = self._live.get(order_id)
        return None if o is None else self.state(o)

    def live(self, order_id: str) -> RestingOrder | None:
        """A resting order's live entry (do not mutate), or None: ``get`` without the snapshot."""
        return self._live.get(order_id)

    def open_orders(self, owner: str) -> list[OrderState]:
        return [self.state(o) for o in self._by_owner.get(owner, {}).values()]

    def resting(self, owner: str) -> Iterator[RestingOrder]:
        """The owner's resting orders, oldest first (live objects: do not mutate)."""
        return iter(tuple(self._by_owner.get(owner, {}).values()))

    def resting_view(self, owner: str) -> Iterable[RestingOrder]:
        """``resting`` without the snapshot: iterate at once, changing nothing meanwhile."""
        orders = self._by_owner.get(owner)
        return () if orders is None else orders.values()

    def owners(self) -> list[str]:
        """Owners with resting orders in this market."""
        return list(self._by_owner)

    def queue(self, side: Side, price: int) -> list[tuple[str | None, int]]:
        """(order_id or None for crowd, remaining) at one level, front first (tests, features)."""
        return [(o.order_id, o.remaining) for o in self._queues[_IDX[side]].get(price, ())]

    def queue_ahead(self, order_id: str) -> int:
        """Volume ahead of a resting order at its level (Kalshi's queue_position)."""
        o = self._live[order_id]
        ahead = 0
        for m in self._queues[o.li][o.lprice]:
            if m is o:
                return ahead
            ahead += m.remaining
        raise OrderNotFound(order_id)

    def debt(self, side: Side, price: int) -> int:
        return self._debt[_IDX[side]].get(price, 0)

    def best_bid_excluding(self, side: Side, owner: str | None) -> int | None:
        """Best bid of a ladder ignoring ``owner``'s own orders (marking must not use them)."""
        if owner is None or owner not in self._by_owner:
            return self.book.best_bid(side)
        queues = self._queues[_IDX[side]]
        for q in sorted(queues, reverse=True):
            if any(m.owner != owner and m.remaining for m in queues[q]):
                return q
        return None
