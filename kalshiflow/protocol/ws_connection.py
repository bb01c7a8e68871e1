"""The WS connection with a lean receive path: whole data frames cut out of the byte stream.

websockets parses each frame with generator coroutines, builds a ``Frame``, checks it and queues
it in its message assembler: several microseconds per frame, and Kalshi sends one small text
frame per order-book delta. :class:`LeanConnection` (websockets' client connection, which still
does the handshake, every control frame, fragments and the closing handshake) takes whole,
unmasked, RSV-free data frames out of the stream itself once the connection is open and no
extension was negotiated; the client (kalshiflow.protocol.ws_client) reads them from
:attr:`LeanConnection.messages`. Tests: tests/protocol/test_ws_receive.py.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

__all__ = ["LeanConnection"]


# Flow control of the lean receive queue (messages): stop reading the socket above the first,
# read again at the second. A stalled owner then holds TCP, and the server sees a slow consumer.
_PAUSE_MESSAGES = 16_384
_RESUME_MESSAGES = 4_096
# First header byte of an unfragmented text / binary frame without RSV bits (RFC 6455 §5.2).
_WHOLE_TEXT, _WHOLE_BINARY = 0x81, 0x82
_WELL_FORMED_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from


class LeanConnection(ClientConnection):
    """websockets' client connection with a lean receive path; stamps receive and last-heard times.

    websockets parses each frame with generator coroutines, builds a ``Frame``, checks it and
    queues it in its message assembler: several microseconds per frame, and Kalshi sends one small
    text frame per order-book delta. So once the connection is open (and no extension was
    negotiated), :meth:`data_received` cuts whole, unmasked, RSV-free text and binary frames out
    of the byte stream itself and queues their payloads in :attr:`messages`, each with the
    wall-clock time of the socket read that carried it. Every other frame (pings, pongs, close,
    fragments) is handed to websockets' own parser whole, at a frame boundary, so keepalive, the
    closing handshake and fragment checks work exactly as before; a frame that is malformed or over
    ``max_size`` hands the rest of the stream to websockets for good, which fails the connection
    as it always did. Messages websockets assembles (fragments, frames read with the handshake)
    reach the same queue through :meth:`process_event`, so stream order is kept. No UTF-8
    validation: the owner decodes the JSON bytes itself and counts what does not decode.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_heard = time.monotonic()
        self.messages: deque[tuple[bytes, int]] = deque()
        self._lean = True  # False once a malformed frame handed the stream to websockets for good
        self._chunks: list[bytes] = []  # the start of a frame not yet complete
        self._have = 0  # bytes in _chunks
        self._need = 0  # bytes _chunks must hold before parsing is worth another try
        self._fragments: list[bytes] = []
        self._fragments_ns = 0
        self._waiter: asyncio.Future[None] | None = None
        self.reading_paused = False

    # --- receiving -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks, self._have, self._need = [], 0, 0
        protocol = self.protocol
        if not self._lean or protocol.state is not State.OPEN or protocol.extensions:
            super().data_received(data)
            return
        messages = self.messages
        before = len(messages)
        now_ns = time.time_ns()
        max_size = protocol.max_message_size
        fragmented = protocol.current_size is not None
        size = len(data)
        pos = 0
        need = 2  # bytes from pos that a frame needs at least (grows as its header is read)
        while size - pos >= 2:
            head = data[pos]
            length = data[pos + 1]
            start = pos + 2
            if length >= 126:
                if length == 126:
                    if size - start < 2:
                        need = 4
                        break
                    length = _U16(data, start)[0]
                    start += 2
                elif length == 127:
                    if size - start < 8:
                        need = 10
                        break
                    length = _U64(data, start)[0]
                    start += 8
                else:  # the mask bit: a server never masks (websockets fails the connection)
                    self._hand_over(data, pos)
                    return
            end = start + length
            if max_size is not None and length > max_size:
                self._hand_over(data, pos)
                return
            if (head == _WHOLE_TEXT or head == _WHOLE_BINARY) and not fragmented:
                if end > size:
                    need = end - pos
                    break
                messages.append((data[start:end], now_ns))
                pos = end
                continue
            if head & 0x70 or (head & 0x0F) not in _WELL_FORMED_OPCODES:
                self._hand_over(data, pos)
                return
            if end > size:
                need = end - pos
                break
            # A control frame or a fragment: websockets' parser, exactly one whole frame.
            super().data_received(data[pos:end])
            pos = end
            if protocol.state is not State.OPEN:  # a close frame: websockets takes over
                if pos < size:
                    super().data_received(data[pos:])
                pos = size
                break
            fragmented = protocol.current_size is not None
            need = 2
        if pos < size:
            rest = data[pos:]
            self._chunks, self._have, self._need = [rest], len(rest), need
        if len(messages) > before:
            self.last_heard = time.monotonic()
            self._queued()

    def _hand_over(self, data: bytes, pos: int) -> None:
        """From ``data[pos:]`` on, every byte goes through websockets' parser."""
        self._lean = False
        if self.messages:
            self._queued()
        super().data_received(data[pos:])

    def process_event(self, event: Any) -> None:
        if not isinstance(event, Frame):  # the handshake response
            super().process_event(event)
            return
        opcode = event.opcode
        if opcode is not Opcode.PONG:
            self.last_heard = time.monotonic()
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            # Data frames go to our queue, never to websockets' assembler (stream order).
            if opcode is not Opcode.CONT:
                self._fragments_ns = time.time_ns()
            if event.fin and not self._fragments:
                self.messages.append((bytes(event.data), self._fragments_ns))
            else:
                self._fragments.append(bytes(event.data))
                if not event.fin:
                    return
                self.messages.append((b"".join(self._fragments), self._fragments_ns))
                self._fragments = []
            self._queued()
            return
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def _queued(self) -> None:
        if not self.reading_paused and len(self.messages) > _PAUSE_MESSAGES:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- the reader's side ---------------------------------------------------------------------

    async def wait_messages(self) -> None:
        """Until :attr:`messages` has something; raises ConnectionClosed once closed and empty."""
        while not self.messages:
            if self.protocol.state is State.CLOSED:
                await asyncio.shield(self.connection_lost_waiter)
                raise self.close_exc
            self._waiter = self.loop.create_future()
            await self._waiter

    def consumed(self) -> None:
        """The reader took messages while reading was paused: resume once the queue is short."""
        if len(self.messages) <= _RESUME_MESSAGES:
            self.reading_paused = False
            if self.protocol.state is not State.CLOSED:
                self.transport.resume_reading()
