"""``trader_state`` and ``trades`` from the Trader, the PositionReconciler and the PolicyServer.

Sources (all by message):
- ``Trader.trader_state()`` (:class:`~kalshiflow.trading.state.TraderStateView`): portfolio valued
  at the held side's best bid, positions, open orders, metrics, risk mode, recent fills with the
  policy action behind each order;
- ``Trader.stats()`` (:class:`~kalshiflow.trading.state.TraderStats`): counters for the ``trades``
  panel when no fill stream is available;
- ``PositionReconciler.portfolio()`` (:class:`~kalshiflow.trading.PortfolioView`): cash, realised
  PnL and fees from the exchange's truth when no Trader runs;
- fills pushed by the PositionReconciler (``on_fill(FillNotice)``): :class:`ExecutionTally`
  counts every fill (maker / taker) and how long resting orders waited for it;
- ``PolicyServer.stats()`` (:class:`~kalshiflow.serving.messages.ServerStats`): model version,
  requests, server-side p50 latency.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from kalshiflow.dashboard.messages import (
    ExecutionStats,
    Fill,
    OpenOrder,
    Position,
    RunState,
    TraderMetrics,
    TraderState,
    Trades,
)
from kalshiflow.market.prices import format_money, format_price, format_qty

__all__ = ["ExecutionTally", "build_trader_state", "build_trades", "fill_from_notice"]

_CREATED_CAP = 10_000  # resting orders whose creation time is remembered (for fill times)


def fill_from_notice(notice: Any, decision: str | None = None) -> Fill:
    """A reconciler ``FillNotice`` as the page shows it: "<action> <side>" at the price of that side
    (a YES sale at 0.46, not the 0.54 NO price it buys), in dollars."""
    f = notice.fill
    ts = f.ts_ms / 1000.0 if f.ts_ms is not None else notice.received_ns / 1e9
    return Fill(
        ts=ts,
        ticker=f.ticker,
        action=str(f.action.value),
        side=str(f.side.value),
        quantity=format_qty(f.count),
        price=format_price(f.side_price),
        order_id=f.order_id,
        fill_id=f.trade_id,
        is_taker=f.is_taker,
        decision=decision,
    )


class ExecutionTally:
    """Every fill the reconciler announces: counts, and resting time (order created -> filled).

    Counts follow the reconciler's running totals (``FillNotice.seq`` / ``maker_fills`` /
    ``taker_fills``), so fills made before this tally subscribed, or whose notices were lost, are
    counted too; a notice already seen (same origin, no higher seq) is ignored; a new origin (a
    restarted reconciler, numbering from 1) adds its own totals. Unnumbered notices count one each.
    """

    def __init__(self, cap: int) -> None:
        self.recent: deque[Fill] = deque(maxlen=cap)  # newest first
        self.total = self.maker = self.taker = 0
        self._origin = ""
        self._seen = (0, 0, 0)  # (seq, maker, taker) of the origin's last notice
        self._created: OrderedDict[str, float] = OrderedDict()  # order id -> created (epoch s)
        self._wait_sum = 0.0
        self._waits = 0

    def seen_orders(self, orders: Any) -> None:
        """Open orders of a portfolio view: remember when each was created."""
        for o in orders:
            if o.created_ts and o.order_id not in self._created:
                self._created[o.order_id] = o.created_ts
                if len(self._created) > _CREATED_CAP:
                    self._created.popitem(last=False)

    def on_fill(self, notice: Any) -> None:
        if not self._count(notice):
            return
        fill = fill_from_notice(notice)
        self.recent.appendleft(fill)
        # How long a resting order waited. The reconciler's record of the order first: one placed
        # and filled between two polls of the portfolio was never seen open here, so the quick
        # fills would go uncounted and the average would lean slow.
        created = (not notice.fill.is_taker and notice.order_created_ts) or self._created.get(fill.order_id)
        if created is not None and fill.ts >= created:
            self._wait_sum += fill.ts - created
            self._waits += 1

    def _count(self, notice: Any) -> bool:
        """Add what this notice says happened since the last one; False: seen already."""
        seq = notice.seq
        if not seq:
            taker = bool(notice.fill.is_taker)
            total, maker, taker_n = 1, int(not taker), int(taker)
        else:
            totals = (seq, notice.maker_fills, notice.taker_fills)
            if notice.origin == self._origin:
                if seq <= self._seen[0]:
                    return False
                total, maker, taker_n = (a - b for a, b in zip(totals, self._seen, strict=True))
            else:
                total, maker, taker_n = totals
            self._origin, self._seen = notice.origin, totals
        self.total += total
        self.maker += maker
        self.taker += taker_n
        return True

    @property
    def avg_fill_time_ms(self) -> float | None:
        return round(1000 * self._wait_sum / self._waits, 1) if self._waits else None


def _policy_fields(policy: Any) -> tuple[str | None, int | None, float | None]:
    if policy is None:
        return None, None, None
    return policy.version, policy.requests, policy.p50_ms


def build_trader_state(
    view: Any, portfolio: Any, policy: Any, *, now: float, state: RunState, trading_mode: str | None
) -> TraderState:
    """From the Trader's view when it runs; else the reconciler's portfolio (no marks: no value)."""
    version, requests, p50 = _policy_fields(policy)
    if view is not None:
        m = view.metrics
        return TraderState(
            ts=now,
            state=state,
            environment=trading_mode or view.environment,
            portfolio_value=view.portfolio_value,
            cash=view.cash,
            unrealized_pnl=view.unrealized_pnl,
            realized_pnl=view.realized_pnl,
            fees=view.fees,
            positions=[
                Position(
                    ticker=p.ticker,
                    side=p.side,
                    contracts=p.contracts,
                    avg_price=p.avg_price,
                    current_price=p.current_price,
                    unrealized_pnl=p.unrealized_pnl,
                )
                for p in view.positions
            ],
            open_orders=[
                OpenOrder(
                    order_id=o.order_id or o.client_order_id,
                    ticker=o.ticker,
                    side=o.side,
                    action=o.action,
                    price=o.price,
                    remaining=o.remaining,
                    created_ts=None,
                )
                for o in view.open_orders
            ],
            metrics=TraderMetrics(
                orders_placed=m.orders_placed,
                orders_filled=m.orders_filled,
                orders_cancelled=m.orders_cancelled,
                orders_rejected=m.orders_rejected,
                fill_rate=m.fill_rate,
                win_rate=m.win_rate,
                daily_pnl=m.daily_pnl,
                decisions=m.decisions,
            ),
            risk_mode=view.risk_mode,
            risk_reason=view.risk_reason or None,
            model_version=view.model_version or version,
            policy_requests=requests,
            policy_latency_ms_p50=p50,
            source="trader",
        )
    positions: list[Position] = []
    cash = realized = fees = None
    orders: list[OpenOrder] = []
    if portfolio is not None:
        cash, realized, fees = (
            format_money(portfolio.cash, 2),
            format_money(portfolio.realized_pnl, 2),
            format_money(portfolio.fees_paid, 2),
        )
        for t, p in sorted(portfolio.positions.items()):
            if p.qty:
                positions.append(
                    Position(
                        ticker=t,
                        side="yes" if p.qty > 0 else "no",
                        contracts=format_qty(abs(p.qty)),
                        avg_price=format_price(p.avg_price) if p.avg_price else None,
                        current_price=None,
                        unrealized_pnl=None,
                    )
                )
        orders = [
            OpenOrder(
                order_id=o.order_id,
                ticker=o.ticker,
                side=str(o.side.value),
                action=str(o.action.value),
                price=format_price(o.price),
                remaining=format_qty(o.remaining),
                created_ts=o.created_ts or None,
            )
            for o in portfolio.open_orders
        ]
    return TraderState(
        ts=now,
        state=state,
        environment=trading_mode,
        portfolio_value=None,
        cash=cash,
        unrealized_pnl=None,
        realized_pnl=realized,
        fees=fees,
        positions=positions,
        open_orders=orders,
        metrics=None,
        risk_mode=None,
        risk_reason=None,
        model_version=version,
        policy_requests=requests,
        policy_latency_ms_p50=p50,
        source="reconciler" if portfolio is not None else None,
    )


def _fill_from_row(r: Any) -> Fill:
    return Fill(
        ts=r.ts,
        ticker=r.ticker,
        action=r.action,
        side=r.side,
        quantity=r.quantity,
        price=r.price,
        order_id=r.order_id,
        fill_id=r.fill_id,
        is_taker=r.is_taker,
        decision=r.decision,
    )


def build_trades(
    view: Any, trader_stats: Any, tally: ExecutionTally, *, now: float, state: RunState, cap: int
) -> Trades:
    """Recent fills: the Trader's (they name the policy action behind each order) when it runs,
    else those the reconciler announced. Counts: the reconciler's stream (every fill, maker/taker
    split) when it delivered any, else the Trader's own count (no split known)."""
    if view is not None:
        recent = [_fill_from_row(r) for r in view.recent_fills[:cap]]
    else:
        recent = list(tally.recent)[:cap]
    if tally.total or trader_stats is None:
        stats = ExecutionStats(
            total_fills=tally.total,
            maker_fills=tally.maker,
            taker_fills=tally.taker,
            avg_fill_time_ms=tally.avg_fill_time_ms,
        )
    else:
        taker = sum(1 for f in recent if f.is_taker)
        known = len(recent) == trader_stats.fills  # the split is exact only when every fill is listed
        stats = ExecutionStats(
            total_fills=trader_stats.fills,
            maker_fills=len(recent) - taker if known else None,
            taker_fills=taker if known else None,
            avg_fill_time_ms=None,
        )
    return Trades(ts=now, state=state, recent_fills=recent, execution_stats=stats)
