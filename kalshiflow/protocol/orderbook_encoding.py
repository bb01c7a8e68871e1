"""Encoders of Kalshi WS v2 order-book frames, in Kalshi's superset wire form (kalshi-protocol.md §0.3).

The simulator encodes one frame per published delta, so ``encode_delta`` builds its text from
cached pieces; ``_encode_delta_struct`` is the msgspec reference those pieces reproduce byte for
byte. Prices are integer ticks and sizes integer hundredths (``market.prices``), as decoded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec

from kalshiflow.market.prices import (
    PRICE_SCALE,
    format_price,
    format_qty,
    is_whole_cent,
    is_whole_contracts,
    price_to_cents,
    qty_to_contracts,
)
from kalshiflow.market.types import Side
from kalshiflow.protocol.orderbook_frames import (
    DeltaMsg,
    Level,
    OrderbookDelta,
    OrderbookSnapshot,
    SnapshotMsg,
)

__all__ = ["encode_snapshot", "encode_delta", "encode_delta_msg", "delta_frame"]

_NO: Final = Side.NO  # module constant: one global load per frame
_CACHE_LIMIT: Final = 65_536  # bounds memory if a caller sends endless distinct tickers/sizes


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
