"""The Trader's I/O adapters: who it asks for what (used by ``actors/trader.py`` only).

Everything is found by NAME when needed and re-found after a failure, so a restarted collector,
WriteQueue or reconciler, and a Serve replica replaced after a crash, are picked up without
telling the Trader:

- collectors (name prefix): ticker -> collector map, the ladders behind a top-of-book update
  (``books(tickers)``), and liveness (``stats().connected``);
- the PolicyServer: the Serve app handle (dropped after a failed call, fetched again next time);
- the PositionReconciler: ``portfolio()`` and order notifications; without one, a REST poll of
  balance and positions stands in (exchange truth, just slower);
- the exchange: market metadata and resting orders over REST.

No Ray import at module import time; nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from kalshiflow.collect import selection
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.serving.messages import ActBatch, ActBatchReply
from kalshiflow.trading import OpenOrder, PortfolioView, PositionSummary
from kalshiflow.trading.feed import Levels, MarketMeta
from kalshiflow.trading.reconcile import estimate_reserve
from kalshiflow.trading.spec import TraderSpec

__all__ = ["Sources", "empty_view"]

log = logging.getLogger("kalshiflow.trader")

_MAP_REFRESH_S = 3.0
_CALL_TIMEOUT_S = 2.0


def empty_view(account: str) -> PortfolioView:
    """No portfolio known yet: no cash, so the risk gate lets nothing through."""
    return PortfolioView(account=account, cash=0, reserved=0, available_cash=0, realized_pnl=0, fees_paid=0,
                         positions={}, open_orders=(), accounted_client_order_ids=frozenset(), synced=False,
                         as_of=0.0)


class Sources:
    def __init__(self, spec: TraderSpec, rest: KalshiRestClient) -> None:
        self.spec = spec
        self.rest = rest
        self._policy: Any = None
        self._wq: Any = None
        self._reconciler: Any = None
        self._collectors: dict[str, Any] = {}  # name -> handle
        self._owner: dict[str, str] = {}  # ticker -> collector name
        self._epochs: dict[str, int] = {}  # collector name -> connection epoch at the last poll
        self._mapped_at = -_MAP_REFRESH_S
        self._map_lock = asyncio.Lock()
        self._rest_view_at = 0.0
        self.errors = 0

    # ------------------------------------------------------------------ named actors

    def _actor(self, name: str) -> Any:
        import ray

        return ray.get_actor(name, namespace=self.spec.namespace)

    def writequeue(self) -> Any:
        if self._wq is None:
            assert self.spec.writequeue is not None
            self._wq = self._actor(self.spec.writequeue)
        return self._wq

    def policy(self) -> Any:
        if self._policy is None:
            from actors.policy_server import fast_policy_handle

            self._policy = fast_policy_handle(self.spec.policy_app)
        return self._policy

    async def act(self, batch: ActBatch, timeout: float) -> ActBatchReply:
        """One ``act_batch`` call; any failure (dead replica, Serve down, timeout) raises. The
        handle is kept: its router learns of a replacement replica from Serve's controller (a
        fresh handle per failure, with the router on this loop, never caught up in tests)."""
        reply: ActBatchReply = await asyncio.wait_for(self.policy().act_batch.remote(batch), timeout)
        return reply

    # ------------------------------------------------------------------ collectors

    async def _map(self, force: bool = False) -> None:
        # One mapping at a time: a caller arriving meanwhile waits for it instead of reading an
        # empty map (the first decision cycle and the first liveness check start together).
        async with self._map_lock:
            if not force and time.monotonic() - self._mapped_at < _MAP_REFRESH_S:
                return
            import ray

            names = await asyncio.to_thread(ray.util.list_named_actors)
            prefix = self.spec.collector_prefix
            found = sorted(n for n in names if isinstance(n, str) and n.startswith(prefix))
            handles = {n: self._collectors.get(n) or self._actor(n) for n in found}
            markets = await asyncio.gather(*(asyncio.wait_for(h.markets.remote(), _CALL_TIMEOUT_S)
                                             for h in handles.values()), return_exceptions=True)
            owner: dict[str, str] = {}
            for name, got in zip(handles, markets, strict=True):
                if isinstance(got, list):
                    owner.update((t, name) for t in got)
                else:  # not answering (restarting): it keeps its markets, so their loss is seen
                    owner.update((t, n) for t, n in self._owner.items() if n == name)
            self._collectors, self._owner = handles, owner
            self._mapped_at = time.monotonic()

    async def levels(self, tickers: Sequence[str]) -> dict[str, tuple[Levels, Levels]]:
        """The current ladders of these markets from their collectors ({} for unknown ones)."""
        if not tickers:
            return {}
        if any(t not in self._owner for t in tickers):
            await self._map()
        groups: dict[str, list[str]] = {}
        for t in tickers:
            name = self._owner.get(t)
            if name is not None:
                groups.setdefault(name, []).append(t)
        calls = [asyncio.wait_for(self._collectors[n].books.remote(ts), _CALL_TIMEOUT_S)
                 for n, ts in groups.items()]
        results = await asyncio.gather(*calls, return_exceptions=True)
        out: dict[str, tuple[Levels, Levels]] = {}
        for got in results:
            if isinstance(got, BaseException):
                self.errors += 1
                self._mapped_at = -_MAP_REFRESH_S  # re-map next time: the collector may have restarted
                continue
            for t, (valid, yes, no) in got.items():
                if valid:
                    out[t] = (tuple(map(tuple, yes)), tuple(map(tuple, no)))  # type: ignore[arg-type]
        return out

    async def collector_health(self) -> tuple[list[str], list[str]]:
        """(markets of connected collectors, markets of collectors that are disconnected, do not
        answer, or reconnected since the last call: a new connection epoch means the feed broke
        in between, however briefly -- a restarted collector can be back before the next poll)."""
        await self._map()
        names = list(self._collectors)
        stats = await asyncio.gather(*(asyncio.wait_for(self._collectors[n].stats.remote(), _CALL_TIMEOUT_S)
                                       for n in names), return_exceptions=True)
        live: list[str] = []
        lost: list[str] = []
        for name, s in zip(names, stats, strict=True):
            mine = [t for t, n in self._owner.items() if n == name]
            if isinstance(s, BaseException):
                lost += mine
                continue
            before = self._epochs.get(name)
            self._epochs[name] = s.epoch
            if not s.connected or (before and s.epoch != before):
                lost += mine
            else:
                live += mine
        return live, lost

    # ------------------------------------------------------------------ exchange

    async def market_metas(self, tickers: Sequence[str]) -> list[MarketMeta]:
        found = await selection.fetch_markets(self.rest, tickers)
        return [MarketMeta.from_market(found[t]) if t in found else MarketMeta(ticker=t) for t in tickers]

    async def resting_orders(self) -> list[rm.Order]:
        return [o async for o in self.rest.iter_orders(status="resting")]

    # ------------------------------------------------------------------ portfolio

    async def portfolio(self) -> PortfolioView | None:
        if self.spec.reconciler is None:
            return await self._rest_view()
        try:
            if self._reconciler is None:
                self._reconciler = self._actor(self.spec.reconciler)
            view: PortfolioView = await asyncio.wait_for(self._reconciler.portfolio.remote(), _CALL_TIMEOUT_S)
            return view
        except Exception as err:  # noqa: BLE001 - restarting reconciler: keep the last view
            self.errors += 1
            self._reconciler = None
            log.debug("trader: reconciler portfolio failed: %r", err)
            return None

    def tell_reconciler(self, order: rm.Order) -> None:
        """Our order changed (placed, cancelled): the reconciler's ledger tracks it (fire and forget)."""
        if self.spec.reconciler is None:
            return
        try:
            if self._reconciler is None:
                self._reconciler = self._actor(self.spec.reconciler)
            self._reconciler.track_order.remote(order)
        except Exception:  # noqa: BLE001 - its own REST reconcile will find the order anyway
            self._reconciler = None

    async def _rest_view(self) -> PortfolioView | None:
        """Without a reconciler: balance + positions from REST, at most once a second."""
        if time.monotonic() - self._rest_view_at < 1.0:
            return None
        self._rest_view_at = time.monotonic()
        try:
            balance = await self.rest.get_balance()
            page = await self.rest.get_all_positions()
            resting = [OpenOrder.from_order(o) async for o in self.rest.iter_orders(status="resting")]
        except Exception as err:  # noqa: BLE001 - keep the last view
            self.errors += 1
            log.debug("trader: REST portfolio failed: %r", err)
            return None
        positions = {p.ticker: PositionSummary(
            ticker=p.ticker, qty=p.position, cost=p.market_exposure, realized_pnl=p.realized_pnl,
            avg_price=p.market_exposure // abs(p.position) if p.position else 0, fees_paid=p.fees_paid,
            volume=0)
            for p in page.market_positions}
        # Kalshi's balance excludes resting orders' collateral; the view's cash includes it (as the
        # reconciler's does), so resting orders do not look like a loss to the risk gate.
        reserved = estimate_reserve({t: p.qty for t, p in positions.items()}, resting)
        return PortfolioView(account=self.spec.trader.account, cash=balance.balance + reserved,
                             reserved=reserved, available_cash=balance.balance,
                             realized_pnl=sum(p.realized_pnl for p in positions.values()),
                             fees_paid=sum(p.fees_paid for p in positions.values()), positions=positions,
                             open_orders=tuple(resting), accounted_client_order_ids=frozenset(), synced=True,
                             as_of=time.time())
