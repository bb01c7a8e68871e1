"""Command line of ``python -m kalshiflow.launch``: flags -> a validated AppConfig.

Flags are shorthands for config keys (``--markets`` sets ``simulator.markets`` and
``collector.discover_top_n``; ``--ui-port`` sets ``ui.port``; ``--address`` sets ``ray.address``)
and win over ``--set``, which wins over environment variables and the file (kalshiflow.config).
"""

from __future__ import annotations

import argparse
from typing import Any

from kalshiflow.config import AppConfig, ConfigError, load_config, parse_set

__all__ = ["LaunchArgs", "build_config", "parse_args"]

DESCRIPTION = (
    "Start kalshiflow on Ray: embedded PostgreSQL and exchange simulator (unless configured otherwise), "
    "collectors, WriteQueue, PositionReconciler, PolicyServer, Trader and the dashboard."
)


class LaunchArgs(argparse.Namespace):
    config: str | None
    address: str | None
    markets: int | None
    duration: float | None
    ui_port: int | None
    models_dir: str
    set: list[str]


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError("a TCP port (0 = any free port)")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: list[str]) -> LaunchArgs:
    p = argparse.ArgumentParser(prog="python -m kalshiflow.launch", description=DESCRIPTION)
    p.add_argument("--config", help="TOML config file (default: $KALSHIFLOW_CONFIG or configs/default.toml)")
    p.add_argument(
        "--address",
        help="Ray cluster: 'auto' (join a running one), 'local' (always start one), "
        "HOST:PORT or ray://HOST:PORT; default: join the cluster `ray start` made, else start one",
    )
    p.add_argument(
        "--markets", type=_count, help="markets to collect (simulator markets and discovery top N)"
    )
    p.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help="run this long, then shut down cleanly (default: until Ctrl-C / SIGTERM)",
    )
    p.add_argument("--ui-port", type=_port, help="dashboard port on ui.host (ui.port; 0 = any free port)")
    p.add_argument(
        "--models-dir",
        default="",
        metavar="DIR",
        help="model registry the PolicyServer serves from (default: models/ of the project)",
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override (repeatable)"
    )
    return p.parse_args(argv, namespace=LaunchArgs())


def build_config(args: LaunchArgs) -> AppConfig:
    """The file, the environment, ``--set`` and the shorthand flags, validated together."""
    overrides: dict[tuple[str, str], Any] = {}
    for item in args.set:
        section, key, value = parse_set(item)
        overrides[(section, key)] = value
    if args.markets is not None:
        overrides[("simulator", "markets")] = args.markets
        overrides[("collector", "discover_top_n")] = args.markets
    if args.ui_port is not None:
        overrides[("ui", "port")] = args.ui_port
    if args.address is not None:
        overrides[("ray", "address")] = args.address
    config = load_config(args.config, overrides=overrides)
    if config.ui.update_interval_s <= 0:
        raise ConfigError("ui.update_interval_s must be > 0")
    return config
