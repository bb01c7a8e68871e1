"""Request / batch counters of one PolicyServer replica (pure; time is passed in).

Bounded memory whatever the traffic: latencies live in a fixed ring, the rate window in a deque
of one entry per batch trimmed to ``rate_window_s``.
"""

from __future__ import annotations

from collections import Counter, deque

import numpy as np

__all__ = ["ServingStats"]


class ServingStats:
    def __init__(self, latency_window: int = 4096, rate_window_s: float = 10.0) -> None:
        self.rate_window_s = rate_window_s
        self._lat = np.zeros(max(1, latency_window), np.float64)
        self._lat_n = 0  # requests recorded in total; the ring holds the last len(_lat)
        self._recent: deque[tuple[float, int]] = deque()  # (monotonic time, requests) per batch
        self.requests = 0
        self.batches = 0
        self.batch_sizes: Counter[int] = Counter()
        self.not_ok: Counter[str] = Counter()

    def record_batch(self, size: int, now: float) -> None:
        self.batches += 1
        self.requests += size
        self.batch_sizes[size] += 1
        self._recent.append((now, size))
        self._trim(now)

    def record_status(self, status: str) -> None:
        if status != "ok":
            self.not_ok[status] += 1

    def record_latency(self, ms: float) -> None:
        self._lat[self._lat_n % len(self._lat)] = ms
        self._lat_n += 1

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.rate_window_s:
            self._recent.popleft()

    def requests_per_s(self, now: float, started: float) -> float:
        self._trim(now)
        # A replica younger than the window divides by its age, not by the full window.
        span = min(self.rate_window_s, max(now - started, 1e-3))
        return sum(n for _, n in self._recent) / span

    def percentiles(self) -> tuple[float, float]:
        """(p50, p99) in ms over the recent requests; (0, 0) before the first one."""
        n = min(self._lat_n, len(self._lat))
        if n == 0:
            return 0.0, 0.0
        p50, p99 = np.percentile(self._lat[:n], [50, 99])
        return round(float(p50), 3), round(float(p99), 3)

    def mean_batch_size(self) -> float:
        return round(self.requests / self.batches, 3) if self.batches else 0.0
