"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright).

- test_dashboard_shows_live_data_and_the_kill_switch_halts_trading: ``python -m kalshiflow.launch``
  (its own local Ray, the simulator, a model version that trades) -> the page loads, the three
  panels, the ladder and the PnL chart fill with live data, numbers change, the socket honours the
  per-component rate limit; the kill switch halts trading (HALTED shown, no more orders); SIGTERM
  stops the system cleanly. Screenshots: test-artifacts/ (and docs/dashboard.png).
- test_the_page_reconnects_by_itself: the server goes away and comes back on the same port; the
  page says so and is live again without a reload.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from kalshiflow.config import PROJECT_ROOT
from kalshiflow.dashboard import messages as M
from kalshiflow.dashboard.server import Dashboard, HttpServer, create_app
from kalshiflow.storage.sessions import get_session

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
START_TIMEOUT_S = 300.0
NUMBER = re.compile(r"^[\d,]+$")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), "browser tests need Debian's chromium: apt-get install chromium"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


def write_trading_model(root: Path) -> None:
    """A real model version (the trained module class) whose greedy choice crosses the spread back
    and forth: it trades at once, so positions, fills and PnL move in seconds."""
    from kalshiflow.rl.registry import Registry
    from kalshiflow.trading.testing import TAKER, write_model_version

    write_model_version(Registry(root), prefer=TAKER, promote=True)


async def read_until_running(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
        if not line:
            err = (await proc.stderr.read()).decode()[-5000:] if proc.stderr else ""
            raise AssertionError(f"launcher exited with {await proc.wait()}: {seen}\n{err}")
        seen.append(line.decode().rstrip())
        if seen[-1].startswith("running;"):
            return "\n".join(seen)


async def text(page: Any, selector: str) -> str:
    return str(await page.locator(selector).inner_text()).strip()


async def wait_text(page: Any, selector: str, pred: Any, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        value = await text(page, selector)
        if pred(value):
            return value
        assert time.monotonic() < deadline, f"{selector}: {value!r}"
        await asyncio.sleep(0.25)


def count(value: str) -> int:
    return int(value.replace(",", ""))


async def rate_check(ws_url: str, seconds: float) -> dict[str, list[float]]:
    """Arrival times per message type on a plain socket for ``seconds``."""
    seen: dict[str, list[float]] = {}
    async with connect(ws_url, max_size=None) as ws:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            msg = M.decode_server(raw)  # the real system's messages match the schema
            seen.setdefault(type(msg).__name__, []).append(time.monotonic())
    return seen


async def test_dashboard_shows_live_data_and_the_kill_switch_halts_trading(
    browser: Any, db_url: str, db: Any, tmp_path: Path
) -> None:
    write_trading_model(tmp_path / "models")
    namespace = f"kf-browser-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kalshiflow.launch",
        "--ui-port",
        "0",
        "--markets",
        "6",
        "--address",
        "local",
        "--models-dir",
        str(tmp_path / "models"),
        "--set",
        f"ray.namespace={namespace}",
        cwd=PROJECT_ROOT,
        env={**_env(), "DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr_tail: asyncio.Task[bytes] | None = None
    try:
        banner = await read_until_running(proc)
        assert proc.stderr is not None
        stderr_tail = asyncio.create_task(proc.stderr.read())  # keep the pipe drained
        url = re.search(r"^dashboard: (\S+)$", banner, re.M).group(1)  # type: ignore[union-attr]
        session = re.search(r"^session: (\S+) ", banner, re.M).group(1)  # type: ignore[union-attr]

        page = await browser.new_page(viewport={"width": 1600, "height": 1250})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_selector("#conn[data-state=live]", timeout=20_000)
        assert await text(page, "#env-badge") == "SIMULATOR"
        assert await page.get_attribute("#ray-link", "href") == re.search(
            r"^ray dashboard: (\S+)$", banner, re.M
        ).group(1)  # type: ignore[union-attr]
        # Collection panel.
        await wait_text(page, "#session-id", lambda v: v == session)
        await wait_text(page, "#markets-tracked", lambda v: v == "6")
        deltas0 = count(
            await wait_text(page, "#deltas-collected", lambda v: NUMBER.match(v) and count(v) > 0)
        )
        assert await text(page, "#exchange-conn") == "connected"
        await wait_text(page, "#wq-written", lambda v: NUMBER.match(v) is not None)
        assert await page.locator("#markets-table tbody tr.clickable").count() == 6
        # Trader panel: the model trades, the reconciler's portfolio moves.
        await wait_text(page, "#pf-value", lambda v: v.startswith("$"))
        assert await text(page, "#risk-mode") == "ACTIVE"
        placed0 = count(
            await wait_text(page, "#orders-placed", lambda v: NUMBER.match(v) and count(v) > 0, 60)
        )
        await wait_text(page, "#model-version", lambda v: v not in ("—", "none"))
        # Trades panel: fills with the decision behind each.
        await wait_text(page, "#total-fills", lambda v: NUMBER.match(v) and count(v) > 0, 60)
        await page.wait_for_selector("#fills-table tbody tr:not(:has(td.empty))", timeout=30_000)
        assert "take" in await text(page, "#fills-table tbody tr:first-child")
        # The count covers every fill listed, also those made before the Broadcaster subscribed.
        listed = await page.locator("#fills-table tbody tr:not(:has(td.empty))").count()
        await wait_text(page, "#total-fills", lambda v: NUMBER.match(v) and count(v) >= listed, 30)
        await page.wait_for_selector("#positions-table tbody tr:not(:has(td.empty))", timeout=30_000)
        # Book ladder (the most active market is selected by itself) and the PnL chart (uPlot).
        await page.wait_for_selector("#ladder tbody tr.bid-row, #ladder tbody tr.ask-row", timeout=30_000)
        await page.wait_for_selector("#pnl-chart canvas", timeout=30_000)
        await wait_text(page, "#pnl-summary", lambda v: "points" in v)
        # Numbers change over time.
        await wait_text(page, "#deltas-collected", lambda v: count(v) > deltas0, 30)
        await wait_text(page, "#orders-placed", lambda v: count(v) > placed0, 30)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
        (PROJECT_ROOT / "docs" / "dashboard.png").write_bytes((ARTIFACTS / "dashboard.png").read_bytes())

        # The real socket: schema-valid messages, each component at most once per second.
        seen = await rate_check(url.replace("http://", "ws://") + "ws", 4.5)
        for kind in ("CollectionStatusMsg", "TraderStateMsg", "TradesMsg", "PnlHistoryMsg"):
            times = seen.get(kind, [])
            assert 3 <= len(times) <= 6, (kind, len(times))
            gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]  # [0] is the greeting
            assert min(gaps, default=1.0) > 0.8, (kind, gaps)

        # Kill switch: two clicks (arm, confirm) -> the Trader halts; nothing new is placed.
        await page.click("#kill-switch")
        await page.click("#kill-switch")
        await wait_text(page, "#risk-mode", lambda v: v == "HALTED", 30)
        assert "Kill switch: done — trading halted (dashboard kill switch)" in await text(page, "#notice")
        assert await page.locator("#kill-switch").is_disabled()
        await asyncio.sleep(2.0)
        halted_at = count(await text(page, "#orders-placed"))
        await asyncio.sleep(3.0)
        assert count(await text(page, "#orders-placed")) == halted_at, "no order after the kill switch"
        assert count(await text(page, "#deltas-collected")) > deltas0, "collection goes on"
        await page.screenshot(path=str(ARTIFACTS / "dashboard-halted.png"), full_page=True)
        assert errors == [], errors

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 120)
        out = (await proc.stdout.read()).decode() if proc.stdout else ""
        assert rc == 0, (await stderr_tail)[-5000:].decode()
        assert "SIGTERM: shutting down cleanly" in out and "closed:" in out, out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stored = await get_session(db, session)
    assert stored is not None and stored.status == "closed" and stored.deltas > 0
    orders = await db.fetchval("SELECT count(*) FROM orders")
    assert orders > 0, "the trader's orders were recorded"


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DATABASE_URL")}


async def test_the_page_reconnects_by_itself(browser: Any) -> None:
    async def no_kill(reason: str) -> M.CommandResult:
        return M.CommandResult(command="kill_switch", ok=False, detail="no trader")

    def hello(client_id: int) -> M.Hello:
        return M.Hello(
            protocol=M.PROTOCOL_VERSION,
            client_id=client_id,
            environment="demo",
            trading_mode="paper",
            ray_dashboard_url=None,
            update_interval_s=1.0,
            components=M.Components(
                collectors=False, write_queue=False, trader=False, reconciler=False, policy_server=False
            ),
        )

    dashboard = Dashboard(hello, no_kill)
    server = HttpServer(create_app(dashboard, PROJECT_ROOT / "ui"), "127.0.0.1", 0)
    await server.start()
    port = server.port
    page = await browser.new_page()
    await page.goto(server.url)
    await page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    assert await text(page, "#env-badge") == "PAPER"
    assert await page.locator("#kill-switch").is_disabled(), "no trader: nothing to halt"
    await server.stop()
    await page.wait_for_selector("#conn[data-state=down]", timeout=10_000)
    assert "retrying in" in await text(page, "#conn-text")
    again = HttpServer(create_app(dashboard, PROJECT_ROOT / "ui"), "127.0.0.1", port)
    await again.start()
    try:
        await page.wait_for_selector("#conn[data-state=live]", timeout=20_000)
        client_ids = json.loads(await page.evaluate("JSON.stringify(window.kalshiflow.hello.client_id)"))
        assert client_ids >= 2, "a new connection, greeted again"
    finally:
        await again.stop()
