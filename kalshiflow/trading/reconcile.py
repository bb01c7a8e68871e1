"""Position reconciliation: the local ledger, the exchange's truth, and the diff between them.

Pure code, no I/O (the PositionReconciler actor owns the sockets). The exchange is the source of
truth; the local ledger exists so the Trader sees fills within milliseconds instead of a REST
round trip later, and so that every disagreement is *noticed*, counted and explained instead of
silently overwritten (prior-system-lessons §8.7, §10.13).

Fills. A fill is "buy ``bought_side`` at that side's own price": a NO fill (or a YES sale, which
buys NO) is priced at the NO price, ``1 - yes_price``. The prior system booked NO fills at the YES
price; :class:`TradeFill` carries ``bought_price`` computed once, here, and nothing else is used.
Kalshi's ``post_position`` (signed position after the fill) makes fill application
self-checking: the position before the fill must be ``post - signed count``; if the ledger
disagrees the fill still moves cash, the position is set to ``post`` and a FILL_POSITION
discrepancy asks for a REST reconcile.

Cash. ``Portfolio.cash`` is total cash *including* collateral held by resting orders; Kalshi's
``balance`` excludes it. The collateral follows the exchange's rule (:func:`estimate_reserve`), so
``available_cash`` equals ``balance`` to within fee rounding.

Snapshots. A REST body without the ``market_positions`` key is a schema error, never "no
positions" (the prior system read a non-existent ``positions`` key and deleted every local
position each minute): see :func:`decode_positions_strict`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TypeVar

import msgspec

from kalshiflow.market.fees import DEFAULT_FEES, FeeSchedule, max_order_fee
from kalshiflow.market.portfolio import InsufficientFunds, Portfolio
from kalshiflow.market.prices import PRICE_SCALE, Money, Qty
from kalshiflow.market.types import OrderStatus, Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.errors import DecodeError
from kalshiflow.trading import (
    Discrepancy,
    DiscrepancyKind,
    OpenOrder,
    PortfolioView,
    PositionSummary,
    TradeFill,
)

__all__ = [
    "Correction", "Discrepancy", "DiscrepancyKind", "DropOrder", "ExchangeSnapshot", "FillOutcome",
    "Ledger", "OpenOrder", "PortfolioView", "PositionSummary", "ReconcileResult", "SetCash",
    "SetOrder", "SetPosition", "SchemaError", "TradeFill", "decode_balance_strict",
    "decode_orders_strict", "decode_positions_strict", "estimate_reserve", "reconcile",
]


_K = TypeVar("_K")
_V = TypeVar("_V")


class SchemaError(DecodeError):
    """An exchange body that lacks a key the API spec requires: never read as 'empty'."""


class ExchangeSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    positions: tuple[rm.MarketPosition, ...]
    orders: tuple[rm.Order, ...]  # resting orders
    balance: int  # available cash (Kalshi ``balance``), micro-dollars
    portfolio_value: int | None = None
    fetched_at: float = 0.0


class SetPosition(msgspec.Struct, frozen=True, kw_only=True, tag="set_position"):
    ticker: str
    qty: int
    cost: int
    realized_pnl: int | None = None
    fees_paid: int | None = None


class SetOrder(msgspec.Struct, frozen=True, kw_only=True, tag="set_order"):
    order: OpenOrder


class DropOrder(msgspec.Struct, frozen=True, kw_only=True, tag="drop_order"):
    order_id: str


class SetCash(msgspec.Struct, frozen=True, kw_only=True, tag="set_cash"):
    cash: int  # total cash: the exchange's balance plus the collateral of its resting orders


Correction = SetPosition | SetOrder | DropOrder | SetCash


class ReconcileResult(msgspec.Struct, frozen=True, kw_only=True):
    discrepancies: tuple[Discrepancy, ...]
    corrections: tuple[Correction, ...]
    deferred: tuple[str, ...] = ()  # tickers left for the next round (changed while fetching)


class FillOutcome(msgspec.Struct, frozen=True, kw_only=True):
    duplicate: bool = False
    realized: int = 0
    discrepancy: Discrepancy | None = None


# --------------------------------------------------------------------------- strict decoding


class _PositionsStrict(msgspec.Struct, frozen=True):
    market_positions: list[rm.MarketPositionWire]  # REQUIRED: absent is an error, not "no positions"
    event_positions: list[rm.EventPositionWire] | None = None
    cursor: str | None = ""


class _OrdersStrict(msgspec.Struct, frozen=True):
    orders: list[rm.OrderWire]
    cursor: str | None = ""


def _strict(data: bytes, typ: type, what: str) -> msgspec.Struct:
    try:
        return msgspec.json.decode(data, type=typ)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise SchemaError(f"{what}: {err}") from None


def decode_positions_strict(data: bytes) -> rm.PositionsPage:
    w = _strict(data, _PositionsStrict, "GET /portfolio/positions")
    assert isinstance(w, _PositionsStrict)
    page = rm.PositionsPageWire(market_positions=w.market_positions, event_positions=w.event_positions,
                                cursor=w.cursor)
    try:
        return rm.positions_from_wire(page)
    except ValueError as err:
        raise SchemaError(f"GET /portfolio/positions: {err}") from None


def decode_orders_strict(data: bytes) -> rm.OrdersPage:
    w = _strict(data, _OrdersStrict, "GET /portfolio/orders")
    assert isinstance(w, _OrdersStrict)
    try:
        return rm.OrdersPage(orders=tuple(rm.order_from_wire(o) for o in w.orders), cursor=w.cursor or "")
    except ValueError as err:
        raise SchemaError(f"GET /portfolio/orders: {err}") from None


def decode_balance_strict(data: bytes) -> rm.Balance:
    w = _strict(data, rm.BalanceWire, "GET /portfolio/balance")
    assert isinstance(w, rm.BalanceWire)
    if w.balance is None and w.balance_dollars is None:
        raise SchemaError("GET /portfolio/balance: no balance field (a missing balance is not $0)")
    return rm.balance_from_wire(w)


# --------------------------------------------------------------------------- collateral


def estimate_reserve(positions: Mapping[str, int], orders: Iterable[OpenOrder],
                     fees: FeeSchedule = DEFAULT_FEES) -> Money:
    """Collateral the exchange holds for resting orders (the rule kalshiflow.market.venue applies,
    which is Kalshi's documented one): per order, the contracts that would *open* exposure at the
    bought price, plus the order's worst-case fee. Older orders claim the nettable holding first."""
    caps: dict[str, list[int]] = {}
    total = 0
    for o in sorted(orders, key=lambda o: (o.created_ts, o.order_id)):
        pos = positions.get(o.ticker, 0)
        cap = caps.setdefault(o.ticker, [max(0, -pos), max(0, pos)])  # YES buys net a NO holding
        li = 0 if o.bought_side is Side.YES else 1
        net = min(o.remaining, cap[li])
        cap[li] -= net
        total += o.bought_price * (o.remaining - net) + max_order_fee(o.bought_price, o.remaining, fees)
    return Money(total)


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """The local view of one account: a :class:`Portfolio`, resting orders, fills seen."""

    def __init__(self, account: str = "", *, fees: FeeSchedule = DEFAULT_FEES, memory: int = 100_000) -> None:
        self.account = account
        self.fees = fees
        self.portfolio = Portfolio(Money(0), account)
        self.orders: dict[str, OpenOrder] = {}
        self.synced = False
        self.results: dict[str, int] = {}  # determined markets: YES settlement value (ticks)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()  # (trade_id, order_id)
        self._coids: OrderedDict[str, None] = OrderedDict()  # recently accounted client order ids
        self._filled: OrderedDict[str, int] = OrderedDict()  # order_id -> contracts filled (seen)
        self._memory = memory

    # ---------------------------------------------------------------- reading

    def position(self, ticker: str) -> int:
        return self.portfolio.position(ticker)

    def reserve(self) -> Money:
        qty = {t: p.qty for t, p in self.portfolio.positions.items()}
        return estimate_reserve(qty, self.orders.values(), self.fees)

    def view(self, now: float) -> PortfolioView:
        pf = self.portfolio
        positions = {}
        for t, p in pf.positions.items():
            if p.qty or p.cost or p.realized_pnl or p.fees_paid:
                avg = p.cost // abs(p.qty) if p.qty else 0  # micro-$ / hundredths = ticks
                positions[t] = PositionSummary(ticker=t, qty=p.qty, cost=p.cost, avg_price=avg,
                                               realized_pnl=p.realized_pnl, fees_paid=p.fees_paid,
                                               volume=p.volume)
        return PortfolioView(account=self.account, cash=pf.cash, reserved=pf.reserved,
                             available_cash=pf.available_cash, realized_pnl=pf.realized_pnl,
                             fees_paid=pf.fees_paid, positions=positions,
                             open_orders=tuple(self.orders.values()),
                             accounted_client_order_ids=frozenset(self._coids), synced=self.synced,
                             as_of=now)

    # ---------------------------------------------------------------- changes

    def _put(self, memo: OrderedDict[_K, _V], key: _K, value: _V) -> None:
        memo[key] = value  # bounded memory: the oldest entries go first
        memo.move_to_end(key)
        while len(memo) > self._memory:
            memo.popitem(last=False)

    def _remember(self, coid: str) -> None:
        if coid:
            self._put(self._coids, coid, None)

    def _sync_reserve(self) -> None:
        # Collateral is derived from state after every change (as the venue does), never tracked
        # incrementally, so it cannot drift.
        self.portfolio.reserved = Money(min(self.reserve(), self.portfolio.cash))

    def track_order(self, order: rm.Order | OpenOrder) -> None:
        """The Trader placed, changed or cancelled an order: keep resting ones, forget the rest."""
        if isinstance(order, rm.Order):
            resting = order.status is OrderStatus.RESTING and order.remaining_count > 0
            order = OpenOrder.from_order(order) if resting else msgspec.structs.replace(
                OpenOrder.from_order(order), remaining=0)
        order = self._net_of_fills(order)
        if order.remaining > 0:
            self.orders[order.order_id] = order
        else:
            self.orders.pop(order.order_id, None)
        self._remember(order.client_order_id)
        self._sync_reserve()

    def _net_of_fills(self, order: OpenOrder, new: int = 0) -> OpenOrder:
        """An order's remaining count given every fill of it seen so far. The Trader's create
        response and the WS fill of the same execution race; counting fills against the
        snapshot's own ``filled`` applies each exactly once, whichever comes first."""
        if not order.initial:
            return msgspec.structs.replace(order, remaining=max(0, order.remaining - new))
        left = order.initial - max(order.filled, self._filled.get(order.order_id, 0))
        return msgspec.structs.replace(order, remaining=max(0, min(order.remaining, left)))

    def apply_fill(self, fill: TradeFill, *, reflected: bool = False) -> FillOutcome:
        """Book one of our fills (idempotent by trade and order id). ``reflected``: an exchange
        snapshot loaded afterwards already holds its effects: remember it, change nothing."""
        key = (fill.trade_id, fill.order_id)
        if key in self._seen:
            return FillOutcome(duplicate=True)
        self._put(self._seen, key, None)
        self._put(self._filled, fill.order_id, self._filled.get(fill.order_id, 0) + fill.count)
        if reflected:
            self._remember(fill.client_order_id)
            return FillOutcome()
        pf, ticker, sign = self.portfolio, fill.ticker, (1 if fill.bought_side is Side.YES else -1)
        held = pf.position(ticker)
        post = fill.post_position
        before = post - sign * fill.count if post is not None else held
        # The cash effect depends only on the position before the fill (netted pairs pay $1 back).
        opposite = -before * sign
        netted = min(fill.count, opposite) if opposite > 0 else 0
        cash_delta = netted * PRICE_SCALE - fill.bought_price * fill.count - fill.fee
        realized, issue = 0, None
        if held == before:
            realized = self._book(fill)
        elif post is not None and held == post:
            # A market_position snapshot already carried this fill's position: only cash moves.
            pf.cash = Money(max(0, pf.cash + cash_delta))
        else:
            issue = Discrepancy(kind=DiscrepancyKind.FILL_POSITION, ticker=ticker, order_id=fill.order_id,
                                local=held, exchange=before,
                                detail=f"fill {fill.trade_id}: position before it should be {before}")
            realized = self._book(fill)
            assert post is not None
            pos = pf.get(ticker)
            same_side = pos.qty * post > 0
            cost = pos.cost * abs(post) // abs(pos.qty) if same_side else fill.bought_price * abs(post)
            pf.apply_position_override(ticker, post, cost if post else 0)
        order = self.orders.get(fill.order_id)
        if order is not None:
            order = self._net_of_fills(order, fill.count)
            if order.remaining > 0:
                self.orders[fill.order_id] = order
            else:
                del self.orders[fill.order_id]
            self._remember(order.client_order_id)
        self._remember(fill.client_order_id)
        self._sync_reserve()
        return FillOutcome(realized=realized, discrepancy=issue)

    def _book(self, fill: TradeFill) -> int:
        pf = self.portfolio
        try:
            return pf.apply_fill(fill.ticker, fill.bought_side, fill.bought_price, fill.count, fill.fee)
        except InsufficientFunds:
            # Local cash is behind the exchange (which just accepted this trade, so it had the
            # money). Book the contracts anyway; the next REST reconcile restores cash.
            pf.cash = Money(pf.cash + PRICE_SCALE * fill.count + fill.fee)
            realized = pf.apply_fill(fill.ticker, fill.bought_side, fill.bought_price, fill.count, fill.fee)
            pf.cash = Money(max(0, pf.cash - PRICE_SCALE * fill.count - fill.fee))
            return realized

    def determine(self, ticker: str, value: int) -> None:
        """The market's result is known (lifecycle ``determined``): YES is worth ``value`` ticks."""
        self.results[ticker] = value

    def settle_determined(self, ticker: str) -> int:
        """Pay out a determined market we still hold (the exchange does this at settlement, so it
        is bookkeeping, not a discrepancy); returns the payout."""
        if ticker not in self.results or not self.position(ticker):
            return 0
        payout = self.portfolio.settle(ticker, self.results[ticker])
        self._sync_reserve()
        return payout

    def apply_position(self, event: wd.PositionEvent) -> Discrepancy | None:
        """A WS ``market_position``: the exchange's own figures for one market, after the fills
        sent before it on the same connection. Differences are corrected and reported."""
        if event.position == 0:
            self.settle_determined(event.market_ticker)
        # $0.0001: the wire carries 4 decimals, fractional contracts can cost a micro-dollar more.
        issue = _diff_position(self.portfolio, event.market_ticker, event.position, event.position_cost,
                               event.realized_pnl, event.fees_paid, cost_tolerance=100)
        if issue is not None:
            self.apply([SetPosition(ticker=event.market_ticker, qty=event.position, cost=event.position_cost,
                                    realized_pnl=event.realized_pnl, fees_paid=event.fees_paid)])
        return issue

    def apply(self, corrections: Iterable[Correction]) -> None:
        cash: SetCash | None = None
        for c in corrections:
            if isinstance(c, SetPosition):
                cost = c.cost if c.qty else 0  # Kalshi may report exposure on a flat market
                self.portfolio.apply_position_override(c.ticker, c.qty, cost, realized_pnl=c.realized_pnl,
                                                       fees_paid=c.fees_paid)
            elif isinstance(c, SetOrder):
                self.orders[c.order.order_id] = self._net_of_fills(c.order)
                self._remember(c.order.client_order_id)
            elif isinstance(c, DropOrder):
                self.orders.pop(c.order_id, None)
            else:
                cash = c
        self.portfolio.reserved = Money(0)
        if cash is not None:
            self.portfolio.apply_cash_override(cash.cash)
        self._sync_reserve()


def _diff_position(pf: Portfolio, ticker: str, qty: int, cost: int, realized: int | None,
                   fees: int | None, *, cost_tolerance: int) -> Discrepancy | None:
    pos = pf.positions.get(ticker)
    lq, lc = (pos.qty, pos.cost) if pos is not None else (Qty(0), Money(0))
    if lq == 0 and qty != 0:
        return Discrepancy(kind=DiscrepancyKind.MISSING_POSITION, ticker=ticker, local=lq, exchange=qty)
    if lq != 0 and qty == 0:
        return Discrepancy(kind=DiscrepancyKind.PHANTOM_POSITION, ticker=ticker, local=lq, exchange=qty)
    if lq != qty:
        return Discrepancy(kind=DiscrepancyKind.WRONG_QTY, ticker=ticker, local=lq, exchange=qty)
    if qty and abs(lc - cost) > cost_tolerance:
        return Discrepancy(kind=DiscrepancyKind.WRONG_COST, ticker=ticker, local=lc, exchange=cost,
                           detail="cost")
    for name, mine, theirs in (("realized_pnl", pos.realized_pnl if pos else 0, realized),
                               ("fees_paid", pos.fees_paid if pos else 0, fees)):
        if theirs is not None and abs(mine - theirs) > cost_tolerance:
            return Discrepancy(kind=DiscrepancyKind.WRONG_COST, ticker=ticker, local=mine, exchange=theirs,
                               detail=name)
    return None


def reconcile(
    local: Ledger,
    snap: ExchangeSnapshot,
    *,
    skip_tickers: frozenset[str] = frozenset(),
    skip_orders: frozenset[str] = frozenset(),
    skip_balance: bool = False,
    cost_tolerance: int = 100,
    balance_tolerance: int = 10_000,
    order_grace_s: float = 0.0,
) -> ReconcileResult:
    """Diff ``local`` against the exchange's snapshot; the corrections make local equal the truth.

    ``skip_*``: markets, orders and cash that changed locally (fills, market_position events,
    tracked orders) while the snapshot was being fetched: the snapshot may predate them, so
    correcting them now would undo a newer truth. They are compared again next round.
    ``cost_tolerance`` (micro-$): Kalshi reports money to $0.0001. ``balance_tolerance``: plus
    $0.01 per resting order, the fee rounding the collateral estimate may miss; beyond it a cash
    difference is BALANCE_DRIFT, below it the exchange's figure is taken without a report.
    ``order_grace_s``: an unknown order younger than this (by ``created_time``, against
    ``snap.fetched_at``) is left for the next round: its creator's report may be on its way.
    """
    issues: list[Discrepancy] = []
    fixes: list[Correction] = []
    deferred: set[str] = set()
    pf = local.portfolio
    exchange = {p.ticker: p for p in snap.positions}
    held_locally = [t for t, p in pf.positions.items() if p.qty]
    if not snap.positions and held_locally and (snap.portfolio_value or 0) > 0:
        # Positions are worth money yet none are listed: a broken answer, not a flat account.
        issues.append(Discrepancy(kind=DiscrepancyKind.SNAPSHOT_REJECTED, exchange=snap.portfolio_value,
                                  detail="no market_positions but portfolio_value > 0; positions kept"))
        exchange_tickers: list[str] = []
        deferred.update(held_locally)
    else:
        exchange_tickers = list(exchange) + [t for t in held_locally if t not in exchange]
    for ticker in exchange_tickers:
        if ticker in skip_tickers:
            deferred.add(ticker)
            continue
        e = exchange.get(ticker)
        qty, cost = (e.position, e.market_exposure) if e is not None else (0, 0)
        realized, fees = (e.realized_pnl, e.fees_paid) if e is not None else (None, None)
        issue = _diff_position(pf, ticker, qty, cost, realized, fees, cost_tolerance=cost_tolerance)
        if issue is not None:
            issues.append(issue)
            fixes.append(SetPosition(ticker=ticker, qty=qty, cost=cost, realized_pnl=realized,
                                     fees_paid=fees))
    resting = {o.order_id: o for o in snap.orders
               if o.status is OrderStatus.RESTING and o.remaining_count > 0}
    for oid, o in resting.items():
        mine = local.orders.get(oid)
        if oid in skip_orders or o.ticker in skip_tickers:
            continue
        theirs = OpenOrder.from_order(o)
        if mine is None and order_grace_s > 0 and snap.fetched_at - theirs.created_ts < order_grace_s:
            continue
        if mine is None:
            issues.append(Discrepancy(kind=DiscrepancyKind.UNKNOWN_ORDER, ticker=o.ticker, order_id=oid,
                                      exchange=o.remaining_count))
            fixes.append(SetOrder(order=theirs))
        elif (mine.remaining, mine.price, mine.side, mine.action) != (theirs.remaining, theirs.price,
                                                                      theirs.side, theirs.action):
            issues.append(Discrepancy(kind=DiscrepancyKind.ORDER_MISMATCH, ticker=o.ticker, order_id=oid,
                                      local=mine.remaining, exchange=theirs.remaining))
            fixes.append(SetOrder(order=msgspec.structs.replace(theirs, created_ts=mine.created_ts)))
    for oid, mine in local.orders.items():
        if oid not in resting and oid not in skip_orders and mine.ticker not in skip_tickers:
            issues.append(Discrepancy(kind=DiscrepancyKind.STALE_ORDER, ticker=mine.ticker, order_id=oid,
                                      local=mine.remaining, exchange=0))
            fixes.append(DropOrder(order_id=oid))
    if not skip_balance:
        # Total cash = balance + what the exchange's own resting orders hold (not ours: some of
        # our orders may be deferred), against positions after the fixes (netting frees collateral).
        held: dict[str, int] = {t: p.qty for t, p in pf.positions.items()}
        held.update((c.ticker, c.qty) for c in fixes if isinstance(c, SetPosition))
        theirs_all = [OpenOrder.from_order(o) for o in resting.values()]
        cash = snap.balance + estimate_reserve(held, theirs_all, local.fees)
        if cash != pf.cash:
            if abs(cash - pf.cash) > balance_tolerance + 10_000 * len(theirs_all):
                issues.append(Discrepancy(kind=DiscrepancyKind.BALANCE_DRIFT, local=pf.cash, exchange=cash,
                                          detail=f"balance {snap.balance} + collateral"))
            fixes.append(SetCash(cash=cash))  # the exchange's figure wins either way
    return ReconcileResult(discrepancies=tuple(issues), corrections=tuple(fixes),
                           deferred=tuple(sorted(deferred)))
