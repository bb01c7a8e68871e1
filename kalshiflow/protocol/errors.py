"""Exceptions of the Kalshi protocol layer (REST, WebSocket, auth, decoding).

HTTP errors carry Kalshi's error body fields so callers branch on ``code`` (lower-snake, e.g.
``order_already_exists``) rather than parsing messages. The same ``AuthError`` is raised by the
signature verifier (the simulator turns it straight into a 401 body) and by the REST client on a
401, so both sides share one vocabulary.
"""

from __future__ import annotations


class KalshiError(Exception):
    """Base class of every error raised by kalshiflow.protocol."""


class DecodeError(KalshiError):
    """A body or frame that does not match the expected Kalshi shape."""


class KalshiHTTPError(KalshiError):
    """A non-2xx REST answer. ``code`` is Kalshi's ``error.code`` ("" when the body had none)."""

    status: int
    code: str
    message: str
    details: str
    service: str

    def __init__(
        self, status: int, code: str = "", message: str = "", details: str = "", service: str = ""
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.service = service
        super().__init__(status, code, message)

    def __str__(self) -> str:
        text = f"HTTP {self.status}"
        if self.code:
            text += f" {self.code}"
        if self.message:
            text += f": {self.message}"
        if self.details:
            text += f" ({self.details})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class BadRequest(KalshiHTTPError):
    """400: invalid input."""


class AuthError(KalshiHTTPError):
    """401: missing/invalid signature, unknown key, or timestamp outside the skew window.

    ``reason`` (= ``details``) is a short machine-readable cause such as ``NOT_FOUND``.
    """

    def __init__(
        self,
        status: int = 401,
        code: str = "authentication_error",
        message: str = "",
        details: str = "",
        service: str = "",
    ) -> None:
        super().__init__(status, code, message, details, service)

    @property
    def reason(self) -> str:
        return self.details


class Forbidden(KalshiHTTPError):
    """403."""


class NotFound(KalshiHTTPError):
    """404: unknown market or order."""


class Conflict(KalshiHTTPError):
    """409: conflicting state."""


class OrderAlreadyExists(Conflict):
    """409 ``order_already_exists``: the client_order_id is already used."""


class InsufficientBalance(KalshiHTTPError):
    """Order rejected because collateral cannot be reserved."""


class MarketInactive(KalshiHTTPError):
    """Order operation on a closed, paused or unknown-state market / paused exchange."""


class RateLimited(KalshiHTTPError):
    """429: token bucket exhausted."""


class ServerError(KalshiHTTPError):
    """5xx."""


class KalshiConnectionError(KalshiError):
    """The request could not be completed (connect/read failure or timeout) after all retries."""


class OrderPlacementRefused(KalshiError):
    """Local safety guard: order mutations on a production host without explicit permission."""


class WsError(KalshiError):
    """WebSocket client failure."""


class WsNotConnected(WsError):
    """A command could not be sent or answered because the connection is down."""


class WsCommandError(WsError):
    """The server answered a command with ``type: error`` (Kalshi WS error codes, see ws_commands)."""

    def __init__(self, code: int, message: str, market_ticker: str | None = None) -> None:
        self.code = code
        self.message = message
        self.market_ticker = market_ticker
        super().__init__(code, message)

    def __str__(self) -> str:
        extra = f" [{self.market_ticker}]" if self.market_ticker else ""
        return f"WS error {self.code}: {self.message}{extra}"


_BY_CODE: dict[str, type[KalshiHTTPError]] = {
    "order_already_exists": OrderAlreadyExists,
    "insufficient_balance": InsufficientBalance,
    "market_inactive": MarketInactive,
    "market_already_closed": MarketInactive,
    "market_closed": MarketInactive,
    "trading_paused": MarketInactive,
    "exchange_paused": MarketInactive,
    "authentication_error": AuthError,
    "unauthorized": AuthError,
    "too_many_requests": RateLimited,
}

_BY_STATUS: dict[int, type[KalshiHTTPError]] = {
    400: BadRequest,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def http_error(
    status: int, code: str = "", message: str = "", details: str = "", service: str = ""
) -> KalshiHTTPError:
    """The most specific exception for a status + Kalshi code (code wins: it is more precise).

    Codes are matched case-insensitively because FIX/engine texts are UPPER_SNAKE while REST
    bodies use lower_snake for the same reasons.
    """
    cls = _BY_CODE.get(code.lower())
    if cls is None:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else KalshiHTTPError)
    return cls(status, code, message, details, service)
