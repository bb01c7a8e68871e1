"""Async Kalshi WS v2 client: authenticated, self-healing, and agnostic of order-book payloads.

- Each connection attempt signs ``ts + GET + /trade-api/ws/v2`` afresh.
- The connection is re-established FOREVER (exponential backoff, full jitter). Each successful
  connection starts a new *epoch*: ``on_epoch(epoch)`` runs before anything is re-subscribed, so the
  owner can drop per-sid seq state -- Kalshi has no resume; sids and seqs restart and fresh
  snapshots follow the re-subscribe.
- A watchdog treats ``silence_timeout_s`` without any server frame (data or Ping; Pongs to our
  own pings do not count) as a dead link and reconnects; Kalshi pings every 10 s.
- ``on_frame(raw_bytes, recv_ns)`` gets EVERY text frame, command replies included (``ok``
  consumes a seq number on its sid), with the wall-clock receive time stamped when the frame left
  the socket, not when the owner got round to it. Frames are not decoded here beyond a cheap
  envelope peek, and only while a command awaits its reply. Data frames are cut out of the byte
  stream by a lean parser of our own (ws_connection.LeanConnection); websockets still does the handshake and
  every control frame.
- Desired subscriptions (:class:`Subscription`, kept across reconnects) and the subscription
  commands live in ws_subscriptions.py; this module owns the connection they run on.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kalshiflow.config import ExchangeConfig
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.endpoints import resolve_endpoints
from kalshiflow.protocol.errors import DecodeError, WsNotConnected
from kalshiflow.protocol.rest_client import backoff_delay
from kalshiflow.protocol.ws_connection import LeanConnection
from kalshiflow.protocol.ws_data import decode_message
from kalshiflow.protocol.ws_subscriptions import Subscription, SubscriptionCommands
from kalshiflow.secrets import Credentials

log = logging.getLogger(__name__)

FrameHandler = Callable[[bytes, int], Awaitable[None] | None]
EpochHandler = Callable[[int], Awaitable[None] | None]
DisconnectHandler = Callable[[int, str], Awaitable[None] | None]


class WsStats(msgspec.Struct, frozen=True, kw_only=True):
    connected: bool
    epoch: int  # number of connections established so far
    reconnects: int  # epochs after the first
    connect_failures: int
    silence_timeouts: int
    frames: int
    bytes_received: int
    handler_errors: int
    commands_sent: int
    last_frame_ns: int | None  # wall clock of the last received message
    last_error: str | None


class _Pending:
    __slots__ = ("future", "apply")

    def __init__(self, future: asyncio.Future[wc.Reply], apply: Callable[[wc.Reply], None] | None) -> None:
        self.future = future
        self.apply = apply


async def _maybe_await(result: object) -> None:
    if result is not None and inspect.isawaitable(result):
        await result


class KalshiWsClient(SubscriptionCommands):
    def __init__(
        self,
        url: str,
        *,
        signer: Signer | None,
        config: ExchangeConfig | None = None,
        on_frame: FrameHandler | None = None,
        on_epoch: EpochHandler | None = None,
        on_disconnect: DisconnectHandler | None = None,
        silence_timeout_s: float | None = None,
        command_timeout_s: float | None = None,
        backoff_base_s: float | None = None,
        backoff_max_s: float | None = None,
        stable_after_s: float | None = None,
        ping_interval_s: float | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        compression: str | None = "deflate",
        rng: random.Random | None = None,
    ) -> None:
        cfg = config or ExchangeConfig()
        self.url = url
        self._ws_path = urlsplit(url).path or "/"  # what the handshake signs: '/trade-api/ws/v2'
        self._signer = signer
        self._on_frame = on_frame
        self._on_epoch = on_epoch
        self._on_disconnect = on_disconnect
        self._silence = silence_timeout_s if silence_timeout_s is not None else cfg.ws_silence_timeout_s
        self._cmd_timeout = command_timeout_s if command_timeout_s is not None else cfg.request_timeout_s
        self._open_timeout = cfg.request_timeout_s
        self._base = backoff_base_s if backoff_base_s is not None else cfg.backoff_base_s
        self._max = backoff_max_s if backoff_max_s is not None else cfg.backoff_max_s
        self._stable_after = stable_after_s if stable_after_s is not None else max(self._max, 1.0)
        self._ping_interval = ping_interval_s
        self._max_bytes = max_message_bytes
        self._compression = compression
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._subs: list[Subscription] = []
        self._pending: dict[int, _Pending] = {}
        self._conn: LeanConnection | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._epoch = 0
        self._n = dict.fromkeys(("fail", "silence", "frames", "bytes", "handler_errors", "commands"), 0)
        self._last_frame_ns: int | None = None
        self._last_error: str | None = None

    @classmethod
    def from_config(
        cls,
        config: ExchangeConfig,
        credentials: Credentials | None,
        *,
        simulator_host: str | None = None,
        simulator_port: int | None = None,
        **kwargs: Any,
    ) -> KalshiWsClient:
        ep = resolve_endpoints(config, simulator_host=simulator_host, simulator_port=simulator_port)
        signer = Signer.from_credentials(credentials) if credentials else None
        return cls(ep.ws_url, signer=signer, config=config, **kwargs)

    def __repr__(self) -> str:
        return f"KalshiWsClient({self.url!r}, epoch={self._epoch}, connected={self.connected})"

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="kalshi-ws")

    async def close(self) -> None:
        self._closing = True
        conn = self._conn
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=2.0)
            except (TimeoutError, ConnectionClosed, OSError):
                conn.transport.abort()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> KalshiWsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until connected and all registered subscriptions were (re)sent. TimeoutError otherwise."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    def reconnect(self) -> None:
        """Drop the current connection (e.g. after an unrecoverable gap); the run loop reconnects."""
        if self._conn is not None:
            self._conn.transport.abort()

    def stats(self) -> WsStats:
        n = self._n
        return WsStats(
            connected=self.connected,
            epoch=self._epoch,
            reconnects=max(0, self._epoch - 1),
            connect_failures=n["fail"],
            silence_timeouts=n["silence"],
            frames=n["frames"],
            bytes_received=n["bytes"],
            handler_errors=n["handler_errors"],
            commands_sent=n["commands"],
            last_frame_ns=self._last_frame_ns,
            last_error=self._last_error,
        )

    # --- connection loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure to connect is retried, forever
                self._n["fail"] += 1
                self._last_error = self._describe(err)
                delay = backoff_delay(attempt, self._base, self._max, self._rng)
                attempt += 1
                log.warning("kalshi ws connect failed (%s); retry in %.2fs", self._last_error, delay)
                await asyncio.sleep(delay)
                continue
            started = time.monotonic()
            reason = await self._serve(conn)
            if self._closing:
                break
            self._last_error = reason
            if time.monotonic() - started >= self._stable_after:
                attempt = 0
            delay = backoff_delay(attempt, self._base, self._max, self._rng)
            attempt += 1
            log.warning("kalshi ws epoch %d ended (%s); reconnecting in %.2fs", self._epoch, reason, delay)
            await asyncio.sleep(delay)

    @staticmethod
    def _describe(err: BaseException) -> str:
        if isinstance(err, InvalidStatus):
            body = err.response.body[:200].decode("utf-8", "replace") if err.response.body else ""
            return f"HTTP {err.response.status_code} {body}".strip()
        return f"{type(err).__name__}: {err}"

    async def _connect(self) -> LeanConnection:
        headers = self._signer.headers("GET", self._ws_path) if self._signer else {}
        conn = await connect(
            self.url,
            additional_headers=headers,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval,
            close_timeout=2.0,
            max_size=self._max_bytes,
            compression=self._compression,
            proxy=None,
            create_connection=LeanConnection,
        )
        assert isinstance(conn, LeanConnection)
        return conn

    async def _serve(self, conn: LeanConnection) -> str:
        self._epoch += 1
        epoch = self._epoch
        self._conn = conn
        try:
            # Before any frame of this epoch is read: the owner resets seq state first.
            await _maybe_await(self._on_epoch(epoch) if self._on_epoch else None)
        except Exception:
            log.exception("kalshi ws on_epoch(%d) failed", epoch)
        reader = asyncio.create_task(self._read(conn), name=f"kalshi-ws-read-{epoch}")
        watchdog = asyncio.create_task(self._watchdog(conn), name=f"kalshi-ws-watchdog-{epoch}")
        reason = ""
        try:
            await self._resubscribe_all(epoch)
            self._ready.set()
            await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        except (WsNotConnected, TimeoutError) as err:
            reason = f"re-subscribe failed: {type(err).__name__} {err}"
        except Exception as err:  # an owner callback failing must not stop reconnecting
            log.exception("kalshi ws epoch %d failed", epoch)
            reason = f"{type(err).__name__}: {err}"
        finally:
            self._ready.clear()
            self._conn = None
            if not self._closing:
                conn.transport.abort()  # a dead peer would stall a closing handshake
            read_result = (await asyncio.gather(reader, return_exceptions=True))[0]
            silent = watchdog.done() and not watchdog.cancelled() and watchdog.exception() is None
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            # The most specific cause wins: silence explains the close that followed it.
            if silent:
                reason = watchdog.result()
            elif not reason:
                reason = read_result if isinstance(read_result, str) else repr(read_result)
            self._fail_pending(reason)
            if self._on_disconnect is not None:
                try:
                    await _maybe_await(self._on_disconnect(epoch, reason))
                except Exception:
                    log.exception("kalshi ws on_disconnect failed")
        return reason

    async def _read(self, conn: LeanConnection) -> str:
        handler = self._on_frame
        n = self._n
        try:
            messages = conn.messages
            popleft = messages.popleft
            while True:
                if not messages:
                    await conn.wait_messages()
                data, recv_ns = popleft()
                if conn.reading_paused:
                    conn.consumed()
                n["frames"] += 1
                n["bytes"] += len(data)
                self._last_frame_ns = recv_ns
                if self._pending:
                    self._match_reply(data)
                if handler is not None:
                    try:
                        result = handler(data, recv_ns)
                        if result is not None:
                            await _maybe_await(result)
                    except Exception:
                        n["handler_errors"] += 1
                        if n["handler_errors"] == 1 or n["handler_errors"] % 1000 == 0:
                            log.exception("kalshi ws frame handler failed (%d so far)", n["handler_errors"])
        except ConnectionClosed as err:
            reason = f"connection closed: {err}"
            # Fail waiting commands now, not after their timeout: a re-subscribe in flight must
            # give up at once so the next epoch starts quickly.
            self._fail_pending(reason)
            return reason

    def _fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(WsNotConnected(f"connection lost ({reason})"))

    async def _watchdog(self, conn: LeanConnection) -> str:
        interval = max(0.01, min(self._silence / 4, 1.0))
        while True:
            await asyncio.sleep(interval)
            idle = time.monotonic() - conn.last_heard
            if idle > self._silence:
                self._n["silence"] += 1
                # Abort at once: this also ends a re-subscribe stuck waiting on a dead peer.
                conn.transport.abort()
                return f"silent for {idle:.2f}s (limit {self._silence}s)"

    def _match_reply(self, data: bytes) -> None:
        try:
            env = wc.peek(data)
        except DecodeError:
            return
        pending = self._pending.get(env.id) if env.id else None
        if pending is None or env.type not in wc.REPLY_TYPES or pending.future.done():
            return
        try:
            reply = decode_message(data)
        except DecodeError as err:
            pending.future.set_exception(err)
            return
        assert isinstance(reply, (wc.Subscribed, wc.Ok, wc.Unsubscribed, wc.ErrorReply))
        if pending.apply is not None and not isinstance(reply, wc.ErrorReply):
            # Applied here, before on_frame sees this reply, so sids are current for the owner.
            pending.apply(reply)
        pending.future.set_result(reply)

    # --- commands --------------------------------------------------------------------------------------

    async def command(
        self,
        build: Callable[[int], wc.Command],
        *,
        apply: Callable[[wc.Reply], None] | None = None,
        timeout: float | None = None,
    ) -> wc.Reply:
        """Send ``build(id)`` on the current connection and await its reply; error replies raise."""
        conn = self._conn
        if conn is None:
            raise WsNotConnected("not connected")
        cid = next(self._ids)
        future: asyncio.Future[wc.Reply] = asyncio.get_running_loop().create_future()
        self._pending[cid] = _Pending(future, apply)
        try:
            try:
                await conn.send(wc.encode_command(build(cid)).decode(), text=True)
            except ConnectionClosed as err:
                raise WsNotConnected(f"connection lost: {err}") from None
            self._n["commands"] += 1
            reply = await asyncio.wait_for(future, self._cmd_timeout if timeout is None else timeout)
        finally:
            self._pending.pop(cid, None)
        if isinstance(reply, wc.ErrorReply):
            raise reply.exception()
        return reply
