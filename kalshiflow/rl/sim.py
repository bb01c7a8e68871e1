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

Two replay modes with identical results (tests/rl/test_env.py checks step by step):
- engine: every recorded event goes through ``Venue.add_liquidity``/``remove_liquidity`` and the
  FeatureState is fed from the engine's book (the agent's orders and impact included);
- precomputed (``fast_replay``): while the agent has no resting order and owes the recording no
  volume (engine debt), the engine's book IS the recorded book, so the env skips the engine and
  reads the state the live path produced for the same events (data.CompiledMarket) — once that
  has held for MEMORY_S, so no feature still sees the agent's impact or prints (_maybe_idle).
  The engine is rebuilt from the recorded book when the agent's next order arrives.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Literal

import msgspec
import numpy as np

from kalshiflow.config import ConfigError
from kalshiflow.market.fees import calculator
from kalshiflow.market.matching import Fill, OrderRequest, SequentialIds
from kalshiflow.market.prices import MONEY_SCALE, Money
from kalshiflow.market.types import Side
from kalshiflow.market.venue import Venue
from kalshiflow.rl.actions import DEFAULT_SIZES, AccountView, CancelAll
from kalshiflow.rl.data import (
    K_ADD,
    K_GAP,
    K_REMOVE,
    K_SNAPSHOT,
    K_TRADE,
    ROW_BLOCK,
    CompiledMarket,
    SyntheticConfig,
)
from kalshiflow.rl.features import (
    MEMORY_S,
    N_MARKET_FEATURES,
    FeatureState,
    Observer,
    is_tradable,
    market_features,
)

__all__ = ["AGENT", "EnvConfig", "MarketSim", "StepResult"]

AGENT = "agent"
_SIDES = (Side.YES, Side.NO)


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


class MarketSim:
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
        self.fs: FeatureState | None = None  # the engine-fed state, while live
        self.live = False  # the engine replays events; else it is stale and precomputed state rules
        self._clean_since: float | None = None  # engine seen clean continuously since (see _maybe_idle)
        self.done = self.settled = False
        self.idx = 0
        self._mask_key: tuple[object, ...] | None = None
        self._acct_key: tuple[int, ...] | None = None
        self._dest: tuple[np.ndarray, np.ndarray, int] | None = None  # where observe_into last wrote
        self._masks: dict[tuple[object, ...], np.ndarray] = {}  # mask by its inputs (few distinct)
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
        self.acct = AccountView(position=pos.qty if pos else 0, cost=pos.cost if pos else 0, cash=pf.cash,
                                available=pf.cash - pf.reserved, reference_cash=self.start_value,
                                orders=orders)
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

    def _tradable(self) -> bool:
        fs, m, i = self.fs, self.m, self.idx
        if fs is not None:
            return self.obs.tradable(fs, self.now, self.close_time)
        return is_tradable(m.valid[i], m.last_ts[i], self.now, self.close_time, self.obs.stale_after_s)

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
        obs, acct = self.obs, self.acct
        if market:
            features[row, :N_MARKET_FEATURES] = self.market_row()
        dest = self._dest
        same_dest = dest is not None and dest[0] is features and dest[1] is mask and dest[2] == row
        if not same_dest:
            self._dest = (features, mask, row)
        top = self._top()
        key = (acct.position, acct.cost, acct.available, self.mark, top[0], top[1])
        if acct.orders or key != self._acct_key or not same_dest:
            self._acct_key = key
            features[row, N_MARKET_FEATURES:] = obs.account_features(acct, self.mark, top)
        if self.done:
            mask[row] = 0.0
            mask[row, 0] = 1.0
            self._mask_key = None
            return
        key2 = (top[0], top[1], acct.position, acct.available, acct.orders, self._tradable())
        if key2 != self._mask_key or not same_dest:  # the mask is a function of exactly these
            self._mask_key = key2
            cached = self._masks.get(key2)
            if cached is None:
                if len(self._masks) > 512:
                    self._masks.clear()
                cached = self._masks[key2] = np.asarray(
                    obs.table.mask(top[0], top[1], acct, tradable=key2[5], grid=self.m.grid, fees=self.calc,
                                   max_position=obs.max_qty, max_open_orders=obs.max_open_orders), np.float32)
            mask[row] = cached

    # ------------------------------------------------------------------ stepping

    def step(self, action: int, result: StepResult | None = None) -> StepResult:
        """Advance one decision interval with ``action`` (assumed allowed by the mask)."""
        res = result if result is not None else StepResult()
        res.rejected = 0
        res.terminated = res.truncated = False
        if self.done:
            raise RuntimeError("episode is over: reset first")
        volume = self.volume
        touched = self.live  # the account can change only through the engine
        t = self.now
        self.j += 1
        t_next = self.base + self.j * self.dt
        if t_next > self.t_end:
            t_next = self.t_end
        if action:
            top = self._top()
            req = self.obs.table.request(action, top[0], top[1], self.m.grid)
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
        if self.live:
            self._maybe_idle()
        if touched:
            self._refresh_account()
        value = self._revalue()
        res.reward = (value - self.value) / MONEY_SCALE * self.cfg.reward_scale
        self.value = value
        res.traded = self.volume - volume
        return res

    def _maybe_idle(self) -> None:
        """Return to the precomputed path once the engine-fed state equals the recording's for
        every future observation: no resting order and no volume owed to the recording (then the
        engine's book IS the recorded book), for MEMORY_S since first seen so (the mid history and
        trade window no longer reach the agent's impact and prints), and the last book change is
        a recorded one (book_age)."""
        if not self.fast or self.settled:
            return
        engine = self.engine
        debt = engine._debt  # read-only peek: an engine without debt holds exactly the recording
        if debt[0] or debt[1] or any(True for _ in engine.resting(AGENT)):
            self._clean_since = None
            return
        if self._clean_since is None:
            self._clean_since = self.now
        fs = self.fs
        if (self.now - self._clean_since >= MEMORY_S and fs is not None
                and fs.last_book_ts == self.m.last_ts[self.idx]):
            self.live, self.fs = False, None

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

    def _prints(self, fills: tuple[Fill, ...], ts: float) -> None:
        """Trades the recording does not contain (the agent took, or a crowd add crossed the
        agent) go on the public tape the features read, as they would live."""
        fs = self.fs
        assert fs is not None
        for f in fills:
            fs.on_trade(ts, f.yes_price, f.count, f.taker_outcome_side)

    def _go_live(self) -> None:
        """Rebuild the engine's crowd from the recorded book at ``idx`` and restore the live-path
        feature state there (precomputed -> engine replay)."""
        if self.live:
            return
        self.live = True
        venue, tk, engine = self.venue, self.m.ticker, self.engine
        engine.close()  # drops the stale crowd and its debt; the agent has no resting order
        book = self.m.book_at(self.idx)
        for side in _SIDES:
            for price, size in book.levels(side):
                venue.add_liquidity(tk, side, price, size)
        self.fs = self.m.state_at(self.idx, self.now)
        self.fs.attach(engine.book)

    def _advance(self, t: float) -> None:
        """Apply recorded events with ts <= t (stopping before the close event)."""
        m = self.m
        i = self.idx
        j = bisect_right(m.ts, t, i, m.close_idx)
        if j > i:
            if self.live:
                self._replay(i, j)
            self.idx = j
        if self.closes and j == m.close_idx and t >= m.ts[j]:
            self.done = True

    def _replay(self, i: int, j: int) -> None:
        """The engine path: events i..j-1 through the Venue, the FeatureState fed from its book."""
        m, venue, tk, fs = self.m, self.venue, self.m.ticker, self.fs
        assert fs is not None
        book = self.engine.book
        kinds, ts_, a_, b_, c_, d_ = m.kind, m.ts, m.a, m.b, m.c, m.d
        for k in range(i, j):
            kind, ts = kinds[k], ts_[k]
            self.now = ts
            if kind == K_ADD:
                out = venue.add_liquidity(tk, _SIDES[a_[k]], b_[k], c_[k])
                if out.fills:
                    self._prints(out.fills, ts)
                fs.on_book(ts, book)
            elif kind == K_REMOVE:
                side, price = _SIDES[a_[k]], b_[k]
                if c_[k]:
                    venue.remove_liquidity(tk, side, price, c_[k], traded=True)
                if d_[k]:
                    venue.remove_liquidity(tk, side, price, d_[k], traded=False)
                fs.on_book(ts, book)
            elif kind == K_TRADE:
                fs.on_trade(ts, b_[k], c_[k], _SIDES[a_[k]])
            elif kind == K_SNAPSHOT:
                self._resync(m.snaps[b_[k]])
                fs.on_snapshot(ts, book)
            elif kind == K_GAP:
                fs.on_gap(ts)

    def _resync(self, snap: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]) -> None:
        """Crowd volume := snapshot - debt at every level (the replayer's rule; agent orders kept)."""
        engine, venue, tk = self.engine, self.venue, self.m.ticker
        for side, levels in zip(_SIDES, snap, strict=True):
            target = dict(levels)
            current = {p for p, _ in engine.book.levels(side)}
            for price in sorted(set(target) | current):
                crowd = sum(q for oid, q in engine.queue(side, price) if oid is None)
                want = max(0, target.get(price, 0) - engine.debt(side, price))
                if want > crowd:
                    venue.add_liquidity(tk, side, price, want - crowd)
                elif want < crowd:
                    venue.remove_liquidity(tk, side, price, crowd - want, traded=False)

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
