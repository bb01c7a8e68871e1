"""Recording Kalshi order books: the collectors' functional core and the collection runner.

- :mod:`~kalshiflow.collect.sequencer`: per-sid seq verdicts (ok / gap / duplicate / out of order).
- :mod:`~kalshiflow.collect.shard_state`: one shard's books, gaps and recovery, rows, tops, stats
  (with :mod:`~kalshiflow.collect.recovery`, :mod:`~kalshiflow.collect.market_state`,
  :mod:`~kalshiflow.collect.rows`).
- :mod:`~kalshiflow.collect.epochs`: connection epoch ids that are never reused.
- :mod:`~kalshiflow.collect.shipper` / :mod:`~kalshiflow.collect.fanout`: batches kept until the
  WriteQueue acknowledges them; coalesced book updates to subscriber actors.
- :mod:`~kalshiflow.collect.selection`: explicit tickers or discovery by activity; sharding.
- :mod:`~kalshiflow.collect.run`: start / steer / stop a collection (session, WriteQueue,
  collector actors in ``actors/collector.py``); what ``launch`` calls.
- :mod:`~kalshiflow.collect.testing` / :mod:`~kalshiflow.collect.verify`: simulator driver, WS fault
  proxy and database checks for tests and the ``ingest`` benchmark.

Importing this package does no I/O and does not import Ray.
"""

from kalshiflow.collect.messages import BookTop, CollectorSpec, CollectorStats, EpochRecord, MarketStats
from kalshiflow.collect.selection import MarketSpec
from kalshiflow.collect.sequencer import DUPLICATE, GAP, OK, OUT_OF_ORDER, Sequencer
from kalshiflow.collect.shard_state import Request, ShardState

__all__ = [
    "DUPLICATE",
    "GAP",
    "OK",
    "OUT_OF_ORDER",
    "BookTop",
    "CollectorSpec",
    "CollectorStats",
    "EpochRecord",
    "MarketSpec",
    "MarketStats",
    "Request",
    "Sequencer",
    "ShardState",
]
