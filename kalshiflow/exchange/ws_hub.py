"""WS fan-out: turns ExchangeState events into Kalshi WS v2 frames for every subscription.

Subscriptions are indexed by what selects them (market ticker, account, or "all"), so an event
costs only the subscriptions it reaches. Frames are encoded with the protocol package's encoders
(market_data for the order book, ws_commands and ws_data for the rest): the simulator emits exactly what our
clients decode, in Kalshi's superset wire form.

Sequence numbers (kalshi-protocol.md §1.8): ONE counter per subscription (sid) shared by all its
markets; snapshots, deltas and ``ok`` replies each take the next number; ``subscribed`` takes none.

Slow consumers never stall the exchange: frames go into each connection's bounded queue
(:class:`Outbox`); a subscription whose frame does not fit is dropped with error 25 ("Subscription
buffer overflow", terminal), as Kalshi does, and counted in ``Hub.overflows``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from kalshiflow.exchange.events import (
    BookDelta,
    FillEvent,
    LifecycleEvent,
    OrderEvent,
    PositionEvent,
    TradeEvent,
)
from kalshiflow.exchange.state import ExchangeEvent, ExchangeState
from kalshiflow.exchange.ws_frames import (
    TickerKey,
    data_frame,
    fill_model,
    lifecycle_model,
    position_model,
    ticker_key,
    ticker_msg,
    user_order_msg,
)
from kalshiflow.market.prices import complement
from kalshiflow.market.types import Side
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.market_data import encode_delta_msg, encode_snapshot

ORDERBOOK = "orderbook_delta"
TRADE = "trade"
FILL = "fill"
POSITIONS = "market_positions"
LIFECYCLE = "market_lifecycle_v2"
TICKER = "ticker"
USER_ORDERS = "user_orders"
SUPPORTED_CHANNELS = frozenset({ORDERBOOK, TRADE, FILL, POSITIONS, LIFECYCLE, TICKER, USER_ORDERS})
# Lifecycle events Kalshi announces (time-driven open/close are not announced: §1.7.7).
_WIRE_LIFECYCLE = frozenset(
    {"created", "activated", "deactivated", "close_date_updated", "determined", "settled"}
)


class Outbox:
    """A connection's bounded outgoing queue, drained by the connection's writer task."""

    __slots__ = ("frames", "limit", "wakeup", "closed")

    def __init__(self, limit: int) -> None:
        self.frames: deque[str] = deque()
        self.limit = limit
        self.wakeup = asyncio.Event()
        self.closed = False

    def has_room(self) -> bool:
        return len(self.frames) < self.limit

    def put(self, frame: str) -> None:
        if self.closed:
            return
        self.frames.append(frame)
        if not self.wakeup.is_set():
            self.wakeup.set()


class Subscription:
    """One sid. ``tickers`` None = every market (channels whose market filter is optional)."""

    __slots__ = ("sid", "channel", "conn", "tickers", "seq", "use_yes_price")

    def __init__(
        self, sid: int, channel: str, conn: Client, tickers: list[str] | None, use_yes_price: bool
    ) -> None:
        self.sid = sid
        self.channel = channel
        self.conn = conn
        self.tickers: dict[str, None] | None = None if tickers is None else dict.fromkeys(tickers)
        self.seq = 0
        self.use_yes_price = use_yes_price

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def selects(self, ticker: str) -> bool:
        return self.tickers is None or ticker in self.tickers


class Client:
    """What the hub needs of a connection: its account, its subscriptions and its outbox."""

    def __init__(self, owner: str, queue_limit: int) -> None:
        self.owner = owner
        self.outbox = Outbox(queue_limit)
        self.subs: dict[int, Subscription] = {}
        self.next_sid = 1

    def by_channel(self, channel: str) -> Subscription | None:
        for sub in self.subs.values():
            if sub.channel == channel:
                return sub
        return None


def _encode(message: wc.Reply | wd.DataFrame) -> str:
    return wd.encode_message(message).decode()


class Hub:
    """All live subscriptions of the server, fed by ExchangeState events."""

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self.overflows = 0
        self.frames_sent = 0
        self.clients: dict[Client, None] = {}
        self._by_ticker: dict[str, dict[str, dict[Subscription, None]]] = {
            ORDERBOOK: {},
            TRADE: {},
            TICKER: {},
        }
        self._all_markets: dict[str, dict[Subscription, None]] = {TRADE: {}, LIFECYCLE: {}, TICKER: {}}
        self._by_owner: dict[str, dict[str, dict[Subscription, None]]] = {
            FILL: {},
            POSITIONS: {},
            USER_ORDERS: {},
        }
        self._book_subs = self._by_ticker[ORDERBOOK]  # the delta hot path's index
        self._market_ids: dict[str, str] = {}
        # Per market: the ticker fields last announced, and the size of its last trade.
        self._ticker_sent: dict[str, TickerKey] = {}
        self._last_trade_size: dict[str, int] = {}
        self._remove_listener = state.add_listener(self.on_event)

    def close(self) -> None:
        self._remove_listener()

    # ------------------------------------------------------------------ registry

    def register(self, client: Client) -> None:
        self.clients[client] = None

    def queued_frames(self) -> int:
        """Frames waiting in every connection's outbox (load / backpressure probe)."""
        return sum(len(c.outbox.frames) for c in self.clients)

    def attach(self, sub: Subscription) -> None:
        sub.conn.subs[sub.sid] = sub
        if sub.channel in self._by_owner:
            self._by_owner[sub.channel].setdefault(sub.conn.owner, {})[sub] = None
        elif sub.tickers is None:
            self._all_markets[sub.channel][sub] = None
        else:
            self._index(sub, sub.tickers)

    def _index(self, sub: Subscription, tickers: Iterable[str]) -> None:
        index = self._by_ticker[sub.channel]
        for t in tickers:
            index.setdefault(t, {})[sub] = None

    def add_tickers(self, sub: Subscription, tickers: list[str]) -> list[str]:
        """Add markets to a sub; returns the ones that were new."""
        assert sub.tickers is not None
        new = [t for t in dict.fromkeys(tickers) if t not in sub.tickers]
        sub.tickers.update(dict.fromkeys(new))
        if sub.channel in self._by_ticker:
            self._index(sub, new)
        return new

    def remove_tickers(self, sub: Subscription, tickers: list[str]) -> None:
        assert sub.tickers is not None
        for t in tickers:
            if sub.tickers.pop(t, 0) is None and sub.channel in self._by_ticker:
                subs = self._by_ticker[sub.channel].get(t)
                if subs is not None:
                    subs.pop(sub, None)
                    if not subs:
                        del self._by_ticker[sub.channel][t]

    def detach(self, sub: Subscription) -> None:
        sub.conn.subs.pop(sub.sid, None)
        if sub.channel in self._by_owner:
            self._by_owner[sub.channel].get(sub.conn.owner, {}).pop(sub, None)
        elif sub.tickers is None:
            self._all_markets[sub.channel].pop(sub, None)
        else:
            self.remove_tickers(sub, list(sub.tickers))

    def detach_client(self, client: Client) -> None:
        self.clients.pop(client, None)
        client.outbox.closed = True
        for sub in list(client.subs.values()):
            self.detach(sub)

    # ------------------------------------------------------------------ sending

    def reply(self, client: Client, message: wc.Reply) -> None:
        """Command replies always fit: they are answers the client is waiting for."""
        client.outbox.put(_encode(message))

    def _send(self, sub: Subscription, frame: str) -> None:
        box = sub.conn.outbox
        if box.has_room():
            box.put(frame)
            self.frames_sent += 1
        else:
            self.overflow(sub)

    def overflow(self, sub: Subscription) -> None:
        """Slow consumer: drop this subscription and tell the client (error 25, terminal)."""
        self.overflows += 1
        self.detach(sub)
        sub.conn.outbox.put(
            _encode(wc.ErrorReply(sid=sub.sid, msg=wc.ErrorMsg(code=25, msg=wc.WS_ERROR_CODES[25])))
        )

    def snapshot(self, sub: Subscription, ticker: str) -> None:
        info = self.state.market(ticker)
        book = self.state.order_book(ticker)
        frame = encode_snapshot(
            sub.sid,
            sub.next_seq(),
            ticker,
            info.market_id if info else None,
            book.levels(Side.YES),
            book.levels(Side.NO),
            sub.use_yes_price,
        )
        self._send(sub, frame.decode())

    # ------------------------------------------------------------------ events

    def on_event(self, event: ExchangeEvent) -> None:
        if type(event) is BookDelta:
            self._book_delta(event)
            self._ticker_update(event.ticker, event.ts)
        elif type(event) is TradeEvent:
            self._last_trade_size[event.ticker] = event.count
            self._trade(event)
            self._ticker_update(event.ticker, event.ts)
        elif type(event) is FillEvent:
            model = fill_model(event)
            self._owned(FILL, event.owner, event.ticker, lambda sid: _encode(wd.fill_frame(sid, model)))
        elif type(event) is PositionEvent:
            pos = position_model(event)
            self._owned(
                POSITIONS, event.owner, event.ticker, lambda sid: _encode(wd.market_position_frame(sid, pos))
            )
        elif type(event) is OrderEvent:
            msg = user_order_msg(event.order, event.ts)
            self._owned(
                USER_ORDERS,
                event.order.owner,
                event.order.ticker,
                lambda sid: data_frame("user_order", sid, msg),
            )
        elif type(event) is LifecycleEvent:
            self._lifecycle(event)

    def _book_delta(self, e: BookDelta) -> None:
        ticker = e.ticker
        subs = self._book_subs.get(ticker)
        if not subs:
            return
        market_id = self._market_ids.get(ticker)
        if market_id is None:
            info = self.state.market(ticker)
            market_id = info.market_id if info else None
            if market_id is not None:  # a market's id never changes (and a ticker is never re-listed)
                self._market_ids[ticker] = market_id
        ts_ms = int(e.ts * 1000)
        owner = e.owner
        side = e.side
        flippable = side is Side.NO  # use_yes_price changes only NO-side prices
        # The msg is the same for every subscription with the same (use_yes_price, client_order_id),
        # so it is encoded once and only sid and seq are spliced in per subscription (as text,
        # exactly as msgspec writes them: see protocol.market_data.delta_frame).
        msgs: dict[tuple[bool, str | None], str] = {}
        for sub in tuple(subs):
            # client_order_id only on deltas caused by the receiving account's own order.
            coid = e.client_order_id if owner is not None and owner == sub.conn.owner else None
            flip = flippable and sub.use_yes_price
            msg = msgs.get((flip, coid)) if msgs else None
            if msg is None:
                msg = msgs[flip, coid] = encode_delta_msg(
                    ticker, market_id, side, e.price, e.delta, ts_ms, coid, flip
                )
            sub.seq = seq = sub.seq + 1
            box = sub.conn.outbox
            frames = box.frames
            if len(frames) < box.limit:
                if not box.closed:
                    frames.append(f'{{"type":"orderbook_delta","sid":{sub.sid},"seq":{seq},"msg":{msg}}}')
                    if len(frames) == 1:  # it was empty: wake the connection's writer
                        box.wakeup.set()
                self.frames_sent += 1
            else:
                self.overflow(sub)

    def _trade(self, e: TradeEvent) -> None:
        targets = list(self._by_ticker[TRADE].get(e.ticker, ())) + list(self._all_markets[TRADE])
        if not targets:
            return
        trade = wd.TradeEvent(
            trade_id=e.trade_id,
            market_ticker=e.ticker,
            yes_price=e.yes_price,
            no_price=complement(e.yes_price),
            count=e.count,
            taker_side=e.taker_side,
            is_block_trade=False,
            ts_ms=int(e.ts * 1000),
        )
        for sub in targets:
            self._send(sub, _encode(wd.trade_frame(sub.sid, trade)))

    def _owned(self, channel: str, owner: str, ticker: str, build: Callable[[int], str]) -> None:
        subs = self._by_owner[channel].get(owner)
        if not subs:
            return
        for sub in list(subs):
            if sub.selects(ticker):
                self._send(sub, build(sub.sid))

    def _lifecycle(self, e: LifecycleEvent) -> None:
        subs = self._all_markets[LIFECYCLE]
        if not subs or e.event_type not in _WIRE_LIFECYCLE:
            return
        msg = lifecycle_model(e)
        for sub in list(subs):
            self._send(sub, _encode(wd.lifecycle_frame(sub.sid, msg)))

    def _ticker_update(self, ticker: str, ts: float) -> None:
        """A ticker message to the market's ticker subscribers when a reported field changed."""
        subs = self._by_ticker[TICKER].get(ticker)
        everyone = self._all_markets[TICKER]
        if not subs and not everyone:
            return
        key = ticker_key(self.state.order_book(ticker), self.state.stats(ticker))
        if self._ticker_sent.get(ticker) == key:
            return
        self._ticker_sent[ticker] = key
        info = self.state.market(ticker)
        msg = ticker_msg(
            ticker, info.market_id if info else "", key, self._last_trade_size.get(ticker, 0), ts
        )
        for sub in [*(subs or ()), *everyone]:
            self._send(sub, data_frame(TICKER, sub.sid, msg))

    def ticker_snapshot(self, sub: Subscription, tickers: Iterable[str]) -> None:
        """``send_initial_snapshot``: the current ticker of each market, straight away."""
        ts = self.state.clock()
        for ticker in tickers:
            info = self.state.market(ticker)
            if info is None:
                continue
            key = ticker_key(self.state.order_book(ticker), self.state.stats(ticker))
            msg = ticker_msg(ticker, info.market_id, key, self._last_trade_size.get(ticker, 0), ts)
            self._send(sub, data_frame(TICKER, sub.sid, msg))
