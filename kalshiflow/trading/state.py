"""What the Trader reports: ``stats()`` (operations) and ``trader_state()`` (the dashboard).

:class:`Counters` is the actor's mutable tally (decisions, actions, verdicts, refusals by reason,
policy errors, HOLDs because the PolicyServer was unavailable, latencies in bounded rings, round
trips for the win rate); :func:`build_stats` and :func:`build_state` turn it plus the engine's
and the gate's state into frozen messages. Money is shown as dollar strings (the dashboard's
form), prices as dollar prices, quantities as contracts.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import msgspec
import numpy as np

from kalshiflow.market.prices import format_money, format_price, format_qty
from kalshiflow.trading import PortfolioView, TradeFill
from kalshiflow.trading.decision import DecisionEngine, DecisionRecord

__all__ = ["Counters", "FillRow", "OrderRow", "PositionRow", "TraderMetrics", "TraderStateView",
           "TraderStats", "build_state", "build_stats"]


class TraderStats(msgspec.Struct, frozen=True, kw_only=True):
    environment: str
    markets: int
    depth_unavailable: int  # decisions postponed: the ladders could not be fetched from the collector
    public_trades_seen: int  # trades fed to the features (0: flow_60s / activity_60s read 0, docs/trading.md)
    stale_updates: int  # updates older than one already applied (dropped)
    book_errors: int  # ladders off a market's grid (treated as a gap: no trading on them)
    decisions: int
    actions: dict[str, int]  # action name -> decisions
    verdicts: dict[str, int]  # hold | allowed | rejected | cancel | unavailable | error -> decisions
    refusals: dict[str, int]  # risk gate reason -> refused decisions
    orders_placed: int
    orders_acked: int
    orders_cancelled: int
    orders_rejected: int  # refused by the exchange (or voided by the gate before sending)
    order_errors: dict[str, int]  # those refusals by Kalshi error code (or error kind)
    cancel_failures: int
    cancels: dict[str, int]  # cancels sent by reason (policy, kill switch, lost connection, shutdown...)
    markets_lost: int  # market-data losses seen (per market and collector poll)
    open_orders: int
    fills: int
    policy_calls: int
    policy_errors: int  # answers with status error / schema_mismatch / bad_request
    holds_policy_unavailable: int  # decisions HOLD because the PolicyServer did not answer
    policy_available: bool
    policy_last_error: str | None
    model_version: str | None
    schema_hash: str
    risk_mode: str
    risk_reason: str
    rest_connected: bool
    delivery_latency_ms: dict[str, float]  # p50 / p99: collector received the frame -> Trader has it
    decision_latency_ms: dict[str, float]  # p50 / p99: update applied -> verdict
    policy_latency_ms: dict[str, float]  # p50 / p99: the PolicyServer round trip (part of the decision)
    rest_latency_ms: dict[str, float]  # p50 / p99: REST create round trip
    ack_latency_ms: dict[str, float]  # p50 / p99: collector received the frame -> exchange ack
    rows_unacked: int
    last_error: str | None
    book_link_connections: int = 0  # collectors streaming views over the book link now
    book_link_frames: int = 0  # view batches received that way (the rest came by Ray call)


class PositionRow(msgspec.Struct, frozen=True, kw_only=True):
    ticker: str
    side: str  # yes | no
    contracts: str
    avg_price: str | None
    current_price: str | None  # the held side's best bid now
    unrealized_pnl: str | None


class OrderRow(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str | None
    client_order_id: str
    ticker: str
    side: str
    action: str
    price: str
    remaining: str
    status: str
    model_version: str | None


class FillRow(msgspec.Struct, frozen=True, kw_only=True):
    ts: float
    ticker: str
    action: str
    side: str
    quantity: str
    price: str  # per contract of ``side``: "sell yes at 46c" (TradeFill.side_price)
    order_id: str
    fill_id: str
    is_taker: bool
    decision: str | None  # the policy action behind the order


class TraderMetrics(msgspec.Struct, frozen=True, kw_only=True):
    orders_placed: int
    orders_filled: int
    orders_cancelled: int
    orders_rejected: int
    fill_rate: float | None
    win_rate: float | None  # closed round trips with positive realised PnL / closed round trips
    daily_pnl: str | None
    decisions: int


class TraderStateView(msgspec.Struct, frozen=True, kw_only=True):
    ts: float
    environment: str  # simulator | demo | production
    portfolio_value: str | None
    cash: str | None
    unrealized_pnl: str | None
    realized_pnl: str | None
    fees: str | None
    positions: list[PositionRow]
    open_orders: list[OrderRow]
    recent_fills: list[FillRow]  # newest first
    metrics: TraderMetrics
    risk_mode: str
    risk_reason: str
    model_version: str | None
    policy_available: bool


def _pcts(ring: deque[float]) -> dict[str, float]:
    if not ring:
        return {"p50": 0.0, "p99": 0.0, "n": 0}
    p50, p99 = np.percentile(np.fromiter(ring, float), [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "n": len(ring)}


class Counters:
    """The Trader's running tallies (bounded memory)."""

    def __init__(self, window: int = 4096, fills: int = 50) -> None:
        self.actions: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.order_errors: Counter[str] = Counter()  # why orders did not reach the book (code / kind)
        self.cancels: Counter[str] = Counter()  # cancels sent, by reason
        self.decisions = self.policy_calls = self.policy_errors = self.holds_unavailable = 0
        self.depth_unavailable = 0  # decisions postponed for want of the book's ladders
        self.markets_lost = 0  # market-data losses seen (a market per collector poll that found it lost)
        self.policy_available = True
        self.policy_last_error: str | None = None
        self.model_version: str | None = None
        # Latency by stage (ms): collector receive -> on_books (batching + Ray delivery), update
        # applied -> verdict (the decision, PolicyServer included), REST create round trip, and
        # the whole way, collector receive -> exchange ack.
        self.delivery_ms: deque[float] = deque(maxlen=window)
        self.decision_ms: deque[float] = deque(maxlen=window)
        self.policy_ms: deque[float] = deque(maxlen=window)
        self.rest_ms: deque[float] = deque(maxlen=window)
        self.ack_ms: deque[float] = deque(maxlen=window)
        self.fills: deque[FillRow] = deque(maxlen=fills)
        self.n_fills = 0
        self.filled_orders: set[str] = set()
        self.realized: dict[str, int] = {}  # ticker -> realised PnL last seen (round-trip detection)
        self.wins = self.trips = 0
        self.last_error: str | None = None
        self.decision_of: dict[str, str] = {}  # client order id -> action name (bounded below)

    def record(self, rec: DecisionRecord) -> None:
        self.decisions += 1
        self.actions[rec.action] += 1
        self.verdicts[rec.verdict] += 1
        self.decision_ms.append(rec.latency_us / 1000.0)
        if rec.verdict == "rejected":
            self.refusals[rec.reason.partition(":")[0]] += 1
        elif rec.verdict == "unavailable" and rec.reason.startswith("unavailable"):
            self.holds_unavailable += 1
        elif rec.verdict == "error":
            self.policy_errors += 1
        if rec.client_order_id and rec.verdict == "allowed":
            self.decision_of[rec.client_order_id] = rec.action
            if len(self.decision_of) > 10_000:
                self.decision_of.pop(next(iter(self.decision_of)))

    def fill(self, f: TradeFill, now: float) -> None:
        self.n_fills += 1
        self.filled_orders.add(f.order_id)
        if len(self.filled_orders) > 100_000:
            self.filled_orders.pop()
        self.fills.appendleft(FillRow(
            ts=(f.ts_ms / 1000.0) if f.ts_ms is not None else now, ticker=f.ticker, action=f.action.value,
            side=f.side.value, quantity=format_qty(f.count), price=format_price(f.side_price),
            order_id=f.order_id, fill_id=f.trade_id, is_taker=f.is_taker,
            decision=self.decision_of.get(f.client_order_id)))

    def round_trips(self, view: PortfolioView) -> None:
        """A change of a market's realised PnL closes (part of) a round trip: count it, and its sign."""
        for t, p in view.positions.items():
            before = self.realized.get(t)
            self.realized[t] = p.realized_pnl
            if before is not None and p.realized_pnl != before:
                self.trips += 1
                self.wins += p.realized_pnl > before


def _marks(engine: DecisionEngine, view: PortfolioView) -> dict[str, int | None]:
    """The held side's best bid per position (None: no book)."""
    out: dict[str, int | None] = {}
    for t, p in view.positions.items():
        feed = engine.feeds.get(t)
        if feed is None or not feed.seen or not p.qty:
            out[t] = None
            continue
        bid = feed.state.top[0 if p.qty > 0 else 1]
        out[t] = bid or None
    return out


def build_stats(c: Counters, engine: DecisionEngine, tracker_n: dict[str, int], *, environment: str,
                open_orders: int, rest_connected: bool, rows_unacked: int, link: tuple[int, int] = (0, 0)
                ) -> TraderStats:
    risk = engine.gate
    return TraderStats(
        environment=environment, markets=len(engine.feeds),
        depth_unavailable=c.depth_unavailable,
        public_trades_seen=sum(f.trades for f in engine.feeds.values()),
        stale_updates=sum(f.stale_updates for f in engine.feeds.values()),
        book_errors=sum(f.book_errors for f in engine.feeds.values()),
        decisions=c.decisions, actions=dict(c.actions), verdicts=dict(c.verdicts), refusals=dict(c.refusals),
        orders_placed=tracker_n["placed"], orders_acked=tracker_n["acked"],
        orders_cancelled=tracker_n["cancelled"],
        orders_rejected=tracker_n["rejected"], order_errors=dict(c.order_errors),
        cancel_failures=tracker_n["cancel_failed"], cancels=dict(c.cancels), markets_lost=c.markets_lost,
        open_orders=open_orders,
        fills=c.n_fills, policy_calls=c.policy_calls, policy_errors=c.policy_errors,
        holds_policy_unavailable=c.holds_unavailable, policy_available=c.policy_available,
        policy_last_error=c.policy_last_error, model_version=c.model_version, schema_hash=engine.schema_hash,
        risk_mode=risk.mode.value, risk_reason=risk.mode_reason, rest_connected=rest_connected,
        delivery_latency_ms=_pcts(c.delivery_ms), decision_latency_ms=_pcts(c.decision_ms),
        policy_latency_ms=_pcts(c.policy_ms),
        rest_latency_ms=_pcts(c.rest_ms), ack_latency_ms=_pcts(c.ack_ms), rows_unacked=rows_unacked,
        book_link_connections=link[0], book_link_frames=link[1],
        last_error=c.last_error)


def build_state(c: Counters, engine: DecisionEngine, view: PortfolioView | None, orders: list[Any],
                tracker_n: dict[str, int], *, environment: str, now: float) -> TraderStateView:
    positions: list[PositionRow] = []
    value = cash = unreal = realized = fees = None
    daily = None
    if view is not None:
        marks = _marks(engine, view)
        total_unreal = 0
        for t, p in sorted(view.positions.items()):
            if not p.qty:
                continue
            held = abs(p.qty)
            mark = marks.get(t)
            u = held * mark - p.cost if mark is not None else None
            total_unreal += u or 0
            positions.append(PositionRow(
                ticker=t, side="yes" if p.qty > 0 else "no", contracts=format_qty(held),
                avg_price=format_price(p.avg_price) if p.avg_price else None,
                current_price=format_price(mark) if mark is not None else None,
                unrealized_pnl=format_money(u, 2) if u is not None else None))
        worth = view.cash + sum(abs(p.qty) * (marks.get(t) or 0) for t, p in view.positions.items())
        value, cash = format_money(worth, 2), format_money(view.cash, 2)
        unreal, realized, fees = (format_money(total_unreal, 2), format_money(view.realized_pnl, 2),
                                  format_money(view.fees_paid, 2))
        start = engine.gate.start_value
        daily = format_money(worth - start, 2) if start else None
    placed = tracker_n["placed"]
    metrics = TraderMetrics(
        orders_placed=placed, orders_filled=len(c.filled_orders), orders_cancelled=tracker_n["cancelled"],
        orders_rejected=tracker_n["rejected"],
        fill_rate=round(len(c.filled_orders) / placed, 4) if placed else None,
        win_rate=round(c.wins / c.trips, 4) if c.trips else None, daily_pnl=daily, decisions=c.decisions)
    rows = [OrderRow(order_id=o.order_id, client_order_id=o.client_order_id, ticker=o.ticker,
                     side=o.side.value, action=o.action.value, price=format_price(o.price),
                     remaining=format_qty(o.remaining),
                     status=o.status, model_version=o.model_version) for o in orders]
    return TraderStateView(
        ts=now, environment=environment, portfolio_value=value, cash=cash, unrealized_pnl=unreal,
        realized_pnl=realized, fees=fees, positions=positions, open_orders=rows, recent_fills=list(c.fills),
        metrics=metrics, risk_mode=engine.gate.mode.value, risk_reason=engine.gate.mode_reason,
        model_version=c.model_version, policy_available=c.policy_available)
