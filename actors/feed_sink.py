"""FeedSink: the ingest benchmark's feed limit (``python -m kalshiflow.bench ingest``).

The collector's WebSocket client, subscribed the same way as a Collector, but every frame is only
counted and dropped: what the simulator can feed one connection when nothing downstream costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray

from kalshiflow.collect.shard_state import ORDERBOOK
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.ws_client import KalshiWsClient


@ray.remote(max_restarts=0)
class FeedSink:
    """The ingest benchmark's feed limit: the collector's WS client, subscribed the same way, but
    every frame is only counted and dropped (no decode, no book, no rows)."""

    def __init__(self, ws_url: str, credentials: Any, tickers: list[str], exchange: Any) -> None:
        signer = Signer.from_credentials(credentials) if credentials else None
        self._deltas = 0
        # A closure, like the Collector's frame callback (no Ray tracing shim per frame).
        self._ws = KalshiWsClient(ws_url, signer=signer, config=exchange, on_frame=self._counter())
        self._ready = asyncio.get_running_loop().create_task(self._run(tickers))

    def _counter(self) -> Callable[[bytes, int], None]:
        def count(data: bytes, recv_ns: int) -> None:
            if b'"orderbook_delta"' in data[:32]:
                self._deltas += 1

        return count

    async def _run(self, tickers: list[str]) -> None:
        await self._ws.start()
        await self._ws.subscribe(ORDERBOOK, tickers)

    async def ready(self, timeout: float = 30.0) -> bool:
        await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        return True

    async def count(self) -> tuple[int, float]:
        return self._deltas, time.perf_counter()

    async def stop(self) -> int:
        await self._ws.close()
        return self._deltas
