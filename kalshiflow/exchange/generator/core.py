"""MarketGenerator: a discrete-event simulation of many synthetic Kalshi markets.

One heap of (time, seq, kind, market, arg) drives everything; ``advance(t)`` pops events in time
order, sets the simulated clock to each event's time and lets the market's agents act through the
exchange. ``seq`` breaks ties in insertion order, so the run is a pure function of
(config, seed, start time, the external orders and the times they arrive): no wall clock, no
global random state, and one random stream per market and purpose (see schedule.derive_seed).

Per market, the agents' activity is one merged Poisson stream whose rate is
``activity x sum(base rates) x burst(t)``; each arrival picks an action in proportion to its
base rate. A latent jump raises ``burst`` (decaying), and the makers and the informed trader
react after random latencies, which produces the bursts and stale-quote races of live books.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
import uuid
from collections.abc import Callable

from kalshiflow.exchange.events import ExchangeEvent, FillEvent, MarketInfo
from kalshiflow.exchange.generator.agents import MM_OWNER, MarketAgents, bot_accounts
from kalshiflow.exchange.generator.config import GeneratorConfig, TierConfig
from kalshiflow.exchange.generator.latent import LatentProcess
from kalshiflow.exchange.generator.port import ExchangePort, SimClock
from kalshiflow.exchange.generator.schedule import (
    STREAM_AGENTS,
    STREAM_JUMP,
    STREAM_PLAN,
    STREAM_RESULT,
    STREAM_STEP,
    MarketPlan,
    derive_seed,
    plan_market,
)
from kalshiflow.exchange.state import ExchangeState
from kalshiflow.market.prices import grid_by_name, parse_money

# Event kinds. Lower numbers first at equal times only through seq (insertion order).
LIST, OPEN, ACTIVITY, JUMP, MM_QUOTE, INFORMED, EXPIRE, CLOSE, SETTLE = range(9)
_ACTIONS = ("mm_check", "mm_flicker", "noise_take", "noise_limit", "informed", "deep")


class MarketRuntime:
    """Everything the generator keeps about one listed market."""

    __slots__ = ("plan", "tier", "latent", "agents", "rng", "status", "generation", "burst_t", "rates",
                 "total_rate", "result", "requote_pending")

    def __init__(self, plan: MarketPlan, tier: TierConfig, latent: LatentProcess, agents: MarketAgents,
                 rng: random.Random, rates: list[float]) -> None:
        self.plan, self.tier, self.latent, self.agents, self.rng = plan, tier, latent, agents, rng
        self.status = "listed"  # listed -> open -> closed -> settled
        self.generation = 0  # bumps invalidate a pending ACTIVITY event (rate changed)
        self.burst_t = -math.inf
        self.rates = rates
        self.total_rate = sum(rates)
        self.result: bool | None = None
        self.requote_pending: set[int] = set()  # MMs with a requote already scheduled


class MarketGenerator:
    """Synthetic markets on an :class:`ExchangeState`.

    ``state.clock`` should be a :class:`SimClock` (the generator sets it to each event's time);
    ``start`` defaults to the clock's current time. Nothing happens until ``advance``/``run``.
    """

    def __init__(self, config: GeneratorConfig, state: ExchangeState, seed: int, *,
                 start: float | None = None) -> None:
        self.cfg = config
        self.state = state
        self.seed = seed
        self.port = ExchangePort(state)
        clock = state.clock
        self._set_time: Callable[[float], None] | None = clock.set if isinstance(clock, SimClock) else None
        self.start = float(clock() if start is None else start)
        self.now = self.start
        self.grid = grid_by_name(config.markets.price_level_structure)
        self.tiers = {t.name: t for t in config.tiers}
        self.markets: dict[int, MarketRuntime] = {}
        self.by_ticker: dict[str, MarketRuntime] = {}
        self.results: dict[str, bool] = {}  # settled ticker -> True (YES) / False (NO)
        self._heap: list[tuple[float, int, int, int, object]] = []
        self._seq = 0
        self._next_index = 0
        self.events_processed = 0
        balance = parse_money(config.markets.bot_balance_dollars)
        max_mms = max(t.market_makers for t in config.tiers)
        for owner in bot_accounts(max_mms):
            self.port.add_bot(owner, balance)
        self._mm_index = {MM_OWNER.format(i): i for i in range(max_mms)}
        self._remove_listener = state.add_listener(self._on_event)
        for _ in range(config.markets.count):
            index = self._next_index
            self._next_index += 1
            stagger = config.schedule.open_stagger_s
            rng = random.Random(derive_seed(seed, index, STREAM_PLAN) ^ 1)
            delay = rng.uniform(0, stagger) if stagger else 0.0
            self._push(self.start, LIST, index, self.start + delay)

    # ------------------------------------------------------------------ public API

    def advance(self, to: float) -> int:
        """Process every event with time <= `to`, in time order; returns how many ran."""
        heap = self._heap
        n = 0
        while heap and heap[0][0] <= to:
            t, _, kind, index, arg = heapq.heappop(heap)
            self.now = t
            if self._set_time is not None:
                self._set_time(t)
            self._dispatch(t, kind, index, arg)
            n += 1
        if to > self.now:
            self.now = to
            if self._set_time is not None:
                self._set_time(to)
        self.events_processed += n
        return n

    def next_event_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    async def run(self, speed: float = 1.0, *, stop: asyncio.Event | None = None,
                  tick_s: float = 0.05, wall: Callable[[], float] = time.monotonic) -> None:
        """Advance in step with the wall clock at `speed` simulated seconds per wall second,
        until `stop` is set. The wall clock only paces; event times stay simulated."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0 simulated seconds per wall second, not {speed}")
        wall0, sim0 = wall(), self.now
        while stop is None or not stop.is_set():
            self.advance(sim0 + (wall() - wall0) * speed)
            nxt = self.next_event_time()
            wait = tick_s if nxt is None else min(tick_s, max(0.0, (nxt - self.now) / speed))
            await asyncio.sleep(wait)

    def detach(self) -> None:
        """Stop listening to the state (the bots' resting orders stay until their markets close)."""
        self._remove_listener()
        self.port.detach()

    def active_tickers(self) -> list[str]:
        return [m.plan.ticker for m in self.markets.values() if m.status == "open"]

    def latent_value(self, ticker: str) -> float:
        """The market's latent probability now (tests and diagnostics; a trader never sees it)."""
        return self.by_ticker[ticker].latent.value(self.now)

    # ------------------------------------------------------------------ internals

    def _push(self, t: float, kind: int, index: int, arg: object = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, index, arg))

    def _dispatch(self, t: float, kind: int, index: int, arg: object) -> None:
        if kind == LIST:
            assert isinstance(arg, float)
            self._list(t, index, arg)
            return
        m = self.markets.get(index)
        if m is None:
            return  # settled and forgotten; a stale expiry or requote
        if kind == OPEN:
            self._open(t, m)
        elif m.status != "open":
            if kind == SETTLE:
                self._settle(t, m)
        elif kind == ACTIVITY:
            if arg == m.generation:
                self._activity(t, m)
        elif kind == MM_QUOTE:
            assert isinstance(arg, int)
            m.requote_pending.discard(arg)
            m.agents.mm_quote(t, arg)
        elif kind == INFORMED:
            m.agents.informed_check(t)
        elif kind == EXPIRE:
            assert isinstance(arg, tuple)
            owner, order_id = arg
            if self.port.remaining(order_id):
                self.port.cancel(owner, order_id)
        elif kind == JUMP:
            self._jump(t, m)
        elif kind == CLOSE:
            self._close(t, m)

    def _list(self, t: float, index: int, open_time: float) -> None:
        cfg = self.cfg
        plan = plan_market(cfg, self.seed, index, open_time)
        tier = self.tiers[plan.tier]
        latent = LatentProcess(
            cfg.latent, cfg.markets.scenario, plan.open_time, plan.close_time, plan.x0,
            derive_seed(self.seed, index, STREAM_STEP), derive_seed(self.seed, index, STREAM_JUMP),
            derive_seed(self.seed, index, STREAM_RESULT),
        )
        rng = random.Random(derive_seed(self.seed, index, STREAM_AGENTS))
        agents = MarketAgents(cfg, plan, tier, latent, self.port, rng, self.grid)
        a = cfg.activity
        base = [a.mm_check_per_s, a.mm_flicker_per_s, a.noise_take_per_s, a.noise_limit_per_s,
                a.informed_check_per_s, a.deep_refresh_per_s]
        rates = [r * plan.activity for r in base]
        m = MarketRuntime(plan, tier, latent, agents, rng, rates)
        self.markets[index] = m
        self.by_ticker[plan.ticker] = m
        self.port.list_market(MarketInfo(
            ticker=plan.ticker, event_ticker=plan.event_ticker, series_ticker=plan.series_ticker,
            # A seeded id: market_id is part of the event stream that must be reproducible.
            market_id=str(uuid.UUID(int=plan.stream_seed(STREAM_PLAN) << 64 | index, version=4)),
            title=plan.title, subtitle=f"tier {plan.tier}", open_time=plan.open_time,
            close_time=plan.close_time, price_level_structure=self.grid.name,
            fee_type=cfg.markets.fee_type, category="Simulated",
            rules_primary="Settles YES with the probability of the market's hidden latent value at close.",
        ))
        self._push(max(t, plan.open_time), OPEN, index)

    def _open(self, t: float, m: MarketRuntime) -> None:
        self.port.open(m.plan.ticker)
        m.status = "open"
        m.agents.deep_sync(t)
        for i in range(m.agents.n_mm):
            m.agents.mm_quote(t, i)
        index = m.plan.index
        self._push(m.plan.close_time, CLOSE, index)
        if self.cfg.markets.scenario == "static":
            return  # a frozen book: quotes posted once, nothing else moves until close
        self._schedule_activity(t, m)
        if m.latent.next_jump_time < math.inf:
            self._push(m.latent.next_jump_time, JUMP, index)

    def _burst(self, t: float, m: MarketRuntime) -> float:
        a = self.cfg.activity
        age = t - m.burst_t
        if age > 20 * a.burst_half_life_s:
            return 1.0
        return 1.0 + a.burst_boost * 0.5 ** (age / a.burst_half_life_s)

    def _schedule_activity(self, t: float, m: MarketRuntime) -> None:
        rate = m.total_rate * self._burst(t, m)
        if rate <= 0:
            return
        self._push(t + m.rng.expovariate(rate), ACTIVITY, m.plan.index, m.generation)

    def _activity(self, t: float, m: MarketRuntime) -> None:
        u = m.rng.random() * m.total_rate
        action = len(m.rates) - 1
        for k, r in enumerate(m.rates):
            if u < r:
                action = k
                break
            u -= r
        agents = m.agents
        name = _ACTIONS[action]
        if name == "mm_check":
            agents.mm_quote(t, m.rng.randrange(agents.n_mm))
        elif name == "mm_flicker":
            agents.mm_flicker(t)
        elif name == "noise_take":
            agents.noise_take(t)
        elif name == "noise_limit":
            placed = agents.noise_limit(t)
            if placed is not None:
                life = m.rng.expovariate(1.0 / self.cfg.noise.limit_life_mean_s)
                self._push(t + life, EXPIRE, m.plan.index, placed)
        elif name == "informed":
            agents.informed_check(t)
        else:
            agents.deep_refresh(t)
        self._schedule_activity(t, m)

    def _requote_soon(self, t: float, m: MarketRuntime, i: int) -> None:
        """MM i requotes after its reaction latency (once: a pending requote covers later news)."""
        if i not in m.requote_pending:
            m.requote_pending.add(i)
            delay = m.rng.expovariate(1.0 / self.cfg.market_maker.latency_s)
            self._push(t + delay, MM_QUOTE, m.plan.index, i)

    def _on_event(self, ev: ExchangeEvent) -> None:
        """A maker fill (by a bot or by a user) makes that MM refill, as a real MM reacts to its
        fill feed. Only schedules: listeners must not call back into the state."""
        if type(ev) is FillEvent and not ev.is_taker:
            i = self._mm_index.get(ev.owner)
            m = self.by_ticker.get(ev.ticker) if i is not None else None
            if m is not None and i is not None and i < m.agents.n_mm and m.status == "open":
                self._requote_soon(max(ev.ts, self.now), m, i)

    def _jump(self, t: float, m: MarketRuntime) -> None:
        m.latent.value(t)  # applies the jump scheduled at t
        m.burst_t = t
        m.generation += 1  # the activity rate just rose: redraw the next arrival
        self._schedule_activity(t, m)
        for i in range(m.agents.n_mm):
            self._requote_soon(t, m, i)
        self._push(t + m.rng.expovariate(1.0 / self.cfg.informed.latency_s), INFORMED, m.plan.index)
        if m.latent.next_jump_time < math.inf:
            self._push(m.latent.next_jump_time, JUMP, m.plan.index)

    def _close(self, t: float, m: MarketRuntime) -> None:
        self.port.close(m.plan.ticker)
        m.status = "closed"
        self._push(t + self.cfg.schedule.settle_delay_s, SETTLE, m.plan.index)

    def _settle(self, t: float, m: MarketRuntime) -> None:
        m.result = m.latent.settle()
        self.port.settle(m.plan.ticker, m.result)
        m.status = "settled"
        self.results[m.plan.ticker] = m.result
        # Forget the runtime so a long relisting run does not grow without bound.
        del self.markets[m.plan.index]
        del self.by_ticker[m.plan.ticker]
        if self.cfg.markets.relist:
            index = self._next_index
            self._next_index += 1
            opens = t + self.cfg.schedule.relist_delay_s
            self._push(t, LIST, index, opens)
