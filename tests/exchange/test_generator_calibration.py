"""The generator looks like Kalshi (reference/kalshi-protocol.md §5) and its scenarios behave as
documented (docs/generator.md). Properties and ranges only; no timings."""

from __future__ import annotations

import pytest

from kalshiflow.exchange.generator import MarketGenerator, SimClock, load_generator_config, with_overrides
from kalshiflow.exchange.generator.calibrate import CalibrationReport, calibrate, format_report, main
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, QTY_SCALE
from kalshiflow.market.types import Action, Side, TimeInForce

START = 1_767_225_600.0


@pytest.fixture(scope="module")
def report() -> CalibrationReport:
    # 40 markets for half a simulated hour: every tier is populated, a few markets are hot.
    cfg = with_overrides(load_generator_config(), markets={"count": 40})
    return calibrate(cfg, seed=7, hours=0.5)


def test_books_are_never_crossed_and_never_one_sided(report: CalibrationReport) -> None:
    assert report.total_deltas > 10_000
    assert report.crossed_observations == 0  # checked after every single delta
    for tier in report.tiers.values():
        assert tier.one_sided_share < 0.02


def test_spreads_per_tier_match_kalshi(report: CalibrationReport) -> None:
    liquid, mid, thin = report.tiers["liquid"], report.tiers["mid"], report.tiers["thin"]
    assert 1 <= liquid.spread_cents_median <= 3  # Kalshi: 1-3c on liquid markets
    assert liquid.spread_cents_p90 <= 4
    assert 1 <= mid.spread_cents_median <= 5  # 2-5c "normal" markets
    assert 5 <= thin.spread_cents_median <= 15  # 5-15c outside the top tier
    assert thin.spread_cents_p10 >= 3


def test_sizes_near_the_touch_and_deep_tails(report: CalibrationReport) -> None:
    # 10-300 contracts per level near the touch; thousands resting at 1-5c.
    for tier in report.tiers.values():
        assert 10 <= tier.touch_size_median <= 400
    assert report.deep_tail_median_contracts >= 1000
    assert 10 <= report.delta_size_median_contracts <= 80
    assert 0.5 <= report.within_3c_of_touch_share <= 0.95


def test_activity_is_heavy_tailed_with_hot_markets_and_bursts(report: CalibrationReport) -> None:
    assert report.deltas_per_s_median < 0.5  # most markets are quiet
    assert report.deltas_per_s_p90 > 10 * report.deltas_per_s_p10
    assert 1.5 <= report.deltas_per_s_max <= 15  # hot markets: 2-10/s
    assert report.burst_max_deltas_10s >= 100  # bursts of 10+/s around jumps
    assert report.tiers["liquid"].trades_per_hour_median > report.tiers["thin"].trades_per_hour_median
    assert "liquid" in format_report(report)


def test_calibration_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--hours", "0.02", "--markets", "3", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"crossed_observations":0' in out


# ----------------------------------------------------------------------------- scenarios


def _fade_heuristic_pnl(scenario: str, seed: int) -> tuple[float, int]:
    """A public-information heuristic: fade the mid's deviation from its opening value.

    Enter 10 contracts against a deviation of more than 8c, exit once it is back within 2c.
    PnL = cash + positions marked at the best bid of others, minus the start, after fees.
    """
    tier = dict(name="t", share=1.0, spread_cents_min=1, spread_cents_max=2, activity_median=0.5,
                activity_sigma=0.3, market_makers=2, quote_levels=2, quote_size_median=60.0)
    cfg = with_overrides(
        load_generator_config(),
        markets={"count": 6, "scenario": scenario, "relist": False},
        schedule={"lifetime_min_s": 4 * 3600.0, "lifetime_max_s": 4 * 3600.0},
        tiers=[tier],
    )
    clock = SimClock(START)
    state = ExchangeState(clock=clock, seed=seed)
    state.add_account("user", 100_000 * MONEY_SCALE)
    gen = MarketGenerator(cfg, state, seed)
    start_value = state.venue.account_value("user")
    anchor: dict[str, float] = {}
    orders = 0
    for step in range(1, 270):  # 45 simulated minutes, a decision every 10 s
        gen.advance(START + 10.0 * step)
        for tk in gen.active_tickers():
            book = state.order_book(tk)
            mid = book.mid()
            if mid is None:
                continue
            dev = (mid - anchor.setdefault(tk, mid)) * 100
            pos = state.venue.account("user").position(tk)
            side: Side | None = None
            count = 10 * QTY_SCALE
            if pos == 0 and abs(dev) > 8:
                side = Side.NO if dev > 0 else Side.YES
            elif (pos > 0 and dev > -2) or (pos < 0 and dev < 2):
                side, count = (Side.NO if pos > 0 else Side.YES), abs(pos)
            ask = book.best_ask(side) if side is not None else None
            if side is None or ask is None:
                continue
            price = {"yes_price": ask} if side is Side.YES else {"no_price": ask}
            res = state.submit("user", tk, OrderRequest(side=side, action=Action.BUY, count=count,
                                                        time_in_force=TimeInForce.IOC, **price))
            assert res.ok
            orders += 1
    return (state.venue.account_value("user") - start_value) / MONEY_SCALE, orders


def test_edge_scenario_pays_a_simple_heuristic_and_driftless_does_not() -> None:
    edge, edge_orders = _fade_heuristic_pnl("edge", seed=1)
    flat, _ = _fade_heuristic_pnl("driftless", seed=1)
    assert edge_orders >= 20
    assert edge > 5.0  # dollars, after spread and fees
    assert flat < edge - 5.0
    assert flat < 2.0
