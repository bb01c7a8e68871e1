"""Paper trading: the whole live loop against the built-in simulator (default) or Kalshi demo.

    async with paper_trading(config, db_url=url, models_dir="models") as pt:
        await pt.trader.stats.remote()            # the Trader actor (named ``trader_name``)
        await pt.trader.kill_switch.remote("why") # halt + cancel

What starts, in order (Ray must be initialised):

1. the exchange: ``exchange.environment = "simulator"`` starts the embedded simulator on this
   event loop with a fresh API key pair (its public half registered there); ``demo`` uses Kalshi's
   demo hosts with ``KALSHI_API_KEY_ID`` / ``KALSHI_PRIVATE_KEY_PATH``. Before anything starts,
   :func:`check_order_placement` refuses production unless ``environment = "production"`` AND
   ``allow_production_orders = true`` are both set (kalshiflow.protocol.endpoints guard).
2. a collection (kalshiflow.collect.run: session row, WriteQueue, collector actors);
3. the PositionReconciler (fills + positions WS, REST reconcile), writing to the same WriteQueue;
4. the PolicyServer Serve app over ``models_dir`` with the Trader's schema (sizes, max_position);
5. the Trader, subscribed to every collector's book updates and to the reconciler's fills.

``stop()`` (the context's exit) reverses it: the Trader cancels everything and ships its rows,
then the reconciler, the collection (flush, session closed) and the simulator stop. The Serve app
stays deployed (others may use it; ``serve.delete(app)`` removes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from kalshiflow.config import AppConfig
from kalshiflow.protocol.endpoints import Endpoints, assert_order_placement_allowed, resolve_endpoints
from kalshiflow.secrets import Credentials, Secret, kalshi_credentials
from kalshiflow.serving.messages import PolicyServerConfig
from kalshiflow.trading.spec import TraderSpec

__all__ = ["PaperTrading", "check_cadence", "check_order_placement", "paper_trading", "policy_config"]

log = logging.getLogger("kalshiflow.paper")


def check_order_placement(config: AppConfig, endpoints: Endpoints) -> None:
    """The startup check: raises OrderPlacementRefused for production without explicit opt-in."""
    assert_order_placement_allowed(config.exchange, endpoints)


def check_cadence(config: AppConfig, models_dir: str) -> None:
    """Refuse a Trader that would decide at another cadence than the served model trained at.

    The policy learned what one action does over ``decision_interval_s`` of exchange time;
    deciding every second with a model trained at five sends five times the orders it learned to
    send (the prior system's train/live skew, prior-system-lessons §4.3). No current model: the
    PolicyServer holds until one is promoted, and hot reloads are checked by schema only.
    """
    from kalshiflow.config import ConfigError
    from kalshiflow.rl.registry import Registry
    from kalshiflow.rl.sim import EnvConfig

    registry = Registry(models_dir or None)
    current = registry.current()
    if current is None:
        return
    env = registry.manifest(current).env
    trained = float(env.get("decision_interval_s", EnvConfig().decision_interval_s))
    if abs(trained - config.trader.decision_interval_s) > 1e-9:
        raise ConfigError(f"trader.decision_interval_s = {config.trader.decision_interval_s} but the current "
                          f"model {current} trained at {trained} s per decision: set "
                          f"trader.decision_interval_s = {trained} (or serve a model trained at that "
                          "cadence)")


def _simulator_keys() -> tuple[Credentials, dict[str, str]]:
    """A fresh API key pair for the paper account: the simulator gets the public half."""
    import uuid

    from kalshiflow.protocol.auth import generate_private_key, private_key_to_pem, public_key_to_pem

    key, key_id = generate_private_key(2048), str(uuid.uuid4())
    return (Credentials(api_key_id=key_id, private_key_pem=Secret(private_key_to_pem(key))),
            {key_id: public_key_to_pem(key)})


def policy_config(config: AppConfig, models_dir: str, app_name: str = "policy_server") -> PolicyServerConfig:
    """The PolicyServer accepts exactly the schema the Trader builds (same sizes, same cap)."""
    t = config.trader
    return PolicyServerConfig(app_name=app_name, models_dir=models_dir, sizes=tuple(t.sizes),
                              max_position=t.max_position)


class PaperTrading:
    """A running paper-trading loop (see the module docstring)."""

    def __init__(self, config: AppConfig, endpoints: Endpoints, collection: Any, reconciler: Any, trader: Any,
                 policy: Any, simulator: Any, trader_name: str, reconciler_name: str) -> None:
        # Handles are filled in as the actors start (None until then).
        self.config = config
        self.endpoints = endpoints
        self.collection = collection
        self.reconciler = reconciler
        self.trader = trader
        self.policy = policy
        self.simulator = simulator  # kalshiflow.exchange.server.Simulator, or None on demo
        self.trader_name = trader_name
        self.reconciler_name = reconciler_name
        self.summary: dict[str, Any] = {}
        self.credentials: Credentials | None = None  # the account's key (the simulator makes one)
        self._refresher: asyncio.Task[None] | None = None

    @property
    def owner(self) -> str | None:
        """The simulator's user id of the trading account (tests read the exchange's truth with it)."""
        if self.simulator is None or self.credentials is None:
            return None
        return self.simulator.accounts.owner_of(self.credentials.api_key_id)

    async def refresh_markets(self) -> list[str]:
        """Add markets the exchange listed since the start (the collection's discovery ranking,
        top ``collector.discover_top_n``): collected, traded, subscribed. Closed markets are
        dropped by the collectors themselves. Returns the tickers added."""
        from kalshiflow.collect import selection
        from kalshiflow.protocol.auth import Signer
        from kalshiflow.protocol.rest_client import KalshiRestClient
        from kalshiflow.trading.feed import MarketMeta

        signer = Signer.from_credentials(self.credentials) if self.credentials else None
        rest = KalshiRestClient(self.endpoints.rest_url, signer=signer, config=self.config.exchange)
        async with rest:
            found = await selection.discover(rest, self.config.collector.discover_top_n)
        known = set(self.collection.markets)
        new = [m for m in found if m.ticker not in known]
        if new:
            await self.collection.add_markets([selection.MarketSpec.from_market(m) for m in new])
            await self.trader.add_markets.remote([MarketMeta.from_market(m) for m in new])
            await self.collection.add_subscriber(self.trader, list(self.collection.markets))
        return [m.ticker for m in new]

    async def _refresh_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                added = await self.refresh_markets()
                if added:
                    log.info("paper trading: trading %d newly listed markets", len(added))
            except Exception as err:  # noqa: BLE001 - try again next round
                log.warning("paper trading: market refresh failed: %r", err)

    @property
    def tickers(self) -> tuple[str, ...]:
        return tuple(self.collection.markets)

    @property
    def session_id(self) -> str:
        return str(self.collection.session_id)

    async def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Trader first (cancel all, last rows), then reconciler and collection. Idempotent."""
        import ray

        if self.summary:
            return self.summary
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        out: dict[str, Any] = {}
        if self.trader is not None:
            # The day's result as the Trader saw it, before its orders are cancelled.
            with contextlib.suppress(Exception):
                stats, state = await asyncio.wait_for(asyncio.gather(
                    self.trader.stats.remote(), self.trader.trader_state.remote()), 10)
                out["trading"] = trading_summary(stats, state)
            try:
                out["trader"] = await self.trader.shutdown.remote(timeout / 2)
            except Exception as err:  # noqa: BLE001 - keep stopping the rest
                out["trader"] = {"error": repr(err)}
        if self.reconciler is not None:
            try:
                out["reconciler"] = await self.reconciler.stop.remote(timeout / 4)
            except Exception as err:  # noqa: BLE001
                out["reconciler"] = {"error": repr(err)}
        for handle in (self.trader, self.reconciler):
            if handle is not None:
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
        out["collection"] = await self.collection.stop(timeout)
        self.summary = out
        return out


async def _start_collection(config: AppConfig, endpoints: Endpoints, credentials: Credentials | None,
                            db_url: str | Secret | None, markets: Sequence[str] | None) -> Any:
    from kalshiflow.collect.run import start_collection

    return await start_collection(config, endpoints, credentials=credentials, db_url=db_url,
                                  markets=list(markets) if markets is not None else None)


@contextlib.asynccontextmanager
async def paper_trading(
    config: AppConfig,
    *,
    db_url: str | Secret | None = None,
    models_dir: str = "",
    markets: Sequence[str] | None = None,
    trader_name: str = "trader",
    reconciler_name: str = "position-reconciler",
    policy_app: str = "policy_server",
    credentials: Credentials | None = None,
) -> AsyncIterator[PaperTrading]:
    """Start everything (see the module docstring); stop it all on exit.

    ``markets``: tickers to trade (default: the collector's selection, i.e. discovery).
    ``credentials``: for demo, default from the environment; the simulator makes its own.
    """
    import ray

    from actors.policy_server import deploy_policy_server
    from actors.reconciler import ReconcilerSpec, start_reconciler
    from actors.trader import Trader

    real = config.exchange.environment != "simulator"
    if real:  # refused before anything starts: production needs the explicit opt-in
        endpoints = resolve_endpoints(config.exchange)
        check_order_placement(config, endpoints)
        credentials = credentials or kalshi_credentials()
        if credentials is None:
            raise RuntimeError(f"{config.exchange.environment}: set KALSHI_API_KEY_ID and "
                               "KALSHI_PRIVATE_KEY_PATH (the trader signs every order)")
    check_cadence(config, models_dir)
    if not ray.is_initialized():
        raise RuntimeError("paper_trading needs Ray: call ray.init() (or join a cluster) first")
    namespace = ray.get_runtime_context().namespace
    async with contextlib.AsyncExitStack() as stack:
        simulator = None
        if not real:
            from kalshiflow.exchange.embedded import run_simulator

            credentials, public = _simulator_keys()
            simulator = await stack.enter_async_context(run_simulator(config, keys=public))
            endpoints = Endpoints(environment="simulator", rest_url=simulator.rest_url,
                                  ws_url=simulator.ws_url)
            check_order_placement(config, endpoints)
        collection = await _start_collection(config, endpoints, credentials, db_url, markets)
        pt = PaperTrading(config, endpoints, collection, None, None, None, simulator, trader_name,
                          reconciler_name)
        pt.credentials = credentials
        try:
            account = config.trader.account
            pt.reconciler = start_reconciler(
                ReconcilerSpec(account=account, rest_url=endpoints.rest_url, ws_url=endpoints.ws_url,
                               credentials=credentials, environment=endpoints.environment,
                               exchange=config.exchange, risk=config.risk,
                               write_queue=collection.writequeue_name, namespace=namespace),
                name=reconciler_name)
            pt.policy = deploy_policy_server(policy_config(config, models_dir, policy_app))
            speed = config.simulator.speed if simulator is not None else 1.0
            spec = TraderSpec(name=trader_name, namespace=namespace, environment=endpoints.environment,
                              rest_url=endpoints.rest_url, exchange=config.exchange, credentials=credentials,
                              trader=config.trader, risk=config.risk, markets=tuple(collection.markets),
                              writequeue=collection.writequeue_name, reconciler=reconciler_name,
                              policy_app=policy_app, clock_rate=speed,
                              collector_prefix=f"collector-{collection.session_id[:8]}-")
            pt.trader = Trader.options(name=trader_name, namespace=namespace,  # type: ignore[attr-defined]
                                       num_cpus=config.trader.actor_num_cpus).remote(spec)
            t0 = time.monotonic()
            if not await pt.reconciler.ready.remote(60.0):
                log.warning("paper trading: reconciler not ready after 60 s")
            await pt.reconciler.add_subscriber.remote(pt.trader, "on_fill")
            if not await pt.trader.ready.remote(60.0):
                raise RuntimeError("trader did not start within 60 s")
            await collection.add_subscriber(pt.trader, list(collection.markets))
            log.info("paper trading on %s: %d markets, ready in %.1fs", endpoints.environment,
                     len(collection.markets), time.monotonic() - t0)
            if markets is None and config.trader.market_refresh_s > 0:
                pt._refresher = asyncio.get_running_loop().create_task(
                    pt._refresh_forever(config.trader.market_refresh_s))
            yield pt
        finally:
            await pt.stop()  # the simulator stops after it, when the exit stack unwinds


def trading_summary(stats: Any, state: Any) -> str:
    """One line for the end of a run: what the Trader did and where the account ended."""
    money = {k: getattr(state, k) for k in ("portfolio_value", "realized_pnl", "unrealized_pnl", "fees")}
    value = ", ".join(f"{k.replace('_', ' ')} {'-' if v.startswith('-') else ''}${v.lstrip('-')}"
                      for k, v in money.items() if v is not None)
    top = sorted(stats.refusals.items(), key=lambda kv: -kv[1])[:3]
    refused = sum(stats.refusals.values())
    why = f" ({', '.join(f'{k} {n}' for k, n in top)})" if top else ""
    return (f"paper trading ({stats.environment}, model {stats.model_version or 'none'}): "
            f"{stats.decisions} decisions, {stats.orders_placed} orders placed, {stats.fills} fills, "
            f"{stats.orders_rejected} rejected, {refused} refused by the risk gate{why}; "
            f"{value or 'no portfolio view'}; risk mode {stats.risk_mode}")
