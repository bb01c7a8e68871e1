"""Kalshi-style REST rate limiting: per-account token buckets, separate read and write buckets.

Kalshi charges each request a token cost (10 by default) against a bucket that refills
continuously at the tier's per-second budget and holds one or two seconds of it
(kalshi-protocol.md §2.6). Exhausting a bucket answers 429 ``{"error": "too many requests"}``
with no Retry-After header.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("rate", "capacity", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def take(self, cost: float, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


class RateLimiter:
    """Buckets per (client, kind). ``client`` is the account, or the address of unsigned callers."""

    def __init__(
        self,
        read_tokens_per_s: float,
        write_tokens_per_s: float,
        *,
        cost: float = 10,
        bucket_seconds: float = 1.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rates = {"read": float(read_tokens_per_s), "write": float(write_tokens_per_s)}
        self.cost = cost
        self.bucket_seconds = bucket_seconds
        self.enabled = enabled
        self.clock = clock
        self.rejected = 0
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def allow(self, client: str, kind: str) -> bool:
        """Charge one request of ``kind`` ("read" / "write"); False = answer 429."""
        if not self.enabled:
            return True
        now = self.clock()
        key = (client, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = self.rates[kind]
            # A bucket always fits at least one request, else a tiny budget could never be used.
            bucket = self._buckets[key] = TokenBucket(rate, max(rate * self.bucket_seconds, self.cost), now)
        if bucket.take(self.cost, now):
            return True
        self.rejected += 1
        return False
