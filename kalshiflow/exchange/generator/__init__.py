"""Synthetic Kalshi markets for the exchange simulator (see docs/generator.md).

    clock = SimClock(start)
    state = ExchangeState(clock=clock, seed=seed)
    gen = MarketGenerator(load_generator_config(), state, seed=seed)
    gen.advance(start + 3600)          # or: await gen.run(speed=60)

Modules: config (TOML -> frozen structs), latent (the hidden probability), schedule (market
plans and seeds), agents (makers, noise, informed, deep tails), port (the exchange slice the
bots use, SimClock), core (the event loop), calibrate (measurements vs Kalshi's figures).
"""

from kalshiflow.exchange.generator.config import (
    DEFAULT_GENERATOR_CONFIG,
    GeneratorConfig,
    Scenario,
    load_generator_config,
    with_overrides,
)
from kalshiflow.exchange.generator.core import MarketGenerator
from kalshiflow.exchange.generator.latent import LatentProcess
from kalshiflow.exchange.generator.port import SimClock

__all__ = [
    "DEFAULT_GENERATOR_CONFIG",
    "GeneratorConfig",
    "LatentProcess",
    "MarketGenerator",
    "Scenario",
    "SimClock",
    "load_generator_config",
    "with_overrides",
]
