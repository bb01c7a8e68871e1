"""The trader's decision pipeline, pure: book update -> observation + mask -> action -> order commands.

Per market (see docs/trading.md for the whole path):

1. ``on_update``: the collector's book update goes into the market's :class:`MarketFeed` -- the
   RL env's own live path (kalshiflow.rl.compiled.StreamFeed), so the observation is the training one.
2. ``due``: a market is decided at most once per ``decision_interval_s`` of exchange time (the
   cadence the model was trained at), promptly when its book changes and on the clock otherwise
   (the env decides on a clock too); a wall-clock token bucket caps decisions per second overall
   so a burst cannot swamp the PolicyServer. Oldest-decided markets go first. Each market's
   clock has its own phase within the interval (its first decision waits for it), so markets
   added together do not all decide, and order, in the same instant of every interval: the
   risk gate's order rate would refuse most of such a burst.
3. ``prepare``: the :class:`~kalshiflow.rl.features.Observer` of the model's schema builds the
   features and the action mask from the feed and the market's :class:`AccountView`. When the mask
   allows nothing but HOLD the answer is known and the policy is not asked.
4. ``decide``: the action becomes an :class:`~kalshiflow.trading.risk.OrderIntent` priced from the
   book top the policy saw (``ActionTable.request``, exactly as the env prices it), and the
   :class:`~kalshiflow.trading.risk.RiskGate` answers. Only its approval becomes a
   :class:`~kalshiflow.trading.orders.PlaceOrder`; ``cancel_all`` becomes cancels of the market's
   open orders. Everything is recorded as a :class:`DecisionRecord` (HOLDs and refusals too).

The account the policy sees for one market mirrors an env episode: ``reference_cash`` is the
env's ``starting_cash`` (the features' capital scale), and the market's cash is that budget
minus what its position cost, plus its realised PnL, minus its fees and the collateral of its
resting orders -- never more than the account's real available cash.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

import msgspec
import numpy as np

from kalshiflow.market.types import TimeInForce
from kalshiflow.rl.actions import DEFAULT_SIZES, AccountView, ActionKind, ActionTable, CancelAll
from kalshiflow.rl.features import Observer
from kalshiflow.trading import PortfolioView
from kalshiflow.trading.feed import BookUpdate, Levels, MarketFeed, MarketMeta
from kalshiflow.trading.orders import CancelOrder, ClientOrderIds, OrderCommand, OrderTracker, PlaceOrder
from kalshiflow.trading.risk import BookStatus, OrderIntent, RiskGate, RiskState

# Successive multiples of the golden ratio, mod 1, stay evenly spread for any count: the phases
# of markets added one after another.
_GOLDEN = 0.6180339887498949

__all__ = ["Candidate", "DecisionEngine", "DecisionRecord", "DecisionSettings", "Outcome", "TokenBucket",
           "observation_hash"]


class DecisionSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The schema (sizes, max_position: must be the served model's) and the cadence."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    max_position: int = 50  # contracts per side, as in EnvConfig
    stale_after_s: float = 300.0  # EnvConfig.stale_after_s: the mask's own staleness rule
    reference_cash: int = 1000 * 1_000_000  # Money: EnvConfig.starting_cash
    decision_interval_s: float = 5.0  # exchange seconds between decisions of one market
    max_decisions_per_s: float = 500.0  # wall clock, all markets together
    account: str = "paper"


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``trader_decisions`` (every decision, HOLDs and refusals included)."""

    decision_id: str
    ts_ns: int  # wall clock
    ticker: str
    observation_hash: str
    action: str
    model_version: str | None
    verdict: str  # hold | allowed | rejected | cancel | unavailable | error
    reason: str
    latency_us: int  # update applied -> verdict (policy round trip included)
    client_order_id: str | None = None


class Candidate(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A prepared decision waiting for the policy's answer."""

    decision_id: str
    ticker: str
    now: float  # exchange seconds the observation is taken at
    obs: np.ndarray  # float32 (n_features,)
    mask: np.ndarray  # float32 (n_actions,)
    obs_hash: str
    yes_bid: int  # the book top the policy sees (orders are priced from it)
    no_bid: int
    received_ns: int  # when the collector received the newest frame behind this observation
    started_ns: int  # monotonic ns when prepared
    forced: int | None = None  # the action when the mask leaves no choice (policy not asked)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    record: DecisionRecord
    commands: tuple[OrderCommand, ...] = ()
    risk_actions: tuple[object, ...] = ()  # CancelAll / Flatten the gate triggered (loss stop)


def observation_hash(obs: np.ndarray) -> str:
    """Short stable id of the exact float32 observation (audit trail; parity checks)."""
    return hashlib.blake2b(np.ascontiguousarray(obs, np.float32).tobytes(), digest_size=8).hexdigest()


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; time is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float, n: int = 1) -> int:
        """Take up to ``n`` tokens; returns how many were available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        got = min(n, int(self.tokens))
        self.tokens -= got
        return got


class DecisionEngine:
    """Feeds, cadence, observation, action -> commands (see the module docstring)."""

    def __init__(self, settings: DecisionSettings, gate: RiskGate, tracker: OrderTracker, *,
                 wall_now: float = 0.0) -> None:
        self.settings = settings
        self.table = ActionTable(tuple(settings.sizes))
        self.observer = Observer(self.table, settings.max_position, settings.stale_after_s)
        self.schema_hash = self.observer.schema_hash
        self.gate = gate
        self.tracker = tracker
        self.ids: ClientOrderIds = tracker.ids
        self.feeds: dict[str, MarketFeed] = {}
        self.last_decided: dict[str, float] = {}  # exchange time of the market's last decision
        self.phase: dict[str, float] = {}  # the market's decision phase in the interval (seconds)
        self.first_due: dict[str, float] = {}  # exchange time of a new market's first decision
        self._added = 0
        self.fresh: set[str] = set()  # markets updated since the last ``due`` call
        self.live_at: dict[str, float] = {}  # wall time the market's book was last known good
        rate = settings.max_decisions_per_s
        self.bucket = TokenBucket(rate, max(1.0, rate), wall_now)

    # ------------------------------------------------------------------ markets and updates

    def add_market(self, meta: MarketMeta) -> MarketFeed:
        feed = self.feeds.get(meta.ticker)
        if feed is None:
            feed = self.feeds[meta.ticker] = MarketFeed(meta)
            self.phase[meta.ticker] = (self._added * _GOLDEN) % 1.0 * self.settings.decision_interval_s
            self._added += 1
        return feed

    def on_update(self, u: BookUpdate, wall: float) -> bool:
        feed = self.feeds.get(u.ticker)
        if feed is None or not feed.apply(u):
            return False
        self.fresh.add(u.ticker)
        if u.valid:
            self.live_at[u.ticker] = wall
        return True

    def retire(self, now: float, grace_s: float = 300.0) -> list[str]:
        """Forget markets closed for ``grace_s`` (exchange time) with no order of ours left open:
        nothing more can be decided there, and a long run keeps listing new ones."""
        gone = [t for t, f in self.feeds.items()
                if now > f.meta.close_time + grace_s and not self.tracker.open_orders(t)]
        for t in gone:
            del self.feeds[t]
            self.last_decided.pop(t, None)
            self.phase.pop(t, None)
            self.first_due.pop(t, None)
            self.live_at.pop(t, None)
            self.fresh.discard(t)
        return gone

    def shallow(self, tickers: Iterable[str]) -> list[str]:
        """Of these markets, those whose valid book is not known as deep as the observation reads
        (``MarketFeed.depth_complete``): the ladders to fetch from the collector before observing
        them. Collectors send that many levels with every update."""
        feeds = self.feeds
        return [t for t in tickers
                if (f := feeds.get(t)) is not None and not f.depth_complete and f.state.valid]

    def present(self, tickers: Iterable[str]) -> list[str]:
        """Those still traded: a cycle that awaited (ladders, the policy) may find a market retired."""
        return [t for t in tickers if t in self.feeds]

    def deepen(self, ladders: dict[str, tuple[Levels, Levels]]) -> None:
        for t, (yes, no) in ladders.items():
            feed = self.feeds.get(t)
            if feed is not None:
                feed.deepen(yes, no)

    def confirm_live(self, tickers: Iterable[str], wall: float) -> None:
        """The collector of these markets is connected: their valid books are current."""
        for t in tickers:
            feed = self.feeds.get(t)
            if feed is not None and feed.state.valid:
                self.live_at[t] = wall

    def confirm_lost(self, tickers: Iterable[str]) -> None:
        """The collector of these markets is disconnected: their books are not known to be current
        (the next update from a reconnected collector makes them live again)."""
        for t in tickers:
            if t in self.live_at:
                self.live_at[t] = 0.0

    def due(self, now: float, wall: float, *, on_change_only: bool = False) -> list[str]:
        """Markets to decide now (cadence + rate limit), oldest decision first.

        ``on_change_only``: just the markets updated since the last call (a change that came too
        soon after the market's last decision waits for the clock sweep, or for the next change:
        so a decision on change always answers the update that triggered it)."""
        dt = self.settings.decision_interval_s
        last, first_due, phase = self.last_decided, self.first_due, self.phase
        pool: Iterable[str] = self.fresh if on_change_only else self.feeds.keys()
        self.fresh = set()
        ready = []
        for t in pool:
            if not self.feeds[t].seen:
                continue
            prev = last.get(t)
            if prev is None:  # never decided: at its phase after its book was first seen here
                if now >= first_due.setdefault(t, now + phase.get(t, 0.0)):
                    ready.append(t)
            elif now - prev >= dt:
                ready.append(t)
        if not ready:
            return []
        ready.sort(key=lambda t: last.get(t, -1e18))
        return ready[:self.bucket.take(wall, len(ready))]

    # ------------------------------------------------------------------ observation

    def account(self, ticker: str, view: PortfolioView | None) -> AccountView:
        """The market's account as an env episode would hold it (see the module docstring)."""
        s, feed = self.settings, self.feeds[ticker]
        orders = self.tracker.account_orders(ticker)
        p = view.positions.get(ticker) if view is not None else None
        qty, cost = (p.qty, p.cost) if p is not None else (0, 0)
        cash = s.reference_cash - cost + (p.realized_pnl - p.fees_paid if p is not None else 0)
        available = cash - self.tracker.reserved(ticker, qty, feed.meta.fees)
        if view is not None:
            available = min(available, view.available_cash)
        return AccountView(position=qty, cost=cost, cash=max(0, cash), available=max(0, available),
                           reference_cash=s.reference_cash, orders=orders)

    def prepare(self, ticker: str, now: float, view: PortfolioView | None, started_ns: int) -> Candidate:
        obs_, feed = self.observer, self.feeds[ticker]
        state = feed.state
        now = max(now, state.last_book_ts or now)  # never observe before the book it holds
        acct = self.account(ticker, view)
        mark = obs_.mark(state, acct)
        close = feed.meta.close_time
        features = obs_.as_array(obs_.observe(state, acct, now, close, mark))
        mask = np.asarray(obs_.mask(state, acct, now, close, feed.grid, feed.fees), np.float32)
        allowed = np.flatnonzero(mask > 0)
        forced = int(allowed[0]) if len(allowed) == 1 else None
        self.last_decided[ticker] = now
        top = state.top
        return Candidate(decision_id=str(uuid.uuid4()), ticker=ticker, now=now, obs=features, mask=mask,
                         obs_hash=observation_hash(features), yes_bid=top[0], no_bid=top[1],
                         received_ns=feed.last_received_ns, started_ns=started_ns, forced=forced)

    def books(self, wall: float) -> dict[str, BookStatus]:
        """What the risk gate knows of each book (bids for marking; liveness in wall time)."""
        out = {}
        for t, feed in self.feeds.items():
            if not feed.seen:
                continue
            top = feed.state.top
            out[t] = BookStatus(valid=feed.state.valid, updated_at=self.live_at.get(t, 0.0),
                                yes_bid=top[0] or None, no_bid=top[1] or None)
        return out

    # ------------------------------------------------------------------ action -> commands

    def decide(self, c: Candidate, action: int, version: str | None, state: RiskState, done_ns: int, *,
               status: str = "ok", error: str = "") -> Outcome:
        """Turn the policy's answer into a record and the commands to send."""
        table = self.table
        latency_us = max(0, (done_ns - c.started_ns) // 1000)

        def record(verdict: str, reason: str, name: str = "hold", coid: str | None = None) -> DecisionRecord:
            return DecisionRecord(decision_id=c.decision_id, ts_ns=done_ns, ticker=c.ticker,
                                  observation_hash=c.obs_hash, action=name, model_version=version,
                                  verdict=verdict, reason=reason, latency_us=latency_us, client_order_id=coid)

        if status != "ok":
            # No usable answer (server unavailable, no model, refused schema...): HOLD, say why.
            kind = "unavailable" if status in ("unavailable", "no_model") else "error"
            return Outcome(record=record(kind, f"{status}: {error}"[:500] if error else status))
        if not 0 <= action < table.n or c.mask[action] <= 0:
            return Outcome(record=record("error", f"policy chose masked action {action}"))
        spec = table.specs[action]
        if spec.kind is ActionKind.HOLD:
            return Outcome(record=record("hold", "forced" if c.forced is not None else "policy"))
        if spec.kind is ActionKind.CANCEL_ALL:
            cancels = self.tracker.cancel(c.ticker, reason="policy cancel_all")
            return Outcome(record=record("cancel", f"{len(cancels)} orders", spec.name),
                           commands=tuple(cancels))
        feed = self.feeds.get(c.ticker)
        if feed is None:  # retired while the policy was asked (closed, nothing of ours open)
            return Outcome(record=record("hold", "market retired", spec.name))
        req = table.request(action, c.yes_bid, c.no_bid, feed.grid)
        if req is None or isinstance(req, CancelAll):
            return Outcome(record=record("hold", "unpriceable", spec.name))
        price = req.yes_price if req.yes_price is not None else req.no_price
        assert price is not None
        intent = OrderIntent(ticker=c.ticker, side=req.side, action=req.action, count=req.count, price=price,
                             time_in_force=TimeInForce(req.time_in_force), post_only=req.post_only,
                             client_order_id=self.ids.next())
        verdict = self.gate.check(intent, state)
        actions = tuple(verdict.actions)
        if not verdict.allowed or verdict.approved is None:
            return Outcome(record=record("rejected", f"{verdict.reason}: {verdict.explanation}", spec.name,
                                         intent.client_order_id), risk_actions=actions)
        cmd = PlaceOrder(approved=verdict.approved, reduce_only=req.reduce_only, decision_id=c.decision_id,
                         model_version=version)
        self.tracker.track(cmd)
        reason = "ok" if verdict.adjusted is None else verdict.explanation
        return Outcome(record=record("allowed", reason, spec.name, intent.client_order_id), commands=(cmd,),
                       risk_actions=actions)

    def risk_commands(self, actions: Iterable[object], *,
                      model_version: str | None = None) -> list[OrderCommand]:
        """The gate's CancelAll / Flatten as order commands (cancels first, then flatten orders)."""
        from kalshiflow.trading.risk import CancelAll as RiskCancelAll
        from kalshiflow.trading.risk import Flatten

        out: list[OrderCommand] = []
        for a in actions:
            if isinstance(a, RiskCancelAll):
                out += self.tracker.cancel(a.ticker, reason=a.reason)
        for a in actions:
            if isinstance(a, Flatten):
                for approved in a.orders:
                    cmd = PlaceOrder(approved=approved, reduce_only=True, model_version=model_version,
                                     reason="flatten")
                    self.tracker.track(cmd)
                    out.append(cmd)
        return out

    def cancels(self, ticker: str | None, reason: str) -> list[CancelOrder]:
        return self.tracker.cancel(ticker, reason=reason)
