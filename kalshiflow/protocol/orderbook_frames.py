"""Kalshi WS v2 ``orderbook_snapshot`` / ``orderbook_delta`` frames as msgspec types.

Wire shapes (kalshi-protocol.md §1.7.1) the types accept:

- current (since 2026-03-12): ``yes_dollars_fp`` / ``no_dollars_fp`` pairs of strings,
  ``price_dollars`` + ``delta_fp`` strings, ``ts`` / ``ts_ms``, ``client_order_id``, ``market_id``;
- legacy: ``yes`` / ``no`` integer [cents, contracts] pairs, ``yes_dollars`` / ``no_dollars``
  [price string, integer contracts] pairs, ``price`` integer cents, ``delta`` integer contracts;
- a superset of both (what ``encode_snapshot`` / ``encode_delta`` emit, see §0.3).

Decoding them into book updates is ``market_data.OrderbookFrameDecoder``; building them is
``orderbook_encoding``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from kalshiflow.market.types import Side

__all__ = [
    "FrameError",
    "Level",
    "SnapshotMsg",
    "DeltaMsg",
    "OrderbookSnapshot",
    "OrderbookDelta",
    "OrderbookFrame",
]

Level = tuple[int, int]  # (price ticks, qty hundredths)
SeqNo = Annotated[int, msgspec.Meta(ge=1)]


class FrameError(ValueError):
    """A frame that is not a well-formed orderbook_snapshot / orderbook_delta."""


# Struct options used below: gc=False because these hold only str/int/tuples, so they can never be
# part of a reference cycle, and skipping GC tracking makes decoding measurably cheaper. kw_only
# lets fields follow Kalshi's key order on encode; omit_defaults drops absent (None) keys, as
# Kalshi omits them.


class SnapshotMsg(msgspec.Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    """``msg`` of an orderbook_snapshot. Levels ascend by price (best bid last); empty sides absent."""

    market_ticker: str
    market_id: str | None = None
    yes_dollars_fp: tuple[tuple[str, str], ...] | None = None
    no_dollars_fp: tuple[tuple[str, str], ...] | None = None
    # legacy (whole cents / whole contracts only)
    yes: tuple[tuple[int, int], ...] | None = None
    no: tuple[tuple[int, int], ...] | None = None
    yes_dollars: tuple[tuple[str, int | str], ...] | None = None
    no_dollars: tuple[tuple[str, int | str], ...] | None = None


class DeltaMsg(msgspec.Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    """``msg`` of an orderbook_delta: a signed size change at one price of one bid ladder."""

    market_ticker: str
    market_id: str | None = None
    price: int | None = None  # legacy cents
    price_dollars: str | None = None
    delta: int | None = None  # legacy contracts
    delta_fp: str | None = None
    side: Side
    client_order_id: str | None = None
    ts: str | None = None  # deprecated RFC3339, microseconds
    ts_ms: int | None = None


class OrderbookSnapshot(
    msgspec.Struct, tag_field="type", tag="orderbook_snapshot", frozen=True, gc=False, kw_only=True
):
    sid: SeqNo
    seq: SeqNo
    msg: SnapshotMsg


class OrderbookDelta(
    msgspec.Struct, tag_field="type", tag="orderbook_delta", frozen=True, gc=False, kw_only=True
):
    sid: SeqNo
    seq: SeqNo
    msg: DeltaMsg


# Tagged on "type", so a collector can put these two into a larger union with other channels.
OrderbookFrame = OrderbookSnapshot | OrderbookDelta
