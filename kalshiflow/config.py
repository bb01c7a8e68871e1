"""Configuration: TOML files in configs/ -> frozen msgspec Structs.

Precedence (lowest first): struct defaults, the TOML file, environment variables
``KALSHIFLOW_<SECTION>_<KEY>``, then CLI overrides (``--set section.key=value`` or a CLI's own
flags). Unknown keys and wrong types are refused with an error naming the source, the key and the
expected type. Unknown ``KALSHIFLOW_*`` variables are refused too, so a typo never silently does
nothing.

Secrets never live here: see :mod:`kalshiflow.secrets`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

ENV_PREFIX = "KALSHIFLOW_"
# Variables with the prefix that are not config keys.
ENV_NON_KEYS = frozenset({"KALSHIFLOW_CONFIG", "KALSHIFLOW_DATA_DIR"})
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.toml"


class ConfigError(ValueError):
    """A config value that is unknown, mistyped or out of range; the message names where."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class StorageConfig(_Section, frozen=True):
    # Embedded PostgreSQL data directory; "" = <user data dir>/kalshiflow/pgdata.
    data_dir: str = ""
    database: str = "kalshiflow"
    pool_min: int = 1
    pool_max: int = 8
    command_timeout_s: float = 60.0
    connect_timeout_s: float = 30.0
    # How long to keep retrying a server that refuses connections (still starting) before failing.
    connect_retry_s: float = 10.0


class ExchangeConfig(_Section, frozen=True):
    # simulator: the built-in Kalshi-compatible exchange; demo / production: real Kalshi.
    environment: Literal["simulator", "demo", "production"] = "simulator"
    # Order placement on production needs this AND environment = "production".
    allow_production_orders: bool = False
    # Explicit endpoints override the environment's defaults ("" = default).
    rest_url: str = ""
    ws_url: str = ""
    request_timeout_s: float = 10.0
    max_retries: int = 5
    backoff_base_s: float = 0.25
    backoff_max_s: float = 10.0
    # A WS connection with no frame and no ping for this long is treated as dead.
    ws_silence_timeout_s: float = 30.0
    # Which Kalshi hostnames demo/production use: "shared" (demo-api.kalshi.co /
    # api.elections.kalshi.com, what most clients use) or "external" (external-api*.kalshi.co(m),
    # Kalshi's recommended hosts since spring 2026). Ignored for the simulator and for overrides.
    kalshi_hosts: Literal["shared", "external"] = "shared"
    # Order creates use signatures made ahead (RSA-PSS costs ~1 ms of CPU), each once and while its
    # timestamp is at most this old (kalshiflow.protocol.auth.Presigner); 0 = sign every request
    # as it is sent.
    presign_max_age_ms: int = 1000


class SimulatorConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (embedded); the CLI defaults to 8765
    markets: int = 20
    seed: int = 7
    speed: float = 1.0
    starting_balance_dollars: str = "10000.00"
    clock_skew_s: float = 30.0
    ping_interval_s: float = 10.0
    read_tokens_per_s: int = 2000
    write_tokens_per_s: int = 1000
    max_frame_bytes: int = 1_048_576
    # --- exchange server (kalshiflow.exchange.server) ---
    # Token buckets as Kalshi's: every REST request costs request_cost_tokens from the read or
    # write bucket of its account (unsigned requests: of its client address); a bucket holds
    # bucket_seconds of budget. rate_limit = false turns limiting off (benchmarks).
    rate_limit: bool = True
    request_cost_tokens: int = 10
    bucket_seconds: float = 1.0
    # Frames queued per WS connection before the subscription that overflows it is dropped with
    # error 25 (Kalshi's slow-consumer behaviour); bounds memory, never stalls the exchange.
    ws_queue_frames: int = 50_000
    # Run the synthetic market generator (false: an empty exchange, markets added by the caller).
    generator: bool = True
    # Where a generated API key pair is written when no key is given ("" = <data root>/simulator).
    key_dir: str = ""
    # How often time-driven changes (market open/close, order expiry) are applied.
    advance_interval_s: float = 0.25


class CollectorConfig(_Section, frozen=True):
    tickers: list[str] = []
    discover_top_n: int = 20
    markets_per_collector: int = 50
    batch_interval_ms: int = 50  # rows to the WriteQueue
    # Book updates to subscribers (the Trader) go out right after the frames that changed them;
    # > 0 spaces the calls to one subscriber by at least this (fewer calls, more latency).
    publish_interval_ms: int = 0
    max_batch_rows: int = 5000
    reconnect_backoff_s: float = 0.5
    reconnect_backoff_max_s: float = 15.0
    # Also record the public tape, and follow market_lifecycle_v2 to drop markets that settle.
    trades: bool = True
    lifecycle: bool = True
    # Kalshi announces no event when a market closes on time: poll REST for it (0 = never).
    status_poll_s: float = 60.0
    # A gap's snapshots must arrive within this; then get_snapshot again, then resubscribe, then
    # reconnect.
    recovery_timeout_s: float = 5.0
    # Batches sent to the WriteQueue and not yet acknowledged (pipelining depth).
    max_inflight_batches: int = 4
    # Rows held awaiting acknowledgement before the collector stops reading its socket
    # (backpressure reaches the exchange rather than memory growing without bound).
    max_unacked_rows: int = 2_000_000
    # Retry delay (doubling, capped) for a batch whose WriteQueue call failed (e.g. a restart).
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 5.0
    # Ray resources per collector actor: fractional, so several fit on a 2-core machine.
    actor_num_cpus: float = 0.25


class WriteQueueConfig(_Section, frozen=True):
    flush_rows: int = 5000
    flush_interval_ms: int = 250
    high_water_rows: int = 200_000
    spill_dir: str = ""  # "" = <data dir>/spill
    # Flush as soon as a writer is idle rather than waiting for flush_rows / flush_interval_ms:
    # an ack waits for durability, so waiting would only add latency; under load the writers are
    # busy, batches pile up meanwhile and flushes grow toward flush_rows on their own.
    eager_flush: bool = True
    # Concurrent flushes, one PostgreSQL connection each (one encodes while another commits).
    writers: int = 2
    # A write not committed after this long counts as "PostgreSQL unreachable": its rows spill.
    write_timeout_s: float = 30.0
    # Spill segment files are rotated at this size (bytes).
    spill_segment_bytes: int = 64 * 1024 * 1024
    # Longest pause between reconnection attempts while PostgreSQL is down.
    reconnect_max_s: float = 2.0


class RiskConfig(_Section, frozen=True):
    max_position_per_market: int = 100
    max_total_exposure_dollars: str = "5000.00"
    max_orders_per_s: float = 5.0
    max_open_orders: int = 50
    daily_volume_cap_dollars: str = "100000.00"
    daily_loss_stop_fraction: float = 0.05
    stale_book_s: float = 10.0
    # --- risk gate details (kalshiflow/trading/risk.py, docs/risk.md) ---
    # Token-bucket capacity for max_orders_per_s; 0 = one second's worth (at least 1).
    order_burst: int = 0
    # Loss (fraction of start-of-day value) at which ACTIVE drops to REDUCING; 0 = never.
    reducing_loss_fraction: float = 0.0
    flatten_on_loss_stop: bool = True
    flatten_on_kill: bool = False
    # Flatten orders are IOC limits this far below the held side's best bid (floored to a cent).
    flatten_slippage_dollars: str = "0.05"
    # An approved order not redeemed by the order router within this is void.
    approval_ttl_s: float = 2.0
    # An approved order counts as resting until the portfolio shows it, or for at most this long.
    pending_order_ttl_s: float = 30.0
    # Shrink an order to the room left under a cap instead of refusing it outright.
    resize_to_fit: bool = True
    # Where each account's risk day (start-of-day value, volume, loss latch, kill switch) is kept so
    # a restarted Trader resumes it (kalshiflow/trading/risk_day.py); "" = <data root>/risk.
    state_dir: str = ""
    # --- position reconciler (actors/reconciler.py) ---
    reconcile_interval_s: float = 10.0
    # A resting order the reconciler does not know yet is only a discrepancy once older than this.
    order_grace_s: float = 5.0
    # Balance differences up to this (plus $0.01 per resting order) are rounding, not drift.
    balance_tolerance_dollars: str = "0.01"


class TraderConfig(_Section, frozen=True):
    # Exchange seconds between two decisions of one market: set it to the served model's training
    # EnvConfig.decision_interval_s (the cadence the policy learned at; docs/trading.md). Paper
    # trading refuses to start when it differs from the current model's (trading/paper.py).
    decision_interval_s: float = 5.0
    # Not used for sizing: order sizes come from the action table (``sizes``), exactly as in
    # training (prior-system-lessons §4.3: 20 contracts trained vs 10 sent live).
    order_size: int = 10
    # --- the model schema: must equal the trained env's (EnvConfig); the PolicyServer gets the same ---
    sizes: tuple[int, ...] = (1, 5, 10)  # contracts per order action (EnvConfig.sizes)
    max_position: int = 50  # contracts per side (EnvConfig.max_position)
    reference_cash_dollars: int = 1000  # EnvConfig.starting_cash: the features' capital per market
    stale_after_s: float = 300.0  # EnvConfig.stale_after_s (the action mask's staleness rule)
    # --- cadence and the decision path ---
    max_decisions_per_s: float = 200.0  # wall clock, all markets (protects the PolicyServer)
    # Also decide markets whose book did not change, once per decision_interval_s (the env decides
    # on a clock: book age and look-backs move with time). False: decide on book changes only.
    clock_decisions: bool = True
    policy_timeout_s: float = 1.0  # a PolicyServer call slower than this is a HOLD ("unavailable")
    # Ask the collector for the ladders when an update carries fewer levels than the observation
    # reads (collectors publish the best 5 a side with every update: only a top-only sender).
    fetch_depth: bool = True
    # How collectors deliver book views (kalshiflow.collect.book_link): "loopback" = a TCP stream
    # on 127.0.0.1 from collectors on this node (others use Ray calls); "node" = on the node's
    # address, for collectors anywhere in the cluster; "off" = Ray calls only (~2 ms more a hop).
    book_link: Literal["loopback", "node", "off"] = "loopback"
    # --- housekeeping ---
    portfolio_refresh_s: float = 0.25  # PositionReconciler.portfolio() poll
    order_sync_s: float = 5.0  # REST resting-order sync (adopt leftovers, close vanished)
    collector_poll_s: float = 1.0  # collector liveness: a disconnected one -> cancel its markets' orders
    snapshot_interval_s: float = 30.0  # position_snapshots rows
    persist_interval_s: float = 0.5  # rows to the WriteQueue at most this often
    account: str = "paper"
    client_order_prefix: str = "kf"  # client order ids: <prefix>-<incarnation>-<n>
    actor_num_cpus: float = 0.25
    # Paper trading with discovered markets: look for newly listed ones this often (wall s; 0 = never).
    market_refresh_s: float = 0.0
    # --- a fresh install (kalshiflow.launch.bootstrap) ---
    # With the simulator and no current model, launch first trains a short PPO run on generated
    # markets with this schema and promotes it (forced, recorded as "bootstrap"), so the quickstart
    # trades. Never on demo / production. False: the Trader holds until a model is promoted.
    bootstrap_model: bool = True
    bootstrap_timesteps: int = 100_000  # ~1-2 minutes on 2 cores
    bootstrap_data: str = "synthetic:edge:1-10"


class UIConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000  # 0 = any free port (the launcher prints the URL)
    # At most one message per component (collection, trader, trades, each book, PnL) per interval.
    update_interval_s: float = 1.0
    # Per-browser outbox: a slow browser loses its OLDEST messages beyond these (counted, resynced),
    # and never slows the others (reference-systems.md §2.6 budgets 64 KiB per connection).
    client_queue_messages: int = 64
    client_queue_bytes: int = 262_144
    book_depth: int = 10  # ladder levels per side
    recent_fills: int = 50  # fills listed in the trades panel
    pnl_history_points: int = 3600  # one per interval: an hour at 1 s
    # Timeout of each status call the Broadcaster makes; a slow actor shows as stale, not as a stall.
    poll_timeout_s: float = 2.0


class RayConfig(_Section, frozen=True):
    # "" = join the cluster `ray start` made (RAY_ADDRESS or Ray's address file), else start a local
    # one; "auto" = join one or fail; "local" = always start a local one; HOST:PORT or ray://HOST:PORT.
    address: str = ""
    num_cpus: int = 2  # CPUs of a cluster started here (ignored when joining one)
    namespace: str = "kalshiflow"
    include_dashboard: bool = True  # Ray's own dashboard, for a cluster started here
    dashboard_port: int = 8265


class AppConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    storage: StorageConfig = StorageConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    collector: CollectorConfig = CollectorConfig()
    write_queue: WriteQueueConfig = WriteQueueConfig()
    risk: RiskConfig = RiskConfig()
    trader: TraderConfig = TraderConfig()
    ui: UIConfig = UIConfig()
    ray: RayConfig = RayConfig()


_MSGSPEC_PATH = re.compile(r"\s*-\s*at\s*`\$((?:\.\w+|\[\d+\])*)`\s*$")


def _explain(err: msgspec.ValidationError, source: str) -> ConfigError:
    text = str(err)
    m = _MSGSPEC_PATH.search(text)
    where = m.group(1).lstrip(".") if m else ""
    detail = _MSGSPEC_PATH.sub("", text)
    unknown = re.match(r"Object contains unknown field `(\w+)`", detail)
    if unknown:
        key = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return ConfigError(f"{source}: unknown key `{key}`")
    return ConfigError(f"{source}: key `{where or '<root>'}`: {detail}")


def _decode(data: Mapping[str, Any], source: str, struct: type[Any] = AppConfig) -> Any:
    try:
        return msgspec.convert(data, struct, strict=True)
    except msgspec.ValidationError as err:
        raise _explain(err, source) from None


def _section_fields() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section in msgspec.structs.fields(AppConfig):
        out[section.name] = {f.name: f.type for f in msgspec.structs.fields(section.type)}
    return out


def _parse_scalar(text: str, field_type: Any = None) -> Any:
    """Environment / CLI values are TOML literals when they parse as one, else plain strings.

    A string-typed key always takes the raw text, so "10000.00" stays a string.
    """
    if field_type is str or (getattr(field_type, "__origin__", None) is Literal):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if "," in text:
            return [part.strip() for part in text.split(",") if part.strip()]
        return text


def _merge(base: dict[str, Any], section: str, key: str, value: Any) -> None:
    target = base.setdefault(section, {})
    if not isinstance(target, dict):
        raise ConfigError(f"section `{section}` must be a table")
    target[key] = value


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, str], Any]:
    """KALSHIFLOW_<SECTION>_<KEY> -> {(section, key): value}; unknown names raise ConfigError."""
    names: dict[str, tuple[str, str]] = {}
    for section, fields in _section_fields().items():
        for key in fields:
            names[f"{ENV_PREFIX}{section}_{key}".upper()] = (section, key)
    found: dict[tuple[str, str], Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NON_KEYS:
            continue
        if name not in names:
            raise ConfigError(f"environment: unknown config variable {name}")
        section, key = names[name]
        found[(section, key)] = _parse_scalar(raw, _section_fields()[section][key])
    return found


def parse_set(item: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, value)."""
    path, eq, raw = item.partition("=")
    section, dot, key = path.strip().partition(".")
    if not eq or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    field_type = _section_fields().get(section, {}).get(key)
    return section, key, _parse_scalar(raw.strip(), field_type)


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, str], Any] | None = None,
) -> AppConfig:
    """Load a config file (default: $KALSHIFLOW_CONFIG or configs/default.toml) with overrides."""
    env = os.environ if environ is None else environ
    chosen = Path(path) if path else Path(env.get("KALSHIFLOW_CONFIG") or DEFAULT_CONFIG)
    try:
        with chosen.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{chosen}: not valid TOML: {err}") from None
    # Validate the file alone first so its errors name the file.
    _decode(data, str(chosen))
    for source, extra in (("environment", env_overrides(env)), ("command line", overrides or {})):
        if not extra:
            continue
        merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        for (section, key), value in extra.items():
            _merge(merged, section, key, value)
        try:
            _decode(merged, source)
        except ConfigError:
            # Re-validate one value at a time so the message names the variable at fault.
            for (section, key), value in extra.items():
                probe = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
                _merge(probe, section, key, value)
                label = (f"{ENV_PREFIX}{section}_{key}".upper() if source == "environment"
                         else f"--set {section}.{key}")
                _decode(probe, f"{source} ({label})")
            raise
        data = merged
    return _decode(data, str(chosen))


def to_dict(config: AppConfig) -> dict[str, Any]:
    """Plain dict (for JSON in session rows and manifests). Holds no secrets by construction."""
    return msgspec.to_builtins(config)


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md): every key, its type, default and env name."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m kalshiflow.config --reference` from the config structs; a test keeps",
        "it in step with the code. Precedence: defaults < TOML file < `KALSHIFLOW_<SECTION>_<KEY>` <",
        "CLI `--set section.key=value`.",
        "",
    ]
    defaults = msgspec.to_builtins(AppConfig())
    for section in msgspec.structs.fields(AppConfig):
        lines += [f"## [{section.name}]", "", "| key | type | default | environment variable |",
                  "|---|---|---|---|"]
        for field in msgspec.structs.fields(section.type):
            type_name = getattr(field.type, "__name__", None) or str(field.type).replace("typing.", "")
            default = msgspec.json.encode(defaults[section.name][field.name]).decode()
            env = f"{ENV_PREFIX}{section.name}_{field.name}".upper()
            lines.append(f"| `{field.name}` | `{type_name}` | `{default}` | `{env}` |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kalshiflow.config")
    parser.add_argument("--reference", action="store_true", help="print the configuration reference")
    parser.add_argument("--config", help="validate this file (with env overrides) and print it as JSON")
    args = parser.parse_args()
    if args.reference:
        print(reference_markdown())
    else:
        print(msgspec.json.format(msgspec.json.encode(to_dict(load_config(args.config))).decode()))
