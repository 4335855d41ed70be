"""A thread-safe token bucket that copy loops wait on (bytes per second)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Sleep in slices so a cancelled run's copy thread notices within this long.
_MAX_SLEEP_S = 0.05


class RateLimiter:
    """Token bucket shared by every copy thread of a conduit.

    Args:
        rate_bytes_per_s: sustained rate (> 0).
        burst_bytes: bucket size; defaults to one second of traffic.
        clock, sleep: seams for tests.
    """

    def __init__(
        self,
        rate_bytes_per_s: float,
        burst_bytes: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError("rate_bytes_per_s must be > 0")
        self.rate_bytes_per_s = float(rate_bytes_per_s)
        self.burst_bytes = float(burst_bytes or rate_bytes_per_s)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst_bytes
        self._stamp = clock()

    def _reserve(self, size_bytes: int) -> float:
        """Take `size_bytes` (going into debt if need be); seconds to wait."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._stamp)
            self._stamp = now
            self._tokens = min(
                self.burst_bytes, self._tokens + elapsed * self.rate_bytes_per_s
            )
            self._tokens -= size_bytes
            return max(0.0, -self._tokens / self.rate_bytes_per_s)

    def acquire(
        self, size_bytes: int, checkpoint: Callable[[], None] | None = None
    ) -> None:
        """Block the calling thread until `size_bytes` may pass.

        `checkpoint` is called between sleep slices (it raises to abandon).
        """
        wait_s = self._reserve(size_bytes)
        deadline = self._clock() + wait_s
        while wait_s > 0:
            if checkpoint is not None:
                checkpoint()
            self._sleep(min(wait_s, _MAX_SLEEP_S))
            wait_s = deadline - self._clock()
