"""Order bookkeeping: client order ids, the open-order set, cancels in flight, exchange sync."""

from __future__ import annotations

import msgspec
import pytest

from kalshiflow.market.fees import FeeSchedule
from kalshiflow.market.matching import OrderRequest as EngineOrder
from kalshiflow.market.prices import CENT, MONEY_SCALE, QTY_SCALE, Money
from kalshiflow.market.types import Action, OrderStatus, Side, TimeInForce
from kalshiflow.market.venue import Venue
from kalshiflow.protocol import rest_models as rm
from kalshiflow.trading.orders import CancelOrder, ClientOrderIds, OrderTracker, PlaceOrder
from kalshiflow.trading.risk import ApprovedOrder

T = "KXT-1"


def cmd(side: Side = Side.YES, action: Action = Action.BUY, price: int = 40 * CENT,
        count: int = 5 * QTY_SCALE, cid: str = "k-1-1", ticker: str = T,
        tif: str = "good_till_canceled") -> PlaceOrder:
    req = rm.OrderRequest(ticker=ticker, side=side, action=action, count=count, price=price,  # type: ignore[arg-type]
                          client_order_id=cid, time_in_force=tif)
    approved = ApprovedOrder(approval_id="a", request=req, issued_at=0.0, expires_at=1.0, reducing=False)
    return PlaceOrder(approved=approved, decision_id="d", model_version="v0001")


def order(c: PlaceOrder, oid: str, status: str = "resting", remaining: int | None = None) -> rm.Order:
    req = c.request
    rem = req.count if remaining is None else remaining
    price = req.price or 0
    return rm.Order(order_id=oid, client_order_id=req.client_order_id, ticker=req.ticker, side=req.side,
                    action=req.action, type="limit", status=OrderStatus(status),
                    yes_price=price if req.side is Side.YES else 10_000 - price,  # type: ignore[arg-type]
                    no_price=price if req.side is Side.NO else 10_000 - price,  # type: ignore[arg-type]
                    initial_count=req.count, fill_count=req.count - rem, remaining_count=rem,  # type: ignore[arg-type]
                    taker_fill_cost=0, maker_fill_cost=0, taker_fees=0, maker_fees=0)  # type: ignore[arg-type]


def test_client_order_ids_are_unique_short_and_recognisable() -> None:
    a, b = ClientOrderIds("kf", 1_700_000_000_000_000_000), ClientOrderIds("kf", 1_700_000_000_000_000_001)
    ids = [a.next() for _ in range(1000)] + [b.next() for _ in range(1000)]
    assert len(set(ids)) == 2000 and max(map(len, ids)) <= 64
    assert a.owns(ids[0]) and a.owns(ids[-1])
    assert not a.owns("kf2-1-1") and not a.owns("") and not a.owns(None)
    with pytest.raises(ValueError):
        ClientOrderIds("bad-prefix", 1)


def test_pending_then_acked_then_partly_and_fully_filled() -> None:
    tracker = OrderTracker(ClientOrderIds("k", 1))
    buy = cmd()
    sell_yes = cmd(side=Side.YES, action=Action.SELL, price=60 * CENT, cid="k-1-2")
    tracker.track(buy)
    tracker.track(sell_yes)
    # Pending orders count at once; a YES sale at 60c rests on the NO ladder at 40c.
    assert tracker.account_orders(T) == ((0, 40 * CENT, 500), (1, 40 * CENT, 500))
    assert tracker.on_ack("k-1-1", order(buy, "o1")) == []
    assert tracker.get("k-1-1").status == "resting"  # type: ignore[union-attr]
    tracker.on_fill("o1", 200)
    assert tracker.account_orders(T)[0] == (0, 40 * CENT, 300)
    tracker.on_fill("o1", 300)
    assert tracker.get("k-1-1") is None and tracker.n["executed"] == 1
    assert tracker.n["fills"] == 2 and tracker.n["filled_qty"] == 500
    # An IOC answered "executed" (or "canceled") at once is closed by the ack itself.
    ioc = cmd(cid="k-1-3", tif="immediate_or_cancel")
    tracker.track(ioc)
    tracker.on_ack("k-1-3", order(ioc, "o3", "canceled", remaining=0))
    assert tracker.get("k-1-3") is None


def test_order_rows_follow_fills_and_cancels() -> None:
    from kalshiflow.storage.schema import TABLES
    from kalshiflow.trading.records import order_row, order_state_row

    cols = TABLES["orders"].columns
    tracker = OrderTracker(ClientOrderIds("k", 1))
    no_buy = cmd(side=Side.NO, price=30 * CENT)
    tracker.track(no_buy)
    tracker.on_ack("k-1-1", order(no_buy, "o1"))
    meta = {"account": "paper", "environment": "simulator"}
    first = dict(zip(cols, order_row(no_buy, order(no_buy, "o1"), now_ns=1_000, **meta), strict=True))
    filled = tracker.on_fill("o1", 200)
    assert filled is not None
    partly = dict(zip(cols, order_state_row(filled, None, now_ns=2_000, event="fill", **meta), strict=True))
    cancelled = tracker.on_cancelled("k-1-1", order(no_buy, "o1", "canceled", remaining=0))
    assert cancelled is filled
    last = dict(zip(cols, order_state_row(cancelled, order(no_buy, "o1", "canceled", remaining=0),
                                          now_ns=3_000, event="cancel", **meta), strict=True))
    immutable = [c for c in cols if c not in TABLES["orders"].mutable and c != "created_at"]
    # The same order in every version (a NO buy at 30c is a YES price of 70c), its state moving on.
    assert [first[c] for c in immutable] == [partly[c] for c in immutable] == [last[c] for c in immutable]
    assert first["yes_price"] == 70 * CENT
    assert (first["decision_id"], first["model_version"]) == ("d", "v0001")
    assert (first["status"], first["fill_count"], first["remaining_count"]) == ("resting", 0, 500)
    assert (partly["status"], partly["fill_count"], partly["remaining_count"]) == ("resting", 200, 300)
    assert (last["status"], last["fill_count"], last["remaining_count"]) == ("canceled", 500, 0)
    assert first["updated_at"] < partly["updated_at"] < last["updated_at"]
    assert (partly["raw"]["event"], last["raw"]["event"]) == ("fill", "cancel")


def test_rejects_and_cancels() -> None:
    tracker = OrderTracker(ClientOrderIds("k", 1))
    c1, c2 = cmd(cid="k-1-1"), cmd(cid="k-1-2", ticker="KXOTHER")
    tracker.track(c1)
    tracker.track(c2)
    # Cancel-all while both are in flight: nothing to send yet, both marked.
    assert tracker.cancel(reason="kill") == []
    # The ack of a marked order returns its cancel at once.
    assert tracker.on_ack("k-1-1", order(c1, "o1")) == [
        CancelOrder(client_order_id="k-1-1", order_id="o1", ticker=T, reason="kill")]
    assert tracker.cancel(reason="again") == []  # already sent: never twice
    tracker.on_cancelled("k-1-1", order(c1, "o1", "canceled", remaining=0))
    assert tracker.get("k-1-1") is None
    tracker.on_reject("k-1-2")
    assert len(tracker) == 0 and tracker.n["rejected"] == 1 and tracker.n["cancelled"] == 1
    # A failed cancel can be retried; a 404 means the order is gone.
    c3 = cmd(cid="k-1-3")
    tracker.track(c3)
    tracker.on_ack("k-1-3", order(c3, "o3"))
    (first,) = tracker.cancel(T, reason="policy")
    tracker.on_cancel_failed("k-1-3", gone=False)
    assert tracker.cancel(T, reason="policy") == [first]
    tracker.on_cancel_failed("k-1-3", gone=True)
    assert len(tracker) == 0


def test_sync_closes_vanished_orders_and_adopts_our_leftovers() -> None:
    ids = ClientOrderIds("k", 2)
    tracker = OrderTracker(ids)
    mine, pending = cmd(cid="k-2-1"), cmd(cid="k-2-2")
    tracker.track(mine)
    tracker.track(pending)
    tracker.on_ack("k-2-1", order(mine, "o1"))
    predecessor = cmd(cid="k-1-7", price=30 * CENT)
    stranger = cmd(cid="someone-else", price=20 * CENT)
    closed, adopted = tracker.sync([order(predecessor, "o7"), order(stranger, "o9")])
    assert (closed, adopted) == (1, 1)
    open_ = {o.client_order_id: o for o in tracker.open_orders()}
    assert set(open_) == {"k-2-2", "k-1-7"}  # pending kept; the predecessor's adopted
    assert open_["k-1-7"].order_id == "o7" and open_["k-1-7"].status == "resting"
    assert [c.order_id for c in tracker.cancel(reason="shutdown")] == ["o7"]


def test_reserved_collateral_matches_the_venue() -> None:
    """The per-market collateral the tracker computes is the Venue's own requirement."""
    venue = Venue()
    venue.add_market(T)
    venue.open_account("me", Money(1000 * MONEY_SCALE))
    venue.open_account("crowd", Money(1000 * MONEY_SCALE))
    # Hold 3 YES so the NO-ladder order partly nets the holding.
    venue.submit("crowd", T, EngineOrder(side=Side.NO, action=Action.BUY, count=300, no_price=55 * CENT))
    venue.submit("me", T, EngineOrder(side=Side.YES, action=Action.BUY, count=300, yes_price=45 * CENT,
                                      time_in_force=TimeInForce.IOC))
    tracker = OrderTracker(ClientOrderIds("k", 1))
    for i, (side, action, price, count) in enumerate([(Side.YES, Action.BUY, 40 * CENT, 500),
                                                      (Side.YES, Action.SELL, 70 * CENT, 800),
                                                      (Side.NO, Action.BUY, 20 * CENT, 150)]):
        kw = {"yes_price": price} if side is Side.YES else {"no_price": price}
        venue.submit("me", T, EngineOrder(side=side, action=action, count=count, **kw))  # type: ignore[arg-type]
        tracker.track(cmd(side=side, action=action, price=price, count=count, cid=f"k-1-{i}"))
    position = venue.account("me").position(T)
    assert position == 300
    assert tracker.reserved(T, position, FeeSchedule()) == venue.reserved("me", T) > 0


def test_views_are_plain_messages() -> None:
    tracker = OrderTracker(ClientOrderIds("k", 1))
    tracker.track(cmd())
    (v,) = [o.view() for o in tracker.open_orders()]
    assert msgspec.to_builtins(v)["status"] == "pending" and v.model_version == "v0001"


async def test_paper_trading_refuses_production_orders_unless_opted_in() -> None:
    """The startup check runs before anything starts (no Ray, no exchange connection needed)."""
    from kalshiflow.collect.testing import make_keys
    from kalshiflow.config import AppConfig, ExchangeConfig
    from kalshiflow.protocol.endpoints import resolve_endpoints
    from kalshiflow.protocol.errors import OrderPlacementRefused
    from kalshiflow.trading.paper import check_order_placement, paper_trading

    credentials, _ = make_keys(1024)
    production = AppConfig(exchange=ExchangeConfig(environment="production"))
    with pytest.raises(OrderPlacementRefused, match="allow_production_orders"):
        async with paper_trading(production, credentials=credentials):
            pass  # pragma: no cover - never reached
    # A demo config whose URL points at a real-money host is refused even with the flag set.
    sneaky = AppConfig(exchange=ExchangeConfig(environment="demo", allow_production_orders=True,
                                               rest_url="https://api.elections.kalshi.com/trade-api/v2"))
    with pytest.raises(OrderPlacementRefused):
        check_order_placement(sneaky, resolve_endpoints(sneaky.exchange))
    opted_in = AppConfig(exchange=ExchangeConfig(environment="production", allow_production_orders=True))
    check_order_placement(opted_in, resolve_endpoints(opted_in.exchange))  # explicit opt-in: allowed
    demo = AppConfig(exchange=ExchangeConfig(environment="demo"))
    check_order_placement(demo, resolve_endpoints(demo.exchange))
