"""The dashboard's HTTP + WebSocket server (Starlette on uvicorn), hosted by the Broadcaster actor.

Routes: ``/`` the page (ui/index.html), ``/assets/<file>`` its scripts and styles, ``/vendor/uplot/``
the charting library from ui/node_modules, ``/healthz``, and ONE WebSocket, ``/ws``, that carries
every message type (kalshiflow.dashboard.messages).

:class:`Dashboard` is what the Broadcaster feeds: ``publish`` (whole states, coalesced to at most one
per interval per component), ``publish_book`` and ``publish_pnl`` (snapshot + diff streams). It
never awaits a socket: each client's writer task drains that client's bounded outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from kalshiflow.dashboard import messages as M
from kalshiflow.dashboard.hub import Client, Coalescer, Hub
from kalshiflow.dashboard.streams import Ladder, LadderStream, PnlTracker

__all__ = ["Dashboard", "HttpServer", "create_app"]

log = logging.getLogger("kalshiflow.dashboard")

StateData = M.CollectionStatus | M.TraderState | M.Trades
KillSwitchHandler = Callable[[str], Awaitable[M.CommandResult]]
HelloFactory = Callable[[int], M.Hello]

_ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
_NO_CACHE = {"Cache-Control": "no-cache"}
BOOK, PNL = "book", "pnl_history"


class Dashboard:
    """Latest states, streams and clients; everything the WebSocket endpoint needs."""

    def __init__(
        self,
        hello: HelloFactory,
        kill_switch: KillSwitchHandler,
        *,
        interval_s: float = 1.0,
        max_messages: int = 64,
        max_bytes: int = 256 * 1024,
        pnl_cap: int = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = Hub(max_messages, max_bytes)
        self.hello = hello
        self.kill_switch_handler = kill_switch
        self.gate: Coalescer[str, str] = Coalescer(interval_s, clock)
        self.latest: dict[str, str] = {}  # component -> the last text sent (greets new clients)
        self.ladders: dict[str, LadderStream] = {}
        self.pnl = PnlTracker(pnl_cap)
        self.sent: dict[str, int] = {}  # message type -> messages handed to the hub
        self.commands = 0

    # ------------------------------------------------------------------ publishing (Broadcaster)

    def publish(self, data: StateData) -> bool:
        """Send a whole state to every client, or keep it as pending if its component sent less
        than an interval ago (:meth:`flush_due` sends it then). True when sent now."""
        kind = _TYPE[type(data)]
        text = M.encode(data)
        now_text = self.gate.offer(kind, text)
        if now_text is None:
            return False
        self._broadcast(kind, now_text)
        return True

    def flush_due(self) -> int:
        """Send pending states whose interval has passed; call this several times per interval."""
        due = self.gate.due()
        for kind, text in due:
            self._broadcast(kind, text)
        return len(due)

    def _broadcast(self, kind: str, text: str) -> None:
        self.latest[kind] = text
        self.sent[kind] = self.sent.get(kind, 0) + len(self.hub)
        self.hub.broadcast(text)

    def watched_tickers(self) -> list[str]:
        return sorted(self.hub.tickers())

    def publish_book(self, ticker: str, valid: bool | None, bids: Ladder, asks: Ladder, ts: float) -> None:
        """The current ladder of a watched market: a diff to clients in sync, a snapshot to the rest."""
        if not self.gate.allow(f"{BOOK}:{ticker}"):
            return  # the stream keeps its last state: the next diff covers this change too
        stream = self.ladders.setdefault(ticker, LadderStream(ticker))
        diff = stream.update(valid, bids, asks, ts)
        diff_text = M.encode(diff) if diff is not None else None
        snapshot: str | None = None
        for client in self.hub.tickers().get(ticker, []):
            if client.outbox.take_resync(BOOK):
                snapshot = snapshot or M.encode(stream.snapshot())
                self._send(client, snapshot, BOOK)
            elif diff_text is not None:
                self._send(client, diff_text, BOOK)

    def publish_pnl(self, ts: float, value: float) -> None:
        if not self.gate.allow(PNL):
            return
        diff = M.encode(self.pnl.append(ts, value))
        snapshot: str | None = None
        for client in self.hub:
            if client.outbox.take_resync(PNL):
                snapshot = snapshot or M.encode(self.pnl.snapshot())
                self._send(client, snapshot, PNL)
            else:
                self._send(client, diff, PNL)

    def forget_unwatched(self) -> None:
        """Drop ladder streams nobody watches (a market watched again starts with a snapshot)."""
        watched = self.hub.tickers()
        for ticker in [t for t in self.ladders if t not in watched]:
            del self.ladders[ticker]

    def _send(self, client: Client, text: str, stream: str | None = None) -> None:
        kind = stream or "command_result"
        self.sent[kind] = self.sent.get(kind, 0) + 1
        client.outbox.put(text, stream)

    # ------------------------------------------------------------------ clients (WebSocket)

    def connect(self) -> Client:
        client = self.hub.add()
        client.outbox.put(M.encode(self.hello(client.id)))
        for text in self.latest.values():
            client.outbox.put(text)
        client.outbox.put(M.encode(self.pnl.snapshot()), PNL)
        return client

    def disconnect(self, client: Client) -> None:
        self.hub.remove(client)
        self.forget_unwatched()

    async def command(self, client: Client, raw: str) -> None:
        """Handle one message from a browser; answers with a ``command_result``."""
        self.commands += 1
        try:
            cmd = M.decode_client(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
            self._result(client, M.CommandResult(command="invalid", ok=False, detail=str(err)[:200]))
            return
        if isinstance(cmd, M.SelectMarket):
            client.ticker = cmd.ticker or None
            client.outbox.mark_resync(BOOK)
            stream = self.ladders.get(cmd.ticker) if cmd.ticker else None
            if stream is not None and stream.seq:
                client.outbox.take_resync(BOOK)
                self._send(client, M.encode(stream.snapshot()), BOOK)
            self.forget_unwatched()
            self._result(client, M.CommandResult(command="select_market", ok=True, detail=cmd.ticker or ""))
        else:
            result = await self.kill_switch_handler(cmd.reason)
            self._result(client, result)

    def _result(self, client: Client, result: M.CommandResult) -> None:
        self._send(client, M.encode(result))

    def stats(self) -> dict[str, object]:
        return {
            "clients": len(self.hub),
            "dropped": self.hub.dropped,
            "sent": dict(self.sent),
            "coalesced": self.gate.coalesced,
            "commands": self.commands,
        }


_TYPE: dict[type, str] = {
    M.CollectionStatus: "collection_status",
    M.TraderState: "trader_state",
    M.Trades: "trades",
}


def _origin_allowed(websocket: WebSocket) -> bool:
    """Browsers always send Origin; a page on another site must not read or command the dashboard
    (cross-site WebSocket hijacking). Non-browser clients (no Origin) are allowed."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


async def _serve_client(dashboard: Dashboard, websocket: WebSocket) -> None:
    if not _origin_allowed(websocket):
        await websocket.close(code=1008)
        return
    await websocket.accept()
    client = dashboard.connect()

    async def writer() -> None:
        while True:
            text = await client.outbox.get()
            await websocket.send_text(text)
            client.sent += 1

    task = asyncio.create_task(writer(), name=f"dashboard-writer-{client.id}")
    try:
        while True:
            receive = asyncio.ensure_future(websocket.receive_text())
            done, _ = await asyncio.wait({receive, task}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:  # the socket failed while writing: stop reading too
                receive.cancel()
                break
            await dashboard.command(client, receive.result())
    except (WebSocketDisconnect, ConnectionError, RuntimeError, KeyError):
        pass  # gone, or sent a binary frame (KeyError from receive_text): either way, done
    finally:
        dashboard.disconnect(client)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def create_app(dashboard: Dashboard, ui_dir: Path) -> Starlette:
    ui_dir = ui_dir.resolve()

    async def index(request: Request) -> Response:
        page = ui_dir / "index.html"
        if not page.is_file():
            return PlainTextResponse(f"dashboard page missing: {page}", status_code=500)
        return FileResponse(page, headers=_NO_CACHE)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS or not (ui_dir / name).is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(ui_dir / name, media_type=_ASSETS[name], headers=_NO_CACHE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, **dashboard.stats()})

    async def ws(websocket: WebSocket) -> None:
        await _serve_client(dashboard, websocket)

    vendor = ui_dir / "node_modules" / "uplot" / "dist"
    return Starlette(
        routes=[
            Route("/", index),
            Route("/assets/{name}", asset),
            Route("/healthz", healthz),
            WebSocketRoute("/ws", ws),
            Mount("/vendor/uplot", StaticFiles(directory=vendor, check_dir=False)),
        ]
    )


class HttpServer:
    """uvicorn on one bound socket, inside an already running event loop (the actor's)."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY (see kalshiflow/exchange/server.py).
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))  # raises OSError (address in use) right here, to the caller
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                ws="websockets-sansio",
                ws_per_message_deflate=False,
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=1,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        # _serve, not serve: serve() would take over the host process's signal handlers.
        self._task = asyncio.create_task(self._server._serve(sockets=[self._sock]), name="dashboard-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("dashboard server exited during startup")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)
        self._sock.close()
