"""The subscriptions a :class:`~kalshiflow.protocol.ws_client.KalshiWsClient` keeps alive.

Desired subscriptions are kept as :class:`Subscription` objects that survive reconnects; their
``sid`` is valid for the epoch in ``Subscription.epoch``. On every new connection the client
re-sends them all (``_resubscribe_all``) before it reports ready. :class:`SubscriptionCommands`
holds that bookkeeping and the subscription commands; the client supplies the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol.errors import WsCommandError, WsNotConnected

log = logging.getLogger("kalshiflow.protocol.ws_client")  # one logger for the whole client


class Subscription:
    """One channel subscription the client keeps alive across reconnects."""

    __slots__ = ("channel", "market_tickers", "options", "sid", "epoch", "last_error")

    def __init__(self, channel: str, market_tickers: Sequence[str], options: dict[str, Any]) -> None:
        self.channel = channel
        self.market_tickers: tuple[str, ...] = tuple(dict.fromkeys(market_tickers))
        self.options = options  # extra subscribe params (use_yes_price, send_initial_snapshot, ...)
        self.sid: int | None = None
        self.epoch = 0  # epoch in which ``sid`` was assigned; stale when != client.epoch
        self.last_error: WsCommandError | None = None

    def __repr__(self) -> str:
        n = len(self.market_tickers)
        return f"Subscription({self.channel!r}, {n} markets, sid={self.sid}, epoch={self.epoch})"


class SubscriptionCommands:
    """The subscription half of :class:`KalshiWsClient`, mixed in as its base class: the desired
    subscriptions and the commands that create, update, resync and end them."""

    # Provided by the client: its desired subscriptions, current epoch and connection (set while an
    # epoch is served, re-subscribe included; None between epochs).
    _subs: list[Subscription]
    _epoch: int
    _conn: object | None

    if TYPE_CHECKING:

        async def wait_ready(self, timeout: float | None = None) -> None: ...

        async def command(
            self,
            build: Callable[[int], wc.Command],
            *,
            apply: Callable[[wc.Reply], None] | None = None,
            timeout: float | None = None,
        ) -> wc.Reply: ...

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    def subscription_for_sid(self, sid: int) -> Subscription | None:
        for sub in self._subs:
            if sub.sid == sid and sub.epoch == self._epoch:
                return sub
        return None

    async def _send_subscribe(self, sub: Subscription, epoch: int, timeout: float | None) -> None:
        params = wc.SubscribeParams(
            channels=[sub.channel], market_tickers=list(sub.market_tickers) or None, **sub.options
        )

        def apply(reply: wc.Reply) -> None:
            if isinstance(reply, wc.Subscribed):
                sub.sid = reply.msg.sid
            elif isinstance(reply, wc.Ok) and reply.sid is not None:
                sub.sid = reply.sid  # the server merged the markets into an existing sid
            sub.epoch = epoch
            sub.last_error = None

        try:
            await self.command(lambda cid: wc.Subscribe(id=cid, params=params), apply=apply, timeout=timeout)
        except WsCommandError as err:
            sub.last_error = err
            raise

    async def _resubscribe_all(self, epoch: int) -> None:
        for sub in list(self._subs):
            sub.sid = None
            try:
                await self._send_subscribe(sub, epoch, None)
            except WsCommandError as err:
                # Keep it registered; the owner sees last_error. Other subscriptions still go on.
                log.warning("kalshi ws re-subscribe %r refused: %s", sub, err)

    async def _establish(self, sub: Subscription, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            await self.wait_ready(remaining)
            epoch = self._epoch
            if sub.epoch == epoch and sub.sid is not None:
                return  # the reconnect path subscribed it
            try:
                await self._send_subscribe(sub, epoch, remaining)
                return
            except WsNotConnected:
                continue

    async def _keep(self, sub: Subscription, timeout: float | None) -> Subscription:
        """Register ``sub`` to be kept alive and establish it; a refusal (WsCommandError) unregisters it."""
        self._subs.append(sub)
        try:
            await self._establish(sub, timeout)
        except WsCommandError:
            self._subs.remove(sub)
            raise
        return sub

    async def subscribe(
        self,
        channel: str,
        market_tickers: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Subscription:
        """Subscribe one channel (``options``: use_yes_price, send_initial_snapshot, skip_ticker_ack, ...).

        Returns once the server answered (``sub.sid`` set). The subscription is re-created on every
        reconnect. A WsCommandError unregisters it; on TimeoutError it stays registered and will be
        established on the next connection (``unsubscribe`` drops it).
        """
        opts = {k: v for k, v in options.items() if v is not None}
        wc.SubscribeParams(channels=[channel], **opts)  # unknown option names fail here, not later
        return await self._keep(Subscription(channel, market_tickers or (), opts), timeout)

    async def update_subscription(
        self, sub: Subscription, action: str, market_tickers: Sequence[str], *, timeout: float | None = None
    ) -> wc.Ok | None:
        """add_markets / delete_markets / get_snapshot on ``sub``'s sid.

        The desired market list changes first, so a reconnect racing this call still converges.
        Returns None when there is no live sid to update (the next re-subscribe carries the list).
        """
        if action == "add_markets":
            sub.market_tickers = tuple(dict.fromkeys(sub.market_tickers + tuple(market_tickers)))
        elif action == "delete_markets":
            drop = set(market_tickers)
            sub.market_tickers = tuple(t for t in sub.market_tickers if t not in drop)
        elif action != "get_snapshot":
            raise ValueError(f"unknown update_subscription action {action!r}")
        sid, epoch = sub.sid, sub.epoch
        if sid is None or epoch != self._epoch or self._conn is None:
            return None
        params = wc.UpdateSubscriptionParams(sids=[sid], market_tickers=list(market_tickers), action=action)

        def apply(reply: wc.Reply) -> None:
            if isinstance(reply, wc.Ok) and reply.tickers is not None and action != "get_snapshot":
                sub.market_tickers = tuple(reply.tickers)  # the server's full list is the truth

        try:
            reply = await self.command(
                lambda cid: wc.UpdateSubscription(id=cid, params=params), apply=apply, timeout=timeout
            )
        except WsNotConnected:
            return None
        return reply if isinstance(reply, wc.Ok) else None

    async def add_markets(self, sub: Subscription, tickers: Sequence[str]) -> wc.Ok | None:
        return await self.update_subscription(sub, "add_markets", tickers)

    async def delete_markets(self, sub: Subscription, tickers: Sequence[str]) -> wc.Ok | None:
        return await self.update_subscription(sub, "delete_markets", tickers)

    async def get_snapshot(self, sub: Subscription, tickers: Sequence[str]) -> wc.Ok | None:
        return await self.update_subscription(sub, "get_snapshot", tickers)

    async def unsubscribe(self, sub: Subscription, *, timeout: float | None = None) -> wc.Reply | None:
        """Stop re-creating ``sub`` and end it on the server if it is live in this epoch."""
        if sub in self._subs:
            self._subs.remove(sub)
        sid, live = sub.sid, sub.sid is not None and sub.epoch == self._epoch and self._conn is not None
        sub.sid = None
        if not live or sid is None:
            return None
        sharing = [s for s in self._subs if s.sid == sid and s.epoch == sub.epoch]
        try:
            if sharing:
                # Another Subscription shares this sid (server merged them): only remove our markets.
                keep = {t for s in sharing for t in s.market_tickers}
                gone = [t for t in sub.market_tickers if t not in keep]
                params = wc.UpdateSubscriptionParams(sids=[sid], market_tickers=gone, action="delete_markets")
                return await self.command(
                    lambda cid: wc.UpdateSubscription(id=cid, params=params), timeout=timeout
                )
            unsub = wc.UnsubscribeParams(sids=[sid])
            return await self.command(lambda cid: wc.Unsubscribe(id=cid, params=unsub), timeout=timeout)
        except WsNotConnected:
            return None

    async def resync(self, sub: Subscription, *, timeout: float | None = None) -> Subscription:
        """Unsubscribe + subscribe: a new sid whose seq restarts at 1, with fresh snapshots (gap recovery)."""
        await self.unsubscribe(sub, timeout=timeout)
        sub.epoch = 0
        return await self._keep(sub, timeout)

    async def list_subscriptions(self, *, timeout: float | None = None) -> wc.Reply:
        return await self.command(lambda cid: wc.ListSubscriptions(id=cid), timeout=timeout)
