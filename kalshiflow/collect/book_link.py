"""Book views to a subscriber over its own TCP stream: the live path's data plane.

A Ray actor call costs ~2 ms on a small machine and most of a collector's CPU per call goes to
pickling (bench latency; docs/trading.md): too much for the one hop every decision waits on.
A subscriber that offers a link (the Trader: ``book_link()`` returns a :class:`LinkEndpoint`)
gets its views as length-prefixed msgpack frames on one TCP connection per collector instead;
each frame is answered by one ack byte once the views are applied, so the Fanout's contract
(one call in flight per subscriber, coalescing meanwhile) is unchanged. Control stays on Ray
calls (subscribe, stats, restarts); a subscriber without a link, or one on another node behind a
loopback endpoint, gets ``on_books`` Ray calls as before.

Failures are the Fanout's: a send that fails (connection refused or lost, a frame the receiver
could not apply) raises and counts; the next send asks the subscriber for its endpoint again, so a
restarted Trader (new port, new token) is found without anyone telling the collector.

Wire format, both ways over one connection: the client first sends ``token`` (the endpoint's
32 ASCII bytes: a stale endpoint cannot reach another listener that reused the port); then per
send ``u32 big-endian length + msgpack list[BookTop]``; the server answers ``b"\\x01"`` (applied)
or ``b"\\x00"`` (the receiver raised: logged there).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from kalshiflow.cancellation import stop_tasks
from kalshiflow.collect.messages import BookTop

__all__ = ["BookLinks", "LinkEndpoint", "LinkError", "LinkServer", "LOOPBACK"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_HEADER = struct.Struct(">I")
_TOKEN_BYTES = 32
_MAX_FRAME = 64 << 20  # a frame this large is a broken peer, not 100 markets of views
_OK, _FAILED = b"\x01", b"\x00"


class LinkError(ConnectionError):
    """The link failed: not connected, lost, or the receiver could not apply a frame."""


class LinkEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a subscriber listens. ``node_id``: its Ray node (a loopback host is only reachable
    from there)."""

    host: str
    port: int
    token: str
    node_id: str = ""


Apply = Callable[[list[BookTop]], None]


class LinkServer:
    """The subscriber's side: accept collectors, apply each frame with ``apply``, ack it."""

    def __init__(self, apply: Apply) -> None:
        self._apply = apply
        self._token = secrets.token_hex(_TOKEN_BYTES // 2)
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closing = False
        self.frames = self.failures = self.rejected = 0

    async def start(self, host: str = LOOPBACK, node_id: str = "") -> LinkEndpoint:
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        return LinkEndpoint(host=host, port=port, token=self._token, node_id=node_id)

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        decode = msgspec.msgpack.Decoder(list[BookTop]).decode
        try:
            if await reader.readexactly(_TOKEN_BYTES) != self._token.encode():
                self.rejected += 1
                return
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                if size > _MAX_FRAME:
                    self.rejected += 1
                    return
                payload = await reader.readexactly(size)
                try:
                    self._apply(decode(payload))
                except Exception:  # noqa: BLE001 - a bad frame fails this send, not the link
                    self.failures += 1
                    log.exception("book link: could not apply a frame")
                    writer.write(_FAILED)
                else:
                    self.frames += 1
                    writer.write(_OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the collector went away: it reconnects when it has something to send
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # close() gave up waiting for the EOF: end quietly (asyncio reports a cancelled handler)
        finally:
            self._conns.pop(task, None)
            writer.close()

    async def close(self, timeout: float = 1.0) -> None:
        """Stop accepting; end each connection by closing it (its reader sees EOF and the handler
        returns); a handler still running after ``timeout`` is cancelled (shutdown stays bounded)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._conns)
        for writer in list(self._conns.values()):
            writer.close()
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        await stop_tasks(late, timeout=timeout)


class _Link:
    """One collector -> one subscriber connection; sends are serialised by the Fanout."""

    def __init__(self, endpoint: LinkEndpoint) -> None:
        self.endpoint = endpoint
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._encode = msgspec.msgpack.Encoder().encode

    async def send(self, updates: list[BookTop]) -> None:
        if self._writer is None:
            ep = self.endpoint
            self._reader, self._writer = await asyncio.open_connection(ep.host, ep.port)
            self._writer.write(ep.token.encode())
        assert self._reader is not None
        payload = self._encode(updates)
        self._writer.write(_HEADER.pack(len(payload)) + payload)
        answer = await self._reader.readexactly(1)
        if answer != _OK:
            raise LinkError("the subscriber could not apply the views")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


Resolve = Callable[[Any], Awaitable["LinkEndpoint | None"]]
RaySend = Callable[[Any, list[BookTop]], Awaitable[object]]


class BookLinks:
    """The collector's side: ``send(handle, updates)`` over the handle's link when it offers one
    reachable from here, else by ``ray_send``. ``resolve(handle)`` asks for the endpoint (None:
    no link offered)."""

    def __init__(self, resolve: Resolve, ray_send: RaySend, node_id: str = "") -> None:
        self._resolve = resolve
        self._ray_send = ray_send
        self._node_id = node_id
        self._links: dict[Any, _Link | None] = {}  # handle -> link, or None: Ray calls
        self.connects = self.failures = 0

    def reachable(self, ep: LinkEndpoint) -> bool:
        return ep.host != LOOPBACK or not ep.node_id or not self._node_id or ep.node_id == self._node_id

    async def send(self, handle: Any, updates: list[BookTop]) -> object:
        if handle not in self._links:
            ep = await self._resolve(handle)
            if ep is not None and self.reachable(ep):
                self._links[handle] = _Link(ep)
                self.connects += 1
            else:
                self._links[handle] = None
        link = self._links[handle]
        if link is None:
            return await self._ray_send(handle, updates)
        try:
            await link.send(updates)
        except (OSError, asyncio.IncompleteReadError, LinkError) as err:
            # Ask again next time: a restarted subscriber listens on a new port with a new token.
            self.forget(handle)
            self.failures += 1
            raise LinkError(f"book link to {link.endpoint.host}:{link.endpoint.port}: {err!r}") from err
        return None

    def forget(self, handle: Any) -> None:
        link = self._links.pop(handle, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for handle in list(self._links):
            self.forget(handle)

