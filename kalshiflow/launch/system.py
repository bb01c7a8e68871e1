"""Start the whole system in order, keep it running, stop it in reverse order.

Order (each step needs the previous ones): Ray -> the Broadcaster (it is also the launch's lease:
a second launch finds it, sees another owner and attaches instead of starting duplicates) ->
PostgreSQL (embedded unless DATABASE_URL; held open by this process for the whole run) -> the
PolicyServer's Serve app (deployed in a worker thread: it takes seconds, and the embedded
exchange runs on this event loop) -> :func:`kalshiflow.trading.paper.paper_trading`: the exchange
(embedded simulator unless exchange.environment is demo/production, with the production guard),
the collection (session row, WriteQueue, collectors), the PositionReconciler and the Trader.

Stop: the Trader cancels every order -> reconciler -> collectors (every row acknowledged) ->
WriteQueue flushed, session closed with its stored counts -> simulator -> PolicyServer app ->
Broadcaster -> PostgreSQL -> Ray (when this launch started it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import ray

from kalshiflow.config import PROJECT_ROOT, AppConfig
from kalshiflow.launch.ray_init import RayInfo
from kalshiflow.launch.spec import ActorNames, BroadcasterSpec

__all__ = ["AlreadyRunning", "System", "pick_free_port", "trading_mode"]

log = logging.getLogger("kalshiflow.launch")

UI_DIR = PROJECT_ROOT / "ui"
STOP_TIMEOUT_S = 60.0


class AlreadyRunning(Exception):
    """Another launch owns the named actors of this namespace; its spec says where it is."""

    def __init__(self, spec: BroadcasterSpec, url: str) -> None:
        super().__init__(f"kalshiflow is already running in namespace {spec.namespace!r}")
        self.spec = spec
        self.url = url


def pick_free_port(host: str) -> int:
    """A port free right now on ``host``: fixed before an actor binds it, so that a restarted
    actor binds the same one (a restart re-runs its constructor with the same spec)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def trading_mode(environment: str, allow_production_orders: bool) -> str:
    """The dashboard's badge: simulator (orders to the built-in exchange), paper (Kalshi's demo:
    play money) or production (real money; only with exchange.allow_production_orders)."""
    if environment == "production":
        return "production" if allow_production_orders else "paper"
    return "simulator" if environment == "simulator" else "paper"


def _this_node() -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    began = time.monotonic()
    yield
    log.info("started %s in %.1f s", what, time.monotonic() - began)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as err:  # noqa: BLE001 - keep stopping the rest
        log.error("stopping %s failed: %r", what, err)


class System:
    """One launch: what it started, so that ``stop`` undoes exactly that."""

    def __init__(self, config: AppConfig, ray_info: RayInfo, *, models_dir: str = "") -> None:
        self.config = config
        self.models_dir = models_dir  # "" = the registry's default (models/)
        self.ray_info = ray_info
        self.namespace = config.ray.namespace
        self.names = ActorNames()
        self.launch_id = uuid.uuid4().hex
        self.started_at = time.time()
        self.mode = trading_mode(config.exchange.environment, config.exchange.allow_production_orders)
        self.broadcaster: Any = None
        self.dashboard_url = ""
        self.db: Any = None
        self.trading: Any = None  # kalshiflow.trading.paper.PaperTrading
        self.policy_app: str | None = None
        self.summary: Any = None  # the collection's CollectionSummary, after stop
        self.trading_summary: str | None = None  # the Trader's last word (paper.trading_summary)
        self._db_stack = contextlib.AsyncExitStack()
        self._trading_stack = contextlib.AsyncExitStack()

    @property
    def collection(self) -> Any:
        return self.trading.collection if self.trading is not None else None

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Everything, in order; on failure what was started is stopped again and the error raised."""
        try:
            with _timed("dashboard (Broadcaster)"):
                await self._start_broadcaster()
            with _timed("PostgreSQL"):
                await self._start_database()
            await self._set_state("starting")
            await self._bootstrap_model()
            with _timed("PolicyServer"):
                await self._start_policy_server()
            with _timed("exchange, collectors, WriteQueue, PositionReconciler and Trader"):
                await self._start_trading()
            await self._set_state("running")
        except BaseException:
            await self.stop()
            raise

    async def _start_broadcaster(self) -> None:
        from actors.broadcaster import Broadcaster

        ui = self.config.ui
        if ui.port == 0:
            ui = msgspec.structs.replace(ui, port=pick_free_port(ui.host))
        spec = BroadcasterSpec(
            launch_id=self.launch_id,
            launcher_pid=os.getpid(),
            started_at=self.started_at,
            ui=ui,
            ui_dir=str(UI_DIR),
            namespace=self.namespace,
            environment=self.config.exchange.environment,
            exchange_url=None,
            ray_dashboard_url=self.ray_info.dashboard_url,
            names=self.names,
            exchange_clock_rate=(self.config.simulator.speed
                                 if self.config.exchange.environment == "simulator" else 1.0),
        )
        # get_if_exists makes creation atomic: of two launches racing, exactly one spec wins.
        handle = Broadcaster.options(  # type: ignore[attr-defined]  # ray.remote class
            name=self.names.broadcaster,
            namespace=self.namespace,
            get_if_exists=True,
            scheduling_strategy=_this_node(),
        ).remote(spec)
        try:
            owner: BroadcasterSpec = await handle.owner.remote()
            url: str = await handle.ready.remote()
        except ray.exceptions.RayActorError as err:  # its constructor failed: say why in one line
            cause = next((ln.strip() for ln in str(err).splitlines() if "Error:" in ln), str(err))
            raise RuntimeError(
                f"the dashboard cannot listen on {ui.host}:{ui.port}: {cause} (choose another --ui-port)"
            ) from None
        if owner.launch_id != self.launch_id:
            raise AlreadyRunning(owner, url)
        self.broadcaster, self.dashboard_url = handle, url

    async def _start_database(self) -> None:
        from kalshiflow.secrets import database_url
        from kalshiflow.storage import open_database
        from kalshiflow.storage.sessions import mark_stale_sessions_aborted

        # Held open for the whole run: with the embedded server this process is a holder, so the
        # server outlives every actor that writes to it.
        db = open_database(self.config.storage, url=database_url())
        self.db = await self._db_stack.enter_async_context(db)
        # This launch owns the namespace's lease: no collector of an older session still runs.
        aborted = await mark_stale_sessions_aborted(self.db)
        if aborted:
            log.info("closed %d sessions an earlier run left active", len(aborted))

    async def _bootstrap_model(self) -> None:
        """A fresh install's first model (kalshiflow.launch.bootstrap); nothing when one is served."""
        from kalshiflow.launch.bootstrap import needs_bootstrap_model, train_bootstrap_model

        if needs_bootstrap_model(self.config, self.models_dir):
            with _timed("a first model (trader.bootstrap_model)"):
                version = await asyncio.to_thread(train_bootstrap_model, self.config, self.models_dir)
            log.info("serving %s", version)

    async def _start_policy_server(self) -> None:
        from actors.policy_server import deploy_policy_server
        from kalshiflow.trading.paper import policy_config

        policy = policy_config(self.config, models_dir=self.models_dir, app_name=self.names.policy_app)
        # paper_trading deploys it too, idempotently; here in a thread so the loop stays free.
        await asyncio.to_thread(deploy_policy_server, policy)
        self.policy_app = policy.app_name

    async def _start_trading(self) -> None:
        from kalshiflow.trading.paper import paper_trading

        self.trading = await self._trading_stack.enter_async_context(
            paper_trading(
                self.config,
                db_url=self.db.url,
                models_dir=self.models_dir,
                trader_name=self.names.trader,
                reconciler_name=self.names.reconciler,
                policy_app=self.names.policy_app,
            )
        )
        log.info(
            "collecting and trading %d markets (session %s)",
            len(self.trading.tickers),
            self.trading.session_id,
        )

    # ------------------------------------------------------------------ while running

    async def _set_state(self, state: str) -> None:
        if self.broadcaster is None:
            return
        url = self.trading.endpoints.ws_url if self.trading is not None else None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broadcaster.set_state.remote(state, self.mode, url), 10)

    async def heartbeat(self) -> None:
        """Re-sent every few seconds: a restarted Broadcaster learns the state again."""
        await self._set_state("running")

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Stop what was started, newest first. Each step is bounded and logged, never skipped
        because an earlier one failed (cancelled orders and flushed rows matter most)."""
        await self._set_state("stopping")
        if self.trading is not None:
            with _step("trading and collection"):
                # paper_trading's exit: Trader cancel-all, reconciler, collection (session closed).
                await self._trading_stack.aclose()
                self.summary = self.trading.summary.get("collection")
                self.trading_summary = self.trading.summary.get("trading")
        if self.policy_app is not None:
            with _step("PolicyServer"):
                from ray import serve

                await asyncio.to_thread(serve.delete, self.policy_app)
        if self.broadcaster is not None:
            await self._set_state("stopped")
            with _step("Broadcaster"):
                await asyncio.wait_for(self.broadcaster.shutdown.remote(), 10)
            ray.kill(self.broadcaster, no_restart=True)
            self.broadcaster = None
        with _step("PostgreSQL"):
            await self._db_stack.aclose()
