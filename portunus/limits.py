"""Token buckets and connection limits, per rule and per owner.

A connection is bound by its rule's limits AND its owner's (shared by every
rule of that owner). Bandwidth buckets throttle the copy path chunk by chunk;
connection-rate and concurrency limits are checked once, at accept (TCP) or
on a flow's first datagram (UDP), and do not affect the choice of splice.

Buckets are long-lived objects that a reload updates in place, so live
connections see a changed cap at their next chunk (well within a second).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from portunus.config import RateLimit

# A capped pump asks for at most rate/CHUNKS_PER_SEC bytes per chunk, so the
# receiver sees a smooth rate (no 1-second lumps) and connections sharing an
# owner bucket interleave finely enough to stay fair.
CHUNKS_PER_SEC = 50
MIN_CHUNK_BYTES = 512
MAX_CHUNK_BYTES = 256 * 1024


class TokenBucket:
    """Thread-safe token bucket; `rate` None means unlimited.

    `consume` uses a debt model: it takes the tokens at once (the balance may
    go negative) and sleeps until the balance would have been repaid. Callers
    queue behind each other in arrival order, which keeps equal consumers fair.
    """

    def __init__(self, rate: float | None, burst: float | None = None, *, start_full: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.rate: float | None = None
        self.burst = 0.0
        self._tokens = 0.0
        self._stamp = clock()
        self.update(rate, burst)
        if start_full and self.rate is not None:
            self._tokens = self.burst

    def update(self, rate: float | None, burst: float | None = None) -> None:
        """Change rate and burst (default: one second of rate); keeps the current balance."""
        with self._lock:
            self._refill()
            self.rate = float(rate) if rate else None
            self.burst = float(burst) if burst else (self.rate or 0.0)
            self._tokens = min(self._tokens, self.burst)

    def _refill(self) -> None:
        now = self._clock()
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def max_chunk(self) -> int:
        rate = self.rate
        if rate is None:
            return MAX_CHUNK_BYTES
        chunk = int(min(rate / CHUNKS_PER_SEC, self.burst))
        return max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, chunk))

    def consume(self, amount: int) -> None:
        """Take `amount` tokens, sleeping as long as the cap requires."""
        if self.rate is None:
            return
        with self._lock:
            self._refill()
            rate = self.rate
            if rate is None:
                return
            self._tokens -= amount
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)

    def try_take(self, amount: float = 1.0) -> bool:
        """Take `amount` tokens if available now; never sleeps."""
        with self._lock:
            if self.rate is None:
                return True
            self._refill()
            if self._tokens >= amount:
                self._tokens -= amount
                return True
            return False

    def current_rate(self) -> float | None:
        return self.rate


class LimitSet:
    """The live limits of one rule or one owner."""

    def __init__(self, limits: RateLimit | None = None) -> None:
        self._lock = threading.Lock()
        self.bandwidth_in = TokenBucket(None)
        self.bandwidth_out = TokenBucket(None)
        self.new_connections = TokenBucket(None)
        self.max_concurrent: int | None = None
        self.active = 0
        self.limits = RateLimit()
        self.update(limits or RateLimit())

    def update(self, limits: RateLimit) -> None:
        self.limits = limits
        self.bandwidth_in.update(limits.bandwidth_in_bps, limits.bandwidth_in_burst)
        self.bandwidth_out.update(limits.bandwidth_out_bps, limits.bandwidth_out_burst)
        rate = limits.new_connections_per_sec
        burst = limits.new_connections_burst or (max(1.0, rate) if rate else None)
        if rate and self.new_connections.rate is None:
            # A fresh connection-rate limit starts with a full bucket: the
            # first `burst` connections are admitted, the excess refused.
            self.new_connections = TokenBucket(rate, burst, start_full=True)
        else:
            self.new_connections.update(rate, burst)
        self.max_concurrent = limits.concurrent_connections

    @property
    def has_bandwidth_cap(self) -> bool:
        return self.limits.has_bandwidth_cap


@dataclass(frozen=True)
class Admission:
    """Outcome of an admission check: `reason` is None when admitted."""

    reason: str | None


ADMITTED = Admission(None)


def admit(limit_sets: tuple[LimitSet, ...]) -> Admission:
    """Check concurrency then connection rate for a new connection or flow.

    On success every set's active count is raised; call `release` when the
    connection ends. On refusal nothing is held and the reason is one of
    "concurrency" or "connection_rate".
    """
    taken: list[LimitSet] = []
    for ls in limit_sets:
        with ls._lock:
            if ls.max_concurrent is not None and ls.active >= ls.max_concurrent:
                break
            ls.active += 1
            taken.append(ls)
    else:
        for ls in limit_sets:
            if not ls.new_connections.try_take(1.0):
                release(tuple(taken))
                return Admission("connection_rate")
        return ADMITTED
    release(tuple(taken))
    return Admission("concurrency")


def release(limit_sets: tuple[LimitSet, ...]) -> None:
    for ls in limit_sets:
        with ls._lock:
            ls.active -= 1
