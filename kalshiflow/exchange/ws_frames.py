"""Exchange events -> Kalshi WS v2 message payloads, for the channels the hub serves.

Order-book frames come from :mod:`kalshiflow.protocol.market_data`; fill, market_position, trade
and lifecycle frames from :mod:`kalshiflow.protocol.ws_data` (the models below feed their
encoders). ``ticker`` and ``user_order`` have no encoder in the protocol package, so their
payloads are built here, in the current fixed-point form plus the legacy integers where exact
(kalshi-protocol.md §1.7.2, §1.7.6).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from kalshiflow.exchange.events import FillEvent, LifecycleEvent, MarketStats, OrderRecord, PositionEvent
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import (
    CENT,
    PRICE_SCALE,
    QTY_SCALE,
    complement,
    format_money,
    format_price,
    format_qty,
)
from kalshiflow.market.types import Side, bid_side
from kalshiflow.protocol import ws_data as wd

_encoder = msgspec.json.Encoder()


def fill_model(e: FillEvent) -> wd.FillEvent:
    return wd.FillEvent(
        trade_id=e.trade_id,
        order_id=e.order_id,
        market_ticker=e.ticker,
        client_order_id=e.client_order_id,
        side=e.side,
        action=e.action,
        yes_price=e.yes_price,
        no_price=complement(e.yes_price),
        count=e.count,
        is_taker=e.is_taker,
        fee=e.fee,
        post_position=e.post_position,
        ts_ms=int(e.ts * 1000),
    )


def position_model(e: PositionEvent) -> wd.PositionEvent:
    return wd.PositionEvent(
        market_ticker=e.ticker,
        position=e.position,
        position_cost=e.position_cost,
        realized_pnl=e.realized_pnl,
        fees_paid=e.fees_paid,
        volume=e.volume,
    )


def lifecycle_model(e: LifecycleEvent) -> wd.LifecycleEvent:
    m = e.market
    ts = int(e.ts)
    fields: dict[str, object] = {}
    if e.event_type == "created":
        fields = {
            "open_ts": int(m.open_time),
            "close_ts": int(m.close_time),
            "price_level_structure": m.price_level_structure,
            "additional_metadata": {
                "name": m.title,
                "title": m.title,
                "yes_sub_title": m.yes_sub_title,
                "no_sub_title": m.no_sub_title,
                "rules_primary": m.rules_primary,
                "event_ticker": m.event_ticker,
                "can_close_early": m.can_close_early,
                "expected_expiration_ts": int(m.close_time),
            },
        }
    elif e.event_type == "close_date_updated":
        fields = {"close_ts": int(m.close_time)}
    elif e.event_type == "determined":
        fields = {
            "result": m.result,
            "determination_ts": ts,
            "settlement_value": PRICE_SCALE if m.result == "yes" else 0,
        }
    elif e.event_type == "settled":
        fields = {"settled_ts": ts}
    elif e.event_type in ("activated", "deactivated"):
        fields = {"is_deactivated": e.event_type == "deactivated"}
    return msgspec.convert(
        {"market_ticker": m.ticker, "event_type": e.event_type, **fields}, wd.LifecycleEvent
    )


def data_frame(kind: str, sid: int, msg: dict[str, Any]) -> str:
    """A data frame without ``seq`` (ticker and user_order carry none, §1.8)."""
    return _encoder.encode({"type": kind, "sid": sid, "msg": msg}).decode()


TickerKey = tuple[int | None, int, int | None, int, int | None, int, int]


def ticker_key(book: OrderBook, stats: MarketStats) -> TickerKey:
    """The fields a ticker message reports; a message goes out when any of them changes."""
    return (
        book.best_bid(Side.YES),
        book.best_bid_size(Side.YES),
        book.best_bid(Side.NO),
        book.best_bid_size(Side.NO),
        stats.last_price,
        stats.volume,
        stats.open_interest,
    )


def ticker_msg(
    ticker: str, market_id: str, key: TickerKey, last_trade_size: int, ts: float
) -> dict[str, Any]:
    yes_bid, yes_bid_size, no_bid, no_bid_size, last, volume, open_interest = key
    bid = yes_bid or 0
    ask = complement(no_bid) if no_bid else PRICE_SCALE  # YES ask = 1 - best NO bid
    ts_ms = int(ts * 1000)
    msg: dict[str, Any] = {
        "market_ticker": ticker,
        "market_id": market_id,
        "price_dollars": format_price(last) if last is not None else "",
        "yes_bid_dollars": format_price(bid),
        "yes_ask_dollars": format_price(ask),
        "yes_bid_size_fp": format_qty(yes_bid_size),
        "yes_ask_size_fp": format_qty(no_bid_size),
        "last_trade_size_fp": format_qty(last_trade_size),
        "volume_fp": format_qty(volume),
        "open_interest_fp": format_qty(open_interest),
        # Whole dollars of notional at $1 per contract, as Kalshi reports them.
        "dollar_volume": volume // QTY_SCALE,
        "dollar_open_interest": open_interest // QTY_SCALE,
        "ts": ts_ms // 1000,
        "ts_ms": ts_ms,
        "time": datetime.fromtimestamp(ts_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if all(p is None or p % CENT == 0 for p in (last, bid, ask)):
        msg.update(price=(last or 0) // CENT, yes_bid=bid // CENT, yes_ask=ask // CENT)
    if volume % QTY_SCALE == 0 and open_interest % QTY_SCALE == 0:
        msg.update(volume=volume // QTY_SCALE, open_interest=open_interest // QTY_SCALE)
    return msg


def user_order_msg(o: OrderRecord, ts: float) -> dict[str, Any]:
    outcome = bid_side(o.side, o.action)
    created_ms, updated_ms = int(o.created_time * 1000), int(ts * 1000)
    msg: dict[str, Any] = {
        "order_id": o.order_id,
        "user_id": o.owner,
        "client_order_id": o.client_order_id,
        "ticker": o.ticker,  # this channel says `ticker`, not `market_ticker` (§1.7.6)
        "status": o.status.value,
        "side": o.side.value,
        "is_yes": o.side is Side.YES,
        "outcome_side": outcome.value,
        "book_side": "bid" if outcome is Side.YES else "ask",
        "yes_price_dollars": format_price(o.yes_price),
        "fill_count_fp": format_qty(o.fill_count),
        "remaining_count_fp": format_qty(o.remaining_count),
        "initial_count_fp": format_qty(o.initial_count),
        "taker_fill_cost_dollars": format_money(o.taker_fill_cost, 4),
        "maker_fill_cost_dollars": format_money(o.maker_fill_cost, 4),
        "taker_fees_dollars": format_money(o.taker_fees, 4),
        "maker_fees_dollars": format_money(o.maker_fees, 4),
        "created_ts_ms": created_ms,
        "last_updated_ts_ms": updated_ms,
    }
    if o.expiration_time is not None:
        msg["expiration_ts_ms"] = int(o.expiration_time * 1000)
    return msg
