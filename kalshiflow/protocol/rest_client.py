"""Async Kalshi REST v2 client (aiohttp): signed requests, bounded retries, idempotent orders.

- Every request is signed over ``prefix + path`` without the query string, with a fresh timestamp;
  order creates take a signature made ahead of need, at most ``presign_max_age_ms`` old and used
  once (kalshiflow.protocol.auth.Presigner: ~1 ms of RSA off each order's way).
- Retries: 5xx, 429 and connection failures/timeouts, at most ``config.max_retries`` times, with
  exponential backoff and full jitter (delay ~ U(0, min(backoff_max_s, backoff_base_s * 2**n)));
  a ``Retry-After`` header, when a server sends one, is a lower bound (capped at backoff_max_s).
- create_order always carries a ``client_order_id`` (generated when absent). Retrying a create
  whose response was lost is therefore safe: the exchange answers 409 ``order_already_exists``,
  and the client looks the order up by client_order_id and returns it instead of placing another.
- Order mutations pass :func:`assert_order_placement_allowed` first (production guard).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec

from kalshiflow.config import ExchangeConfig
from kalshiflow.market.types import OrderStatus
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.auth import Presigner, Signer
from kalshiflow.protocol.endpoints import Endpoints, assert_order_placement_allowed, resolve_endpoints
from kalshiflow.protocol.errors import (
    Conflict,
    DecodeError,
    KalshiConnectionError,
    KalshiHTTPError,
    http_error,
)
from kalshiflow.secrets import Credentials

log = logging.getLogger(__name__)

Params = Mapping[str, str | int | None]


class RestStats(msgspec.Struct, frozen=True, kw_only=True):
    requests: int  # HTTP attempts, retries included
    retries: int
    errors: int  # calls that finally raised
    rate_limited: int  # 429 answers seen
    server_errors: int  # 5xx answers seen
    connection_errors: int
    duplicate_orders_resolved: int
    last_status: int | None
    last_latency_s: float | None


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: spreads retrying clients out instead of synchronising them."""
    return rng.uniform(0.0, min(max_s, base_s * (2**attempt)))


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # HTTP-date form: not worth parsing, the backoff applies


class KalshiRestClient:
    """One client per account and host. Use ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        *,
        signer: Signer | None = None,
        config: ExchangeConfig | None = None,
        environment: str | None = None,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config or ExchangeConfig()
        self._base = base_url.rstrip("/")
        self._prefix = urlsplit(self._base).path.rstrip("/")
        self._endpoints = Endpoints(
            environment=environment or self._config.environment,
            rest_url=self._base,
            ws_url=self._config.ws_url,
        )
        self._signer = signer
        self._session = session
        self._own_session = session is None
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._timeout = aiohttp.ClientTimeout(total=self._config.request_timeout_s)
        self._n = dict.fromkeys(
            ("requests", "retries", "errors", "rate_limited", "server_errors", "connection_errors", "dups"), 0
        )
        self._last_status: int | None = None
        self._last_latency: float | None = None
        self._presigned: dict[tuple[str, str], Presigner] = {}  # hot routes: (method, signed path)
        self._keep_signed: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls,
        config: ExchangeConfig,
        credentials: Credentials | None,
        *,
        simulator_host: str | None = None,
        simulator_port: int | None = None,
        **kwargs: Any,
    ) -> KalshiRestClient:
        ep = resolve_endpoints(config, simulator_host=simulator_host, simulator_port=simulator_port)
        signer = Signer.from_credentials(credentials) if credentials else None
        return cls(ep.rest_url, signer=signer, config=config, environment=ep.environment, **kwargs)

    def __repr__(self) -> str:
        return f"KalshiRestClient({self._base!r}, signer={self._signer!r})"

    async def __aenter__(self) -> KalshiRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._keep_signed is not None:
            self._keep_signed.cancel()
            self._keep_signed = None
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def stats(self) -> RestStats:
        n = self._n
        return RestStats(
            requests=n["requests"],
            retries=n["retries"],
            errors=n["errors"],
            rate_limited=n["rate_limited"],
            server_errors=n["server_errors"],
            connection_errors=n["connection_errors"],
            duplicate_orders_resolved=n["dups"],
            last_status=self._last_status,
            last_latency_s=self._last_latency,
        )

    # --- transport ------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        return self._session

    def _auth(self, method: str, sign_path: str) -> dict[str, str]:
        assert self._signer is not None
        pool = self._presigned.get((method, sign_path))
        if pool is None:
            return self._signer.headers(method, sign_path)
        got = pool.take()
        # The replacement is signed once this request is on the wire (its first await), not before.
        asyncio.get_running_loop().call_soon(pool.refill)
        return got if got is not None else self._signer.headers(method, sign_path)

    def presign(self, method: str, path: str) -> None:
        """Sign ``method path`` requests ahead of need from now on (ExchangeConfig.presign_max_age_ms);
        a timer keeps fresh signatures waiting while none is used. Idempotent; needs a running loop."""
        max_age = self._config.presign_max_age_ms
        key = (method.upper(), self._prefix + path)
        if self._signer is None or max_age <= 0 or key in self._presigned:
            return
        self._presigned[key] = Presigner(self._signer, *key, max_age_ms=max_age)
        if self._keep_signed is None:
            loop = asyncio.get_running_loop()
            self._keep_signed = loop.create_task(self._refresh_signatures(max_age / 2000))

    async def _refresh_signatures(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            for pool in self._presigned.values():
                pool.refill()

    async def request(
        self, method: str, path: str, *, params: Params | None = None, body: bytes | None = None
    ) -> bytes:
        """Send ``method path`` (relative to the base, e.g. '/markets') with retries; the 2xx body."""
        method = method.upper()
        url = self._base + path
        sign_path = self._prefix + path  # no query string: Kalshi signs the bare path
        query = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (params or {}).items()
            if v is not None
        }
        max_retries = max(0, self._config.max_retries)
        attempt = 0
        while True:
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            if self._signer is not None:
                headers.update(self._auth(method, sign_path))
            self._n["requests"] += 1
            started = time.monotonic()
            error: KalshiHTTPError | KalshiConnectionError
            retry_after = 0.0
            try:
                async with self._get_session().request(
                    method, url, params=query, data=body, headers=headers
                ) as resp:
                    data = await resp.read()
                    status = resp.status
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
                self._n["connection_errors"] += 1
                error = KalshiConnectionError(f"{method} {path}: {type(err).__name__}: {err}")
                retryable = True
            else:
                self._last_status, self._last_latency = status, time.monotonic() - started
                if 200 <= status < 300:
                    return data
                error = self._http_error(status, data)
                if status == 429:
                    self._n["rate_limited"] += 1
                elif status >= 500:
                    self._n["server_errors"] += 1
                retryable = status == 429 or status >= 500
            if not retryable or attempt >= max_retries:
                self._n["errors"] += 1
                raise error
            cfg = self._config
            # Retry-After (Kalshi sends none, other servers might) is honoured up to backoff_max_s.
            delay = max(
                min(retry_after, cfg.backoff_max_s),
                backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, self._rng),
            )
            log.info(
                "kalshi %s %s failed (%s); retry %d/%d in %.3fs",
                method,
                path,
                error,
                attempt + 1,
                max_retries,
                delay,
            )
            self._n["retries"] += 1
            attempt += 1
            await self._sleep(delay)

    @staticmethod
    def _http_error(status: int, data: bytes) -> KalshiHTTPError:
        body = rm.decode_error_body(data)
        if body is None:
            text = data[:200].decode("utf-8", "replace")
            return http_error(status, message=text)
        return http_error(status, body.code, body.message, body.details, body.service)

    async def _get(self, path: str, params: Params | None = None) -> bytes:
        return await self.request("GET", path, params=params)

    # --- public market data -----------------------------------------------------------------------

    async def exchange_status(self) -> rm.ExchangeStatus:
        return rm.decode_exchange_status(await self._get("/exchange/status"))

    async def get_markets(
        self,
        *,
        status: str | None = None,
        event_ticker: str | None = None,
        series_ticker: str | None = None,
        tickers: list[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> rm.MarketsPage:
        """One page. ``status`` is a FILTER: unopened|open|paused|closed|settled (not Market.status)."""
        params = {
            "status": status,
            "event_ticker": event_ticker,
            "series_ticker": series_ticker,
            "tickers": ",".join(tickers) if tickers else None,
            "limit": limit,
            "cursor": cursor or None,
        }
        return rm.decode_markets_page(await self._get("/markets", params))

    async def iter_markets(self, *, page_size: int = 1000, **filters: Any) -> AsyncIterator[rm.Market]:
        """Every market matching the filters, following cursors."""
        async for page in self._pages(lambda c: self.get_markets(limit=page_size, cursor=c, **filters)):
            for market in page.markets:
                yield market

    async def get_market(self, ticker: str) -> rm.Market:
        return rm.decode_market(await self._get(f"/markets/{quote(ticker, safe='')}"))

    async def get_orderbook(self, ticker: str, depth: int | None = None) -> rm.Orderbook:
        """Bids per side, ascending. ``depth`` 1..100 best levels; None/0 = all."""
        data = await self._get(f"/markets/{quote(ticker, safe='')}/orderbook", {"depth": depth or None})
        return rm.decode_orderbook(ticker, data)

    # --- portfolio -----------------------------------------------------------------------------------

    async def get_balance(self) -> rm.Balance:
        return rm.decode_balance(await self._get("/portfolio/balance"))

    async def get_positions(
        self,
        *,
        ticker: str | None = None,
        event_ticker: str | None = None,
        count_filter: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> rm.PositionsPage:
        params = {
            "ticker": ticker,
            "event_ticker": event_ticker,
            "count_filter": count_filter,
            "limit": limit,
            "cursor": cursor or None,
        }
        return rm.decode_positions(await self._get("/portfolio/positions", params))

    async def get_all_positions(self, **filters: Any) -> rm.PositionsPage:
        """All pages merged (accounts hold few positions; the risk layer wants the whole picture)."""
        markets: list[rm.MarketPosition] = []
        events: list[rm.EventPosition] = []
        async for page in self._pages(lambda c: self.get_positions(cursor=c, **filters)):
            markets.extend(page.market_positions)
            events.extend(page.event_positions)
        return rm.PositionsPage(market_positions=tuple(markets), event_positions=tuple(events), cursor="")

    async def get_orders(
        self,
        *,
        ticker: str | None = None,
        event_ticker: str | None = None,
        status: OrderStatus | str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> rm.OrdersPage:
        status_text = status.value if isinstance(status, OrderStatus) else status
        params = {
            "ticker": ticker,
            "event_ticker": event_ticker,
            "status": status_text,
            "min_ts": min_ts,
            "max_ts": max_ts,
            "limit": limit,
            "cursor": cursor or None,
        }
        return rm.decode_orders_page(await self._get("/portfolio/orders", params))

    async def iter_orders(self, *, page_size: int = 200, **filters: Any) -> AsyncIterator[rm.Order]:
        async for page in self._pages(lambda c: self.get_orders(limit=page_size, cursor=c, **filters)):
            for order in page.orders:
                yield order

    async def get_order(self, order_id: str) -> rm.Order:
        return rm.decode_order(await self._get(f"/portfolio/orders/{quote(order_id, safe='')}"))

    async def get_fills(
        self,
        *,
        ticker: str | None = None,
        order_id: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> rm.FillsPage:
        params = {
            "ticker": ticker,
            "order_id": order_id,
            "min_ts": min_ts,
            "max_ts": max_ts,
            "limit": limit,
            "cursor": cursor or None,
        }
        return rm.decode_fills_page(await self._get("/portfolio/fills", params))

    async def iter_fills(self, *, page_size: int = 200, **filters: Any) -> AsyncIterator[rm.Fill]:
        async for page in self._pages(lambda c: self.get_fills(limit=page_size, cursor=c, **filters)):
            for fill in page.fills:
                yield fill

    # --- orders ----------------------------------------------------------------------------------------

    async def create_order(self, req: rm.OrderRequest, *, legacy_fields: bool = False) -> rm.Order:
        """Place an order (v1 POST /portfolio/orders); idempotent through ``client_order_id``."""
        assert_order_placement_allowed(self._config, self._endpoints)
        if not req.client_order_id:
            req = msgspec.structs.replace(req, client_order_id=str(uuid.uuid4()))
        body = rm.encode_create_order(req, legacy=legacy_fields)
        self.presign("POST", "/portfolio/orders")  # the first create signs inline; later ones need not
        try:
            return rm.decode_order(await self.request("POST", "/portfolio/orders", body=body))
        except Conflict as err:
            # Our own earlier attempt (response lost) or a replay after restart placed it already.
            existing = await self.find_order_by_client_id(req.ticker, req.client_order_id)
            if existing is None:
                raise
            if (existing.side, existing.action) != (req.side, req.action):
                raise Conflict(
                    err.status,
                    err.code,
                    f"client_order_id {req.client_order_id!r} belongs to a different order",
                ) from err
            self._n["dups"] += 1
            log.info(
                "create_order %s: already placed as %s; returning it", req.client_order_id, existing.order_id
            )
            return existing

    async def find_order_by_client_id(self, ticker: str, client_order_id: str) -> rm.Order | None:
        """Kalshi cannot filter by client_order_id, so scan the market's orders (all statuses)."""
        async for order in self.iter_orders(ticker=ticker):
            if order.client_order_id == client_order_id:
                return order
        return None

    async def cancel_order(self, order_id: str) -> rm.CancelResult:
        """Cancel (Kalshi zeroes the remaining count). A retried cancel whose first response was
        lost may raise NotFound: the caller should treat that as 'already gone' and re-read the order."""
        assert_order_placement_allowed(self._config, self._endpoints)
        return rm.decode_cancel(await self.request("DELETE", f"/portfolio/orders/{quote(order_id, safe='')}"))

    # --- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    async def _pages(fetch: Callable[[str | None], Awaitable[Any]]) -> AsyncIterator[Any]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await fetch(cursor)
            yield page
            if not page.cursor:
                return
            if page.cursor in seen:
                # A server bug must not turn into an endless loop of identical requests.
                raise DecodeError(f"pagination cursor {page.cursor!r} repeated")
            seen.add(page.cursor)
            cursor = page.cursor
