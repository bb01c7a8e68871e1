"""Run the exchange simulator inside a process: in an async context, or in a background thread.

Async (tests, ``launch``)::

    async with run_simulator(config, keys={key_id: public_pem}) as sim:
        sim.rest_url   # http://127.0.0.1:PORT/trade-api/v2
        sim.ws_url     # ws://127.0.0.1:PORT/trade-api/ws/v2
        sim.state      # the ExchangeState (same event loop: call it directly)

Blocking (sync code such as Kalshi's official SDK, benchmarks)::

    with SimulatorThread(config, keys={key_id: public_pem}) as sim:
        requests go to sim.rest_url; sim.call(fn, *args) runs fn(*args) on the simulator's loop

``config`` is a :class:`SimulatorConfig` (or an AppConfig, whose ``simulator`` section is used);
it defaults to 127.0.0.1 on a free port. With ``generator`` on (the config's default) the
synthetic market generator runs at ``config.speed`` with ``config.markets`` markets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from kalshiflow.config import AppConfig, SimulatorConfig
from kalshiflow.exchange.accounts import PublicKey
from kalshiflow.exchange.server import Simulator, starting_balance
from kalshiflow.exchange.state import ExchangeState

T = TypeVar("T")
Driver = Callable[[Simulator], Any]

__all__ = ["SimulatorThread", "generator_driver", "make_state", "run_simulator", "simulator_config"]


def simulator_config(config: SimulatorConfig | AppConfig | None) -> SimulatorConfig:
    if config is None:
        return SimulatorConfig()
    return config.simulator if isinstance(config, AppConfig) else config


def make_state(config: SimulatorConfig, *, simulated_clock: bool) -> ExchangeState:
    """A fresh state. The generator needs a settable clock so that everything it does carries
    simulated time (``speed`` x wall time); without it the state runs on the wall clock."""
    clock: Callable[[], float] = time.time
    if simulated_clock:
        from kalshiflow.exchange.generator import SimClock

        clock = SimClock(time.time())
    return ExchangeState(clock=clock, starting_balance=starting_balance(config), seed=config.seed)


def generator_driver(config: SimulatorConfig) -> Driver:
    """Runs the synthetic market generator on the simulator's state until cancelled."""

    async def drive(sim: Simulator) -> None:
        from kalshiflow.exchange.generator import MarketGenerator, load_generator_config

        gen_config = load_generator_config(markets={"count": config.markets})
        generator = MarketGenerator(gen_config, sim.state, seed=config.seed)
        sim.generator = generator
        await generator.run(speed=config.speed)

    return drive


def _build(
    config: SimulatorConfig,
    keys: Mapping[str, PublicKey] | None,
    state: ExchangeState | None,
    generator: bool | None,
    driver: Driver | None,
) -> Simulator:
    use_generator = config.generator if generator is None else generator
    if driver is None and use_generator and state is None:
        driver = generator_driver(config)
    if state is None:
        state = make_state(config, simulated_clock=use_generator and driver is not None)
    return Simulator(config, state=state, keys=keys, driver=driver)


@asynccontextmanager
async def run_simulator(
    config: SimulatorConfig | AppConfig | None = None,
    *,
    keys: Mapping[str, PublicKey] | None = None,
    state: ExchangeState | None = None,
    generator: bool | None = None,
    driver: Driver | None = None,
) -> AsyncIterator[Simulator]:
    """Start a simulator on the running loop; stop it on exit.

    ``state``: use this state (no generator unless ``driver`` is given). ``generator``: override
    ``config.generator``. ``driver``: a coroutine function run as a task with the simulator
    (e.g. a replay) instead of the generator.
    """
    sim = _build(simulator_config(config), keys, state, generator, driver)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class SimulatorThread:
    """A simulator on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(
        self,
        config: SimulatorConfig | AppConfig | None = None,
        *,
        keys: Mapping[str, PublicKey] | None = None,
        state: ExchangeState | None = None,
        generator: bool | None = None,
        driver: Driver | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self._args = (simulator_config(config), keys, state, generator, driver)
        self._timeout = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self.sim: Simulator | None = None

    def start(self) -> Simulator:
        ready: concurrent.futures.Future[Simulator] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="exchange-simulator", daemon=True
        )
        self._thread.start()
        self.sim = ready.result(timeout=self._timeout)
        return self.sim

    def _run(self, ready: concurrent.futures.Future[Simulator]) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            try:
                sim = _build(*self._args)
                await sim.start()
            except BaseException as err:
                ready.set_exception(err)
                return
            ready.set_result(sim)
            try:
                await self._stopping.wait()
            finally:
                await sim.stop()

        asyncio.run(main())

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the simulator's loop (the only thread allowed to touch the state)."""
        assert self._loop is not None

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=self._timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=self._timeout)
        self._loop = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
