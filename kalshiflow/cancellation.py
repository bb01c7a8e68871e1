"""Stopping asyncio tasks for sure, within a time limit.

``task.cancel()`` then ``gather`` can wait forever: in Python 3.11 ``asyncio.wait_for`` loses a
cancellation that arrives as its inner future completes (fixed in 3.12, gh-86296), and a loop
that lost it goes round again. :func:`stop_tasks` cancels again while a task still runs, and gives
up at the limit, naming what is left, so an actor's shutdown is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_tasks"]

log = logging.getLogger("kalshiflow")

_RECANCEL_S = 0.25  # how long a cancelled task gets before it is cancelled again


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them, re-cancelling any still running every 0.25 s, for at
    most ``timeout`` seconds. Returns the tasks still running then (logged), else an empty set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.error("%d task(s) did not stop within %.1f s: %s", len(pending), timeout,
                      ", ".join(sorted(t.get_name() for t in pending)))
            break
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_S, left))
    return pending
