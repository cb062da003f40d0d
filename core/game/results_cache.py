"""One Results summary shared by every player, recomputed at most every few seconds.

The Results tab refreshes after every guess; recomputing every statistic for every guess of
every player would cap a busy Space at a few votes per second. ``ResultsCache.get`` returns
the shared summary while it is younger than ``max_age`` seconds. The first caller to find it
older recomputes it (one at a time); callers arriving meanwhile get the previous summary at
once, so nobody waits behind a recomputation but its own caller. What is shown is therefore
at most ``max_age`` + one recomputation old (README "Data-layer performance" measures it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

RESULTS_MAX_AGE_SECONDS = 2.0


class ResultsCache(Generic[T]):
    """A value computed by ``compute`` and shared, with the time its data were read."""

    def __init__(
        self,
        compute: Callable[[], T],
        max_age: float = RESULTS_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age < 0:
            raise ValueError(f"max_age must be at least 0 seconds, got {max_age}")
        self._compute = compute
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()  # guards _value and _read_at
        self._refreshing = threading.Lock()  # one recomputation at a time
        self._value: T | None = None
        self._read_at = 0.0

    def _current(self) -> tuple[T | None, float]:
        with self._lock:
            return self._value, self._read_at

    def get(self) -> tuple[T, float]:
        """(the summary, its age in seconds: now − when its data were read)."""
        value, read_at = self._current()
        if value is not None and self._clock() - read_at < self.max_age:
            return value, self._clock() - read_at
        # Stale or empty: recompute, unless another caller already is and there is
        # something to show meanwhile.
        if not self._refreshing.acquire(blocking=value is None):
            assert value is not None
            return value, self._clock() - read_at
        try:
            value, read_at = self._current()
            if value is None or self._clock() - read_at >= self.max_age:
                started = self._clock()
                value = self._compute()
                with self._lock:
                    self._value, self._read_at = value, started
                read_at = started
        finally:
            self._refreshing.release()
        return value, self._clock() - read_at
