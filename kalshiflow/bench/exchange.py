"""``python -m kalshiflow.bench exchange``: the simulator's delivery rates against their limits.

(a) WS fan-out. The simulator (own process) runs the synthetic generator over ``--markets``
    markets as fast as delivery allows (it advances simulated time whenever the connection's
    outbox is below a high-water mark). A client in this process subscribes ``orderbook_delta``
    to every market and counts deltas for ``--seconds``: ``ws.sim_deltas_per_s``. The frames it
    received are then pushed, as fast as possible, by a bare ``websockets`` server (own process)
    to the same client code: ``ws.bare_deltas_per_s``, the limit of this machine's client + socket
    path. ``ws.ratio`` = sim / bare.
(b) REST orders. A client sends ``POST /trade-api/v2/portfolio/orders`` (signed; an IOC order
    that matches nothing, so the book does not grow) back to back on one keep-alive connection:
    ``rest.sim_orders_per_s``. The same requests against a bare Starlette endpoint that returns a
    canned 201 with a same-sized body, served the same way: ``rest.bare_201_per_s``.
    ``rest.ratio`` = sim / bare. Signatures are made once per second (a Kalshi signature covers
    timestamp + method + path, not the body, and stays valid inside the skew window), so the
    client's RSA cost does not hide the server's.

Both servers of a pair run in a separate process from the client, one pair at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from kalshiflow.bench import emit
from kalshiflow.protocol.auth import Signer, generate_credentials

WS_PATH = "/trade-api/ws/v2"
ORDERS_PATH = "/trade-api/v2/portfolio/orders"
HIGH_WATER_FRAMES = 20_000
MAX_RECORDED_FRAMES = 400_000


# ---------------------------------------------------------------------- server processes


def _serve_simulator(
    pipe: Connection, key_id: str, public_pem: str, markets: int, seed: int, mode: str
) -> None:
    """The simulator under load. ``mode``: "generator" (bots trade through the matching engine),
    "external" (crowd volume added and removed through ``apply_external_delta``, the replay path:
    the server's own encode + fan-out + send cost with little state work), "rest" (one market,
    no background activity)."""
    from kalshiflow.config import SimulatorConfig
    from kalshiflow.exchange.embedded import make_state, run_simulator
    from kalshiflow.exchange.events import MarketInfo
    from kalshiflow.exchange.generator import MarketGenerator, load_generator_config
    from kalshiflow.exchange.server import Simulator
    from kalshiflow.market.prices import Price, Qty
    from kalshiflow.market.types import Side

    logging.getLogger("asyncio").setLevel(logging.ERROR)  # writes after the client aborts
    config = SimulatorConfig(
        generator=False, rate_limit=False, markets=markets, seed=seed, ws_queue_frames=10**7
    )
    state = make_state(config, simulated_clock=True)
    gen = MarketGenerator(load_generator_config(markets={"count": markets}), state, seed=seed)

    async def generated(sim: Simulator) -> None:
        sim.generator = gen
        t = gen.now
        while True:  # advance simulated time whenever delivery has caught up
            if sim.hub.queued_frames() < HIGH_WATER_FRAMES:
                t += 1.0
                gen.advance(t)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.0005)

    async def external(sim: Simulator) -> None:
        tickers = [m.ticker for m in sim.state.markets()]
        apply = sim.state.apply_external_delta
        i = 0
        while True:
            if sim.hub.queued_frames() < HIGH_WATER_FRAMES:
                for _ in range(500):
                    ticker = tickers[i % len(tickers)]
                    side = Side.YES if i & 1 else Side.NO
                    price = Price(100 + 100 * (i % 7))  # 1-7c on both ladders: never crosses
                    apply(ticker, side, price, Qty(300))
                    apply(ticker, side, price, Qty(-300))
                    i += 1
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.0005)

    async def main() -> None:
        driver = None
        if mode == "rest":
            now = time.time()
            state.add_market(
                MarketInfo(
                    ticker="KXBENCH",
                    event_ticker="KXBENCH-E",
                    series_ticker="KXB",
                    title="bench",
                    open_time=now - 1,
                    close_time=now + 86_400,
                )
            )
            state.open_market("KXBENCH")
        else:
            gen.advance(gen.start + 1)  # list and open the markets before the client subscribes
            driver = generated if mode == "generator" else external
        async with run_simulator(config, keys={key_id: public_pem}, state=state, driver=driver) as sim:
            tickers = [m.ticker for m in sim.state.markets() if m.status.value == "active"]
            pipe.send((sim.port, tickers))
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)

    asyncio.run(main())


def _serve_bare_ws(pipe: Connection, frames: list[str]) -> None:
    from websockets.asyncio.server import serve

    logging.getLogger("asyncio").setLevel(logging.ERROR)
    from websockets.exceptions import ConnectionClosed

    async def handler(ws: Any) -> None:
        await ws.recv()  # the subscribe command, as the simulator would get
        try:
            while True:  # the recorded frames again and again until the client has measured
                for frame in frames:
                    await ws.send(frame)
        except ConnectionClosed:
            return

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            pipe.send(server.sockets[0].getsockname()[1])
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)

    asyncio.run(main())


def _serve_bare_rest(pipe: Connection, body: bytes) -> None:
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def create(request: Request) -> Response:
        await request.body()
        return Response(body, status_code=201, media_type="application/json")

    app = Starlette(routes=[Route(ORDERS_PATH, create, methods=["POST"])])

    async def main() -> None:
        sock = socket.socket(
            socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )  # TCP_NODELAY, as the simulator
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning"))
        task = asyncio.create_task(server._serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.005)
        pipe.send(sock.getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        server.should_exit = True
        await task

    asyncio.run(main())


class _Process:
    """A server process; ``ready`` is what it sent once listening; ``stop`` ends it."""

    def __init__(self, target: Any, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        if not self.pipe.poll(60):
            raise RuntimeError(f"{target.__name__} did not start")
        self.ready = self.pipe.recv()

    def stop(self) -> None:
        self.pipe.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


# ---------------------------------------------------------------------- clients


async def _count_deltas(
    url: str, headers: dict[str, str], tickers: list[str], seconds: float, record: list[str] | None
) -> tuple[int, float]:
    """Subscribe, then count orderbook_delta frames for ``seconds`` from the first one."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    count = 0
    start = deadline = end = 0.0
    async with connect(url, additional_headers=headers, compression=None, max_queue=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": 1,
                    "cmd": "subscribe",
                    "params": {"channels": ["orderbook_delta"], "market_tickers": tickers},
                }
            )
        )
        recv = ws.recv
        try:
            # One timeout for the whole window: a per-frame wait_for would cost more than the frame.
            async with asyncio.timeout(seconds + 30):
                while True:
                    frame = await recv()
                    if not isinstance(frame, str) or '"orderbook_delta"' not in frame[:30]:
                        continue
                    now = time.perf_counter()
                    if not start:
                        start, deadline = now, now + seconds
                    elif now >= deadline:
                        end = now
                        break
                    count += 1
                    if record is not None and len(record) < MAX_RECORDED_FRAMES:
                        record.append(frame)
        except (TimeoutError, ConnectionClosed):
            end = time.perf_counter()
        ws.transport.abort()  # no close handshake: the peer may still be flooding
    return count, (end - start) if start else 0.0


def _post_orders(port: int, signer: Signer | None, body: bytes, seconds: float) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    signed_at = 0.0
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if signer is not None and now - signed_at > 1.0:
            headers.update(signer.headers("POST", ORDERS_PATH))
            signed_at = now
        conn.request("POST", ORDERS_PATH, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise RuntimeError(f"order POST answered {resp.status}")
        n += 1
    conn.close()
    return n / (time.perf_counter() - start)


# ---------------------------------------------------------------------- the benchmark


def _ws_round(
    creds_id: str, public_pem: str, signer: Signer, markets: int, seconds: float, seed: int, mode: str
) -> tuple[float, float, int, int, int]:
    """One simulator measurement, then the bare server replaying what the client received."""
    sim = _Process(_serve_simulator, creds_id, public_pem, markets, seed, mode)
    port, tickers = sim.ready
    frames: list[str] = []
    try:
        url = f"ws://127.0.0.1:{port}{WS_PATH}"
        sim_count, sim_elapsed = asyncio.run(
            _count_deltas(url, signer.headers("GET", WS_PATH), tickers, seconds, frames)
        )
    finally:
        sim.stop()
    bare = _Process(_serve_bare_ws, frames)
    try:
        bare_count, bare_elapsed = asyncio.run(
            _count_deltas(f"ws://127.0.0.1:{bare.ready}/", {}, tickers, seconds, None)
        )
    finally:
        bare.stop()
    rate = sim_count / sim_elapsed if sim_elapsed else 0.0
    limit = bare_count / bare_elapsed if bare_elapsed else 0.0
    return rate, limit, sim_count, len(frames), len(tickers)


def _rest_round(
    creds_id: str, public_pem: str, signer: Signer, seconds: float, seed: int
) -> tuple[float, float]:
    order = json.dumps(
        {
            "ticker": "KXBENCH",
            "side": "yes",
            "action": "buy",
            "count": 1,
            "yes_price": 1,
            "time_in_force": "immediate_or_cancel",
        }
    ).encode()
    sim = _Process(_serve_simulator, creds_id, public_pem, 1, seed, "rest")
    try:
        port = sim.ready[0]
        _post_orders(port, signer, order, 0.3)  # warm-up
        rate = _post_orders(port, signer, order, seconds)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", ORDERS_PATH, body=order, headers=signer.headers("POST", ORDERS_PATH))
        canned = conn.getresponse().read()  # a real response, so the bare body has the same size
        conn.close()
    finally:
        sim.stop()
    bare = _Process(_serve_bare_rest, canned)
    try:
        _post_orders(bare.ready, None, order, 0.3)
        limit = _post_orders(bare.ready, None, order, seconds)
    finally:
        bare.stop()
    return rate, limit


def run(markets: int, seconds: float, seed: int, repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` rounds for each figure; each round measures ours and its limit back to back."""
    creds, public_pem = generate_credentials()
    signer = Signer.from_credentials(creds)
    result: dict[str, Any] = {"benchmark": "exchange", "seconds": seconds, "repeat": repeat}
    for mode, key in (("generator", "ws"), ("external", "ws_external")):
        rounds = [
            _ws_round(creds.api_key_id, public_pem, signer, markets, seconds, seed, mode)
            for _ in range(repeat)
        ]
        rate, limit = max(r[0] for r in rounds), max(r[1] for r in rounds)
        result["markets"] = rounds[0][4]
        result[key] = {
            "sim_deltas_per_s": round(rate),
            "bare_deltas_per_s": round(limit),
            "ratio": round(rate / limit, 3) if limit else None,
            "frames_measured": max(r[2] for r in rounds),
        }
    rest_rounds = [_rest_round(creds.api_key_id, public_pem, signer, seconds, seed) for _ in range(repeat)]
    rest_sim, rest_bare = max(r[0] for r in rest_rounds), max(r[1] for r in rest_rounds)
    result["rest"] = {
        "sim_orders_per_s": round(rest_sim),
        "bare_201_per_s": round(rest_bare),
        "ratio": round(rest_sim / rest_bare, 3) if rest_bare else None,
    }
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kalshiflow.bench exchange", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markets", type=int, default=200, help="generated markets, all subscribed (default 200)")
    p.add_argument("--seconds", type=float, default=3.0, help="measurement window per figure (default 3)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--repeat", type=int, default=2, help="rounds; the best of each figure is reported (default 2)"
    )
    args = p.parse_args(argv)
    result = run(args.markets, args.seconds, args.seed, args.repeat)
    ws, ext, rest = result["ws"], result["ws_external"], result["rest"]
    summary = (
        f"exchange over {result['markets']} markets: WS with generator {ws['sim_deltas_per_s']:,} deltas/s, "
        f"external-delta flood {ext['sim_deltas_per_s']:,}/s, bare websockets {ws['bare_deltas_per_s']:,}/s "
        f"(ratios {ws['ratio']}, {ext['ratio']}); REST {rest['sim_orders_per_s']:,} orders/s vs bare 201 "
        f"{rest['bare_201_per_s']:,}/s (ratio {rest['ratio']})"
    )
    emit(result, args.json, summary)
    return 0
