"""The book link: views over a real TCP socket on 127.0.0.1, acks, fallbacks, reconnects."""

from __future__ import annotations

import asyncio
import struct

import pytest

from kalshiflow.collect.book_link import BookLinks, LinkEndpoint, LinkError, LinkServer
from kalshiflow.collect.messages import BookTop
from kalshiflow.exchange.replay.events import RecTrade
from kalshiflow.market.types import Side


def top(ticker: str, seq: int, **kw: object) -> BookTop:
    return BookTop(ticker=ticker, epoch=1, seq=seq, valid=True, yes_bid=4500, yes_bid_size=300,
                   yes_ask=4600, yes_ask_size=100, received_ts_ns=123 + seq, exchange_ts_ms=None,
                   depth=5, yes_bids=((4500, 300), (4400, 100)), no_bids=((5400, 100),), **kw)  # type: ignore[arg-type]


class Sink:
    def __init__(self) -> None:
        self.got: list[list[BookTop]] = []
        self.fail_next = False

    def apply(self, updates: list[BookTop]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ValueError("cannot apply")
        self.got.append(updates)


async def test_views_arrive_intact_and_in_order() -> None:
    sink = Sink()
    server = LinkServer(sink.apply)
    ep = await server.start()
    ray_calls: list[object] = []

    async def resolve(handle: object) -> LinkEndpoint:
        return ep

    async def ray_send(handle: object, updates: list[BookTop]) -> None:
        ray_calls.append(handle)

    links = BookLinks(resolve, ray_send)
    trade = RecTrade(seq=7, ts=1.5, yes_price=4500, count=200, taker_side=Side.YES)
    sent = [[top("A", 1), top("B", 1, trades=(trade,))], [top("A", 2, book_changed=False)]]
    for updates in sent:
        await links.send("trader", updates)  # returns once applied: the sink has it already
        assert sink.got[-1] == updates
    assert sink.got == sent and ray_calls == []
    assert server.frames == 2 and links.connects == 1
    links.close()
    await server.close()


async def test_no_endpoint_or_unreachable_endpoint_uses_ray_calls() -> None:
    calls: list[tuple[object, int]] = []

    async def ray_send(handle: object, updates: list[BookTop]) -> str:
        calls.append((handle, len(updates)))
        return "ray"

    async def none(handle: object) -> None:
        return None

    links = BookLinks(none, ray_send, node_id="node-a")
    assert await links.send("sink", [top("A", 1)]) == "ray"
    # A loopback endpoint on another node cannot be reached from here: Ray calls as well.
    elsewhere = LinkEndpoint(host="127.0.0.1", port=1, token="x" * 32, node_id="node-b")

    async def other(handle: object) -> LinkEndpoint:
        return elsewhere

    links2 = BookLinks(other, ray_send, node_id="node-a")
    assert not links2.reachable(elsewhere)
    assert await links2.send("trader", [top("A", 1), top("B", 1)]) == "ray"
    assert calls == [("sink", 1), ("trader", 2)]
    assert links2.reachable(LinkEndpoint(host="10.0.0.5", port=1, token="", node_id="node-b"))


async def linked(sink: Sink) -> tuple[LinkServer, BookLinks]:
    """A server for ``sink`` and a sender that must use it (no Ray fallback)."""
    server = LinkServer(sink.apply)
    ep = await server.start()

    async def resolve(handle: object) -> LinkEndpoint:
        return ep

    async def ray_send(handle: object, updates: list[BookTop]) -> None:
        raise AssertionError("must not fall back")

    return server, BookLinks(resolve, ray_send)


async def test_a_frame_the_receiver_cannot_apply_fails_that_send_only() -> None:
    sink = Sink()
    server, links = await linked(sink)
    sink.fail_next = True
    with pytest.raises(LinkError, match="could not apply"):
        await links.send("t", [top("A", 1)])
    assert server.failures == 1 and links.failures == 1
    await links.send("t", [top("A", 2)])  # the next send reconnects and gets through
    assert sink.got == [[top("A", 2)]] and links.connects == 2
    links.close()
    await server.close()


async def test_restarted_subscriber_is_found_again_and_wrong_tokens_are_refused() -> None:
    first, second = Sink(), Sink()
    s1 = LinkServer(first.apply)
    current = [await s1.start()]

    async def resolve(handle: object) -> LinkEndpoint:
        return current[0]

    async def ray_send(handle: object, updates: list[BookTop]) -> None:
        raise AssertionError("must not fall back")

    links = BookLinks(resolve, ray_send)
    await links.send("t", [top("A", 1)])
    await s1.close()  # the subscriber dies: its connection goes with it
    with pytest.raises(LinkError):
        await links.send("t", [top("A", 2)])
    s2 = LinkServer(second.apply)
    current[0] = await s2.start()
    await links.send("t", [top("A", 3)])
    assert first.got == [[top("A", 1)]] and second.got == [[top("A", 3)]]

    # A peer with a stale token (another listener's, or garbage) is dropped before any frame.
    reader, writer = await asyncio.open_connection("127.0.0.1", current[0].port)
    writer.write(b"0" * 32 + struct.pack(">I", 1) + b"\x90")
    assert await reader.read(1) == b""  # closed, no ack
    assert s2.rejected == 1 and second.got == [[top("A", 3)]]
    writer.close()
    links.close()
    await s2.close()


async def test_closing_the_server_ends_its_connections_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    server, links = await linked(Sink())
    await links.send("trader", [top("A", 1)])
    assert server.connections == 1
    await server.close()  # the Trader stopping while a collector is connected
    await asyncio.sleep(0.05)  # let the loop run the handlers' done-callbacks
    assert server.connections == 0
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
    links.close()
