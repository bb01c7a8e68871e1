"""The dashboard server for real: uvicorn on 127.0.0.1, Starlette, real WebSocket clients.

Many browsers at once, one of them deliberately slow: the slow one loses its own oldest messages
(counted) and nobody else notices; publishing never waits for a socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from kalshiflow.config import PROJECT_ROOT
from kalshiflow.dashboard import messages as M
from kalshiflow.dashboard.server import Dashboard, HttpServer, create_app

UI = PROJECT_ROOT / "ui"


def hello(client_id: int) -> M.Hello:
    return M.Hello(
        protocol=M.PROTOCOL_VERSION,
        client_id=client_id,
        environment="simulator",
        trading_mode="simulator",
        ray_dashboard_url=None,
        update_interval_s=1.0,
        components=M.Components(
            collectors=True, write_queue=True, trader=True, reconciler=True, policy_server=True
        ),
    )


def trades(n: int, pad: int = 0) -> M.Trades:
    return M.Trades(
        ts=float(n),
        state="running",
        recent_fills=[],
        execution_stats=M.ExecutionStats(
            total_fills=n, maker_fills=0, taker_fills=0, avg_fill_time_ms=None if not pad else float(pad)
        ),
    )


class Server:
    def __init__(self, dashboard: Dashboard, http: HttpServer) -> None:
        self.dashboard = dashboard
        self.http = http
        self.ws_url = f"ws://127.0.0.1:{http.port}/ws"
        self.kills: list[str] = []


async def start(interval_s: float, **kw: Any) -> Server:
    box: dict[str, Server] = {}

    async def kill(reason: str) -> M.CommandResult:
        box["s"].kills.append(reason)
        return M.CommandResult(command="kill_switch", ok=True, detail="halted")

    dashboard = Dashboard(hello, kill, interval_s=interval_s, **kw)
    http = HttpServer(create_app(dashboard, UI), "127.0.0.1", 0)
    await http.start()
    box["s"] = Server(dashboard, http)
    return box["s"]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = await start(0.2)
    yield s
    await s.http.stop()


async def recv(ws: ClientConnection, timeout: float = 5.0) -> M.ServerMessage:
    return M.decode_server(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: ClientConnection, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(0.01, deadline - time.monotonic()))
        if pred(msg):
            return msg


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, "", b""


async def test_the_page_its_assets_and_the_chart_library_are_served(server: Server) -> None:
    base = server.http.url
    status, ctype, body = await asyncio.to_thread(get, base)
    assert status == 200 and "text/html" in ctype
    for panel in (b'id="collection-panel"', b'id="trader-panel"', b'id="trades-panel"', b'id="kill-switch"'):
        assert panel in body
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "svg")):
        status, ctype, _ = await asyncio.to_thread(get, base + "assets/" + name)
        assert status == 200 and kind in ctype, name
    assert (UI / "node_modules" / "uplot").is_dir(), "run `npm ci` in ui/ (scripts/kf test does it)"
    status, _, lib = await asyncio.to_thread(get, base + "vendor/uplot/uPlot.iife.min.js")
    assert status == 200 and b"uPlot" in lib
    for hidden in ("assets/package.json", "assets/..%2Fpyproject.toml", "vendor/uplot/../../../package.json"):
        assert (await asyncio.to_thread(get, base + hidden))[0] == 404, hidden
    status, _, health = await asyncio.to_thread(get, base + "healthz")
    assert status == 200 and json.loads(health)["ok"] is True


async def test_a_new_client_gets_hello_the_latest_states_and_the_pnl_history(server: Server) -> None:
    d = server.dashboard
    d.publish(trades(1))
    d.publish_pnl(10.0, 100.0)
    async with connect(server.ws_url) as ws:
        first = await recv(ws)
        assert isinstance(first, M.HelloMsg) and first.data.client_id >= 1
        state = await recv(ws)
        assert isinstance(state, M.TradesMsg) and state.data.execution_stats.total_fills == 1
        pnl = await recv(ws)
        assert (
            isinstance(pnl, M.PnlHistoryMsg) and pnl.data.snapshot and pnl.data.points == [(10.0, 100.0, 0.0)]
        )


async def test_many_clients_at_once_and_a_slow_one_that_stalls_nobody() -> None:
    s = await start(0.0, max_messages=16, max_bytes=1 << 20)
    n, pad = 150, "x" * 60_000  # ~60 KB per message: the slow client's socket buffers fill quickly
    try:
        fast = [await connect(s.ws_url, max_size=None) for _ in range(4)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", s.http.port))
        slow = await connect(s.ws_url, sock=sock, max_size=None, max_queue=1)  # and it never reads
        while len(s.dashboard.hub) < 5:
            await asyncio.sleep(0.01)
        got: list[list[int]] = [[] for _ in fast]

        async def read(i: int, ws: ClientConnection) -> None:
            while len(got[i]) < n:
                msg = await recv(ws, 20)
                if isinstance(msg, M.TradesMsg):
                    got[i].append(msg.data.execution_stats.total_fills)

        readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(fast)]
        worst = 0.0
        for i in range(n):
            t0 = time.perf_counter()
            s.dashboard.publish(
                msgspec.structs.replace(
                    trades(i),
                    recent_fills=[
                        M.Fill(
                            ts=0.0,
                            ticker="KX",
                            action="buy",
                            side="yes",
                            quantity="1.00",
                            price="0.5000",
                            order_id=pad,
                            fill_id=None,
                            is_taker=None,
                            decision=None,
                        )
                    ],
                )
            )
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.004)
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        assert all(g == list(range(n)) for g in got), "every fast client got every message, in order"
        slow_client = max(s.dashboard.hub, key=lambda c: c.outbox.dropped)
        assert slow_client.outbox.dropped > 0 and s.dashboard.hub.dropped == slow_client.outbox.dropped
        assert worst < 0.05, f"publishing waited on a socket ({worst:.3f} s)"
        # The slow client is still served: what it reads now is the newest messages, not a backlog.
        latest = await recv_until(
            slow,
            lambda m: isinstance(m, M.TradesMsg) and m.data.execution_stats.total_fills == n - 1,
            timeout=30,
        )
        assert latest is not None
        for ws in [*fast, slow]:
            await ws.close()
    finally:
        await s.http.stop()


async def test_each_component_sends_at_most_once_per_interval() -> None:
    interval = 0.25
    s = await start(interval)
    flusher = asyncio.create_task(_flush_forever(s.dashboard, interval / 10))
    try:
        async with connect(s.ws_url) as ws:
            await recv(ws)  # hello
            await recv(ws)  # the (empty) PnL history every new client starts from
            await ws.send(json.dumps({"type": "select_market", "ticker": "KX-A"}))
            await recv(ws)  # command_result
            arrivals: dict[str, list[tuple[float, Any]]] = {}

            async def listen() -> None:
                while True:
                    msg = await recv(ws)
                    arrivals.setdefault(type(msg).__name__, []).append((time.monotonic(), msg))

            listener = asyncio.create_task(listen())
            began = time.monotonic()
            i = 0
            while time.monotonic() - began < 2.0:  # 100 Hz offers per component
                s.dashboard.publish(trades(i))
                s.dashboard.publish(msgspec.structs.replace(trades(i), state="stopping"))  # same component
                s.dashboard.publish_pnl(float(i), 100.0 + i)
                s.dashboard.publish_book("KX-A", True, {f"0.{10 + i % 80:02d}00": "1.00"}, {}, float(i))
                i += 1
                await asyncio.sleep(0.01)
            final = i - 1
            await asyncio.sleep(interval * 1.5)
            listener.cancel()
        for kind, seen in arrivals.items():
            times = [t for t, _ in seen]
            assert len(seen) <= 2.0 / interval + 2, kind
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert min(gaps, default=interval) > interval * 0.8, f"{kind}: {min(gaps):.3f} s apart"
        assert set(arrivals) == {"TradesMsg", "PnlHistoryMsg", "BookMsg"}
        for kind in arrivals:
            assert len(arrivals[kind]) >= 2.0 / interval - 2, f"{kind}: coalesced, not starved"
        last = arrivals["TradesMsg"][-1][1].data
        assert last.ts == float(final) and last.state == "stopping", "the newest state wins"
    finally:
        flusher.cancel()
        await s.http.stop()


async def _flush_forever(d: Dashboard, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        d.flush_due()


async def test_a_selected_market_gets_a_snapshot_then_only_changes(server: Server) -> None:
    d = server.dashboard
    async with connect(server.ws_url) as a, connect(server.ws_url) as b:
        await a.send(json.dumps({"type": "select_market", "ticker": "KX-A"}))
        ok = await recv_until(a, lambda m: isinstance(m, M.CommandResultMsg))
        assert ok.data == M.CommandResult(command="select_market", ok=True, detail="KX-A")
        while not d.watched_tickers():
            await asyncio.sleep(0.01)
        d.publish_book("KX-A", True, {"0.4000": "10.00", "0.3900": "5.00"}, {"0.4200": "1.00"}, 1.0)
        snap = (await recv_until(a, lambda m: isinstance(m, M.BookMsg))).data
        assert snap.snapshot and snap.bids == [("0.4000", "10.00"), ("0.3900", "5.00")]
        await asyncio.sleep(0.25)
        d.publish_book("KX-A", True, {"0.4000": "7.00", "0.3900": "5.00"}, {}, 2.0)
        diff = (await recv_until(a, lambda m: isinstance(m, M.BookMsg))).data
        assert not diff.snapshot and diff.seq == snap.seq + 1
        assert diff.bids == [("0.4000", "7.00")] and diff.asks == [("0.4200", "0.00")]
        # A client that selects the market later starts from a snapshot of the current ladder.
        await b.send(json.dumps({"type": "select_market", "ticker": "KX-A"}))
        late = (await recv_until(b, lambda m: isinstance(m, M.BookMsg))).data
        assert (
            late.snapshot and late.seq == diff.seq and late.bids == [("0.4000", "7.00"), ("0.3900", "5.00")]
        )
        assert late.asks == []
        await a.send(json.dumps({"type": "select_market", "ticker": None}))
        await b.send(json.dumps({"type": "select_market", "ticker": None}))
        await recv_until(b, lambda m: isinstance(m, M.CommandResultMsg))
        await recv_until(a, lambda m: isinstance(m, M.CommandResultMsg) and m.data.detail == "")
        assert d.watched_tickers() == [] and d.ladders == {}, "nobody watches: the stream is forgotten"


async def test_the_kill_switch_command_reaches_the_handler_and_is_answered(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "kill_switch", "reason": "test"}))
        result = await recv_until(ws, lambda m: isinstance(m, M.CommandResultMsg))
        assert result.data == M.CommandResult(command="kill_switch", ok=True, detail="halted")
        assert server.kills == ["test"]
        await ws.send("{not json")
        bad = await recv_until(ws, lambda m: isinstance(m, M.CommandResultMsg))
        assert bad.data.command == "invalid" and not bad.data.ok
        await ws.send(json.dumps({"type": "kill_switch"}))  # the connection survived the bad message
        await recv_until(ws, lambda m: isinstance(m, M.CommandResultMsg))
        assert len(server.kills) == 2


async def test_a_page_from_another_site_cannot_open_the_socket(server: Server) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(server.ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    same = f"http://127.0.0.1:{server.http.port}"
    async with connect(server.ws_url, origin=same) as ws:  # type: ignore[arg-type]
        assert isinstance(await recv(ws), M.HelloMsg)


async def test_a_busy_port_is_reported_at_once(server: Server) -> None:
    with pytest.raises(OSError):
        HttpServer(create_app(server.dashboard, Path(UI)), "127.0.0.1", server.http.port)
