"""Live trading: the risk gate, the position ledger and reconciliation, the Trader's pieces.

- :mod:`kalshiflow.trading.risk`: :class:`~kalshiflow.trading.risk.RiskGate`, the only source of
  sendable orders (OrderIntent -> Verdict -> ApprovedOrder -> ``redeem`` -> OrderRequest).
- :mod:`kalshiflow.trading.reconcile`: the local :class:`~kalshiflow.trading.reconcile.Ledger`
  and :func:`~kalshiflow.trading.reconcile.reconcile` against the exchange's truth (used by the
  PositionReconciler actor, ``actors/reconciler.py``).

This module holds the value types they and the Trader exchange: a resting order, one of our
fills, the portfolio view and the messages of the PositionReconciler actor, and the risk gate's
messages (intent, approval, book status, state, the actions a halt emits). Units: Price = ticks
of $0.0001, Qty = hundredths of a contract, Money = micro-dollars. Frozen Structs, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

import msgspec

from kalshiflow.config import ExchangeConfig, RiskConfig
from kalshiflow.market.prices import Money, complement
from kalshiflow.market.types import Action, Side, TimeInForce, bid_side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol import ws_data as wd
from kalshiflow.secrets import Credentials

__all__ = [
    "ApprovedOrder", "BookStatus", "CancelAll", "Discrepancy", "DiscrepancyKind", "FillNotice", "Flatten",
    "OpenOrder", "OrderIntent", "PortfolioView", "PositionSummary", "ReconcileReport", "ReconcilerSpec",
    "ReconcilerStats", "RiskAction", "RiskState", "TradeFill",
]


def _rfc3339(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class OpenOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A resting order. ``price`` is the limit of ``side`` (NO price for a NO order)."""

    order_id: str
    client_order_id: str
    ticker: str
    side: Side
    action: Action
    price: int
    remaining: int
    created_ts: float = 0.0
    # As of the exchange snapshot this came from (0 = unknown): lets fills seen on the WS before
    # or after that snapshot shrink ``remaining`` exactly once.
    initial: int = 0
    filled: int = 0

    @property
    def bought_side(self) -> Side:
        return bid_side(self.side, self.action)

    @property
    def bought_price(self) -> int:
        """Price of the contract the order buys: selling YES at p buys NO at 1 - p."""
        return self.price if self.action is Action.BUY else complement(self.price)

    @classmethod
    def from_order(cls, o: rm.Order) -> OpenOrder:
        return cls(order_id=o.order_id, client_order_id=o.client_order_id, ticker=o.ticker, side=o.side,
                   action=o.action, price=o.price, remaining=o.remaining_count,
                   created_ts=_rfc3339(o.created_time), initial=o.initial_count, filled=o.fill_count)


class TradeFill(msgspec.Struct, frozen=True, kw_only=True):
    """One of our fills, normalised from WS ``fill`` or REST ``/portfolio/fills``."""

    trade_id: str
    order_id: str
    client_order_id: str
    ticker: str
    side: Side  # as Kalshi reports it (deprecated side/action pair)
    action: Action
    bought_side: Side
    bought_price: int  # price of bought_side: the NO price for a NO purchase
    yes_price: int
    count: int
    fee: int
    is_taker: bool
    post_position: int | None  # signed, after this fill (WS only)
    ts_ms: int | None

    @property
    def notional(self) -> Money:
        return Money(self.bought_price * self.count)

    @property
    def side_price(self) -> int:
        """Price of ``side`` per contract, as "<action> <side> at <price>" reads: selling YES at 46c
        is 46c here (its ``bought_price`` is the 54c NO price: the money moved)."""
        return self.bought_price if self.action is Action.BUY else complement(self.bought_price)

    @classmethod
    def from_ws(cls, f: wd.FillEvent) -> TradeFill:
        return cls._make(f.trade_id, f.order_id, f.client_order_id, f.market_ticker, f.side, f.action,
                         f.yes_price, f.no_price, f.count, f.fee, f.is_taker, f.post_position, f.ts_ms)

    @classmethod
    def from_rest(cls, f: rm.Fill) -> TradeFill:
        ts = f.ts * 1000 if f.ts is not None else None
        return cls._make(f.fill_id, f.order_id, "", f.ticker, f.side, f.action, f.yes_price, f.no_price,
                         f.count, f.fee, f.is_taker, None, ts)

    @classmethod
    def _make(cls, trade_id: str, order_id: str, coid: str, ticker: str, side: Side, action: Action,
              yes: int, no: int, count: int, fee: int, taker: bool, post: int | None,
              ts_ms: int | None) -> TradeFill:
        bought = bid_side(side, action)
        return cls(trade_id=trade_id, order_id=order_id, client_order_id=coid, ticker=ticker, side=side,
                   action=action, bought_side=bought, bought_price=no if bought is Side.NO else yes,
                   yes_price=yes, count=count, fee=fee, is_taker=taker, post_position=post, ts_ms=ts_ms)


class PositionSummary(msgspec.Struct, frozen=True, kw_only=True):
    ticker: str
    qty: int  # signed: + YES, - NO
    cost: int  # paid for the contracts held, fees excluded
    avg_price: int  # cost per contract of the held side, ticks (0 when flat)
    realized_pnl: int
    fees_paid: int
    volume: int


class PortfolioView(msgspec.Struct, frozen=True, kw_only=True):
    """What the Trader and the risk gate read. ``cash`` includes resting-order collateral."""

    account: str
    cash: int
    reserved: int
    available_cash: int
    realized_pnl: int
    fees_paid: int
    positions: dict[str, PositionSummary]
    open_orders: tuple[OpenOrder, ...]
    accounted_client_order_ids: frozenset[str]  # orders whose effects the view already holds
    synced: bool  # loaded from the exchange at least once
    as_of: float
    connected: bool = True  # the reconciler's exchange feed is up (RiskState.from_view takes it)


# --------------------------------------------------------------------------- risk gate messages


class OrderIntent(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy wants. ``price`` is the limit of ``side`` (buy NO at 0.30 -> 3000)."""

    ticker: str
    side: Side
    action: Action
    count: int  # Qty, hundredths of a contract
    price: int  # Price ticks of `side`
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    reduce_only: bool = False  # passed to the exchange, which then caps the count at the position
    client_order_id: str = ""  # generated when empty (idempotency key on the exchange)

    @property
    def bought_side(self) -> Side:
        return bid_side(self.side, self.action)

    @property
    def bought_price(self) -> int:
        return self.price if self.action is Action.BUY else complement(self.price)


class ApprovedOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A gate-issued permission to send one order. Worthless outside :meth:`RiskGate.redeem`."""

    approval_id: str
    request: rm.OrderRequest
    issued_at: float
    expires_at: float
    reducing: bool  # shrinks a position (still sendable in REDUCING)
    emergency: bool = False  # a flatten order the gate generated (sendable while HALTED)


class CancelAll(msgspec.Struct, frozen=True, kw_only=True, tag="cancel_all"):
    reason: str
    ticker: str | None = None


class Flatten(msgspec.Struct, frozen=True, kw_only=True, tag="flatten"):
    reason: str
    orders: tuple[ApprovedOrder, ...]


RiskAction = CancelAll | Flatten


class BookStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``updated_at``: when the book was last known good (clock seconds)."""

    valid: bool
    updated_at: float
    yes_bid: int | None = None
    no_bid: int | None = None


class RiskState(msgspec.Struct, frozen=True, kw_only=True):
    """The world as the gate must see it for one decision (built by the Trader each time)."""

    positions: dict[str, int]  # signed Qty per market
    position_costs: dict[str, int]  # Money paid for the contracts held
    open_orders: tuple[OpenOrder, ...]
    books: dict[str, BookStatus]
    available_cash: int
    account_value: int  # cash + positions marked at the held side's bid
    connected: bool = True
    accounted_client_order_ids: frozenset[str] = frozenset()

    @classmethod
    def from_view(cls, view: PortfolioView, books: Mapping[str, BookStatus], *,
                  connected: bool = True) -> RiskState:
        """From the reconciler's portfolio. Positions are marked at the last known bid of the held
        side (an invalid book keeps its last bid: a gap must not look like a loss); none -> 0."""
        value = view.cash
        for t, p in view.positions.items():
            b = books.get(t)
            bid = (b.yes_bid if p.qty > 0 else b.no_bid) if b is not None else None
            value += abs(p.qty) * (bid or 0)
        return cls(positions={t: p.qty for t, p in view.positions.items()},
                   position_costs={t: p.cost for t, p in view.positions.items()},
                   open_orders=view.open_orders, books=dict(books), available_cash=view.available_cash,
                   account_value=value, connected=connected,
                   accounted_client_order_ids=view.accounted_client_order_ids)


# --------------------------------------------------------------------------- reconciliation


class DiscrepancyKind(StrEnum):
    MISSING_POSITION = "missing_position"  # the exchange holds contracts the ledger does not know
    PHANTOM_POSITION = "phantom_position"  # the ledger holds contracts the exchange does not
    WRONG_QTY = "wrong_qty"
    WRONG_COST = "wrong_cost"  # cost (market exposure), realized PnL or fees differ
    UNKNOWN_ORDER = "unknown_order"  # resting on the exchange, unknown to the ledger
    STALE_ORDER = "stale_order"  # resting in the ledger, no longer on the exchange
    ORDER_MISMATCH = "order_mismatch"  # same order, different remaining count or price
    BALANCE_DRIFT = "balance_drift"
    FILL_POSITION = "fill_position"  # a fill's post_position contradicts the ledger
    SNAPSHOT_REJECTED = "snapshot_rejected"  # an exchange snapshot that contradicts itself


class Discrepancy(msgspec.Struct, frozen=True, kw_only=True):
    kind: DiscrepancyKind
    ticker: str = ""
    order_id: str = ""
    local: int | None = None
    exchange: int | None = None
    detail: str = ""


class ReconcilerSpec(msgspec.Struct, frozen=True, kw_only=True):
    account: str  # label written with every row (e.g. the API key id's account), never a secret
    rest_url: str
    ws_url: str
    credentials: Credentials | None = None
    environment: str = "simulator"
    exchange: ExchangeConfig = ExchangeConfig()
    risk: RiskConfig = RiskConfig()  # reconcile_interval_s, balance_tolerance_dollars
    # WriteQueue actor name, looked up when first needed: restart-safe (a handle passed to
    # start_reconciler works too, but Ray then keeps it in the object store for restarts).
    write_queue: str | None = None
    namespace: str | None = None


class FillNotice(msgspec.Struct, frozen=True, kw_only=True):
    """One fill, as the PositionReconciler announces it to its subscribers.

    ``origin`` names the reconciler incarnation and ``seq`` numbers its fills from 1;
    ``maker_fills`` / ``taker_fills`` are its running totals including this one. A subscriber that
    joined late or missed notices still gets exact totals from the last notice it saw; a new
    ``origin`` (a restarted reconciler) numbers from 1 again. 0 / "": not numbered.
    ``order_created_ts``: when the filled order was created (epoch seconds), as the reconciler's
    book of open orders knows it at the fill; 0 when it did not know the order (yet).
    """

    fill: TradeFill
    position: PositionSummary | None  # the market's position after this fill
    received_ns: int
    origin: str = ""
    seq: int = 0
    maker_fills: int = 0
    taker_fills: int = 0
    order_created_ts: float = 0.0


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    duration_s: float
    bootstrap: bool
    discrepancies: tuple[Discrepancy, ...]
    corrections: int
    deferred: tuple[str, ...]


class ReconcilerStats(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    connected: bool
    synced: bool
    restarted: bool
    reconnects: int
    fills: int
    duplicate_fills: int
    backfilled_fills: int
    position_events: int
    decode_errors: int
    discrepancies: dict[str, int]  # by kind, since start (bootstrap loads excluded)
    corrections: int
    bootstrap_corrections: int
    reconciles: int
    reconcile_failures: int
    last_reconcile_at: float | None
    last_reconcile_s: float | None
    last_error: str | None
    subscribers: int
    notify_errors: int
    unacked_rows: int
    positions: int
    open_orders: int
