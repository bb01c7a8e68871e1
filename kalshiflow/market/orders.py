"""The values the matching engine (matching.py) takes and hands back: :class:`OrderRequest` in;
:class:`OrderState`, :class:`Fill`, :class:`BookDelta`, :class:`OrderResult` out (frozen Structs);
plus the self-trade-prevention modes and deterministic ids. Shared by the exchange simulator, the
venue and the RL env, which need the values without the engine.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

import msgspec

from kalshiflow.market.prices import Money, Price, Qty
from kalshiflow.market.types import Action, OrderStatus, OrderType, Side, TimeInForce

__all__ = [
    "BookDelta", "Fill", "OrderRequest", "OrderResult", "OrderState", "SelfTradePrevention", "SequentialIds",
]


class SelfTradePrevention(StrEnum):
    TAKER_AT_CROSS = "taker_at_cross"  # incoming order cancelled where it would hit its owner
    MAKER = "maker"  # the owner's resting order is cancelled and matching goes on


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An order as Kalshi's v1 create takes it: give ``yes_price`` or ``no_price`` (or both,
    summing to $1). Market orders need no price: they are limits at the grid's most aggressive
    price, IOC (FOK if asked)."""

    side: Side
    action: Action
    count: Qty  # hundredths of a contract
    yes_price: Price | None = None
    no_price: Price | None = None
    type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    reduce_only: bool = False  # enforced by the venue (needs the position)
    client_order_id: str | None = None
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.TAKER_AT_CROSS


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """Snapshot of an order after an operation. ``price`` is in the order's ``side`` terms;
    ``ladder_price`` in ``ladder_side`` terms; ``yes_price`` + ``no_price`` = $1."""

    order_id: str
    owner: str
    ticker: str
    side: Side
    action: Action
    type: OrderType
    time_in_force: TimeInForce
    ladder_side: Side
    ladder_price: Price
    price: Price
    yes_price: Price
    no_price: Price
    initial_count: Qty
    remaining_count: Qty
    fill_count: Qty
    status: OrderStatus
    client_order_id: str | None
    created_ts: float
    post_only: bool = False


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One trade. Crowd (replay) parties have ``None`` order id and owner. The taker bought its
    ladder side (``taker_outcome_side``), the maker the other; each paid that side's price.
    Fees and post-trade positions are filled in by the venue (0 / None from the bare engine)."""

    trade_id: str
    ticker: str
    taker_order_id: str | None
    maker_order_id: str | None
    taker_owner: str | None
    maker_owner: str | None
    yes_price: Price
    no_price: Price
    count: Qty
    taker_side: Side  # as the taker submitted it (sell YES -> side YES, action SELL)
    taker_action: Action
    maker_side: Side
    maker_action: Action
    taker_outcome_side: Side  # the side the taker ends up buying (its ladder)
    ts: float
    taker_fee: Money = Money(0)
    maker_fee: Money = Money(0)
    taker_position: Qty | None = None  # party's signed position after this fill
    maker_position: Qty | None = None

    @property
    def maker_outcome_side(self) -> Side:
        return self.taker_outcome_side.other

    def price_paid(self, is_taker: bool) -> Price:
        """Per-contract price the party paid for the side it bought."""
        bought = self.taker_outcome_side if is_taker else self.taker_outcome_side.other
        return self.yes_price if bought is Side.YES else self.no_price


class BookDelta(msgspec.Struct, frozen=True):
    side: Side  # ladder
    price: Price  # in that ladder's terms
    delta: Qty  # signed, never 0
    size: Qty  # resulting size at the level


class OrderResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of a submission or a replay event. ``error`` set = rejected, nothing changed.
    ``makers``: final state of every resting order this operation filled or cancelled (once
    each). ``cancel_reason``: why the order ended cancelled without an error."""

    order: OrderState | None = None
    fills: tuple[Fill, ...] = ()
    deltas: tuple[BookDelta, ...] = ()
    makers: tuple[OrderState, ...] = ()
    error: str | None = None
    message: str = ""
    cancel_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class SequentialIds:
    """Deterministic UUID-formatted ids (seeded), so replays produce identical ids."""

    __slots__ = ("_prefix", "_n")

    def __init__(self, seed: int = 0) -> None:
        # High 64 bits = seed, low 64 = counter; formatted directly (str(uuid.UUID) is 5x slower).
        head = str(uuid.UUID(int=(seed & 0xFFFFFFFFFFFFFFFF) << 64))
        self._prefix, self._n = head[:19], 0

    def __call__(self) -> str:
        self._n = n = self._n + 1
        return f"{self._prefix}{(n >> 48) & 0xFFFF:04x}-{n & 0xFFFFFFFFFFFF:012x}"
