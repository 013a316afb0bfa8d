"""Token buckets, throttle groups, policing and admission (portunus/limits.py).

Bucket arithmetic is checked on a simulated clock, so the properties hold
exactly and the tests take no wall time; admission races run on real threads.
The receiver-side behaviour through a real forwarder is in test_ratelimit.py.
"""

from __future__ import annotations

import heapq
import threading

import pytest

from portunus.config import RateLimit
from portunus.limits import (
    CHUNKS_PER_SEC,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    LimitSet,
    ThrottleGroup,
    TokenBucket,
    admit,
    police,
    release,
)

KIB = 1024
MIB = 1024 * 1024


class SimClock:
    """A clock that only moves when someone sleeps on it (or the test advances it)."""

    def __init__(self, start: float = 1000.0, oversleep_s: float = 0.0) -> None:
        self.now = start
        self.oversleep_s = oversleep_s  # added to every sleep, like a busy scheduler
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds + self.oversleep_s

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bucket(rate, burst=None, clock=None, **kw) -> TokenBucket:
    clock = clock or SimClock()
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep, **kw)


def pump(b: TokenBucket, clock: SimClock, seconds: float) -> list[tuple[float, int]]:
    """Run a saturated copy pump on `b` for `seconds`; return (send time, cumulative bytes)."""
    end = clock.now + seconds
    sent = 0
    out = []
    while clock.now < end:
        n = b.max_chunk()
        b.consume(n)
        sent += n
        out.append((clock.now, sent))
    return out


# ---------------------------------------------------------------- TokenBucket


def test_bandwidth_bucket_starts_empty_at_first_use_not_at_creation():
    clock = SimClock()
    b = bucket(64 * KIB, clock=clock)
    clock.advance(30.0)  # created long before the first transfer: still no credit
    chunk = b.max_chunk()
    b.consume(chunk)
    assert clock.slept == [pytest.approx(chunk / (64 * KIB))]


def test_first_second_of_a_fresh_transfer_is_exactly_the_cap():
    clock = SimClock()
    rate = 1 * MIB
    b = bucket(rate, clock=clock)
    t0 = clock.now
    for t, sent in pump(b, clock, 5.0):
        # Tokens are taken before sending: never ahead of the cap, at most one chunk behind.
        assert sent <= rate * (t - t0) + 1e-6
        assert sent >= rate * (t - t0) - b.max_chunk()


def test_burst_after_idle_is_bounded_by_the_configured_burst():
    clock = SimClock()
    rate, burst = 1 * MIB, 256 * KIB
    b = bucket(rate, burst, clock=clock)
    b.consume(1)
    clock.advance(60.0)  # a long idle refills to the burst, not to 60 s of rate
    t0 = clock.now
    for t, sent in pump(b, clock, 3.0):
        assert sent <= burst + rate * (t - t0) + 1e-6
    assert b.tokens() <= burst


def test_default_burst_is_one_second_of_rate():
    clock = SimClock()
    b = bucket(64 * KIB, clock=clock)
    b.consume(1)
    clock.advance(10.0)
    assert b.tokens() == pytest.approx(64 * KIB)


@pytest.mark.parametrize("rate", [64 * KIB, 1 * MIB, 10 * MIB])
def test_no_drift_when_every_sleep_overshoots(rate):
    # 2 ms late on every 20 ms sleep (10%): the balance refills meanwhile,
    # so the long-run rate still equals the cap.
    clock = SimClock(oversleep_s=0.002)
    b = bucket(rate, clock=clock)
    t0 = clock.now
    samples = pump(b, clock, 100.0)
    t_end, sent = samples[-1]
    assert sent / (t_end - t0) == pytest.approx(rate, rel=0.002)


def test_chunk_size_follows_the_rate():
    assert bucket(64 * KIB).max_chunk() == 64 * KIB // CHUNKS_PER_SEC
    assert bucket(1000).max_chunk() == MIN_CHUNK_BYTES
    assert bucket(100 * MIB).max_chunk() == MAX_CHUNK_BYTES
    assert bucket(None).max_chunk() == MAX_CHUNK_BYTES
    assert bucket(1 * MIB, burst=4000).max_chunk() == 4000  # never more than the burst


def test_unlimited_bucket_never_sleeps():
    clock = SimClock()
    b = bucket(None, clock=clock)
    for _ in range(1000):
        b.consume(MAX_CHUNK_BYTES)
    assert clock.slept == []
    assert b.try_take(1e12)


def test_lowering_the_rate_keeps_debt_duration_not_bytes():
    clock = SimClock()
    b = bucket(10 * MIB, clock=clock)
    wait = b.reserve(b.max_chunk())  # 20 ms of debt at 10 MiB/s
    b.update(64 * KIB)
    # A new chunk at 64 KiB/s waits the old 20 ms plus its own time, not the
    # 3.2 s that 200 KiB of debt would take to repay at the new rate.
    chunk = b.max_chunk()
    assert b.reserve(chunk) == pytest.approx(wait + chunk / (64 * KIB))


def test_raising_the_rate_applies_to_the_next_chunk():
    clock = SimClock()
    b = bucket(64 * KIB, clock=clock)
    t0 = clock.now
    pump(b, clock, 2.0)
    b.update(1 * MIB)
    t1 = clock.now
    samples = pump(b, clock, 2.0)
    rate = samples[-1][1] / (samples[-1][0] - t1)
    assert rate == pytest.approx(1 * MIB, rel=0.03)
    assert t1 - t0 == pytest.approx(2.0, abs=0.05)


def test_credit_keeps_its_byte_count_across_a_rate_change():
    clock = SimClock()
    b = bucket(64 * KIB, clock=clock)
    b.consume(1)
    clock.advance(10.0)  # full: 64 KiB of credit
    b.update(10 * MIB)
    assert b.tokens() == pytest.approx(64 * KIB, rel=1e-6)  # not 10 MiB
    b.update(1 * MIB, 1000)
    assert b.tokens() == pytest.approx(1000)  # clamped to the new burst


def test_a_cap_added_later_starts_empty_and_a_removed_cap_releases_at_once():
    clock = SimClock()
    b = bucket(None, clock=clock)
    clock.advance(100.0)
    b.update(64 * KIB)
    assert b.reserve(6400) == pytest.approx(6400 / (64 * KIB))
    b.update(None)
    assert b.reserve(10 * MIB) == 0.0


def test_connection_bucket_starts_full_and_refills():
    clock = SimClock()
    b = bucket(2.0, 5, clock=clock, start_full=True)
    assert [b.try_take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.advance(0.49)
    assert not b.try_take()
    clock.advance(0.02)  # 0.51 s at 2/s: one token
    assert b.try_take()
    assert not b.try_take()


def test_bucket_is_thread_safe_under_contention():
    b = TokenBucket(1e9, 1e9, start_full=True)  # real clock; tokens never the limit
    taken = []

    def worker():
        n = 0
        for _ in range(20000):
            if b.try_take(1):
                n += 1
        taken.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 80000


# ---------------------------------------------------------------- ThrottleGroup


def test_group_waits_for_the_slowest_bucket_not_the_sum():
    clock = SimClock()
    rule = bucket(1 * MIB, clock=clock)
    owner = bucket(1 * MIB, clock=clock)
    group = ThrottleGroup([rule, owner], sleep=clock.sleep)
    t0 = clock.now
    sent = 0
    while clock.now - t0 < 5.0:
        n = group.max_chunk()
        group.consume(n)
        sent += n
    assert sent / (clock.now - t0) == pytest.approx(1 * MIB, rel=0.01)


def test_group_is_bound_by_the_lower_of_rule_and_owner():
    clock = SimClock()
    group = ThrottleGroup([bucket(10 * MIB, clock=clock), bucket(1 * MIB, clock=clock)], sleep=clock.sleep)
    assert group.max_chunk() == 1 * MIB // CHUNKS_PER_SEC
    t0 = clock.now
    sent = 0
    while clock.now - t0 < 5.0:
        group.consume(group.max_chunk())
        sent += group.max_chunk()
    assert sent / (clock.now - t0) == pytest.approx(1 * MIB, rel=0.01)


def test_two_connections_sharing_an_owner_bucket_get_equal_shares():
    """Discrete-event run of two saturated pumps on one owner bucket for 10 s."""
    clock = SimClock()
    owner = bucket(1 * MIB, clock=clock)
    groups = [ThrottleGroup([bucket(None, clock=clock), owner]) for _ in range(2)]
    sent = [0, 0]
    ready = [(clock.now, 0), (clock.now + 0.0003, 1)]  # (time the pump asks next, which)
    end = clock.now + 10.0
    while ready:
        t, i = heapq.heappop(ready)
        if t >= end:
            continue
        clock.now = t
        n = groups[i].max_chunk()
        wait = max(b.reserve(n) for b in groups[i].buckets)
        sent[i] += n
        heapq.heappush(ready, (t + wait + 0.0001, i))
    assert sum(sent) == pytest.approx(10 * MIB, rel=0.01)
    assert min(sent) / max(sent) > 0.98


# ---------------------------------------------------------------- police (UDP)


def test_police_takes_from_every_bucket_or_from_none():
    clock = SimClock()
    rule = bucket(10 * KIB, clock=clock, start_full=True)
    owner = bucket(2 * KIB, clock=clock, start_full=True)
    assert police([rule, owner], 1500)
    assert police([rule, owner], 1500)  # owner had 548: passes, owner now 952 in debt
    assert not police([rule, owner], 1500)
    assert rule.tokens() == pytest.approx(10 * KIB - 3000)  # the refusal took nothing
    clock.advance(0.5)  # owner +1024: out of debt
    assert police([rule, owner], 1500)


def test_police_passes_the_first_datagram_of_a_cold_bucket_then_holds_the_cap():
    clock = SimClock()
    b = bucket(10_000, clock=clock)  # starts empty
    assert police([b], 1400)  # not in debt: passes, 1400 bytes of debt
    assert not police([b], 1400)
    clock.advance(0.139)
    assert not police([b], 1400)
    clock.advance(0.002)  # debt repaid after 0.14 s
    assert police([b], 1400)


def test_police_with_a_burst_smaller_than_a_datagram_still_passes_at_the_cap():
    clock = SimClock()
    b = bucket(10_000, 500, clock=clock)
    passed = 0
    for _ in range(10_000):  # offered 1400 B every 10 ms = 140 kB/s for 100 s
        if police([b], 1400):
            passed += 1400
        clock.advance(0.01)
    assert passed == pytest.approx(10_000 * 100, rel=0.02)


def test_police_over_time_matches_the_cap():
    clock = SimClock()
    b = bucket(100_000, clock=clock)
    passed = 0
    for _ in range(200_000):  # 1 datagram every 50 us = 20 MB/s offered for 10 s
        if police([b], 1000):
            passed += 1000
        clock.advance(0.00005)
    assert passed == pytest.approx(100_000 * 10, rel=0.002)


def test_police_without_caps_allocates_nothing_and_passes():
    assert police([TokenBucket(None), TokenBucket(None)], 65000)
    assert police([], 1)


# ---------------------------------------------------------------- LimitSet and admission


def test_update_keeps_bucket_objects_so_live_connections_see_new_caps():
    ls = LimitSet(RateLimit(bandwidth_in_bps=1000))
    bw_in, bw_out, conns = ls.bandwidth_in, ls.bandwidth_out, ls.new_connections
    ls.update(RateLimit(bandwidth_in_bps=5000, bandwidth_out_bps=7000, new_connections_per_sec=3.0))
    assert (ls.bandwidth_in, ls.bandwidth_out, ls.new_connections) == (bw_in, bw_out, conns)
    assert (bw_in.rate, bw_out.rate, conns.rate, conns.burst) == (5000, 7000, 3.0, 3.0)
    ls.update(RateLimit())
    assert bw_in.rate is None and not ls.has_bandwidth_cap


def test_fractional_connection_rate_still_admits_one():
    ls = LimitSet(RateLimit(new_connections_per_sec=0.2))
    assert ls.new_connections.burst == 1.0
    assert admit([ls]).reason is None
    assert admit([ls]).reason == "connection_rate"


def test_concurrency_refuses_exactly_the_excess_and_release_frees_a_slot():
    ls = LimitSet(RateLimit(concurrent_connections=3))
    verdicts = [admit([ls]).reason for _ in range(5)]
    assert verdicts == [None, None, None, "concurrency", "concurrency"]
    release([ls])
    assert admit([ls]).reason is None
    assert ls.active == 3


def test_connection_rate_refuses_exactly_the_excess():
    ls = LimitSet(RateLimit(new_connections_per_sec=0.1, new_connections_burst=4))
    verdicts = [admit([ls]).reason for _ in range(10)]
    assert verdicts == [None] * 4 + ["connection_rate"] * 6
    assert ls.active == 4


def test_refusal_leaks_neither_tokens_nor_slots():
    rule = LimitSet(RateLimit(new_connections_per_sec=0.01, new_connections_burst=2))
    owner = LimitSet(RateLimit(concurrent_connections=1))
    assert admit([rule, owner]).reason is None
    # Owner full: refused for concurrency, and the rule's rate token is kept.
    assert admit([rule, owner]).reason == "concurrency"
    assert rule.active == 1
    release([rule, owner])
    assert admit([rule, owner]).reason is None  # the second token is still there
    release([rule, owner])
    assert admit([rule, owner]).reason == "connection_rate"
    assert (rule.active, owner.active) == (0, 0)


def test_owner_concurrency_is_shared_by_its_rules():
    owner = LimitSet(RateLimit(concurrent_connections=2))
    a, b = LimitSet(), LimitSet()
    assert admit([a, owner]).reason is None
    assert admit([b, owner]).reason is None
    assert admit([a, owner]).reason == "concurrency"
    assert admit([b, owner]).reason == "concurrency"
    release([b, owner])
    assert admit([a, owner]).reason is None


def test_admission_race_admits_exactly_the_limit():
    ls = LimitSet(RateLimit(concurrent_connections=50))
    results: list[str | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(25):
            r = admit([ls]).reason
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(None) == 50
    assert results.count("concurrency") == 150
    assert ls.active == 50
