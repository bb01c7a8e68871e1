"""Per-client bounded outboxes (drop-oldest, counted, streams resynced) and the per-component rate limit."""

from __future__ import annotations

import asyncio

import pytest

from kalshiflow.dashboard.hub import Coalescer, Hub, Outbox


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_full_outbox_drops_its_oldest_messages_and_counts_them() -> None:
    box = Outbox(max_messages=3, max_bytes=10_000)
    for i in range(5):
        box.put(f"m{i}")
    assert len(box) == 3 and box.dropped == 2
    assert [box._items[i][0] for i in range(3)] == ["m2", "m3", "m4"]


def test_the_byte_budget_is_kept_but_the_newest_message_always_stays() -> None:
    box = Outbox(max_messages=100, max_bytes=10)
    box.put("aaaaaa")
    box.put("bbbbbb")
    assert len(box) == 1 and box.dropped == 1 and box.bytes == 6
    box.put("c" * 50)  # alone over budget: still delivered (it is the freshest state)
    assert len(box) == 1 and box.bytes == 50


def test_losing_a_stream_message_purges_its_followers_and_asks_for_a_snapshot() -> None:
    box = Outbox(max_messages=3, max_bytes=10_000)
    box.put("book-1", "book")
    box.put("state-1")
    box.put("book-2", "book")
    box.put("state-2")  # drops book-1 -> book-2 is useless without it
    assert [t for t, _ in box._items] == ["state-1", "state-2"]
    assert box.dropped == 2
    assert box.take_resync("book") and not box.take_resync("book"), "one snapshot, once"
    assert not box.take_resync("pnl_history")


async def test_get_waits_for_a_message_and_fails_once_closed() -> None:
    box = Outbox()
    waiter = asyncio.ensure_future(box.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.put("hello")
    assert await waiter == "hello"
    box.close()
    with pytest.raises(ConnectionError):
        await box.get()
    assert box.put("late") == 0 and len(box) == 0


def test_a_slow_client_loses_only_its_own_messages() -> None:
    hub = Hub(max_messages=4, max_bytes=10_000)
    fast, slow = hub.add(), hub.add()
    for i in range(10):
        hub.broadcast(f"m{i}")
        while len(fast.outbox):  # the fast client's writer keeps up
            fast.outbox._items.popleft()
            fast.outbox._bytes = 0
    assert fast.outbox.dropped == 0 and slow.outbox.dropped == 6
    assert hub.dropped == 6
    hub.remove(slow)
    assert hub.dropped == 6, "drops of clients that left stay counted"
    assert len(hub) == 1


def test_clients_are_grouped_by_the_market_they_watch() -> None:
    hub = Hub()
    a, b, c = hub.add(), hub.add(), hub.add()
    a.ticker = b.ticker = "KX-A"
    c.ticker = None
    assert {t: [x.id for x in cs] for t, cs in hub.tickers().items()} == {"KX-A": [a.id, b.id]}


def test_the_coalescer_sends_at_most_once_per_interval_and_keeps_the_newest() -> None:
    clock = FakeClock()
    gate: Coalescer[str, int] = Coalescer(1.0, clock)
    assert gate.offer("trader_state", 1) == 1
    clock.t += 0.25  # binary-exact steps: the boundary is tested exactly
    assert gate.offer("trader_state", 2) is None
    assert gate.offer("collection_status", 9) == 9, "components are limited independently"
    clock.t += 0.25
    assert gate.offer("trader_state", 3) is None
    assert gate.due() == [] and gate.coalesced == 1
    clock.t += 0.25
    assert gate.due() == []
    clock.t += 0.25
    assert gate.due() == [("trader_state", 3)], "the newest pending value, once the interval has passed"
    assert gate.due() == []
    clock.t += 0.5
    assert gate.offer("trader_state", 4) is None, "the pending send restarted the interval"


def test_stream_gates_allow_one_send_per_interval() -> None:
    clock = FakeClock()
    gate: Coalescer[str, str] = Coalescer(1.0, clock)
    sent = 0
    for _ in range(80):  # 10 s in steps of 0.125 s
        sent += gate.allow("book:KX-A")
        clock.t += 0.125
    assert sent == 10
