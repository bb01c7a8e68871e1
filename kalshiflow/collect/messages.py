"""Messages the collectors send to other actors and return from ``stats()``.

Frozen msgspec Structs: cheap to build, pickled by Ray as plain tuples-of-fields, and immutable
once sent (a subscriber cannot corrupt a collector's view by mutating what it received).
"""

from __future__ import annotations

import msgspec

from kalshiflow.collect.selection import MarketSpec
from kalshiflow.config import CollectorConfig, ExchangeConfig
from kalshiflow.exchange.replay.events import RecTrade
from kalshiflow.secrets import Credentials

__all__ = ["BookTop", "CollectorSpec", "CollectorStats", "EpochRecord", "Levels", "MarketStats"]

Levels = tuple[tuple[int, int], ...]  # (own-leg bid price ticks, size in hundredths), best first


class BookTop(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Top of one market's book after the latest frame applied to it (``on_books`` payload).

    Prices are integer ticks of $0.0001 of the YES price; sizes are hundredths of a contract.
    ``valid`` is False while the book waits for a snapshot (after a gap or a reconnect): readers
    must not trade on an invalid book. ``epoch``/``seq`` say which frame produced this view.

    ``yes_bids`` / ``no_bids``: the best ``depth`` bid levels of each ladder, best first, each in
    its own leg's ticks (a NO bid at p is a YES ask at 1 - p), so a subscriber can rebuild the
    book as deep as the observation reads (kalshiflow.rl.features.DEPTH_LEVELS) without asking
    the collector. A ladder with fewer than ``depth`` levels is complete. ``depth`` 0: no levels
    carried (the top fields alone; an invalid book carries none).

    ``trades``: the market's public trades since this subscriber's previous view, oldest first,
    as the session loader replays them (``ts`` = exchange time, else receive time): the live
    trader's trade features (flow, activity) need every one. ``book_changed`` False: the view
    is sent for its trades only (the book is as in the previous view).
    """

    ticker: str
    epoch: int
    seq: int
    valid: bool
    yes_bid: int | None
    yes_bid_size: int
    yes_ask: int | None  # 1 - best NO bid
    yes_ask_size: int
    received_ts_ns: int
    exchange_ts_ms: int | None
    depth: int = 0
    yes_bids: Levels = ()
    no_bids: Levels = ()
    trades: tuple[RecTrade, ...] = ()
    book_changed: bool = True


class MarketStats(msgspec.Struct, frozen=True, kw_only=True):
    ticker: str
    active: bool  # still collected (False once dropped)
    valid: bool
    deltas: int
    snapshots: int
    trades: int
    gaps: int  # gaps that invalidated this market's book
    book_errors: int
    last_seq: int | None
    last_received_ts_ns: int | None
    lag_ms_mean: float | None  # receive time - exchange ts_ms, over the collector's life
    lag_ms_max: int | None


class EpochRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One connection of a collector (``connection_epochs``); disconnected_ns None while it lasts."""

    epoch: int
    collector_id: str
    connected_ns: int
    disconnected_ns: int | None = None
    reason: str | None = None


class CollectorStats(msgspec.Struct, frozen=True, kw_only=True):
    collector_id: str
    session_id: str
    epoch: int  # current connection epoch (0 = not connected yet)
    connected: bool
    markets: int
    messages: int  # every frame received, replies included
    messages_per_s: float  # over the last few seconds
    deltas: int
    snapshots: int
    trades: int
    gaps: int
    duplicates: int
    out_of_order: int
    book_errors: int
    decode_errors: int
    unknown_frames: int
    reconnects: int
    recoveries_requested: int
    resyncs: int
    lag_ms_mean: float | None
    lag_ms_max: int | None
    batches_sent: int
    batches_acked: int
    batches_retried: int
    unacked_batches: int
    unacked_rows: int
    rows_acked: int
    per_market: tuple[MarketStats, ...]
    epochs: tuple[EpochRecord, ...]  # this incarnation's connections, oldest first
    subscribers: int = 0  # actors getting book views (on_books)
    subscribers_removed: int = 0  # dropped after repeated failed calls (dead)
    trades_dropped: int = 0  # public trades a subscriber too far behind never got (oldest first)


class CollectorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a collector actor is built from (Ray keeps it to rebuild a restarted actor)."""

    collector_id: str
    shard_index: int
    session_id: str
    session_start_ns: int
    ws_url: str
    rest_url: str | None
    markets: tuple[MarketSpec, ...]
    collector: CollectorConfig
    exchange: ExchangeConfig
    credentials: Credentials | None
    writequeue: str  # the WriteQueue's actor name
    namespace: str | None = None
    epoch_bits: int = 64
