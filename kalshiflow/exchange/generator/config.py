"""Generator parameters: configs/generator.toml -> frozen msgspec Structs that reject unknown keys.

Every knob that shapes the synthetic markets lives here, with the Kalshi figure it was tuned
against (reference/kalshi-protocol.md §5) next to it, so a calibration change is a config change.
Units: seconds of *simulated* time, cents for prices (converted to exact ticks when quoted),
whole contracts for sizes. Rates are floats (they are probabilities, not money).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from kalshiflow.config import PROJECT_ROOT, ConfigError, _decode
from kalshiflow.market.fees import FeeType

DEFAULT_GENERATOR_CONFIG = PROJECT_ROOT / "configs" / "generator.toml"

Scenario = Literal["driftless", "edge", "static"]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class MarketsConfig(_Section, frozen=True):
    count: int = 20  # markets kept active at once
    scenario: Scenario = "driftless"
    relist: bool = True  # list a fresh market when one settles, so `count` stay active
    series_ticker: str = "KXSIM"
    price_level_structure: str = "linear_cent"
    fee_type: FeeType = FeeType.QUADRATIC  # Kalshi series fee_type (maker fees or not)
    # Bots are ordinary accounts; their balances only need to never bind.
    bot_balance_dollars: str = "1000000000.00"


class ScheduleConfig(_Section, frozen=True):
    # Lifetimes are drawn log-uniformly, so closes are staggered and the exchange churns.
    lifetime_min_s: float = 1800.0
    lifetime_max_s: float = 21600.0
    # First markets open at t0 + U(0, open_stagger_s).
    open_stagger_s: float = 0.0
    # close -> determined+settled (Kalshi: settlement_timer_seconds, usually minutes).
    settle_delay_s: float = 60.0
    # settled -> the replacement market opens.
    relist_delay_s: float = 5.0


class LatentConfig(_Section, frozen=True):
    # Diffusion is simulated in steps of this many seconds (exact martingale per step).
    step_s: float = 1.0
    # p0 = sigmoid(N(0, initial_logit_sd)): most markets start between 10c and 90c.
    initial_logit_sd: float = 1.2
    # Logit volatility per sqrt(hour) far from close.
    vol_per_sqrt_hour: float = 0.5
    # Volatility rises as close nears, ~ sqrt(lifetime / (remaining + ramp_tau_s)), so prices
    # converge toward 0/1 like a game or a data release resolving. 0 disables the ramp.
    close_ramp_tau_s: float = 600.0
    close_ramp_max: float = 6.0
    # Jumps (news, scores): Poisson arrivals, Student-t sizes in logit units.
    jumps_per_hour: float = 1.5
    jump_scale: float = 0.35
    jump_tail_df: float = 3.0
    jump_max: float = 4.0
    # `edge` scenario: Ornstein-Uhlenbeck pull of the logit toward the market's opening logit.
    edge_half_life_s: float = 300.0
    edge_vol_per_sqrt_hour: float = 2.5


class TierConfig(_Section, frozen=True):
    name: str
    share: float  # fraction of listed markets in this tier
    spread_cents_min: int  # quoted spread of the best market maker, inclusive range
    spread_cents_max: int
    # Activity multiplier across markets of the tier: log-normal(median, sigma). Multiplies every
    # base rate below, so per-market delta rates are heavy-tailed.
    activity_median: float
    activity_sigma: float
    market_makers: int  # MMs quoting the market; later ones quote wider
    quote_levels: int  # levels per side per MM
    quote_size_median: float  # contracts per level near the touch (Kalshi: 10-300)
    quote_size_sigma: float = 0.7


class ActivityConfig(_Section, frozen=True):
    # Base event rates per second for an activity multiplier of 1.
    mm_check_per_s: float = 0.15  # MM re-evaluates quotes (sees latent drift)
    mm_flicker_per_s: float = 0.25  # MM resizes one level (algos churn size constantly)
    noise_take_per_s: float = 0.05
    noise_limit_per_s: float = 0.25
    informed_check_per_s: float = 0.05
    deep_refresh_per_s: float = 0.002
    # A jump multiplies all rates by (1 + burst_boost * exp(-age / burst_half_life_s * ln 2)).
    burst_boost: float = 8.0
    burst_half_life_s: float = 20.0


class MarketMakerConfig(_Section, frozen=True):
    latency_s: float = 0.8  # mean reaction delay after a jump or a fill (exponential)
    # Extra ticks of spread for each MM after the first.
    extra_spread_ticks: int = 1
    level_gap_ticks: int = 1  # distance between an MM's successive levels
    # Reservation price moves this many cents per 100 contracts of inventory (skew).
    skew_cents_per_100: float = 0.25
    max_inventory: int = 5000  # stop adding to a side beyond this many contracts
    # Requote the touch when the desired price moved at least this many ticks.
    requote_threshold_ticks: int = 1


class NoiseConfig(_Section, frozen=True):
    size_median: float = 20.0  # contracts (Kalshi: 10-50)
    size_sigma: float = 1.0
    fractional_share: float = 0.05  # orders with a fractional count (Kalshi since 2026-03)
    take_levels: int = 2  # a noise take may walk this many ticks past the touch
    # Passive orders: distance behind the touch in ticks ~ geometric (Kalshi: 60-70% of deltas
    # within 3c of the touch).
    limit_depth_mean_ticks: float = 3.5
    limit_life_mean_s: float = 60.0


class InformedConfig(_Section, frozen=True):
    # Trades only when the book is this many cents better than the latent value: must beat the
    # taker fee (<= 2c) or the informed trader would lose money to it.
    threshold_cents: float = 3.0
    latency_s: float = 0.4
    max_size: int = 500


class DeepConfig(_Section, frozen=True):
    prices_cents: tuple[int, ...] = (1, 2, 3, 4, 5)
    size_median: float = 3000.0  # Kalshi: thousands to 250k at 1c
    size_sigma: float = 0.8
    # Pull a tail level when the latent value comes within this many cents of it.
    margin_cents: int = 4


class GeneratorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    markets: MarketsConfig = MarketsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    latent: LatentConfig = LatentConfig()
    activity: ActivityConfig = ActivityConfig()
    tiers: tuple[TierConfig, ...] = (
        TierConfig(
            name="liquid", share=0.15, spread_cents_min=1, spread_cents_max=3, activity_median=3.0,
            activity_sigma=0.6, market_makers=3, quote_levels=3, quote_size_median=80.0,
        ),
        TierConfig(
            name="mid", share=0.30, spread_cents_min=2, spread_cents_max=4, activity_median=0.2,
            activity_sigma=0.8, market_makers=2, quote_levels=2, quote_size_median=40.0,
        ),
        TierConfig(
            name="thin", share=0.55, spread_cents_min=5, spread_cents_max=15, activity_median=0.03,
            activity_sigma=0.9, market_makers=1, quote_levels=2, quote_size_median=20.0,
        ),
    )
    market_maker: MarketMakerConfig = MarketMakerConfig()
    noise: NoiseConfig = NoiseConfig()
    informed: InformedConfig = InformedConfig()
    deep: DeepConfig = DeepConfig()

    def __post_init__(self) -> None:
        _validate(self)


def _validate(cfg: GeneratorConfig) -> None:
    """Range checks msgspec cannot express; raised as ConfigError naming the key."""
    problems: list[str] = []
    if cfg.markets.count < 0:
        problems.append("markets.count must be >= 0")
    if not cfg.tiers:
        problems.append("tiers: at least one tier is needed")
    if any(t.share < 0 for t in cfg.tiers) or sum(t.share for t in cfg.tiers) <= 0:
        problems.append("tiers.share must be >= 0 and sum to > 0")
    for t in cfg.tiers:
        if not 1 <= t.spread_cents_min <= t.spread_cents_max <= 98:
            problems.append(f"tiers[{t.name}]: need 1 <= spread_cents_min <= spread_cents_max <= 98")
        if t.market_makers < 1 or t.quote_levels < 1:
            problems.append(f"tiers[{t.name}]: market_makers and quote_levels must be >= 1")
    s = cfg.schedule
    if not 0 < s.lifetime_min_s <= s.lifetime_max_s:
        problems.append("schedule: need 0 < lifetime_min_s <= lifetime_max_s")
    if cfg.latent.step_s <= 0:
        problems.append("latent.step_s must be > 0")
    if not 1 <= cfg.market_maker.requote_threshold_ticks:
        problems.append("market_maker.requote_threshold_ticks must be >= 1")
    if any(not 1 <= c <= 99 for c in cfg.deep.prices_cents):
        problems.append("deep.prices_cents must lie in 1..99")
    if problems:
        raise ConfigError("; ".join(problems))


def load_generator_config(path: str | Path | None = None, **overrides: Any) -> GeneratorConfig:
    """Load configs/generator.toml (or `path`); keyword overrides replace whole sections,
    e.g. ``load_generator_config(markets={"count": 5, "scenario": "edge"})`` (merged key-wise)."""
    chosen = Path(path) if path else DEFAULT_GENERATOR_CONFIG
    try:
        with chosen.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: generator config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{chosen}: not valid TOML: {err}") from None
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    try:
        config: GeneratorConfig = _decode(data, str(chosen), GeneratorConfig)
    except ConfigError:
        raise
    return config


def with_overrides(config: GeneratorConfig, **sections: dict[str, Any]) -> GeneratorConfig:
    """A copy of `config` with some keys of some sections replaced (tests, CLI)."""
    data = msgspec.to_builtins(config)
    for section, values in sections.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    result: GeneratorConfig = _decode(data, "overrides", GeneratorConfig)
    return result
