"""What the exchange remembers beyond the Venue's live state: per-market activity (volume, open
interest, last price, the public tape) and per-account order and fill history.

The Venue keeps only live orders and positions; Kalshi's REST API also reports finished orders,
past fills, per-order fill costs and fees, and market volume. Those are kept here, bounded, so a
long-running simulator with generator bots does not grow without limit.
"""

from __future__ import annotations

from collections import deque

from kalshiflow.exchange.events import FillEvent, MarketStats, OrderRecord, TradeEvent
from kalshiflow.market.matching import OrderState
from kalshiflow.market.prices import Money, Price, Qty
from kalshiflow.market.types import OrderStatus

_DAY_S = 86_400.0


class MarketActivity:
    """Running figures of one market."""

    __slots__ = (
        "volume",
        "dollar_volume",
        "oi_yes",
        "oi_no",
        "last_price",
        "last_trade_ts",
        "recent",
        "recent_volume",
    )

    def __init__(self) -> None:
        self.volume = self.dollar_volume = 0
        # Contracts held long YES / long NO over all accounts. They are equal when every holder
        # is an account; replay's anonymous crowd makes them differ, so open interest is the max.
        self.oi_yes = self.oi_no = 0
        self.last_price: int | None = None
        self.last_trade_ts: float | None = None
        self.recent: deque[tuple[float, int]] = deque()  # (ts, qty) of trades in the last 24 h
        self.recent_volume = 0  # their total, kept running so reads stay O(1)

    def trade(self, yes_price: int, count: int, ts: float) -> None:
        self.volume += count
        self.dollar_volume += yes_price * count
        self.last_price = yes_price
        self.last_trade_ts = ts
        self.recent.append((ts, count))
        self.recent_volume += count

    def position_moved(self, prior: int, post: int) -> None:
        self.oi_yes += max(post, 0) - max(prior, 0)
        self.oi_no += max(-post, 0) - max(-prior, 0)

    def snapshot(self, now: float) -> MarketStats:
        horizon = now - _DAY_S
        while self.recent and self.recent[0][0] < horizon:
            self.recent_volume -= self.recent.popleft()[1]
        return MarketStats(
            volume=Qty(self.volume),
            volume_24h=Qty(self.recent_volume),
            open_interest=Qty(max(self.oi_yes, self.oi_no)),
            last_price=None if self.last_price is None else Price(self.last_price),
            dollar_volume=Money(self.dollar_volume),
            last_trade_ts=self.last_trade_ts,
        )


class _OrderMoney:
    """Running fill costs and fees of one live order (Kalshi's taker/maker fill cost and fees)."""

    __slots__ = ("taker_cost", "maker_cost", "taker_fees", "maker_fees")

    def __init__(self) -> None:
        self.taker_cost = self.maker_cost = self.taker_fees = self.maker_fees = 0


class History:
    """Order records, fills, the public tape and good-till-time expiries.

    Only accounts registered with :meth:`track` keep order and fill records (bots do not); the
    per-order money totals are kept for every live order because they are needed for the order
    events every account's listeners receive.
    """

    def __init__(self, history_limit: int = 10_000, recent_trades_limit: int = 10_000) -> None:
        self.history_limit = history_limit
        self.trades: deque[TradeEvent] = deque(maxlen=recent_trades_limit)
        self.expiry: dict[str, float] = {}  # resting good-till-time order_id -> expiration ts
        self._orders: dict[str, dict[str, OrderRecord]] = {}  # owner -> order_id -> record, oldest first
        self._fills: dict[str, deque[FillEvent]] = {}
        self._money: dict[str, _OrderMoney] = {}

    def track(self, owner: str) -> None:
        if owner not in self._orders:
            self._orders[owner] = {}
            self._fills[owner] = deque(maxlen=self.history_limit)

    def add_fill_money(self, order_id: str, is_taker: bool, cost: int, fee: int) -> None:
        money = self._money.get(order_id)
        if money is None:
            money = self._money[order_id] = _OrderMoney()
        if is_taker:
            money.taker_cost += cost
            money.taker_fees += fee
        else:
            money.maker_cost += cost
            money.maker_fees += fee

    def add_fill(self, fill: FillEvent) -> None:
        fills = self._fills.get(fill.owner)
        if fills is not None:
            fills.append(fill)

    def record(self, state: OrderState, ts: float) -> OrderRecord:
        """The order's record after an operation; stored for tracked accounts."""
        terminal = state.status is not OrderStatus.RESTING
        money = self._money.pop(state.order_id, None) if terminal else self._money.get(state.order_id)
        expiration = self.expiry.pop(state.order_id, None) if terminal else self.expiry.get(state.order_id)
        mine = self._orders.get(state.owner)
        previous = mine.get(state.order_id) if mine is not None else None
        if expiration is None and previous is not None:
            expiration = previous.expiration_time
        record = OrderRecord(
            order_id=state.order_id,
            owner=state.owner,
            ticker=state.ticker,
            client_order_id=state.client_order_id or "",
            side=state.side,
            action=state.action,
            type=state.type,
            time_in_force=state.time_in_force,
            yes_price=Price(state.yes_price),
            initial_count=Qty(state.initial_count),
            fill_count=Qty(state.fill_count),
            remaining_count=Qty(state.remaining_count),
            status=state.status,
            taker_fill_cost=Money(money.taker_cost if money else 0),
            maker_fill_cost=Money(money.maker_cost if money else 0),
            taker_fees=Money(money.taker_fees if money else 0),
            maker_fees=Money(money.maker_fees if money else 0),
            created_time=state.created_ts,
            last_update_time=ts,
            expiration_time=expiration,
        )
        if mine is not None:
            mine[state.order_id] = record
            if len(mine) > self.history_limit:
                self._trim(mine)
        return record

    def _trim(self, records: dict[str, OrderRecord]) -> None:
        """Drop the oldest terminal orders beyond ``history_limit`` (resting ones always stay)."""
        excess = len(records) - self.history_limit
        for order_id in [oid for oid, r in records.items() if r.status is not OrderStatus.RESTING][:excess]:
            del records[order_id]

    # ------------------------------------------------------------------ reads

    def orders(self, owner: str) -> list[OrderRecord]:
        return list(reversed(self._orders.get(owner, {}).values()))

    def order(self, owner: str, order_id: str) -> OrderRecord | None:
        return self._orders.get(owner, {}).get(order_id)

    def fills(self, owner: str) -> list[FillEvent]:
        return list(reversed(self._fills.get(owner, ())))

    def recent_trades(self, ticker: str | None) -> list[TradeEvent]:
        return [t for t in reversed(self.trades) if ticker is None or t.ticker == ticker]
