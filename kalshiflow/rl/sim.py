"""One episode of one market: the recorded book replayed through the Venue, the agent's orders
arriving after a latency, the shared FeatureState/Observer. The Gymnasium envs (env.py,
env_batch.py) are thin shells around :class:`MarketSim`.

Stepping (simulated time; decision times t0, t0 + dt, ...):
1. the action is turned into an order with the book the agent saw (``Observer.request``);
2. recorded events up to t + latency are applied, THEN the order reaches the Venue (it takes
   liquidity, or joins the back of its level's queue, behind the crowd already there);
3. recorded events up to t + dt are applied: recorded trades at the agent's level consume the
   queue from the front and fill the agent when they reach it (matching.py's replay model);
4. reward = change of the marked account value (cash + holding at the bid of the held side,
   excluding the agent's own orders) in dollars x ``reward_scale``. Fees are in the cash.
At the recorded close the market settles if the recording knows the result ($1/$0 per contract,
``terminated``); otherwise the episode ends at the last mark (``truncated``), as at the window end.

The recording's replay and its modes (engine / stale engine / precomputed) live in
:class:`kalshiflow.rl.replay.RecordingReplay`, which MarketSim extends.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Literal

import msgspec
import numpy as np

from kalshiflow.config import ConfigError
from kalshiflow.market.fees import calculator
from kalshiflow.market.matching import OrderRequest, SequentialIds
from kalshiflow.market.prices import MONEY_SCALE, Money
from kalshiflow.market.venue import Venue
from kalshiflow.rl.actions import DEFAULT_SIZES, AccountView, CancelAll
from kalshiflow.rl.data import ROW_BLOCK, CompiledMarket, SyntheticConfig
from kalshiflow.rl.features import N_MARKET_FEATURES, FeatureState, Observer, is_tradable, market_features
from kalshiflow.rl.replay import AGENT, RecordingReplay

__all__ = ["AGENT", "EnvConfig", "MarketSim", "StepResult"]


class EnvConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything that defines an env; frozen, unknown keys rejected (``msgspec.convert(d, EnvConfig)``).

    ``sizes``, ``max_position`` and ``max_open_orders`` are part of the model schema
    (features.schema_hash): a model trained with other values is refused at load.
    """

    data: str = "synthetic:0-19"  # synthetic[:<scenario>]:<seeds> | session:<ids> | static
    split: Literal["train", "validation", "all"] = "train"
    validation_fraction: float = 0.2
    synthetic: SyntheticConfig = SyntheticConfig()
    window_s: float = 1800.0  # episode length in simulated seconds (shorter if the data ends)
    decision_interval_s: float = 5.0
    latency_s: float = 0.25  # decision -> order at the exchange
    episode_start: Literal["uniform", "open"] = "uniform"  # "open": from the first snapshot
    sizes: tuple[int, ...] = DEFAULT_SIZES  # contracts per order action
    max_position: int = 50  # contracts per side (holding + resting + order) and feature scale
    max_open_orders: int = 4  # resting orders per market; joins are masked beyond
    starting_cash: int = 1000  # whole dollars
    # Mask orders when the book has not changed for this long (0 = off: recordings mark feed loss
    # as gaps, which mask orders; quiet markets are not stale; the live risk gate has its own).
    stale_after_s: float = 0.0
    reward_scale: float = 1.0  # reward = dollars x reward_scale
    flat_obs: bool = False  # True: Box observation, the mask in info["action_mask"]
    fast_replay: bool = True  # precomputed replay while the agent is idle (same results)

    def __post_init__(self) -> None:
        problems = []
        if self.decision_interval_s <= 0 or self.window_s <= 0:
            problems.append("decision_interval_s and window_s must be > 0")
        if not 0 <= self.latency_s < self.decision_interval_s:
            problems.append("latency_s must be in [0, decision_interval_s)")
        if self.max_position <= 0 or self.starting_cash <= 0 or self.max_open_orders <= 0:
            problems.append("max_position, max_open_orders and starting_cash must be > 0")
        if not self.sizes or any(s <= 0 for s in self.sizes):
            problems.append("sizes must be positive contract counts")
        if problems:
            raise ConfigError("EnvConfig: " + "; ".join(problems))


class StepResult:
    """What one MarketSim step produced (plain attributes; the envs pack them)."""

    __slots__ = ("reward", "terminated", "truncated", "traded", "rejected")

    def __init__(self) -> None:
        self.reward = 0.0
        self.terminated = self.truncated = False
        self.traded = 0  # contracts the agent bought this step (either side), in Qty
        self.rejected = 0  # orders the Venue refused


class MarketSim(RecordingReplay):
    """One episode (see the module docstring). ``t0``: the first decision time.

    ``step(action)`` advances one decision; ``observe_into(features, mask, row)`` writes the
    observation into float32 arrays, so the single env and the vector env share one code path
    (and one float32 rounding). ``value``/``start_value`` (Money), ``acct``, ``info()`` describe
    the account.
    """

    def __init__(self, market: CompiledMarket, observer: Observer, cfg: EnvConfig, t0: float,
                 ids_seed: int = 0) -> None:
        m = market
        self.m, self.obs, self.cfg = m, observer, cfg
        self.dt, self.latency, self.fast = cfg.decision_interval_s, cfg.latency_s, cfg.fast_replay
        self.now = self.base = t0
        self.j = 0  # decision number: t_j = base + j * dt (computed, never accumulated)
        self.t_end = max(min(t0 + cfg.window_s, m.end_ts), t0 + min(cfg.window_s, self.dt))
        self.closes = m.close_idx < m.n  # the recording reaches the market's close
        self.close_time = m.feature_close_time
        # Precomputed market features apply when the decision clock is on the market's grid.
        k0 = round((t0 - m.start_ts) / self.dt)
        on_grid = self.fast and k0 >= 0 and m.start_ts + k0 * self.dt == t0
        self.k0 = k0 if on_grid else -1
        self.k_len = m.grid_len(self.dt)
        self._block: np.ndarray | None = None  # precomputed rows in use, from grid index _block_k
        self._block_k = 0
        self.venue = Venue(clock=self._clock, ids=SequentialIds(ids_seed))
        self.engine = self.venue.add_market(m.ticker, grid=m.grid, fees=m.fees)
        self.start_value = Money(cfg.starting_cash * MONEY_SCALE)
        self.pf = self.venue.open_account(AGENT, self.start_value)
        self.calc = calculator(m.fees)
        # The agent's own feature state (its orders, impact and prints in the history), while any
        # observation can still see them; None: the precomputed recorded state rules.
        self.fs: FeatureState | None = None
        self.live = False  # the engine replays events; else it is stale (rebuilt at the next order)
        self._clean_since: float | None = None  # engine seen clean continuously since (see _maybe_idle)
        self._differs_until = -1
        self.done = self.settled = False
        self.idx = 0
        self._mask_key: tuple[object, ...] | None = None  # (acct, yes bid, no bid, tradable) last written
        self._acct_key: tuple[object, ...] | None = None  # (acct, mark) last written
        self._dest: tuple[np.ndarray, np.ndarray, int] | None = None  # where observe_into last wrote
        self._masks: dict[tuple[object, ...], np.ndarray] = {}  # mask by its inputs (few distinct)
        self.acct = AccountView(reference_cash=self.start_value)  # replaced by _refresh_account below
        self._advance(t0)
        if not self.fast:
            self._go_live()
        self._refresh_account()
        self.value = self._revalue()

    # ------------------------------------------------------------------ views

    def _clock(self) -> float:
        return self.now

    def _refresh_account(self) -> None:
        """Rebuild the account view; needed only after something could change it (engine replay,
        an order, settlement): on the idle path nothing trades, so it stays as it is."""
        pf = self.pf
        pos = pf.positions.get(self.m.ticker)
        orders = tuple((o.li, o.lprice, o.remaining) for o in self.engine.resting(AGENT)) if self.live else ()
        qty, cost = (pos.qty, pos.cost) if pos else (0, 0)
        cash, available, acct = pf.cash, pf.cash - pf.reserved, self.acct
        # Unchanged: keep the object, so observe_into's identity checks skip the rewrite.
        if (acct.position != qty or acct.cost != cost or acct.cash != cash or acct.available != available
                or acct.orders != orders):
            self.acct = AccountView(position=qty, cost=cost, cash=cash, available=available,
                                    reference_cash=self.start_value, orders=orders)
        self.volume = pos.volume if pos else 0

    def _top(self) -> tuple[int, ...]:
        fs = self.fs
        return fs.top if fs is not None else self.m.top[self.idx]

    def _revalue(self) -> int:
        """Update the mark (crowd bid of the held side); return the marked value (Money)."""
        acct, fs = self.acct, self.fs
        if fs is not None:
            self.mark = self.obs.mark(fs, acct)
        else:  # no own orders: the crowd's bid is the recorded bid
            pos = acct.position
            self.mark = self.m.top[self.idx][0 if pos > 0 else 1] if pos else 0
        return self.obs.value(acct, self.mark)

    def market_row(self) -> np.ndarray:
        """The market part of the observation now: float32 (N_MARKET_FEATURES,)."""
        now = self.now
        if self.fs is not None:
            return np.asarray(market_features(self.fs, now, self.close_time), np.float32)
        k = self.k0 + self.j
        if self.k0 >= 0 and now == self.base + self.j * self.dt and k < self.k_len:
            r = k - self._block_k
            block = self._block
            if block is None or not 0 <= r < len(block):
                block = self._block = self.m.row_block(self.dt, k)
                self._block_k = k - k % ROW_BLOCK
                r = k - self._block_k
            return block[r]
        # Off the grid (the window's last, shorter step; a pinned t0): restore and compute.
        return np.asarray(market_features(self.m.state_at(self.idx, now), now, self.close_time), np.float32)

    def observe_into(self, features: np.ndarray, mask: np.ndarray, row: int = 0, *,
                     market: bool = True) -> None:
        """Write the observation into ``features[row]`` and the action mask into ``mask[row]``
        (float32 arrays, (N, n_features) and (N, n_actions)). The account part and the mask are
        rewritten only when they changed since this sim last wrote the same row (the idle step's
        main saving); ``market=False``: the caller writes ``market_row()`` itself (batched)."""
        obs, acct, m, i = self.obs, self.acct, self.m, self.idx
        if market:
            features[row, :N_MARKET_FEATURES] = self.market_row()
        dest = self._dest
        if dest is None or dest[0] is not features or dest[1] is not mask or dest[2] != row:
            self._dest = (features, mask, row)
            self._acct_key = self._mask_key = None  # a new destination: write everything
        fs = self.fs
        if fs is None:
            top = m.top[i]
            tradable = is_tradable(m.valid[i], m.last_ts[i], self.now, self.close_time, obs.stale_after_s)
        else:
            top = fs.top
            tradable = obs.tradable(fs, self.now, self.close_time)
        yes_bid, no_bid, mark, orders = top[0], top[1], self.mark, acct.orders
        # The account part is a function of (acct, mark), and of the top only with orders resting;
        # acct is replaced (never mutated) when it may have changed, so identity is enough.
        key = self._acct_key
        if orders or key is None or key[0] is not acct or key[1] != mark:
            self._acct_key = (acct, mark)
            features[row, N_MARKET_FEATURES:] = obs.account_features(acct, mark, top)
        if self.done:
            mask[row] = 0.0
            mask[row, 0] = 1.0
            self._mask_key = None
            return
        key2 = self._mask_key
        if (key2 is None or key2[0] is not acct or key2[1] != yes_bid or key2[2] != no_bid
                or key2[3] != tradable):  # the mask is a function of exactly these
            self._mask_key = (acct, yes_bid, no_bid, tradable)
            ck = (yes_bid, no_bid, acct.position, acct.available, orders, tradable)
            cached = self._masks.get(ck)
            if cached is None:
                if len(self._masks) > 512:
                    self._masks.clear()
                cached = self._masks[ck] = np.asarray(
                    obs.table.mask(yes_bid, no_bid, acct, tradable=tradable, grid=m.grid, fees=self.calc,
                                   max_position=obs.max_qty, max_open_orders=obs.max_open_orders), np.float32)
            mask[row] = cached

    # ------------------------------------------------------------------ stepping

    def step(self, action: int, result: StepResult | None = None) -> StepResult:
        """Advance one decision interval with ``action`` (assumed allowed by the mask)."""
        res = result if result is not None else StepResult()
        if self.done:
            raise RuntimeError("episode is over: reset first")
        if not action and self.fs is None:
            return self._idle_step(res)
        res.rejected = 0
        res.terminated = res.truncated = False
        volume = self.volume
        touched = self.live  # the account can change only through the engine
        t = self.now
        self.j += 1
        t_next = self.base + self.j * self.dt
        if t_next > self.t_end:
            t_next = self.t_end
        if action:
            top = self._top()
            table, requests = self.obs.table, self.m.requests
            rkey = (table, action, top[0], top[1])
            req = requests.get(rkey, False)
            if req is False:  # immutable, no id: one per (table, action, touch), shared by episodes
                if len(requests) > 65536:
                    requests.clear()
                req = requests[rkey] = table.request(action, top[0], top[1], self.m.grid)
            if req is not None:
                arrival = min(t + self.latency, t_next)
                self._advance(arrival)
                if not self.done:
                    self.now = arrival
                    self._execute(req, res)
                    touched = True
        self._advance(t_next)
        self.now = t_next
        if self.done:  # reached the recorded close
            if self.m.result is not None:
                self.venue.settle_market(self.m.ticker, self.m.result)
                self.settled = res.terminated = touched = True
            else:
                res.truncated = True
        elif t_next >= self.t_end:
            self.done = res.truncated = True
        if self.fs is not None:
            self._maybe_idle()
        if touched:
            self._refresh_account()
        value = self._revalue()
        res.reward = (value - self.value) / MONEY_SCALE * self.cfg.reward_scale
        self.value = value
        res.traded = self.volume - volume
        return res

    def _idle_step(self, res: StepResult) -> StepResult:
        """``step(0)`` on the precomputed path (engine stale, no own state): only the clock, the
        event index and the mark move; the account changes only if the market settles."""
        res.rejected = 0
        res.terminated = res.truncated = False
        m = self.m
        self.j += 1
        t_next = self.base + self.j * self.dt
        if t_next > self.t_end:
            t_next = self.t_end
        i = self.idx = bisect_right(m.ts, t_next, self.idx, m.close_idx)
        self.now = t_next
        acct, volume = self.acct, self.volume
        if self.closes and i == m.close_idx and t_next >= m.ts[i]:  # reached the recorded close
            self.done = True
            if m.result is not None:
                self.venue.settle_market(m.ticker, m.result)
                self.settled = res.terminated = True
                self._refresh_account()
                acct = self.acct
            else:
                res.truncated = True
        elif t_next >= self.t_end:
            self.done = res.truncated = True
        pos = acct.position
        mark = self.mark = m.top[i][0 if pos > 0 else 1] if pos else 0
        value = self.obs.value(acct, mark)
        res.reward = (value - self.value) / MONEY_SCALE * self.cfg.reward_scale
        self.value = value
        res.traded = self.volume - volume
        return res

    def idle_step_into(self, res: StepResult, features: np.ndarray, mask: np.ndarray,
                       row: int) -> np.ndarray:
        """``step(0)`` + ``market_row()`` + ``observe_into(features, mask, row, market=False)``
        for a sim on the precomputed path (``fs is None``): the vector env's idle step, with the
        common case (on the grid, the episode goes on, nothing the account part or the mask reads
        has changed) done inline. Returns the market row."""
        self._idle_step(res)
        if self.done:
            self.observe_into(features, mask, row, market=False)
            return self.market_row()
        k = self.k0 + self.j
        r = k - self._block_k
        block = self._block
        m, dest = self.m, self._dest
        if (block is None or not 0 <= r < len(block) or k >= self.k_len or self.k0 < 0
                or dest is None or dest[0] is not features or dest[1] is not mask or dest[2] != row
                or self.now != self.base + self.j * self.dt):
            self.observe_into(features, mask, row, market=False)
            return self.market_row()
        i = self.idx
        top, acct, mark = m.top[i], self.acct, self.mark
        key = self._acct_key
        if key is None or key[0] is not acct or key[1] != mark or acct.orders:
            self.observe_into(features, mask, row, market=False)
            return block[r]
        key2 = self._mask_key
        if (key2 is None or key2[0] is not acct or key2[1] != top[0] or key2[2] != top[1]
                or key2[3] != is_tradable(m.valid[i], m.last_ts[i], self.now, self.close_time,
                                          self.obs.stale_after_s)):
            self.observe_into(features, mask, row, market=False)
        return block[r]

    def _execute(self, req: OrderRequest | CancelAll, res: StepResult) -> None:
        self._go_live()
        self._clean_since = None  # the agent acted: its trace is in the state from here
        venue, tk, fs, now = self.venue, self.m.ticker, self.fs, self.now
        assert fs is not None
        if isinstance(req, CancelAll):
            if any(r.deltas for r in venue.cancel_all(AGENT, tk)):
                fs.on_book(now, self.engine.book)
            return
        out = venue.submit(AGENT, tk, req)
        if out.error is not None:
            res.rejected += 1
        self._prints(out.fills, now)
        if out.deltas:
            fs.on_book(now, self.engine.book)

    # ------------------------------------------------------------------ info

    def info(self) -> dict[str, float | int | bool | str]:
        pf = self.pf
        pos = pf.positions.get(self.m.ticker)
        return {
            "ticker": self.m.ticker, "t": self.now,
            "value": self.value / MONEY_SCALE, "pnl": (self.value - self.start_value) / MONEY_SCALE,
            "cash": pf.cash / MONEY_SCALE, "position": (pos.qty if pos else 0) / 100,
            "fees": pf.fees_paid / MONEY_SCALE, "traded": self.volume / 100, "settled": self.settled,
        }
