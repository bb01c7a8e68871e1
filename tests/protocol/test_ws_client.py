"""The WS client against a real `websockets` server on 127.0.0.1 that checks Kalshi auth."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from kalshiflow.protocol import ws_commands as wc
from kalshiflow.protocol import ws_data as wd
from kalshiflow.protocol.auth import Signer, Verifier, generate_private_key
from kalshiflow.protocol.errors import AuthError, WsCommandError, WsNotConnected
from kalshiflow.protocol.ws_client import KalshiWsClient

KEY = generate_private_key()
KEY_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
WS_PATH = "/trade-api/ws/v2"


class FakeWs:
    """Minimal Kalshi WS: verifies the handshake, answers commands, can drop or go silent."""

    def __init__(self) -> None:
        self.verifier = Verifier({KEY_ID: KEY.public_key()}, max_skew_s=5)
        self.next_sid = 1  # global, so a re-subscribe visibly gets a new sid
        self.connections = 0
        self.rejected: list[str] = []
        self.commands: list[tuple[int, wc.Command]] = []
        self.silent_after_subscribe = False
        self.mute = False  # answer nothing at all (a hung peer with an open socket)
        self.drop_after_subscribe = 0  # drop this many connections right after a subscribe
        self.live: list[ServerConnection] = []

    def process_request(self, connection: ServerConnection, request: Any):
        if request.path.split("?")[0] != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found")
        try:
            self.verifier.verify("GET", request.path, request.headers)
        except AuthError as err:
            self.rejected.append(err.reason)
            return connection.respond(
                HTTPStatus.UNAUTHORIZED, json.dumps({"code": err.code, "details": err.reason})
            )
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn_no = self.connections
        self.live.append(ws)
        subs: dict[int, dict[str, Any]] = {}  # sid -> {"tickers": [...], "seq": n}
        silent = False

        async def send(obj: Any) -> None:
            await ws.send(obj if isinstance(obj, str) else wd.encode_message(obj).decode())

        async def snapshot(sid: int, ticker: str) -> None:
            subs[sid]["seq"] += 1
            await send(
                json.dumps(
                    {
                        "type": "orderbook_snapshot",
                        "sid": sid,
                        "seq": subs[sid]["seq"],
                        "msg": {"market_ticker": ticker, "yes_dollars_fp": [["0.4200", "10.00"]]},
                    }
                )
            )

        try:
            async for raw in ws:
                try:
                    cmd = wc.decode_command(raw.encode() if isinstance(raw, str) else raw)
                except wc.InvalidCommand as err:
                    await send(wc.error_reply(err.code, err.cmd_id))
                    continue
                self.commands.append((conn_no, cmd))
                if silent or self.mute:
                    continue
                if isinstance(cmd, wc.Subscribe):
                    tickers = cmd.params.market_tickers or []
                    if "BAD" in tickers:
                        await send(wc.error_reply(16, cmd.id, market_ticker="BAD"))
                        continue
                    sid = self.next_sid
                    self.next_sid += 1
                    subs[sid] = {"tickers": list(tickers), "seq": 0}
                    await send(
                        wc.Subscribed(
                            id=cmd.id, msg=wc.SubscriptionInfo(channel=cmd.params.channels[0], sid=sid)
                        )
                    )
                    for t in tickers:
                        await snapshot(sid, t)
                    if self.drop_after_subscribe:
                        self.drop_after_subscribe -= 1
                        ws.transport.abort()
                        return
                    silent = self.silent_after_subscribe
                elif isinstance(cmd, wc.UpdateSubscription):
                    sid = cmd.params.sids[0]
                    if sid not in subs:
                        await send(wc.error_reply(7, cmd.id))
                        continue
                    s = subs[sid]
                    tickers = cmd.params.market_tickers or []
                    if cmd.params.action == "add_markets":
                        s["tickers"] += [t for t in tickers if t not in s["tickers"]]
                    elif cmd.params.action == "delete_markets":
                        s["tickers"] = [t for t in s["tickers"] if t not in tickers]
                    s["seq"] += 1
                    await send(
                        wc.Ok(id=cmd.id, sid=sid, seq=s["seq"], msg=wc.OkMarkets(market_tickers=s["tickers"]))
                    )
                    if cmd.params.action in ("add_markets", "get_snapshot"):
                        for t in tickers:
                            await snapshot(sid, t)
                elif isinstance(cmd, wc.Unsubscribe):
                    for sid in cmd.params.sids:
                        s = subs.pop(sid, {"seq": 0})
                        await send(wc.Unsubscribed(id=cmd.id, sid=sid, seq=s["seq"] + 1))
                elif isinstance(cmd, wc.ListSubscriptions):
                    await send(
                        wc.Ok(
                            id=cmd.id,
                            msg=[wc.SubscriptionInfo(channel="orderbook_delta", sid=s) for s in subs],
                        )
                    )
        finally:
            self.live.remove(ws)


@contextlib.asynccontextmanager
async def running(fake: FakeWs, ping_interval: float | None = None, port: int = 0):
    async with serve(
        fake.handler,
        "127.0.0.1",
        port,
        process_request=fake.process_request,
        ping_interval=ping_interval,
        ping_timeout=5.0 if ping_interval else None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}{WS_PATH}"


async def until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Owner:
    """What a collector would do: record frames and epochs."""

    def __init__(self) -> None:
        self.frames: list[tuple[dict[str, Any], int, int]] = []  # (frame, recv_ns, epoch)
        self.epochs: list[int] = []
        self.disconnects: list[tuple[int, str]] = []
        self.client: KalshiWsClient | None = None

    def on_frame(self, data: bytes, recv_ns: int) -> None:
        assert isinstance(data, bytes)
        self.frames.append((json.loads(data), recv_ns, self.client.epoch if self.client else 0))

    async def on_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def on_disconnect(self, epoch: int, reason: str) -> None:
        self.disconnects.append((epoch, reason))

    def of_type(self, typ: str) -> list[dict[str, Any]]:
        return [f for f, _, _ in self.frames if f.get("type") == typ]


_DEFAULT = Signer(KEY_ID, KEY)


def make_client(
    url: str, owner: Owner, *, signer: Signer | None = _DEFAULT, silence: float = 5.0
) -> KalshiWsClient:
    client = KalshiWsClient(
        url,
        signer=signer,
        on_frame=owner.on_frame,
        on_epoch=owner.on_epoch,
        on_disconnect=owner.on_disconnect,
        silence_timeout_s=silence,
        command_timeout_s=2.0,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    owner.client = client
    return client


async def test_subscribe_commands_and_raw_frames():
    fake, owner = FakeWs(), Owner()
    async with running(fake) as url:
        client = make_client(url, owner)
        async with client:
            before = time.time_ns()
            sub = await client.subscribe("orderbook_delta", ["A", "B"], timeout=3, use_yes_price=False)
            assert sub.sid == 1 and sub.epoch == 1 and client.epoch == 1 and owner.epochs == [1]
            assert client.subscription_for_sid(1) is sub
            await until(lambda: len(owner.of_type("orderbook_snapshot")) == 2)
            # Replies reach the frame hook too (an `ok` consumes a seq number on its sid).
            assert owner.of_type("subscribed")[0]["msg"] == {"channel": "orderbook_delta", "sid": 1}
            assert all(before <= ns <= time.time_ns() for _, ns, _ in owner.frames)
            assert fake.commands[0][1].params.use_yes_price is False

            ok = await client.add_markets(sub, ["C"])
            assert ok is not None and ok.tickers == ["A", "B", "C"] and ok.seq == 3
            assert sub.market_tickers == ("A", "B", "C")
            await until(lambda: len(owner.of_type("orderbook_snapshot")) == 3)
            await client.delete_markets(sub, ["A"])
            assert sub.market_tickers == ("B", "C")
            snap = await client.get_snapshot(sub, ["B"])
            assert snap is not None and sub.market_tickers == ("B", "C")
            listing = await client.list_subscriptions()
            assert isinstance(listing, wc.Ok) and [s.sid for s in listing.msg] == [1]

            # resync = unsubscribe + subscribe: a new sid, fresh snapshots, same Subscription object.
            n = len(owner.of_type("orderbook_snapshot"))
            again = await client.resync(sub)
            assert again is sub and sub.sid == 2 and sub in client.subscriptions
            await until(lambda: len(owner.of_type("orderbook_snapshot")) == n + 2)
            assert owner.of_type("unsubscribed")[-1]["sid"] == 1

            with pytest.raises(WsCommandError) as info:
                await client.subscribe("orderbook_delta", ["BAD"])
            assert info.value.code == 16 and info.value.market_ticker == "BAD"
            assert len(client.subscriptions) == 1

            unsub = await client.unsubscribe(sub)
            assert isinstance(unsub, wc.Unsubscribed) and unsub.sid == 2 and client.subscriptions == ()
            ids = [c.id for _, c in fake.commands]
            assert len(set(ids)) == len(ids) and all(i > 0 for i in ids)
            stats = client.stats()
            assert (
                stats.connected
                and stats.epoch == 1
                and stats.reconnects == 0
                and stats.frames == len(owner.frames)
            )
            assert stats.commands_sent == len(fake.commands) and stats.last_frame_ns is not None
        assert not client.connected


async def test_bad_credentials_are_rejected_and_retried():
    fake, owner = FakeWs(), Owner()
    async with running(fake) as url:
        client = make_client(url, owner, signer=Signer(KEY_ID, generate_private_key()))
        async with client:
            await until(lambda: client.stats().connect_failures >= 2)
            assert not client.connected and owner.epochs == []
            assert "401" in (client.stats().last_error or "")
            with pytest.raises(TimeoutError):
                await client.wait_ready(0.05)
        assert set(fake.rejected) == {"INVALID_SIGNATURE"} and fake.connections == 0
        unsigned = make_client(url, Owner(), signer=None)
        async with unsigned:
            await until(lambda: unsigned.stats().connect_failures >= 1)
        assert "MISSING_HEADER" in fake.rejected


async def test_dropped_connection_reconnects_and_resubscribes():
    fake, owner = FakeWs(), Owner()
    async with running(fake) as url:
        client = make_client(url, owner)
        async with client:
            sub = await client.subscribe("orderbook_delta", ["A"], timeout=3)
            await until(lambda: len(owner.of_type("orderbook_snapshot")) == 1)
            fake.drop_after_subscribe = 1
            # Kill the live connection: the client must reconnect, re-authenticate and re-subscribe.
            fake.live[0].transport.abort()
            await until(lambda: client.epoch == 3 and client.connected)
            assert owner.epochs == [1, 2, 3]
            assert [d[0] for d in owner.disconnects] == [1, 2]
            assert sub.epoch == 3 and sub.sid == 3
            subs = [(n, c.params.market_tickers) for n, c in fake.commands if isinstance(c, wc.Subscribe)]
            assert subs == [(1, ["A"]), (2, ["A"]), (3, ["A"])]
            # Frames are tagged with the epoch that delivered them; each epoch starts with fresh snapshots.
            snaps = [(f["sid"], f["seq"], e) for f, _, e in owner.frames if f["type"] == "orderbook_snapshot"]
            assert snaps == [(1, 1, 1), (2, 1, 2), (3, 1, 3)]
            assert client.stats().reconnects == 2
            # Changes made while connected carry over to the next epoch.
            await client.add_markets(sub, ["B"])
            fake.live[0].transport.abort()
            await until(lambda: client.epoch == 4 and client.connected)
            assert fake.commands[-1][1].params.market_tickers == ["A", "B"]


async def test_silent_connection_is_replaced_by_watchdog():
    fake, owner = FakeWs(), Owner()
    fake.silent_after_subscribe = True
    async with running(fake) as url:
        client = make_client(url, owner, silence=0.3)
        async with client:
            started = time.monotonic()
            await client.subscribe("orderbook_delta", ["A"], timeout=3)
            await until(lambda: client.epoch >= 2 and client.connected)
            assert time.monotonic() - started >= 0.3
            stats = client.stats()
            assert stats.silence_timeouts >= 1 and "silent" in owner.disconnects[0][1]
            assert fake.connections >= 2


async def test_server_pings_keep_a_quiet_connection_alive():
    fake, owner = FakeWs(), Owner()
    fake.silent_after_subscribe = True
    async with running(fake, ping_interval=0.05) as url:
        client = make_client(url, owner, silence=0.3)
        async with client:
            await client.subscribe("orderbook_delta", ["A"], timeout=3)
            await asyncio.sleep(0.9)
            assert client.stats().silence_timeouts == 0 and client.epoch == 1


async def test_client_started_before_server_connects_when_it_appears():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    fake, owner = FakeWs(), Owner()
    client = make_client(f"ws://127.0.0.1:{port}{WS_PATH}", owner)
    async with client:
        pending = asyncio.create_task(client.subscribe("trade", timeout=5))
        await until(lambda: client.stats().connect_failures >= 2)
        with pytest.raises(WsNotConnected):
            await client.list_subscriptions()
        async with running(fake, port=port):
            sub = await pending
            assert sub.sid is not None and client.epoch == 1
            # The subscription was sent once: by whichever path got there first.
            assert sum(isinstance(c, wc.Subscribe) for _, c in fake.commands) == 1


async def test_hung_peer_is_abandoned_before_command_timeout():
    fake, owner = FakeWs(), Owner()
    fake.mute = True
    async with running(fake) as url:
        client = make_client(url, owner, silence=0.2)  # command timeout is 2 s
        async with client:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.subscribe("orderbook_delta", ["A"], timeout=1.0)
            # The watchdog, not the 2 s command timeout, ended each hung connection.
            assert client.epoch >= 3 and time.monotonic() - started < 1.5
            assert all("silent" in reason for _, reason in owner.disconnects)
            # Still registered: it is established as soon as the peer answers again.
            assert len(client.subscriptions) == 1
            fake.mute = False
            await until(lambda: client.subscriptions[0].sid is not None and client.connected)


async def test_handler_errors_do_not_break_the_connection():
    fake, seen = FakeWs(), []

    async def handler(data: bytes, recv_ns: int) -> None:
        seen.append(data)
        raise RuntimeError("owner bug")

    async with running(fake) as url:
        client = KalshiWsClient(
            url, signer=_DEFAULT, on_frame=handler, backoff_base_s=0.01, backoff_max_s=0.05
        )
        async with client:
            sub = await client.subscribe("orderbook_delta", ["A", "B"], timeout=3)
            await until(lambda: len(seen) == 3)
            assert client.stats().handler_errors == 3 and client.epoch == 1 and sub.sid is not None
            with pytest.raises(TypeError):
                await client.subscribe("trade", no_such_option=True)
