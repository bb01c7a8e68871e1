"""ExchangeState: the simulator's single source of truth, shared by the server, the synthetic
market generator and replay.

It owns a :class:`kalshiflow.market.venue.Venue` (matching + accounting: there is exactly one
matching engine and one portfolio implementation in the project) and adds what an exchange shows
on top of it: market metadata and lifecycle, volume / open interest / last price, the recent
public tape, and each account's order and fill history.

Every change is published synchronously, in order, to the registered listeners as typed events
(:mod:`kalshiflow.exchange.events`). The WS layer turns them into frames; the generator and tests
may listen too. Listeners must be quick and must not call back into the state's mutating methods
(they run inside the operation that caused the event).

Single-threaded by design: all calls come from one asyncio loop (the server's). Code running the
simulator in another thread goes through :mod:`kalshiflow.exchange.embedded`, which marshals
calls onto that loop.

Public API (stable; the generator and replay build on it):

- markets: ``add_market(info)``, ``open_market``, ``pause_market``, ``resume_market``,
  ``close_market``, ``determine_market(ticker, result)``, ``settle_market(ticker, result)``,
  ``set_close_time``, ``advance()`` (applies time-driven transitions: open at open_time, close
  at close_time, expire good-till-time orders);
- accounts: ``add_account(owner, balance=None, keep_history=True)``, ``has_account``, ``deposit``;
- trading: ``submit(owner, ticker, OrderRequest) -> SubmitResult``,
  ``cancel(owner, order_id) -> CancelResult``, ``cancel_all(owner, ticker=None)``;
- replay: ``apply_external_delta(ticker, side, price, delta, traded)``, and
  ``apply_external_deltas(changes)`` for many at once (same events, one timestamp);
- listeners: ``add_listener(fn) -> remove``;
- reads: ``market``, ``markets``, ``stats``, ``book``, ``order_book``, ``balance``,
  ``portfolio_value``, ``positions``, ``orders``, ``order``, ``fills``, ``trades``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import msgspec

from kalshiflow.exchange.events import (
    BookDelta,
    BookView,
    CancelResult,
    ExchangeEvent,
    FillEvent,
    LifecycleEvent,
    LifecycleType,
    MarketInfo,
    MarketStats,
    MarketStatus,
    OrderEvent,
    OrderRecord,
    PositionEvent,
    PositionView,
    Reject,
    SubmitResult,
    TradeEvent,
)
from kalshiflow.exchange.history import History, MarketActivity
from kalshiflow.exchange.publisher import Listener, Publisher
from kalshiflow.market.book import OrderBook
from kalshiflow.market.fees import FeeSchedule, FeeType
from kalshiflow.market.matching import OrderRequest
from kalshiflow.market.prices import MONEY_SCALE, PRICE_SCALE, Money, Price, Qty, grid_by_name
from kalshiflow.market.types import OrderStatus, Side, TimeInForce
from kalshiflow.market.venue import Venue

__all__ = [
    "BookDelta",
    "BookView",
    "CancelResult",
    "ExchangeEvent",
    "ExchangeState",
    "FillEvent",
    "LifecycleEvent",
    "MarketInfo",
    "MarketStats",
    "MarketStatus",
    "OrderEvent",
    "OrderRecord",
    "OrderRequest",
    "PositionEvent",
    "PositionView",
    "Reject",
    "SubmitResult",
    "TradeEvent",
]

log = logging.getLogger(__name__)

DEFAULT_STARTING_BALANCE = Money(10_000 * MONEY_SCALE)


class ExchangeState:
    """Markets, accounts, matching (via Venue), history and the event stream of the simulator.

    ``clock`` returns epoch seconds (the generator may pass a simulated clock). ``seed`` makes
    order and trade ids deterministic. ``history_limit`` bounds each account's kept terminal
    orders and fills; accounts added with ``keep_history=False`` (generator bots) keep none, so
    a flood of bot activity does not grow memory.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        starting_balance: Money = DEFAULT_STARTING_BALANCE,
        *,
        seed: int = 0,
        history_limit: int = 10_000,
        recent_trades_limit: int = 10_000,
    ) -> None:
        self.clock = clock
        self.starting_balance = starting_balance
        self.history_limit = history_limit
        self.venue = Venue(clock=clock, seed=seed)
        self._markets: dict[str, MarketInfo] = {}
        self.history = History(history_limit, recent_trades_limit)
        self._out = Publisher(self.venue, self.history)

    # ------------------------------------------------------------------ listeners

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Register ``fn`` for every event; returns a function that unregisters it."""
        return self._out.add_listener(fn)

    # ------------------------------------------------------------------ accounts

    def add_account(self, owner: str, balance: Money | None = None, *, keep_history: bool = True) -> None:
        """Open an account (idempotent: an existing account is left as it is)."""
        if owner in self.venue.accounts:
            return
        self.venue.open_account(owner, self.starting_balance if balance is None else balance)
        if keep_history:
            self.history.track(owner)

    def has_account(self, owner: str) -> bool:
        return owner in self.venue.accounts

    def deposit(self, owner: str, amount: Money) -> None:
        self.venue.deposit(owner, amount)

    # ------------------------------------------------------------------ market lifecycle

    def add_market(self, info: MarketInfo) -> MarketInfo:
        """List a market (status initialized or active). Publishes ``created``."""
        if info.ticker in self._markets:
            raise ValueError(f"market {info.ticker!r} already exists")
        if info.status not in (MarketStatus.INITIALIZED, MarketStatus.ACTIVE):
            raise ValueError(f"a new market must be initialized or active, not {info.status.value}")
        # Normalise enum fields: callers may pass plain strings (msgspec does not validate on init).
        info = msgspec.structs.replace(
            info, fee_type=FeeType(info.fee_type), status=MarketStatus(info.status)
        )
        fees = FeeSchedule(fee_type=info.fee_type, fee_multiplier=info.fee_multiplier)
        self.venue.add_market(info.ticker, grid=grid_by_name(info.price_level_structure), fees=fees)
        if not info.created_time:
            info = msgspec.structs.replace(info, created_time=self.clock())
        self._markets[info.ticker] = info
        self._out.activity[info.ticker] = MarketActivity()
        self._lifecycle(info, "created")
        return info

    def open_market(self, ticker: str) -> None:
        """initialized -> active (Kalshi sends no lifecycle message for it; listeners get ``opened``)."""
        info = self._require(ticker)
        if info.status is MarketStatus.INITIALIZED:
            self._set_status(info, MarketStatus.ACTIVE, "opened")

    def pause_market(self, ticker: str) -> None:
        """active -> inactive: no orders or cancels; resting orders stay (``deactivated``)."""
        info = self._require(ticker)
        if info.status is MarketStatus.ACTIVE:
            self.venue.pause_market(ticker, True)
            self._set_status(info, MarketStatus.INACTIVE, "deactivated")

    def resume_market(self, ticker: str) -> None:
        """inactive -> active; Kalshi cancels all resting orders on reactivation (``activated``)."""
        info = self._require(ticker)
        if info.status is not MarketStatus.INACTIVE:
            return
        self.venue.pause_market(ticker, False)
        self._set_status(info, MarketStatus.ACTIVE, "activated")
        for owner in self.venue.engine(ticker).owners():
            self.cancel_all(owner, ticker)

    def set_close_time(self, ticker: str, close_time: float) -> None:
        info = self._require(ticker)
        info = self._markets[ticker] = msgspec.structs.replace(info, close_time=close_time)
        self._lifecycle(info, "close_date_updated")

    def close_market(self, ticker: str) -> None:
        """Stop trading and cancel every resting order (Kalshi: no lifecycle message; ``closed``)."""
        info = self._require(ticker)
        if info.status in (MarketStatus.CLOSED, MarketStatus.DETERMINED, MarketStatus.FINALIZED):
            return
        canceled, deltas = self.venue.close_market(ticker)
        ts = self.clock()
        self._out.deltas(ticker, deltas, ts, None, None)
        for state in canceled:
            self._out.order_update(state, ts)
        self._set_status(info, MarketStatus.CLOSED, "closed")

    def determine_market(self, ticker: str, result: str) -> None:
        """Set the result ("yes"/"no"); closes the market first if needed (``determined``)."""
        if result not in ("yes", "no"):
            raise ValueError(f"result must be 'yes' or 'no', not {result!r}")
        info = self._require(ticker)
        if info.status is MarketStatus.FINALIZED:
            raise ValueError(f"market {ticker} is already settled")
        self.close_market(ticker)
        info = self._markets[ticker] = msgspec.structs.replace(
            self._markets[ticker], status=MarketStatus.DETERMINED, result=result
        )
        self._lifecycle(info, "determined")

    def settle_market(self, ticker: str, result: str | None = None) -> dict[str, Money]:
        """Pay out every position: $1 per winning contract (``settled``). ``result`` may be
        omitted when the market was already determined. Returns owner -> payout."""
        info = self._require(ticker)
        if info.status is MarketStatus.FINALIZED:
            raise ValueError(f"market {ticker} is already settled")
        if info.status is not MarketStatus.DETERMINED or (result is not None and result != info.result):
            if result is None:
                raise ValueError(f"market {ticker} has no result yet; pass result='yes'/'no'")
            self.determine_market(ticker, result)
        info = self._markets[ticker]
        settlement = self.venue.settle_market(ticker, info.result == "yes")
        ts = self.clock()
        for owner in settlement.payouts:
            self._out.position_changed(owner, ticker, ts)
        self._set_status(info, MarketStatus.FINALIZED, "settled")
        return {owner: Money(paid) for owner, paid in settlement.payouts.items()}

    def advance(self, now: float | None = None) -> None:
        """Apply time-driven transitions: open at open_time, close at close_time, expire
        good-till-time orders. The server calls this on a timer; generators may call it too."""
        now = self.clock() if now is None else now
        for info in list(self._markets.values()):
            if info.status is MarketStatus.INITIALIZED and info.open_time <= now:
                self.open_market(info.ticker)
            elif info.status is MarketStatus.ACTIVE and info.close_time <= now:
                self.close_market(info.ticker)
        due = [oid for oid, exp in self.history.expiry.items() if exp <= now]
        for order_id in due:
            state = self.venue.get_order(order_id)
            self.history.expiry.pop(order_id, None)
            if state is not None and self._markets[state.ticker].status is MarketStatus.ACTIVE:
                self.cancel(state.owner, order_id)

    # ------------------------------------------------------------------ trading

    def submit(
        self, owner: str, ticker: str, request: OrderRequest, *, expiration_ts: float | None = None
    ) -> SubmitResult:
        """Match an order. Rejections come back in ``reject`` (Kalshi codes), never raised."""
        info = self._markets.get(ticker)
        if info is None:
            return SubmitResult(None, reject=Reject("market_not_found", f"market {ticker!r} not found"))
        if info.status is not MarketStatus.ACTIVE:
            code = "trading_paused" if info.status is MarketStatus.INACTIVE else "market_closed"
            return SubmitResult(None, reject=Reject(code, f"market {ticker} is {info.status.value}"))
        if expiration_ts is not None:
            if request.time_in_force is not TimeInForce.GTC:
                return SubmitResult(
                    None, reject=Reject("invalid_order", "expiration_ts needs good_till_canceled")
                )
            if expiration_ts <= self.clock():
                return SubmitResult(None, reject=Reject("invalid_order", "expiration_ts is in the past"))
        res = self.venue.submit(owner, ticker, request)
        if res.error is not None:
            return SubmitResult(None, reject=Reject(res.error, res.message))
        assert res.order is not None
        ts = self.clock()
        if expiration_ts is not None and res.order.status is OrderStatus.RESTING:
            self.history.expiry[res.order.order_id] = expiration_ts
        fills = self._out.result(ticker, res, ts, owner, request.client_order_id)
        record = self._out.order_update(res.order, ts)
        return SubmitResult(record, tuple(f for f in fills if f.owner == owner))

    def cancel(self, owner: str, order_id: str) -> CancelResult:
        """Cancel a resting order; ``reduced_by`` is the quantity removed from the book."""
        state = self.venue.get_order(order_id)
        if state is None or state.owner != owner:
            return CancelResult(None, reject=Reject("not_found", f"order {order_id!r} not found"))
        info = self._markets[state.ticker]
        if info.status is not MarketStatus.ACTIVE:
            return CancelResult(
                None, reject=Reject("market_closed", f"market {info.ticker} is {info.status.value}")
            )
        res = self.venue.cancel(owner, order_id)
        if res.error is not None:
            return CancelResult(None, reject=Reject(res.error, res.message))
        assert res.order is not None
        ts = self.clock()
        self._out.deltas(state.ticker, res.deltas, ts, owner, state.client_order_id)
        return CancelResult(self._out.order_update(res.order, ts), Qty(res.reduced_by))

    def cancel_all(self, owner: str, ticker: str | None = None) -> list[CancelResult]:
        return [self.cancel(owner, o.order_id) for o in self.venue.open_orders(owner, ticker)]

    def apply_external_delta(
        self, ticker: str, side: Side, price: Price, delta: Qty, traded: bool = False
    ) -> None:
        """Replay: anonymous crowd volume joins (``delta`` > 0) or leaves (< 0) a level.

        ``traded`` marks a recorded trade: it consumes the level from the front and fills any
        account order it reaches (see matching.py's replay queue model); a recorded trade is also
        printed on the public tape. The resulting book deltas are published like any other.
        """
        self._require(ticker)
        if delta > 0:
            res = self.venue.add_liquidity(ticker, side, price, delta)
        elif delta < 0:
            res = self.venue.remove_liquidity(ticker, side, price, -delta, traded=traded)
        else:
            return
        ts = self.clock()
        if res.fills or res.makers:
            self._out.result(ticker, res, ts, None, None, tape=False)
        else:  # crowd volume only (the usual case): just the book deltas, as result() would publish
            self._out.deltas(ticker, res.deltas, ts, None, None)
        if traded and delta < 0:
            yes_price = price if side is Side.YES else PRICE_SCALE - price
            self._out.trade(ticker, self.venue.ids(), Price(yes_price), Qty(-delta), side.other, ts)

    def apply_external_deltas(self, changes: Iterable[tuple[str, Side, int, int, bool]]) -> int:
        """Replay many ``(ticker, side, price, delta, traded)`` changes in one call, in order.

        Exactly the effect and the events of calling :meth:`apply_external_delta` on each, except
        that the whole batch carries one timestamp (the clock is read once). Meant for feeds that
        inject deltas in bulk (a flood driver, a fast replay): it skips the per-call overhead.
        Returns how many changes were applied (zero deltas are skipped, as one by one). An
        unknown ticker raises ``KeyError`` after the changes before it were applied.
        """
        markets = self._markets
        venue = self.venue
        out = self._out
        add = venue.add_liquidity
        remove = venue.remove_liquidity
        publish_deltas = out.deltas
        yes = Side.YES
        ts = self.clock()
        applied = 0
        for ticker, side, price, delta, traded in changes:
            if ticker not in markets:
                raise KeyError(f"market {ticker!r} not found")
            if delta > 0:
                res = add(ticker, side, price, delta)
            elif delta < 0:
                res = remove(ticker, side, price, -delta, traded=traded)
            else:
                continue
            applied += 1
            if res.fills or res.makers:
                out.result(ticker, res, ts, None, None, tape=False)
            else:
                publish_deltas(ticker, res.deltas, ts, None, None)
            if traded and delta < 0:
                yes_price = price if side is yes else PRICE_SCALE - price
                out.trade(ticker, venue.ids(), Price(yes_price), Qty(-delta), side.other, ts)
        return applied

    # ------------------------------------------------------------------ reads

    def market(self, ticker: str) -> MarketInfo | None:
        return self._markets.get(ticker)

    def markets(self) -> list[MarketInfo]:
        """Every market, in listing order."""
        return list(self._markets.values())

    def stats(self, ticker: str) -> MarketStats:
        return self._out.activity[ticker].snapshot(self.clock())

    def order_book(self, ticker: str) -> OrderBook:
        """The market's live L2 book (read-only: only the matching engine may change it)."""
        return self.venue.engine(ticker).book

    def book(self, ticker: str) -> BookView:
        ob = self.order_book(ticker)
        return BookView(tuple(ob.levels(Side.YES)), tuple(ob.levels(Side.NO)))

    def balance(self, owner: str) -> Money:
        """Available cash: what Kalshi reports as ``balance`` (resting orders' collateral excluded)."""
        return self.venue.account(owner).available_cash

    def portfolio_value(self, owner: str) -> Money:
        """Open positions marked at the best bid of the held side (other parties' bids only)."""
        return Money(self.venue.account_value(owner) - self.venue.account(owner).cash)

    def positions(self, owner: str) -> list[PositionView]:
        """Unsettled positions with a holding or a resting order, in first-traded order."""
        pf = self.venue.account(owner)
        resting: dict[str, int] = {}
        for o in self.venue.open_orders(owner):
            resting[o.ticker] = resting.get(o.ticker, 0) + 1
        out: list[PositionView] = []
        tickers = list(pf.positions) + [t for t in resting if t not in pf.positions]
        for ticker in tickers:
            pos = pf.positions.get(ticker)
            if (pos is None or pos.settled or not pos.qty) and not resting.get(ticker):
                continue
            info = self._markets[ticker]
            out.append(
                PositionView(
                    ticker=ticker,
                    event_ticker=info.event_ticker,
                    position=Qty(pos.qty if pos else 0),
                    position_cost=Money(pos.cost if pos else 0),
                    realized_pnl=Money(pos.realized_pnl if pos else 0),
                    fees_paid=Money(pos.fees_paid if pos else 0),
                    total_traded=Money(pos.traded if pos else 0),
                    volume=Qty(pos.volume if pos else 0),
                    resting_orders_count=resting.get(ticker, 0),
                    last_updated_ts=self._out.position_ts.get((owner, ticker), info.created_time),
                )
            )
        return out

    def orders(self, owner: str) -> list[OrderRecord]:
        """The account's orders, newest first (terminal ones bounded by ``history_limit``)."""
        return self.history.orders(owner)

    def order(self, owner: str, order_id: str) -> OrderRecord | None:
        return self.history.order(owner, order_id)

    def fills(self, owner: str) -> list[FillEvent]:
        """The account's fills, newest first."""
        return self.history.fills(owner)

    def trades(self, ticker: str | None = None) -> list[TradeEvent]:
        """Recent public trades, newest first."""
        return self.history.recent_trades(ticker)

    # ------------------------------------------------------------------ internals

    def _require(self, ticker: str) -> MarketInfo:
        info = self._markets.get(ticker)
        if info is None:
            raise KeyError(f"market {ticker!r} not found")
        return info

    def _set_status(self, info: MarketInfo, status: MarketStatus, event: LifecycleType) -> None:
        info = self._markets[info.ticker] = msgspec.structs.replace(info, status=status)
        self._lifecycle(info, event)

    def _lifecycle(self, info: MarketInfo, event: LifecycleType) -> None:
        self._out.publish(LifecycleEvent(event_type=event, market=info, ts=self.clock()))
