"""What a Trader actor is built from (Ray keeps the spec to rebuild a restarted actor).

Everything is named, not handed over as handles: the WriteQueue, the PositionReconciler and the
collectors are looked up by name (handles die with their owner; names survive restarts), the
PolicyServer by its Serve application name.
"""

from __future__ import annotations

import msgspec

from kalshiflow.config import ExchangeConfig, RiskConfig, TraderConfig
from kalshiflow.secrets import Credentials
from kalshiflow.trading.decision import DecisionSettings

__all__ = ["TraderSpec", "decision_settings"]


class TraderSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str = "trader"
    namespace: str | None = None
    environment: str = "simulator"  # simulator | demo | production (from the endpoints)
    rest_url: str = ""
    exchange: ExchangeConfig = ExchangeConfig()
    credentials: Credentials | None = None
    trader: TraderConfig = TraderConfig()
    risk: RiskConfig = RiskConfig()
    markets: tuple[str, ...] = ()  # tickers to trade (their collectors must publish them to us)
    writequeue: str | None = None  # WriteQueue actor name; None = persist nothing
    reconciler: str | None = None  # PositionReconciler actor name; None = portfolio from REST polls
    policy_app: str = "policy_server"  # the PolicyServer's Serve application
    collector_prefix: str = "collector-"  # collectors are found by name (depth, liveness)
    clock_rate: float = 1.0  # exchange seconds per wall second (the simulator's speed)


def decision_settings(cfg: TraderConfig) -> DecisionSettings:
    return DecisionSettings(
        sizes=tuple(cfg.sizes), max_position=cfg.max_position, stale_after_s=cfg.stale_after_s,
        reference_cash=cfg.reference_cash_dollars * 1_000_000, decision_interval_s=cfg.decision_interval_s,
        max_decisions_per_s=cfg.max_decisions_per_s, account=cfg.account)
