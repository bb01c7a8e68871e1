"""PositionReconciler against the embedded simulator, real Ray and real PostgreSQL.

Orders go through the REST client; the simulator's own state (``sim.state``) is the truth the
reconciler's portfolio must equal. Then the local state is corrupted (the reconciler must find,
count and fix it), and the actor is killed (it must come back and rebuild from REST).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.reconciler import FillNotice, ReconcilerSpec, start_reconciler
from actors.write_queue import start_write_queue
from kalshiflow.collect.testing import FaultProxy, make_keys
from kalshiflow.config import AppConfig, ExchangeConfig, RiskConfig, SimulatorConfig, WriteQueueConfig
from kalshiflow.exchange.accounts import user_id_for
from kalshiflow.exchange.embedded import run_simulator
from kalshiflow.exchange.events import MarketInfo, MarketStatus
from kalshiflow.market.prices import CENT, QTY_SCALE, Price, Qty
from kalshiflow.market.types import Action, Side
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol.auth import Signer
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.trading import PortfolioView

pytestmark = pytest.mark.usefixtures("ray_session")

C = QTY_SCALE
A, B = "KXREC-A", "KXREC-B"


@ray.remote(num_cpus=0.05)
class FillSink:
    """A stand-in Trader: keeps every fill notice, in order."""

    def __init__(self) -> None:
        self.notices: list[FillNotice] = []

    def on_fill(self, notice: FillNotice) -> None:
        self.notices.append(notice)

    def get(self) -> list[FillNotice]:
        return self.notices


def truth(sim: Any, owner: str) -> tuple[Any, ...]:
    pf = sim.state.venue.account(owner)
    positions = {t: (p.qty, p.cost, p.realized_pnl, p.fees_paid) for t, p in pf.positions.items() if p.qty}
    orders = {o.order_id: o.remaining_count for o in sim.state.venue.open_orders(owner)}
    return positions, pf.cash, pf.reserved, sim.state.balance(owner), orders


def seen(view: PortfolioView) -> tuple[Any, ...]:
    positions = {t: (p.qty, p.cost, p.realized_pnl, p.fees_paid) for t, p in view.positions.items() if p.qty}
    orders = {o.order_id: o.remaining for o in view.open_orders}
    return positions, view.cash, view.reserved, view.available_cash, orders


async def _has(sink: Any, n: int) -> bool:
    return len(await sink.get.remote()) >= n


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def add_market(sim: Any, ticker: str) -> None:
    now = time.time()
    sim.state.add_market(MarketInfo(ticker=ticker, event_ticker="KXREC", series_ticker="KXREC", title=ticker,
                                    open_time=now - 60, close_time=now + 86_400, status=MarketStatus.ACTIVE))
    # Crowd liquidity: YES bid 40c, NO bid 55c (so YES asks at 45c).
    sim.state.apply_external_delta(ticker, Side.YES, Price(40 * CENT), Qty(200 * C))
    sim.state.apply_external_delta(ticker, Side.NO, Price(55 * CENT), Qty(200 * C))


async def test_reconciler_tracks_the_exchange_corrects_divergence_and_rebuilds_after_a_kill(
    db_url: str, db: Any, tmp_path: Path
) -> None:
    credentials, keys = make_keys()
    owner = user_id_for(credentials.api_key_id)
    async with run_simulator(SimulatorConfig(generator=False, rate_limit=False), keys=keys) as sim:
        for t in (A, B):
            add_market(sim, t)
        wq_name = f"wq-{uuid.uuid4().hex[:6]}"
        wq = start_write_queue(AppConfig(write_queue=WriteQueueConfig(spill_dir=str(tmp_path / "spill"))),
                               name=wq_name, url=db_url, num_cpus=0.05)
        # The WriteQueue by name (restart-safe: nothing held in the object store for the restart).
        risk = RiskConfig(reconcile_interval_s=0.5, order_grace_s=1.0)
        spec = ReconcilerSpec(account="paper-1", rest_url=sim.rest_url, ws_url=sim.ws_url,
                              credentials=credentials, risk=risk, write_queue=wq_name)
        rec = start_reconciler(spec, name=f"rec-{uuid.uuid4().hex[:6]}", num_cpus=0.05)
        assert await rec.ready.remote(30)
        sink = FillSink.remote()
        assert await rec.add_subscriber.remote(sink)

        signer = Signer.from_credentials(credentials)
        async with KalshiRestClient(sim.rest_url, signer=signer, config=ExchangeConfig()) as rest:

            async def place(ticker: str, side: Side, action: Action, n: int, cents: int) -> rm.Order:
                order = await rest.create_order(rm.OrderRequest(ticker=ticker, side=side, action=action,
                                                                count=Qty(n * C), price=Price(cents * CENT)))
                await rec.track_order.remote(order)  # what the Trader does with every answer
                return order

            await place(A, Side.YES, Action.BUY, 10, 45)  # takes the 55c NO bid: 10 YES at 45c
            await place(B, Side.NO, Action.BUY, 5, 60)  # takes the 40c YES bid: 5 NO at 60c (NO price)
            await place(A, Side.YES, Action.SELL, 4, 40)  # sells 4 YES into the 40c bid (nets)
            resting = await place(A, Side.YES, Action.BUY, 7, 30)  # rests
            await place(B, Side.NO, Action.BUY, 3, 20)  # rests
            await rest.cancel_order(resting.order_id)
            await rec.track_order.remote(await rest.get_order(resting.order_id))

            async def matches() -> bool:
                return seen(await rec.portfolio.remote()) == truth(sim, owner)

            await eventually(matches)
            view = await rec.portfolio.remote()
            assert view.synced and view.connected
            assert view.positions[B].qty == -5 * C and view.positions[B].avg_price == 60 * CENT
            assert view.positions[A].qty == 6 * C
            assert view.positions[A].realized_pnl == 4 * C * (40 - 45) * CENT  # sold 4 at 40c, bought at 45c
            await asyncio.sleep(1.2)  # a couple of periodic reconciles: nothing to correct
            report = await rec.reconcile_now.remote()
            assert report.discrepancies == () and not report.bootstrap
            stats = await rec.stats.remote()
            exchange_fills = sim.state.fills(owner)
            assert stats.fills == len(exchange_fills) == 3 and stats.discrepancies == {}
            assert stats.reconciles >= 2 and stats.connected
            assert stats.positions == 2 and stats.open_orders == 1
            await eventually(lambda: _has(sink, 3))
            notices = await sink.get.remote()
            assert [n.fill.trade_id for n in notices] == [f.trade_id for f in reversed(exchange_fills)]
            no_fill = next(n.fill for n in notices if n.fill.ticker == B)
            assert no_fill.bought_side is Side.NO and no_fill.bought_price == 60 * CENT
            # Numbered, with running totals (all three took liquidity: taker fills).
            totals = [(n.seq, n.maker_fills, n.taker_fills) for n in notices]
            assert totals == [(1, 0, 1), (2, 0, 2), (3, 0, 3)]
            assert len({n.origin for n in notices}) == 1
            # A subscriber that comes late asks for the last two again; they come before new ones.
            late = FillSink.remote()
            assert await rec.add_subscriber.remote(late, "on_fill", 2)
            assert not await rec.add_subscriber.remote(late, "on_fill", 2), "once per subscriber"
            await eventually(lambda: _has(late, 2))
            assert await late.get.remote() == notices[1:]

            # Corrupt the ledger: wrong quantity, a missing position, forgotten orders, cash drift.
            await rec.inject_divergence.remote(positions={A: (9 * C, 9 * C * 45 * CENT), B: (0, 0)},
                                               cash_delta=-3_000_000, drop_orders=True)
            assert seen(await rec.portfolio.remote()) != truth(sim, owner)

            async def corrected() -> bool:
                return (await rec.stats.remote()).discrepancies != {} and await matches()

            await eventually(corrected)  # the periodic reconcile, not us, finds and fixes it
            stats = await rec.stats.remote()
            assert stats.discrepancies == {"wrong_qty": 1, "missing_position": 1, "unknown_order": 1,
                                           "balance_drift": 1}, stats.discrepancies

            # Kill it: it restarts and rebuilds the same portfolio from REST alone.
            ray.kill(rec, no_restart=False)

            async def restarted() -> bool:
                try:  # the kill is asynchronous: calls fail while the new incarnation starts
                    return bool(await rec.ready.remote(30)) and (await rec.stats.remote()).restarted
                except (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError):
                    return False

            await eventually(restarted, timeout=90)
            await eventually(matches)
            stats = await rec.stats.remote()
            assert stats.restarted and stats.synced and stats.bootstrap_corrections >= 3
            assert stats.discrepancies == {} and stats.fills == 0

            # Trading goes on after the restart and the new incarnation follows it in real time.
            await place(A, Side.NO, Action.BUY, 6, 60)  # flattens A: 6 NO at 60c against 6 YES
            await eventually(matches)
            assert A not in {t for t, p in (await rec.portfolio.remote()).positions.items() if p.qty}
            # B settles NO: the exchange cancels the resting order and pays $1 per NO contract.
            # Lifecycle messages let the ledger do the same: no discrepancy is reported.
            cash = (await rec.portfolio.remote()).cash
            sim.state.settle_market(B, "no")
            await eventually(matches)
            view = await rec.portfolio.remote()
            assert view.open_orders == () and view.positions[B].qty == 0
            assert view.cash == cash + 5 * C * 10_000  # $5 paid out (the order's collateral was cash already)
            await asyncio.sleep(1.2)
            assert (await rec.stats.remote()).discrepancies == {}
            final = await rec.stop.remote()
            assert final.unacked_rows == 0 and final.fills == 1

    rows = await db.fetch("SELECT trade_id, ticker, side, action, yes_price, no_price, count, post_position "
                          "FROM fills WHERE account = 'paper-1'")
    assert len(rows) == 4  # 3 recorded live before the kill (the rebuild records none again) + 1 after
    b_row = next(r for r in rows if r["ticker"] == B)
    # The NO fill is stored with its NO price (0.60), not the YES price.
    assert (b_row["side"], b_row["yes_price"], b_row["no_price"]) == ("no", 4000, 6000)
    assert b_row["post_position"] == -5 * C
    sources = {r["source"] for r in await db.fetch("SELECT source FROM position_snapshots")}
    assert sources == {"exchange", "local"}
    await wq.close.remote()


async def test_fills_the_feed_missed_are_healed_by_rest_and_backfilled_after_a_reconnect() -> None:
    credentials, keys = make_keys()
    owner = user_id_for(credentials.api_key_id)
    async with run_simulator(SimulatorConfig(generator=False, rate_limit=False), keys=keys) as sim, \
            FaultProxy(sim.ws_url) as proxy:
        add_market(sim, A)
        spec = ReconcilerSpec(account="paper-2", rest_url=sim.rest_url, ws_url=proxy.url,
                              credentials=credentials, risk=RiskConfig(reconcile_interval_s=0.3))
        rec = start_reconciler(spec, name=f"rec-{uuid.uuid4().hex[:6]}", num_cpus=0.05)
        assert await rec.ready.remote(30)
        # The feed loses every private message from now on.
        proxy.fault = lambda _i, data: [] if wc.peek(data).type in ("fill", "market_position") else [data]
        async with KalshiRestClient(sim.rest_url, signer=Signer.from_credentials(credentials)) as rest:
            await rest.create_order(rm.OrderRequest(ticker=A, side=Side.YES, action=Action.BUY,
                                                    count=Qty(10 * C), price=Price(45 * CENT)))

        async def matches() -> bool:
            return seen(await rec.portfolio.remote()) == truth(sim, owner)

        await eventually(matches)  # REST found what the feed never said
        stats = await rec.stats.remote()
        assert stats.fills == 0 and stats.discrepancies == {"missing_position": 1, "balance_drift": 1}
        # The connection drops and comes back: the missed fill is fetched and recorded, not booked
        # a second time (the ledger already holds it).
        proxy.fault = None
        assert proxy.cut() == 1

        async def backfilled() -> bool:
            s = await rec.stats.remote()
            return s.backfilled_fills == 1 and s.reconnects == 1 and s.connected

        await eventually(backfilled)
        await asyncio.sleep(0.8)
        assert await matches()
        stats = await rec.stats.remote()
        assert stats.fills == 1 and stats.discrepancies == {"missing_position": 1, "balance_drift": 1}
        await rec.stop.remote()


async def test_a_fill_notice_says_when_its_resting_order_was_created() -> None:
    """The dashboard's average fill time reads it: an order placed and filled between two of its
    portfolio polls was never seen open there."""
    credentials, keys = make_keys()
    async with run_simulator(SimulatorConfig(generator=False, rate_limit=False), keys=keys) as sim:
        add_market(sim, A)
        spec = ReconcilerSpec(account="paper-3", rest_url=sim.rest_url, ws_url=sim.ws_url,
                              credentials=credentials, risk=RiskConfig(reconcile_interval_s=0.3))
        rec = start_reconciler(spec, name=f"rec-{uuid.uuid4().hex[:6]}", num_cpus=0.05)
        assert await rec.ready.remote(30)
        sink = FillSink.remote()
        assert await rec.add_subscriber.remote(sink)
        async with KalshiRestClient(sim.rest_url, signer=Signer.from_credentials(credentials)) as rest:
            order = await rest.create_order(rm.OrderRequest(ticker=A, side=Side.YES, action=Action.BUY,
                                                            count=Qty(3 * C), price=Price(30 * CENT)))
            await rec.track_order.remote(order)  # rests below the 40c crowd bid
        (known,) = (await rec.portfolio.remote()).open_orders
        assert known.order_id == order.order_id and known.created_ts > 0
        # A recorded trade at 30c: the 30c level holds only our order, so it fills it (maker).
        sim.state.apply_external_delta(A, Side.YES, Price(30 * CENT), Qty(-3 * C), traded=True)
        await eventually(lambda: _has(sink, 1))
        (notice,) = await sink.get.remote()
        assert notice.fill.order_id == order.order_id and not notice.fill.is_taker
        assert (notice.maker_fills, notice.taker_fills) == (1, 0)
        assert notice.order_created_ts == known.created_ts
        assert (await rec.portfolio.remote()).open_orders == (), "the fill closed it"
        await rec.stop.remote()
