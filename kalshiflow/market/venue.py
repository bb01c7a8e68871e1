"""The exchange core: markets (matching engines) + accounts (portfolios) + fees + collateral.

One Venue serves the exchange simulator, the RL env and paper fills, so they cannot disagree on
how an order fills or what it costs. Pure code, no I/O; the caller owns time (``clock``) and ids.

Collateral (no margin on Kalshi: kalshi-protocol.md §3). An account may only commit cash it has:
- A new order needs ``ladder price x (quantity that would OPEN exposure) + worst-case fee``.
  The part that nets an opposite holding needs no price collateral: each netted YES+NO pair pays
  $1 back, which covers any price. Worst-case fee: :func:`fees.max_order_fee` (P(1-P) peaks at 0.5
  and a taker can be filled below its limit).
- Resting orders keep their requirement reserved. Requirements are recomputed from state (the
  position and the owner's resting orders, oldest first claiming the nettable holding) after
  every change, instead of being tracked incrementally, so they cannot drift. A fill of an
  order always costs at most what its requirement covered, and a fill that nets displaces
  another order's claim by at most $1 per contract while paying $1 back — so cash and available
  cash never go negative (asserted by Portfolio; property-tested in test_accounting_properties).
Fees are charged per order through a :class:`fees.FeeAccumulator` (see fees.py).

Anonymous crowd liquidity (replay: ``add_liquidity``/``remove_liquidity``) has no portfolio.
Rejections are results with a Kalshi lower-snake ``error`` code, never exceptions: market_not_found,
market_closed, trading_paused, user_not_found, order_already_exists, insufficient_balance,
invalid_price, invalid_count, invalid_order, post_only_cross, fok_insufficient_volume, not_found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import msgspec

from kalshiflow.market.fees import DEFAULT_FEES, FeeAccumulator, FeeSchedule, calculator
from kalshiflow.market.matching import MatchingEngine
from kalshiflow.market.orders import BookDelta, Fill, OrderRequest, OrderResult, OrderState, SequentialIds
from kalshiflow.market.portfolio import Portfolio
from kalshiflow.market.prices import LINEAR_CENT, PRICE_SCALE, Money, PriceGrid, Qty
from kalshiflow.market.types import OrderStatus, Side

__all__ = ["CancelResult", "Market", "OrderRequest", "SettlementResult", "TradingStatus", "Venue"]


class TradingStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # Kalshi "inactive": no new orders; resting orders stay and may be cancelled
    CLOSED = "closed"
    SETTLED = "settled"


class CancelResult(msgspec.Struct, frozen=True, kw_only=True):
    order: OrderState | None = None
    reduced_by: int = 0
    deltas: tuple[BookDelta, ...] = ()
    error: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class SettlementResult(msgspec.Struct, frozen=True, kw_only=True):
    ticker: str
    settlement_value: int  # YES value in price ticks (10_000 = YES won)
    canceled: tuple[OrderState, ...]
    deltas: tuple[BookDelta, ...]
    payouts: dict[str, Money]  # owner -> paid (0 for a losing position)


class Market:
    __slots__ = ("ticker", "engine", "grid", "fees", "calc", "status", "settlement_value")

    def __init__(self, ticker: str, engine: MatchingEngine, fees: FeeSchedule) -> None:
        self.ticker, self.engine, self.grid, self.fees = ticker, engine, engine.grid, fees
        self.calc = calculator(fees)
        self.status = TradingStatus.ACTIVE
        self.settlement_value: int | None = None


class _MarkView:
    """Best bids of one market without the owner's own orders: an account is never marked
    against its own bid (it could otherwise raise its own valuation by quoting)."""

    __slots__ = ("engine", "owner")

    def __init__(self, engine: MatchingEngine, owner: str) -> None:
        self.engine, self.owner = engine, owner

    def best_bid(self, side: Side) -> int | None:
        return self.engine.best_bid_excluding(side, self.owner)


def _reject(code: str, message: str) -> OrderResult:
    return OrderResult(error=code, message=message)


class Venue:
    def __init__(self, *, clock: Callable[[], float] = time.time, ids: Callable[[], str] | None = None,
                 seed: int = 0) -> None:
        self.clock = clock
        self.ids = ids or SequentialIds(seed)
        self.markets: dict[str, Market] = {}
        self.accounts: dict[str, Portfolio] = {}
        self._fees: dict[str, FeeAccumulator] = {}  # order_id -> accumulator, while not terminal
        self._reserved: dict[tuple[str, str], int] = {}  # (owner, ticker) -> reserved Money
        self._order_ticker: dict[str, str] = {}  # resting order_id -> ticker
        self._coids: dict[str, dict[str, str]] = {}  # owner -> client_order_id -> resting order_id

    # ------------------------------------------------------------------ setup

    def add_market(self, ticker: str, *, grid: PriceGrid = LINEAR_CENT,
                   fees: FeeSchedule = DEFAULT_FEES) -> MatchingEngine:
        if ticker in self.markets:
            raise ValueError(f"market {ticker!r} already exists")
        engine = MatchingEngine(ticker, grid, clock=self.clock, ids=self.ids)
        self.markets[ticker] = Market(ticker, engine, fees)
        return engine

    def open_account(self, owner: str, balance: Money) -> Portfolio:
        if owner in self.accounts:
            raise ValueError(f"account {owner!r} already exists")
        pf = self.accounts[owner] = Portfolio(balance, owner)
        return pf

    def deposit(self, owner: str, amount: Money) -> None:
        if amount < 0:
            raise ValueError("deposit must be non-negative")
        self.accounts[owner].cash = Money(self.accounts[owner].cash + amount)

    # ------------------------------------------------------------------ orders

    def submit(self, owner: str, ticker: str, req: OrderRequest) -> OrderResult:
        mkt = self.markets.get(ticker)
        if mkt is None:
            return _reject("market_not_found", f"no market {ticker!r}")
        if mkt.status is not TradingStatus.ACTIVE:
            code = "trading_paused" if mkt.status is TradingStatus.PAUSED else "market_closed"
            return _reject(code, f"market {ticker} is {mkt.status.value}")
        pf = self.accounts.get(owner)
        if pf is None:
            return _reject("user_not_found", f"no account {owner!r}")
        coid = req.client_order_id
        if coid and coid in self._coids.get(owner, {}):
            return _reject("order_already_exists", f"client_order_id {coid!r} is already open")
        lad = mkt.engine.ladder_price(req)
        if isinstance(lad, OrderResult):
            return lad
        li, lp = lad
        caps = self._netting_caps(owner, mkt, pf)
        count: int = req.count
        if req.reduce_only:
            # Only the nettable holding (not yet claimed by older resting orders) may be traded.
            if not caps[li]:
                return _reject("invalid_order", "reduce_only order would not reduce the position")
            if count > caps[li]:
                count = caps[li]
                req = msgspec.structs.replace(req, count=Qty(count))
        opening = count - min(count, caps[li])
        need = lp * opening + mkt.calc.money(mkt.calc.max_units(lp, count))
        if need > pf.available_cash:
            return _reject("insufficient_balance", f"needs {need} micro-dollars, has {pf.available_cash}")
        res = mkt.engine.submit(owner, req, lad)
        if res.error is not None:
            return res
        order = res.order
        assert order is not None
        if order.status is not OrderStatus.RESTING and not res.fills and not res.makers:
            return res  # nothing rested, filled or was cancelled: no fee, no collateral changed
        self._fees[order.order_id] = FeeAccumulator(mkt.calc)
        fills = self._book_fills(mkt, res.fills)
        if order.status is OrderStatus.RESTING:
            self._order_ticker[order.order_id] = ticker
            if coid:
                self._coids.setdefault(owner, {})[coid] = order.order_id
        else:
            del self._fees[order.order_id]
        touched = {owner}
        self._forget_makers(res.makers, touched)
        for o in touched:
            self._update_reserve(o, mkt)
        return msgspec.structs.replace(res, fills=fills) if fills else res

    def cancel(self, owner: str, order_id: str) -> CancelResult:
        return self.decrease(owner, order_id, reduce_to=0)

    def decrease(self, owner: str, order_id: str, *, reduce_by: int | None = None,
                 reduce_to: int | None = None) -> CancelResult:
        ticker = self._order_ticker.get(order_id)
        mkt = self.markets.get(ticker) if ticker is not None else None
        current = mkt.engine.live(order_id) if mkt is not None else None  # no OrderState built
        if mkt is None or current is None or current.owner != owner:
            return CancelResult(error="not_found", message=f"no open order {order_id!r}")
        if mkt.status not in (TradingStatus.ACTIVE, TradingStatus.PAUSED):  # cancel-all must work when paused
            return CancelResult(error="market_closed", message=f"market {ticker} is {mkt.status.value}")
        if (reduce_by is None) == (reduce_to is None):
            return CancelResult(error="invalid_order", message="give exactly one of reduce_by / reduce_to")
        by = reduce_by if reduce_by is not None else current.remaining - reduce_to  # type: ignore[operator]
        if not 0 < by <= current.remaining:
            msg = f"cannot reduce {current.remaining} by {by}"
            return CancelResult(error="invalid_order", message=msg)
        state, reduced, deltas = mkt.engine.decrease(order_id, reduce_by=by)
        if state.status is not OrderStatus.RESTING:
            self._forget(state)
        self._update_reserve(owner, mkt)
        return CancelResult(order=state, reduced_by=reduced, deltas=deltas)

    def cancel_all(self, owner: str, ticker: str | None = None) -> list[CancelResult]:
        out = []
        for t in [ticker] if ticker is not None else list(self.markets):
            mkt = self.markets.get(t)
            if mkt is not None:
                # resting(): a snapshot of the live orders (no OrderState built just for the ids)
                ids = [o.order_id for o in mkt.engine.resting(owner)]
                out += [self.cancel(owner, oid) for oid in ids]  # type: ignore[arg-type]
        return out

    # ------------------------------------------------------------------ replay liquidity

    def add_liquidity(self, ticker: str, side: Side, price: int, qty: int) -> OrderResult:
        mkt = self.markets[ticker]
        return self._after_replay(mkt, mkt.engine.add_liquidity(side, price, qty))

    def remove_liquidity(self, ticker: str, side: Side, price: int, qty: int, *, traded: bool) -> OrderResult:
        mkt = self.markets[ticker]
        return self._after_replay(mkt, mkt.engine.remove_liquidity(side, price, qty, traded=traded))

    def _after_replay(self, mkt: Market, res: OrderResult) -> OrderResult:
        if not res.fills:
            return res
        fills = self._book_fills(mkt, res.fills)
        touched: set[str] = set()
        self._forget_makers(res.makers, touched)
        for o in touched:
            self._update_reserve(o, mkt)
        return msgspec.structs.replace(res, fills=fills)

    # ------------------------------------------------------------------ lifecycle

    def pause_market(self, ticker: str, paused: bool = True) -> None:
        mkt = self.markets[ticker]
        if mkt.status in (TradingStatus.ACTIVE, TradingStatus.PAUSED):
            mkt.status = TradingStatus.PAUSED if paused else TradingStatus.ACTIVE

    def close_market(self, ticker: str) -> tuple[list[OrderState], list[BookDelta]]:
        """Stop trading; cancel every resting order and release its collateral; empty the book."""
        mkt = self.markets[ticker]
        if mkt.status is TradingStatus.SETTLED:
            return [], []
        mkt.status = TradingStatus.CLOSED
        canceled, deltas = mkt.engine.close()
        for state in canceled:
            self._forget(state)
        for owner in [o for (o, t) in self._reserved if t == ticker]:
            self._update_reserve(owner, mkt)
        return canceled, deltas

    def settle_market(self, ticker: str, result: bool | int) -> SettlementResult:
        """Close (if needed) and pay every position: True = YES wins, False = NO wins, int = the
        scalar YES settlement value in ticks."""
        mkt = self.markets[ticker]
        if mkt.status is TradingStatus.SETTLED:
            raise ValueError(f"market {ticker} is already settled")
        value = (PRICE_SCALE if result else 0) if isinstance(result, bool) else int(result)
        if not 0 <= value <= PRICE_SCALE:
            raise ValueError(f"settlement value {value} outside [0, {PRICE_SCALE}]")
        canceled, deltas = self.close_market(ticker)
        payouts = {owner: pf.settle(ticker, value) for owner, pf in self.accounts.items()
                   if ticker in pf.positions}
        mkt.status, mkt.settlement_value = TradingStatus.SETTLED, value
        return SettlementResult(ticker=ticker, settlement_value=value, canceled=tuple(canceled),
                                deltas=tuple(deltas), payouts=payouts)

    # ------------------------------------------------------------------ views

    def account(self, owner: str) -> Portfolio:
        return self.accounts[owner]

    def engine(self, ticker: str) -> MatchingEngine:
        return self.markets[ticker].engine

    def open_orders(self, owner: str, ticker: str | None = None) -> list[OrderState]:
        tickers = [ticker] if ticker is not None else list(self.markets)
        return [o for t in tickers for o in self.markets[t].engine.open_orders(owner)]

    def get_order(self, order_id: str) -> OrderState | None:
        ticker = self._order_ticker.get(order_id)
        return None if ticker is None else self.markets[ticker].engine.get(order_id)

    def reserved(self, owner: str, ticker: str | None = None) -> Money:
        if ticker is None:
            return self.accounts[owner].reserved
        return Money(self._reserved.get((owner, ticker), 0))

    def mark_view(self, owner: str, ticker: str) -> _MarkView:
        return _MarkView(self.markets[ticker].engine, owner)

    def account_value(self, owner: str) -> Money:
        """Cash + positions marked at the best bid of the held side (other parties' bids only)."""
        pf = self.accounts[owner]
        return pf.total_value({t: self.mark_view(owner, t) for t in pf.positions if t in self.markets})

    # ------------------------------------------------------------------ internals

    def _book_fills(self, mkt: Market, fills: tuple[Fill, ...]) -> tuple[Fill, ...]:
        """Charge fees and update both parties' portfolios; return fills with fees/positions."""
        if not fills:
            return fills
        out = []
        ticker = mkt.ticker
        for f in fills:
            tf = mf = 0
            tpos = mpos = None
            if f.taker_owner is not None:
                price = f.price_paid(True)
                tf = self._fees[f.taker_order_id].charge(price, f.count, True)  # type: ignore[index]
                pf = self.accounts[f.taker_owner]
                pf.apply_fill(ticker, f.taker_outcome_side, price, f.count, tf)
                tpos = pf.position(ticker)
            if f.maker_owner is not None:
                price = f.price_paid(False)
                mf = self._fees[f.maker_order_id].charge(price, f.count, False)  # type: ignore[index]
                pf = self.accounts[f.maker_owner]
                pf.apply_fill(ticker, f.taker_outcome_side.other, price, f.count, mf)
                mpos = pf.position(ticker)
            if tpos is None and mpos is None:
                out.append(f)
            else:
                out.append(msgspec.structs.replace(f, taker_fee=tf, maker_fee=mf, taker_position=tpos,
                                                   maker_position=mpos))
        return tuple(out)

    def _forget_makers(self, makers: tuple[OrderState, ...], touched: set[str]) -> None:
        for m in makers:
            touched.add(m.owner)
            if m.status is not OrderStatus.RESTING:
                self._forget(m)

    def _forget(self, state: OrderState) -> None:
        self._fees.pop(state.order_id, None)
        self._order_ticker.pop(state.order_id, None)
        if state.client_order_id:
            mine = self._coids.get(state.owner)
            if mine is not None and mine.get(state.client_order_id) == state.order_id:
                del mine[state.client_order_id]

    def _netting_caps(self, owner: str, mkt: Market, pf: Portfolio) -> list[int]:
        """Holding still nettable per ladder [YES, NO] after older resting orders' claims."""
        pos = pf.position(mkt.ticker)
        caps = [-pos if pos < 0 else 0, pos if pos > 0 else 0]  # YES bids net a NO holding and vice versa
        for o in mkt.engine.resting_view(owner):
            c, rem = caps[o.li], o.remaining
            caps[o.li] = c - (rem if rem < c else c)
        return caps

    def _requirement(self, owner: str, mkt: Market, pf: Portfolio) -> int:
        pos = pf.position(mkt.ticker)
        caps = [-pos if pos < 0 else 0, pos if pos > 0 else 0]
        total = 0
        fees = self._fees
        for o in mkt.engine.resting_view(owner):
            li, rem, lp = o.li, o.remaining, o.lprice
            c = caps[li]
            net = rem if rem < c else c
            caps[li] = c - net
            total += lp * (rem - net) + fees[o.order_id].bound(lp, rem)  # type: ignore[index]
        return total

    def _update_reserve(self, owner: str, mkt: Market) -> None:
        pf = self.accounts[owner]
        key = (owner, mkt.ticker)
        old = self._reserved.get(key, 0)
        need = self._requirement(owner, mkt, pf)
        if need > old:
            pf.reserve(Money(need - old))  # raises InsufficientFunds: would be a collateral bug
        elif need < old:
            pf.release(Money(old - need))
        if need:
            self._reserved[key] = need
        else:
            self._reserved.pop(key, None)
