"""Kalshi REST create-order requests, both ways: ``encode_create_order`` (client) and
``decode_create_order`` (simulator, accepting every price/count form Kalshi accepts).

The 201 response is ``{"order": Order}``, decoded by rest_portfolio.decode_order.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kalshiflow.market.prices import (
    ONE_DOLLAR,
    Money,
    Price,
    PriceError,
    Qty,
    complement,
    format_price,
    format_qty,
    money_from_cents,
    money_to_cents_floor,
    price_to_cents,
    qty_to_contracts,
)
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol.errors import DecodeError
from kalshiflow.protocol.rest_wire import decode_wire
from kalshiflow.protocol.wire_fields import ModelStruct, WireStruct, parse_side, to_price, to_qty


class CreateOrderWire(WireStruct, frozen=True, kw_only=True):
    """POST /portfolio/orders body (v1). Give one price: yes_price, no_price or a *_dollars string."""

    ticker: str
    side: str
    action: str
    client_order_id: str | None = None
    count: int | None = None
    count_fp: str | None = None
    yes_price: int | None = None
    no_price: int | None = None
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    type: str | None = None
    time_in_force: str | None = None
    expiration_ts: int | None = None
    buy_max_cost: int | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    self_trade_prevention_type: str | None = None
    order_group_id: str | None = None
    cancel_order_on_pause: bool | None = None
    subaccount: int | None = None


class OrderRequest(ModelStruct, frozen=True, kw_only=True):
    """An order to place. ``price`` is the limit price OF ``side``: buy NO at 0.30 -> price 3000."""

    ticker: str
    side: Side
    action: Action
    count: Qty
    price: Price | None  # None only for a legacy type="market" order
    client_order_id: str = ""
    time_in_force: str | None = None  # fill_or_kill | good_till_canceled | immediate_or_cancel
    type: str | None = None  # omitted on the wire by default (Kalshi removed it 2026-02-11)
    expiration_ts: int | None = None
    buy_max_cost: Money | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    self_trade_prevention_type: str | None = None
    order_group_id: str | None = None
    cancel_order_on_pause: bool | None = None
    subaccount: int | None = None

    @property
    def yes_price(self) -> Price | None:
        if self.price is None:
            return None
        return complement(self.price) if self.side is Side.NO else self.price


def encode_create_order(req: OrderRequest, *, legacy: bool = False) -> bytes:
    """Request body. Current form: ``count_fp`` + ``{side}_price_dollars``. ``legacy=True`` sends
    integer ``count`` + ``{side}_price`` instead (raises PriceError if not whole contracts/cents).
    Exactly one price field is sent because Kalshi rejects bodies naming two."""
    price_fields: dict[str, Any] = {}
    if req.price is not None:
        key = f"{req.side.value}_price"
        if legacy:
            price_fields[key] = price_to_cents(req.price)
        else:
            price_fields[key + "_dollars"] = format_price(req.price)
    buy_max_cost = None if req.buy_max_cost is None else money_to_cents_floor(req.buy_max_cost)
    wire = CreateOrderWire(
        ticker=req.ticker,
        side=req.side.value,
        action=req.action.value,
        client_order_id=req.client_order_id or None,
        count=qty_to_contracts(req.count) if legacy else None,
        count_fp=None if legacy else format_qty(req.count),
        type=req.type,
        time_in_force=req.time_in_force,
        expiration_ts=req.expiration_ts,
        buy_max_cost=buy_max_cost,
        post_only=req.post_only,
        reduce_only=req.reduce_only,
        self_trade_prevention_type=req.self_trade_prevention_type,
        order_group_id=req.order_group_id,
        cancel_order_on_pause=req.cancel_order_on_pause,
        subaccount=req.subaccount,
        **price_fields,
    )
    return msgspec.json.encode(wire)


def decode_create_order(data: bytes) -> OrderRequest:
    """Simulator side: accept every price/count form; DecodeError names the problem (-> HTTP 400)."""
    w = decode_wire(data, CreateOrderWire, "create order")
    try:
        side = parse_side(w.side, "side")
        try:
            action = Action(w.action)
        except ValueError:
            raise PriceError(f"action {w.action!r} is not buy/sell") from None
        counts = {c for c in (to_qty(w.count_fp, None, -1), to_qty(None, w.count, -1)) if c != -1}
        if len(counts) != 1:
            raise PriceError("give count or count_fp (equal if both)")
        count = counts.pop()
        if count <= 0:
            raise PriceError("count must be positive")
        yes = {
            p
            for p in (to_price(w.yes_price_dollars, None, None), to_price(None, w.yes_price, None))
            if p is not None
        }
        no = {
            p
            for p in (to_price(w.no_price_dollars, None, None), to_price(None, w.no_price, None))
            if p is not None
        }
        if len(yes) > 1 or len(no) > 1 or (yes and no):
            raise PriceError("give exactly one price (yes_price, no_price or a *_dollars string)")
        price: Price | None
        if yes:
            yes_price = yes.pop()
            price = complement(yes_price) if side is Side.NO else yes_price
        elif no:
            no_price = no.pop()
            price = no_price if side is Side.NO else complement(no_price)
        elif w.type == "market":
            price = None
        else:
            raise PriceError("a limit order needs a price")
        if price is not None and not 0 < price < ONE_DOLLAR:
            raise PriceError("price must lie strictly between 0 and 1")
    except PriceError as err:
        raise DecodeError(str(err)) from None
    return OrderRequest(
        ticker=w.ticker,
        side=side,
        action=action,
        count=count,
        price=price,
        client_order_id=w.client_order_id or "",
        time_in_force=w.time_in_force,
        type=w.type,
        expiration_ts=w.expiration_ts,
        buy_max_cost=None if w.buy_max_cost is None else money_from_cents(w.buy_max_cost),
        post_only=w.post_only,
        reduce_only=w.reduce_only,
        self_trade_prevention_type=w.self_trade_prevention_type,
        order_group_id=w.order_group_id,
        cancel_order_on_pause=w.cancel_order_on_pause,
        subaccount=w.subaccount,
    )
