"""Kalshi WS v2 ``orderbook_delta`` channel frames: msgspec types, decoders and encoders.

Wire shapes (kalshi-protocol.md §1.7.1) accepted on decode:

- current (since 2026-03-12): ``yes_dollars_fp`` / ``no_dollars_fp`` pairs of strings,
  ``price_dollars`` + ``delta_fp`` strings, ``ts`` / ``ts_ms``, ``client_order_id``, ``market_id``;
- legacy: ``yes`` / ``no`` integer [cents, contracts] pairs, ``yes_dollars`` / ``no_dollars``
  [price string, integer contracts] pairs, ``price`` integer cents, ``delta`` integer contracts;
- a superset of both (what ``encode_snapshot`` / ``encode_delta`` emit, see §0.3). When several
  forms are present the most precise wins: ``*_fp`` > ``*_dollars`` > legacy integers.

``use_yes_price``: with the subscribe flag true, Kalshi reports NO-side levels at the
YES-equivalent price. ``OrderbookFrameDecoder`` takes the flag and always hands out NO-side prices
in NO-leg terms, which is what ``market.book.OrderBook`` stores.

Prices come out as integer ticks and sizes as integer hundredths (``market.prices``), exactly: no
float is involved. Anything malformed raises ``FrameError`` (a ``ValueError``), never another error.
Grid membership is not checked here; that is the book's job (it knows the market's grid).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import length_hint
from typing import Annotated, Final

import msgspec

from kalshiflow.market.book import OrderBook
from kalshiflow.market.prices import (
    PRICE_SCALE,
    PriceError,
    format_price,
    format_qty,
    is_whole_cent,
    is_whole_contracts,
    parse_price,
    parse_qty,
    price_from_cents,
    price_to_cents,
    qty_from_contracts,
    qty_to_contracts,
)
from kalshiflow.market.types import Side

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


# ---------------------------------------------------------------------- encoders


def _wire_levels(levels: list[Level]) -> tuple[tuple[tuple[str, str], ...], bool]:
    """Current-form pairs, and whether every level is whole cents and whole contracts."""
    whole = all(is_whole_cent(p) and is_whole_contracts(q) for p, q in levels)
    return tuple((format_price(p), format_qty(q)) for p, q in levels), whole


def encode_snapshot(
    sid: int,
    seq: int,
    ticker: str,
    market_id: str | None,
    yes_levels: list[Level] | tuple[Level, ...],
    no_levels: list[Level] | tuple[Level, ...],
    use_yes_price: bool = False,
    legacy: bool = True,
) -> bytes:
    """An orderbook_snapshot frame in Kalshi's superset form.

    ``no_levels`` are in NO-leg terms; with ``use_yes_price`` they are emitted at YES-equivalent
    prices. Levels are emitted ascending (best bid last) and a side with no levels is omitted. The
    legacy integer keys are added only when ``legacy`` and every level of the frame is whole cents
    and whole contracts, so a legacy reader never sees a partial book (``legacy=False`` gives the
    current fixed-point-only shape).
    """
    for price, qty in (*yes_levels, *no_levels):
        if not 0 < price < PRICE_SCALE or qty <= 0:
            raise ValueError(f"snapshot level ({price}, {qty}) must have 0 < price < 1 and size > 0")
    yes = sorted(yes_levels)
    no = sorted((PRICE_SCALE - p, q) for p, q in no_levels) if use_yes_price else sorted(no_levels)
    yes_fp, yes_whole = _wire_levels(yes)
    no_fp, no_whole = _wire_levels(no)
    fields: dict[str, object] = {"yes_dollars_fp": yes_fp or None, "no_dollars_fp": no_fp or None}
    if legacy and yes_whole and no_whole:
        for key, levels in (("yes", yes), ("no", no)):
            if levels:
                fields[key] = tuple((price_to_cents(p), qty_to_contracts(q)) for p, q in levels)
                fields[f"{key}_dollars"] = tuple((format_price(p), qty_to_contracts(q)) for p, q in levels)
    msg = SnapshotMsg(market_ticker=ticker, market_id=market_id, **fields)  # type: ignore[arg-type]
    return msgspec.json.encode(OrderbookSnapshot(sid=sid, seq=seq, msg=msg))


def encode_delta(
    sid: int,
    seq: int,
    ticker: str,
    market_id: str | None,
    side: Side,
    price: int,
    delta: int,
    ts_ms: int | None,
    client_order_id: str | None = None,
    use_yes_price: bool = False,
    legacy: bool = True,
) -> bytes:
    """An orderbook_delta frame in Kalshi's superset form.

    ``price`` is in ``side``'s leg terms (NO-leg for NO); with ``use_yes_price`` a NO-side price is
    emitted at its YES equivalent. Legacy ``price``/``delta`` integers are added when ``legacy`` and
    both are whole.
    ``ts`` (deprecated) is derived from ``ts_ms``. ``client_order_id`` only for the owner's deltas.

    Same bytes as encoding :class:`OrderbookDelta` with msgspec (which :func:`_encode_delta_struct`
    still does for unusual argument types); built from cached text pieces because the simulator
    encodes one per published delta. A server fanning one delta out to several subscriptions
    encodes the ``msg`` once (:func:`encode_delta_msg`) and splices sid/seq in (:func:`delta_frame`).
    """
    if type(sid) is not int or type(seq) is not int:
        return _encode_delta_struct(
            sid, seq, ticker, market_id, side, price, delta, ts_ms, client_order_id, use_yes_price, legacy
        )
    msg = encode_delta_msg(
        ticker, market_id, side, price, delta, ts_ms, client_order_id, use_yes_price, legacy
    )
    return f'{{"type":"orderbook_delta","sid":{sid},"seq":{seq},"msg":{msg}}}'.encode()


def delta_frame(sid: int, seq: int, msg: str) -> str:
    """An orderbook_delta frame (text) around a ``msg`` from :func:`encode_delta_msg`.

    ``sid`` and ``seq`` must be plain ints (msgspec writes them exactly as ``str(int)`` does)."""
    return f'{{"type":"orderbook_delta","sid":{sid},"seq":{seq},"msg":{msg}}}'


_json_text = msgspec.json.Encoder().encode
# Text pieces of a delta's msg, each with its leading comma (head: the opening brace and ticker).
_heads: dict[tuple[str, str | None], str] = {}
_price_parts: dict[int, tuple[str | None, str]] = {}  # wire price -> (with legacy cents, fp only)
_qty_parts: dict[int, tuple[str | None, str]] = {}  # delta -> (with legacy contracts, fp only)
_last_ts_part: list[object] = [None, ""]


def encode_delta_msg(
    ticker: str,
    market_id: str | None,
    side: Side,
    price: int,
    delta: int,
    ts_ms: int | None,
    client_order_id: str | None = None,
    use_yes_price: bool = False,
    legacy: bool = True,
) -> str:
    """The ``msg`` object of :func:`encode_delta`'s frame, as JSON text (same arguments)."""
    if side.__class__ is not Side:
        side = Side(side)
    if not 0 < price < PRICE_SCALE or not delta:
        raise ValueError(f"delta ({price}, {delta}) must have 0 < price < 1 and a non-zero delta")
    if not (
        type(price) is int
        and type(delta) is int
        and (ts_ms is None or type(ts_ms) is int)
        and type(ticker) is str
        and (market_id is None or type(market_id) is str)
        and (client_order_id is None or type(client_order_id) is str)
    ):
        # Subclasses (bool, str enums, ...) may encode differently: let msgspec decide.
        frame = _encode_delta_struct(
            1, 1, ticker, market_id, side, price, delta, ts_ms, client_order_id, use_yes_price, legacy
        )
        return frame[frame.index(b'"msg":') + 6 : -1].decode()
    if use_yes_price and side is _NO:
        price = PRICE_SCALE - price
    head = _heads.get((ticker, market_id))
    if head is None:
        head = '{"market_ticker":' + _json_text(ticker).decode()
        if market_id is not None:
            head += ',"market_id":' + _json_text(market_id).decode()
        _remember_text(_heads, (ticker, market_id), head)
    price_part = _price_parts.get(price)
    if price_part is None:
        dollars = f',"price_dollars":"{format_price(price)}"'
        cents = f',"price":{price_to_cents(price)}{dollars}' if is_whole_cent(price) else None
        price_part = _price_parts[price] = (cents, dollars)
    qty_part = _qty_parts.get(delta)
    if qty_part is None:
        fp = f',"delta_fp":"{format_qty(delta)}"'
        contracts = f',"delta":{qty_to_contracts(delta)}{fp}' if is_whole_contracts(delta) else None
        qty_part = (contracts, fp)
        _remember_text(_qty_parts, delta, qty_part)
    if ts_ms is None:
        ts_part = ""
    elif _last_ts_part[0] == ts_ms:
        ts_part = _last_ts_part[1]  # type: ignore[assignment]
    else:
        ts_part = f',"ts":"{_rfc3339_from_ms(ts_ms)}","ts_ms":{ts_ms}'
        _last_ts_part[0] = ts_ms
        _last_ts_part[1] = ts_part
    if client_order_id is not None:
        ts_part = ',"client_order_id":' + _json_text(client_order_id).decode() + ts_part
    side_part = ',"side":"no"' if side is _NO else ',"side":"yes"'
    if legacy and price_part[0] is not None and qty_part[0] is not None:
        return f"{head}{price_part[0]}{qty_part[0]}{side_part}{ts_part}}}"
    return f"{head}{price_part[1]}{qty_part[1]}{side_part}{ts_part}}}"


def _remember_text(cache: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _encode_delta_struct(
    sid: int,
    seq: int,
    ticker: str,
    market_id: str | None,
    side: Side,
    price: int,
    delta: int,
    ts_ms: int | None,
    client_order_id: str | None = None,
    use_yes_price: bool = False,
    legacy: bool = True,
) -> bytes:
    """:func:`encode_delta` through the msgspec struct (the reference the text pieces reproduce)."""
    side = Side(side)
    if not 0 < price < PRICE_SCALE or not delta:
        raise ValueError(f"delta ({price}, {delta}) must have 0 < price < 1 and a non-zero delta")
    wire_price = PRICE_SCALE - price if side is Side.NO and use_yes_price else price
    whole = legacy and is_whole_cent(wire_price) and is_whole_contracts(delta)
    msg = DeltaMsg(
        market_ticker=ticker,
        market_id=market_id,
        price=price_to_cents(wire_price) if whole else None,
        price_dollars=format_price(wire_price),
        delta=qty_to_contracts(delta) if whole else None,
        delta_fp=format_qty(delta),
        side=side,
        client_order_id=client_order_id,
        ts=None if ts_ms is None else _rfc3339_from_ms(ts_ms),
        ts_ms=ts_ms,
    )
    return msgspec.json.encode(OrderbookDelta(sid=sid, seq=seq, msg=msg))


# The simulator stamps every delta it emits; strftime per frame was ~40% of encode_delta's cost,
# and consecutive frames almost always share a second, so the second's text is cached.
_last_stamp: list[object] = [None, ""]


def _rfc3339_from_ms(ts_ms: int) -> str:
    """Epoch ms -> "2026-06-24T15:49:55.033000Z" (Kalshi's microsecond form), exactly."""
    seconds, millis = divmod(ts_ms, 1000)
    if _last_stamp[0] != seconds:
        _last_stamp[1] = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_stamp[0] = seconds
    return f"{_last_stamp[1]}.{millis * 1000:06d}Z"
