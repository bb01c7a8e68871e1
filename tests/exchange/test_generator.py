"""Synthetic market generator: config, latent process, determinism, lifecycle and scenarios.

Statistical tests use fixed seeds, so they are deterministic; their tolerances are several
standard errors wide, so a correct generator passes for any seed and a broken one fails.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kalshiflow.config import ConfigError
from kalshiflow.exchange.events import BookDelta, LifecycleEvent, MarketStatus, TradeEvent
from kalshiflow.exchange.generator import (
    DEFAULT_GENERATOR_CONFIG,
    GeneratorConfig,
    LatentProcess,
    MarketGenerator,
    SimClock,
    load_generator_config,
    with_overrides,
)
from kalshiflow.exchange.generator.config import LatentConfig
from kalshiflow.exchange.generator.latent import logit, martingale_up_probability, sigmoid
from kalshiflow.exchange.generator.schedule import plan_market
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, PRICE_SCALE, QTY_SCALE
from kalshiflow.market.types import Action, Side, TimeInForce

START = 1_767_225_600.0


def make(cfg: GeneratorConfig, seed: int, state_seed: int = 0,
         ) -> tuple[MarketGenerator, ExchangeState, SimClock]:
    clock = SimClock(START)
    state = ExchangeState(clock=clock, seed=state_seed)
    return MarketGenerator(cfg, state, seed), state, clock


def small(count: int = 4, **sections: Any) -> GeneratorConfig:
    sections.setdefault("markets", {})
    sections["markets"] = {"count": count, **sections["markets"]}
    return with_overrides(load_generator_config(), **sections)


# ----------------------------------------------------------------------------- config


def test_shipped_config_matches_struct_defaults() -> None:
    # The TOML documents the defaults; drifting apart would make one of them lie.
    assert load_generator_config(DEFAULT_GENERATOR_CONFIG) == GeneratorConfig()


def test_config_is_frozen_and_rejects_unknown_keys(tmp_path: Path) -> None:
    cfg = load_generator_config()
    with pytest.raises(AttributeError):
        cfg.markets.count = 3  # type: ignore[misc]
    bad = tmp_path / "g.toml"
    bad.write_text("[markets]\ncount = 3\nscenaro = 'edge'\n")
    with pytest.raises(ConfigError, match="markets.scenaro"):
        load_generator_config(bad)
    bad.write_text("[markets]\nscenario = 'trending'\n")
    with pytest.raises(ConfigError, match="markets.scenario"):
        load_generator_config(bad)
    bad.write_text("[schedule]\nlifetime_min_s = 10.0\nlifetime_max_s = 5.0\n")
    with pytest.raises(ConfigError, match="lifetime_min_s"):
        load_generator_config(bad)


# ----------------------------------------------------------------------------- latent process


def test_martingale_step_probability_keeps_expectation() -> None:
    for x in (-6.0, -1.3, 0.0, 0.4, 3.0, 9.0):
        for h in (0.01, 0.2, 1.5):
            q = martingale_up_probability(x, h)
            assert 0.0 <= q <= 1.0
            assert q * sigmoid(x + h) + (1 - q) * sigmoid(x - h) == pytest.approx(sigmoid(x), abs=1e-12)


def _final_values(scenario: str, n: int, p0: float, cfg: LatentConfig,
                  ) -> tuple[list[float], list[float], list[bool]]:
    halves, finals, results = [], [], []
    for s in range(n):
        lp = LatentProcess(cfg, scenario, 0.0, 7200.0, logit(p0), s, 10**6 + s, 2 * 10**6 + s)  # type: ignore[arg-type]
        halves.append(lp.value(3600.0))
        finals.append(lp.value(7200.0))
        results.append(lp.settle())
    return halves, finals, results


def test_driftless_latent_is_a_martingale_and_settles_by_it() -> None:
    # E[p_t] = p_0 at every t and P(YES) = p_0, over many independent seeds.
    cfg = LatentConfig(step_s=10.0, jumps_per_hour=3.0)
    p0 = 0.3
    halves, finals, results = _final_values("driftless", 800, p0, cfg)
    for values in (halves, finals):
        se = statistics.pstdev(values) / math.sqrt(len(values))
        assert abs(statistics.mean(values) - p0) < 4 * se + 1e-3
    se = math.sqrt(p0 * (1 - p0) / len(results))
    assert abs(sum(results) / len(results) - p0) < 4 * se
    # The close ramp drives the value toward 0/1: paths spread out and many end decided.
    assert statistics.pstdev(finals) > 1.2 * statistics.pstdev(halves)
    assert sum(1 for p in finals if p < 0.1 or p > 0.9) > 0.3 * len(finals)


def test_naive_logit_walk_would_fail_the_martingale_test() -> None:
    # Power check of the test above: a symmetric Gaussian walk in logit space drifts in p.
    import random

    rng = random.Random(1)
    x0 = logit(0.3)
    finals = [sigmoid(x0 + rng.gauss(0.0, 2.5)) for _ in range(800)]
    se = statistics.pstdev(finals) / math.sqrt(len(finals))
    assert abs(statistics.mean(finals) - 0.3) > 4 * se


def test_latent_path_does_not_depend_on_when_it_is_observed() -> None:
    cfg = LatentConfig()
    a = LatentProcess(cfg, "driftless", 0.0, 3600.0, 0.2, 1, 2, 3)
    b = LatentProcess(cfg, "driftless", 0.0, 3600.0, 0.2, 1, 2, 3)
    for t in range(0, 3000, 7):
        a.value(float(t))
    assert a.value(3000.0) == b.value(3000.0)
    assert a.settle() == b.settle()


def test_edge_latent_reverts_toward_its_opening_value() -> None:
    # E[x_{t+h} - x_t] = -(1 - 2^(-h/half_life)) (x_t - anchor): a predictable pull.
    cfg = LatentConfig(step_s=5.0, jumps_per_hour=0.0)
    devs, moves = [], []
    for s in range(300):
        lp = LatentProcess(cfg, "edge", 0.0, 4 * 3600.0, 0.0, s, 10**6 + s, 2 * 10**6 + s)
        for k in range(1, 12):
            lp.value(k * 1200.0)
            x0 = lp.x
            lp.value(k * 1200.0 + 300.0)
            devs.append(x0 - lp.x_anchor)
            moves.append(lp.x - x0)
    slope = sum(d * m for d, m in zip(devs, moves, strict=True)) / sum(d * d for d in devs)
    assert -0.65 < slope < -0.35  # half-life 300 s over a 300 s horizon: -0.5


# ----------------------------------------------------------------------------- determinism


def _run_with_user(cfg: GeneratorConfig, seed: int, minutes: int = 20) -> tuple[list[Any], dict[str, float]]:
    """Run with a user trading at fixed simulated times; return every published event."""
    gen, state, clock = make(cfg, seed)
    events: list[Any] = []
    state.add_listener(lambda ev: events.append(msgspec.to_builtins(ev)))
    state.add_account("user", 10_000 * MONEY_SCALE)
    for minute in range(1, minutes + 1):
        gen.advance(START + 60.0 * minute)
        tickers = sorted(gen.active_tickers())
        if tickers and minute % 3 == 0:
            tk = tickers[minute % len(tickers)]
            ask = state.order_book(tk).best_ask(Side.YES)
            if ask is not None:
                state.submit("user", tk, OrderRequest(side=Side.YES, action=Action.BUY, count=5 * QTY_SCALE,
                                                      yes_price=ask, time_in_force=TimeInForce.IOC))
    return events, {tk: gen.latent_value(tk) for tk in gen.active_tickers()}


def test_same_seed_and_same_orders_give_identical_event_streams() -> None:
    cfg = small(5)
    a, latent_a = _run_with_user(cfg, seed=11)
    b, latent_b = _run_with_user(cfg, seed=11)
    assert len(a) > 1000
    assert a == b
    assert latent_a == latent_b
    c, _ = _run_with_user(cfg, seed=12)
    assert c != a


def test_user_orders_do_not_change_the_latent_path() -> None:
    cfg = small(3)
    _, with_user = _run_with_user(cfg, seed=5)
    gen, _, _ = make(cfg, 5)
    gen.advance(START + 20 * 60.0)
    assert {tk: gen.latent_value(tk) for tk in gen.active_tickers()} == with_user


def test_market_plans_are_independent_of_the_number_of_markets() -> None:
    cfg5, cfg50 = small(5), small(50)
    for index in range(5):
        assert plan_market(cfg5, 3, index, START) == plan_market(cfg50, 3, index, START)


# ----------------------------------------------------------------------------- lifecycle


def test_markets_open_close_settle_pay_out_and_relist() -> None:
    cfg = small(3, schedule={"lifetime_min_s": 600.0, "lifetime_max_s": 900.0, "settle_delay_s": 30.0,
                             "relist_delay_s": 5.0})
    gen, state, clock = make(cfg, seed=2)
    lifecycle: list[tuple[str, str]] = []
    state.add_listener(lambda ev: lifecycle.append((ev.market.ticker, ev.event_type))
                       if isinstance(ev, LifecycleEvent) else None)
    gen.advance(START + 1.0)
    tickers = sorted(gen.active_tickers())
    assert len(tickers) == 3
    state.add_account("user", 1_000 * MONEY_SCALE)
    bought: dict[str, int] = {}
    for tk in tickers:
        ask = state.order_book(tk).best_ask(Side.YES)
        assert ask is not None
        res = state.submit("user", tk, OrderRequest(side=Side.YES, action=Action.BUY, count=10 * QTY_SCALE,
                                                    yes_price=ask, time_in_force=TimeInForce.IOC))
        assert res.ok and res.order is not None
        bought[tk] = res.order.fill_count
    cash_before = state.venue.account("user").cash
    gen.advance(START + 1000.0)
    # Every first market closed and settled with its latent draw; the user was paid through the venue.
    paid = 0
    for tk in tickers:
        info = state.market(tk)
        assert info is not None and info.status is MarketStatus.FINALIZED
        assert info.result == ("yes" if gen.results[tk] else "no")
        assert [e for t, e in lifecycle if t == tk][-3:] == ["closed", "determined", "settled"]
        if gen.results[tk]:
            paid += bought[tk] * PRICE_SCALE
        with pytest.raises(KeyError):
            gen.latent_value(tk)
    assert state.venue.account("user").cash - cash_before == paid
    # Replacements keep the exchange at `count` active markets.
    assert len(gen.active_tickers()) == 3
    assert not set(gen.active_tickers()) & set(tickers)


def test_static_scenario_freezes_the_book_after_open() -> None:
    cfg = small(3, markets={"scenario": "static"})
    gen, state, _ = make(cfg, seed=4)
    gen.advance(START + 1.0)
    books = {tk: state.book(tk) for tk in gen.active_tickers()}
    assert all(b.yes and b.no for b in books.values())
    changes: list[object] = []
    state.add_listener(lambda ev: changes.append(ev) if isinstance(ev, (BookDelta, TradeEvent)) else None)
    gen.advance(START + 1200.0)
    assert changes == []
    assert {tk: state.book(tk) for tk in gen.active_tickers()} == books
    opening = {tk: sigmoid(gen.by_ticker[tk].plan.x0) for tk in books}
    assert {tk: gen.latent_value(tk) for tk in books} == opening


async def test_run_paces_simulated_time_by_speed() -> None:
    import asyncio

    gen, state, clock = make(small(2), seed=8)
    stop = asyncio.Event()
    ticks = [0.0]

    def wall() -> float:  # each look advances the fake wall clock 0.5 s; stop after 20 s
        ticks[0] += 0.5
        if ticks[0] >= 20.0:
            stop.set()
        return ticks[0]

    await asyncio.wait_for(gen.run(speed=60.0, stop=stop, tick_s=0.0, wall=wall), timeout=30)
    # About 20 wall seconds at 60x: some 20 simulated minutes, stamped on the simulated clock.
    assert 15 * 60 <= clock() - START <= 21 * 60
    assert gen.now == clock()
    assert len(gen.active_tickers()) == 2


def test_makers_refill_after_a_user_sweeps_their_quotes() -> None:
    # One quiet thin market: its MM checks quotes only every few minutes on its own, so a quick
    # refill can only come from reacting to its fills.
    thin = dict(name="thin", share=1.0, spread_cents_min=6, spread_cents_max=6, activity_median=0.01,
                activity_sigma=0.0, market_makers=1, quote_levels=2, quote_size_median=20.0)
    cfg = small(1, tiers=[thin], latent={"jumps_per_hour": 0.0})
    gen, state, clock = make(cfg, seed=6)
    gen.advance(START + 1.0)
    (tk,) = gen.active_tickers()
    book = state.order_book(tk)
    ask = book.best_ask(Side.YES)
    assert ask is not None
    state.add_account("user", 10_000 * MONEY_SCALE)
    # Sweep both quoted levels (the deep tail at 95-99c stays).
    res = state.submit("user", tk, OrderRequest(side=Side.YES, action=Action.BUY, count=5_000 * QTY_SCALE,
                                                yes_price=ask + 500, time_in_force=TimeInForce.IOC))
    assert res.ok and res.order is not None and res.order.fill_count > 0
    swept = book.spread()
    assert swept is None or swept > 10 * 100
    gen.advance(START + 15.0)
    spread = book.spread()
    assert spread is not None and spread <= 6 * 100
