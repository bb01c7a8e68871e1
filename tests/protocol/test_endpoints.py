"""Endpoint selection and the production order guard."""

from __future__ import annotations

import pytest

from kalshiflow.config import ExchangeConfig
from kalshiflow.protocol.endpoints import (
    Endpoints,
    assert_order_placement_allowed,
    is_production_host,
    resolve_endpoints,
    simulator_endpoints,
)
from kalshiflow.protocol.errors import OrderPlacementRefused


def test_simulator_urls():
    ep = resolve_endpoints(ExchangeConfig(), simulator_host="0.0.0.0", simulator_port=8765)
    assert ep.rest_url == "http://127.0.0.1:8765/trade-api/v2"
    assert ep.ws_url == "ws://127.0.0.1:8765/trade-api/ws/v2"
    assert ep.rest_path_prefix == "/trade-api/v2" and ep.ws_path == "/trade-api/ws/v2"
    assert not ep.is_production
    assert simulator_endpoints("::1", 9).rest_url == "http://[::1]:9/trade-api/v2"
    with pytest.raises(ValueError):
        resolve_endpoints(ExchangeConfig())  # simulator needs its port
    with pytest.raises(ValueError):
        simulator_endpoints("127.0.0.1", 0)


def test_demo_and_production_urls():
    demo = resolve_endpoints(ExchangeConfig(environment="demo"))
    assert demo.rest_url == "https://demo-api.kalshi.co/trade-api/v2"
    assert demo.ws_url == "wss://demo-api.kalshi.co/trade-api/ws/v2"
    assert not demo.is_production
    ext = resolve_endpoints(ExchangeConfig(environment="demo", kalshi_hosts="external"))
    assert ext.rest_url == "https://external-api.demo.kalshi.co/trade-api/v2"
    assert ext.ws_url == "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"
    prod = resolve_endpoints(ExchangeConfig(environment="production"))
    assert prod.rest_url == "https://api.elections.kalshi.com/trade-api/v2" and prod.is_production
    prod_ext = resolve_endpoints(ExchangeConfig(environment="production", kalshi_hosts="external"))
    assert prod_ext.ws_url == "wss://external-api-ws.kalshi.com/trade-api/ws/v2"


def test_overrides():
    cfg = ExchangeConfig(
        environment="demo",
        rest_url="http://localhost:9000/trade-api/v2/",
        ws_url="ws://localhost:9000/trade-api/ws/v2",
    )
    ep = resolve_endpoints(cfg)
    assert ep.rest_url == "http://localhost:9000/trade-api/v2"
    with pytest.raises(ValueError):
        resolve_endpoints(ExchangeConfig(environment="demo", rest_url="localhost/trade-api/v2"))
    sim = resolve_endpoints(
        ExchangeConfig(rest_url="http://h:1/trade-api/v2", ws_url="ws://h:1/trade-api/ws/v2")
    )
    assert sim.environment == "simulator" and sim.rest_url == "http://h:1/trade-api/v2"


@pytest.mark.parametrize(
    "url,prod",
    [
        ("https://api.elections.kalshi.com/trade-api/v2", True),
        ("https://external-api.kalshi.com/trade-api/v2", True),
        ("wss://external-api-ws.kalshi.com/trade-api/ws/v2", True),
        ("https://KALSHI.COM./x", True),
        ("https://demo-api.kalshi.co/trade-api/v2", False),
        ("https://external-api.demo.kalshi.co/trade-api/v2", False),
        ("https://notkalshi.com/x", False),
        ("https://kalshi.com.evil.example/x", False),
        ("http://127.0.0.1:8765/trade-api/v2", False),
    ],
)
def test_production_host_detection(url, prod):
    assert is_production_host(url) is prod


def test_order_guard():
    assert_order_placement_allowed(ExchangeConfig())  # simulator
    assert_order_placement_allowed(ExchangeConfig(environment="demo"))
    with pytest.raises(OrderPlacementRefused):
        assert_order_placement_allowed(ExchangeConfig(environment="production"))
    assert_order_placement_allowed(ExchangeConfig(environment="production", allow_production_orders=True))
    # A demo/simulator config pointing at a production host is refused even with the flag.
    for env in ("demo", "simulator"):
        cfg = ExchangeConfig(
            environment=env,
            allow_production_orders=True,
            rest_url="https://api.elections.kalshi.com/trade-api/v2",
        )
        with pytest.raises(OrderPlacementRefused):
            assert_order_placement_allowed(cfg)
    ep = Endpoints(environment="demo", rest_url="https://external-api.kalshi.com/trade-api/v2", ws_url="")
    with pytest.raises(OrderPlacementRefused):
        assert_order_placement_allowed(ExchangeConfig(environment="demo"), ep)
    # Only a real boolean True counts (msgspec configs are typed, but guard against truthy junk).
    import msgspec

    sneaky = msgspec.structs.replace(ExchangeConfig(environment="production"), allow_production_orders=1)  # type: ignore[arg-type]
    with pytest.raises(OrderPlacementRefused):
        assert_order_placement_allowed(sneaky)
