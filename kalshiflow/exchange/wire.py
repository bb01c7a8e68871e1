"""REST response bodies of the simulator: Kalshi's superset wire form.

Every object carries the current fixed-point fields (``*_dollars`` price/money strings, ``*_fp``
count strings) AND the legacy integer fields (cents, whole contracts) that the official
``kalshi_python_sync`` 3.2.0 SDK requires (kalshi-protocol.md §2.4, §4.4); extra keys are ignored
by every client examined. Legacy integers are rounded where sub-cent prices or fractional counts
cannot be expressed (bids down, asks up, counts down); the fixed-point fields are always exact.

Enum values are the ones SDK 3.2.0 accepts: market status inactive -> "closed", finalized ->
"settled" (the current API's own values would make that SDK raise).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kalshiflow.exchange.events import (
    FillEvent,
    MarketInfo,
    MarketStats,
    MarketStatus,
    OrderRecord,
    PositionView,
    TradeEvent,
)
from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import (
    CENT,
    MONEY_PER_CENT,
    PRICE_SCALE,
    QTY_SCALE,
    ceil_div,
    format_money,
    format_price,
    format_qty,
    grid_by_name,
)
from kalshiflow.market.types import Side, bid_side

Json = dict[str, Any]

# SDK 3.2.0's Market.status enum is initialized|active|closed|settled|determined.
WIRE_STATUS: dict[MarketStatus, str] = {
    MarketStatus.INITIALIZED: "initialized",
    MarketStatus.ACTIVE: "active",
    MarketStatus.INACTIVE: "closed",
    MarketStatus.CLOSED: "closed",
    MarketStatus.DETERMINED: "determined",
    MarketStatus.FINALIZED: "settled",
}
# GET /markets?status= filter values -> the statuses they select (kalshi-protocol.md §2.4).
STATUS_FILTER: dict[str, frozenset[MarketStatus]] = {
    "unopened": frozenset({MarketStatus.INITIALIZED}),
    "open": frozenset({MarketStatus.ACTIVE}),
    "paused": frozenset({MarketStatus.INACTIVE}),
    "closed": frozenset({MarketStatus.CLOSED, MarketStatus.DETERMINED}),
    "settled": frozenset({MarketStatus.FINALIZED}),
}
SETTLEMENT_TIMER_S = 60


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cents_down(price: int) -> int:
    return price // CENT


def cents_up(price: int) -> int:
    return ceil_div(price, CENT)


def contracts(qty: int) -> int:
    """Whole contracts toward zero (legacy integer counts)."""
    return int(qty / QTY_SCALE) if qty < 0 else qty // QTY_SCALE


def cents_money(money: int) -> int:
    """Micro-dollars -> whole cents toward zero (legacy integer money fields)."""
    return -((-money) // MONEY_PER_CENT) if money < 0 else money // MONEY_PER_CENT


def price_pair(key: str, price: int, up: bool = False) -> Json:
    return {key: cents_up(price) if up else cents_down(price), f"{key}_dollars": format_price(price)}


def qty_pair(key: str, qty: int) -> Json:
    return {key: contracts(qty), f"{key}_fp": format_qty(qty)}


def money_pair(key: str, money: int) -> Json:
    return {key: cents_money(money), f"{key}_dollars": format_money(money, 4)}


# ---------------------------------------------------------------------------------------------


def market_json(info: MarketInfo, stats: MarketStats, book: OrderBook) -> Json:
    yes_bid = book.best_bid(Side.YES) or 0
    no_bid = book.best_bid(Side.NO) or 0
    # No bid on the other ladder = no ask: Kalshi shows the ask as $1.00.
    yes_ask = PRICE_SCALE - no_bid if no_bid else PRICE_SCALE
    no_ask = PRICE_SCALE - yes_bid if yes_bid else PRICE_SCALE
    last = stats.last_price or 0
    grid = grid_by_name(info.price_level_structure)
    out: Json = {
        "ticker": info.ticker,
        "market_id": info.market_id,
        "event_ticker": info.event_ticker,
        "series_ticker": info.series_ticker,
        "market_type": "binary",
        "title": info.title,
        "subtitle": info.subtitle,
        "yes_sub_title": info.yes_sub_title,
        "no_sub_title": info.no_sub_title,
        "created_time": rfc3339(info.created_time),
        "updated_time": rfc3339(stats.last_trade_ts or info.created_time),
        "open_time": rfc3339(info.open_time),
        "close_time": rfc3339(info.close_time),
        "expected_expiration_time": rfc3339(info.close_time + SETTLEMENT_TIMER_S),
        "expiration_time": rfc3339(info.close_time + SETTLEMENT_TIMER_S),
        "latest_expiration_time": rfc3339(info.close_time + SETTLEMENT_TIMER_S),
        "settlement_timer_seconds": SETTLEMENT_TIMER_S,
        "status": WIRE_STATUS[info.status],
        "result": info.result,
        "can_close_early": info.can_close_early,
        "response_price_units": "usd_cent",
        **price_pair("yes_bid", yes_bid),
        **price_pair("yes_ask", yes_ask, up=True),
        **price_pair("no_bid", no_bid),
        **price_pair("no_ask", no_ask, up=True),
        **price_pair("last_price", last),
        # No day-ago snapshot is kept: the previous-day fields repeat the current values.
        **price_pair("previous_yes_bid", yes_bid),
        **price_pair("previous_yes_ask", yes_ask, up=True),
        **price_pair("previous_price", last),
        "yes_bid_size_fp": format_qty(book.best_bid_size(Side.YES)),
        "yes_ask_size_fp": format_qty(book.best_bid_size(Side.NO)),
        **qty_pair("volume", stats.volume),
        **qty_pair("volume_24h", stats.volume_24h),
        **qty_pair("open_interest", stats.open_interest),
        "notional_value": 100,
        "notional_value_dollars": "1.0000",
        "liquidity": 0,
        "liquidity_dollars": "0.0000",
        "expiration_value": "",
        "category": info.category,
        "risk_limit_cents": 0,
        "tick_size": 1 if grid.prices[0] >= CENT else 0,
        "rules_primary": info.rules_primary,
        "rules_secondary": "",
        "price_level_structure": info.price_level_structure,
        "price_ranges": grid.to_wire(),
        "fee_type": info.fee_type.value,
        "fee_multiplier": info.fee_multiplier,
        "exchange_index": 0,
    }
    if info.result:
        value = PRICE_SCALE if info.result == "yes" else 0
        out["settlement_value"] = cents_down(value)
        out["settlement_value_dollars"] = format_price(value)
    return out


def orderbook_json(book: OrderBook, depth: int) -> Json:
    """Both the SDK-3.2.0 ``orderbook`` (string pairs + legacy int arrays) and ``orderbook_fp``."""
    sides: dict[str, list[tuple[int, int]]] = {}
    for side in (Side.YES, Side.NO):
        levels = book.levels(side)  # ascending: best bid last
        sides[side.value] = levels[-depth:] if depth > 0 else levels
    fp = {f"{s}_dollars": [[format_price(p), format_qty(q)] for p, q in lv] for s, lv in sides.items()}
    legacy: Json = dict(fp)
    for s, lv in sides.items():
        # Legacy integer arrays only when exact; a partial book would mislead a legacy reader.
        exact = all(p % CENT == 0 and q % QTY_SCALE == 0 for p, q in lv)
        legacy[s] = [[p // CENT, q // QTY_SCALE] for p, q in lv] if exact and lv else None
    return {"orderbook": legacy, "orderbook_fp": fp}


def order_json(o: OrderRecord) -> Json:
    outcome = bid_side(o.side, o.action)
    no_price = PRICE_SCALE - o.yes_price
    return {
        "order_id": o.order_id,
        "user_id": o.owner,
        "client_order_id": o.client_order_id,
        "ticker": o.ticker,
        "side": o.side.value,
        "action": o.action.value,
        "outcome_side": outcome.value,
        "book_side": "bid" if outcome is Side.YES else "ask",
        "type": o.type.value,
        "time_in_force": o.time_in_force.value,
        "status": o.status.value,
        **price_pair("yes_price", o.yes_price),
        **price_pair("no_price", no_price),
        **qty_pair("initial_count", o.initial_count),
        **qty_pair("fill_count", o.fill_count),
        **qty_pair("remaining_count", o.remaining_count),
        **money_pair("taker_fill_cost", o.taker_fill_cost),
        **money_pair("maker_fill_cost", o.maker_fill_cost),
        **money_pair("taker_fees", o.taker_fees),
        **money_pair("maker_fees", o.maker_fees),
        "queue_position": 0,
        "created_time": rfc3339(o.created_time),
        "last_update_time": rfc3339(o.last_update_time),
        "expiration_time": rfc3339(o.expiration_time),
        "self_trade_prevention_type": "taker_at_cross",
        "exchange_index": 0,
    }


def fill_json(f: FillEvent) -> Json:
    outcome = bid_side(f.side, f.action)
    no_price = PRICE_SCALE - f.yes_price
    return {
        "fill_id": f.trade_id,
        "trade_id": f.trade_id,
        "order_id": f.order_id,
        "client_order_id": f.client_order_id,
        "ticker": f.ticker,
        "market_ticker": f.ticker,
        "side": f.side.value,
        "action": f.action.value,
        "outcome_side": outcome.value,
        "book_side": "bid" if outcome is Side.YES else "ask",
        **qty_pair("count", f.count),
        # Legacy `price` is the YES price in dollars as a number.
        "price": f.yes_price / PRICE_SCALE,
        **price_pair("yes_price", f.yes_price),
        **price_pair("no_price", no_price),
        "yes_price_fixed": format_price(f.yes_price),
        "no_price_fixed": format_price(no_price),
        "is_taker": f.is_taker,
        "fee_cost": format_money(f.fee, 4),
        "created_time": rfc3339(f.ts),
        "ts": int(f.ts),
        "exchange_index": 0,
    }


def trade_json(t: TradeEvent) -> Json:
    return {
        "trade_id": t.trade_id,
        "ticker": t.ticker,
        **qty_pair("count", t.count),
        "price": t.yes_price / PRICE_SCALE,  # legacy: the YES price in dollars, as a number
        **price_pair("yes_price", t.yes_price),
        **price_pair("no_price", PRICE_SCALE - t.yes_price),
        "taker_side": t.taker_side.value,
        "taker_outcome_side": t.taker_side.value,
        "taker_book_side": "bid" if t.taker_side is Side.YES else "ask",
        "is_block_trade": False,
        "created_time": rfc3339(t.ts),
    }


def market_position_json(p: PositionView) -> Json:
    return {
        "ticker": p.ticker,
        **money_pair("total_traded", p.total_traded),
        **qty_pair("position", p.position),
        **money_pair("market_exposure", p.position_cost),
        **money_pair("realized_pnl", p.realized_pnl),
        **money_pair("fees_paid", p.fees_paid),
        "resting_orders_count": p.resting_orders_count,
        "last_updated_ts": rfc3339(p.last_updated_ts),
        "exchange_index": 0,
    }


def event_positions_json(positions: list[PositionView]) -> list[Json]:
    """One row per event: totals of its market positions."""
    events: dict[str, list[PositionView]] = {}
    for p in positions:
        events.setdefault(p.event_ticker, []).append(p)
    out = []
    for event_ticker, rows in events.items():
        cost = sum(p.position_cost for p in rows)
        out.append(
            {
                "event_ticker": event_ticker,
                **money_pair("total_cost", cost),
                **qty_pair("total_cost_shares", sum(abs(p.position) for p in rows)),
                **money_pair("event_exposure", cost),
                **money_pair("realized_pnl", sum(p.realized_pnl for p in rows)),
                **money_pair("fees_paid", sum(p.fees_paid for p in rows)),
            }
        )
    return out
