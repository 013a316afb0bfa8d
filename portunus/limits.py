"""Token buckets and connection limits, per rule and per owner.

A connection (TCP) or flow (UDP) is bound by its rule's limits AND its
owner's (one LimitSet shared by every rule of that owner). Bandwidth buckets
throttle the TCP copy path chunk by chunk and police UDP datagram by datagram;
connection-rate and concurrency limits are checked once, at accept (TCP) or on
a flow's first datagram (UDP), and do not affect the choice of splice.

Buckets are long-lived objects that a reload updates in place, so live
connections see a changed cap at their next chunk (tens of milliseconds).

How a bucket behaves over time (the receiver-side contract):

* Bytes released in any window of T seconds are at most `burst + rate * T`.
  Tokens are taken BEFORE a chunk is sent, so nothing leaves early.
* Bandwidth buckets start EMPTY at their first use, connection-rate buckets
  start FULL. An empty start means the first transfer through a new rule (or
  after a restart, a reload that adds a cap, a rule re-pushed by the control
  plane) runs at exactly the cap from its first byte: a restart is never a
  way to earn a free burst, and a benchmark's first run is not inflated. A
  connection-rate bucket must start full, or the first connections to a new
  rule would be refused.
* After an idle period a bucket refills to its burst; that is what the
  burst is for. With the default burst (one second of rate) a transfer that
  starts after >= 1 s of idle gets up to one second's worth of bytes at line
  rate, then exactly the cap: over its first T seconds the receiver sees at
  most rate * (T + 1). Set `bandwidth_*_burst` lower (e.g. rate / 50) for
  strict shaping.
* Consumers that overdraw go into debt and sleep until it is repaid (the
  GCRA form of a token bucket: the state is the time `tat` at which the
  balance is back to zero). Concurrent consumers therefore queue in arrival
  order, which keeps equal connections under one owner cap fair. Sleeping
  too long is no loss: the balance refills meanwhile, so the long-run rate
  does not drift below the cap.
* A rate change keeps the outstanding debt in seconds (bytes already
  admitted were admitted under the old cap), so lowering 10 MiB/s to
  64 KiB/s does not stall a live connection for seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any

from portunus.config import RateLimit

# A capped pump asks for at most rate/CHUNKS_PER_SEC bytes per chunk, so the
# receiver sees a smooth rate (a 20 ms staircase, not 1-second lumps) and
# connections sharing an owner bucket interleave finely enough to stay fair.
CHUNKS_PER_SEC = 50
# Floor: below ~512 B per chunk the syscall and wake-up cost per byte grows
# for no gain in smoothness (64 KiB/s already gives 1,310 B chunks).
MIN_CHUNK_BYTES = 512
# Ceiling: the copy path's buffer size (tcp.COPY_BUFFER_BYTES).
MAX_CHUNK_BYTES = 256 * 1024
# NaN marks a bucket that has not started (see TokenBucket._tat).
_UNSET = float("nan")
# Floats of state per LimitSet: 3 buckets x (tat, rate, burst), active, UDP flows,
# and the bytes charged to the set's traffic quota (QUOTA_CELL).
LIMIT_SET_CELLS = 12
# Offset of the quota's used-bytes counter in a LimitSet's cells. A double holds
# every integer up to 2^53 bytes (8 PiB) exactly.
QUOTA_CELL = 11


def new_cells() -> list[float]:
    """Fresh state for one LimitSet: buckets not started, no connections."""
    cells = [0.0] * LIMIT_SET_CELLS
    cells[0] = cells[3] = cells[6] = _UNSET
    return cells


# Float slack when comparing times: a bucket holding exactly n tokens must
# admit n (5.0 tokens can come out as 4.9999999 after arithmetic).
_EPS_S = 1e-9


class TokenBucket:
    """Thread-safe token bucket; `rate` None means unlimited (every call returns at once).

    Args:
        rate: tokens (bytes, or connections) per second; None = unlimited.
        burst: bucket depth in tokens; None = one second of rate.
        start_full: state at first use (see the module docstring for why
            bandwidth buckets start empty and connection buckets full).
    """

    __slots__ = ("_lock", "_clock", "_sleep", "rate", "burst", "start_full", "_cells", "_i")

    def __init__(self, rate: float | None, burst: float | None = None, *, start_full: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 cells: MutableSequence[float] | None = None, index: int = 0,
                 lock: Any = None) -> None:
        self._lock = lock if lock is not None else threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.start_full = start_full
        self.rate: float | None = None
        self.burst = 0.0
        # The state lives in three cells: [tat, rate, burst] from `index`. A
        # private list normally; shared memory (with a process-shared lock)
        # when worker processes share one bucket (portunus.dataplane.shared).
        # tat = the time at which the balance is back to zero; NaN until first
        # use. rate/burst = what tat was computed under (0 = unlimited), so a
        # change is applied to shared state once, not once per worker.
        self._cells: MutableSequence[float] = cells if cells is not None else [_UNSET, 0.0, 0.0]
        self._i = index
        self.update(rate, burst)

    @property
    def _tat(self) -> float | None:
        v = self._cells[self._i]
        return None if v != v else v  # NaN: not started

    @_tat.setter
    def _tat(self, value: float | None) -> None:
        self._cells[self._i] = _UNSET if value is None else value

    # -- state (call with the lock held) --------------------------------

    def _floor(self, now: float, rate: float) -> float:
        """`tat` clamped so the credit never exceeds the burst; starts the bucket on first use."""
        full_at = now - self.burst / rate
        if self._tat is None:
            self._tat = full_at if self.start_full else now
        return self._tat if self._tat > full_at else full_at

    # -- public ----------------------------------------------------------

    def update(self, rate: float | None, burst: float | None = None) -> None:
        """Change rate and burst (None = one second of rate); outstanding debt keeps its duration."""
        with self._lock:
            new_rate = float(rate) if rate else None
            new_burst = float(burst) if burst else (new_rate or 0.0)
            cells, i = self._cells, self._i
            old_rate = cells[i + 1] or None
            if (old_rate, cells[i + 2]) != (new_rate, new_burst):
                if new_rate is None:
                    self._tat = None  # unlimited: a later cap starts afresh
                elif old_rate is not None and self._tat is not None:
                    now = self._clock()
                    self.burst = cells[i + 2]
                    tat = self._floor(now, old_rate)
                    if tat < now:
                        # Credit keeps its token count (clamped to the new burst),
                        # so idle time under a low cap is not revalued at a high one.
                        credit = min((now - tat) * old_rate, new_burst)
                        self._tat = now - credit / new_rate
                    # Debt keeps its duration: tat stays where it is.
                cells[i + 1] = new_rate or 0.0
                cells[i + 2] = new_burst
            self.rate = new_rate
            self.burst = new_burst

    def tokens(self) -> float:
        """Current balance (negative while in debt); `inf` when unlimited."""
        with self._lock:
            rate = self.rate
            if rate is None:
                return float("inf")
            now = self._clock()
            return (now - self._floor(now, rate)) * rate

    def max_chunk(self) -> int:
        """Largest chunk a pump should move at once under this bucket."""
        rate = self.rate
        if rate is None:
            return MAX_CHUNK_BYTES
        chunk = int(min(rate / CHUNKS_PER_SEC, self.burst))
        return max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, chunk))

    def reserve(self, amount: float) -> float:
        """Take `amount` tokens now (going into debt if needed); return seconds until it is repaid."""
        with self._lock:
            rate = self.rate
            if rate is None:
                return 0.0
            now = self._clock()
            self._tat = self._floor(now, rate) + amount / rate
            return self._tat - now if self._tat > now else 0.0

    def consume(self, amount: int) -> None:
        """Take `amount` tokens, sleeping as long as the cap requires."""
        wait = self.reserve(amount)
        if wait > 0:
            self._sleep(wait)

    def try_take(self, amount: float = 1.0) -> bool:
        """Take `amount` tokens if the balance covers them; never sleeps, never borrows."""
        with self._lock:
            rate = self.rate
            if rate is None:
                return True
            now = self._clock()
            tat = self._floor(now, rate) + amount / rate
            if tat > now + _EPS_S:
                return False
            self._tat = tat
            return True


class ThrottleGroup:
    """The buckets one direction of a connection must pass (rule's and owner's), as one throttle.

    Takes each chunk from every bucket at once and sleeps for the LONGEST
    wait, not the sum: a connection bound by a 1 MiB/s rule cap and a
    1 MiB/s owner cap moves 1 MiB/s, not 0.5.
    """

    __slots__ = ("buckets", "_sleep")

    def __init__(self, buckets: Iterable[TokenBucket], sleep: Callable[[float], None] = time.sleep) -> None:
        self.buckets = tuple(buckets)
        self._sleep = sleep

    def max_chunk(self) -> int:
        return min((b.max_chunk() for b in self.buckets), default=MAX_CHUNK_BYTES)

    def reserve(self, nbytes: int) -> float:
        """Take `nbytes` from every bucket now; return seconds until the chunk may leave."""
        wait = 0.0
        for b in self.buckets:
            w = b.reserve(nbytes)
            if w > wait:
                wait = w
        return wait

    def consume(self, nbytes: int) -> None:
        wait = self.reserve(nbytes)
        if wait > 0:
            self._sleep(wait)


def police(buckets: Sequence[TokenBucket], nbytes: int) -> bool:
    """Admit one datagram of `nbytes` against every capped bucket, or take nothing.

    A datagram passes when no bucket is in debt, and then puts each into debt
    by its size: a policer cannot delay, so this is the shaper's rule (tokens
    first, bytes when the balance is repaid) applied to whole datagrams. A
    fresh (empty) bucket thus passes the first datagram instead of dropping
    it (a first DNS query is not lost to a cold bucket), the long-run rate is
    exactly the cap, and in any window T at most burst + rate * T + one
    datagram passes. A burst smaller than a datagram still lets traffic through.
    """
    for b in buckets:  # common case, no allocation: nothing capped
        if b.rate is not None:
            break
    else:
        return True
    return _take_all(buckets, nbytes, need=0.0)


def take_all(buckets: Sequence[TokenBucket], amount: float) -> bool:
    """Take `amount` from every capped bucket if each holds that much now, else take nothing."""
    return _take_all(buckets, amount, need=amount)


def _take_all(buckets: Sequence[TokenBucket], amount: float, need: float) -> bool:
    capped = [b for b in buckets if b.rate is not None]
    if not capped:
        return True
    # Each distinct lock once (shared buckets share one), in a fixed order.
    locks = sorted({id(b._lock): b._lock for b in capped}.items())
    for _, lock in locks:
        lock.acquire()
    try:
        new_tats: list[float | None] = []
        for b in capped:
            rate = b.rate
            if rate is None:  # changed by a reload just now: unlimited
                new_tats.append(None)
                continue
            now = b._clock()
            floor = b._floor(now, rate)
            if floor + need / rate > now + _EPS_S:
                return False
            new_tats.append(floor + amount / rate)
        for b, tat in zip(capped, new_tats, strict=True):
            if tat is not None:
                b._tat = tat
        return True
    finally:
        for _, lock in locks:
            lock.release()


class LimitSet:
    """The live limits of one rule or one owner (buckets updated in place on reload).

    Its state is LIMIT_SET_CELLS floats: three buckets of three cells, then
    the count of admitted connections (or flows) and of live UDP flows. A
    private list normally; a slot of shared memory when worker processes
    enforce one limit together (portunus.dataplane.shared).
    """

    def __init__(self, limits: RateLimit | None = None, *, cells: MutableSequence[float] | None = None,
                 base: int = 0, lock: Any = None) -> None:
        if cells is None:
            cells, base = new_cells(), 0
        self._cells = cells
        self._base = base
        self.bandwidth_in = TokenBucket(None, cells=cells, index=base, lock=lock)
        self.bandwidth_out = TokenBucket(None, cells=cells, index=base + 3, lock=lock)
        self.new_connections = TokenBucket(None, start_full=True, cells=cells, index=base + 6, lock=lock)
        self.max_concurrent: int | None = None
        self._init_active()
        self.limits = RateLimit()
        self._lock = lock if lock is not None else threading.Lock()
        # Set while the set has a traffic quota; None keeps the hot path to one check.
        self.quota: Quota | None = None
        self._quota: Quota | None = None  # kept when the quota is lifted: live relays hold it
        self.update(limits or RateLimit())

    def _init_active(self) -> None:
        self.active = 0  # admitted connections (or flows) not yet released
        self.udp_flows = 0  # live UDP flows of a rule (its udp_max_flows bound)

    @property
    def base(self) -> int:
        """Index of this set's first cell (its slot, when shared)."""
        return self._base


    def update(self, limits: RateLimit) -> None:
        """Apply new limits; live connections holding these buckets see them at their next chunk."""
        self.limits = limits
        self.bandwidth_in.update(limits.bandwidth_in_bps, limits.bandwidth_in_burst)
        self.bandwidth_out.update(limits.bandwidth_out_bps, limits.bandwidth_out_burst)
        rate = limits.new_connections_per_sec
        # Default burst: one second of rate, but at least one connection
        # (0.5/s must still admit a first connection).
        burst = limits.new_connections_burst or (max(1.0, rate) if rate else None)
        self.new_connections.update(rate, burst)
        self.max_concurrent = limits.concurrent_connections

    @property
    def has_bandwidth_cap(self) -> bool:
        return self.limits.has_bandwidth_cap

    def set_quota(self, limit_bytes: int | None) -> None:
        """Give the set a byte budget (None: no quota). The used count is kept either way:
        changing a budget or lifting and restoring it never resets usage."""
        if limit_bytes is None:
            if self._quota is not None:
                self._quota.limit_bytes = float("inf")  # live relays that hold it stop being cut
            self.quota = None
            return
        if self._quota is None:
            self._quota = Quota(limit_bytes, self._cells, self._base + QUOTA_CELL, self._lock)
        self._quota.limit_bytes = float(limit_bytes)
        self.quota = self._quota

    @property
    def quota_used(self) -> int:
        """Bytes charged to this set's quota counter (kept while no quota is set)."""
        return int(self._cells[self._base + QUOTA_CELL])


class Quota:
    """A byte budget: every byte the set's connections move (both ways) is charged to `used`.

    `used` lives in the LimitSet's cell QUOTA_CELL, so worker processes that
    share the set's slot charge one counter (under the bucket lock). Relays
    charge after each send, so a connection stops at most one chunk past the
    budget; admission refuses new connections once it is spent. Periods and
    resets are decided above the data plane (portunus.quota).
    """

    __slots__ = ("limit_bytes", "_cells", "_i", "_lock")

    def __init__(self, limit_bytes: float, cells: MutableSequence[float], index: int, lock: Any) -> None:
        self.limit_bytes = float(limit_bytes)
        self._cells = cells
        self._i = index
        self._lock = lock

    @property
    def used(self) -> int:
        return int(self._cells[self._i])

    def charge(self, nbytes: int) -> bool:
        """Count `nbytes` moved; True if the budget is spent now (the caller cuts its connection)."""
        with self._lock:
            used = self._cells[self._i] + nbytes
            self._cells[self._i] = used
        return used >= self.limit_bytes

    def exhausted(self) -> bool:
        return self._cells[self._i] >= self.limit_bytes

    def reset(self, used: int = 0) -> None:
        """Start a new period at `used` bytes."""
        with self._lock:
            self._cells[self._i] = float(used)

    def raise_to(self, used: int) -> None:
        """used = max(used, `used`): adopt a count known elsewhere (a saved ledger) without losing bytes."""
        with self._lock:
            if self._cells[self._i] < used:
                self._cells[self._i] = float(used)


def charge_all(quotas: Sequence[Quota], nbytes: int) -> bool:
    """Charge `nbytes` to every quota; True if any is spent."""
    spent = False
    for q in quotas:
        if q.charge(nbytes):
            spent = True
    return spent


class SharedLimitSet(LimitSet):
    """A LimitSet whose state, the admitted count included, is a slot of shared memory."""

    def __init__(self, limits: RateLimit | None, *, cells: MutableSequence[float], base: int, lock: Any) -> None:
        super().__init__(limits, cells=cells, base=base, lock=lock)

    def _init_active(self) -> None:
        pass  # the slot's count is the supervisor's to initialise (SlotTable.assign)

    @property
    def active(self) -> int:
        return int(self._cells[self._base + 9])

    @active.setter
    def active(self, value: int) -> None:
        self._cells[self._base + 9] = value

    @property
    def udp_flows(self) -> int:
        return int(self._cells[self._base + 10])

    @udp_flows.setter
    def udp_flows(self, value: int) -> None:
        self._cells[self._base + 10] = value


@dataclass(frozen=True)
class Admission:
    """Outcome of an admission check: `reason` is None when admitted."""

    reason: str | None


ADMITTED = Admission(None)
REFUSED_CONCURRENCY = Admission("concurrency")
REFUSED_CONNECTION_RATE = Admission("connection_rate")
REFUSED_MAX_FLOWS = Admission("max_flows")
REFUSED_QUOTA = Admission("quota")

# Admission is rare next to bytes and datagrams; one lock makes "check every
# set, then take from every set" atomic, so a refusal never leaks a token or
# a concurrency slot, and two threads cannot both take the last slot. Worker
# processes replace it with a process-shared lock (use_admission_lock).
_ADMIT_LOCK: Any = threading.Lock()


def use_admission_lock(lock: Any) -> None:
    """Make admission atomic across processes (every LimitSet of this process is shared)."""
    global _ADMIT_LOCK
    _ADMIT_LOCK = lock


def admit(limit_sets: Sequence[LimitSet], max_flows: int | None = None) -> Admission:
    """Check quota, concurrency, then connection rate, across all sets; take all or nothing.

    On success each set's active count is raised; call `release` with the
    same sets when the connection or flow ends. A connection refused for
    concurrency does not spend a connection-rate token. `max_flows`: a new
    UDP flow of the rule whose LimitSet comes first (udp_max_flows, counted
    in that set so that it holds across worker processes).
    """
    with _ADMIT_LOCK:
        if max_flows is not None and limit_sets[0].udp_flows >= max_flows:
            return REFUSED_MAX_FLOWS
        rated = False
        for ls in limit_sets:
            if ls.quota is not None and ls.quota.exhausted():
                return REFUSED_QUOTA
            if ls.max_concurrent is not None and ls.active >= ls.max_concurrent:
                return REFUSED_CONCURRENCY
            if ls.new_connections.rate is not None:
                rated = True
        if rated and not take_all([ls.new_connections for ls in limit_sets], 1.0):
            return REFUSED_CONNECTION_RATE
        for ls in limit_sets:
            ls.active += 1
        if max_flows is not None:
            limit_sets[0].udp_flows += 1
        return ADMITTED


def release(limit_sets: Sequence[LimitSet], flow: bool = False) -> None:
    """Give back the concurrency slots `admit` took (and the UDP flow, for a flow)."""
    with _ADMIT_LOCK:
        for ls in limit_sets:
            ls.active -= 1
        if flow:
            limit_sets[0].udp_flows -= 1
