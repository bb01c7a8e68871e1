"""The matching engine's mutable queue entry: one owned order or one chunk of anonymous crowd volume."""

from __future__ import annotations

from kalshiflow.market.orders import SelfTradePrevention
from kalshiflow.market.types import Action, OrderStatus, OrderType, Side, TimeInForce

__all__ = ["RestingOrder"]

_SIDES = (Side.YES, Side.NO)
_GTC = TimeInForce.GTC


class RestingOrder:
    """Engine-internal mutable order (crowd chunks: owner and order_id None). Read-only outside."""

    __slots__ = ("order_id", "owner", "side", "action", "type", "tif", "li", "lprice", "initial",
                 "remaining", "filled", "status", "coid", "ts", "stp", "post_only")

    def __init__(self, li: int, lprice: int, qty: int, order_id: str | None = None, owner: str | None = None,
                 side: Side | None = None, action: Action = Action.BUY) -> None:
        self.order_id, self.owner, self.side, self.action = order_id, owner, side or _SIDES[li], action
        self.li, self.lprice, self.initial, self.remaining, self.filled = li, lprice, qty, qty, 0
        self.status = OrderStatus.RESTING
        # Only owned orders use these; crowd chunks keep the defaults (cheap: set once per chunk).
        self.type, self.tif, self.ts = OrderType.LIMIT, _GTC, 0.0
        self.coid: str | None = None
        self.stp, self.post_only = SelfTradePrevention.TAKER_AT_CROSS, False

