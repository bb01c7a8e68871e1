"""``python -m kalshiflow.launch [--config FILE] [--address ...] [--markets N] [--duration S] [--ui-port P]
[--set section.key=value ...]``

Starts (or, when this namespace already runs one, points at) the system: prints the dashboard URL
and Ray's dashboard URL, runs until Ctrl-C, SIGTERM or the end of ``--duration``, then stops
cleanly (orders cancelled, rows flushed, session closed) and exits 0. Exit 1: the system could
not start (what was started is stopped again); 2: a bad flag or config value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import ray

from kalshiflow.config import AppConfig, ConfigError
from kalshiflow.launch.cli import build_config, parse_args
from kalshiflow.launch.ray_init import RayInfo, init_ray
from kalshiflow.launch.system import AlreadyRunning, System

log = logging.getLogger("kalshiflow.launch")

HEARTBEAT_S = 5.0


def _say(text: str) -> None:
    print(text, flush=True)


async def _run(config: AppConfig, ray_info: RayInfo, duration: float | None, models_dir: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            _say(f"\n{signal.Signals(signum).name}: shutting down cleanly (again to force)")
            stop.set()
        else:  # the user insists: leave now (Ray tears the actors down with this driver)
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    system = System(config, ray_info, models_dir=models_dir)
    starting = asyncio.ensure_future(system.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting: undo what started (start() stops on cancel)
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        _say("stopped before it was fully started")
        return 0
    stopping.cancel()
    try:
        starting.result()
    except AlreadyRunning as running:
        spec = running.spec
        _say(
            f"kalshiflow is already running in Ray namespace {spec.namespace!r} (launcher pid "
            f"{spec.launcher_pid}); nothing new was started."
        )
        _say(f"dashboard: {running.url}")
        if spec.ray_dashboard_url:
            _say(f"ray dashboard: {spec.ray_dashboard_url}")
        return 0
    _say(f"dashboard: {system.dashboard_url}")
    _say(f"ray dashboard: {ray_info.dashboard_url or 'not running (ray.include_dashboard = false)'}")
    _say(
        f"session: {system.trading.session_id} ({len(system.trading.tickers)} markets, "
        f"{config.exchange.environment}, trading mode {system.mode})"
    )
    _say("running; Ctrl-C to stop" + (f" (stops by itself after {duration:g} s)" if duration else ""))
    deadline = loop.time() + duration if duration else None
    while not stop.is_set():
        wait = HEARTBEAT_S if deadline is None else min(HEARTBEAT_S, deadline - loop.time())
        if wait <= 0:
            _say(f"--duration {duration:g} s reached: shutting down")
            break
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except TimeoutError:
            await system.heartbeat()
    await system.stop()
    if system.trading_summary:
        _say(system.trading_summary)
    summary = system.summary
    if summary is not None:
        s = summary.session
        _say(
            f"session {s.session_id} {s.status}: {s.snapshots} snapshots, {s.deltas} deltas, "
            f"{s.trades} trades, {s.gaps} gaps stored"
        )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Until the event loop takes the signals over, SIGTERM interrupts like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    try:
        ray_info = init_ray(config.ray)
        log.info(
            "Ray %s in %.1f s",
            "started" if ray_info.started_here else f"joined at {ray_info.address}",
            time.monotonic() - began,
        )
    except (ConnectionError, ValueError, RuntimeError) as err:
        print(f"error: cannot reach Ray: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ray.shutdown()
        _say("interrupted while connecting to Ray: nothing was started")
        return 0
    try:
        models = str(Path(args.models_dir).expanduser().resolve()) if args.models_dir else ""
        return asyncio.run(_run(config, ray_info, args.duration, models))
    except Exception as err:  # noqa: BLE001 - one line for the user; the traceback is in the log
        log.exception("launch failed")
        print(f"error: kalshiflow did not start: {err}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()  # a cluster this launch started stops with it; a joined one keeps running


if __name__ == "__main__":
    sys.exit(main())
