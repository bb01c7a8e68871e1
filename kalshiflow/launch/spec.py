"""Names and specs shared by the launcher and the Broadcaster actor.

Every long-lived actor is NAMED in the config's namespace so that a second launch, a CLI or the
Broadcaster finds it with ``ray.get_actor`` instead of holding a handle (handles die with their
owner's memory; names survive actor restarts).
"""

from __future__ import annotations

import msgspec

from kalshiflow.config import UIConfig

__all__ = ["ActorNames", "BroadcasterSpec", "COLLECTOR_PREFIX"]

# kalshiflow.collect.run names collectors "collector-<session prefix>-<i>".
COLLECTOR_PREFIX = "collector-"


class ActorNames(msgspec.Struct, frozen=True, kw_only=True):
    broadcaster: str = "broadcaster"
    write_queue: str = "write-queue"  # a prefix: kalshiflow.collect.run appends the session's
    trader: str = "trader"
    reconciler: str = "position-reconciler"
    policy_app: str = "policy_server"  # a Ray Serve application, not a plain actor
    collector_prefix: str = COLLECTOR_PREFIX


class BroadcasterSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a Broadcaster is built from (Ray keeps it to rebuild a restarted actor)."""

    launch_id: str  # the launch that owns this system: a second launch finds another id and attaches
    launcher_pid: int
    started_at: float  # epoch seconds
    ui: UIConfig
    ui_dir: str
    namespace: str
    environment: str  # simulator | demo | production (the exchange)
    exchange_url: str | None
    ray_dashboard_url: str | None
    names: ActorNames = ActorNames()
    # Exchange seconds per wall second (the simulator's speed). Feed lag (receive time minus the
    # exchange's timestamp) means something only when the exchange runs on the wall clock.
    exchange_clock_rate: float = 1.0
