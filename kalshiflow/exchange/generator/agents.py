"""The participants of one synthetic market: market makers, noise traders, an informed trader
and a deep-tail liquidity provider. Each is an ordinary exchange account trading through the port.

Who does what (and why it looks like Kalshi, reference/kalshi-protocol.md §5):
- Market makers quote bid ladders on both sides around the latent value, skewed by inventory,
  at the market's tier spread; they keep orders that are still wanted (queue priority, fewer
  deltas) and churn sizes ("flicker"), which is where most real deltas come from.
- Noise takers cross the spread in random directions with log-normal sizes; noise makers rest
  passive orders near the touch (about 2/3 within 3 ticks) that expire after a random life.
- The informed trader knows the latent value and takes quotes that are stale by more than its
  threshold: after a jump it races the makers, which is where adverse selection comes from.
- The deep account keeps thousands of contracts at 1-5c on both ladders and pulls a level when
  the latent value comes near it, as real tail liquidity does.

Prices are exact grid ticks; sizes are Qty (hundredths). Probabilities are floats.
"""

from __future__ import annotations

import bisect
import math
import random

from kalshiflow.exchange.generator.config import GeneratorConfig, TierConfig
from kalshiflow.exchange.generator.latent import LatentProcess
from kalshiflow.exchange.generator.port import ExchangePort
from kalshiflow.exchange.generator.schedule import MarketPlan
from kalshiflow.market.prices import CENT, PRICE_SCALE, QTY_SCALE, PriceGrid
from kalshiflow.market.types import Side

S = PRICE_SCALE
SIDES = (Side.YES, Side.NO)

MM_OWNER = "sim-mm-{}"
NOISE_TAKER = "sim-noise-taker"
NOISE_MAKER = "sim-noise-maker-{}"
NOISE_MAKERS = 8  # passive noise is spread over accounts: the venue's collateral check is per account
INFORMED = "sim-informed"
DEEP = "sim-deep"


def bot_accounts(max_mms: int) -> list[str]:
    return ([MM_OWNER.format(i) for i in range(max_mms)] + [NOISE_TAKER, INFORMED, DEEP]
            + [NOISE_MAKER.format(k) for k in range(NOISE_MAKERS)])


class GridMath:
    """Snapping float prices (ticks) onto a grid, and stepping along it."""

    __slots__ = ("grid", "prices", "lo", "hi")

    def __init__(self, grid: PriceGrid) -> None:
        self.grid = grid
        self.prices = grid.prices
        self.lo, self.hi = grid.prices[0], grid.prices[-1]

    def down(self, ticks: float) -> int | None:
        """Largest grid price <= ticks, or None below the grid."""
        i = bisect.bisect_right(self.prices, ticks) - 1
        return self.prices[i] if i >= 0 else None

    def step(self, price: int, n: int) -> int | None:
        """The grid price n levels away (n < 0: lower), or None off the grid."""
        i = self.grid.level(price) + n
        return self.prices[i] if 0 <= i < len(self.prices) else None


class MarketAgents:
    """Agent state and decisions of one market. The generator calls these at event times; each
    returns how much traded so the generator can schedule the makers' refill."""

    def __init__(self, cfg: GeneratorConfig, plan: MarketPlan, tier: TierConfig, latent: LatentProcess,
                 port: ExchangePort, rng: random.Random, grid: PriceGrid) -> None:
        self.cfg, self.plan, self.tier, self.latent, self.port, self.rng = cfg, plan, tier, latent, port, rng
        self.ticker = plan.ticker
        self.g = GridMath(grid)
        self.n_mm = tier.market_makers
        self.mm_owner = [MM_OWNER.format(i) for i in range(self.n_mm)]
        # Per MM: (ladder index, price) -> [order ids]; and the touch it last quoted.
        self.mm_orders: list[dict[tuple[int, int], list[str]]] = [{} for _ in range(self.n_mm)]
        self.mm_target: list[dict[tuple[int, int], int]] = [{} for _ in range(self.n_mm)]
        self.mm_touch: list[tuple[int, int] | None] = [None] * self.n_mm
        self.deep_orders: dict[tuple[int, int], str] = {}

    # ------------------------------------------------------------------ helpers

    def _size(self, median: float, sigma: float, fractional: float = 0.0) -> int:
        contracts = max(1.0, median * math.exp(self.rng.gauss(0.0, sigma)))
        qty = int(contracts) * QTY_SCALE
        if fractional and self.rng.random() < fractional:
            qty += self.rng.randint(1, QTY_SCALE - 1)  # Kalshi fractional counts, e.g. "31.54"
        return qty

    def _other_best(self, li: int) -> int | None:
        return self.port.book(self.ticker).best_bid(SIDES[1 - li])

    # ------------------------------------------------------------------ market makers

    def mm_quote(self, t: float, i: int) -> None:
        """Re-evaluate MM i's ladders against the latent value and its inventory."""
        p = self.latent.value(t)
        self.deep_sync(t, p)
        mm = self.cfg.market_maker
        owner = self.mm_owner[i]
        inventory = self.port.position(owner, self.ticker) / QTY_SCALE  # contracts, + = long YES
        reservation = p - mm.skew_cents_per_100 * inventory / 100.0 / 100.0
        spread = (self.plan.spread_cents + i * mm.extra_spread_ticks) * CENT
        lo = self.g.lo
        yes_bid = round((reservation * S - spread / 2) / CENT) * CENT
        yes_bid = max(lo, min(S - lo - spread, yes_bid))
        yes_bid = self.g.down(yes_bid) or lo
        no_bid = self.g.down(S - yes_bid - spread) or lo
        touch = (yes_bid, no_bid)
        old = self.mm_touch[i]
        threshold = mm.requote_threshold_ticks * CENT
        if old is not None and abs(old[0] - yes_bid) < threshold and abs(old[1] - no_bid) < threshold:
            touch = old  # hysteresis: small moves keep the queue position
        self.mm_touch[i] = touch
        desired: dict[tuple[int, int], int] = {}
        targets = self.mm_target[i]
        for li, best in enumerate(touch):
            # Inventory cap: stop buying more of the side already held.
            if (li == 0 and inventory >= mm.max_inventory) or (li == 1 and -inventory >= mm.max_inventory):
                continue
            for k in range(self.tier.quote_levels):
                price = self.g.step(best, -k * mm.level_gap_ticks)
                if price is None:
                    break
                key = (li, price)
                desired[key] = targets.get(key) or self._size(
                    self.tier.quote_size_median * (1 + 0.5 * k), self.tier.quote_size_sigma)
        self._reconcile(i, desired)

    def _reconcile(self, i: int, desired: dict[tuple[int, int], int]) -> None:
        orders, targets, owner = self.mm_orders[i], self.mm_target[i], self.mm_owner[i]
        port, ticker = self.port, self.ticker
        # Cancels first so the new quotes never meet this MM's stale ones.
        for key in [k for k in orders if k not in desired]:
            for oid in orders.pop(key):
                port.cancel(owner, oid)
            targets.pop(key, None)
        book = port.book(ticker)
        for key, target in desired.items():
            ids = [oid for oid in orders.get(key, ()) if port.remaining(oid)]
            have = sum(port.remaining(oid) for oid in ids)
            targets[key] = target
            if have * 10 >= target * 3:  # >= 30% left: keep the queue place
                orders[key] = ids
                continue
            li, price = key
            opp = book.best_bid(SIDES[1 - li])
            if opp is not None and opp + price >= S:
                orders[key] = ids  # would take: a maker never crosses (and post_only enforces it)
                continue
            placed = port.buy(owner, ticker, SIDES[li], price, target - have, post_only=True)
            if placed.order_id is not None:
                ids.append(placed.order_id)
            orders[key] = ids

    def mm_flicker(self, t: float) -> None:
        """Resize one resting MM level (cancel + repost): the constant size churn of real books."""
        i = self.rng.randrange(self.n_mm)
        orders = self.mm_orders[i]
        if not orders:
            return
        key = self.rng.choice(sorted(orders))
        for oid in orders.pop(key):
            self.port.cancel(self.mm_owner[i], oid)
        li, price = key
        k = 0
        touch = self.mm_touch[i]
        if touch is not None:
            k = max(0, (touch[li] - price) // CENT)
        size = self._size(self.tier.quote_size_median * (1 + 0.5 * k), self.tier.quote_size_sigma)
        self.mm_target[i][key] = size
        opp = self._other_best(li)
        if opp is not None and opp + price >= S:
            self.mm_orders[i][key] = []
            return
        placed = self.port.buy(self.mm_owner[i], self.ticker, SIDES[li], price, size, post_only=True)
        self.mm_orders[i][key] = [placed.order_id] if placed.order_id else []

    # ------------------------------------------------------------------ noise

    def noise_take(self, t: float) -> int:
        """Cross the spread in a random direction; returns the quantity traded."""
        cfg = self.cfg.noise
        side = SIDES[self.rng.random() < 0.5]
        ask = self.port.book(self.ticker).best_ask(side)
        if ask is None:
            return 0
        limit = self.g.step(ask, cfg.take_levels) or self.g.hi
        size = self._size(cfg.size_median, cfg.size_sigma, cfg.fractional_share)
        return self.port.buy(NOISE_TAKER, self.ticker, side, limit, size, ioc=True).filled

    def noise_limit(self, t: float) -> tuple[str, str] | None:
        """Rest a passive order near the touch; returns (owner, order_id) for its expiry."""
        cfg = self.cfg.noise
        li = int(self.rng.random() < 0.5)
        side = SIDES[li]
        book = self.port.book(self.ticker)
        best = book.best_bid(side)
        if best is None:
            p = self.latent.value(t)
            best = self.g.down((p if li == 0 else 1 - p) * S - self.plan.spread_cents * CENT) or self.g.lo
        # Geometric distance behind the touch (mean limit_depth_mean_ticks).
        q = 1.0 / (1.0 + cfg.limit_depth_mean_ticks)
        depth = int(math.log(1.0 - self.rng.random()) / math.log(1.0 - q)) if q < 1 else 0
        price = self.g.step(best, -depth)
        if price is None:
            return None
        opp = book.best_bid(SIDES[1 - li])
        if opp is not None and opp + price >= S:
            return None
        owner = NOISE_MAKER.format(self.rng.randrange(NOISE_MAKERS))
        size = self._size(cfg.size_median, cfg.size_sigma, cfg.fractional_share)
        placed = self.port.buy(owner, self.ticker, side, price, size, post_only=True)
        return None if placed.order_id is None else (owner, placed.order_id)

    # ------------------------------------------------------------------ informed

    def informed_check(self, t: float) -> int:
        """Take every level mispriced by more than the threshold vs the latent value."""
        cfg = self.cfg.informed
        p = self.latent.value(t)
        book = self.port.book(self.ticker)
        thr = cfg.threshold_cents * CENT
        traded = 0
        for li, fair in ((0, p * S), (1, (1 - p) * S)):
            side = SIDES[li]
            ask = book.best_ask(side)
            if ask is None or fair - ask <= thr:
                continue
            limit = self.g.down(fair - thr)
            if limit is None:
                continue
            available = sum(size for q, size in book.depth(SIDES[1 - li], 20) if S - q <= limit)
            count = min(available, cfg.max_size * QTY_SCALE)
            if count > 0:
                traded += self.port.buy(INFORMED, self.ticker, side, limit, count, ioc=True).filled
        return traded

    # ------------------------------------------------------------------ deep tails

    def deep_sync(self, t: float, p: float | None = None) -> None:
        """Keep 1-5c tail bids on both ladders, pulled while the latent value is near them."""
        if p is None:
            p = self.latent.value(t)
        cfg = self.cfg.deep
        margin = cfg.margin_cents * CENT
        for li, fair in ((0, p * S), (1, (1 - p) * S)):
            for cents in cfg.prices_cents:
                price = cents * CENT
                key = (li, price)
                want = price <= fair - margin and self.g.grid.is_valid(price)
                oid = self.deep_orders.get(key)
                if oid is not None and not self.port.remaining(oid):
                    del self.deep_orders[key]  # traded away: re-posted below if still wanted
                    oid = None
                if want and oid is None:
                    opp = self._other_best(li)
                    if opp is not None and opp + price >= S:
                        continue
                    size = self._size(cfg.size_median, cfg.size_sigma)
                    placed = self.port.buy(DEEP, self.ticker, SIDES[li], price, size, post_only=True)
                    if placed.order_id is not None:
                        self.deep_orders[key] = placed.order_id
                elif not want and oid is not None:
                    self.port.cancel(DEEP, oid)
                    del self.deep_orders[key]

    def deep_refresh(self, t: float) -> None:
        """Occasionally resize one tail level (rare, large deltas far from the touch)."""
        if not self.deep_orders:
            return
        key = self.rng.choice(sorted(self.deep_orders))
        self.port.cancel(DEEP, self.deep_orders.pop(key))
        self.deep_sync(t)
