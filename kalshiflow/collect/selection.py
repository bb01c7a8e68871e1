"""Which markets to collect, and which collector collects each.

- Explicit tickers (``CollectorConfig.tickers``) are taken as given; REST is asked only for each
  market's price grid (a sub-cent market needs its own grid for the book) and status.
- Otherwise discovery: ``GET /markets?status=open``, ranked by activity -- 24 h volume first, then
  open interest, total volume, liquidity -- and the top N kept.
- Sharding: ceil(N / markets_per_collector) collectors; markets are dealt round-robin in rank
  order so every shard gets a similar mix of busy and quiet markets (contiguous chunks would put
  all the busiest markets on collector 0).

The ranking and sharding functions are pure; only :func:`discover`, :func:`describe` and
:func:`closed_markets` talk to REST.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from kalshiflow.market.prices import GRIDS, LINEAR_CENT, PriceGrid, PriceRange
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.errors import KalshiError
from kalshiflow.protocol.rest_client import KalshiRestClient

__all__ = [
    "CLOSED_STATUSES",
    "MarketSpec",
    "activity_key",
    "assign",
    "closed_markets",
    "describe",
    "discover",
    "fetch_markets",
    "specs_for",
    "rank",
    "shard",
]

log = logging.getLogger(__name__)

# Market statuses after which a market never trades again (REST values, old and new).
CLOSED_STATUSES = frozenset({"closed", "determined", "finalized", "settled"})
_OPEN_STATUSES = frozenset({"active", "open"})
_TICKERS_PER_REQUEST = 100  # GET /markets?tickers=... keeps URLs short


class MarketSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A market to collect: its ticker and price grid (and the activity it was ranked by)."""

    ticker: str
    grid_name: str = LINEAR_CENT.name
    ranges: tuple[PriceRange, ...] = ()  # empty = the named shared grid
    volume_24h: int = 0
    open_interest: int = 0

    def grid(self) -> PriceGrid:
        shared = GRIDS.get(self.grid_name)
        if shared is not None and (not self.ranges or shared.ranges == self.ranges):
            return shared
        if not self.ranges:
            return LINEAR_CENT
        return PriceGrid(self.grid_name, self.ranges)

    @classmethod
    def from_market(cls, m: rm.Market) -> MarketSpec:
        return cls(
            ticker=m.ticker, grid_name=m.price_level_structure or LINEAR_CENT.name,
            ranges=tuple(m.price_ranges), volume_24h=int(m.volume_24h), open_interest=int(m.open_interest),
        )


def activity_key(m: rm.Market) -> tuple[int, int, int, int, str]:
    """Sort key, most active first (negated counts); the ticker breaks ties deterministically."""
    return (-int(m.volume_24h), -int(m.open_interest), -int(m.volume), -int(m.liquidity), m.ticker)


def rank(markets: Iterable[rm.Market], top_n: int) -> list[MarketSpec]:
    """The ``top_n`` most active open markets (all of them when ``top_n`` <= 0)."""
    open_ones = [m for m in markets if m.status in _OPEN_STATUSES]
    open_ones.sort(key=activity_key)
    chosen = open_ones if top_n <= 0 else open_ones[:top_n]
    return [MarketSpec.from_market(m) for m in chosen]


def shard(specs: Sequence[MarketSpec], per_collector: int) -> list[list[MarketSpec]]:
    """Deal markets round-robin (in rank order) over ceil(N / per_collector) shards."""
    if per_collector <= 0:
        raise ValueError(f"markets_per_collector must be positive, got {per_collector}")
    if not specs:
        return []
    n = math.ceil(len(specs) / per_collector)
    return [list(specs[i::n]) for i in range(n)]


def assign(
    new: Sequence[MarketSpec], loads: Mapping[str, int], per_collector: int
) -> tuple[dict[str, list[MarketSpec]], list[list[MarketSpec]]]:
    """Place markets added at runtime: fill the least-loaded collectors that have room, in order,
    then open new shards for the rest. Returns ({collector id: specs}, [specs per new shard])."""
    room = {cid: per_collector - load for cid, load in loads.items()}
    placed: dict[str, list[MarketSpec]] = {}
    rest: list[MarketSpec] = []
    for spec in new:
        candidates = [cid for cid, free in room.items() if free > 0]
        if not candidates:
            rest.append(spec)
            continue
        cid = max(candidates, key=lambda c: (room[c], c))
        room[cid] -= 1
        placed.setdefault(cid, []).append(spec)
    return placed, shard(rest, per_collector)


async def discover(rest: KalshiRestClient, top_n: int, *, page_size: int = 1000) -> list[rm.Market]:
    """Open markets ranked by activity, top ``top_n`` (turn them into specs with MarketSpec.from_market)."""
    markets = [m async for m in rest.iter_markets(page_size=page_size, status="open")]
    markets = [m for m in markets if m.status in _OPEN_STATUSES]
    markets.sort(key=activity_key)
    chosen = markets if top_n <= 0 else markets[:top_n]
    log.info("discovered %d open markets, collecting the top %d", len(markets), len(chosen))
    return chosen


async def fetch_markets(rest: KalshiRestClient | None, tickers: Sequence[str]) -> dict[str, rm.Market]:
    """REST's view of these markets (those it knows); empty when REST is unreachable."""
    found: dict[str, rm.Market] = {}
    wanted = list(dict.fromkeys(tickers))
    if rest is None:
        return found
    for i in range(0, len(wanted), _TICKERS_PER_REQUEST):
        chunk = wanted[i : i + _TICKERS_PER_REQUEST]
        try:
            page = await rest.get_markets(tickers=chunk, limit=len(chunk))
        except KalshiError as err:
            log.warning("GET /markets for %d tickers failed (%s)", len(chunk), err)
            continue
        found.update((m.ticker, m) for m in page.markets)
    return found


def specs_for(tickers: Sequence[str], found: Mapping[str, rm.Market]) -> list[MarketSpec]:
    """Specs in the given order. A ticker REST does not know falls back to the 1-cent grid:
    better to collect it (the exchange refuses unknown markets at subscribe) than to refuse."""
    return [MarketSpec.from_market(found[t]) if t in found else MarketSpec(ticker=t)
            for t in dict.fromkeys(tickers)]


async def describe(rest: KalshiRestClient | None, tickers: Sequence[str]) -> list[MarketSpec]:
    """Specs for explicit tickers (grids from REST)."""
    return specs_for(tickers, await fetch_markets(rest, tickers))


async def closed_markets(rest: KalshiRestClient, tickers: Sequence[str]) -> list[str]:
    """Those of ``tickers`` whose REST status says they closed (Kalshi announces no lifecycle
    event for active -> closed, so collectors poll for it)."""
    closed: list[str] = []
    wanted = list(dict.fromkeys(tickers))
    for i in range(0, len(wanted), _TICKERS_PER_REQUEST):
        chunk = wanted[i : i + _TICKERS_PER_REQUEST]
        page = await rest.get_markets(tickers=chunk, limit=len(chunk))
        closed.extend(m.ticker for m in page.markets if m.status in CLOSED_STATUSES)
    return closed
