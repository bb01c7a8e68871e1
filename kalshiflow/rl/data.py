"""Episode data for the RL env: data specs, sources, and the time-based train/validation split.

Data specs (``EnvConfig.data``):
- ``synthetic:<seeds>`` or ``synthetic:<scenario>:<seeds>`` — seeded generator sessions
  (scenario ``driftless`` (default) | ``edge`` | ``static``); seeds like ``0-9``, ``1,4,7``,
  ``0-3,10``. Seed k's session starts at ``SYNTHETIC_EPOCH + k days``, so seed order is time order.
- ``session:<id>[,<id>...]`` — recorded sessions from PostgreSQL (kalshiflow.storage.sessions).
- ``static`` — one frozen book (YES bids 48/47c, NO bids 50/49c, 500 each: YES 48 x 50), the
  reward-hacking probe of prior-system-lessons §8.1: one snapshot, valid for a day, never closes.

Split (time-based, no look-ahead): every market of a source has a time key (its session's start
for synthetic seeds, its close — or the end of its data — for recorded markets); sorted by it,
the last ``validation_fraction`` are ``validation`` and the rest ``train``. ``all`` takes all.

Markets are compiled on first use (kalshiflow.rl.compiled) and cached per source key.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Literal

import msgspec

from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.generator.config import TierConfig
from kalshiflow.exchange.replay import InMemoryMarketStream, RecordedMarketStream, RecSnapshot
from kalshiflow.market.prices import CENT
from kalshiflow.rl.compiled import (  # re-exported: the env and the live trader import them from here
    K_ADD,
    K_CLOSE,
    K_GAP,
    K_REMOVE,
    K_SNAPSHOT,
    K_TRADE,
    ROW_BLOCK,
    CompiledMarket,
    StreamFeed,
    compile_stream,
)

__all__ = [
    "K_ADD", "K_CLOSE", "K_GAP", "K_REMOVE", "K_SNAPSHOT", "K_TRADE", "ROW_BLOCK", "CompiledMarket",
    "DataSpecError", "EpisodePool", "MarketRef", "StreamFeed", "SyntheticConfig", "compile_stream",
    "parse_data_spec", "static_stream",
]

SYNTHETIC_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0


class DataSpecError(ValueError):
    """A data spec that cannot be parsed or loaded."""


class SyntheticConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a synthetic seed becomes a session: ``markets_per_seed`` markets opened at the session
    start, lifetimes drawn in [lifetime_min_s, lifetime_max_s], recorded until all have settled."""

    markets_per_seed: int = 4
    lifetime_min_s: float = 1200.0
    lifetime_max_s: float = 3600.0
    warmup_s: float = 30.0  # generator time before recording starts (books fill up)
    session_s: float = 0.0  # seconds recorded; 0 = until every market has settled
    generator_config: str = ""  # TOML path; "" = configs/generator.toml
    tiers: tuple[TierConfig, ...] = ()  # replace the generator's market tiers (e.g. one tight tier)


class MarketRef(msgspec.Struct, frozen=True):
    """One market of a source: ``key`` identifies it to the source, ``time`` orders the split."""

    source: str
    key: tuple[int | str, int]
    time: float


# ----------------------------------------------------------------------------- sources


def static_stream(start: float = SYNTHETIC_EPOCH) -> InMemoryMarketStream:
    """The frozen book of prior-system-lessons §8.1: YES 48 x 50, 500 contracts per level."""
    info = MarketInfo(ticker="KXSTATIC-PROBE", event_ticker="KXSTATIC", series_ticker="KXSTATIC",
                      title="Static probe book", open_time=start, close_time=start + 30 * DAY,
                      market_id="00000000-0000-4000-8000-000000000000")
    snap = RecSnapshot(seq=1, ts=start, yes=((47 * CENT, 50_000), (48 * CENT, 50_000)),
                       no=((49 * CENT, 50_000), (50 * CENT, 50_000)))
    return InMemoryMarketStream(info, [snap])


def _parse_ids(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise DataSpecError(f"bad seed list {text!r}: use e.g. 0-9 or 1,4,7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise DataSpecError(f"bad seed range {part!r}")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


Kind = Literal["synthetic", "session", "static"]


def parse_data_spec(spec: str) -> tuple[Kind, str, list[int | str]]:
    """-> (kind, scenario, keys). See the module docstring for the syntax."""
    if spec == "static":
        return "static", "", [0]
    head, _, rest = spec.partition(":")
    if head == "synthetic":
        scenario, _, seeds = rest.rpartition(":")
        scenario = scenario or "driftless"
        if scenario not in ("driftless", "edge", "static"):
            raise DataSpecError(f"unknown synthetic scenario {scenario!r} (driftless | edge | static)")
        return "synthetic", scenario, list(_parse_ids(seeds))
    if head == "session" and rest:
        return "session", "", [s.strip() for s in rest.split(",") if s.strip()]
    raise DataSpecError(f"bad data spec {spec!r}: synthetic[:<scenario>]:<seeds> | session:<ids> | static")


class EpisodePool:
    """The markets a data spec and split provide, compiled on first use (LRU-cached per source
    key), so envs sharing a pool share the work. ``refs`` is the split's market list.

    ``streams``: use these in-memory market streams instead of the spec (tests, generated or
    file sessions); ``end_ts``: when their data stops if they do not close (default: last event).
    """

    def __init__(self, spec: str, split: Literal["train", "validation", "all"] = "train", *,
                 validation_fraction: float = 0.2, synthetic: SyntheticConfig | None = None,
                 cache_size: int = 32, streams: Iterable[RecordedMarketStream] | None = None,
                 end_ts: float | None = None) -> None:
        self.spec = spec
        self.kind, self.scenario, keys = parse_data_spec(spec) if streams is None else ("session", "", [])
        self.synthetic = synthetic or SyntheticConfig()
        self._cache: OrderedDict[int | str, list[CompiledMarket]] = OrderedDict()
        self._cache_size = cache_size
        refs: list[MarketRef]
        if streams is not None:  # in-memory streams (tests, generated sessions): one "session"
            compiled = [compile_stream(s, end_ts=end_ts) for s in streams]
            self._cache["mem"] = compiled
            refs = [MarketRef("mem", ("mem", i), m.close_time) for i, m in enumerate(compiled)]
        elif self.kind == "static":
            refs = [MarketRef("static", (0, 0), SYNTHETIC_EPOCH)]
        elif self.kind == "synthetic":
            k = self.synthetic.markets_per_seed
            refs = [MarketRef("synthetic", (int(s), i), SYNTHETIC_EPOCH + int(s) * DAY)
                    for s in keys for i in range(k)]
        else:
            refs = []
            for sid in keys:
                for i, m in enumerate(self._load(sid)):
                    # Recorded markets may not know their close: order them by where their data ends.
                    when = m.close_time if m.close_time > 0 else m.end_ts
                    refs.append(MarketRef("session", (sid, i), when))
        self.refs = split_refs(refs, split, validation_fraction)
        if not self.refs:
            raise DataSpecError(f"data spec {spec!r} has no markets in split {split!r}")

    def __len__(self) -> int:
        return len(self.refs)

    def market(self, i: int) -> CompiledMarket:
        ref = self.refs[i]
        key, index = ref.key
        return self._load(key)[index]

    def _load(self, key: int | str) -> list[CompiledMarket]:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if self.kind == "static":
            markets = [compile_stream(static_stream(), end_ts=SYNTHETIC_EPOCH + DAY)]
        elif self.kind == "synthetic":
            markets = [compile_stream(s) for s in generate_streams(self.scenario, int(key), self.synthetic)]
        else:
            markets = [compile_stream(s) for s in load_session_streams(str(key))]
        self._cache[key] = markets
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return markets


def split_refs(refs: list[MarketRef], split: str, fraction: float) -> list[MarketRef]:
    """Time-based split: sorted by ``time``, the last ``fraction`` (at least one market when
    there are two or more) is validation. A single-market source serves both splits."""
    if split not in ("train", "validation", "all"):
        raise DataSpecError(f"unknown split {split!r} (train | validation | all)")
    if not 0.0 <= fraction < 1.0:
        raise DataSpecError("validation_fraction must be in [0, 1)")
    ordered = sorted(refs, key=lambda r: (r.time, str(r.key)))
    if split == "all" or len(ordered) < 2:
        return ordered
    # Synthetic markets of one seed share a time key: cut between keys, never inside one.
    times = sorted({r.time for r in ordered})
    n_val = max(1, round(fraction * len(times))) if fraction > 0 and len(times) > 1 else 0
    cutoff = times[len(times) - n_val] if n_val else float("inf")
    return [r for r in ordered if (r.time >= cutoff) == (split == "validation")]


def generate_streams(scenario: str, seed: int, cfg: SyntheticConfig) -> list[InMemoryMarketStream]:
    """Run the generator for one seed: ``markets_per_seed`` markets, recorded until settled."""
    from kalshiflow.exchange.generator import load_generator_config
    from kalshiflow.exchange.replay import record_generated_session

    overrides: dict[str, object] = {
        "markets": {"count": cfg.markets_per_seed, "scenario": scenario, "relist": False},
        "schedule": {"lifetime_min_s": cfg.lifetime_min_s, "lifetime_max_s": cfg.lifetime_max_s,
                     "open_stagger_s": 0.0},
    }
    gen_cfg = load_generator_config(cfg.generator_config or None, **overrides)  # type: ignore[arg-type]
    if cfg.tiers:
        gen_cfg = msgspec.structs.replace(gen_cfg, tiers=tuple(cfg.tiers))
    seconds = cfg.session_s or cfg.lifetime_max_s + gen_cfg.schedule.settle_delay_s + 1.0
    return record_generated_session(gen_cfg, seed, seconds=seconds, start=SYNTHETIC_EPOCH + seed * DAY,
                                    warmup_s=cfg.warmup_s)


def load_session_streams(session_id: str) -> list[RecordedMarketStream]:
    """Every market of a recorded session, read from PostgreSQL (``DATABASE_URL`` or the embedded
    server, as configured) through the storage loader."""
    import asyncio

    from kalshiflow.config import load_config
    from kalshiflow.storage import open_database
    from kalshiflow.storage.sessions import load_market_stream, session_tickers

    async def load() -> list[RecordedMarketStream]:
        async with open_database(load_config()) as db:
            tickers = await session_tickers(db, session_id)
            return [await load_market_stream(db, session_id, t) for t in tickers]

    try:
        streams = asyncio.run(load())
    except (ValueError, OSError) as err:
        raise DataSpecError(f"session:{session_id}: cannot load ({err})") from err
    if not streams:
        raise DataSpecError(f"session:{session_id}: no recorded markets")
    return streams
