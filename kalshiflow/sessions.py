"""``python -m kalshiflow.sessions [--json] [--config FILE] [--status S] [--limit N]``: list sessions.

Newest first, with what each recorded: snapshots, deltas, gaps, trades, markets, duration. The
database is ``DATABASE_URL`` when set, else the embedded PostgreSQL (like the rest of the system).
``--json`` prints ONE JSON array; each object has ``session_id``, ``status``, ``snapshots``,
``deltas``, ``gaps``, ``trades``, ``reconnects``, ``markets`` (how many), ``tickers``,
``environment``, ``started_at``/``ended_at`` (ISO 8601) and ``duration_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import msgspec

from kalshiflow.config import ConfigError, load_config
from kalshiflow.storage import DatabaseUnavailableError, open_database
from kalshiflow.storage.sessions import SessionSummary, list_sessions


def _duration(seconds: float) -> str:
    # Spelled out h/m/s: a prior system's report read "17:48" as hours and got 44 days from 17.8 h.
    s = int(round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def render_table(sessions: Sequence[SessionSummary]) -> str:
    header = (
        "session_id",
        "status",
        "environment",
        "started (UTC)",
        "duration",
        "markets",
        "snapshots",
        "deltas",
        "gaps",
        "trades",
        "reconnects",
    )
    rows = [header] + [
        (
            s.session_id,
            s.status,
            s.environment,
            s.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _duration(s.duration_s),
            str(s.markets),
            str(s.snapshots),
            str(s.deltas),
            str(s.gaps),
            str(s.trades),
            str(s.reconnects),
        )
        for s in sessions
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = set(range(5, len(header)))
    lines = [
        "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + f"\n{len(sessions)} session(s)"


async def _fetch(config_path: str | None, status: str | None, limit: int | None) -> list[SessionSummary]:
    config = load_config(config_path)
    async with open_database(config) as db:
        return await list_sessions(db, status=status, limit=limit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kalshiflow.sessions", description="List collection sessions."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON array (newest first)")
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: configs/default.toml)")
    parser.add_argument("--status", choices=("active", "closed", "aborted", "empty"), help="only this status")
    parser.add_argument("--limit", type=int, help="at most this many sessions")
    args = parser.parse_args(argv)
    try:
        sessions = asyncio.run(_fetch(args.config, args.status, args.limit))
    except (ConfigError, DatabaseUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(sessions) + b"\n")
    else:
        print(render_table(sessions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
