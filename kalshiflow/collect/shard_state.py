"""The functional core of one collector shard: frames in; books, rows, requests and stats out.

One ``ShardState`` per collector (one WS connection, many markets). The actor feeds it every frame
with its receive time (:meth:`on_frame`) and tells it about connections (:meth:`begin_epoch`,
:meth:`end_epoch`) and market changes; it never touches the network, the clock or Ray. In return
it produces

- the L2 book of every market (``kalshiflow.market.book.OrderBook``);
- rows for the WriteQueue, in ``storage.schema`` column order (:meth:`take_rows`);
- wire requests the actor must carry out (:meth:`take_requests`): ``get_snapshot`` after a gap,
  ``resync`` (unsubscribe + subscribe) or ``reconnect`` when recovery stalls, ``drop`` for
  markets that closed;
- which markets changed (:attr:`changed`, :meth:`take_changed`) and their book views for
  subscribers (:meth:`view`; kalshiflow.collect.tops), and stats.

Sequence handling (kalshi-protocol.md §1.8): ``seq`` is per sid and shared by every market on it,
so a hole invalidates EVERY book on that sid. Each book is replaced wholesale by its next
snapshot; until then deltas are still recorded (nothing received is dropped) with ``size_after``
NULL, and the book is not updated. Duplicate and late frames are counted and ignored.

Gap rows and recovery are in ``shard_recovery``; trade and lifecycle frames in
``shard_data_channels``.
"""

from __future__ import annotations

import msgspec

from kalshiflow.collect import rows as R
from kalshiflow.collect import shard_data_channels, shard_recovery
from kalshiflow.collect.market_state import MarketState
from kalshiflow.collect.messages import BookTop, EpochRecord, MarketStats
from kalshiflow.collect.recovery import ORDERBOOK, OpenGap, Recovery, Request
from kalshiflow.collect.sequencer import GAP, OK, Sequencer
from kalshiflow.collect.shard_data_channels import CLOSING_EVENTS as CLOSING_EVENTS
from kalshiflow.collect.shard_data_channels import LIFECYCLE, TRADE
from kalshiflow.collect.tops import market_view
from kalshiflow.exchange.replay.events import RecTrade
from kalshiflow.market.book import BookError, OrderBook
from kalshiflow.market.prices import LINEAR_CENT, PRICE_SCALE, PriceGrid
from kalshiflow.market.types import Side
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.market_data import (
    FrameError,
    OrderbookDelta,
    OrderbookFrameDecoder,
    OrderbookSnapshot,
)

__all__ = ["ORDERBOOK", "TRADE", "LIFECYCLE", "Request", "ShardState"]

_Frame = (
    OrderbookDelta | OrderbookSnapshot | wc.Ok | wc.Subscribed | wc.Unsubscribed | wc.ErrorReply
    | wd.TradeFrame | wd.LifecycleFrame | wd.EventLifecycleFrame
)
_YES, _NO = Side.YES, Side.NO
_NO_LEG_BASE = PRICE_SCALE  # a NO price quoted at its YES equivalent: no-leg = 1 - yes


class ShardState:
    """Books, sequence checks, gap recovery state, row buffers and stats of one collector shard."""

    def __init__(self, session_id: str, collector_id: str, *, use_yes_price: bool = False) -> None:
        self.session_id = session_id
        self.collector_id = collector_id
        self.epoch = 0  # the current connection's epoch id; 0 = not connected yet
        self._epoch_started_ns = 0
        self.epochs_begun = 0
        self.epoch_log: list[EpochRecord] = []  # this process's connections (bookkeeping rows)
        self._markets: dict[str, MarketState] = {}
        self._seq = Sequencer()
        # The sequencer's per-sid high-water marks and verdict counters, for _on_delta's inlined
        # in-order check (the same objects: Sequencer only ever mutates them in place).
        self._seq_last = self._seq._last
        self._seq_counts = self._seq.counts
        self._parse = OrderbookFrameDecoder(use_yes_price)
        self._decode = msgspec.json.Decoder(_Frame).decode
        self._channel_of: dict[int, str] = {}  # sid -> channel (this epoch)
        self._book_tickers: dict[int, set[str]] = {}  # orderbook sid -> markets on it
        self._recovery = Recovery()
        # Markets whose book view changed since the last take: only ever mutated in place, so the
        # actor's per-frame callback can hold this very set (``changed``) and test it cheaply.
        self._changed: set[str] = set()
        self.changed = self._changed
        # Public trades for subscribers, kept only while there are any (``publish_trades``); a list
        # mutated in place, like ``changed``, for the per-frame callback's cheap test.
        self.publish_trades = False
        self.trades_out: list[tuple[str, RecTrade]] = []
        self._rows: dict[str, list[tuple[object, ...]]] = {}
        self._deltas: list[tuple[object, ...]] = []
        self._new_buffers()
        self.n = dict.fromkeys(
            ("frames", "deltas", "snapshots", "trades", "gaps", "book_errors", "decode_errors",
             "unknown_frames", "unknown_markets", "command_errors"), 0)

    # ------------------------------------------------------------------ markets

    def add_market(self, ticker: str, grid: PriceGrid = LINEAR_CENT) -> bool:
        """Start tracking ``ticker`` (its book is invalid until its first snapshot); False if present."""
        m = self._markets.get(ticker)
        if m is not None and m.active:
            return False
        self._markets[ticker] = MarketState(ticker, grid)
        return True

    def drop_market(self, ticker: str, now_ns: int) -> bool:
        """Stop tracking ``ticker`` (closed or removed); its counters stay for stats."""
        m = self._markets.get(ticker)
        if m is None or not m.active:
            return False
        m.active = False
        m.book.invalidate("market dropped")
        for tickers in self._book_tickers.values():
            tickers.discard(ticker)
        self._resolved(ticker, now_ns)
        self._changed.discard(ticker)
        return True

    @property
    def tickers(self) -> tuple[str, ...]:
        return tuple(t for t, m in self._markets.items() if m.active)

    def book(self, ticker: str) -> OrderBook | None:
        m = self._markets.get(ticker)
        return m.book if m is not None and m.active else None

    # ------------------------------------------------------------------ connections

    def begin_epoch(self, epoch: int, now_ns: int, cause: str = "start") -> None:
        """A new connection: sids and seqs restart, every book waits for a fresh snapshot.

        ``cause`` is "start" for a collector's first connection, "reconnect" for a later one and
        "actor_restart" for the first connection of a restarted actor; the last two open a gap
        (sid 0) that closes when every market has its snapshot again.
        """
        if self.epoch:
            self.end_epoch(now_ns, "superseded")
        self.epoch = epoch
        self._epoch_started_ns = now_ns
        self.epochs_begun += 1
        self._seq.reset()
        self._channel_of.clear()
        self._book_tickers.clear()
        for ticker, m in self._markets.items():
            if m.active:
                m.book.invalidate("new connection: awaiting snapshot")
                self._changed.add(ticker)
        self._rows["connection_epochs"].append(R.epoch_row(self, epoch, now_ns, None, None))
        self.epoch_log.append(EpochRecord(epoch=epoch, collector_id=self.collector_id, connected_ns=now_ns))
        if cause != "start":
            # Resolved by the snapshots the re-subscribe brings; nothing to request.
            self._open_gap(OpenGap(0, 0, 0, now_ns, self.tickers, cause), None, cause)

    def end_epoch(self, now_ns: int, reason: str) -> None:
        """The connection ended: write unresolved gaps (recovered_at NULL) and close the epoch row."""
        if not self.epoch:
            return
        for gap in self._recovery.close_all():
            self._rows["gaps"].append(R.gap_row(self, gap, None, "unrecovered: connection ended"))
        self._rows["connection_epochs"].append(
            R.epoch_row(self, self.epoch, self._epoch_started_ns, now_ns, reason)
        )
        last = self.epoch_log[-1] if self.epoch_log else None
        if last is not None and last.epoch == self.epoch:
            self.epoch_log[-1] = msgspec.structs.replace(last, disconnected_ns=now_ns, reason=reason)
        self.epoch = 0

    # ------------------------------------------------------------------ frames

    def on_frame(self, data: bytes, recv_ns: int) -> None:
        """Route one WS text frame. Never raises for bad input: it is counted instead."""
        self.n["frames"] += 1
        try:
            frame = self._decode(data)
        except msgspec.DecodeError as err:  # ValidationError included
            key = "unknown_frames" if "`$.type`" in str(err) else "decode_errors"
            self.n[key] += 1
            return
        kind = type(frame)
        if kind is OrderbookDelta:
            self._on_delta(frame, recv_ns)  # type: ignore[arg-type]
        elif kind is OrderbookSnapshot:
            self._on_snapshot(frame, recv_ns)  # type: ignore[arg-type]
        elif kind is wd.TradeFrame or kind is wd.LifecycleFrame:
            self._on_data(frame, data, recv_ns)  # type: ignore[arg-type]
        elif kind is wc.Ok or kind is wc.Unsubscribed:
            self._on_reply(frame, recv_ns)  # type: ignore[arg-type]
        elif kind is wc.Subscribed:
            self._on_subscribed(frame)  # type: ignore[arg-type]
        elif kind is wc.ErrorReply:
            self._on_error(frame, recv_ns)  # type: ignore[arg-type]

    def _check(self, sid: int, seq: int, recv_ns: int) -> bool:
        """Sequence check; False = ignore the frame (duplicate or late)."""
        verdict = self._seq.check(sid, seq)
        if verdict == OK:
            return True
        if verdict == GAP:
            self._on_gap(sid, recv_ns)
            return True
        return False

    def _on_delta(self, frame: OrderbookDelta, recv_ns: int) -> None:
        """The hot path (one call per delta). The sequencer's in-order check, the decoder's cached
        price/count lookups and the book update are inlined, as in the decoder's ``apply_deltas``
        batch path (a Python call per step costs as much as the step); anything unusual -- a seq
        out of line, an uncached or legacy number, an update the book would refuse -- takes the
        general path, which decides exactly as before."""
        sid, seq = frame.sid, frame.seq
        last = self._seq_last.get(sid)
        if last is not None and seq == last + 1:  # Sequencer.check's OK path
            self._seq_last[sid] = seq
            self._seq_counts[OK] += 1
        elif not self._check(sid, seq, recv_ns):
            return
        msg = frame.msg
        ticker = msg.market_ticker
        m = self._markets.get(ticker)
        parse = self._parse
        side = msg.side
        price = parse._price_cache.get(msg.price_dollars)  # type: ignore[arg-type]
        qty = parse._qty_cache.get(msg.delta_fp)  # type: ignore[arg-type]
        if price is None or qty is None:
            try:
                side, price, qty = parse.delta_update(msg)
            except FrameError:
                # The frame consumed a seq but cannot be applied: the book has lost an update.
                self.n["decode_errors"] += 1
                if m is not None and m.active:
                    self._book_error(m, sid, seq, recv_ns, "undecodable delta")
                return
        elif side is _NO and parse.use_yes_price:
            price = _NO_LEG_BASE - price
        size_after: int | None = None
        ts_ms = msg.ts_ms
        if m is not None and m.active:
            book = m.book
            if not book.invalid:
                # OrderBook.apply_delta, inlined for the usual case (a cached count is a non-zero
                # int; an on-grid price; a result >= 0); otherwise the method itself, which raises.
                ladder = book._yes if side is _YES else book._no if side is _NO else None
                level = book._level_of.get(price) if ladder is not None else None
                if (
                    ladder is not None
                    and level is not None
                    and type(qty) is int
                    and qty
                    and (new := ladder.sizes[level] + qty) >= 0
                ):
                    ladder.sizes[level] = new
                    if level > ladder.hi:  # everything above hi was empty: this was an add
                        ladder.hi = level
                    size_after = new
                else:
                    try:
                        size_after = book.apply_delta(side, price, qty)
                    except BookError as err:
                        self._book_error(m, sid, seq, recv_ns, str(err))
            m.deltas += 1
            m.last_seq = seq
            m.last_recv_ns = recv_ns
            if ts_ms is not None:
                m.last_ts_ms = ts_ms
                lag = recv_ns // 1_000_000 - ts_ms
                m.lag_sum += lag
                m.lag_n += 1
                if m.lag_max is None or lag > m.lag_max:
                    m.lag_max = lag
            self._changed.add(ticker)
        else:
            self.n["unknown_markets"] += 1
        self.n["deltas"] += 1
        self._deltas.append((
            self.session_id, seq, recv_ns, ts_ms, qty, size_after, self.epoch, sid, price,
            "yes" if side is _YES else "no", ticker, msg.client_order_id,
        ))

    def _on_snapshot(self, frame: OrderbookSnapshot, recv_ns: int) -> None:
        sid, seq = frame.sid, frame.seq
        if not self._check(sid, seq, recv_ns):
            return
        msg = frame.msg
        ticker = msg.market_ticker
        m = self._markets.get(ticker)
        try:
            yes, no = self._parse.snapshot_levels(msg)
        except FrameError:
            self.n["decode_errors"] += 1
            if m is not None and m.active:
                self._book_error(m, sid, seq, recv_ns, "undecodable snapshot")
            return
        self.n["snapshots"] += 1
        self._rows["book_snapshots"].append(R.snapshot_row(self, seq, recv_ns, sid, ticker, yes, no))
        if m is None or not m.active:
            self.n["unknown_markets"] += 1
            return
        m.snapshots += 1
        m.last_seq = seq
        m.last_recv_ns = recv_ns
        self._changed.add(ticker)
        self._book_tickers.setdefault(sid, set()).add(ticker)
        try:
            m.book.apply_snapshot(yes, no)  # wholesale replacement; clears ``invalid``
        except BookError as err:
            self._book_error(m, sid, seq, recv_ns, str(err))
            return
        self._resolved(ticker, recv_ns)

    def _on_reply(self, frame: wc.Ok | wc.Unsubscribed, recv_ns: int) -> None:
        sid, seq = frame.sid, frame.seq
        if sid is not None and seq is not None:
            self._check(sid, seq, recv_ns)  # replies consume a number (S2)
        if isinstance(frame, wc.Unsubscribed):
            if sid is not None:
                self._seq.forget(sid)
                self._channel_of.pop(sid, None)
                self._book_tickers.pop(sid, None)
            return
        tickers = frame.tickers
        if sid is not None and tickers is not None and self._channel_of.get(sid) == ORDERBOOK:
            self._book_tickers[sid] = {t for t in tickers if t in self._markets and self._markets[t].active}

    def _on_subscribed(self, frame: wc.Subscribed) -> None:
        sid, channel = frame.msg.sid, frame.msg.channel
        self._channel_of[sid] = channel
        if channel == ORDERBOOK:
            # The collector's one order-book subscription lists all of its markets.
            self._book_tickers[sid] = set(self.tickers)

    # Trade / lifecycle frames and gap recovery live in shard_data_channels / shard_recovery: plain
    # functions bound as methods, so a call costs what it would if they were written here.
    _on_data = shard_data_channels.on_data
    _on_error = shard_recovery.on_error

    # ------------------------------------------------------------------ gaps and recovery

    _on_gap = shard_recovery.on_gap
    _book_error = shard_recovery.book_error
    _open_gap = shard_recovery.open_gap
    _resolved = shard_recovery.resolved

    def check_recovery(self, now_ns: int, timeout_ns: int) -> None:
        """Escalate recoveries that got no snapshot within ``timeout_ns`` of the last request."""
        self._recovery.check(now_ns, timeout_ns)

    @property
    def recovering(self) -> bool:
        return bool(self._recovery.open)

    # ------------------------------------------------------------------ outputs

    def _new_buffers(self) -> None:
        self._rows = {t: [] for t in R.TABLES_WRITTEN}
        self._deltas = self._rows["book_deltas"]

    def pending_rows(self) -> int:
        return sum(len(v) for v in self._rows.values())

    def take_rows(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row built since the last call, by table (empty tables left out)."""
        out = {t: v for t, v in self._rows.items() if v}
        if out:
            self._new_buffers()
        return out

    def take_requests(self) -> list[Request]:
        return self._recovery.take()

    @property
    def has_requests(self) -> bool:
        return bool(self._recovery.requests)

    def recovery_counts(self) -> tuple[int, int]:
        """(get_snapshot requests, resyncs) so far."""
        return self._recovery.snapshot_requests, self._recovery.resyncs

    def take_changed(self) -> list[str]:
        """The markets changed since the last take (their views are built when sent: :meth:`view`)."""
        out = list(self._changed)
        self._changed.clear()
        return out

    def take_trades(self) -> list[tuple[str, RecTrade]]:
        """(ticker, trade) received since the last take, in arrival order."""
        out = self.trades_out[:]
        self.trades_out.clear()
        return out

    def view(self, ticker: str) -> BookTop | None:
        """The market's book view now (top + best levels); None for a market not collected."""
        m = self._markets.get(ticker)
        return market_view(m, self.epoch) if m is not None and m.active else None

    def sequencer_counts(self) -> dict[str, int]:
        return self._seq.summary()

    def market_stats(self) -> list[MarketStats]:
        return [m.stats() for m in self._markets.values()]

    def lag_summary(self) -> tuple[float | None, int | None]:
        markets = self._markets.values()
        n = sum(m.lag_n for m in markets)
        maxes = [m.lag_max for m in markets if m.lag_max is not None]
        return (sum(m.lag_sum for m in markets) / n if n else None), (max(maxes) if maxes else None)
