"""Market plans: what each listed market is (tier, activity, lifetime, seeds), from (seed, index).

Everything about market number ``index`` is derived from ``numpy.random.SeedSequence(seed,
spawn_key=(index, stream))`` alone, so adding markets, relisting, or a user's orders never
change another market's plan or latent path.
"""

from __future__ import annotations

import math
import random

import msgspec
import numpy as np

from kalshiflow.exchange.generator.config import GeneratorConfig, TierConfig
from kalshiflow.exchange.generator.latent import logit

# Independent random streams per market (spawn_key second element).
STREAM_PLAN = 0
STREAM_STEP = 1
STREAM_JUMP = 2
STREAM_RESULT = 3
STREAM_AGENTS = 4


def derive_seed(seed: int, index: int, stream: int) -> int:
    """A 64-bit seed for one stream of one market, stable across numpy versions."""
    state = np.random.SeedSequence(seed, spawn_key=(index, stream)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


class MarketPlan(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    ticker: str
    event_ticker: str
    series_ticker: str
    title: str
    tier: str
    activity: float  # multiplier on every base rate (log-normal across markets)
    spread_cents: int  # best MM's quoted spread
    open_time: float
    close_time: float
    x0: float  # opening logit of the latent probability
    seed: int

    def stream_seed(self, stream: int) -> int:
        return derive_seed(self.seed, self.index, stream)


def pick_tier(tiers: tuple[TierConfig, ...], u: float) -> TierConfig:
    total = sum(t.share for t in tiers)
    acc = 0.0
    for tier in tiers:
        acc += tier.share / total
        if u < acc:
            return tier
    return tiers[-1]


def plan_market(cfg: GeneratorConfig, seed: int, index: int, open_time: float) -> MarketPlan:
    """The full description of market `index`, listed to open at `open_time`."""
    rng = random.Random(derive_seed(seed, index, STREAM_PLAN))
    tier = pick_tier(cfg.tiers, rng.random())
    activity = tier.activity_median * math.exp(rng.gauss(0.0, tier.activity_sigma))
    spread_cents = rng.randint(tier.spread_cents_min, tier.spread_cents_max)
    s = cfg.schedule
    # Log-uniform lifetimes: many short markets, some long ones, closes spread over time.
    lifetime = math.exp(rng.uniform(math.log(s.lifetime_min_s), math.log(s.lifetime_max_s)))
    # Opening probability: mostly 10-90c; clip so quotes fit inside the 1-99c grid.
    p0 = min(0.95, max(0.05, 1.0 / (1.0 + math.exp(-rng.gauss(0.0, cfg.latent.initial_logit_sd)))))
    series = cfg.markets.series_ticker
    event = f"{series}-E{index:05d}"
    return MarketPlan(
        index=index,
        ticker=f"{event}-M{index:05d}",
        event_ticker=event,
        series_ticker=series,
        title=f"Simulated market {index} ({tier.name})",
        tier=tier.name,
        activity=activity,
        spread_cents=spread_cents,
        open_time=open_time,
        close_time=open_time + lifetime,
        x0=logit(p0),
        seed=seed,
    )
