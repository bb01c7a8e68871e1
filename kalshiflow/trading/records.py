"""Rows the Trader persists through the WriteQueue, in ``kalshiflow.storage.schema`` column order.

- ``trader_decisions``: every decision (HOLDs, refusals and unavailable-policy HOLDs included).
- ``orders``: written once, when the exchange answers the create (or refuses it: a refused order
  has no exchange id, so its row is keyed ``rejected:<client_order_id>``). The WriteQueue inserts
  with ON CONFLICT DO NOTHING, so later status changes of a resting order live in ``fills`` and
  in the exchange, not in this row (docs/trading.md).
- ``fills`` and ``position_snapshots`` are the PositionReconciler's to write; the Trader writes
  ``position_snapshots`` (source ``local``) itself only when it runs without a reconciler.

Units as in the schema: prices ticks, quantities hundredths, money micro-dollars, times aware UTC.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from kalshiflow.collect.rows import ts as utc  # epoch ns -> aware datetime (TIMESTAMPTZ)
from kalshiflow.collect.shipper import Shipper
from kalshiflow.market.prices import PRICE_SCALE
from kalshiflow.market.types import Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.trading import PortfolioView
from kalshiflow.trading.decision import DecisionRecord
from kalshiflow.trading.orders import PlaceOrder, TrackedOrder

__all__ = ["RowSink", "decision_row", "order_row", "position_rows"]

Row = tuple[Any, ...]


class RowSink:
    """Rows buffered by table, shipped as one WriteQueue batch per ``ship()`` and kept until the
    WriteQueue acknowledges them (:class:`kalshiflow.collect.shipper.Shipper`: retried with the
    same batch id, which the idempotent writes make safe). ``send`` None: rows are dropped."""

    def __init__(self, send: Callable[[str, dict[str, list[Row]]], Awaitable[object]] | None,
                 name: str) -> None:
        self.rows: dict[str, list[Row]] = {}
        self.shipper = Shipper(send, max_inflight=2) if send is not None else None
        self._prefix = f"{name}:{time.time_ns():x}"  # batch ids never repeat across restarts
        self._n = 0

    def add(self, table: str, row: Row) -> None:
        if self.shipper is not None:
            self.rows.setdefault(table, []).append(row)

    def ship(self) -> None:
        if self.rows and self.shipper is not None:
            rows, self.rows = self.rows, {}
            self._n += 1
            self.shipper.submit(f"{self._prefix}:{self._n}", rows)

    async def drain(self, timeout: float) -> bool:
        self.ship()
        return await self.shipper.drain(timeout) if self.shipper is not None else True

    @property
    def pending(self) -> int:
        """Rows not yet acknowledged (buffered or in flight)."""
        held = sum(map(len, self.rows.values()))
        return held + (self.shipper.unacked_rows if self.shipper is not None else 0)


def decision_row(rec: DecisionRecord, account: str) -> Row:
    return (rec.decision_id, utc(rec.ts_ns), account, rec.ticker, rec.observation_hash, rec.action,
            rec.model_version, rec.verdict, rec.reason[:1000], rec.latency_us, rec.client_order_id)


def order_row(cmd: PlaceOrder, order: rm.Order | None, *, account: str, environment: str, now_ns: int,
              error: str | None = None) -> Row:
    req = cmd.request
    price = req.price or 0
    yes_price = price if req.side is Side.YES else PRICE_SCALE - price
    when = utc(now_ns)
    if order is None:  # refused by the exchange (or voided before sending): no exchange id
        raw = {"request": msgspec.to_builtins(req), "error": error}
        return (f"rejected:{req.client_order_id}", req.client_order_id, account, environment, req.ticker,
                req.side.value, req.action.value, "limit", yes_price, req.count, 0, 0, req.time_in_force,
                "rejected", when, when, cmd.model_version, cmd.decision_id, raw)
    return (order.order_id, req.client_order_id, account, environment, req.ticker, req.side.value,
            req.action.value, order.type or "limit", order.yes_price, order.initial_count, order.fill_count,
            order.remaining_count, req.time_in_force, order.status.value, when, when, cmd.model_version,
            cmd.decision_id, {"order": msgspec.to_builtins(order), "reason": cmd.reason})


def order_state_row(tracked: TrackedOrder, order: rm.Order | None, *, account: str, environment: str,
                    now_ns: int, event: str) -> Row:
    """A later version of an order's row (a fill, a cancel): the same order, its state now. The
    writer keeps the newest version per order (kalshiflow.ingest.writer.NEWEST)."""
    assert tracked.order_id is not None
    yes_price = tracked.price if tracked.side is Side.YES else PRICE_SCALE - tracked.price
    remaining = int(order.remaining_count) if order is not None else tracked.remaining
    count = int(order.initial_count) if order is not None else tracked.count
    status = order.status.value if order is not None else tracked.status
    when = utc(now_ns)
    raw: dict[str, Any] = {"event": event, "reason": tracked.cancel_wanted or tracked.reason}
    if order is not None:
        raw["order"] = msgspec.to_builtins(order)
    return (tracked.order_id, tracked.client_order_id, account, environment, tracked.ticker,
            tracked.side.value, tracked.action.value, "limit", yes_price, count, count - remaining, remaining,
            tracked.tif, status, when, when, tracked.model_version, tracked.decision_id, raw)


def position_rows(view: PortfolioView, *, environment: str, now_ns: int, source: str = "local") -> list[Row]:
    when = utc(now_ns)
    return [(view.account or "paper", p.ticker, source, when, environment, p.qty, p.cost, p.realized_pnl,
             p.fees_paid) for p in view.positions.values()]
