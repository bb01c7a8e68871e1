"""Storage test helpers.

- ``sample_row(table, n)``: one representative row per table (in ``TABLES[t].columns`` order) with
  awkward values: extreme integers, empty arrays, NULLs, nested JSON, non-ASCII text. Rows with
  different ``n`` have different natural keys.
- ``stopped_pgdata`` (session): an initdb'd embedded data dir that is not running.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kalshiflow.storage import EmbeddedPostgres

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 24, 15, 49, 55, 33836, tzinfo=UTC)  # microsecond precision survives
BIG = 2**62 + 12345  # far beyond 32 bits, below BIGINT's max
SESSION = uuid.UUID("0445cdcb-e22f-4522-9981-aed4b66015ff")


def sample_row(table: str, n: int = 0) -> tuple[Any, ...]:
    """Row ``n`` of ``table``: rows with different ``n`` have different natural keys."""
    rows: dict[str, tuple[Any, ...]] = {
        "collection_sessions": (
            uuid.UUID(int=n + 1), T0, None, "active", "simulator", "ws://127.0.0.1:8765/trade-api/ws/v2",
            ["KXHIGHNY-26JUN24-T82", "KXFED-27APR-T4.25"], {"markets": 2, "nested": {"a": [1, 2.5, None]}},
            BIG, 0, 1, 2, 3, None,
        ),
        "connection_epochs": (SESSION, n, "collector-0", T0, None, None),
        "markets": (
            f"KXHIGHNY-26JUN24-T{n}", "KXHIGHNY-26JUN24", "KXHIGHNY", "Highest temperature in NYC? ≥82°",
            "active", T0, T0 + dt.timedelta(days=1), None, "linear_cent",
            [{"start": 0, "end": 10000, "step": 100}], "quadratic", T0, T0,
            {"ticker": f"T{n}", "yes_bid": 55},
        ),
        "book_snapshots": (
            SESSION, n + 1, 1_782_316_195_033_836_000 + n, None, 0, 1, "KXHIGHNY-26JUN24-T82",
            [100, 200, 1000, 9999], [223099, 80600, 2900, BIG], [], [],
        ),
        "book_deltas": (
            SESSION, n + 1, 1_782_316_195_033_836_000 + n, 1_782_316_195_033 if n % 2 else None, -BIG,
            None if n % 3 else 0, 7, 2**31 - 1, 10000, "no", "KXHIGHNY-26JUN24-T82",
            "my-1" if n == 0 else None,
        ),
        "gaps": (SESSION, 0, 1, 100 + n, 105 + n, T0, ["A", "B"], None, None),
        "public_trades": (
            SESSION, f"d91bc706-ee49-470d-82d8-{n:012d}", 1_782_316_195_033_836_000, None, 13600, 3600,
            None, None, None, "HIGHNY-22DEC23-B53.5", "no",
        ),
        "orders": (
            f"ee587a1c-{n}", f"client-{n}", "simulator:abcd", "simulator", "KXFED-27APR-T4.25", "yes", "buy",
            "limit", 5600, 1000, 0, 1000, "good_till_canceled", "resting", T0, T0, "v0001",
            uuid.UUID(int=n + 7), {"raw": True},
        ),
        "fills": (
            f"trade-{n}", "ee587a1c-0", "client-0", "simulator:abcd", "simulator", "KXFED-27APR-T4.25", "yes",
            "buy", 7500, 2500, 27800, 40000, True, -50000, T0, None,
        ),
        "position_snapshots": (
            "simulator:abcd", "KXFED-27APR-T4.25", "exchange", T0 + dt.timedelta(seconds=n), "simulator",
            -BIG, BIG, -1, 0,
        ),
        "trader_decisions": (
            uuid.UUID(int=n + 99), T0, "simulator:abcd", "KXFED-27APR-T4.25", "sha256:" + "ab" * 32,
            "buy_yes", "v0001", "rejected", "max position", 1234, None,
        ),
        "models": (
            f"v{n:04d}", T0, "sha256:feature-schema", "ppo", f"models/v{n:04d}", {"sessions": [str(SESSION)]},
            {"lr": 3e-4}, {"return": -0.5}, "trained", None,
        ),
        "evaluations": (uuid.UUID(int=n + 5), None, "hold", {"split": "test"}, T0, {"pnl": 0}, None),
    }
    return rows[table]


@pytest.fixture(name="sample_row")
def sample_row_fixture() -> Callable[[str, int], tuple[Any, ...]]:
    return sample_row


@pytest.fixture(scope="session")
def stopped_pgdata(pg_tmp_root: Path) -> Path:
    """An initdb'd embedded data dir, not running (initdb is the slow part, so tests share it).
    Every test that starts a server on it must leave it stopped again."""
    path = pg_tmp_root / "shared-stopped" / "pgdata"
    with EmbeddedPostgres(path):
        pass
    return path
