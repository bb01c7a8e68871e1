"""Kalshi WS v2 messages other than order-book frames (those live in market_data.py).

- Commands (client -> server): subscribe / unsubscribe / update_subscription / list_subscriptions,
  with ``encode_command`` for clients and a validating ``decode_command`` for the simulator that
  raises :class:`InvalidCommand` carrying the Kalshi error code to answer with.
- Replies (server -> client): subscribed, ok, unsubscribed, error.
- Data messages: trade, fill, market_position, market_lifecycle_v2, event_lifecycle. Wire
  Structs accept the current fixed-point and the legacy integer fields; ``decode_message`` hands
  out normalised events with exact ints (prices.py). Fill prices: see ``FillEvent.price``.
- ``peek`` reads only type/id/sid/seq of any frame, orderbook frames included, so a dispatcher can
  route without decoding payloads.
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
from kalshiflow.market.types import Action, Side, bid_side
from kalshiflow.protocol.errors import DecodeError, WsCommandError
from kalshiflow.protocol.rest_models import direction, to_money, to_price, to_qty, yes_no_prices

# --- error codes -------------------------------------------------------------------------------

WS_ERROR_CODES: dict[int, str] = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    6: "Already subscribed",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    16: "Market not found",
    17: "Internal error",
    18: "Command timeout",
    # 19-22: Kalshi documents these only as "shard_factor / shard_key validation".
    19: "Invalid shard_factor",
    20: "Invalid shard_factor",
    21: "Invalid shard_key",
    22: "Invalid shard_key",
    23: "Match IDs required",
    24: "Index IDs required",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
    28: "Underlying tickers required",
}
# After these the server has dropped the subscription: the client must re-create it.
TERMINAL_ERROR_CODES = frozenset({10, 17, 25})

CHANNELS = frozenset(
    {
        "orderbook_delta",
        "ticker",
        "trade",
        "fill",
        "market_positions",
        "user_orders",
        "market_lifecycle_v2",
        "multivariate_market_lifecycle",
        "communications",
        "order_group_updates",
        "cfbenchmarks_value",
        "pyth_value",
    }
)
MARKET_REQUIRED_CHANNELS = frozenset({"orderbook_delta"})
UPDATE_ACTIONS = frozenset({"add_markets", "delete_markets", "get_snapshot"})
REPLY_TYPES = frozenset({"subscribed", "ok", "unsubscribed", "error"})


class InvalidCommand(WsCommandError):
    """decode_command: the command is invalid; answer ``error`` with ``code`` and ``cmd_id``."""

    def __init__(self, code: int, cmd_id: int | None = None, detail: str = "") -> None:
        super().__init__(code, WS_ERROR_CODES.get(code, "Error"))
        self.cmd_id = cmd_id
        self.detail = detail


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


class _Model(msgspec.Struct, frozen=True, kw_only=True):
    pass


# --- commands ------------------------------------------------------------------------------------


class SubscribeParams(_Wire, frozen=True, kw_only=True):
    channels: list[str]
    market_ticker: str | None = None
    market_tickers: list[str] | None = None
    market_id: str | None = None
    market_ids: list[str] | None = None
    send_initial_snapshot: bool | None = None
    skip_ticker_ack: bool | None = None
    use_yes_price: bool | None = None
    shard_factor: int | None = None
    shard_key: int | None = None


class UnsubscribeParams(_Wire, frozen=True, kw_only=True):
    sids: list[int]


class UpdateSubscriptionParams(_Wire, frozen=True, kw_only=True):
    action: str | None = None
    sid: int | None = None
    sids: list[int] | None = None
    market_ticker: str | None = None
    market_tickers: list[str] | None = None
    market_id: str | None = None
    market_ids: list[str] | None = None
    send_initial_snapshot: bool | None = None


class _Cmd(_Wire, frozen=True, tag_field="cmd"):
    pass


class Subscribe(_Cmd, frozen=True, tag="subscribe", kw_only=True):
    id: int
    params: SubscribeParams


class Unsubscribe(_Cmd, frozen=True, tag="unsubscribe", kw_only=True):
    id: int
    params: UnsubscribeParams


class UpdateSubscription(_Cmd, frozen=True, tag="update_subscription", kw_only=True):
    id: int
    params: UpdateSubscriptionParams


class ListSubscriptions(_Cmd, frozen=True, tag="list_subscriptions", kw_only=True):
    id: int


Command = Subscribe | Unsubscribe | UpdateSubscription | ListSubscriptions

_command_encoder = msgspec.json.Encoder()


def encode_command(cmd: Command) -> bytes:
    return _command_encoder.encode(cmd)


class _RawCommand(msgspec.Struct):
    id: int | None = None
    cmd: str | None = None
    params: dict[str, Any] | None = None


def _markets(p: SubscribeParams | UpdateSubscriptionParams) -> list[str] | None:
    if p.market_ticker is not None and p.market_tickers is not None:
        raise InvalidCommand(11, detail="market_ticker and market_tickers are exclusive")
    if p.market_ticker is not None:
        return [p.market_ticker]
    return p.market_tickers


def decode_command(data: bytes) -> Command:
    """Parse and validate a client command the way Kalshi does (simulator side).

    ``market_ticker`` is folded into ``market_tickers`` and ``sid`` into ``sids`` so the
    simulator deals with one form. ``id: 0`` means "no id" (spec).
    """
    try:
        raw = msgspec.json.decode(data, type=_RawCommand)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidCommand(1) from None
    cid = raw.id or None
    if raw.cmd == "list_subscriptions":
        return ListSubscriptions(id=cid or 0)
    if raw.cmd not in ("subscribe", "unsubscribe", "update_subscription"):
        raise InvalidCommand(5, cid)
    if raw.params is None:
        raise InvalidCommand(2, cid)
    typ = {"subscribe": SubscribeParams, "unsubscribe": UnsubscribeParams}.get(
        raw.cmd, UpdateSubscriptionParams
    )
    try:
        params = msgspec.convert(raw.params, typ)
    except msgspec.ValidationError as err:
        text = str(err)
        if "missing required field `channels`" in text:
            raise InvalidCommand(3, cid) from None
        if "missing required field `sids`" in text:
            raise InvalidCommand(4, cid) from None
        raise InvalidCommand(11, cid, text) from None
    try:
        if isinstance(params, SubscribeParams):
            if not params.channels:
                raise InvalidCommand(3)
            unknown = [c for c in params.channels if c not in CHANNELS]
            if unknown:
                raise InvalidCommand(8, detail=unknown[0])
            markets = _markets(params)
            if MARKET_REQUIRED_CHANNELS.intersection(params.channels) and not markets:
                raise InvalidCommand(14)
            if params.shard_key is not None and params.shard_factor is None:
                raise InvalidCommand(11, detail="shard_key needs shard_factor")
            return Subscribe(
                id=cid or 0,
                params=msgspec.structs.replace(params, market_ticker=None, market_tickers=markets),
            )
        if isinstance(params, UnsubscribeParams):
            if not params.sids:
                raise InvalidCommand(4)
            return Unsubscribe(id=cid or 0, params=params)
        sids = params.sids if params.sid is None else [params.sid] + (params.sids or [])
        if sids is None or len(sids) != 1:
            raise InvalidCommand(12)
        if not params.action:
            raise InvalidCommand(15)
        if params.action not in UPDATE_ACTIONS:
            raise InvalidCommand(13, detail=params.action)
        markets = _markets(params)
        if params.action != "get_snapshot" and not (markets or params.market_ids):
            raise InvalidCommand(14)
        return UpdateSubscription(
            id=cid or 0,
            params=msgspec.structs.replace(
                params, sid=None, sids=sids, market_ticker=None, market_tickers=markets
            ),
        )
    except InvalidCommand as err:
        err.cmd_id = cid
        raise


# --- replies -------------------------------------------------------------------------------------


class SubscriptionInfo(_Wire, frozen=True, kw_only=True):
    channel: str
    sid: int


class OkMarkets(_Wire, frozen=True, kw_only=True):
    market_tickers: list[str] | None = None
    market_ids: list[str] | None = None


class ErrorMsg(_Wire, frozen=True, kw_only=True):
    code: int
    msg: str = ""
    market_ticker: str | None = None
    market_id: str | None = None


class _Msg(_Wire, frozen=True, tag_field="type"):
    pass


class Subscribed(_Msg, frozen=True, tag="subscribed", kw_only=True):
    id: int | None = None
    msg: SubscriptionInfo


class Ok(_Msg, frozen=True, tag="ok", kw_only=True):
    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    # update_subscription/subscribe-merge: {"market_tickers": [...]}; list_subscriptions: a list.
    msg: OkMarkets | list[SubscriptionInfo] | None = None
    market_tickers: list[str] | None = None  # an older server put them at the top level

    @property
    def tickers(self) -> list[str] | None:
        if isinstance(self.msg, OkMarkets) and self.msg.market_tickers is not None:
            return self.msg.market_tickers
        return self.market_tickers


class Unsubscribed(_Msg, frozen=True, tag="unsubscribed", kw_only=True):
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class ErrorReply(_Msg, frozen=True, tag="error", kw_only=True):
    id: int | None = None
    sid: int | None = None
    msg: ErrorMsg

    def exception(self) -> WsCommandError:
        return WsCommandError(
            self.msg.code, self.msg.msg or WS_ERROR_CODES.get(self.msg.code, ""), self.msg.market_ticker
        )


Reply = Subscribed | Ok | Unsubscribed | ErrorReply


def error_reply(code: int, cmd_id: int | None = None, **extra: str) -> ErrorReply:
    return ErrorReply(
        id=cmd_id or None, msg=ErrorMsg(code=code, msg=WS_ERROR_CODES.get(code, "Error"), **extra)
    )


# --- envelope peek -----------------------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """What a dispatcher needs; ``msg`` is skipped without building Python objects."""

    type: str = ""
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


_peek_decoder = msgspec.json.Decoder(Envelope)


def peek(data: bytes | str) -> Envelope:
    try:
        return _peek_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise DecodeError(f"frame envelope: {err}") from None


# --- data messages: wire ---------------------------------------------------------------------------


class TradeWire(_Wire, frozen=True, kw_only=True):
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


class FillWire(_Wire, frozen=True, kw_only=True):
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


class MarketPositionWire(_Wire, frozen=True, kw_only=True):
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


class LifecycleWire(_Wire, frozen=True, kw_only=True):
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


class EventLifecycleWire(_Wire, frozen=True, kw_only=True):
    event_ticker: str
    title: str | None = None
    subtitle: str | None = None
    collateral_return_type: str | None = None
    series_ticker: str | None = None
    strike_date: int | None = None
    strike_period: str | None = None
    exchange_index: int | None = None


class TradeFrame(_Msg, frozen=True, tag="trade", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: TradeWire


class FillFrame(_Msg, frozen=True, tag="fill", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: FillWire


class MarketPositionFrame(_Msg, frozen=True, tag="market_position", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: MarketPositionWire


class LifecycleFrame(_Msg, frozen=True, tag="market_lifecycle_v2", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: LifecycleWire


class EventLifecycleFrame(_Msg, frozen=True, tag="event_lifecycle", kw_only=True):
    sid: int | None = None
    seq: int | None = None
    msg: EventLifecycleWire


DataFrame = TradeFrame | FillFrame | MarketPositionFrame | LifecycleFrame | EventLifecycleFrame
_frame_decoder = msgspec.json.Decoder(Subscribed | Ok | Unsubscribed | ErrorReply | DataFrame)
_encoder = msgspec.json.Encoder()


# --- data messages: normalised ------------------------------------------------------------------------


class TradeEvent(_Model, frozen=True, kw_only=True):
    trade_id: str
    market_ticker: str
    yes_price: Price
    no_price: Price
    count: Qty
    taker_side: Side | None  # outcome side the taker bought
    is_block_trade: bool
    ts_ms: int | None


class FillEvent(_Model, frozen=True, kw_only=True):
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

    @property
    def price(self) -> Price:
        """Price of the fill's own side: the NO price (1 - yes_price) for a NO fill."""
        return self.no_price if self.side is Side.NO else self.yes_price

    @property
    def outcome_side(self) -> Side:
        return bid_side(self.side, self.action)


class PositionEvent(_Model, frozen=True, kw_only=True):
    market_ticker: str
    position: Qty
    position_cost: Money
    realized_pnl: Money
    fees_paid: Money
    volume: Qty


class LifecycleEvent(_Model, frozen=True, kw_only=True):
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


class DataMessage(_Model, frozen=True, kw_only=True):
    type: str
    sid: int | None
    seq: int | None
    msg: TradeEvent | FillEvent | PositionEvent | LifecycleEvent | EventLifecycleWire


def frame_type(message: msgspec.Struct) -> str:
    """The ``type`` tag of a decoded reply/frame Struct (msgspec keeps tags off the instance)."""
    return str(type(message).__struct_config__.tag)


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
