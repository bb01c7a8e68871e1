"""Binary-contract accounting for one account across markets. Pure, exact integers, no I/O.

Kalshi nets YES and NO holdings of one market into one signed position (+ = long YES, - = long
NO). Every fill is "buy ``bought_side`` at ``price``" — selling YES *is* buying NO at 1 - p, which
costs 1 - p (prior-system-lessons §8.1: treating a sale from flat as income manufactured money):

- the buyer pays ``price x qty + fee`` in cash;
- contracts that meet an opposite holding net: each YES+NO pair pays $1 back at once and both
  contracts disappear (realized PnL of the pair = $1 - cost of the held contract - price paid);
- the rest opens (or grows) a position on the bought side at ``price``.

So buying NO while long YES at cost c, for q: cash moves by 1 - q (= selling YES at p = 1 - q
for p) and the realized PnL is p - c. There is no path by which a fill adds value: a fill
exchanges cash for contracts at the price paid.

Units: Money = micro-dollars, Qty = hundredths of a contract, Price = ticks of $0.0001, so
price x qty is exact money. ``cost`` of a position is what was paid for the contracts still held
(excluding fees, which accumulate separately in ``fees_paid``); when part of a position is netted
the removed cost is the pro-rata share, rounded down, and the remainder stays with the contracts
left, so no micro-dollar is lost or created.

Collateral: positions are fully collateralised and cash never goes negative. Resting orders
reserve cash (``reserve``/``release``); ``available_cash`` = cash - reserved is what a new order
may use. The venue decides how much to reserve; this class only refuses to overdraw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kalshiflow.market.prices import PRICE_SCALE, Money, Price, Qty
from kalshiflow.market.types import Side

__all__ = ["BidSource", "InsufficientFunds", "Portfolio", "Position"]


class InsufficientFunds(ValueError):
    """An operation would make cash or available cash negative (an accounting invariant)."""


class BidSource(Protocol):
    """Anything that can say the best bid of a ladder (an OrderBook, or a venue's marking view)."""

    def best_bid(self, side: Side) -> int | None: ...


class Position:
    """One market's holding. ``qty`` > 0 long YES, < 0 long NO."""

    __slots__ = ("ticker", "qty", "cost", "realized_pnl", "fees_paid", "volume", "traded", "settled")

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self.qty: Qty = Qty(0)
        self.cost: Money = Money(0)  # paid for the contracts still held, fees excluded
        self.realized_pnl: Money = Money(0)  # fees excluded; see Portfolio.net_realized_pnl
        self.fees_paid: Money = Money(0)
        self.volume: Qty = Qty(0)  # contracts bought, both sides
        self.traded: Money = Money(0)  # cash paid for them (price x qty), Kalshi's total_traded
        self.settled = False

    @property
    def side(self) -> Side | None:
        return Side.YES if self.qty > 0 else Side.NO if self.qty < 0 else None

    def to_builtins(self) -> dict[str, Any]:
        return {
            "qty": self.qty,
            "cost": self.cost,
            "realized_pnl": self.realized_pnl,
            "fees_paid": self.fees_paid,
            "volume": self.volume,
            "traded": self.traded,
            "settled": self.settled,
        }

    def __repr__(self) -> str:
        return f"Position({self.ticker!r}, qty={self.qty}, cost={self.cost}, realized={self.realized_pnl})"


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, was {value!r}")
    return value


class Portfolio:
    """Cash, reservations and positions of one account."""

    __slots__ = ("owner", "cash", "reserved", "positions", "starting_cash")

    def __init__(self, cash: Money, owner: str = "") -> None:
        if _int(cash, "cash") < 0:
            raise InsufficientFunds(f"starting cash {cash} is negative")
        self.owner = owner
        self.cash: Money = cash
        self.starting_cash: Money = cash
        self.reserved: Money = Money(0)
        self.positions: dict[str, Position] = {}

    # ------------------------------------------------------------------ cash and collateral

    @property
    def available_cash(self) -> Money:
        return Money(self.cash - self.reserved)

    def reserve(self, amount: Money) -> None:
        if amount < 0:
            raise ValueError(f"cannot reserve a negative amount {amount}")
        if amount > self.cash - self.reserved:
            raise InsufficientFunds(
                f"{self.owner}: reserve {amount} exceeds available cash {self.available_cash}"
            )
        self.reserved = Money(self.reserved + amount)

    def release(self, amount: Money) -> None:
        if amount < 0 or amount > self.reserved:
            raise ValueError(f"{self.owner}: cannot release {amount} of {self.reserved} reserved")
        self.reserved = Money(self.reserved - amount)

    # ------------------------------------------------------------------ trading

    def position(self, ticker: str) -> Qty:
        pos = self.positions.get(ticker)
        return pos.qty if pos is not None else Qty(0)

    def get(self, ticker: str) -> Position:
        pos = self.positions.get(ticker)
        if pos is None:
            pos = self.positions[ticker] = Position(ticker)
        return pos

    def fill_cash_delta(self, ticker: str, bought_side: Side, price: int, qty: int, fee: int) -> Money:
        """Cash change ``apply_fill`` would make (negative = cost), without applying it."""
        held = self.position(ticker)
        opposite = -held if bought_side is Side.YES else held  # contracts of the other side held
        netted = min(qty, opposite) if opposite > 0 else 0
        return Money(netted * PRICE_SCALE - price * qty - fee)

    def apply_fill(self, ticker: str, bought_side: Side, price: int, qty: int, fee: int) -> Money:
        """Book buying ``qty`` of ``bought_side`` at ``price`` (that side's own price) plus ``fee``.

        Returns the realized PnL of the fill (netted pairs only, fees excluded). Raises
        InsufficientFunds, changing nothing, if cash would go negative — the venue's collateral
        check makes that impossible, so it signals a bug, never a normal outcome.
        """
        if qty <= 0 or not 0 < price < PRICE_SCALE or fee < 0:
            raise ValueError(f"bad fill {bought_side} {qty} @ {price} fee {fee}")
        delta = self.fill_cash_delta(ticker, bought_side, price, qty, fee)
        if self.cash + delta < 0:
            raise InsufficientFunds(f"{self.owner}: fill {ticker} costs {-delta}, cash {self.cash}")
        pos = self.get(ticker)
        sign = 1 if bought_side is Side.YES else -1
        held = pos.qty * sign  # > 0: already long the bought side; < 0: long the other side
        realized = 0
        opened = qty
        if held < 0:
            netted = min(qty, -held)
            removed_cost = pos.cost * netted // -held  # pro-rata, floor; remainder stays
            realized = netted * PRICE_SCALE - removed_cost - price * netted
            pos.cost = Money(pos.cost - removed_cost)
            pos.qty = Qty(pos.qty + sign * netted)
            opened = qty - netted
        if opened:
            pos.cost = Money(pos.cost + price * opened)
            pos.qty = Qty(pos.qty + sign * opened)
        pos.realized_pnl = Money(pos.realized_pnl + realized)
        pos.fees_paid = Money(pos.fees_paid + fee)
        pos.volume = Qty(pos.volume + qty)
        pos.traded = Money(pos.traded + price * qty)
        pos.settled = False
        self.cash = Money(self.cash + delta)
        return Money(realized)

    def settle(self, ticker: str, result: bool | int) -> Money:
        """Close the position at settlement; return the payout.

        ``result``: True = YES wins ($1 per YES), False = NO wins, or an int = the scalar
        settlement value of one YES contract in price ticks (a NO contract gets 1 - value).
        """
        if isinstance(result, bool):
            value = PRICE_SCALE if result else 0
        else:
            value = _int(result, "settlement value")
            if not 0 <= value <= PRICE_SCALE:
                raise ValueError(f"settlement value {value} outside [0, {PRICE_SCALE}]")
        pos = self.positions.get(ticker)
        if pos is None:
            return Money(0)
        payout = pos.qty * value if pos.qty > 0 else -pos.qty * (PRICE_SCALE - value)
        pos.realized_pnl = Money(pos.realized_pnl + payout - pos.cost)
        pos.qty = Qty(0)
        pos.cost = Money(0)
        pos.settled = True
        self.cash = Money(self.cash + payout)
        return Money(payout)

    # ------------------------------------------------------------------ valuation

    def mark_price(self, ticker: str, book: BidSource | None) -> Price:
        """Price per contract the holding is marked at: best bid of the held side, 0 if none."""
        pos = self.positions.get(ticker)
        if pos is None or not pos.qty or book is None:
            return Price(0)
        bid = book.best_bid(Side.YES if pos.qty > 0 else Side.NO)
        return Price(bid or 0)

    def market_value(self, ticker: str, book: BidSource | None) -> Money:
        """Liquidation value at the bid of the held side (YES at the YES bid, NO at the NO bid).

        A missing bid (or book) marks at 0: conservative, never flattering.
        """
        return Money(abs(self.position(ticker)) * self.mark_price(ticker, book))

    def unrealized_pnl(self, ticker: str, book: BidSource | None) -> Money:
        pos = self.positions.get(ticker)
        return Money(0) if pos is None else Money(self.market_value(ticker, book) - pos.cost)

    def total_value(self, books: Mapping[str, BidSource]) -> Money:
        """Cash (reserved included: it is still ours) + every position marked at its bid."""
        return Money(self.cash + sum(self.market_value(t, books.get(t)) for t in self.positions))

    @property
    def realized_pnl(self) -> Money:
        return Money(sum(p.realized_pnl for p in self.positions.values()))

    @property
    def fees_paid(self) -> Money:
        return Money(sum(p.fees_paid for p in self.positions.values()))

    @property
    def net_realized_pnl(self) -> Money:
        return Money(self.realized_pnl - self.fees_paid)

    def cost_basis(self) -> Money:
        return Money(sum(p.cost for p in self.positions.values()))

    # ------------------------------------------------------------------ persistence / reconciliation

    def snapshot(self) -> dict[str, Any]:
        """Plain builtins (ints, strs, bools, dicts): JSON/msgpack-able as is."""
        return {
            "owner": self.owner,
            "cash": self.cash,
            "starting_cash": self.starting_cash,
            "reserved": self.reserved,
            "positions": {t: p.to_builtins() for t, p in self.positions.items()},
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Portfolio:
        """Inverse of ``snapshot``; validates every field."""
        pf = cls(Money(_int(data["cash"], "cash")), str(data.get("owner", "")))
        pf.starting_cash = Money(_int(data.get("starting_cash", pf.cash), "starting_cash"))
        reserved = _int(data.get("reserved", 0), "reserved")
        if not 0 <= reserved <= pf.cash:
            raise InsufficientFunds(f"reserved {reserved} outside [0, cash {pf.cash}]")
        pf.reserved = Money(reserved)
        for ticker, raw in dict(data.get("positions", {})).items():
            pos = pf.get(str(ticker))
            pos.qty = Qty(_int(raw["qty"], "qty"))
            pos.cost = Money(_int(raw["cost"], "cost"))
            pos.realized_pnl = Money(_int(raw.get("realized_pnl", 0), "realized_pnl"))
            pos.fees_paid = Money(_int(raw.get("fees_paid", 0), "fees_paid"))
            pos.volume = Qty(_int(raw.get("volume", 0), "volume"))
            pos.traded = Money(_int(raw.get("traded", 0), "traded"))
            pos.settled = bool(raw.get("settled", False))
            if pos.cost < 0 or pos.fees_paid < 0 or pos.volume < 0 or (pos.cost and not pos.qty):
                raise ValueError(f"inconsistent position {ticker!r}: {raw!r}")
        return pf

    def apply_position_override(
        self,
        ticker: str,
        qty: int,
        cost: int,
        *,
        realized_pnl: int | None = None,
        fees_paid: int | None = None,
    ) -> Qty:
        """Replace our view of one market with the exchange's (reconciliation); return qty - old.

        ``cost`` is Kalshi's market exposure (what the held contracts cost). Cash is untouched:
        reconcile it separately with ``apply_cash_override`` from the exchange's balance.
        """
        qty = _int(qty, "qty")
        cost = _int(cost, "cost")
        if cost < 0 or (cost and not qty):
            raise ValueError(f"inconsistent override {ticker!r}: qty {qty}, cost {cost}")
        pos = self.get(ticker)
        diff = Qty(qty - pos.qty)
        pos.qty, pos.cost = Qty(qty), Money(cost)
        if realized_pnl is not None:
            pos.realized_pnl = Money(_int(realized_pnl, "realized_pnl"))
        if fees_paid is not None:
            pos.fees_paid = Money(_int(fees_paid, "fees_paid"))
        return diff

    def apply_cash_override(self, cash: int) -> Money:
        """Set cash to the exchange's balance; return the change. Reservations are kept."""
        cash = _int(cash, "cash")
        if cash < 0:
            raise InsufficientFunds(f"{self.owner}: balance override {cash} is negative")
        diff = Money(cash - self.cash)
        self.cash = Money(cash)
        return diff

    def __repr__(self) -> str:
        open_ = {t: p.qty for t, p in self.positions.items() if p.qty}
        return f"Portfolio({self.owner!r}, cash={self.cash}, reserved={self.reserved}, positions={open_})"
