"""The discrete action table, its feasibility mask and action -> order mapping (env AND live trader).

Actions (``ActionTable(sizes=(1, 5, 10))`` -> 26 actions, ids stable for a given ``sizes``):

    0 hold                     do nothing (resting orders stay)
    1 cancel_all               cancel every resting order in this market
    then, intent-major, style, size-minor:
    buy_yes_{take|join}_{n}    open/increase YES
    buy_no_{take|join}_{n}     open/increase NO
    sell_yes_{take|join}_{n}   reduce a YES holding (reduce_only; masked when no YES is held)
    sell_no_{take|join}_{n}    reduce a NO holding

Selling from flat does not exist here: on Kalshi "sell YES" without YES is buying NO at 1 - p,
which ``buy_no`` already is (prior-system-lessons §8.1: treating it as income was the exploit).

Pricing, from the book the agent saw when it decided (the order arrives after a latency, so the
book may have moved; the limit price protects it):
- take: limit at the touch (buy YES at the YES ask = 1 - best NO bid), immediate-or-cancel: it
  fills what is there at that price or better and never rests.
- join: one tick passive: improve the own ladder's best bid by one tick if the spread allows,
  else join it; post-only good-till-cancelled, so a join never takes (rejected if it would).
A sell is a reduce-only buy of the other ladder at the same ladder price, so "sell YES take" =
"hit the YES bid" and "sell YES join" = "improve the YES ask by a tick".

Masked (infeasible): any order while the book is invalid/stale or the market is not trading; a
take with no opposite liquidity, a join with no own-side bid to peg to; a buy whose collateral +
worst-case fee exceeds available cash (the Venue's rule, kalshiflow.market.venue) or that would
push the side's exposure (holding + resting + size) past ``max_position``; a sell with nothing
left to sell (holding minus what older resting orders already claim); a join while
``max_open_orders`` orders already rest (a risk limit that also bounds the per-step cost of the
venue's collateral recomputation); cancel_all with no orders.

Everything works on integers in :mod:`kalshiflow.market.prices` units.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import msgspec

from kalshiflow.market.fees import FeeCalculator
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import PRICE_SCALE, QTY_SCALE, PriceGrid, Qty
from kalshiflow.market.types import Action, Side, TimeInForce

__all__ = [
    "CANCEL_ALL", "DEFAULT_SIZES", "AccountView", "ActionKind", "ActionSpec", "ActionTable", "CancelAll",
    "ladder_prices",
]

S = PRICE_SCALE
DEFAULT_SIZES: tuple[int, ...] = (1, 5, 10)


class ActionKind(IntEnum):
    HOLD = 0
    CANCEL_ALL = 1
    BUY = 2
    SELL = 3


class ActionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the table. ``ladder`` is the bid ladder the order rests on (0 YES, 1 NO)."""

    id: int
    name: str
    kind: ActionKind
    side: Side | None = None  # the outcome side named by the action (buy_no -> NO, sell_yes -> YES)
    style: Literal["take", "join"] | None = None
    size: int = 0  # whole contracts
    ladder: int = -1


class CancelAll(msgspec.Struct, frozen=True):
    """The request of ``cancel_all``: cancel every resting order of the account in the market."""


CANCEL_ALL = CancelAll()


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy may know about its own account in one market (exact integers).

    ``orders``: resting orders oldest first as (ladder 0=YES/1=NO, ladder price ticks, remaining
    Qty) — the env reads them from the matching engine, the live trader from its order tracker.
    ``reference_cash``: the capital features are scaled by (the episode's / session's start cash).
    """

    position: int = 0  # signed Qty: + long YES, - long NO
    cost: int = 0  # Money paid for the contracts held (fees excluded)
    cash: int = 0  # Money, reserved collateral included
    available: int = 0  # Money free for new orders
    reference_cash: int = 1
    orders: tuple[tuple[int, int, int], ...] = ()


def ladder_prices(yes_bid: int, no_bid: int, grid: PriceGrid) -> tuple[int, int, int, int]:
    """(take YES-ladder, take NO-ladder, join YES-ladder, join NO-ladder) prices; 0 = unavailable.

    ``yes_bid``/``no_bid``: best bids in own-leg ticks, 0 when the ladder is empty. Taking on the
    YES ladder pays the YES ask (1 - best NO bid); joining improves the best YES bid by a tick
    unless that would reach the ask (then it joins the bid).
    """
    take0 = S - no_bid if no_bid else 0
    take1 = S - yes_bid if yes_bid else 0
    return take0, take1, _join(yes_bid, take0, grid), _join(no_bid, take1, grid)


def _join(bid: int, ask: int, grid: PriceGrid) -> int:
    if not bid:
        return 0
    up = grid.tick_above(bid)
    if up is None or (ask and up >= ask):
        return bid
    return up


class ActionTable:
    """The action table for one ``sizes`` tuple; shared by the env, baselines and live trader."""

    def __init__(self, sizes: tuple[int, ...] = DEFAULT_SIZES) -> None:
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
            raise ValueError(f"sizes must be positive whole contracts, got {sizes!r}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"sizes must be distinct, got {sizes!r}")
        self.sizes = tuple(sizes)
        specs = [ActionSpec(id=0, name="hold", kind=ActionKind.HOLD),
                 ActionSpec(id=1, name="cancel_all", kind=ActionKind.CANCEL_ALL)]
        # (kind, side, ladder): buying YES rests on the YES ladder; selling YES on the NO ladder.
        intents = ((ActionKind.BUY, Side.YES, 0), (ActionKind.BUY, Side.NO, 1),
                   (ActionKind.SELL, Side.YES, 1), (ActionKind.SELL, Side.NO, 0))
        for kind, side, ladder in intents:
            for style in ("take", "join"):
                for size in self.sizes:
                    name = f"{kind.name.lower()}_{side.value}_{style}_{size}"
                    specs.append(ActionSpec(id=len(specs), name=name, kind=kind, side=side,
                                            style=style, size=size, ladder=ladder))  # type: ignore[arg-type]
        self.specs: tuple[ActionSpec, ...] = tuple(specs)
        self.n = len(specs)
        self.names: tuple[str, ...] = tuple(s.name for s in specs)
        self._by_name = {s.name: s.id for s in specs}
        # Hot-path form of the specs: (kind, ladder, is_take, size Qty), and the order actions
        # grouped by (kind, ladder, style) with sizes ascending, for the mask.
        self._rows = [(int(s.kind), s.ladder, s.style == "take", s.size * QTY_SCALE) for s in specs]
        groups: dict[tuple[int, int, bool], list[tuple[int, int]]] = {}
        for i, (k, li, is_take, size) in enumerate(self._rows):
            if k >= ActionKind.BUY:
                groups.setdefault((k, li, is_take), []).append((i, size))
        self._groups = [(k == ActionKind.SELL, li, t, sorted(m, key=lambda x: x[1]))
                        for (k, li, t), m in groups.items()]
        self._fee1: tuple[FeeCalculator, int] | None = None  # (calculator, its fee1 in mask)
        self._lp_grid: PriceGrid | None = None  # ladder_prices memo of this grid: (yes, no) -> prices
        self._lp: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    def index(self, name: str) -> int:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown action {name!r}; known: {', '.join(self.names)}") from None

    def describe(self) -> list[str]:
        """Stable description of the table (part of the schema hash)."""
        return list(self.names)

    # ------------------------------------------------------------------ mask

    def mask(self, yes_bid: int, no_bid: int, acct: AccountView, *, tradable: bool, grid: PriceGrid,
             fees: FeeCalculator, max_position: int, max_open_orders: int = 4) -> list[float]:
        """1.0 = feasible, 0.0 = masked, one per action (see the module docstring).

        ``tradable``: the book is valid, fresh and the market open (the caller decides staleness).
        ``max_position``: cap in Qty per side (holding + resting + size). ``max_open_orders``:
        joins (which rest) are masked once this many orders rest; takes never rest.
        """
        orders = acct.orders
        out = [1.0, 1.0 if orders else 0.0] + [0.0] * (self.n - 2)
        if not tradable:
            return out
        pos = acct.position
        caps = [-pos if pos < 0 else 0, pos if pos > 0 else 0]  # nettable holding per ladder
        resting = [0, 0]
        for li, _lp, rem in orders:  # oldest first claim the holding, as the Venue does
            resting[li] += rem
            caps[li] -= rem if rem < caps[li] else caps[li]
        if grid is not self._lp_grid:
            self._lp_grid, self._lp = grid, {}
        lps = self._lp.get((yes_bid, no_bid))
        if lps is None:
            if len(self._lp) > 65536:
                self._lp.clear()
            lps = self._lp[(yes_bid, no_bid)] = ladder_prices(yes_bid, no_bid, grid)
        take0, take1, join0, join1 = lps
        prices = ((take0, join0), (take1, join1))
        held = (pos, -pos)  # holding of the side each ladder buys (negative: long the other side)
        available = acct.available
        can_rest = len(orders) < max_open_orders
        memo = self._fee1
        if memo is None or memo[0] is not fees:  # fee1 >= per-contract fee at any price
            memo = self._fee1 = (fees, fees.money(fees.max_units(S // 2, QTY_SCALE)))
        fee1 = memo[1]
        for is_sell, li, is_take, members in self._groups:
            lp = prices[li][0 if is_take else 1]
            if not lp or not (is_take or can_rest):
                continue
            cap = caps[li]
            for i, size in members:
                if is_sell:
                    if not cap:
                        break
                    count = size if size < cap else cap
                    need = 0
                else:
                    if held[li] + resting[li] + size > max_position:
                        break  # sizes ascend: larger ones fail too
                    count = size
                    need = lp * (size - (size if size < cap else cap))
                # A cheap sufficient bound first; the Venue's exact formula only near the limit.
                if need + fee1 * (count // QTY_SCALE + 1) <= available or (
                        need + fees.money(fees.max_units(lp, count)) <= available):
                    out[i] = 1.0
        return out

    # ------------------------------------------------------------------ requests

    def request(self, action: int, yes_bid: int, no_bid: int, grid: PriceGrid,
                client_order_id: str | None = None) -> OrderRequest | CancelAll | None:
        """The order an action sends given the book top it was chosen on (None: nothing to send).

        Call only with an action the mask allowed; an unpriceable action returns None.
        """
        kind, li, is_take, size = self._rows[action]
        if kind == ActionKind.HOLD:
            return None
        if kind == ActionKind.CANCEL_ALL:
            return CANCEL_ALL
        take0, take1, join0, join1 = ladder_prices(yes_bid, no_bid, grid)
        lp = (take0 if li == 0 else take1) if is_take else (join0 if li == 0 else join1)
        if not lp:
            return None
        tif = TimeInForce.IOC if is_take else TimeInForce.GTC
        if kind == ActionKind.BUY:
            side, act, own = (Side.YES if li == 0 else Side.NO), Action.BUY, lp
        else:  # selling side X rests on the other ladder at lp = 1 - (X's price)
            side, act, own = (Side.NO if li == 0 else Side.YES), Action.SELL, S - lp
        price_field = {"yes_price": own} if side is Side.YES else {"no_price": own}
        return OrderRequest(side=side, action=act, count=Qty(size), time_in_force=tif,
                            post_only=not is_take, reduce_only=kind == ActionKind.SELL,
                            client_order_id=client_order_id, **price_field)  # type: ignore[arg-type]
