"""The order router: the only code that sends orders, and only what the risk gate approved.

Used by ``actors/trader.py`` (it owns the REST client and the event loop; this holds no timers).

- :meth:`OrderRouter.place` redeems the approval right before the HTTP call
  (:meth:`RiskGate.redeem` refuses one made before a kill switch, expired or already sent),
  adds ``reduce_only`` where the action table's order is a reduction (it can only shrink an
  order), sends it with its client order id (a retried create is idempotent), and reports the
  outcome to the tracker, the gate, the reconciler and the ``orders`` table.
- :meth:`OrderRouter.cancel`: 404 = already gone; other failures leave the order open, to be
  cancelled again.
- Connection state: a connection error or 5xx on any call marks REST down (the gate then refuses
  new orders); the next successful call marks it up and cancels whatever may rest from before.
- :meth:`OrderRouter.cancel_all` cancels, waits, re-reads the exchange's resting orders and
  repeats until nothing of ours rests (shutdown, kill switch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import msgspec

from kalshiflow.protocol import errors as E
from kalshiflow.protocol import rest_models as rm
from kalshiflow.protocol.rest_client import KalshiRestClient
from kalshiflow.trading import records as R
from kalshiflow.trading.decision import DecisionEngine
from kalshiflow.trading.orders import CancelOrder, OrderCommand, PlaceOrder, TrackedOrder
from kalshiflow.trading.risk import RiskViolation
from kalshiflow.trading.sources import Sources
from kalshiflow.trading.state import Counters

__all__ = ["OrderRouter"]

log = logging.getLogger("kalshiflow.trader")


class OrderRouter:
    def __init__(self, rest: KalshiRestClient, engine: DecisionEngine, src: Sources, counters: Counters,
                 sink: R.RowSink, spawn: Callable[[Coroutine[Any, Any, Any]], None], *, account: str,
                 environment: str) -> None:
        self.rest, self.engine, self.src, self.c, self.sink = rest, engine, src, counters, sink
        self.gate, self.tracker = engine.gate, engine.tracker
        self._spawn = spawn
        self._meta = {"account": account, "environment": environment}
        self.rest_ok = True

    def execute(self, commands: Iterable[OrderCommand], received_ns: int = 0) -> None:
        """Send in the background (``received_ns``: when the data behind the decision arrived)."""
        for cmd in commands:
            self._spawn(self.place(cmd, received_ns) if isinstance(cmd, PlaceOrder) else self.cancel(cmd))

    async def place(self, cmd: PlaceOrder, received_ns: int = 0) -> None:
        cid, now_ns = cmd.client_order_id, time.time_ns()
        try:
            req = self.gate.redeem(cmd.approved)
            if cmd.reduce_only and not req.reduce_only:
                req = msgspec.structs.replace(req, reduce_only=True)
            sent_ns = time.time_ns()
            order = await self.rest.create_order(req)
        except (RiskViolation, E.KalshiError) as err:
            self.c.order_errors[getattr(err, "code", "") or type(err).__name__] += 1
            if isinstance(err, E.KalshiConnectionError | E.ServerError):
                # Unknown whether it was placed: the next order sync adopts it if it rests.
                self.connection(False, f"create {cid}: {err}")
            self.tracker.on_reject(cid)
            self.gate.order_result(cmd.approved, None)
            self.sink.add("orders", R.order_row(cmd, None, now_ns=time.time_ns(), error=f"{err!r}"[:300],
                                                **self._meta))
            return
        ack_ns = time.time_ns()
        self.c.rest_ms.append((ack_ns - sent_ns) / 1e6)
        if received_ns:
            self.c.ack_ms.append((ack_ns - received_ns) / 1e6)
        self.connection(True)
        cancels = self.tracker.on_ack(cid, order)
        self.gate.order_result(cmd.approved, order)
        self.src.tell_reconciler(order)
        self.sink.add("orders", R.order_row(cmd, order, now_ns=now_ns, **self._meta))
        self.execute(cancels)

    def order_changed(self, tracked: TrackedOrder, order: rm.Order | None, event: str) -> None:
        """The order's row again, as it is now (the writer keeps the newest version)."""
        if tracked.order_id is not None:
            self.sink.add("orders", R.order_state_row(tracked, order, now_ns=time.time_ns(), event=event,
                                                      **self._meta))

    async def cancel(self, cmd: CancelOrder) -> bool:
        self.c.cancels[cmd.reason] += 1
        try:
            result = await self.rest.cancel_order(cmd.order_id)
        except E.NotFound:
            self.tracker.on_cancel_failed(cmd.client_order_id, gone=True)
            return True
        except E.KalshiError as err:
            if isinstance(err, E.KalshiConnectionError | E.ServerError):
                self.connection(False, f"cancel {cmd.order_id}: {err}")
            self.tracker.on_cancel_failed(cmd.client_order_id, gone=False)
            return False
        self.connection(True)
        if (tracked := self.tracker.on_cancelled(cmd.client_order_id, result.order)) is not None:
            self.order_changed(tracked, result.order, "cancel")
        self.src.tell_reconciler(result.order)
        return True

    def connection(self, ok: bool, why: str = "") -> None:
        if ok == self.rest_ok:
            return
        self.rest_ok = ok
        if not ok:
            self.c.last_error = why[:300]
            log.warning("trader: REST connection lost (%s): no new orders until it is back", why)
        else:
            log.info("trader: REST connection back: cancelling what may rest from before")
            self.execute(self.engine.risk_commands(self.gate.connection_lost("REST connection restored")))

    async def sync(self, *, cancel_adopted: bool = False) -> None:
        """The open set := the exchange's resting orders (adopt a predecessor's, close vanished)."""
        try:
            resting = await self.src.resting_orders()
        except E.KalshiError as err:
            self.connection(False, f"order sync: {err}")
            return
        self.connection(True)
        _, adopted = self.tracker.sync(resting)
        if adopted and cancel_adopted:
            log.info("trader: cancelling %d resting orders a previous incarnation left", adopted)
            self.execute(self.engine.cancels(None, "left by a previous incarnation"))

    async def cancel_all(self, reason: str, commands: list[OrderCommand] | None = None, *,
                         in_flight: Iterable[asyncio.Task[Any]] = (), timeout: float = 10.0) -> int:
        """Send ``commands`` (default: cancel every open order), wait for them and for the sends
        ``in_flight``, re-read the exchange, repeat until nothing rests -> orders still open."""
        deadline = time.monotonic() + timeout
        cmds = commands if commands is not None else list(self.engine.cancels(None, reason))
        pending = list(in_flight)
        while time.monotonic() < deadline:
            sends = [self.place(c) if isinstance(c, PlaceOrder) else self.cancel(c) for c in cmds]
            # Bounded by the deadline: a send stuck in retries must not hold a shutdown forever.
            work = asyncio.gather(*sends, *pending, return_exceptions=True)
            try:
                await asyncio.wait_for(asyncio.shield(work), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("trader: %s: sends still pending at the cancel-all deadline", reason)
                break
            await self.sync()
            cmds, pending = list(self.engine.cancels(None, reason)), []
            if not len(self.tracker):
                return 0
            await asyncio.sleep(0.05)
        return len(self.tracker)
