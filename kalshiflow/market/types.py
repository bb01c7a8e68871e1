"""Enums shared by the book, the matching engine, the portfolio and the wire protocol.

Direction vocabulary (Kalshi): an order has an outcome ``side`` (yes/no) and an ``action``
(buy/sell). Books hold bids only, one ladder per side. Selling YES is buying NO at 1 - p, so
every order rests on exactly one ladder: ``bid_side(side, action)``.
"""

from __future__ import annotations

from enum import Enum


class Side(str, Enum):
    YES = "yes"
    NO = "no"

    @property
    def other(self) -> Side:
        return Side.NO if self is Side.YES else Side.YES


class Action(str, Enum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(str, Enum):
    GTC = "good_till_canceled"
    IOC = "immediate_or_cancel"
    FOK = "fill_or_kill"


class OrderType(str, Enum):
    LIMIT = "limit"
    MARKET = "market"


class OrderStatus(str, Enum):
    RESTING = "resting"
    CANCELED = "canceled"
    EXECUTED = "executed"


def bid_side(side: Side, action: Action) -> Side:
    """The ladder an order rests on: buy YES / sell NO -> YES bids; buy NO / sell YES -> NO bids."""
    if action is Action.BUY:
        return side
    return side.other
