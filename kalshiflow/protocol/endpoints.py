"""REST / WebSocket base URLs per environment, and the production order-placement guard.

Every URL keeps Kalshi's mount points (``/trade-api/v2`` and ``/trade-api/ws/v2``) because the
signature covers the path from the root: the simulator is mounted at the same paths.

The guard :func:`assert_order_placement_allowed` is the single place that decides whether an order
may be sent. Production is detected from the environment AND from the hostname, so a ``rest_url``
override pointing at a kalshi.com host cannot slip past it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import msgspec

from kalshiflow.config import ExchangeConfig
from kalshiflow.protocol.errors import OrderPlacementRefused

REST_PATH = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"

# (REST base, WS URL) per (environment, host family).
KALSHI_URLS: dict[tuple[str, str], tuple[str, str]] = {
    ("demo", "shared"): ("https://demo-api.kalshi.co" + REST_PATH, "wss://demo-api.kalshi.co" + WS_PATH),
    ("demo", "external"): (
        "https://external-api.demo.kalshi.co" + REST_PATH,
        "wss://external-api-ws.demo.kalshi.co" + WS_PATH,
    ),
    ("production", "shared"): (
        "https://api.elections.kalshi.com" + REST_PATH,
        "wss://api.elections.kalshi.com" + WS_PATH,
    ),
    ("production", "external"): (
        "https://external-api.kalshi.com" + REST_PATH,
        "wss://external-api-ws.kalshi.com" + WS_PATH,
    ),
}

# Real-money hosts are exactly kalshi.com and its subdomains; demo is kalshi.co (no "m").
_PRODUCTION_DOMAIN = "kalshi.com"


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    environment: str  # simulator | demo | production
    rest_url: str  # base, e.g. https://demo-api.kalshi.co/trade-api/v2 (no trailing slash)
    ws_url: str  # full, e.g. wss://demo-api.kalshi.co/trade-api/ws/v2

    @property
    def rest_path_prefix(self) -> str:
        """The path part of the REST base ('/trade-api/v2'); signed paths start with it."""
        return urlsplit(self.rest_url).path.rstrip("/")

    @property
    def ws_path(self) -> str:
        """The path the WS handshake signs ('/trade-api/ws/v2')."""
        return urlsplit(self.ws_url).path or "/"

    @property
    def is_production(self) -> bool:
        return (
            self.environment == "production"
            or is_production_host(self.rest_url)
            or is_production_host(self.ws_url)
        )


def is_production_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host == _PRODUCTION_DOMAIN or host.endswith("." + _PRODUCTION_DOMAIN)


def _host_for_url(host: str) -> str:
    # A server bound to the wildcard address is reached via loopback.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def simulator_endpoints(host: str, port: int, *, tls: bool = False) -> Endpoints:
    """URLs of a running simulator (plain http/ws on loopback by default)."""
    if not 0 < port < 65536:
        raise ValueError(f"simulator port must be a real port, got {port} (0 means 'not started yet')")
    netloc = f"{_host_for_url(host)}:{port}"
    http, ws = ("https", "wss") if tls else ("http", "ws")
    return Endpoints(
        environment="simulator", rest_url=f"{http}://{netloc}{REST_PATH}", ws_url=f"{ws}://{netloc}{WS_PATH}"
    )


def _clean(url: str, what: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"exchange.{what} {url!r} is not an absolute URL")
    if parts.query or parts.fragment:
        raise ValueError(f"exchange.{what} {url!r} must not carry a query or fragment")
    return url.strip().rstrip("/")


def resolve_endpoints(
    config: ExchangeConfig, *, simulator_host: str | None = None, simulator_port: int | None = None
) -> Endpoints:
    """Endpoints for ``config.environment``; non-empty ``rest_url``/``ws_url`` override each URL.

    For the simulator the caller passes where it actually listens (its configured port may be 0
    = chosen at start) unless both URLs are overridden.
    """
    env = config.environment
    if env == "simulator":
        if config.rest_url and config.ws_url:
            base = Endpoints(environment=env, rest_url="", ws_url="")
        elif simulator_port is None:
            raise ValueError(
                "environment 'simulator' needs the simulator's host and port (or rest_url and ws_url)"
            )
        else:
            base = simulator_endpoints(simulator_host or "127.0.0.1", simulator_port)
    else:
        rest, ws = KALSHI_URLS[(env, config.kalshi_hosts)]
        base = Endpoints(environment=env, rest_url=rest, ws_url=ws)
    return Endpoints(
        environment=env,
        rest_url=_clean(config.rest_url, "rest_url") if config.rest_url else base.rest_url,
        ws_url=_clean(config.ws_url, "ws_url") if config.ws_url else base.ws_url,
    )


def assert_order_placement_allowed(config: ExchangeConfig, endpoints: Endpoints | None = None) -> None:
    """Raise OrderPlacementRefused unless orders may be sent to these endpoints.

    Production (by environment or by hostname) requires BOTH ``environment == "production"`` and
    ``allow_production_orders is True``: a demo/simulator config whose URL override points at a
    real-money host is a misconfiguration and is refused even with the flag set. The flag is
    compared by identity so that only an explicit boolean true counts.
    """
    urls = [config.rest_url, config.ws_url]
    if endpoints is not None:
        urls += [endpoints.rest_url, endpoints.ws_url]
    production = config.environment == "production" or any(u and is_production_host(u) for u in urls)
    if endpoints is not None and endpoints.environment == "production":
        production = True
    if not production:
        return
    if config.environment != "production":
        raise OrderPlacementRefused(
            f"refusing to place orders: environment is {config.environment!r} but the URL is a production "
            "(kalshi.com) host"
        )
    if config.allow_production_orders is not True:
        raise OrderPlacementRefused(
            "refusing to place orders on production: set exchange.allow_production_orders = true explicitly"
        )
