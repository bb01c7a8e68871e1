"""Kalshi WS v2 control traffic: commands, their replies, error codes, and the frame envelope.

- Commands (client -> server): subscribe / unsubscribe / update_subscription / list_subscriptions,
  with ``encode_command`` for clients and a validating ``decode_command`` for the simulator that
  raises :class:`InvalidCommand` carrying the Kalshi error code to answer with.
- Replies (server -> client): subscribed, ok, unsubscribed, error.
- ``peek`` reads only type/id/sid/seq of any frame, orderbook frames included, so a dispatcher can
  route without decoding payloads.

Data messages (trade, fill, ...) and ``decode_message`` are in ws_data.py.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kalshiflow.protocol.errors import DecodeError, WsCommandError
from kalshiflow.protocol.wire_fields import WireStruct

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


# --- commands ------------------------------------------------------------------------------------


class SubscribeParams(WireStruct, frozen=True, kw_only=True):
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


class UnsubscribeParams(WireStruct, frozen=True, kw_only=True):
    sids: list[int]


class UpdateSubscriptionParams(WireStruct, frozen=True, kw_only=True):
    action: str | None = None
    sid: int | None = None
    sids: list[int] | None = None
    market_ticker: str | None = None
    market_tickers: list[str] | None = None
    market_id: str | None = None
    market_ids: list[str] | None = None
    send_initial_snapshot: bool | None = None


class _Cmd(WireStruct, frozen=True, tag_field="cmd"):
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


class SubscriptionInfo(WireStruct, frozen=True, kw_only=True):
    channel: str
    sid: int


class OkMarkets(WireStruct, frozen=True, kw_only=True):
    market_tickers: list[str] | None = None
    market_ids: list[str] | None = None


class ErrorMsg(WireStruct, frozen=True, kw_only=True):
    code: int
    msg: str = ""
    market_ticker: str | None = None
    market_id: str | None = None


class ServerMessage(WireStruct, frozen=True, tag_field="type"):
    """Base of every server -> client message (replies here, data frames in ws_data.py)."""


class Subscribed(ServerMessage, frozen=True, tag="subscribed", kw_only=True):
    id: int | None = None
    msg: SubscriptionInfo


class Ok(ServerMessage, frozen=True, tag="ok", kw_only=True):
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


class Unsubscribed(ServerMessage, frozen=True, tag="unsubscribed", kw_only=True):
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class ErrorReply(ServerMessage, frozen=True, tag="error", kw_only=True):
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


def frame_type(message: msgspec.Struct) -> str:
    """The ``type`` tag of a decoded reply/frame Struct (msgspec keeps tags off the instance)."""
    return str(type(message).__struct_config__.tag)
