"""Recorded sessions on disk, and the simulator's replay driver.

File format: one msgpack document ``{"version": 1, "markets": [{"market": MarketInfo, "events":
[tagged RecordedEvent, ...]}, ...]}`` (msgspec tagged unions, so a file is self-describing and
loads back into the exact event types). It exists so a session can be replayed before the
collection pipeline's PostgreSQL loader lands; that loader plugs into ``replay_driver(loader=...)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from kalshiflow.exchange.events import MarketInfo
from kalshiflow.exchange.replay.events import InMemoryMarketStream, RecordedEvent, RecordedMarketStream
from kalshiflow.exchange.replay.replayer import Replayer

FORMAT_VERSION = 1


class RecordedMarket(msgspec.Struct, frozen=True, kw_only=True):
    market: MarketInfo
    events: list[RecordedEvent]


class RecordedSessionFile(msgspec.Struct, frozen=True, kw_only=True):
    version: int = FORMAT_VERSION
    markets: list[RecordedMarket] = []


def save_session(path: str | Path, streams: Iterable[RecordedMarketStream]) -> Path:
    """Write streams to `path` (msgpack); returns the path."""
    doc = RecordedSessionFile(markets=[RecordedMarket(market=s.market, events=list(s)) for s in streams])
    out = Path(path)
    out.write_bytes(msgspec.msgpack.encode(doc))
    return out


def load_session(path: str | Path) -> list[InMemoryMarketStream]:
    """Read a file written by :func:`save_session`; ValueError if it is not one."""
    try:
        doc = msgspec.msgpack.decode(Path(path).read_bytes(), type=RecordedSessionFile)
    except msgspec.DecodeError as err:
        raise ValueError(f"{path}: not a recorded session file: {err}") from None
    if doc.version != FORMAT_VERSION:
        raise ValueError(f"{path}: recorded session format {doc.version}, expected {FORMAT_VERSION}")
    return [InMemoryMarketStream(m.market, m.events) for m in doc.markets]


SessionLoader = Callable[[str], Iterable[RecordedMarketStream]]


def replay_driver(
    session: str | Path | Iterable[RecordedMarketStream],
    *,
    speed: float = 1.0,
    loader: SessionLoader | None = None,
    trade_window_s: float = 1.0,
) -> Callable[[Any], Awaitable[None]]:
    """A simulator driver (``Simulator(driver=...)`` / ``python -m kalshiflow.exchange --replay``)
    that replays a session into the simulator's state at `speed`, then returns.

    `session`: streams, a path to a file from :func:`save_session`, or a session id for `loader`
    (the collection pipeline's database loader). Resolved now, so a bad id fails at start-up.
    """
    streams: list[RecordedMarketStream]
    if isinstance(session, (str, Path)):
        if Path(session).is_file():
            streams = list(load_session(session))
        elif loader is not None:
            streams = list(loader(str(session)))
        else:
            raise ValueError(f"recorded session {str(session)!r}: no such file, and no session loader given")
    else:
        streams = list(session)

    async def drive(sim: Any) -> None:
        replayer = Replayer(sim.state, streams, trade_window_s=trade_window_s)
        sim.replayer = replayer  # readable by tests and tools, like sim.generator
        await replayer.run(speed=speed)

    return drive
