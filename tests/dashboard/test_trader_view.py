"""trader_state and trades built from the Trader's, the reconciler's and the PolicyServer's own types."""

from __future__ import annotations

import msgspec
from dashboard_factories import open_order, portfolio, trade_fill, trader_stats, trader_view

from actors.reconciler import FillNotice
from kalshiflow.dashboard.trader import ExecutionTally, build_trader_state, build_trades, fill_from_notice
from kalshiflow.market.types import Action, Side
from kalshiflow.serving.messages import ServerStats


def policy_stats() -> ServerStats:
    return ServerStats(
        replica="r",
        version="v7",
        schema_hash="h",
        live_since=0.0,
        registry_current="v7",
        previous_versions=[],
        requests=99,
        requests_per_s=1.0,
        window_s=10.0,
        batches=9,
        mean_batch_size=1.0,
        max_batch_size=1,
        batch_size_hist={},
        p50_ms=1.5,
        p99_ms=3.0,
        not_ok={},
        reloads=1,
        refusals=0,
        load_failures=0,
        rollbacks=0,
        last_refusal="",
        events=[],
    )


def test_the_trader_view_is_shown_as_the_trader_reports_it() -> None:
    state = build_trader_state(
        trader_view(risk_mode="halted"),
        portfolio(),
        policy_stats(),
        now=5.0,
        state="running",
        trading_mode="simulator",
    )
    assert state.source == "trader" and state.environment == "simulator"
    assert (state.portfolio_value, state.cash, state.unrealized_pnl) == ("10012.50", "9900.00", "-1.50")
    assert state.risk_mode == "halted" and state.model_version == "v1"
    assert state.policy_requests == 99 and state.policy_latency_ms_p50 == 1.5
    assert state.positions[0].current_price == "0.4100" and state.open_orders[0].order_id == "o-1"
    assert state.metrics is not None and state.metrics.fill_rate == 0.5 and state.metrics.win_rate is None


def test_without_a_trader_the_reconciler_shows_cash_and_holdings_but_no_made_up_value() -> None:
    state = build_trader_state(
        None, portfolio((open_order("o-9", 50.0),)), None, now=5.0, state="absent", trading_mode="paper"
    )
    assert state.source == "reconciler" and state.portfolio_value is None and state.metrics is None
    assert state.cash == "9900.00" and state.realized_pnl == "14.00" and state.fees == "0.42"
    (pos,) = state.positions
    assert (pos.side, pos.contracts, pos.avg_price, pos.current_price) == ("no", "10.00", "0.5800", None)
    assert state.open_orders[0].created_ts == 50.0


def test_nothing_running_is_all_unknown() -> None:
    state = build_trader_state(None, None, None, now=5.0, state="absent", trading_mode=None)
    assert state.source is None and state.cash is None and state.positions == [] and state.risk_mode is None


def test_the_tally_counts_every_fill_and_how_long_resting_orders_waited() -> None:
    tally = ExecutionTally(cap=3)
    tally.seen_orders([open_order("o-1", 100.0), open_order("o-2", 0.0)])
    tally.on_fill(
        FillNotice(fill=trade_fill("o-1", taker=False, ts_ms=102_500), position=None, received_ns=1)
    )
    tally.on_fill(
        FillNotice(
            fill=trade_fill("o-3", taker=True, ts_ms=103_000, side=Side.NO), position=None, received_ns=1
        )
    )
    for i in range(3):
        tally.on_fill(
            FillNotice(fill=trade_fill(f"x-{i}", taker=True, ts_ms=104_000), position=None, received_ns=1)
        )
    assert (tally.total, tally.maker, tally.taker) == (5, 1, 4)
    assert tally.avg_fill_time_ms == 2500.0, "only orders seen resting have a known wait"
    assert len(tally.recent) == 3 and tally.recent[0].order_id == "x-2", "newest first, capped"
    trades = build_trades(None, None, tally, now=1.0, state="running", cap=10)
    assert trades.execution_stats.total_fills == 5 and [f.order_id for f in trades.recent_fills][0] == "x-2"
    no_fill = build_trades(None, None, ExecutionTally(3), now=1.0, state="running", cap=10)
    assert no_fill.recent_fills == [] and no_fill.execution_stats.total_fills == 0
    # An order placed and filled between two polls: the reconciler's notice says when it was made.
    tally.on_fill(FillNotice(fill=trade_fill("o-4", taker=False, ts_ms=105_500), position=None, received_ns=1,
                             order_created_ts=105.0))
    assert tally.avg_fill_time_ms == 1500.0  # (2.5 s + 0.5 s) / 2
    tally.on_fill(FillNotice(fill=trade_fill("o-5", taker=True, ts_ms=106_000), position=None, received_ns=1,
                             order_created_ts=100.0))
    assert tally.avg_fill_time_ms == 1500.0, "a taker fill is no wait in a queue"


def test_a_taker_no_fill_is_priced_on_the_no_side() -> None:
    tally = ExecutionTally(cap=3)
    tally.on_fill(
        FillNotice(fill=trade_fill("o", taker=True, ts_ms=1_000, side=Side.NO), position=None, received_ns=1)
    )
    assert tally.recent[0].price == "0.6000" and tally.recent[0].side == "no"


def test_trades_prefer_the_trader_fills_which_name_the_decision() -> None:
    trades = build_trades(
        trader_view(fills=2), trader_stats(fills=2), ExecutionTally(3), now=1.0, state="running", cap=10
    )
    assert [f.decision for f in trades.recent_fills] == ["buy_yes_5", "buy_yes_5"]
    s = trades.execution_stats
    assert (s.total_fills, s.maker_fills, s.taker_fills) == (2, 1, 1), "split known: every fill is listed"
    partial = build_trades(
        trader_view(fills=2), trader_stats(fills=9), ExecutionTally(3), now=1.0, state="running", cap=10
    )
    assert partial.execution_stats.total_fills == 9 and partial.execution_stats.maker_fills is None


def numbered(order_id: str, seq: int, maker: int, taker: int, origin: str = "rec:1") -> FillNotice:
    return FillNotice(fill=trade_fill(order_id, taker=taker > 0 and maker == 0, ts_ms=1_000), position=None,
                      received_ns=1, origin=origin, seq=seq, maker_fills=maker, taker_fills=taker)


def test_the_tally_counts_from_the_reconcilers_totals_across_missed_notices_and_restarts() -> None:
    tally = ExecutionTally(cap=10)
    # Subscribed late: the first notice seen is the reconciler's 5th fill (3 maker, 2 taker so far).
    tally.on_fill(numbered("o-5", 5, 3, 2))
    assert (tally.total, tally.maker, tally.taker) == (5, 3, 2)
    tally.on_fill(numbered("o-5", 5, 3, 2))  # delivered twice (a retried call): counted once
    assert (tally.total, len(tally.recent)) == (5, 1)
    tally.on_fill(numbered("o-8", 8, 4, 4))  # notices 6 and 7 were lost: their fills still count
    assert (tally.total, tally.maker, tally.taker) == (8, 4, 4)
    # A restarted reconciler numbers from 1 again: its fills add to what was counted before.
    tally.on_fill(numbered("o-9", 2, 1, 1, origin="rec:2"))
    assert (tally.total, tally.maker, tally.taker) == (10, 5, 5)
    assert [f.order_id for f in tally.recent] == ["o-9", "o-8", "o-5"]


def test_a_yes_sale_is_listed_at_its_yes_price() -> None:
    # Selling YES at 0.40 buys NO at 0.60: the row reads "sell yes 0.40", as the order was placed.
    sale = msgspec.structs.replace(trade_fill("o", taker=True, ts_ms=1_000), action=Action.SELL,
                                   bought_side=Side.NO, bought_price=6000)
    fill = fill_from_notice(FillNotice(fill=sale, position=None, received_ns=1))
    assert (fill.action, fill.side, fill.price) == ("sell", "yes", "0.4000")
