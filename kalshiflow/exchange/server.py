"""The exchange simulator server: one port, REST at ``/trade-api/v2``, WS at ``/trade-api/ws/v2``.

:class:`Simulator` wires an :class:`ExchangeState` to the REST routes (rest_api), the WS
endpoint and fan-out (ws_api, ws_hub), the API keys (accounts) and the rate limiter, and serves
them with uvicorn on the state's event loop. Optionally it drives the state with the synthetic
market generator. See :mod:`kalshiflow.exchange.embedded` for the ways to run one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from kalshiflow.config import SimulatorConfig
from kalshiflow.exchange.accounts import Accounts, PublicKey
from kalshiflow.exchange.ratelimit import RateLimiter
from kalshiflow.exchange.rest_api import RestApi, error_response
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.exchange.ws_api import WS_PATH, WsApi
from kalshiflow.exchange.ws_hub import Hub
from kalshiflow.market.prices import Money, parse_money
from kalshiflow.protocol.endpoints import simulator_endpoints

log = logging.getLogger(__name__)

HEARTBEAT = b"heartbeat"
# Kalshi's documented server-side message size limit (§1.2); commands above the configured
# max_frame_bytes but below this get an error reply instead of a closed connection.
WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class HeartbeatProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WS protocol, pinging with Kalshi's payload ``heartbeat`` instead of random bytes.

    Clients that check the payload (or tests that assert it) see exactly what Kalshi sends. The
    override mirrors uvicorn's ``send_keepalive_ping`` (uvicorn is pinned below 1.0).

    It also stops uvicorn from logging "returned without completing handshake" after a handshake
    refused with an HTTP 401 body, which is how Kalshi refuses one: that is an answer, not an
    application error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app

        async def app_then_mark_denial(scope: Any, receive: Any, send: Any) -> None:
            await app(scope, receive, send)
            if self.close_sent and self.initial_response is not None:
                self.handshake_complete = True

        self.app = app_then_mark_denial

    def send_keepalive_ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing():
            return
        self.pending_ping_payload = HEARTBEAT
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(HEARTBEAT)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            self.pong_timer = self.loop.call_later(self.ping_timeout, self.keepalive_timeout)
        else:
            self.schedule_ping()


def starting_balance(config: SimulatorConfig) -> Money:
    return parse_money(config.starting_balance_dollars)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in Kalshi's JSON error form, not Starlette's plain text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "internal_error")
    return error_response(status, code, str(getattr(exc, "detail", "")) or code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("exchange simulator: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def _report_failure(task: asyncio.Task[Any]) -> None:
    """A driver (generator, replay) that dies must say so: the exchange would otherwise go quiet."""
    if not task.cancelled() and task.exception() is not None:
        log.error("exchange simulator: %s stopped", task.get_name(), exc_info=task.exception())


class Simulator:
    """A Kalshi-compatible exchange on one port. Create, then ``await start()`` / ``await stop()``.

    ``state`` may be supplied (tests, replay); by default a fresh one is made. ``keys`` maps API
    key ids to public keys (PEM text or key objects); each is an account with the configured
    starting balance. ``driver``, when given, is started as a task once the server listens (the
    synthetic generator or a replay); it receives the simulator and runs until cancelled.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        state: ExchangeState | None = None,
        keys: Mapping[str, PublicKey] | None = None,
        driver: Callable[[Simulator], Any] | None = None,
    ) -> None:
        self.config = config = config or SimulatorConfig()
        self.state = state or ExchangeState(
            clock=time.time, starting_balance=starting_balance(config), seed=config.seed
        )
        self.accounts = Accounts(self.state, max_skew_s=config.clock_skew_s)
        for key_id, public_key in (keys or {}).items():
            self.accounts.register(key_id, public_key)
        self.hub = Hub(self.state)
        self.limiter = RateLimiter(
            config.read_tokens_per_s,
            config.write_tokens_per_s,
            cost=config.request_cost_tokens,
            bucket_seconds=config.bucket_seconds,
            enabled=config.rate_limit,
        )
        self.rest = RestApi(self.state, self.accounts, self.limiter)
        self.ws = WsApi(
            self.hub,
            self.accounts,
            max_frame_bytes=config.max_frame_bytes,
            queue_frames=config.ws_queue_frames,
        )
        self.app = Starlette(
            routes=[*self.rest.routes(), WebSocketRoute(WS_PATH, self.ws.endpoint)],
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )
        self.driver = driver
        # The synthetic market generator, when a generator driver runs (readable by tests/tools).
        self.generator: Any = None
        self.host = config.host
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def rest_url(self) -> str:
        return simulator_endpoints(self.host, self.port).rest_url

    @property
    def ws_url(self) -> str:
        return simulator_endpoints(self.host, self.port).ws_url

    def add_key(self, key_id: str, public_key: PublicKey) -> str:
        """Register another API key (its own account); returns the account's user id."""
        return self.accounts.register(key_id, public_key)

    async def start(self) -> None:
        """Bind (port 0 = a free port), start serving, then start the periodic tasks and driver."""
        cfg = self.config
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every response waits ~40 ms on delayed ACKs (measured: 23 vs 3,300 req/s).
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        uv_config = uvicorn.Config(
            self.app,
            ws=HeartbeatProtocol,
            ws_ping_interval=cfg.ping_interval_s,
            ws_ping_timeout=None,  # Kalshi documents no pong timeout; a silent client is not cut off
            ws_max_size=WS_MAX_MESSAGE_BYTES,
            ws_per_message_deflate=False,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(uv_config)
        # _serve, not serve: serve() would take over the process's signal handlers, which an
        # embedded simulator (tests, launch) must leave to its host.
        self._tasks.append(asyncio.create_task(server._serve(sockets=[sock]), name="simulator-http"))
        while not server.started:
            if self._tasks[0].done():
                self._tasks[0].result()  # raises the startup error
                raise RuntimeError("simulator server exited during startup")
            await asyncio.sleep(0.005)
        self._tasks.append(asyncio.create_task(self._advance_loop(), name="simulator-advance"))
        if self.driver is not None:
            driver = asyncio.create_task(self.driver(self), name="simulator-driver")
            driver.add_done_callback(_report_failure)
            self._tasks.append(driver)
        log.info("exchange simulator listening on %s", self.rest_url)

    async def stop(self) -> None:
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks[1:]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tasks[0]
        self._tasks.clear()
        self.hub.close()

    async def serve_forever(self) -> None:
        """Until the server stops (CLI: Ctrl-C)."""
        await self._tasks[0]

    async def _advance_loop(self) -> None:
        """Time-driven transitions (market open/close, order expiry) on the state's loop."""
        while True:
            await asyncio.sleep(self.config.advance_interval_s)
            try:
                self.state.advance()
            except Exception:
                log.exception("exchange simulator: advance failed")
