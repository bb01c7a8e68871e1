"""REST routes of the simulator, mounted at Kalshi's ``/trade-api/v2``.

Every handler runs on the event loop that owns the ExchangeState (they are ``async`` and never
await inside a state operation), so REST, WS fan-out and the generator see one consistent state.

Auth: private endpoints (``/portfolio/*``) need a valid signature; public market endpoints accept
unsigned requests as Kalshi does, but a request that carries auth headers is verified and a bad
signature is refused there too. Errors use Kalshi's nested body ``{"error": {"code", "message",
"details", "service"}}``; a 429 uses the bare ``{"error": "too many requests"}``.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, Literal, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kalshiflow.exchange import wire
from kalshiflow.exchange.accounts import Accounts
from kalshiflow.exchange.ratelimit import RateLimiter
from kalshiflow.exchange.state import ExchangeState, OrderRequest
from kalshiflow.market.matching import SelfTradePrevention
from kalshiflow.market.prices import format_money, format_qty
from kalshiflow.market.types import OrderStatus, OrderType, Side, TimeInForce
from kalshiflow.protocol.auth import ACCESS_KEY_HEADER, ACCESS_SIGNATURE_HEADER, ACCESS_TIMESTAMP_HEADER
from kalshiflow.protocol.errors import AuthError, DecodeError
from kalshiflow.protocol.rest_models import decode_create_order, encode_error_body

PREFIX = "/trade-api/v2"
MAX_BODY_BYTES = 64 * 1024
_AUTH_HEADERS = (ACCESS_KEY_HEADER.lower(), ACCESS_TIMESTAMP_HEADER.lower(), ACCESS_SIGNATURE_HEADER.lower())
_CLIENT_ORDER_ID = re.compile(r"^[-\w:+=/]{1,64}$")
# Reject codes from the state/venue -> HTTP status (everything else is a 400).
_HTTP_STATUS = {"market_not_found": 404, "not_found": 404, "order_already_exists": 409, "user_not_found": 403}
TOO_MANY_REQUESTS = b'{"error":"too many requests"}'
T = TypeVar("T")
E = TypeVar("E", bound=Enum)
Handler = Callable[[Request, str | None], Awaitable[Response]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def json_response(body: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str, details: str = "") -> Response:
    return Response(
        encode_error_body(code, message, details), status_code=status, media_type="application/json"
    )


def bad_param(name: str, why: str) -> ApiError:
    return ApiError(400, "invalid_parameters", f"{name}: {why}")


class RestApi:
    """The routes, bound to one state, key registry and rate limiter."""

    def __init__(self, state: ExchangeState, accounts: Accounts, limiter: RateLimiter) -> None:
        self.state = state
        self.accounts = accounts
        self.limiter = limiter

    def routes(self) -> list[Route]:
        r = self._route
        return [
            r("/exchange/status", self.exchange_status, private=False),
            r("/markets", self.get_markets, private=False),
            r("/markets/trades", self.get_trades, private=False),
            r("/markets/{ticker}", self.get_market, private=False),
            r("/markets/{ticker}/orderbook", self.get_orderbook, private=False),
            r("/portfolio/balance", self.get_balance),
            r("/portfolio/positions", self.get_positions),
            r("/portfolio/orders", self.get_orders),
            r("/portfolio/orders", self.create_order, method="POST", kind="write"),
            r("/portfolio/orders/{order_id}", self.get_order),
            r("/portfolio/orders/{order_id}", self.cancel_order, method="DELETE", kind="write"),
            r("/portfolio/fills", self.get_fills),
        ]

    def _route(
        self,
        path: str,
        handler: Handler,
        *,
        private: bool = True,
        method: str = "GET",
        kind: Literal["read", "write"] = "read",
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            owner: str | None = None
            headers = request.headers
            if private or any(h in headers for h in _AUTH_HEADERS):
                # Kalshi signs the path as sent (percent-encoded), without the query string.
                raw = request.scope.get("raw_path")
                path = raw.decode("latin-1") if raw else request.url.path
                try:
                    owner = self.accounts.authenticate(request.method, path, headers)
                except AuthError as err:
                    return error_response(401, "authentication_error", err.message, err.details)
            client = owner or f"addr:{request.client.host if request.client else '?'}"
            if not self.limiter.allow(client, kind):
                return Response(TOO_MANY_REQUESTS, status_code=429, media_type="application/json")
            try:
                return await handler(request, owner)
            except ApiError as err:
                return error_response(err.status, err.code, err.message, err.details)

        return Route(PREFIX + path, endpoint, methods=[method], name=f"{method} {path}")

    # ------------------------------------------------------------------ exchange and markets

    async def exchange_status(self, request: Request, owner: str | None) -> Response:
        return json_response({"exchange_active": True, "trading_active": True})

    async def get_markets(self, request: Request, owner: str | None) -> Response:
        q = request.query_params
        markets = self.state.markets()
        if status := q.get("status"):
            wanted: set[Any] = set()
            for name in status.split(","):
                if name not in wire.STATUS_FILTER:
                    raise bad_param("status", f"must be one of {sorted(wire.STATUS_FILTER)}")
                wanted |= wire.STATUS_FILTER[name]
            markets = [m for m in markets if m.status in wanted]
        if tickers := q.get("tickers"):
            chosen = set(tickers.split(","))
            markets = [m for m in markets if m.ticker in chosen]
        if event := q.get("event_ticker"):
            events = set(event.split(","))
            markets = [m for m in markets if m.event_ticker in events]
        if series := q.get("series_ticker"):
            markets = [m for m in markets if m.series_ticker == series]
        page, cursor = paginate(markets, q.get("limit"), q.get("cursor"), default=100)
        return json_response({"markets": [self._market(m.ticker) for m in page], "cursor": cursor})

    async def get_market(self, request: Request, owner: str | None) -> Response:
        ticker = request.path_params["ticker"]
        if self.state.market(ticker) is None:
            raise ApiError(404, "market_not_found", f"market {ticker} not found")
        return json_response({"market": self._market(ticker)})

    async def get_orderbook(self, request: Request, owner: str | None) -> Response:
        ticker = request.path_params["ticker"]
        if self.state.market(ticker) is None:
            raise ApiError(404, "market_not_found", f"market {ticker} not found")
        depth = int_param(request.query_params.get("depth"), "depth", 0, 0, 100)
        return json_response(wire.orderbook_json(self.state.order_book(ticker), depth))

    async def get_trades(self, request: Request, owner: str | None) -> Response:
        q = request.query_params
        trades = self.state.trades(q.get("ticker") or None)
        trades = filter_ts(trades, q, lambda t: t.ts)
        page, cursor = paginate(trades, q.get("limit"), q.get("cursor"), default=100)
        body = [wire.trade_json(t) for t in page]
        return json_response({"trades": body, "cursor": cursor})

    def _market(self, ticker: str) -> wire.Json:
        info = self.state.market(ticker)
        assert info is not None
        return wire.market_json(info, self.state.stats(ticker), self.state.order_book(ticker))

    # ------------------------------------------------------------------ portfolio reads

    async def get_balance(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        balance = self.state.balance(owner)
        value = self.state.portfolio_value(owner)
        return json_response(
            {
                "balance": wire.cents_money(balance),
                "balance_dollars": format_money(balance, 4),
                "portfolio_value": wire.cents_money(value),
                "portfolio_value_dollars": format_money(value, 4),
                "updated_ts": int(time.time()),
            }
        )

    async def get_positions(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        q = request.query_params
        positions = self.state.positions(owner)
        if ticker := q.get("ticker"):
            positions = [p for p in positions if p.ticker == ticker]
        if event := q.get("event_ticker"):
            events = set(event.split(","))
            positions = [p for p in positions if p.event_ticker in events]
        if q.get("count_filter") == "position":
            positions = [p for p in positions if p.position]
        page, cursor = paginate(positions, q.get("limit"), q.get("cursor"), default=100)
        return json_response(
            {
                "market_positions": [wire.market_position_json(p) for p in page],
                "event_positions": wire.event_positions_json(positions),
                "cursor": cursor,
            }
        )

    async def get_orders(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        q = request.query_params
        orders = self.state.orders(owner)
        if ticker := q.get("ticker"):
            orders = [o for o in orders if o.ticker == ticker]
        if event := q.get("event_ticker"):
            tickers = {m.ticker for m in self.state.markets() if m.event_ticker in set(event.split(","))}
            orders = [o for o in orders if o.ticker in tickers]
        if status := q.get("status"):
            try:
                wanted = OrderStatus(status)
            except ValueError:
                raise bad_param("status", "must be resting, canceled or executed") from None
            orders = [o for o in orders if o.status is wanted]
        orders = filter_ts(orders, q, lambda o: o.created_time)
        page, cursor = paginate(orders, q.get("limit"), q.get("cursor"), default=100)
        return json_response({"orders": [wire.order_json(o) for o in page], "cursor": cursor})

    async def get_order(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        order = self.state.order(owner, request.path_params["order_id"])
        if order is None:
            raise ApiError(404, "not_found", "order not found")
        return json_response({"order": wire.order_json(order)})

    async def get_fills(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        q = request.query_params
        fills = self.state.fills(owner)
        if ticker := q.get("ticker"):
            fills = [f for f in fills if f.ticker == ticker]
        if order_id := q.get("order_id"):
            fills = [f for f in fills if f.order_id == order_id]
        fills = filter_ts(fills, q, lambda f: f.ts)
        page, cursor = paginate(fills, q.get("limit"), q.get("cursor"), default=100)
        return json_response({"fills": [wire.fill_json(f) for f in page], "cursor": cursor})

    # ------------------------------------------------------------------ orders

    async def create_order(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(400, "invalid_parameters", "request body too large")
        try:
            wire_req = decode_create_order(body)
        except DecodeError as err:
            raise ApiError(400, "invalid_parameters", str(err)) from None
        coid = wire_req.client_order_id
        if coid and not _CLIENT_ORDER_ID.match(coid):
            raise bad_param("client_order_id", "at most 64 characters of [-A-Za-z0-9_:+=/]")
        tif = enum_param(TimeInForce, wire_req.time_in_force, "time_in_force", TimeInForce.GTC)
        if wire_req.buy_max_cost is not None:
            tif = TimeInForce.FOK  # Kalshi: buy_max_cost implies fill-or-kill
        order_type = enum_param(OrderType, wire_req.type, "type", OrderType.LIMIT)
        stp = enum_param(
            SelfTradePrevention,
            wire_req.self_trade_prevention_type,
            "self_trade_prevention_type",
            SelfTradePrevention.TAKER_AT_CROSS,
        )
        price = wire_req.price
        price_field = (
            {} if price is None else {"no_price" if wire_req.side is Side.NO else "yes_price": price}
        )
        request_ = OrderRequest(
            side=wire_req.side,
            action=wire_req.action,
            count=wire_req.count,
            type=order_type,
            time_in_force=tif,
            post_only=bool(wire_req.post_only),
            reduce_only=bool(wire_req.reduce_only),
            client_order_id=coid or None,
            self_trade_prevention=stp,
            **price_field,
        )
        expiration = float(wire_req.expiration_ts) if wire_req.expiration_ts is not None else None
        result = self.state.submit(owner, wire_req.ticker, request_, expiration_ts=expiration)
        if result.reject is not None:
            code = result.reject.code
            raise ApiError(_HTTP_STATUS.get(code, 400), code, result.reject.message)
        assert result.order is not None
        return json_response({"order": wire.order_json(result.order)}, status=201)

    async def cancel_order(self, request: Request, owner: str | None) -> Response:
        assert owner is not None
        result = self.state.cancel(owner, request.path_params["order_id"])
        if result.reject is not None:
            code = result.reject.code
            raise ApiError(_HTTP_STATUS.get(code, 400), code, result.reject.message)
        assert result.order is not None
        return json_response(
            {
                "order": wire.order_json(result.order),
                "reduced_by": wire.contracts(result.reduced_by),
                "reduced_by_fp": format_qty(result.reduced_by),
            }
        )


# ---------------------------------------------------------------------- query helpers


def int_param(text: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_param(name, "must be an integer") from None
    if not lo <= value <= hi:
        raise bad_param(name, f"must be between {lo} and {hi}")
    return value


def enum_param(enum: type[E], value: str | None, name: str, default: E) -> E:
    if value is None:
        return default
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(str(e.value) for e in enum)
        raise bad_param(name, f"must be one of {allowed}") from None


def paginate(
    items: Sequence[T], limit_text: str | None, cursor: str | None, *, default: int
) -> tuple[list[T], str]:
    """One page and the next cursor ("" on the last page, as Kalshi and SDK 3.2.0 require).

    The cursor is an opaque token (the offset, base64) the way Kalshi's are opaque.
    """
    limit = int_param(limit_text, "limit", default, 1, 1000)
    start = 0
    if cursor:
        try:
            start = int(base64.urlsafe_b64decode(cursor.encode()).decode())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise bad_param("cursor", "not a cursor returned by this server") from None
        if start < 0:
            raise bad_param("cursor", "not a cursor returned by this server")
    end = start + limit
    page = list(items[start:end])
    next_cursor = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else ""
    return page, next_cursor


def filter_ts(items: list[T], q: Any, ts_of: Callable[[T], float]) -> list[T]:
    """``min_ts`` / ``max_ts`` query filters (Unix seconds)."""
    lo = int_param(q.get("min_ts"), "min_ts", 0, 0, 2**62)
    hi = int_param(q.get("max_ts"), "max_ts", 2**62, 0, 2**62)
    if lo == 0 and hi == 2**62:
        return items
    return [i for i in items if lo <= ts_of(i) <= hi]
