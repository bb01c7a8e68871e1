"""stop_tasks: a task that swallows a cancellation is cancelled again; a limit bounds the wait."""

from __future__ import annotations

import asyncio

import pytest

from kalshiflow.cancellation import stop_tasks


async def test_a_task_that_loses_one_cancellation_still_stops() -> None:
    rounds = 0

    async def loop_that_swallows_once() -> None:
        nonlocal rounds
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                rounds += 1
                if rounds == 1:
                    continue  # what a lost cancellation looks like to the loop
                raise

    task = asyncio.get_running_loop().create_task(loop_that_swallows_once())
    await asyncio.sleep(0)
    assert await stop_tasks([task], timeout=5.0) == set()
    assert task.cancelled() and rounds == 2


async def test_a_task_that_never_stops_is_given_up_at_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    stubborn = True

    async def never_stops() -> None:
        while stubborn:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.get_running_loop().create_task(never_stops(), name="stubborn")
    await asyncio.sleep(0)
    left = await stop_tasks([task], timeout=0.6)
    assert left == {task} and "stubborn" in caplog.text
    stubborn = False
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_finished_tasks_cost_nothing() -> None:
    async def done() -> int:
        return 1

    task = asyncio.get_running_loop().create_task(done())
    await task
    assert await stop_tasks([task], timeout=0.0) == set()
