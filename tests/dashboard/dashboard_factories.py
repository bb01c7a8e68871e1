"""Real status Structs (the actors' own types) with plausible values, for builder and schema tests.

Fields a test does not care about are filled with zero values of their declared type, so the
factories keep working when an actor's stats gain a field.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec

from kalshiflow.collect.messages import CollectorStats, EpochRecord, MarketStats
from kalshiflow.ingest.messages import COUNTERS, WriteQueueStats
from kalshiflow.market.types import Action, Side
from kalshiflow.trading import OpenOrder, PortfolioView, PositionSummary, TradeFill
from kalshiflow.trading.state import (
    FillRow,
    OrderRow,
    PositionRow,
    TraderMetrics,
    TraderStateView,
    TraderStats,
)


def _zero(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
        return None
    if origin is not None:
        tp = origin
    for kind, value in (
        (bool, False),
        (int, 0),
        (float, 0.0),
        (str, ""),
        (dict, {}),
        (list, []),
        (tuple, ()),
    ):
        if isinstance(tp, type) and issubclass(tp, kind):
            return value
    return None


def make(cls: type[Any], **given: Any) -> Any:
    """``cls(**given)`` with every other required field set to its type's zero value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _zero(hints[f.name]) for f in msgspec.structs.fields(cls) if f.required}
    return cls(**(fields | given))


def market(ticker: str, deltas: int, *, valid: bool = True, gaps: int = 0) -> MarketStats:
    return make(
        MarketStats,
        ticker=ticker,
        active=True,
        valid=valid,
        deltas=deltas,
        snapshots=1,
        trades=2,
        gaps=gaps,
        book_errors=0,
        last_seq=deltas + 1,
        last_received_ts_ns=1,
        lag_ms_mean=3.25,
        lag_ms_max=9,
    )


def collector(cid: str, markets: list[MarketStats], *, connected: bool = True, **kw: Any) -> CollectorStats:
    fields: dict[str, Any] = dict(
        collector_id=cid,
        session_id="11111111-2222-3333-4444-555555555555",
        epoch=7,
        connected=connected,
        markets=len(markets),
        messages=sum(m.deltas for m in markets) + 10,
        messages_per_s=12.5,
        deltas=sum(m.deltas for m in markets),
        snapshots=len(markets),
        trades=4,
        gaps=sum(m.gaps for m in markets),
        duplicates=0,
        out_of_order=0,
        book_errors=0,
        decode_errors=0,
        unknown_frames=0,
        reconnects=1,
        recoveries_requested=0,
        resyncs=0,
        lag_ms_mean=4.0,
        lag_ms_max=20,
        batches_sent=5,
        batches_acked=5,
        batches_retried=0,
        unacked_batches=0,
        unacked_rows=3,
        rows_acked=100,
        per_market=tuple(markets),
        epochs=(make(EpochRecord, epoch=7, collector_id=cid, connected_ns=1),),
    )
    fields.update(kw)
    return make(CollectorStats, **fields)


def write_queue(**kw: Any) -> WriteQueueStats:
    fields: dict[str, Any] = {c: 0 for c in COUNTERS}
    fields.update(
        name="write-queue",
        database_up=True,
        closed=False,
        depth=12,
        waiting_enqueues=0,
        waiting_rows=0,
        oldest_unflushed_age_s=0.05,
        last_error=None,
        spill_segments=0,
        spill_bytes=0,
        rows_written=1234,
    )
    fields.update(kw)
    return make(WriteQueueStats, **fields)


def trader_view(*, risk_mode: str = "active", fills: int = 2) -> TraderStateView:
    return make(
        TraderStateView,
        ts=100.0,
        environment="simulator",
        portfolio_value="10012.50",
        cash="9900.00",
        unrealized_pnl="-1.50",
        realized_pnl="14.00",
        fees="0.42",
        positions=[
            make(
                PositionRow,
                ticker="KX-A",
                side="yes",
                contracts="10.00",
                avg_price="0.4200",
                current_price="0.4100",
                unrealized_pnl="-0.10",
            )
        ],
        open_orders=[
            make(
                OrderRow,
                order_id="o-1",
                client_order_id="kf-1-1",
                ticker="KX-A",
                side="yes",
                action="buy",
                price="0.4000",
                remaining="5.00",
                status="resting",
                model_version="v1",
            )
        ],
        recent_fills=[
            make(
                FillRow,
                ts=99.0 - i,
                ticker="KX-A",
                action="buy",
                side="yes",
                quantity="5.00",
                price="0.4200",
                order_id=f"o-{i}",
                fill_id=f"f-{i}",
                is_taker=i % 2 == 0,
                decision="buy_yes_5",
            )
            for i in range(fills)
        ],
        metrics=make(
            TraderMetrics,
            orders_placed=4,
            orders_filled=2,
            orders_cancelled=1,
            orders_rejected=0,
            fill_rate=0.5,
            win_rate=None,
            daily_pnl="12.50",
            decisions=40,
        ),
        risk_mode=risk_mode,
        risk_reason="start",
        model_version="v1",
        policy_available=True,
    )


def trader_stats(fills: int = 2) -> TraderStats:
    return make(
        TraderStats,
        environment="simulator",
        fills=fills,
        orders_placed=4,
        risk_mode="active",
        model_version="v1",
        policy_available=True,
    )


def portfolio(orders: tuple[OpenOrder, ...] = ()) -> PortfolioView:
    return make(
        PortfolioView,
        account="paper",
        cash=9_900_000_000,
        reserved=0,
        available_cash=9_900_000_000,
        realized_pnl=14_000_000,
        fees_paid=420_000,
        positions={
            "KX-A": make(
                PositionSummary,
                ticker="KX-A",
                qty=-1000,
                cost=5_800_000,
                avg_price=5800,
                realized_pnl=0,
                fees_paid=0,
                volume=0,
            )
        },
        open_orders=orders,
        accounted_client_order_ids=frozenset(),
        synced=True,
        as_of=1.0,
    )


def open_order(order_id: str, created: float) -> OpenOrder:
    return make(
        OpenOrder,
        order_id=order_id,
        client_order_id="kf-" + order_id,
        ticker="KX-A",
        side=Side.YES,
        action=Action.BUY,
        price=4000,
        remaining=500,
        created_ts=created,
    )


def trade_fill(order_id: str, *, taker: bool, ts_ms: int, side: Side = Side.YES) -> TradeFill:
    return make(
        TradeFill,
        trade_id="t-" + order_id,
        order_id=order_id,
        client_order_id="kf-" + order_id,
        ticker="KX-A",
        side=side,
        action=Action.BUY,
        bought_side=side,
        bought_price=4000 if side is Side.YES else 6000,
        yes_price=4000,
        count=500,
        fee=10_000,
        is_taker=taker,
        post_position=None,
        ts_ms=ts_ms,
    )
