"""The WS endpoint (``/trade-api/ws/v2``): handshake auth, command handling, one writer per socket.

Commands are parsed by :func:`kalshiflow.protocol.ws_commands.decode_command`, which validates
them the way Kalshi does and names the error code; anything malformed (bad JSON, wrong types,
unknown command, binary or oversized frames) gets an ``error`` reply and the connection and its
other subscriptions carry on. Commands and state events run on the same event loop, so a
snapshot enqueued while handling a command is consistent with the deltas queued after it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from kalshiflow.exchange.accounts import Accounts
from kalshiflow.exchange.ws_hub import (
    ORDERBOOK,
    POSITIONS,
    SUPPORTED_CHANNELS,
    TICKER,
    USER_ORDERS,
    Client,
    Hub,
    Subscription,
)
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol.errors import AuthError

log = logging.getLogger(__name__)

try:  # the server's WS protocol (exchange.server runs uvicorn's sans-I/O one)
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import SERVER, State
except ImportError:  # pragma: no cover - another server: frames go through ASGI one by one
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

# Frames written to the socket in one go, at most (a batch is one transport.write).
_WRITE_BATCH = 512
# Unmasked, unfragmented text frame headers (RFC 6455 §5.2), as websockets writes them.
_SHORT_HEADERS = [bytes((0x81, n)) for n in range(126)]
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def _raw_protocol(ws: WebSocket) -> Any:
    """uvicorn's sans-I/O WS protocol behind ``ws``, if frames may be written to its transport
    directly; else None (frames then go through ASGI ``websocket.send``, one by one).

    Only for a plain server connection: no extension negotiated (per-message deflate is off in
    exchange.server), so a text frame on the wire is a fixed header + the UTF-8 payload, exactly
    what websockets' ``send_text`` produces. The protocol is found through the ASGI ``send``
    callable: Starlette's wrappers keep it in a closure variable named ``send``.
    """
    if WebSocketsSansIOProtocol is None:
        return None
    send: Any = getattr(ws, "_send", None)
    for _ in range(8):
        proto = getattr(send, "__self__", None)
        if proto is not None:
            break
        code, cells = getattr(send, "__code__", None), getattr(send, "__closure__", None)
        if code is None or not cells:
            return None
        cell = dict(zip(code.co_freevars, cells, strict=False)).get("send")
        if cell is None:
            return None
        try:
            send = cell.cell_contents
        except ValueError:
            return None
    else:
        return None
    if (
        not isinstance(proto, WebSocketsSansIOProtocol)
        or getattr(send, "__func__", None) is not WebSocketsSansIOProtocol.send
        or type(proto).send is not WebSocketsSansIOProtocol.send
    ):
        return None
    conn = getattr(proto, "conn", None)
    if conn is None or conn.side is not SERVER or conn.extensions or not proto.handshake_complete:
        return None
    return proto


def _frame_bytes(frames: Any, n: int) -> bytes:
    """The next ``n`` queued text frames, popped, as WS frames ready for the socket."""
    out: list[bytes] = []
    append = out.append
    popleft = frames.popleft
    short = _SHORT_HEADERS
    for _ in range(n):
        data = popleft().encode()
        size = len(data)
        if size < 126:
            append(short[size])
        elif size < 65_536:
            append(_HEADER_16(0x81, 126, size))
        else:
            append(_HEADER_64(0x81, 127, size))
        append(data)
    return b"".join(out)

WS_PATH = "/trade-api/ws/v2"
# Channels whose market filter selects markets (the others ignore tickers).
_MARKET_FILTERED = frozenset({ORDERBOOK, "trade", "fill", POSITIONS, TICKER, USER_ORDERS})


class WsApi:
    def __init__(self, hub: Hub, accounts: Accounts, *, max_frame_bytes: int, queue_frames: int) -> None:
        self.hub = hub
        self.accounts = accounts
        self.max_frame_bytes = max_frame_bytes
        self.queue_frames = queue_frames
        self.connections = 0

    async def endpoint(self, ws: WebSocket) -> None:
        raw = ws.scope.get("raw_path")
        path = raw.decode("latin-1") if raw else ws.url.path
        try:
            owner = self.accounts.authenticate("GET", path, ws.headers)
        except AuthError as err:
            # Kalshi's handshake refusal body is flat, unlike REST's nested one.
            body = b'{"code":"authentication_error","details":"%s"}' % err.details.encode()
            await ws.send_denial_response(Response(body, status_code=401, media_type="application/json"))
            return
        await ws.accept()
        client = Client(owner, self.queue_frames)
        self.hub.register(client)
        writer = asyncio.create_task(self._write_loop(ws, client))
        self.connections += 1
        try:
            while not writer.done():
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self._handle_frame(client, message.get("text"), message.get("bytes"))
        except WebSocketDisconnect:
            pass
        finally:
            self.connections -= 1
            self.hub.detach_client(client)
            writer.cancel()
            try:
                await writer
            except (asyncio.CancelledError, Exception):
                pass

    async def _write_loop(self, ws: WebSocket, client: Client) -> None:
        proto = _raw_protocol(ws)
        if proto is not None:
            await self._write_batches(proto, client)
            return
        box = client.outbox
        frames = box.frames
        send = ws.send
        try:
            while True:
                await box.wakeup.wait()
                box.wakeup.clear()
                while frames:
                    await send({"type": "websocket.send", "text": frames.popleft()})
        except (OSError, RuntimeError, WebSocketDisconnect):
            return  # the peer went away; the reader sees the disconnect and cleans up

    @staticmethod
    async def _write_batches(proto: Any, client: Client) -> None:
        """The writer on uvicorn's protocol: every frame queued when it wakes goes out in one
        socket write (batches of at most ``_WRITE_BATCH``), honouring the transport's flow control
        as ``websocket.send`` does. Same bytes on the wire as one ``send`` per frame; far fewer
        writes and wake-ups, here and at the receiving end."""
        box = client.outbox
        frames = box.frames
        wakeup = box.wakeup
        writable = proto.writable
        transport = proto.transport
        conn = proto.conn
        while True:
            await wakeup.wait()
            wakeup.clear()
            while frames:
                if not writable.is_set():
                    await writable.wait()
                if (
                    proto.close_sent
                    or proto.disconnected
                    or conn.state is not State.OPEN
                    or transport.is_closing()
                ):
                    return  # the peer went away; the reader sees the disconnect and cleans up
                transport.write(_frame_bytes(frames, min(len(frames), _WRITE_BATCH)))
                if frames:
                    await asyncio.sleep(0)  # a deep backlog: let the loop breathe between batches

    # ------------------------------------------------------------------ commands

    def _handle_frame(self, client: Client, text: str | None, data: bytes | None) -> None:
        size = len(text) if text is not None else len(data or b"")
        if text is None or size > self.max_frame_bytes:
            # Kalshi's commands are JSON text frames of modest size.
            self.hub.reply(client, wc.error_reply(1))
            return
        try:
            command = wc.decode_command(text.encode())
        except wc.InvalidCommand as err:
            self.hub.reply(client, wc.error_reply(err.code, err.cmd_id))
            return
        try:
            if isinstance(command, wc.Subscribe):
                self._subscribe(client, command)
            elif isinstance(command, wc.Unsubscribe):
                self._unsubscribe(client, command)
            elif isinstance(command, wc.UpdateSubscription):
                self._update(client, command)
            else:
                infos = [wc.SubscriptionInfo(channel=s.channel, sid=s.sid) for s in client.subs.values()]
                self.hub.reply(client, wc.Ok(id=command.id or None, msg=infos))
        except Exception:  # a bug must cost one command, never the connection
            log.exception("WS command failed")
            self.hub.reply(client, wc.error_reply(17, command.id))

    def _unknown_market(self, tickers: list[str] | None) -> str | None:
        for t in tickers or ():
            if self.hub.state.market(t) is None:
                return t
        return None

    def _ok(self, client: Client, cmd_id: int, sub: Subscription, skip_ack: bool = False) -> None:
        markets = None if skip_ack or sub.tickers is None else wc.OkMarkets(market_tickers=list(sub.tickers))
        self.hub.reply(client, wc.Ok(id=cmd_id or None, sid=sub.sid, seq=sub.next_seq(), msg=markets))

    def _subscribe(self, client: Client, cmd: wc.Subscribe) -> None:
        p = cmd.params
        unsupported = [c for c in p.channels if c not in SUPPORTED_CHANNELS]
        if unsupported:
            self.hub.reply(client, wc.error_reply(8, cmd.id))
            return
        missing = self._unknown_market(p.market_tickers)
        if missing is not None:
            self.hub.reply(client, wc.error_reply(16, cmd.id, market_ticker=missing))
            return
        for channel in dict.fromkeys(p.channels):
            tickers = p.market_tickers if channel in _MARKET_FILTERED and p.market_tickers else None
            existing = client.by_channel(channel)
            if existing is not None:
                # Kalshi merges a repeated subscribe into the channel's sid: one `ok` with the full
                # list, snapshots only for markets that were not on it yet (§1.8 S3).
                if existing.tickers is None or tickers is None:
                    self.hub.reply(client, wc.error_reply(6, cmd.id))
                    continue
                new = self.hub.add_tickers(existing, tickers)
                self._ok(client, cmd.id, existing, bool(p.skip_ticker_ack))
                if channel == ORDERBOOK:
                    for t in new:
                        self.hub.snapshot(existing, t)
                continue
            sub = Subscription(client.next_sid, channel, client, tickers, bool(p.use_yes_price))
            client.next_sid += 1
            self.hub.attach(sub)
            self.hub.reply(
                client,
                wc.Subscribed(id=cmd.id or None, msg=wc.SubscriptionInfo(channel=channel, sid=sub.sid)),
            )
            if channel == ORDERBOOK and sub.tickers:
                for t in sub.tickers:
                    self.hub.snapshot(sub, t)
            elif channel == TICKER and p.send_initial_snapshot:
                chosen = sub.tickers or [
                    m.ticker for m in self.hub.state.markets() if m.status.value == "active"
                ]
                self.hub.ticker_snapshot(sub, chosen)

    def _unsubscribe(self, client: Client, cmd: wc.Unsubscribe) -> None:
        for sid in cmd.params.sids:
            sub = client.subs.get(sid)
            if sub is None:
                self.hub.reply(client, wc.error_reply(7, cmd.id))
                continue
            self.hub.detach(sub)
            self.hub.reply(client, wc.Unsubscribed(id=cmd.id or None, sid=sid, seq=sub.next_seq()))

    def _update(self, client: Client, cmd: wc.UpdateSubscription) -> None:
        p = cmd.params
        sid = (p.sids or [0])[0]
        sub = client.subs.get(sid)
        if sub is None:
            self.hub.reply(client, wc.error_reply(7, cmd.id))
            return
        missing = self._unknown_market(p.market_tickers)
        if missing is not None:
            self.hub.reply(client, wc.error_reply(16, cmd.id, market_ticker=missing))
            return
        tickers = p.market_tickers or []
        if p.action == "get_snapshot":
            if sub.channel != ORDERBOOK or sub.tickers is None:
                self.hub.reply(client, wc.error_reply(13, cmd.id))
                return
            chosen = tickers or list(sub.tickers)
            stray = next((t for t in chosen if t not in sub.tickers), None)
            if stray is not None:
                self.hub.reply(client, wc.error_reply(16, cmd.id, market_ticker=stray))
                return
            self._ok(client, cmd.id, sub)
            for t in chosen:
                self.hub.snapshot(sub, t)
            return
        if sub.tickers is None:
            # A subscription to every market has no list to change.
            self.hub.reply(client, wc.error_reply(11, cmd.id))
            return
        if p.action == "add_markets":
            new = self.hub.add_tickers(sub, tickers)
            self._ok(client, cmd.id, sub)
            if sub.channel == ORDERBOOK:
                for t in new:
                    self.hub.snapshot(sub, t)
        else:  # delete_markets (decode_command admits only the three actions)
            self.hub.remove_tickers(sub, tickers)
            self._ok(client, cmd.id, sub)
