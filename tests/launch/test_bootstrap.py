"""A fresh install's first model (kalshiflow/launch/bootstrap.py): when, with which schema, recorded how."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from kalshiflow.config import AppConfig, ExchangeConfig, TraderConfig
from kalshiflow.launch.bootstrap import bootstrap_settings, needs_bootstrap_model, train_bootstrap_model
from kalshiflow.rl.actions import ActionTable
from kalshiflow.rl.features import Observer
from kalshiflow.rl.registry import Registry
from kalshiflow.rl.train import load_train_config
from kalshiflow.trading.paper import check_cadence

# Not the defaults, so a setting that did not reach the run would show.
TRADER = TraderConfig(sizes=(2, 7), max_position=30, reference_cash_dollars=500, decision_interval_s=10.0,
                      bootstrap_timesteps=2048, bootstrap_data="synthetic:edge:1-2")


def test_only_the_simulator_without_a_current_model_gets_one(tmp_path: Path) -> None:
    sim = AppConfig(trader=TRADER)
    assert needs_bootstrap_model(sim, str(tmp_path))
    demo = msgspec.structs.replace(sim, exchange=ExchangeConfig(environment="demo"))
    assert not needs_bootstrap_model(demo, str(tmp_path)), "demo / production: only what a person promoted"
    off = msgspec.structs.replace(sim, trader=msgspec.structs.replace(TRADER, bootstrap_model=False))
    assert not needs_bootstrap_model(off, str(tmp_path))


def test_the_run_trains_the_schema_and_cadence_the_trader_serves(tmp_path: Path) -> None:
    cfg = load_train_config(None, bootstrap_settings(AppConfig(trader=TRADER), str(tmp_path), env_runners=1))
    env = cfg.env
    schema = (env.sizes, env.max_position, env.starting_cash, env.decision_interval_s)
    assert schema == ((2, 7), 30, 500, 10.0)
    assert env.data == "synthetic:edge:1-2" and cfg.run.timesteps == 2048 and cfg.runners.num_env_runners == 1
    assert cfg.ppo.lr == load_train_config().ppo.lr, "the shipped PPO settings"


def test_a_fresh_install_gets_a_promoted_model_the_trader_accepts(tmp_path: Path) -> None:
    config = AppConfig(trader=TRADER)
    version = train_bootstrap_model(config, str(tmp_path), progress=False)
    reg = Registry(tmp_path)
    assert reg.current() == version == "v0001" and not needs_bootstrap_model(config, str(tmp_path))
    manifest = reg.manifest(version)
    trader_schema = Observer(ActionTable((2, 7)), 30, TRADER.stale_after_s).schema_hash
    assert manifest.schema_hash == trader_schema
    check_cadence(config, str(tmp_path))  # raises when the model's cadence is not the Trader's
    (event,) = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert event["forced"] and event["reason"].startswith("bootstrap:") and event["version"] == version
    assert event["evidence"]["env_steps"] >= 2048 and "model" in event["evidence"]["validation"]
