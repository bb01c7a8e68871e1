"""``python -m kalshiflow.exchange``: run the Kalshi-compatible exchange simulator.

    python -m kalshiflow.exchange --host 127.0.0.1 --port 8765 --markets 20 --seed 7 --speed 1 \\
        --api-key-id KEY_ID --api-public-key public.pem      # repeatable: one account per key

With no key given, a key pair is generated once into the simulator's key dir (printed) and its
id and private key PATH are printed for clients; the key itself is never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec

from kalshiflow.config import ConfigError, SimulatorConfig, load_config, parse_set
from kalshiflow.exchange.accounts import generated_key, load_key_file, load_private_key
from kalshiflow.exchange.embedded import Driver, run_simulator
from kalshiflow.protocol.auth import public_key_to_pem

CLI_DEFAULT_PORT = 8765


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kalshiflow.exchange", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", help="bind address (default: simulator.host, 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help=f"port (default: simulator.port, else {CLI_DEFAULT_PORT}; 0 = any)"
    )
    p.add_argument("--markets", type=int, help="synthetic markets kept active (simulator.markets)")
    p.add_argument("--seed", type=int, help="generator seed (simulator.seed)")
    p.add_argument("--speed", type=float, help="simulated seconds per wall second (simulator.speed)")
    p.add_argument("--no-generator", action="store_true", help="serve an exchange with no synthetic markets")
    p.add_argument("--replay", metavar="SESSION_ID", help="replay a recorded session instead of generating")
    p.add_argument("--api-key-id", action="append", default=[], help="API key id (repeatable)")
    p.add_argument("--api-public-key", action="append", default=[], help="PEM file of that key (repeatable)")
    p.add_argument("--config", help="TOML config file (default: $KALSHIFLOW_CONFIG or configs/default.toml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    overrides = {}
    for item in args.set:
        section, key, value = parse_set(item)
        overrides[(section, key)] = value
    sim = load_config(args.config, overrides=overrides).simulator
    cli = {
        "host": args.host,
        "port": args.port if args.port is not None else (sim.port or CLI_DEFAULT_PORT),
        "markets": args.markets,
        "seed": args.seed,
        "speed": args.speed,
        "generator": False if args.no_generator or args.replay else None,
    }
    return msgspec.structs.replace(sim, **{k: v for k, v in cli.items() if v is not None})


def key_dir(config: SimulatorConfig) -> Path:
    if config.key_dir:
        return Path(config.key_dir).expanduser()
    from kalshiflow.storage.embedded import data_root

    return data_root(dict(os.environ)) / "simulator"


def collect_keys(args: argparse.Namespace, config: SimulatorConfig) -> dict[str, str]:
    if len(args.api_key_id) != len(args.api_public_key):
        raise ConfigError("give one --api-public-key per --api-key-id")
    keys = {
        key_id: load_key_file(path) for key_id, path in zip(args.api_key_id, args.api_public_key, strict=True)
    }
    if not keys:
        key_id, pem_path = generated_key(key_dir(config))
        keys[key_id] = public_key_to_pem(load_private_key(pem_path.read_text()))
        print(f"API key id:       {key_id}", flush=True)
        print(f"private key path: {pem_path}", flush=True)
    return keys


def replay_driver(session_id: str, args: argparse.Namespace, speed: float) -> Driver:
    """Load a recorded session from PostgreSQL (DATABASE_URL or the embedded server) up front, so a
    bad id fails at start-up, and replay it seq by seq at `speed`."""
    from kalshiflow.exchange.replay import replay_driver as make_driver
    from kalshiflow.storage import open_database
    from kalshiflow.storage.session_loader import load_session_streams

    try:
        session = uuid.UUID(session_id)
    except ValueError:
        if Path(session_id).is_file():  # a session file from replay.save_session
            return make_driver(session_id, speed=speed)
        raise ConfigError(f"--replay {session_id!r}: not a session id (UUID) or a session file") from None

    async def load() -> list[Any]:
        async with open_database(load_config(args.config)) as db:
            return await load_session_streams(db, session)

    streams = asyncio.run(load())
    if not streams:
        raise ConfigError(f"--replay: session {session} has no recorded markets")
    driver: Driver = make_driver(streams, speed=speed)
    return driver


async def serve(config: SimulatorConfig, keys: dict[str, str], driver: Driver | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # graceful stop: open sockets closed, tasks cancelled
    async with run_simulator(config, keys=keys, driver=driver) as sim:
        print(f"REST: {sim.rest_url}", flush=True)
        print(f"WS:   {sim.ws_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = build_config(args)
        keys = collect_keys(args, config)
        driver = replay_driver(args.replay, args, config.speed) if args.replay else None
    except (ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, keys, driver))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
