"""The collector shard's data channels besides the order book: public trades and market lifecycle.

Trades become ``public_trades`` rows (and, while anyone subscribes, ``RecTrade`` for live trade
features); a lifecycle event that closes a market asks the actor to drop it. A plain function of
``ShardState``, bound by it as a method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kalshiflow.collect import rows as R
from kalshiflow.collect.recovery import Request
from kalshiflow.exchange.replay.events import RecTrade
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.errors import DecodeError

if TYPE_CHECKING:
    from kalshiflow.collect.shard_state import ShardState

__all__ = ["TRADE", "LIFECYCLE", "CLOSING_EVENTS", "on_data"]

TRADE = "trade"
LIFECYCLE = "market_lifecycle_v2"
# Lifecycle events after which a market never trades again: stop collecting it.
CLOSING_EVENTS = frozenset({"determined", "settled"})


def on_data(self: ShardState, frame: wd.TradeFrame | wd.LifecycleFrame, data: bytes, recv_ns: int) -> None:
    sid, seq = frame.sid, frame.seq
    if sid is not None and seq is not None and not self._check(sid, seq, recv_ns):
        return
    try:
        event = wd.decode_message(data)  # normalised (exact ints); rare next to deltas
    except DecodeError:
        self.n["decode_errors"] += 1
        return
    assert isinstance(event, wd.DataMessage)
    msg = event.msg
    if isinstance(msg, wd.TradeEvent):
        self.n["trades"] += 1
        m = self._markets.get(msg.market_ticker)
        if m is not None:
            m.trades += 1
        self._rows["public_trades"].append(R.trade_row(self, msg, recv_ns, sid, seq))
        if self.publish_trades and m is not None and m.active and msg.taker_side is not None:
            # For subscribers (trade features), as the session loader replays a recorded trade.
            ts = msg.ts_ms / 1000.0 if msg.ts_ms is not None else recv_ns / 1e9
            trade = RecTrade(seq=seq or 0, ts=ts, yes_price=msg.yes_price, count=msg.count,
                             taker_side=msg.taker_side)
            self.trades_out.append((msg.market_ticker, trade))
    elif isinstance(msg, wd.LifecycleEvent):
        m = self._markets.get(msg.market_ticker)
        if m is not None and m.active and msg.event_type in CLOSING_EVENTS:
            drop = Request("drop", (msg.market_ticker,), f"lifecycle {msg.event_type}")
            self._recovery.requests.append(drop)
