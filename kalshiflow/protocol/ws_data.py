"""Kalshi WS v2 data messages: trade, fill, market_position, market_lifecycle_v2, event_lifecycle.

Order-book frames live in market_data.py; commands, replies and ``peek`` in ws_commands.py. Wire
Structs accept the current fixed-point and the legacy integer fields; ``decode_message`` hands out
replies as they are and data frames as normalised events with exact ints (prices.py). Fill prices:
see ``FillEvent.price``. The ``*_frame`` builders and ``encode_message`` are the simulator side.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kalshiflow.market.prices import (
    Money,
    Price,
    PriceError,
    Qty,
    format_money,
    format_price,
    format_qty,
    is_whole_cent,
    is_whole_contracts,
    parse_price,
    price_from_cents,
    price_to_cents,
    qty_to_contracts,
)
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol.errors import DecodeError
from kalshiflow.protocol.wire_fields import (
    ModelStruct,
    SidedRecord,
    WireStruct,
    direction,
    to_money,
    to_price,
    to_qty,
    yes_no_prices,
)
from kalshiflow.protocol.ws_commands import (
    ErrorReply,
    Ok,
    Reply,
    ServerMessage,
    Subscribed,
    Unsubscribed,
    frame_type,
)

# --- data messages: wire ---------------------------------------------------------------------------


class TradeWire(WireStruct, frozen=True, kw_only=True):
    market_ticker: str
    trade_id: str | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    count_fp: str | None = None
    yes_price: int | None = None  # legacy cents
    no_price: int | None = None
    count: int | None = None
    taker_side: str | None = None  # deprecated, still sent
    taker_outcome_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool | None = None
    ts: int | None = None  # seconds
    ts_ms: int | None = None


class FillWire(WireStruct, frozen=True, kw_only=True):
    order_id: str
    market_ticker: str
    trade_id: str | None = None
    client_order_id: str | None = None
    is_taker: bool | None = None
    side: str | None = None
    action: str | None = None
    purchased_side: str | None = None
    outcome_side: str | None = None
    book_side: str | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    yes_price: int | None = None
    count_fp: str | None = None
    count: int | None = None
    fee_cost: str | None = None
    post_position_fp: str | None = None
    post_position: int | None = None
    exchange_index: int | None = None
    ts: int | None = None
    ts_ms: int | None = None


class MarketPositionWire(WireStruct, frozen=True, kw_only=True):
    market_ticker: str
    user_id: str | None = None
    position_fp: str | None = None
    position_cost_dollars: str | None = None
    realized_pnl_dollars: str | None = None
    fees_paid_dollars: str | None = None
    position_fee_cost_dollars: str | None = None
    volume_fp: str | None = None
    # legacy: whole contracts; money in centi-cents ($0.0001)
    position: int | None = None
    position_cost: int | None = None
    realized_pnl: int | None = None
    fees_paid: int | None = None
    volume: int | None = None


class LifecycleWire(WireStruct, frozen=True, kw_only=True):
    market_ticker: str
    event_type: str
    open_ts: int | None = None
    close_ts: int | None = None
    result: str | None = None
    determination_ts: int | None = None
    settlement_value: str | int | None = None  # "1.0000" now; integer cents in older payloads
    settled_ts: int | None = None
    is_deactivated: bool | None = None
    price_level_structure: str | None = None
    additional_metadata: dict[str, Any] | None = None
    exchange_index: int | None = None


class EventLifecycleWire(WireStruct, frozen=True, kw_only=True):
    event_ticker: str
    title: str | None = None
    subtitle: str | None = None
    collateral_return_type: str | None = None
    series_ticker: str | None = None
    strike_date: int | None = None
    strike_period: str | None = None
    exchange_index: int | None = None


class TradeFrame(ServerMessage, frozen=True, tag="trade", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: TradeWire


class FillFrame(ServerMessage, frozen=True, tag="fill", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: FillWire


class MarketPositionFrame(ServerMessage, frozen=True, tag="market_position", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: MarketPositionWire


class LifecycleFrame(ServerMessage, frozen=True, tag="market_lifecycle_v2", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: LifecycleWire


class EventLifecycleFrame(ServerMessage, frozen=True, tag="event_lifecycle", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: EventLifecycleWire


DataFrame = TradeFrame | FillFrame | MarketPositionFrame | LifecycleFrame | EventLifecycleFrame
_frame_decoder = msgspec.json.Decoder(Subscribed | Ok | Unsubscribed | ErrorReply | DataFrame)
_encoder = msgspec.json.Encoder()


# --- data messages: normalised ------------------------------------------------------------------------


class TradeEvent(ModelStruct, frozen=True, kw_only=True):
    trade_id: str
    market_ticker: str
    yes_price: Price
    no_price: Price
    count: Qty
    taker_side: Side | None  # outcome side the taker bought
    is_block_trade: bool
    ts_ms: int | None


class FillEvent(ModelStruct, SidedRecord, frozen=True, kw_only=True):
    trade_id: str
    order_id: str
    market_ticker: str
    client_order_id: str
    side: Side
    action: Action
    yes_price: Price
    no_price: Price
    count: Qty
    is_taker: bool
    fee: Money
    post_position: Qty | None  # signed, +YES / -NO, after this fill
    ts_ms: int | None


class PositionEvent(ModelStruct, frozen=True, kw_only=True):
    market_ticker: str
    position: Qty
    position_cost: Money
    realized_pnl: Money
    fees_paid: Money
    volume: Qty


class LifecycleEvent(ModelStruct, frozen=True, kw_only=True):
    market_ticker: str
    event_type: str  # created|deactivated|activated|close_date_updated|determined|settled|...
    open_ts: int | None = None
    close_ts: int | None = None
    result: str | None = None
    determination_ts: int | None = None
    settlement_value: Price | None = None
    settled_ts: int | None = None
    is_deactivated: bool | None = None
    price_level_structure: str | None = None
    additional_metadata: dict[str, Any] | None = None


class DataMessage(ModelStruct, frozen=True, kw_only=True):
    type: str
    sid: int | None
    seq: int | None
    msg: TradeEvent | FillEvent | PositionEvent | LifecycleEvent | EventLifecycleWire


def _ts_ms(ts_ms: int | None, ts_s: int | None) -> int | None:
    return ts_ms if ts_ms is not None else (ts_s * 1000 if ts_s is not None else None)


def _centi_cents(dollars: str | None, legacy: int | None) -> Money:
    return to_money(dollars, None) if dollars else Money((legacy or 0) * 100)


def _normalise(frame: DataFrame) -> DataMessage:
    msg: Any
    if isinstance(frame, TradeFrame):
        t = frame.msg
        yes, no = yes_no_prices(
            to_price(t.yes_price_dollars, t.yes_price, None), to_price(t.no_price_dollars, t.no_price, None)
        )
        taker = t.taker_outcome_side or t.taker_side
        msg = TradeEvent(
            trade_id=t.trade_id or "",
            market_ticker=t.market_ticker,
            yes_price=yes,
            no_price=no,
            count=to_qty(t.count_fp, t.count),
            taker_side=Side(taker) if taker else None,
            is_block_trade=bool(t.is_block_trade),
            ts_ms=_ts_ms(t.ts_ms, t.ts),
        )
    elif isinstance(frame, FillFrame):
        f = frame.msg
        side, action = direction(f.side, f.action, f.outcome_side, "fill")
        yes, no = yes_no_prices(
            to_price(f.yes_price_dollars, f.yes_price, None), to_price(f.no_price_dollars, None, None)
        )
        has_post = f.post_position_fp is not None or f.post_position is not None
        msg = FillEvent(
            trade_id=f.trade_id or "",
            order_id=f.order_id,
            market_ticker=f.market_ticker,
            client_order_id=f.client_order_id or "",
            side=side,
            action=action,
            yes_price=yes,
            no_price=no,
            count=to_qty(f.count_fp, f.count),
            is_taker=bool(f.is_taker),
            fee=to_money(f.fee_cost, None),
            post_position=to_qty(f.post_position_fp, f.post_position) if has_post else None,
            ts_ms=_ts_ms(f.ts_ms, f.ts),
        )
    elif isinstance(frame, MarketPositionFrame):
        m = frame.msg
        msg = PositionEvent(
            market_ticker=m.market_ticker,
            position=to_qty(m.position_fp, m.position),
            position_cost=_centi_cents(m.position_cost_dollars, m.position_cost),
            realized_pnl=_centi_cents(m.realized_pnl_dollars, m.realized_pnl),
            fees_paid=_centi_cents(m.fees_paid_dollars, m.fees_paid),
            volume=to_qty(m.volume_fp, m.volume),
        )
    elif isinstance(frame, LifecycleFrame):
        lc = frame.msg
        sv = lc.settlement_value
        msg = LifecycleEvent(
            market_ticker=lc.market_ticker,
            event_type=lc.event_type,
            open_ts=lc.open_ts,
            close_ts=lc.close_ts,
            result=lc.result,
            determination_ts=lc.determination_ts,
            settlement_value=None
            if sv is None
            else (price_from_cents(sv) if isinstance(sv, int) else parse_price(sv)),
            settled_ts=lc.settled_ts,
            is_deactivated=lc.is_deactivated,
            price_level_structure=lc.price_level_structure,
            additional_metadata=lc.additional_metadata,
        )
    else:
        msg = frame.msg
    return DataMessage(type=frame_type(frame), sid=frame.sid, seq=frame.seq, msg=msg)


def decode_message(data: bytes | str) -> Reply | DataMessage:
    """Decode a reply or a trade/fill/market_position/lifecycle frame.

    Order-book frames and channels not modelled here raise DecodeError: route on ``peek`` first.
    """
    try:
        frame = _frame_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise DecodeError(f"ws message: {err}") from None
    if isinstance(frame, (Subscribed, Ok, Unsubscribed, ErrorReply)):
        return frame
    try:
        return _normalise(frame)
    except (PriceError, ValueError) as err:
        raise DecodeError(f"ws {frame_type(frame)} message: {err}") from None


# --- encoders (simulator side) -------------------------------------------------------------------------


def encode_message(message: Reply | DataFrame) -> bytes:
    """Encode a reply or a wire data frame (``type`` is written first, as Kalshi does)."""
    return _encoder.encode(message)


def trade_frame(sid: int, t: TradeEvent, *, seq: int | None = None, legacy: bool = True) -> TradeFrame:
    """Current fields always; legacy integers too when ``legacy`` and exactly representable."""
    whole = legacy and is_whole_cent(t.yes_price) and is_whole_contracts(t.count)
    ts_s = t.ts_ms // 1000 if t.ts_ms is not None else None
    side = t.taker_side.value if t.taker_side else None
    return TradeFrame(
        sid=sid,
        seq=seq,
        msg=TradeWire(
            market_ticker=t.market_ticker,
            trade_id=t.trade_id,
            yes_price_dollars=format_price(t.yes_price),
            no_price_dollars=format_price(t.no_price),
            count_fp=format_qty(t.count),
            yes_price=price_to_cents(t.yes_price) if whole else None,
            no_price=price_to_cents(t.no_price) if whole else None,
            count=qty_to_contracts(t.count) if whole else None,
            taker_side=side,
            taker_outcome_side=side,
            taker_book_side=None if t.taker_side is None else ("bid" if t.taker_side is Side.YES else "ask"),
            is_block_trade=t.is_block_trade,
            ts=ts_s,
            ts_ms=t.ts_ms,
        ),
    )


def fill_frame(sid: int, f: FillEvent, *, legacy: bool = True) -> FillFrame:
    whole = legacy and is_whole_cent(f.yes_price) and is_whole_contracts(f.count)
    post_whole = legacy and f.post_position is not None and is_whole_contracts(f.post_position)
    outcome = f.outcome_side
    return FillFrame(
        sid=sid,
        msg=FillWire(
            order_id=f.order_id,
            market_ticker=f.market_ticker,
            trade_id=f.trade_id,
            client_order_id=f.client_order_id or None,
            is_taker=f.is_taker,
            side=f.side.value,
            action=f.action.value,
            purchased_side=outcome.value,
            outcome_side=outcome.value,
            book_side="bid" if outcome is Side.YES else "ask",
            yes_price_dollars=format_price(f.yes_price),
            no_price_dollars=format_price(f.no_price),
            yes_price=price_to_cents(f.yes_price) if whole else None,
            count_fp=format_qty(f.count),
            count=qty_to_contracts(f.count) if whole else None,
            fee_cost=format_money(f.fee, 4),
            post_position_fp=None if f.post_position is None else format_qty(f.post_position),
            post_position=qty_to_contracts(f.post_position)
            if post_whole and f.post_position is not None
            else None,
            ts=f.ts_ms // 1000 if f.ts_ms is not None else None,
            ts_ms=f.ts_ms,
        ),
    )


def market_position_frame(sid: int, p: PositionEvent, *, legacy: bool = False) -> MarketPositionFrame:
    """Legacy centi-cent fields (removed by Kalshi 2026-04-02) only on request and when exact."""
    cc = legacy and all(m % 100 == 0 for m in (p.position_cost, p.realized_pnl, p.fees_paid))
    whole = legacy and is_whole_contracts(p.position) and is_whole_contracts(p.volume)
    return MarketPositionFrame(
        sid=sid,
        msg=MarketPositionWire(
            market_ticker=p.market_ticker,
            position_fp=format_qty(p.position),
            position_cost_dollars=format_money(p.position_cost, 4),
            realized_pnl_dollars=format_money(p.realized_pnl, 4),
            fees_paid_dollars=format_money(p.fees_paid, 4),
            volume_fp=format_qty(p.volume),
            position=qty_to_contracts(p.position) if whole else None,
            volume=qty_to_contracts(p.volume) if whole else None,
            position_cost=p.position_cost // 100 if cc else None,
            realized_pnl=p.realized_pnl // 100 if cc else None,
            fees_paid=p.fees_paid // 100 if cc else None,
        ),
    )


def lifecycle_frame(sid: int, e: LifecycleEvent, *, seq: int | None = None) -> LifecycleFrame:
    return LifecycleFrame(
        sid=sid,
        seq=seq,
        msg=LifecycleWire(
            market_ticker=e.market_ticker,
            event_type=e.event_type,
            open_ts=e.open_ts,
            close_ts=e.close_ts,
            result=e.result,
            determination_ts=e.determination_ts,
            settlement_value=None if e.settlement_value is None else format_price(e.settlement_value),
            settled_ts=e.settled_ts,
            is_deactivated=e.is_deactivated,
            price_level_structure=e.price_level_structure,
            additional_metadata=e.additional_metadata,
        ),
    )
