"""What crosses the PolicyServer's Serve handle: requests, replies, control results, stats, config.

All frozen msgspec Structs: cheap to build on the hot path, picklable through Ray, and convertible
from a TOML section (``msgspec.convert(section, PolicyServerConfig)`` rejects unknown keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec
import numpy as np

from kalshiflow.config import ConfigError

__all__ = [
    "HOLD_ACTION", "NO_MODEL", "ActBatch", "ActBatchReply", "ActReply", "ActRequest", "ControlEvent",
    "ControlReply", "EventKind", "PolicyServerConfig",
    "ReplyStatus", "ServerStats", "hold_reply",
]

# Action 0 is "hold" in every ActionTable (kalshiflow.rl.actions): the one answer that is always
# safe, so it is what the server (and a caller that gets no answer) falls back to.
HOLD_ACTION = 0
# The version reported while no model is loaded (fresh install, nothing promoted yet).
NO_MODEL = "none"

# ok             the live model chose ``action``
# no_model       nothing loaded yet: HOLD
# bad_request    obs/mask of the wrong shape, non-finite, or no allowed action: HOLD
# schema_mismatch the request's schema_hash differs from the live model's: HOLD
# error          inference raised (reported, never propagated to the other requests of the batch)
# unavailable    set by the CALLER (hold_reply) when the server did not answer in time
ReplyStatus = Literal["ok", "no_model", "bad_request", "schema_mismatch", "error", "unavailable"]


class ActRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One decision for one market.

    ``obs``: float32 (n_features,) from features.Observer; ``mask``: (n_actions,) 1 = allowed.
    ``schema_hash``: the caller's Observer.schema_hash; when given, a model built for another
    schema answers HOLD instead of acting on features it would misread (prior-system-lessons §8.3).
    """

    obs: np.ndarray | Sequence[float]
    mask: np.ndarray | Sequence[float]
    ticker: str = ""
    request_id: int | str = 0
    schema_hash: str | None = None


class ActReply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to one ActRequest.

    ``latency_ms``: inside the replica, from arrival to answer (queueing for the batch included);
    the caller measures the handle round trip itself. ``batch_size``: how many requests shared
    the forward pass.
    """

    action: int
    version: str
    status: ReplyStatus = "ok"
    latency_ms: float = 0.0
    batch_size: int = 0
    ticker: str = ""
    request_id: int | str = 0
    error: str = ""


class ActBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Many decisions in one call, column-wise (the trader's per-tick batch over its markets).

    Two arrays instead of B request objects: Ray serializes two buffers instead of 2B, which is
    most of the cost of a 100-market call. ``obs`` float32 (B, n_features), ``mask`` (B, n_actions).
    """

    obs: np.ndarray
    mask: np.ndarray
    request_id: int | str = 0
    schema_hash: str | None = None


class ActBatchReply(msgspec.Struct, frozen=True, kw_only=True):
    """``actions`` int64 (B,): HOLD in every row whose ``status`` is not "ok" (reason in ``errors``)."""

    actions: np.ndarray
    status: list[ReplyStatus]
    version: str
    latency_ms: float = 0.0
    request_id: int | str = 0
    errors: dict[int, str] = {}


def hold_reply(request: ActRequest, status: ReplyStatus, error: str = "",
               version: str = NO_MODEL) -> ActReply:
    """A HOLD answer for ``request`` (used by the server and by callers whose call failed)."""
    return ActReply(action=HOLD_ACTION, version=version, status=status, ticker=request.ticker,
                    request_id=request.request_id, error=error)


EventKind = Literal["swap", "refused", "failed", "rollback"]


class ControlEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One model change attempt, kept in a bounded log that ``stats()`` returns."""

    at: float  # wall clock, time.time()
    kind: EventKind
    version: str
    trigger: str  # "startup" | "registry" | "reload" | "promote" | "use_version" | "rollback"
    message: str = ""


class ControlReply(msgspec.Struct, frozen=True, kw_only=True):
    """Result of reload() / promote() / use_version() / rollback() on ONE replica."""

    ok: bool
    command: str
    requested: str  # the version asked for ("" when none was)
    version: str  # what the replica serves after the command
    previous: str  # what it served before
    message: str = ""
    replica: str = ""


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """One replica's view (a handle call reaches one replica; see docs/serving.md)."""

    replica: str
    version: str
    schema_hash: str  # the hash this server accepts (what the running feature/action code builds)
    live_since: float  # time.time() the served version went live (0 with no model)
    registry_current: str | None
    previous_versions: list[str]  # in-memory rollback stack, newest last
    requests: int
    requests_per_s: float  # over the last ``window_s`` seconds
    window_s: float
    batches: int
    mean_batch_size: float
    max_batch_size: int
    batch_size_hist: dict[int, int]  # batch size -> batches
    p50_ms: float  # server-side latency (arrival -> answer) over the recent window of requests
    p99_ms: float
    not_ok: dict[str, int]  # reply status -> count, for every status but "ok"
    reloads: int  # successful swaps (startup load included)
    refusals: int  # schema-hash mismatches refused
    load_failures: int  # other load errors (missing files, corrupt checkpoint, ...)
    rollbacks: int
    last_refusal: str
    events: list[ControlEvent]


class PolicyServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to run the PolicyServer deployment (a ``[policy_server]`` TOML section converts to it)."""

    app_name: str = "policy_server"
    models_dir: str = ""  # "" = kalshiflow.rl.registry.DEFAULT_MODELS_DIR
    # The schema the live trader feeds: the same two EnvConfig fields that enter features.schema_hash.
    # A model whose manifest hash differs is refused. ``schema_hash`` overrides both when non-empty.
    sizes: tuple[int, ...] = (1, 5, 10)
    max_position: int = 50
    schema_hash: str = ""
    num_replicas: int = 1
    num_cpus: float = 0.25  # fractional: the whole system shares a 2-core machine
    # Serve's default is 5 in flight per replica (reference-systems §2.1); at 100+ markets the
    # trader has more than that outstanding, and requests beyond it queue in the caller's router.
    max_ongoing_requests: int = 64
    max_batch_size: int = 32
    # Serve's default wait is 10 ms. 0 means "no waiting, take whatever is queued": under load the
    # requests that arrive while one forward pass runs (~1 ms for any batch up to 32) form the next
    # batch, so batches still fill, and a lone request pays no wait (measured: sequential p50 4.7 ms
    # with 0 vs 6.4 ms with 1 ms on the 2-core box; docs/serving.md).
    batch_wait_timeout_s: float = 0.0
    poll_interval_s: float = 1.0  # how often each replica reads the registry's ``current`` pointer
    retry_failed_after_s: float = 10.0  # retry a pointer whose load failed (not a schema refusal)
    keep_previous: int = 2  # versions kept in memory for an instant rollback
    latency_window: int = 4096  # recent requests the percentiles are computed over
    rate_window_s: float = 10.0
    health_check_period_s: float = 2.0
    proxy_location: Literal["Disabled", "HeadOnly", "EveryNode"] = "Disabled"  # handles only, no HTTP
    # Serve logs one line per request by default: at thousands of decisions/s that is the biggest
    # cost in the replica and floods the driver's log stream. Counters are in stats() instead.
    access_log: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.num_replicas < 1 or self.max_ongoing_requests < 1 or self.max_batch_size < 1:
            problems.append("num_replicas, max_ongoing_requests and max_batch_size must be >= 1")
        if self.batch_wait_timeout_s < 0 or self.poll_interval_s <= 0:
            problems.append("batch_wait_timeout_s must be >= 0 and poll_interval_s > 0")
        if self.keep_previous < 0 or self.num_cpus < 0:
            problems.append("keep_previous and num_cpus must be >= 0")
        if problems:
            raise ConfigError("PolicyServerConfig: " + "; ".join(problems))
