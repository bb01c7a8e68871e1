"""The recording replayed for one episode, and the replay modes (the base of rl.sim.MarketSim).

Three modes, switched per step, with the same results as replaying every event through the engine
(tests/rl/test_env.py and test_env_equivalence.py check them step by step):
- engine (``live``): every recorded event goes through the matching engine (the Venue's
  add/remove liquidity; the lean ``replay_add``/``replay_remove`` where no fill is possible) and
  the agent's own FeatureState is fed from the engine's book (own orders and impact included);
- stale engine, own state (``fs`` set, not ``live``): the agent has no resting order and owes the
  recording no volume, and the engine's book equals the recorded book (checked once), so nothing
  the engine would do can differ from the recording: the engine stops replaying and the own
  FeatureState is fed the recording's precomputed changes (``_feed``) until no feature can see
  the agent's trace any more (MEMORY_S);
- precomputed (``fs`` None): the env reads the state the live path produced for the same events
  (compiled.CompiledMarket) and the precomputed market rows.
The engine is rebuilt from the recorded book when the agent's next order arrives (``_go_live``).
``EnvConfig.fast_replay = False`` keeps the engine mode throughout.
"""

from __future__ import annotations

from bisect import bisect_right

from kalshiflow.market.matching import Fill, MatchingEngine
from kalshiflow.market.types import Side
from kalshiflow.market.venue import Venue
from kalshiflow.rl.compiled import K_ADD, K_GAP, K_REMOVE, K_SNAPSHOT, K_TRADE, CompiledMarket
from kalshiflow.rl.features import MEMORY_S, FeatureState

__all__ = ["AGENT", "RecordingReplay"]

AGENT = "agent"
_SIDES = (Side.YES, Side.NO)


class RecordingReplay:
    """Replay state of one episode; the subclass (MarketSim) sets these in its ``__init__``."""

    m: CompiledMarket
    venue: Venue
    engine: MatchingEngine
    fast: bool  # EnvConfig.fast_replay: leave the engine when the agent is clean
    fs: FeatureState | None  # the agent's own feature state while any observation can see its trace
    live: bool  # the engine replays events; else it is stale (rebuilt at the next order)
    _clean_since: float | None  # clean (no resting order, no debt) continuously since
    _differs_until: int  # the engine's book differs from the recording's until this event index
    idx: int  # events applied
    now: float
    closes: bool  # the recording reaches the market's close
    done: bool
    settled: bool

    def _maybe_idle(self) -> None:
        """Step back toward the precomputed path once the agent is clean: no resting order and no
        volume owed to the recording. Then the engine's book IS the recorded book (checked once),
        so the engine stops replaying and the own FeatureState is fed the recording's precomputed
        changes (``_feed``: what on_book/on_trade would log for the same book). After MEMORY_S
        clean (the mid history and trade window no longer reach the agent's impact and prints)
        and with a recorded last book change (book_age), the own state is dropped too."""
        if not self.fast or self.settled:
            return
        if self.live:
            engine = self.engine
            debt = engine._debt  # read-only peek (debt: volume the engine owes the recording)
            if debt[0] or debt[1] or any(True for _ in engine.resting(AGENT)):
                self._clean_since = None
                return
            if self._clean_since is None:
                self._clean_since = self.now
                self._differs_until = -1
            # Only after a second clean step: an agent that acts again at once (random play)
            # would pay the check and the engine's rebuild for nothing.
            if (self.now - self._clean_since > 0.0 and not self.m.ever_crossed
                    and self.idx > self._differs_until):
                if self._same_as_recorded():
                    self.live = False
                else:  # only a re-snapshot can make them equal again (see _same_as_recorded)
                    self._differs_until = self.m.next_snapshot(self.idx)
        fs = self.fs
        assert fs is not None and self._clean_since is not None
        if self.now - self._clean_since >= MEMORY_S and fs.last_book_ts == self.m.last_ts[self.idx]:
            self.live, self.fs = False, None

    def _same_as_recorded(self) -> bool:
        """The engine's L2 book equals the recording's at ``idx``: the premise of going stale. Not
        always so without debt: a recorded trade that filled the agent leaves the crowd behind it
        in the engine (the counterfactual), which the recording never removes; then the engine
        keeps replaying until the MEMORY_S rule drops it, as before. Crowd-only events change
        both books alike, so they stay unequal until a snapshot resyncs the engine."""
        book, rec = self.engine.book, self.m.book_at(self.idx)
        return all(book.levels(side) == rec.levels(side) for side in _SIDES)

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
        for li, side in enumerate(_SIDES):
            for price, size in book.levels(side):
                if not engine.replay_add(li, price, size):  # a crossed recording: the full path
                    venue.add_liquidity(tk, side, price, size)
        if self.fs is None:
            self.fs = self.m.state_at(self.idx, self.now)
        self.fs.attach(engine.book)  # the rebuilt book equals the recorded one it was fed

    def _advance(self, t: float) -> None:
        """Apply recorded events with ts <= t (stopping before the close event)."""
        m = self.m
        i = self.idx
        j = bisect_right(m.ts, t, i, m.close_idx)
        if j > i:
            if self.live:
                self._replay(i, j)
            elif self.fs is not None:
                self._feed(i, j)
            self.idx = j
        if self.closes and j == m.close_idx and t >= m.ts[j]:
            self.done = True

    def _feed(self, i: int, j: int) -> None:
        """Events i..j-1 into the own FeatureState while the engine is stale (its book = the
        recorded book): the recording's logged mid changes and trades, its top and validity, and
        its last book time if the book changed (else the own last change, maybe an own order)."""
        m, fs = self.m, self.fs
        assert fs is not None
        h0, h1, t0, t1 = m.hlen[i], m.hlen[j], m.tlen[i], m.tlen[j]
        fs.extend(m.hts[h0:h1], m.hmid[h0:h1], m.tts[t0:t1], m.tsigned[t0:t1], m.tabs[t0:t1])
        fs.set_top(m.top[j], m.valid[j], m.last_ts[j] if m.nbook[j] != m.nbook[i] else fs.last_book_ts)

    def _replay(self, i: int, j: int) -> None:
        """The engine path: events i..j-1 through the Venue, the FeatureState fed from its book."""
        m, venue, tk, fs = self.m, self.venue, self.m.ticker, self.fs
        assert fs is not None
        engine = self.engine
        book = engine.book
        add, remove = engine.replay_add, engine.replay_remove  # no fill possible: no results built
        kinds, ts_, a_, b_, c_, d_ = m.kind, m.ts, m.a, m.b, m.c, m.d
        for k in range(i, j):
            kind, ts = kinds[k], ts_[k]
            self.now = ts
            if kind == K_ADD:
                li, price, qty = a_[k], b_[k], c_[k]
                if not add(li, price, qty):
                    out = venue.add_liquidity(tk, _SIDES[li], price, qty)
                    if out.fills:
                        self._prints(out.fills, ts)
                fs.on_book(ts, book)
            elif kind == K_REMOVE:
                li, price = a_[k], b_[k]
                traded, cancelled = c_[k], d_[k]
                if traded and not remove(li, price, traded, True):
                    venue.remove_liquidity(tk, _SIDES[li], price, traded, traded=True)
                if cancelled:
                    remove(li, price, cancelled, False)  # a cancel never fills
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
