"""A sliding window of the last N samples' features: one preallocated array, so memory is
N × features × 4 bytes whatever the traffic (500 × 1000 classes = 2 MB)."""

from __future__ import annotations

import time

import numpy as np


class Window:
    def __init__(self, size: int, dims: int):
        if size < 1 or dims < 1:
            raise ValueError(f"window {size} × {dims}: both must be ≥ 1")
        self.size, self.dims = size, dims
        self._data = np.zeros((size, dims), dtype=np.float32)
        self._next = 0  # where the next row goes
        self.count = 0  # rows held (≤ size)
        self.total = 0  # rows ever added
        self.last_added = 0.0

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, self.dims)
        if len(rows) > self.size:
            rows = rows[-self.size:]
        n = len(rows)
        first = min(n, self.size - self._next)
        self._data[self._next:self._next + first] = rows[:first]
        self._data[:n - first] = rows[first:]
        self._next = (self._next + n) % self.size
        self.count = min(self.size, self.count + n)
        self.total += n
        self.last_added = time.time()

    @property
    def fill(self) -> float:
        return self.count / self.size

    @property
    def full(self) -> bool:
        return self.count == self.size

    def values(self) -> np.ndarray:
        """The rows held, oldest first (a copy: the test runs while new samples arrive)."""
        if self.count < self.size:
            return self._data[:self.count].copy()
        return np.concatenate([self._data[self._next:], self._data[:self._next]])


class TokenBucket:
    """At most ``rate`` samples a second (bursts up to one second's worth): bounds what the monitor
    costs its Triton and its CPU whatever the mirrored traffic."""

    def __init__(self, rate: float, clock=time.monotonic):
        self.rate, self.clock = rate, clock
        self.tokens, self.at = rate, clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def available(self) -> int:
        """Whole tokens there now (nothing taken): whether a request is worth reading at all."""
        self._refill()
        return int(self.tokens)

    def take(self, n: int) -> int:
        self._refill()
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted
