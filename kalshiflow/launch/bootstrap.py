"""A first model for a fresh install: with the simulator and no current model, launch trains one.

Without a model the PolicyServer has nothing to serve and the Trader holds, so the quickstart would
collect but never trade. When ``trader.bootstrap_model`` is on (the default), the exchange is the
simulator and ``models/`` has no current version, launch first trains a short PPO run with the
shipped settings (configs/train.toml) on generated markets, with the Trader's own schema (sizes,
position cap, capital, decision cadence: the PolicyServer would refuse anything else), and
promotes it. The promotion is forced and says so in models/history.jsonl ("bootstrap"): a model
this short is a demonstration, not one that beat the baselines (``kalshiflow.models promote``
does that). Demo and production never get one: they trade only what a person promoted.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from kalshiflow.config import AppConfig

__all__ = ["bootstrap_settings", "needs_bootstrap_model", "train_bootstrap_model"]

log = logging.getLogger("kalshiflow.launch")


def needs_bootstrap_model(config: AppConfig, models_dir: str) -> bool:
    from kalshiflow.rl.registry import Registry

    return (config.trader.bootstrap_model and config.exchange.environment == "simulator"
            and Registry(models_dir or None).current() is None)


def bootstrap_settings(config: AppConfig, models_dir: str, env_runners: int) -> list[str]:
    """``--set`` overrides of configs/train.toml for the bootstrap run (see the module docstring)."""
    t = config.trader
    return [
        f"env.data={json.dumps(t.bootstrap_data)}",  # a TOML string, quoted and escaped
        f"env.sizes={list(t.sizes)}",
        f"env.max_position={t.max_position}",
        f"env.starting_cash={t.reference_cash_dollars}",
        f"env.decision_interval_s={t.decision_interval_s}",
        f"run.timesteps={t.bootstrap_timesteps}",
        "run.eval_episodes=8",
        f"run.models_dir={json.dumps(models_dir)}",
        f"runners.num_env_runners={env_runners}",
    ]


def train_bootstrap_model(config: AppConfig, models_dir: str, *, progress: bool = True) -> str:
    """Train, check against the Trader's schema, promote (forced, recorded); returns the version."""
    import ray

    from kalshiflow.rl.policy import load_policy
    from kalshiflow.rl.registry import Registry
    from kalshiflow.rl.train import load_train_config, train

    # One env runner per free CPU, at most two (the shipped setting); none: sample in the driver.
    free = ray.available_resources().get("CPU", 0.0) if ray.is_initialized() else 0.0
    runners = max(0, min(2, math.floor(free)))
    cfg = load_train_config(None, bootstrap_settings(config, models_dir, runners))
    registry = Registry(models_dir or None)
    log.info("no model in %s: training a first one (%d steps on %s) so the Trader has something to "
             "serve; `python -m kalshiflow.train` and `models promote` make real ones",
             registry.root, cfg.run.timesteps, cfg.env.data)
    manifest = train(cfg, registry=registry, use_db=False, progress=progress)
    from kalshiflow.serving import code_schema_hash

    # The hash the PolicyServer accepts for the Trader's settings: refuse here what it would refuse.
    schema = code_schema_hash(config.trader.sizes, config.trader.max_position)
    load_policy(manifest.version, registry.root, expected_schema_hash=schema)
    evidence: dict[str, Any] = {"env_steps": manifest.metrics.get("env_steps"),
                                "validation": manifest.metrics.get("validation")}
    registry.set_current(manifest.version, forced=True, evidence=evidence,
                         reason=f"bootstrap: first model of a fresh install ({cfg.run.timesteps} steps), "
                                "not compared with the baselines")
    return manifest.version
