"""Shipper (batches kept until acknowledged), Fanout (coalesced subscriber updates), EpochClock."""

from __future__ import annotations

import asyncio

import pytest

from kalshiflow.collect.epochs import INT32_MAX, SLOTS, EpochClock
from kalshiflow.collect.fanout import Fanout
from kalshiflow.collect.messages import BookTop
from kalshiflow.collect.shipper import Shipper
from kalshiflow.exchange.replay.events import RecTrade
from kalshiflow.market.types import Side


def rows(n: int) -> dict[str, list[tuple[object, ...]]]:
    return {"book_deltas": [(i,) for i in range(n)]}


async def test_failed_batches_are_resent_until_acknowledged() -> None:
    calls: list[str] = []
    failures = {"b1": 3}

    async def send(batch_id: str, r: object) -> str:
        calls.append(batch_id)
        if failures.get(batch_id, 0):
            failures[batch_id] -= 1
            raise ConnectionError("write queue restarting")
        return "ack"

    ship = Shipper(send, max_inflight=2, backoff_s=0.001, backoff_max_s=0.004)
    ship.submit("b1", rows(3))
    ship.submit("b2", rows(2))
    assert ship.unacked_rows == 5
    assert await ship.drain(5)
    assert calls.count("b1") == 4 and calls.count("b2") == 1
    assert ship.n["acked"] == 2 and ship.n["retried"] == 3 and ship.n["rows_acked"] == 5
    ship.submit("b3", rows(1))
    with pytest.raises(ValueError):
        ship.submit("b3", rows(1))  # a pending batch id is never reused
    await ship.close()


async def test_backpressure_waits_for_acknowledgements() -> None:
    gate = asyncio.Event()

    async def send(batch_id: str, r: object) -> None:
        await gate.wait()

    ship = Shipper(send, max_inflight=8)
    for i in range(4):
        ship.submit(f"b{i}", rows(10))
    waiter = asyncio.create_task(ship.wait_below(15))
    await asyncio.sleep(0.01)
    assert not waiter.done() and not await ship.drain(0.01)
    gate.set()
    await asyncio.wait_for(waiter, 1)
    assert await ship.drain(1) and ship.unacked_batches == 0


def top(ticker: str, seq: int) -> BookTop:
    return BookTop(ticker=ticker, epoch=1, seq=seq, valid=True, yes_bid=4000, yes_bid_size=1, yes_ask=4100,
                   yes_ask_size=1, received_ts_ns=0, exchange_ts_ms=None)


async def test_fanout_coalesces_while_a_call_is_in_flight_and_filters_markets() -> None:
    got: dict[str, list[list[BookTop]]] = {"all": [], "a": []}
    gate = asyncio.Event()
    current: dict[str, BookTop] = {}

    async def send(handle: str, updates: list[BookTop]) -> None:
        got[handle].append(updates)
        if handle == "all":
            await gate.wait()

    def change(**seqs: int) -> None:
        current.update({t: top(t, seq) for t, seq in seqs.items()})
        fan.touch(seqs)

    fan = Fanout(send, current.get)
    fan.add("all", None)
    fan.add("a", ["A"])
    change(A=1, B=2)  # both idle: sent at once, the views built now
    await asyncio.sleep(0)
    change(A=3)
    change(A=4, B=5)  # "all" is busy: marked only; its next call carries the newest views
    await asyncio.sleep(0)
    gate.set()
    await asyncio.sleep(0.01)
    fan.touch([])
    await asyncio.sleep(0.01)
    assert [[u.seq for u in call] for call in got["all"]] == [[1, 2], [4, 5]]
    assert [[u.seq for u in call] for call in got["a"]] == [[1], [3], [4]]
    assert fan.calls == 5


def trade(seq: int) -> RecTrade:
    return RecTrade(seq=seq, ts=float(seq), yes_price=4000 + seq, count=100, taker_side=Side.YES)


async def test_fanout_delivers_every_trade_once_in_order_and_marks_trade_only_views() -> None:
    got: list[list[BookTop]] = []
    gate = asyncio.Event()
    current = {"A": top("A", 1), "B": top("B", 1)}

    async def send(handle: str, updates: list[BookTop]) -> None:
        got.append(updates)
        await gate.wait()

    fan = Fanout(send, current.get)
    fan.add("t", None)
    fan.touch(["A"], [("A", trade(1))])  # idle: sent at once, with its trade
    await asyncio.sleep(0)
    fan.touch([], [("B", trade(2))])  # busy: trades wait, none coalesced away
    fan.touch(["A"], [("A", trade(3)), ("B", trade(4))])
    fan.touch([], [("A", trade(5))])
    gate.set()
    await asyncio.sleep(0.01)
    first, second = got
    assert [(u.ticker, [t.seq for t in u.trades], u.book_changed) for u in first] == [("A", [1], True)]
    assert sorted((u.ticker, [t.seq for t in u.trades], u.book_changed) for u in second) == [
        ("A", [3, 5], True), ("B", [2, 4], False)]
    assert fan.trades_dropped == 0


async def test_fanout_keeps_a_bounded_trade_backlog_per_market() -> None:
    from kalshiflow.collect import fanout as fanout_module

    got: list[list[BookTop]] = []
    gate = asyncio.Event()

    async def send(handle: str, updates: list[BookTop]) -> None:
        got.append(updates)
        await gate.wait()

    fan = Fanout(send, lambda t: top(t, 1))
    fan.add("t", ["A"])
    fan.touch(["A"])
    await asyncio.sleep(0)
    n = fanout_module._MAX_TRADES + 7
    fan.touch([], [("A", trade(i)) for i in range(n)] + [("B", trade(-1))])  # B: not wanted
    gate.set()
    await asyncio.sleep(0.01)
    (update,) = got[1]
    assert [t.seq for t in update.trades] == list(range(7, n)) and fan.trades_dropped == 7


async def test_fanout_sends_given_views_until_a_newer_change_and_skips_unknown_markets() -> None:
    got: list[list[tuple[str, int]]] = []
    gate = asyncio.Event()

    async def send(handle: str, updates: list[BookTop]) -> None:
        got.append([(u.ticker, u.seq) for u in updates])
        await gate.wait()

    current = {"A": top("A", 7)}
    fan = Fanout(send, current.get)
    fan.add("s", None)
    fan.publish({"A": top("A", 0), "B": top("B", 0)})  # a new subscriber's starting state
    await asyncio.sleep(0)
    fan.publish({"A": top("A", 0)})
    fan.touch(["A", "GONE"])  # A changed after the view was given: the newer one goes; GONE has none
    gate.set()
    await asyncio.sleep(0.01)
    assert got == [[("A", 0), ("B", 0)], [("A", 7)]]


async def test_fanout_min_interval_holds_the_next_call_back() -> None:
    sent: list[int] = []

    async def send(handle: str, updates: list[BookTop]) -> None:
        sent.append(len(updates))

    fan = Fanout(send, lambda t: top(t, 1), min_interval_s=3600.0)
    fan.add("s", None)
    fan.touch(["A"])
    await asyncio.sleep(0.01)
    fan.touch(["A", "B"])
    await asyncio.sleep(0.01)
    assert sent == [1] and fan.calls == 1  # the second waits out the interval, still marked
    await fan.close()


async def test_fanout_drops_a_subscriber_that_keeps_failing() -> None:
    async def send(handle: str, updates: list[BookTop]) -> None:
        raise RuntimeError("actor died")

    fan = Fanout(send, lambda t: top(t, 0))
    fan.add("dead", None)
    for _ in range(5):
        fan.touch(["A"])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert len(fan) == 0 and fan.removed == 1


def test_epoch_ids_are_strictly_increasing_and_never_collide() -> None:
    c64 = EpochClock(bits=64)
    first = c64.next(10_000_000)
    assert first == 10_000 * SLOTS and c64.next(10_000_000) == first + SLOTS  # same microsecond
    other = EpochClock(bits=64, shard_index=3)  # another collector, same microsecond: no collision
    assert other.next(10_000_000) == 10_000 * SLOTS + 3
    assert c64.next(2**40) < 2**63  # microseconds x SLOTS fits a BIGINT for millennia
    start = 1_782_316_195_000_000_000
    a = EpochClock(bits=32, session_start_ns=start, shard_index=0)
    b = EpochClock(bits=32, session_start_ns=start, shard_index=1)
    ids = [a.next(start + 5), a.next(start + 5), b.next(start + 5), b.next(start + 10**9)]
    assert len(set(ids)) == 4 and ids[0] < ids[1] and all(0 <= i <= INT32_MAX for i in ids)
    assert ids[0] % SLOTS == 1 and ids[2] % SLOTS == 2 and ids[1] % SLOTS == 1
    # A restarted actor skips ahead of anything its predecessor can have used.
    again = EpochClock(bits=32, session_start_ns=start, shard_index=0, restarted=True)
    assert again.next(start + 2 * 10**8) > ids[1] + 10 * SLOTS
    with pytest.raises(OverflowError):
        a.next(start + 40 * 86_400 * 10**9)
