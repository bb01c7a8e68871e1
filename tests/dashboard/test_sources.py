"""BackgroundLookup: a slow or hanging blocking lookup never holds up the poll round that reads it."""

from __future__ import annotations

import asyncio
import threading

from kalshiflow.dashboard.sources import BackgroundLookup


async def _settled(lookup: BackgroundLookup[object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while lookup.running:
            await asyncio.sleep(0.01)


async def test_a_hanging_lookup_leaves_only_its_own_value_stale() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        release.wait(10)
        return 42

    lookup: BackgroundLookup[int | None] = BackgroundLookup(slow, None, "slow lookup")
    lookup.start()  # returns at once
    await asyncio.sleep(0.05)
    assert lookup.running and lookup.value is None
    lookup.start()  # one at a time: no second thread piles up behind a hung one
    await asyncio.sleep(0.05)
    assert calls == [1]
    release.set()
    await _settled(lookup)
    assert lookup.value == 42
    lookup.start()  # the next one runs
    await _settled(lookup)
    assert calls == [1, 1]


async def test_a_failing_lookup_keeps_the_last_value() -> None:
    results: list[object] = [7, RuntimeError("state API down")]

    def flaky() -> object:
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    lookup: BackgroundLookup[object] = BackgroundLookup(flaky, None, "flaky lookup")
    lookup.start()
    await _settled(lookup)
    assert lookup.value == 7
    lookup.start()
    await _settled(lookup)
    assert lookup.value == 7 and not results


async def test_cancel_stops_waiting_for_a_hung_lookup() -> None:
    release = threading.Event()
    lookup: BackgroundLookup[int] = BackgroundLookup(lambda: release.wait(10) and 1, 0, "hung lookup")
    lookup.start()
    await asyncio.sleep(0.05)
    lookup.cancel()
    await asyncio.sleep(0.05)
    assert not lookup.running and lookup.value == 0
    release.set()
