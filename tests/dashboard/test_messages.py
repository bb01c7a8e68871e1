"""Every message the dashboard sends decodes strictly into its frozen msgspec schema."""

from __future__ import annotations

import msgspec
import pytest
from dashboard_factories import collector, market, portfolio, trader_stats, trader_view, write_queue

from kalshiflow.dashboard import messages as M
from kalshiflow.dashboard.collection import MARKET_ROWS_CAP, build_collection_status, redact
from kalshiflow.dashboard.streams import LadderStream, PnlTracker
from kalshiflow.dashboard.trader import ExecutionTally, build_trader_state, build_trades


def collection_status(**kw: object) -> M.CollectionStatus:
    args: dict[str, object] = dict(
        now=1.0,
        state="running",
        environment="simulator",
        exchange_url="ws://h/ws",
        session_id="s",
        uptime_s=5.0,
        memory_mb=100.0,
        ui_clients=1,
        ui_dropped=0,
    )
    args.update(kw)
    return build_collection_status([collector("c-0", [market("A", 5)])], write_queue(), **args)  # type: ignore[arg-type]


def every_message() -> list[object]:
    ladder = LadderStream("KX-A")
    diff = ladder.update(True, {"0.4200": "10.00"}, {"0.4500": "3.00"}, 1.0)
    pnl = PnlTracker(10)
    return [
        M.Hello(
            protocol=M.PROTOCOL_VERSION,
            client_id=1,
            environment="simulator",
            trading_mode="simulator",
            ray_dashboard_url="http://127.0.0.1:8265",
            update_interval_s=1.0,
            components=M.Components(
                collectors=True, write_queue=True, trader=False, reconciler=False, policy_server=False
            ),
        ),
        collection_status(),
        build_trader_state(
            trader_view(), portfolio(), None, now=1.0, state="running", trading_mode="simulator"
        ),
        build_trader_state(None, portfolio(), None, now=1.0, state="running", trading_mode="paper"),
        build_trader_state(None, None, None, now=1.0, state="absent", trading_mode=None),
        build_trades(trader_view(), trader_stats(), ExecutionTally(5), now=1.0, state="running", cap=5),
        diff,
        ladder.snapshot(),
        pnl.append(1.0, 10.0),
        pnl.snapshot(),
        M.CommandResult(command="kill_switch", ok=True, detail="halted"),
    ]


@pytest.mark.parametrize("data", every_message(), ids=lambda d: type(d).__name__)
def test_each_message_round_trips_through_the_strict_schema(data: object) -> None:
    text = M.encode(data)  # type: ignore[arg-type]
    raw = msgspec.json.decode(text)
    assert set(raw) == {"type", "data"}
    decoded = M.decode_server(text)
    assert decoded.data == data


def test_the_schema_refuses_unknown_and_missing_fields() -> None:
    raw = msgspec.json.decode(M.encode(collection_status()))
    with pytest.raises(msgspec.ValidationError):
        M.decode_server(msgspec.json.encode({**raw, "data": {**raw["data"], "surprise": 1}}))
    del raw["data"]["deltas_collected"]
    with pytest.raises(msgspec.ValidationError):
        M.decode_server(msgspec.json.encode(raw))
    with pytest.raises(msgspec.ValidationError):
        M.decode_server(b'{"type": "orderbook_snapshot", "data": {}}')


def test_client_commands_are_validated() -> None:
    assert M.decode_client('{"type": "select_market", "ticker": "KX-A"}') == M.SelectMarket(ticker="KX-A")
    assert M.decode_client('{"type": "kill_switch"}') == M.KillSwitch()
    for bad in ('{"type": "kill_switch", "x": 1}', '{"type": "rm -rf"}', "not json", '{"ticker": "A"}'):
        with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
            M.decode_client(bad)
    with pytest.raises(ValueError):
        M.decode_client('{"type": "select_market", "ticker": "' + "A" * 5000 + '"}')


def test_collection_status_sums_the_collectors_and_caps_the_market_list() -> None:
    many = [market(f"M{i:04d}", i) for i in range(MARKET_ROWS_CAP + 50)]
    status = build_collection_status(
        [collector("c-0", many[:75]), collector("c-1", many[75:], connected=False)],
        write_queue(depth=7),
        now=1.0,
        state="running",
        environment="simulator",
        exchange_url=None,
        session_id="s",
        uptime_s=1.0,
        memory_mb=None,
        ui_clients=0,
        ui_dropped=0,
    )
    assert status.markets_tracked == len(many) and len(status.markets) == MARKET_ROWS_CAP
    assert status.markets[0].ticker == f"M{len(many) - 1:04d}", "most active first"
    assert status.deltas_collected == sum(range(len(many)))
    assert status.collectors == 2 and status.collectors_connected == 1 and not status.connected
    assert status.reconnects == 2 and status.unacked_rows == 6
    assert status.write_queue is not None and status.write_queue.depth == 7


def test_lag_is_unknown_when_the_exchange_clock_is_not_wall_time() -> None:
    timed = collection_status()
    assert timed.lag_ms_mean == 4.0 and timed.lag_ms_max == 20 and timed.markets[0].lag_ms_mean == 3.25
    sped_up = collection_status(lag_measurable=False)  # a simulator at speed != 1
    assert sped_up.lag_ms_mean is None and sped_up.lag_ms_max is None
    assert sped_up.markets[0].lag_ms_mean is None
    assert sped_up.deltas_collected == timed.deltas_collected


def test_no_collectors_is_not_connected() -> None:
    status = build_collection_status(
        [],
        None,
        now=1.0,
        state="starting",
        environment="demo",
        exchange_url=None,
        session_id=None,
        uptime_s=0.0,
        memory_mb=None,
        ui_clients=0,
        ui_dropped=0,
    )
    assert not status.connected and status.markets_tracked == 0 and status.write_queue is None


def test_credentials_never_reach_the_browser() -> None:
    assert redact("postgresql://kf:hunter2@db:5432/x failed") == "postgresql://***@db:5432/x failed"
    assert "hunter2" not in (redact("password=hunter2 host=db") or "")
    assert "BEGIN" not in (redact("-----BEGIN RSA PRIVATE KEY-----\nMIIE") or "")
    status = build_collection_status(
        [collector("c", [market("A", 1)])],
        write_queue(database_up=False, last_error="connect to postgres://u:pw@h/db"),
        now=1.0,
        state="running",
        environment="demo",
        exchange_url="wss://u:pw@demo-api.kalshi.co/trade-api/ws/v2",
        session_id="s",
        uptime_s=1.0,
        memory_mb=None,
        ui_clients=0,
        ui_dropped=0,
    )
    assert "pw@" not in M.encode(status)
