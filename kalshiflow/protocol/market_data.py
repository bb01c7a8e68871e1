"""Kalshi WS v2 ``orderbook_delta`` channel: decoding frames into exact book updates.

The frame types are in ``orderbook_frames`` and the encoders in ``orderbook_encoding``; both are
re-exported here, so this module stays the channel's one import. When a frame carries several wire
forms (kalshi-protocol.md §1.7.1) the most precise wins: ``*_fp`` > ``*_dollars`` > legacy integers.

``use_yes_price``: with the subscribe flag true, Kalshi reports NO-side levels at the
YES-equivalent price. ``OrderbookFrameDecoder`` takes the flag and always hands out NO-side prices
in NO-leg terms, which is what ``market.book.OrderBook`` stores.

Prices come out as integer ticks and sizes as integer hundredths (``market.prices``), exactly: no
float is involved. Anything malformed raises ``FrameError`` (a ``ValueError``), never another error.
Grid membership is not checked here; that is the book's job (it knows the market's grid).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import length_hint
from typing import Final

import msgspec

from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import (
    PRICE_SCALE,
    PriceError,
    format_price,
    format_qty,
    parse_price,
    parse_qty,
    price_from_cents,
    qty_from_contracts,
)
from kalshiflow.market.types import Side
from kalshiflow.protocol.orderbook_encoding import (
    delta_frame,
    encode_delta,
    encode_delta_msg,
    encode_snapshot,
)
from kalshiflow.protocol.orderbook_frames import (
    DeltaMsg,
    FrameError,
    Level,
    OrderbookDelta,
    OrderbookFrame,
    OrderbookSnapshot,
    SnapshotMsg,
)
from kalshiflow.protocol.orderbook_frames import SeqNo as SeqNo

__all__ = [
    "FrameError",
    "SnapshotMsg",
    "DeltaMsg",
    "OrderbookSnapshot",
    "OrderbookDelta",
    "OrderbookFrame",
    "OrderbookFrameDecoder",
    "encode_snapshot",
    "encode_delta",
    "encode_delta_msg",
    "delta_frame",
]

_NO: Final = Side.NO  # module constant: one global load on the hot path
_NO_LEG_BASE: Final = PRICE_SCALE  # no-leg price = 1 - yes-equivalent price
_CACHE_LIMIT: Final = 65_536  # bounds memory if a peer sends endless spellings of numbers


class OrderbookFrameDecoder:
    """Decodes orderbook frames of one subscription and converts them to book updates.

    One instance per WS connection (it knows that subscription's ``use_yes_price``). It memoises
    string -> integer parses: a market's prices and typical sizes repeat, so a dict hit replaces
    the general parser on the hot path (the parse itself stays exact; the cache only remembers it).
    """

    __slots__ = ("use_yes_price", "msgspec_decoder", "_price_cache", "_qty_cache")

    def __init__(self, use_yes_price: bool = False) -> None:
        self.use_yes_price = use_yes_price
        # The raw typed decoder, exposed for benchmarks and for callers that decode other channels'
        # frames themselves; its errors are msgspec's, not FrameError.
        self.msgspec_decoder: msgspec.json.Decoder[OrderbookFrame] = msgspec.json.Decoder(OrderbookFrame)
        self._price_cache: dict[str, int] = {}
        self._qty_cache: dict[str, int] = {}

    def decode(self, data: bytes | str) -> OrderbookSnapshot | OrderbookDelta:
        """Typed decode of one frame; FrameError for bad JSON, a wrong shape or an unknown type."""
        try:
            return self.msgspec_decoder.decode(data)
        except msgspec.DecodeError as err:  # ValidationError is a subclass
            raise FrameError(f"bad orderbook frame: {err}") from None
        except (TypeError, ValueError) as err:  # e.g. not bytes/str at all
            raise FrameError(f"bad orderbook frame: {err}") from None

    # ------------------------------------------------------------------ delta (hot path)

    def delta_update(self, msg: DeltaMsg) -> tuple[Side, int, int]:
        """(side, price ticks in that side's leg terms, signed qty hundredths) of a delta."""
        price = self._price_cache.get(msg.price_dollars)  # type: ignore[arg-type]
        qty = self._qty_cache.get(msg.delta_fp)  # type: ignore[arg-type]
        if price is None or qty is None:  # a None key is never cached: legacy/uncached go slow
            return self._delta_update_slow(msg)
        side = msg.side
        if side is _NO and self.use_yes_price:
            price = _NO_LEG_BASE - price
        return side, price, qty

    def _delta_update_slow(self, msg: DeltaMsg) -> tuple[Side, int, int]:
        where = f"orderbook_delta {msg.market_ticker!r}"
        if msg.price_dollars is not None:
            price = self._parse_price(msg.price_dollars, where)
        elif msg.price is not None:
            price = _from_legacy(price_from_cents, msg.price, where)
        else:
            raise FrameError(f"{where}: no price_dollars or price")
        if msg.delta_fp is not None:
            qty = self._parse_qty(msg.delta_fp, where)
        elif msg.delta is not None:
            qty = _from_legacy(qty_from_contracts, msg.delta, where)
        else:
            raise FrameError(f"{where}: no delta_fp or delta")
        if msg.side is Side.NO and self.use_yes_price:
            price = _NO_LEG_BASE - price
        return msg.side, price, qty

    # ------------------------------------------------------------------ batch fast path

    def apply_deltas(
        self,
        frames: Sequence[bytes],
        books: Mapping[str, OrderBook],
        start: int = 0,
        stop: int | None = None,
        out: list[OrderbookDelta] | None = None,
        sid: int | None = None,
        next_seq: int | None = None,
    ) -> int:
        """Decode ``frames[start:stop]`` and apply each orderbook_delta to its book, in order.

        The collector's hot path. It stops *before* the first frame that needs the caller's
        attention and returns that frame's index (``stop`` / ``len(frames)`` when all were applied):
        a snapshot or any non-delta, a malformed frame, a ticker not in ``books``, an invalid book,
        a delta the book would reject, and, when ``next_seq`` is given, a frame that is not on
        ``sid`` with seq ``next_seq``, ``next_seq + 1``, ... (a gap). The caller handles that frame
        with ``decode`` / ``delta_update`` / ``OrderBook.apply_delta`` (which raise the precise
        error) and resumes after it. Applied frames are appended to ``out`` if given. With
        ``next_seq``, the next expected seq afterwards is ``next_seq + (returned - start)``.

        Each applied delta has exactly the effect of ``book.apply_delta(*self.delta_update(msg))``
        (a property test checks this). The update is inlined, reading the book's ladders and level
        tables directly, because a Python call per delta costs as much as the update itself
        (see ``python -m kalshiflow.bench book``).
        """
        decode = self.msgspec_decoder.decode
        qtys = self._qty_cache
        flip_no = self.use_yes_price
        no = _NO
        bookkeeping = out is not None or next_seq is not None  # one test per frame, not two
        chunk = frames[start:stop]
        # Every stop is a `break`; where we stopped is then read off the iterator's remaining
        # length, which costs nothing per frame (an index counter costs ~5% of the loop).
        remaining = iter(chunk)
        try:
            for data in remaining:
                frame = decode(data)
                msg: DeltaMsg = frame.msg  # type: ignore[assignment]  # a snapshot's fails below
                book = books[msg.market_ticker]
                if book.invalid:
                    break
                try:
                    # A snapshot's msg has no delta_fp: AttributeError -> stop (cheaper than a
                    # type check on every delta).
                    qty = qtys[msg.delta_fp]  # type: ignore[index]
                    if msg.side is no:
                        ladder = book._no
                        if flip_no:
                            level = book._level_of_complement_text[msg.price_dollars]  # type: ignore[index]
                        else:
                            level = book._level_of_text[msg.price_dollars]  # type: ignore[index]
                    else:
                        ladder = book._yes
                        level = book._level_of_text[msg.price_dollars]  # type: ignore[index]
                except KeyError:  # uncached count, non-canonical price text, legacy shape, off-grid
                    side, price, qty = self._delta_update_slow(msg)
                    ladder = book._no if side is no else book._yes
                    level = book._level_of[price]  # KeyError off the grid -> stop
                    if not qty:  # zero is never cached, so only this path can see it
                        break
                # --- inlined OrderBook.apply_delta: keep in step with kalshiflow.market.book ---
                sizes = ladder.sizes
                new = sizes[level] + qty
                if new < 0:
                    break
                if bookkeeping:  # decided before anything is mutated
                    if next_seq is not None:
                        if frame.seq != next_seq or frame.sid != sid:
                            break
                        next_seq += 1
                    if out is not None:
                        out.append(frame)  # type: ignore[arg-type]
                sizes[level] = new
                if level > ladder.hi:
                    ladder.hi = level
                # --- end of inlined apply_delta ---
            else:
                return start + len(chunk)
        except (msgspec.DecodeError, FrameError, KeyError, AttributeError, TypeError):
            # Not a delta for a known book, or malformed: the caller's decode() / delta_update()
            # / apply_delta() of this frame says exactly what.
            pass
        return start + len(chunk) - length_hint(remaining) - 1  # the frame we stopped at

    # ------------------------------------------------------------------ snapshot

    def snapshot_levels(self, msg: SnapshotMsg) -> tuple[list[Level], list[Level]]:
        """(YES levels, NO levels in NO-leg terms), each ascending by price, sizes > 0."""
        where = f"orderbook_snapshot {msg.market_ticker!r}"
        yes = self._side_levels(msg.yes_dollars_fp, msg.yes_dollars, msg.yes, f"{where} yes")
        no = self._side_levels(msg.no_dollars_fp, msg.no_dollars, msg.no, f"{where} no")
        if self.use_yes_price:
            no = [(_NO_LEG_BASE - price, qty) for price, qty in no]
        yes.sort()
        no.sort()
        return yes, no

    def _side_levels(
        self,
        fp: tuple[tuple[str, str], ...] | None,
        dollars: tuple[tuple[str, int | str], ...] | None,
        cents: tuple[tuple[int, int], ...] | None,
        where: str,
    ) -> list[Level]:
        if fp is not None:
            levels = [(self._parse_price(p, where), self._parse_qty(q, where)) for p, q in fp]
        elif dollars is not None:
            levels = [
                (
                    self._parse_price(p, where),
                    self._parse_qty(q, where)
                    if isinstance(q, str)
                    else _from_legacy(qty_from_contracts, q, where),
                )
                for p, q in dollars
            ]
        elif cents is not None:
            levels = [
                (_from_legacy(price_from_cents, p, where), _from_legacy(qty_from_contracts, q, where))
                for p, q in cents
            ]
        else:
            return []
        for price, qty in levels:
            if qty <= 0:
                raise FrameError(f"{where}: level {format_price(price)} has size {format_qty(qty)}")
        return levels

    # ------------------------------------------------------------------ cached exact parsing

    def _parse_price(self, text: str, where: str) -> int:
        cached = self._price_cache.get(text)
        if cached is not None:
            return cached
        try:
            price = parse_price(text)
        except PriceError as err:
            raise FrameError(f"{where}: {err}") from None
        _remember(self._price_cache, text, price)
        return price

    def _parse_qty(self, text: str, where: str) -> int:
        cached = self._qty_cache.get(text)
        if cached is not None:
            return cached
        try:
            qty = parse_qty(text)
        except PriceError as err:
            raise FrameError(f"{where}: {err}") from None
        if qty:  # apply_deltas relies on a cached count never being zero
            _remember(self._qty_cache, text, qty)
        return qty


def _remember(cache: dict[str, int], text: str, value: int) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[text] = value


def _from_legacy(convert: Callable[[int], int], value: int, where: str) -> int:
    try:
        return convert(value)
    except PriceError as err:
        raise FrameError(f"{where}: {err}") from None

