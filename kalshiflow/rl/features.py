"""The ONE observation builder, used by the RL env and by the live trader (DESIGN.md §3 parity).

Two pieces:
- :class:`FeatureState`: streaming market state. Feed it every book change (``on_book``), public
  trade (``on_trade``), snapshot (``on_snapshot``) and sequence gap (``on_gap``) of one market, in
  stream order, with the exchange timestamps. The env feeds it per replayed event; the live
  trader per WS message. Same stream in -> same state -> bit-identical observations.
- :class:`Observer`: turns (FeatureState, account view, now, close time) into the float32
  feature vector (:data:`FEATURES`), the action mask and the order an action sends.

Fixed scales only (no running normalisation that could drift between train and live). Memory
is bounded by :data:`MEMORY_S`: the observation at time t depends on the stream only through the
book now and events after t - MEMORY_S, which is what lets the env start an episode mid-stream
(it warms the state up over the preceding MEMORY_S) and still match a trader that has been
running for hours. All arithmetic on the way is integer or plain Python float in one fixed order.

Schema: :data:`SCHEMA_VERSION` and :func:`schema_hash` (feature names + scales + constants +
action table + position cap) go into every model artifact; :func:`check_schema` refuses a
mismatch with :class:`SchemaMismatchError`. Bump the version on any change of meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_right

import numpy as np

from kalshiflow.market.book import OrderBook
from kalshiflow.market.fees import FeeCalculator
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import PRICE_SCALE, QTY_SCALE, PriceGrid
from kalshiflow.market.types import Side
from kalshiflow.rl.actions import AccountView, ActionTable, CancelAll

__all__ = [
    "FEATURES", "FEATURE_NAMES", "MEMORY_S", "N_FEATURES", "N_MARKET_FEATURES", "SCHEMA_VERSION",
    "FeatureState", "Observer", "SchemaMismatchError", "book_top", "check_schema", "is_tradable",
    "market_features", "schema_hash",
]

SCHEMA_VERSION = 1
S = PRICE_SCALE
Q = QTY_SCALE
HORIZONS_S = (10.0, 60.0, 300.0)  # mid-change look-backs
FLOW_WINDOW_S = 60.0  # trade flow sums trades in (now - 60 s, now]
FLOW_SCALE_CONTRACTS = 100.0
STALE_SCALE_S = 60.0
TTC_LOG_SCALE = math.log1p(30 * 86_400.0)
MEMORY_S = max(max(HORIZONS_S), FLOW_WINDOW_S)
DEPTH_LEVELS = 5

# (name, scale/transform). Dollar prices are YES-leg; an empty ladder counts as bid 0 / ask 1.
FEATURES: tuple[tuple[str, str], ...] = (
    # market: a function of the stream alone (the env precomputes these while the agent is idle)
    ("yes_bid", "best YES bid, dollars (0 if none)"),
    ("yes_ask", "best YES ask = 1 - best NO bid, dollars (1 if none)"),
    ("spread", "yes_ask - yes_bid, dollars"),
    ("mid", "(yes_bid + yes_ask) / 2, dollars"),
    ("micro_minus_mid", "clip((microprice - mid) * 20, -1, 1): 5c -> 1"),
    ("has_yes_bid", "0/1"),
    ("has_yes_ask", "0/1"),
    ("book_valid", "0/1: snapshot seen and no gap since"),
    ("bid_size_log", "log1p(contracts at best YES bid) / 10"),
    ("ask_size_log", "log1p(contracts at best YES ask) / 10"),
    ("imbalance_1", "(bid - ask) / (bid + ask) contracts, top 1 level per side (0 if empty)"),
    ("imbalance_3", "same over the top 3 levels"),
    ("imbalance_5", "same over the top 5 levels"),
    ("depth5_bid_log", "log1p(contracts in top 5 YES bid levels) / 10"),
    ("depth5_ask_log", "log1p(contracts in top 5 NO bid levels = YES asks) / 10"),
    ("mid_chg_10s", "clip((mid now - mid 10 s ago) * 10, -1, 1): 10c -> 1"),
    ("mid_chg_60s", "same over 60 s"),
    ("mid_chg_300s", "same over 300 s"),
    ("flow_60s", "tanh(taker-bought YES minus NO contracts over 60 s / 100)"),
    ("activity_60s", "tanh(traded contracts over 60 s / 100)"),
    ("book_age", "min(seconds since the last book change / 60, 1); 1 if none"),
    ("ttc_1h", "min(seconds to close / 3600, 1); 1 if the close is unknown"),
    ("ttc_log", "min(log1p(seconds to close) / log1p(30 days), 1)"),
    # account
    ("position", "signed contracts (+YES/-NO) / max_position, clip +-2"),
    ("avg_cost", "cost per held contract in the held side's dollars (0 flat)"),
    ("unrealized", "clip((held x bid of held side excl. own orders - cost) / (max_position x $1), -1, 1)"),
    ("cash_frac", "clip(available cash / reference cash, 0, 2)"),
    ("yes_order", "0/1: a resting order on the YES ladder (buy YES / sell NO)"),
    ("yes_order_dist", "clip((best YES bid - own best YES-ladder price) * 10, 0, 1)"),
    ("yes_order_qty", "clip(resting YES-ladder contracts / max_position, 0, 2)"),
    ("no_order", "0/1: a resting order on the NO ladder (buy NO / sell YES)"),
    ("no_order_dist", "clip((best NO bid - own best NO-ladder price) * 10, 0, 1)"),
    ("no_order_qty", "clip(resting NO-ladder contracts / max_position, 0, 2)"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURES)
N_FEATURES = len(FEATURES)
N_MARKET_FEATURES = FEATURE_NAMES.index("position")  # market features come first
OBS_LOW, OBS_HIGH = -2.0, 2.0  # every feature lies inside; the Box bounds


class SchemaMismatchError(ValueError):
    """A model was trained with a different feature/action schema than this code builds."""


def schema_hash(table: ActionTable, max_position: int, max_open_orders: int = 4) -> str:
    """sha256 over (version, features + scales, constants, action names, position and order caps)."""
    payload = {
        "version": SCHEMA_VERSION,
        "features": [list(f) for f in FEATURES],
        "constants": {"horizons_s": list(HORIZONS_S), "flow_window_s": FLOW_WINDOW_S,
                      "flow_scale": FLOW_SCALE_CONTRACTS, "stale_scale_s": STALE_SCALE_S,
                      "depth_levels": DEPTH_LEVELS},
        "actions": table.describe(),
        "max_position": max_position,
        "max_open_orders": max_open_orders,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_schema(artifact_hash: str, current_hash: str, *, what: str = "model") -> None:
    """Refuse a model whose schema hash differs from the one this code builds."""
    if artifact_hash != current_hash:
        raise SchemaMismatchError(
            f"{what} was trained with feature/action schema {artifact_hash[:12]}…, but this code "
            f"builds schema {current_hash[:12]}… (features v{SCHEMA_VERSION}); retrain the model or "
            "run the code version it was trained with"
        )


def book_top(book: OrderBook) -> tuple[int, int, int, int, int, int, int, int]:
    """(yes_bid, no_bid, yes top-1/3/5 Qty, no top-1/3/5 Qty); bids 0 when a ladder is empty."""
    yb, ys = book.top_levels(Side.YES, DEPTH_LEVELS)
    nb, ns = book.top_levels(Side.NO, DEPTH_LEVELS)
    y1 = ys[0] if ys else 0
    n1 = ns[0] if ns else 0
    return (yb, nb, y1, sum(ys[:3]), sum(ys), n1, sum(ns[:3]), sum(ns))


EMPTY_TOP = (0, 0, 0, 0, 0, 0, 0, 0)


class FeatureState:
    """Streaming state of one market (see the module docstring). Pure; no clock of its own."""

    __slots__ = ("valid", "last_book_ts", "_top", "_book", "_dirty", "_mid2", "hts", "hmid", "_h0",
                 "tts", "tsigned", "tabs", "_t0", "_sum_signed", "_sum_abs", "_cache")

    def __init__(self) -> None:
        self.valid = False
        self.last_book_ts: float | None = None
        self._top = EMPTY_TOP
        self._book: OrderBook | None = None  # the live book (None on the env's precomputed path)
        self._dirty = False  # _top must be recomputed from _book
        self._mid2 = S  # 2 x mid in ticks (empty book: bid 0, ask 1)
        # Mid history: change points (ts, 2 x mid); trades: (ts, signed Qty, Qty). Heads index
        # the oldest entry still needed; lists are compacted now and then.
        self.hts: list[float] = []
        self.hmid: list[int] = []
        self._h0 = 0
        self.tts: list[float] = []
        self.tsigned: list[int] = []
        self.tabs: list[int] = []
        self._t0 = 0
        self._sum_signed = 0
        self._sum_abs = 0
        self._cache: tuple[tuple[int, ...], list[float]] | None = None  # (top, its market features)

    # ------------------------------------------------------------------ stream input

    def on_snapshot(self, ts: float, book: OrderBook) -> None:
        self.valid = True
        self.on_book(ts, book)

    def on_gap(self, ts: float) -> None:
        """A sequence gap: the book is unknown until the next snapshot."""
        self.valid = False

    def on_book(self, ts: float, book: OrderBook) -> None:
        """Call after every change of the book (recorded deltas, own orders, snapshots)."""
        yes, no = book.best_bids()
        yes = yes or 0
        no = no or 0
        self._book = book
        self._dirty = True
        self.last_book_ts = ts
        mid2 = yes + S - no
        if mid2 != self._mid2:
            self._mid2 = mid2
            self.hts.append(ts)
            self.hmid.append(mid2)

    def on_trade(self, ts: float, yes_price: int, count: int, taker_side: Side) -> None:
        """A public trade (``taker_side``: the outcome the taker bought), count in Qty."""
        signed = count if taker_side is Side.YES else -count
        self.tts.append(ts)
        self.tsigned.append(signed)
        self.tabs.append(count)
        self._sum_signed += signed
        self._sum_abs += count

    # ------------------------------------------------------------------ bulk path (env)

    def set_top(self, top: tuple[int, ...], valid: bool, last_book_ts: float | None) -> None:
        """Set the current book summary directly (the env's replay of precomputed state)."""
        self._top = top  # type: ignore[assignment]
        self._book = None
        self._dirty = False
        self.valid = valid
        self.last_book_ts = last_book_ts
        self._mid2 = top[0] + S - top[1]

    def attach(self, book: OrderBook) -> None:
        """Read the top from ``book`` from now on; it must equal the current state's book (the env
        switching from precomputed replay to its matching engine). Time and history untouched."""
        self._book = book
        self._dirty = True

    def extend(self, hts: list[float], hmid: list[int], tts: list[float], tsigned: list[int],
               tabs: list[int]) -> None:
        """Append precomputed history (what on_book/on_trade produced for the same events)."""
        if hts:
            self.hts += hts
            self.hmid += hmid
        if tts:
            self.tts += tts
            self.tsigned += tsigned
            self.tabs += tabs
            self._sum_signed += sum(tsigned)
            self._sum_abs += sum(tabs)

    # ------------------------------------------------------------------ reads

    @property
    def top(self) -> tuple[int, int, int, int, int, int, int, int]:
        if self._dirty:
            top = book_top(self._book)  # type: ignore[arg-type]
            if top != self._top:  # unchanged: keep the object, so identity-keyed caches still hit
                self._top = top
            self._dirty = False
        return self._top

    @property
    def book(self) -> OrderBook | None:
        """The live book last fed (None on the env's precomputed path)."""
        return self._book

    def _expire(self, now: float) -> None:
        cutoff = now - FLOW_WINDOW_S
        tts, t0 = self.tts, self._t0
        if t0 < len(tts) and tts[t0] <= cutoff:
            end = bisect_right(tts, cutoff, t0)
            self._sum_signed -= sum(self.tsigned[t0:end])
            self._sum_abs -= sum(self.tabs[t0:end])
            t0 = end
        if t0 > 4096:
            del tts[:t0], self.tsigned[:t0], self.tabs[:t0]
            t0 = 0
        self._t0 = t0
        hts, h0 = self.hts, self._h0
        keep = bisect_right(hts, now - MEMORY_S, h0) - 1  # last change at or before the horizon
        if keep > h0:
            h0 = keep
        if h0 > 4096:
            del hts[:h0], self.hmid[:h0]
            h0 = 0
        self._h0 = h0

    def mid2_at(self, t: float) -> int:
        """2 x mid in ticks in effect at time t. Before the first recorded change (the stream just
        began) the oldest known mid, so a fresh stream reads "no change" rather than a jump from
        the empty book. ``_expire`` keeps the last change at or before now - MEMORY_S, so any t
        within the memory resolves exactly, however the history was trimmed or restored."""
        h0 = self._h0
        i = bisect_right(self.hts, t, h0) - 1
        if i >= h0:
            return self.hmid[i]
        return self.hmid[h0] if h0 < len(self.hmid) else self._mid2


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def bid_excluding(state: FeatureState, ladder: int, orders: tuple[tuple[int, int, int], ...]) -> int:
    """Best bid of a ladder without the account's own orders (the mark price; 0 if none)."""
    bid = state.top[ladder]
    if not bid or not orders:
        return bid
    own: dict[int, int] = {}
    for li, lp, rem in orders:
        if li == ladder and lp >= bid:  # only own orders at the touch can hide the crowd's bid
            own[lp] = own.get(lp, 0) + rem
    if not own:
        return bid
    book = state.book
    if book is None:
        raise RuntimeError("own resting orders need the live book to exclude them from the mark")
    levels = sum(1 for li, _, _ in orders if li == ladder) + 1
    for price, size in book.depth(Side.YES if ladder == 0 else Side.NO, levels):
        if size > own.get(price, 0):
            return price
    return 0


def _book_features(top: tuple[int, ...]) -> list[float]:
    """Book features except book_valid: a pure function of the book top (cached per top)."""
    yb, nb, y1, y3, y5, n1, n3, n5 = top
    ask = S - nb
    mid = (yb + ask) / (2 * S)
    micro = (yb * n1 + ask * y1) / ((y1 + n1) * S) if y1 + n1 else mid
    return [yb / S, ask / S, (ask - yb) / S, mid, _clip((micro - mid) * 20.0, -1.0, 1.0),
            1.0 if yb else 0.0, 1.0 if nb else 0.0,
            math.log1p(y1 / Q) / 10.0, math.log1p(n1 / Q) / 10.0,
            (y1 - n1) / (y1 + n1) if y1 + n1 else 0.0,
            (y3 - n3) / (y3 + n3) if y3 + n3 else 0.0,
            (y5 - n5) / (y5 + n5) if y5 + n5 else 0.0,
            math.log1p(y5 / Q) / 10.0, math.log1p(n5 / Q) / 10.0]


def market_features(state: FeatureState, now: float, close_time: float) -> list[float]:
    """The market part of the observation (the first N_MARKET_FEATURES entries)."""
    state._expire(now)
    top = state.top
    cache = state._cache
    if cache is None or (cache[0] is not top and cache[0] != top):
        cache = state._cache = (top, _book_features(top))
    f = cache[1].copy()
    f.insert(7, 1.0 if state.valid else 0.0)
    mid2 = top[0] + S - top[1]
    for h in HORIZONS_S:
        x = (mid2 - state.mid2_at(now - h)) * 5.0 / S
        f.append(-1.0 if x < -1.0 else 1.0 if x > 1.0 else x)
    f.append(math.tanh(state._sum_signed / (Q * FLOW_SCALE_CONTRACTS)))
    f.append(math.tanh(state._sum_abs / (Q * FLOW_SCALE_CONTRACTS)))
    last = state.last_book_ts
    f.append(1.0 if last is None else _clip((now - last) / STALE_SCALE_S, 0.0, 1.0))
    ttc = close_time - now
    if ttc <= 0.0:
        f += (0.0, 0.0)
    else:
        f.append(ttc / 3600.0 if ttc < 3600.0 else 1.0)
        f.append(_clip(math.log1p(ttc) / TTC_LOG_SCALE, 0.0, 1.0))
    return f


def is_tradable(valid: bool, last_book_ts: float | None, now: float, close_time: float,
                stale_after_s: float) -> bool:
    """Orders allowed: valid book, changed within ``stale_after_s`` (0 = no limit), market open."""
    return (valid and last_book_ts is not None and now < close_time
            and (stale_after_s <= 0 or now - last_book_ts <= stale_after_s))


class Observer:
    """Features, mask and order mapping for one schema (action table + position cap).

    Per decision: ``mark = observer.mark(state, acct)`` (price of the held side's crowd bid),
    ``observer.value(acct, mark)`` (the marked account value the env's reward uses),
    ``observer.observe(state, acct, now, close_time, mark)`` (list of floats; ``as_array`` it)
    and ``observer.mask(...)``. Stateless: one Observer serves any number of markets.
    """

    def __init__(self, table: ActionTable, max_position: int, stale_after_s: float = 0.0,
                 max_open_orders: int = 4) -> None:
        if max_position <= 0 or max_open_orders <= 0:
            raise ValueError("max_position and max_open_orders must be positive")
        self.table = table
        self.max_position = max_position
        self.max_qty = max_position * Q
        self.max_open_orders = max_open_orders
        self.stale_after_s = stale_after_s
        self.schema_hash = schema_hash(table, max_position, max_open_orders)
        self.n_features = N_FEATURES
        self.n_actions = table.n
        self._flat_orders = [0.0] * 6

    def mark(self, state: FeatureState, acct: AccountView) -> int:
        """Mark price (ticks) of the held side: its best bid excluding own orders; 0 when flat."""
        pos = acct.position
        if not pos:
            return 0
        return bid_excluding(state, 0 if pos > 0 else 1, acct.orders)

    def value(self, acct: AccountView, mark: int) -> int:
        """Marked account value in Money: cash + |position| x mark."""
        pos = acct.position
        return acct.cash + (pos if pos > 0 else -pos) * mark

    def observe(self, state: FeatureState, acct: AccountView, now: float, close_time: float,
                mark: int) -> list[float]:
        """The full feature vector (FEATURES order)."""
        return market_features(state, now, close_time) + self.account_features(acct, mark, state.top)

    def account_features(self, acct: AccountView, mark: int, top: tuple[int, ...]) -> list[float]:
        """The account part (the last N_FEATURES - N_MARKET_FEATURES entries)."""
        pos, cap = acct.position, self.max_qty
        if pos:
            held = pos if pos > 0 else -pos
            f = [_clip(pos / cap, -2.0, 2.0), acct.cost / (held * S),
                 _clip((held * mark - acct.cost) / (cap * S), -1.0, 1.0)]
        else:
            f = [0.0, 0.0, 0.0]
        f.append(_clip(acct.available / acct.reference_cash, 0.0, 2.0))
        if not acct.orders:
            return f + self._flat_orders
        for ladder in (0, 1):
            own, qty = 0, 0
            for li, lp, rem in acct.orders:
                if li == ladder:
                    qty += rem
                    own = lp if lp > own else own
            if qty:
                f += (1.0, _clip((top[ladder] - own) * 10.0 / S, 0.0, 1.0), _clip(qty / cap, 0.0, 2.0))
            else:
                f += (0.0, 0.0, 0.0)
        return f

    def tradable(self, state: FeatureState, now: float, close_time: float) -> bool:
        return is_tradable(state.valid, state.last_book_ts, now, close_time, self.stale_after_s)

    def mask(self, state: FeatureState, acct: AccountView, now: float, close_time: float,
             grid: PriceGrid, fees: FeeCalculator) -> list[float]:
        top = state.top
        return self.table.mask(top[0], top[1], acct, tradable=self.tradable(state, now, close_time),
                               grid=grid, fees=fees, max_position=self.max_qty,
                               max_open_orders=self.max_open_orders)

    def request(self, action: int, state: FeatureState, grid: PriceGrid,
                client_order_id: str | None = None) -> OrderRequest | CancelAll | None:
        top = state.top
        return self.table.request(action, top[0], top[1], grid, client_order_id)

    def as_array(self, features: list[float]) -> np.ndarray:
        return np.asarray(features, dtype=np.float32)
