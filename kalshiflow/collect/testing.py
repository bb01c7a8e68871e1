"""Helpers for collector tests and the ingest benchmark: keys, a delta driver, a WS fault proxy.

- :func:`make_keys`: an API key pair; the simulator gets the public half, collectors the
  :class:`Credentials`.
- :class:`DeltaDriver`: lists markets on an :class:`ExchangeState` and drives random, never
  crossing book changes at a target rate (or as fast as the server drains them), so a test controls
  exactly when the exchange is quiet. Throttles on the server's outgoing backlog so a flood never
  overflows a subscription (which Kalshi, and the simulator, punish with error 25).
- :class:`FaultProxy`: a raw websockets relay on 127.0.0.1 between collector and simulator. It
  records every frame it forwards to the client, per connection (the exact "what was sent" record
  the tests compare the database with), and can drop, duplicate or reorder frames, or cut every
  connection, on request.

Nothing here is used by the production path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kalshiflow.exchange.events import MarketInfo, MarketStatus
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.prices import CENT, Price, Qty
from kalshiflow.market.types import Side
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol.auth import generate_private_key, private_key_to_pem, public_key_to_pem
from kalshiflow.secrets import Credentials, Secret

__all__ = ["DeltaDriver", "FaultProxy", "Sent", "hub_backlog", "make_keys"]


def make_keys(bits: int = 2048) -> tuple[Credentials, dict[str, str]]:
    key = generate_private_key(bits)
    key_id = str(uuid.uuid4())
    credentials = Credentials(api_key_id=key_id, private_key_pem=Secret(private_key_to_pem(key)))
    return credentials, {key_id: public_key_to_pem(key)}


def hub_backlog(sim: Any) -> int:
    """Frames waiting in the simulator's outboxes, all connections together."""
    return int(sim.hub.queued_frames())


class DeltaDriver:
    """Random book changes on ``n_markets`` fresh markets: YES and NO bids between 30c and 48c, so
    books never cross; some removals are trades (public tape)."""

    def __init__(
        self, state: ExchangeState, n_markets: int, *, prefix: str = "KXCOLL", seed: int = 7
    ) -> None:
        self.state = state
        self.rng = random.Random(seed)
        now = time.time()
        self.tickers = [f"{prefix}-{i:04d}" for i in range(n_markets)]
        for t in self.tickers:
            state.add_market(MarketInfo(
                ticker=t, event_ticker=f"{prefix}-EV", series_ticker=prefix, title=t, open_time=now - 60,
                close_time=now + 86_400, status=MarketStatus.ACTIVE,
            ))
        self.events = 0
        self._stop = asyncio.Event()
        # A few resting levels so that the first snapshots are not empty.
        for t in self.tickers:
            for _ in range(6):
                self.step(t)

    def step(self, ticker: str | None = None) -> None:
        rng = self.rng
        t = ticker or self.tickers[rng.randrange(len(self.tickers))]
        side = Side.YES if rng.random() < 0.5 else Side.NO
        price = rng.randrange(30, 49) * CENT
        size = self.state.order_book(t).size(side, Price(price))
        if size and rng.random() < 0.45:
            qty = -min(size, rng.randrange(1, 20) * 100)
            # One removal in ten is a trade: it prints on the public tape too.
            self.state.apply_external_delta(t, side, Price(price), Qty(qty), traded=rng.random() < 0.1)
        else:
            self.state.apply_external_delta(t, side, Price(price), Qty(rng.randrange(1, 20) * 100))
        self.events += 1

    def step_many(self, n: int) -> None:
        """``n`` random changes like :meth:`step`'s, applied in one
        :meth:`ExchangeState.apply_external_deltas` call (the flood's fast path).

        Removals are sized against the book as it will be when they apply: the live size plus the
        batch's own earlier changes to that level (exact while the level is crowd volume only,
        which is all this driver ever adds; a removal that over-reaches just empties the level).
        """
        random = self.rng.random
        tickers = self.tickers
        n_tickers = len(tickers)
        order_book = self.state.order_book
        books: dict[str, Any] = {}
        yes, no = Side.YES, Side.NO
        pending: dict[tuple[str, Side, int], int] = {}
        changes: list[tuple[str, Side, int, int, bool]] = []
        append = changes.append
        for _ in range(n):
            t = tickers[int(random() * n_tickers)]
            side = yes if random() < 0.5 else no
            price = (30 + int(random() * 19)) * CENT
            key = (t, side, price)
            book = books.get(t)
            if book is None:
                book = books[t] = order_book(t)
            size = book.size(side, price) + pending.get(key, 0)
            if size > 0 and random() < 0.45:
                qty = -min(size, (1 + int(random() * 19)) * 100)
                # One removal in ten is a trade: it prints on the public tape too.
                append((t, side, price, qty, random() < 0.1))
            else:
                qty = (1 + int(random() * 19)) * 100
                append((t, side, price, qty, False))
            pending[key] = pending.get(key, 0) + qty
        self.state.apply_external_deltas(changes)
        self.events += n

    def stop(self) -> None:
        self._stop.set()

    def retire(self, ticker: str) -> None:
        """Stop changing ``ticker`` (e.g. before closing it on the exchange)."""
        self.tickers = [t for t in self.tickers if t != ticker]

    async def run(
        self, rate: float | None, *, sim: Any = None, max_backlog: int = 5_000, chunk: int = 200
    ) -> None:
        """Until :meth:`stop`: ``rate`` changes per second, or as fast as the server drains them
        (``rate`` None; needs ``sim`` to watch its backlog)."""
        start = time.monotonic()
        done = 0
        while not self._stop.is_set():
            if sim is not None and hub_backlog(sim) > max_backlog:
                await asyncio.sleep(0.001)
                continue
            n = chunk
            if rate is not None:
                due = int((time.monotonic() - start) * rate) - done
                if due <= 0:
                    await asyncio.sleep(min(0.01, chunk / rate))
                    continue
                n = min(due, chunk)
            self.step_many(n)
            done += n
            await asyncio.sleep(0)


class Sent(msgspec.Struct, frozen=True, gc=False):
    """One frame the proxy forwarded to a client."""

    type: str
    sid: int | None
    seq: int | None
    data: bytes


Fault = Callable[[int, bytes], list[bytes]]  # (connection index, frame) -> frames to forward


class FaultProxy:
    """``ws://127.0.0.1:<port>/trade-api/ws/v2`` -> ``upstream``; handshake headers (the signature)
    pass through untouched, so the simulator authenticates the collector as usual."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: list[list[Sent]] = []  # per connection, in order
        self.fault: Fault | None = None
        self._server: Server | None = None
        self._conns: list[ServerConnection] = []
        self.url = ""

    async def __aenter__(self) -> FaultProxy:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        path = self.upstream.split("://", 1)[1].split("/", 1)[1]
        self.url = f"ws://127.0.0.1:{port}/{path}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def cut(self) -> int:
        """Drop every client connection abruptly (as a dying server would); returns how many."""
        conns, self._conns = self._conns, []
        for c in conns:
            c.transport.abort()
        return len(conns)

    async def _handle(self, client: ServerConnection) -> None:
        assert client.request is not None
        headers = {k: v for k, v in client.request.headers.raw_items() if k.lower().startswith("kalshi-")}
        index = len(self.sent)
        log: list[Sent] = []
        self.sent.append(log)
        self._conns.append(client)
        try:
            upstream = connect(self.upstream, additional_headers=headers, compression=None, max_size=None)
            async with upstream as up:
                await asyncio.gather(self._down(up, client, index, log), self._up(client, up))
        except (ConnectionClosed, OSError):
            pass
        finally:
            client.transport.abort()

    async def _down(self, up: Any, client: ServerConnection, index: int, log: list[Sent]) -> None:
        try:
            async for frame in up:
                data = frame.encode() if isinstance(frame, str) else frame
                out = self.fault(index, data) if self.fault is not None else [data]
                for item in out:
                    env = wc.peek(item)
                    log.append(Sent(env.type, env.sid, env.seq, item))
                    await client.send(item.decode())
        finally:
            client.transport.abort()

    async def _up(self, client: ServerConnection, up: Any) -> None:
        try:
            async for frame in client:
                await up.send(frame)
        finally:
            await up.close()


class Harness:
    """Simulator + delta driver + fault proxy for one test: ``async with Harness(n) as h``."""

    def __init__(self, n_markets: int, *, sim_config: Any = None, seed: int = 7) -> None:
        self.n_markets = n_markets
        self.seed = seed
        self.sim_config = sim_config
        self.credentials, self._keys = make_keys()
        self._stack = contextlib.AsyncExitStack()
        self.sim: Any = None
        self.driver: DeltaDriver | None = None
        self.proxy: FaultProxy | None = None
        self._drive: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        from kalshiflow.config import SimulatorConfig
        from kalshiflow.exchange.embedded import run_simulator

        config = self.sim_config or SimulatorConfig(generator=False, rate_limit=False)
        self.sim = await self._stack.enter_async_context(run_simulator(config, keys=self._keys))
        self.driver = DeltaDriver(self.sim.state, self.n_markets, seed=self.seed)
        self.proxy = await self._stack.enter_async_context(FaultProxy(self.sim.ws_url))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.quiesce(0)
        await self._stack.aclose()

    @property
    def tickers(self) -> list[str]:
        assert self.driver is not None
        return self.driver.tickers

    def endpoints(self) -> Any:
        from kalshiflow.protocol.endpoints import Endpoints

        assert self.proxy is not None
        return Endpoints(environment="simulator", rest_url=self.sim.rest_url, ws_url=self.proxy.url)

    def drive(self, rate: float | None) -> None:
        assert self.driver is not None
        self._drive = asyncio.get_running_loop().create_task(self.driver.run(rate, sim=self.sim))

    async def quiesce(self, settle_s: float = 0.5) -> None:
        """Stop the driver, then give the last frames time to reach the collectors."""
        if self.driver is not None:
            self.driver.stop()
        if self._drive is not None:
            await self._drive
            self._drive = None
        await asyncio.sleep(settle_s)

    def books(self) -> dict[str, Any]:
        return {t: self.sim.state.order_book(t).copy() for t in self.tickers}
