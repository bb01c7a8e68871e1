"""Calibration: run the generator for a simulated while and measure what a collector would see.

    python -m kalshiflow.exchange.generator.calibrate --hours 1 --markets 50 --seed 7 [--json]

Measured, to compare with reference/kalshi-protocol.md §5 (the numbers are in docs/generator.md):
spreads per tier (time-sampled), size near the touch, deep-tail size at 1-5c, deltas/s per market
(distribution over markets), trades per hour, delta sizes, share of deltas within 3c of the touch,
and whether any book was ever crossed (checked after every single delta).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter, defaultdict

import msgspec

from kalshiflow.exchange.events import BookDelta, ExchangeEvent, TradeEvent
from kalshiflow.exchange.generator.config import GeneratorConfig, load_generator_config, with_overrides
from kalshiflow.exchange.generator.core import MarketGenerator
from kalshiflow.exchange.generator.port import SimClock
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.prices import CENT, QTY_SCALE
from kalshiflow.market.types import Side

DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed start keeps reports reproducible


class TierStats(msgspec.Struct, frozen=True, kw_only=True):
    markets: int
    spread_cents_p10: float
    spread_cents_median: float
    spread_cents_p90: float
    one_sided_share: float  # samples with an empty ladder on one side
    touch_size_median: float  # contracts at the best bid, per side
    near_touch_size_median: float  # contracts within 3c of the best bid, per side
    deltas_per_s_median: float
    trades_per_hour_median: float


class CalibrationReport(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    scenario: str
    sim_seconds: float
    markets_seen: int
    total_deltas: int
    total_trades: int
    deltas_per_s_total: float
    deltas_per_s_p10: float  # per market, over markets
    deltas_per_s_median: float
    deltas_per_s_p90: float
    deltas_per_s_max: float
    burst_max_deltas_10s: int  # busiest 10 s window of any market
    trades_per_hour_median: float
    delta_size_median_contracts: float
    within_3c_of_touch_share: float
    deep_tail_median_contracts: float  # size resting at 1-5c per ladder (where present)
    crossed_observations: int  # deltas after which best YES bid + best NO bid >= $1
    settled: int
    tiers: dict[str, TierStats]


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def calibrate(config: GeneratorConfig, seed: int = 7, *, hours: float = 1.0, sample_every_s: float = 5.0,
              start: float = DEFAULT_START) -> CalibrationReport:
    clock = SimClock(start)
    state = ExchangeState(clock=clock, seed=seed)
    deltas: Counter[str] = Counter()
    trades: Counter[str] = Counter()
    windows: Counter[tuple[str, int]] = Counter()
    sizes: list[int] = []
    near = 0
    crossed = 0

    def listen(ev: ExchangeEvent) -> None:
        nonlocal near, crossed
        if type(ev) is BookDelta:
            deltas[ev.ticker] += 1
            windows[(ev.ticker, int(ev.ts // 10))] += 1
            sizes.append(abs(ev.delta))
            book = state.venue.engine(ev.ticker).book
            best = book.best_bid(ev.side)
            if best is None or best - ev.price <= 3 * CENT:
                near += 1
            if book.is_crossed():
                crossed += 1
        elif type(ev) is TradeEvent:
            trades[ev.ticker] += 1

    state.add_listener(listen)
    gen = MarketGenerator(config, state, seed, start=start)
    spreads: dict[str, list[float]] = defaultdict(list)
    one_sided: dict[str, int] = Counter()
    samples: dict[str, int] = Counter()
    touch: dict[str, list[float]] = defaultdict(list)
    near_size: dict[str, list[float]] = defaultdict(list)
    tails: list[float] = []
    span_of: dict[str, tuple[float, float]] = {}  # ticker -> (open, close) of its plan
    tier_of: dict[str, str] = {}
    end = start + hours * 3600.0
    t = start
    while t < end:
        t = min(end, t + sample_every_s)
        gen.advance(t)
        for m in gen.markets.values():
            if m.status != "open":
                continue
            tk = m.plan.ticker
            tier_of[tk] = m.plan.tier
            span_of[tk] = (m.plan.open_time, m.plan.close_time)
            book = state.venue.engine(tk).book
            samples[m.plan.tier] += 1
            spread = book.spread()
            if spread is None:
                one_sided[m.plan.tier] += 1
            else:
                spreads[m.plan.tier].append(spread / CENT)
            for side in (Side.YES, Side.NO):
                best = book.best_bid(side)
                if best is None:
                    continue
                touch[m.plan.tier].append(book.best_bid_size(side) / QTY_SCALE)
                near_size[m.plan.tier].append(
                    sum(q for p, q in book.depth(side, 5) if best - p <= 3 * CENT) / QTY_SCALE)
                tail = sum(q for p, q in book.depth(side, 99) if p <= 5 * CENT) / QTY_SCALE
                if tail:
                    tails.append(tail)
    # Rates per market over the time it was open inside the window.
    rate: dict[str, float] = {}
    tph: dict[str, float] = {}
    for tk, (opened, closed) in span_of.items():
        span = max(min(end, closed) - max(opened, start), 1.0)
        rate[tk] = deltas[tk] / span
        tph[tk] = trades[tk] / span * 3600
    tiers: dict[str, TierStats] = {}
    for tier in sorted(set(tier_of.values())):
        tks = [tk for tk, name in tier_of.items() if name == tier]
        tiers[tier] = TierStats(
            markets=len(tks),
            spread_cents_p10=_q(spreads[tier], 0.1),
            spread_cents_median=_q(spreads[tier], 0.5),
            spread_cents_p90=_q(spreads[tier], 0.9),
            one_sided_share=one_sided[tier] / max(samples[tier], 1),
            touch_size_median=_q(touch[tier], 0.5),
            near_touch_size_median=_q(near_size[tier], 0.5),
            deltas_per_s_median=_q([rate[tk] for tk in tks], 0.5),
            trades_per_hour_median=_q([tph[tk] for tk in tks], 0.5),
        )
    rates = list(rate.values())
    total = sum(deltas.values())
    return CalibrationReport(
        seed=seed, scenario=config.markets.scenario, sim_seconds=hours * 3600.0, markets_seen=len(span_of),
        total_deltas=total, total_trades=sum(trades.values()),
        deltas_per_s_total=total / (hours * 3600.0),
        deltas_per_s_p10=_q(rates, 0.1), deltas_per_s_median=_q(rates, 0.5), deltas_per_s_p90=_q(rates, 0.9),
        deltas_per_s_max=max(rates, default=0.0),
        burst_max_deltas_10s=max(windows.values(), default=0),
        trades_per_hour_median=_q(list(tph.values()), 0.5),
        delta_size_median_contracts=statistics.median(sizes) / QTY_SCALE if sizes else float("nan"),
        within_3c_of_touch_share=near / max(total, 1),
        deep_tail_median_contracts=_q(tails, 0.5),
        crossed_observations=crossed, settled=len(gen.results), tiers=tiers,
    )


def format_report(r: CalibrationReport) -> str:
    lines = [
        f"seed {r.seed}, scenario {r.scenario}, {r.sim_seconds / 3600:g} simulated h, "
        f"{r.markets_seen} markets ({r.settled} settled)",
        f"deltas: {r.total_deltas} ({r.deltas_per_s_total:.1f}/s total); "
        f"per market p10 {r.deltas_per_s_p10:.3f} median {r.deltas_per_s_median:.3f} "
        f"p90 {r.deltas_per_s_p90:.2f} max {r.deltas_per_s_max:.2f}/s; "
        f"busiest 10 s: {r.burst_max_deltas_10s}",
        f"trades: {r.total_trades}; median {r.trades_per_hour_median:.1f}/h per market",
        f"delta size median {r.delta_size_median_contracts:.0f} contracts; "
        f"{r.within_3c_of_touch_share:.0%} within 3c of the touch; deep tail median "
        f"{r.deep_tail_median_contracts:.0f} contracts at 1-5c; crossed: {r.crossed_observations}",
    ]
    for name, t in r.tiers.items():
        lines.append(
            f"  {name:7s} {t.markets:3d} mkts  spread p10/50/90 {t.spread_cents_p10:.0f}/"
            f"{t.spread_cents_median:.0f}/{t.spread_cents_p90:.0f}c  one-sided {t.one_sided_share:.0%}  "
            f"touch {t.touch_size_median:.0f}  within 3c {t.near_touch_size_median:.0f}  "
            f"deltas/s {t.deltas_per_s_median:.3f}  trades/h {t.trades_per_hour_median:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="generator TOML (default configs/generator.toml)")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--markets", type=int, default=None, help="override markets.count")
    ap.add_argument("--scenario", default=None, choices=["driftless", "edge", "static"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_generator_config(args.config)
    over = {k: v for k, v in (("count", args.markets), ("scenario", args.scenario)) if v is not None}
    if over:
        cfg = with_overrides(cfg, markets=over)
    report = calibrate(cfg, args.seed, hours=args.hours)
    sys.stdout.write((msgspec.json.encode(report).decode() if args.json else format_report(report)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
