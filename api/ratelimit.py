"""Per-key rate limit: a token bucket (``rate`` per second on average, ``burst`` at once).

Pure and clocked from outside, so a test can drive it without waiting. ``take`` answers
how long to wait before a request would be allowed — the ``Retry-After`` of a 429.
"""

from __future__ import annotations

import math
import threading

__all__ = ["TokenBuckets", "retry_after"]


class TokenBuckets:
    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``: 0.0 if allowed, else the seconds until one is back."""
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (never 0 for a refused request)."""
    return str(max(1, math.ceil(wait_s)))
