"""Replay of recorded sessions into the exchange simulator (see docs/generator.md "Replay").

- :mod:`.events`: the recorded event types and the ``RecordedMarketStream`` source protocol;
- :mod:`.replayer`: ``Replayer``, which feeds streams into an ``ExchangeState`` delta by delta;
- :mod:`.record`: ``SessionRecorder`` and ``record_generated_session`` (generated sessions);
- :mod:`.files`: sessions on disk (``save_session`` / ``load_session``) and ``replay_driver``, the
  simulator's ``--replay`` driver.
"""

from kalshiflow.exchange.replay.events import (
    InMemoryMarketStream,
    Levels,
    RecDelta,
    RecGap,
    RecordedEvent,
    RecordedMarketStream,
    RecSnapshot,
    RecStatus,
    RecTrade,
    maker_ladder,
)
from kalshiflow.exchange.replay.files import load_session, replay_driver, save_session
from kalshiflow.exchange.replay.record import SessionRecorder, record_generated_session
from kalshiflow.exchange.replay.replayer import Replayer, ReplayStats

__all__ = [
    "InMemoryMarketStream",
    "Levels",
    "RecDelta",
    "RecGap",
    "RecSnapshot",
    "RecStatus",
    "RecTrade",
    "RecordedEvent",
    "RecordedMarketStream",
    "ReplayStats",
    "Replayer",
    "SessionRecorder",
    "load_session",
    "maker_ladder",
    "record_generated_session",
    "replay_driver",
    "save_session",
]
