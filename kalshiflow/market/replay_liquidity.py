"""Replay liquidity of a :class:`~kalshiflow.market.matching.MatchingEngine`: recorded crowd volume
joining and leaving its queues. Plain functions of the engine, bound by it as methods (so a call
costs exactly what a method defined in the class does).

Replay queue model (RL env). Recorded deltas are anonymous crowd volume:
- ``add_liquidity`` appends crowd volume at the back of its level (merging with a crowd chunk
  already last), so an agent order that joined earlier keeps its place ahead of it.
- ``remove_liquidity(traded=True)`` is a recorded trade: it consumes the level FIFO from the
  front, FILLING agent orders it reaches (the recorded taker would have hit them); crowd behind
  them survives — the counterfactual of the agent having been in the queue.
- ``remove_liquidity(traded=False)`` is a recorded cancel: crowd volume leaves from the back
  (pessimistic for the agent: people ahead of it stay); agent orders are never cancelled by it.
- Recorded volume that this engine already consumed in a trade the recording does not contain
  (an agent taking crowd bids, or crowd crossing crowd) is kept per level as *debt*. Later
  recorded decreases at that level pay the debt off instead of removing volume twice: trades pay
  it first (the recorded taker hit the same front-of-queue contracts the agent took), cancels
  after the crowd volume left (they hit the back). Every removal clamps at what exists.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from kalshiflow.market.orders import BookDelta, Fill, OrderResult, OrderState
from kalshiflow.market.prices import PRICE_SCALE, Price, Qty
from kalshiflow.market.resting_order import RestingOrder
from kalshiflow.market.types import Action, OrderStatus, Side

if TYPE_CHECKING:
    from kalshiflow.market.matching import MatchingEngine

__all__ = ["add_liquidity", "remove_liquidity", "replay_add", "replay_remove"]

S = PRICE_SCALE
_SIDES = (Side.YES, Side.NO)
_IDX = {Side.YES: 0, Side.NO: 1}
_BUY = Action.BUY


def add_liquidity(self: MatchingEngine, side: Side, price: int, qty: int) -> OrderResult:
    """Anonymous crowd bid (a recorded increase) joining the back of its level. If it crosses
    (only possible against agent orders or counterfactual crowd), it trades first."""
    li = _IDX[side]
    if qty <= 0 or not self.grid.is_valid(price):
        raise ValueError(f"bad liquidity {side} {qty} @ {price}")
    o = RestingOrder(li, price, qty)
    fills: list[Fill] = []
    deltas: list[BookDelta] = []
    makers: list[OrderState] = []
    best = self.book.best_bid(_SIDES[1 - li])
    if best is not None and best + price >= S:
        self._match(o, fills, deltas, makers)
    if o.remaining:
        dq = self._queues[li].get(price)
        if dq and dq[-1].order_id is None:  # merge with the crowd chunk already last
            dq[-1].remaining += o.remaining
            deltas.append(self._delta(side, price, o.remaining))
        else:
            self._rest(o, deltas)
    return OrderResult(fills=tuple(fills), deltas=tuple(deltas), makers=tuple(makers))


def remove_liquidity(self: MatchingEngine, side: Side, price: int, qty: int, *, traded: bool) -> OrderResult:
    """A recorded decrease of crowd volume (see the module docstring for the queue model)."""
    li = _IDX[side]
    if qty <= 0:
        raise ValueError(f"bad liquidity removal {side} {qty} @ {price}")
    dq = self._queues[li].get(price)
    debt = self._debt[li]
    owed = debt.get(price, 0)
    fills: list[Fill] = []
    deltas: list[BookDelta] = []
    makers: list[OrderState] = []
    if traded and owed:
        paid = min(owed, qty)
        qty -= paid
        owed -= paid
    if dq and qty:
        if traded:
            qty = _trade_front(self, side, li, price, dq, qty, fills, deltas, makers)
        else:
            qty = _cancel_back(self, side, price, dq, qty, deltas)
        if not dq:
            del self._queues[li][price]
    if not traded and owed and qty:
        owed -= min(owed, qty)
    if owed:
        debt[price] = owed
    else:
        debt.pop(price, None)
    return OrderResult(fills=tuple(fills), deltas=tuple(deltas), makers=tuple(makers))


# Lean replay (the RL env replays every recorded event): the same state changes as
# add_liquidity / remove_liquidity whenever no fill can happen, without building results.
# They return False, changing nothing, where a fill is possible: use the full methods then.
def replay_add(self: MatchingEngine, li: int, price: int, qty: int) -> bool:
    """``add_liquidity(side li, price, qty)`` when it does not cross; False if it would."""
    opp = self.book.best_bid(_SIDES[1 - li])
    if opp is not None and opp + price >= S:
        return False
    if qty <= 0:
        raise ValueError(f"bad liquidity {_SIDES[li]} {qty} @ {price}")
    self.book.apply_delta(_SIDES[li], price, qty)  # raises (changing nothing) off the grid
    queues = self._queues[li]
    dq = queues.get(price)
    if dq is None:
        dq = queues[price] = deque()
    if dq and dq[-1].order_id is None:
        dq[-1].remaining += qty
    else:
        dq.append(RestingOrder(li, price, qty))
    return True


def replay_remove(self: MatchingEngine, li: int, price: int, qty: int, traded: bool) -> bool:
    """``remove_liquidity(side li, price, qty, traded=traded)`` when it cannot fill an owned
    order (a cancel, or a trade at a level without one); False otherwise."""
    if qty <= 0:
        raise ValueError(f"bad liquidity removal {_SIDES[li]} {qty} @ {price}")
    dq = self._queues[li].get(price)
    if traded and dq:
        for m in dq:
            if m.order_id is not None:
                return False
    debt = self._debt[li]
    owed = debt.get(price, 0)
    if traded and owed:
        paid = owed if owed < qty else qty
        qty -= paid
        owed -= paid
    if dq and qty:
        removed = 0
        if traded:  # crowd only: consume from the front
            while dq and qty:
                m = dq[0]
                n = qty if qty < m.remaining else m.remaining
                m.remaining -= n
                qty -= n
                removed += n
                if not m.remaining:
                    dq.popleft()
        else:  # crowd leaves from the back, owned orders stay
            for i in range(len(dq) - 1, -1, -1):
                m = dq[i]
                if m.order_id is not None:
                    continue
                n = qty if qty < m.remaining else m.remaining
                m.remaining -= n
                qty -= n
                removed += n
                if not m.remaining:
                    del dq[i]
                if not qty:
                    break
        if removed:
            self.book.apply_delta(_SIDES[li], price, -removed)
        if not dq:
            del self._queues[li][price]
    if not traded and owed and qty:
        owed -= owed if owed < qty else qty
    if owed:
        debt[price] = owed
    else:
        debt.pop(price, None)
    return True


def _trade_front(self: MatchingEngine, side: Side, li: int, price: int, dq: deque[RestingOrder], qty: int,
                 fills: list[Fill], deltas: list[BookDelta], makers: list[OrderState]) -> int:
    yes_price = price if li == 0 else S - price
    ts = self.clock()
    while dq and qty:
        m = dq[0]
        n = qty if qty < m.remaining else m.remaining
        m.remaining -= n
        qty -= n
        deltas.append(self._delta(side, price, -n))
        if m.order_id is not None:  # an agent order reached by the recorded trade: it fills
            m.filled += n
            fills.append(Fill(
                trade_id=self.ids(), ticker=self.ticker, taker_order_id=None, maker_order_id=m.order_id,
                taker_owner=None, maker_owner=m.owner, yes_price=Price(yes_price),
                no_price=Price(S - yes_price), count=Qty(n), taker_side=side.other, taker_action=_BUY,
                maker_side=m.side, maker_action=m.action, taker_outcome_side=side.other, ts=ts))
            if not m.remaining:
                self._finish(m, OrderStatus.EXECUTED)
            makers.append(self.state(m))
        if not m.remaining:
            dq.popleft()
    return qty


def _cancel_back(self: MatchingEngine, side: Side, price: int, dq: deque[RestingOrder], qty: int,
                 deltas: list[BookDelta]) -> int:
    for i in range(len(dq) - 1, -1, -1):
        m = dq[i]
        if m.order_id is not None:
            continue
        n = qty if qty < m.remaining else m.remaining
        m.remaining -= n
        qty -= n
        deltas.append(self._delta(side, price, -n))
        if not m.remaining:
            del dq[i]
        if not qty:
            break
    return qty
