"""A token bucket: the per-connection SEND rate limit (pure; the clock is injected).

A bucket holds up to ``capacity`` tokens and gains ``capacity`` of them per ``window_s``,
continuously. Each event takes one; an event that finds less than one token is refused
and takes nothing. So a client may burst ``capacity`` events at once and then keeps
``capacity / window_s`` per second, like Discord's gateway limit of 120 events per 60 s.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``capacity`` events per ``window_s``, bursts up to ``capacity`` (see the module docstring)."""

    __slots__ = ("capacity", "window_s", "_rate", "_tokens", "_updated", "_clock")

    def __init__(self, capacity: int, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or window_s <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and a positive window")
        self.capacity = capacity
        self.window_s = window_s
        self._rate = capacity / window_s
        self._tokens = float(capacity)
        self._clock = clock
        self._updated = clock()

    def take(self) -> bool:
        """Take one token; False (and nothing taken) when there is less than one."""
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def retry_after(self) -> float:
        """Seconds until one token is there again (0 when one is there now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:  # a clock that went backwards adds nothing
            self._tokens = min(float(self.capacity), self._tokens + elapsed * self._rate)
        self._updated = now
