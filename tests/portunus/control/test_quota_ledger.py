"""The server's quota ledger on a real state.db, with a test clock: merges, periods, audit events."""

from __future__ import annotations

import calendar

from portunus.config import QuotaSpec
from portunus.control.quota_ledger import MAX_CLOCK_SKEW_S, QuotaLedger
from portunus.control.store import Store
from portunus.control.tenants_db import QuotaRow, TenantStore
from tests.support.clock import ManualClock

DAY_S = 86400.0
# Noon UTC on 2026-12-01: the daily period runs from midnight to the next midnight.
NOON = float(calendar.timegm((2026, 12, 1, 12, 0, 0)))
MIDNIGHT = float(calendar.timegm((2026, 12, 1, 0, 0, 0)))


def setup(store: Store, nbytes: int = 1000) -> tuple[QuotaLedger, ManualClock, int, int]:
    clock = ManualClock(NOON)
    ledger = QuotaLedger(store, clock)
    user = TenantStore(store).add_user("alice", "user", None, "test")
    client = store.create_client("edge", "127.0.0.1")
    ledger.set(user.id, client.id, QuotaSpec(nbytes, "daily"))
    return ledger, clock, user.id, client.id


def row(store: Store, uid: int, cid: int) -> QuotaRow:
    r = TenantStore(store).quota(uid, cid)
    assert r is not None
    return r


def audit(store: Store, action: str) -> list[dict]:
    return [e.detail or {} for e in store.list_audit(limit=1000) if e.action == action]


def test_reports_merge_with_max_and_exhaustion_is_audited_once(store: Store) -> None:
    ledger, _, uid, cid = setup(store)
    first = row(store, uid, cid)
    assert (first.period_start, first.used_bytes) == (MIDNIGHT, 0)
    ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT, "used_bytes": 600}})
    # A client restarted without its usage file reports less: the ledger keeps the larger count.
    ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT, "used_bytes": 100}})
    ledger.on_report(cid, {"user:nobody": {"period_start": MIDNIGHT, "used_bytes": 10**9}})  # not a quota here
    assert ledger.status(row(store, uid, cid))["used_bytes"] == 600
    for used in (1000, 1200):
        ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT, "used_bytes": used}})
    st = ledger.status(row(store, uid, cid))
    assert (st["used_bytes"], st["remaining_bytes"], st["exhausted"]) == (1200, 0, True)
    assert audit(store, "quota.exhausted") == [{"used_bytes": 1000, "limit_bytes": 1000}]


def test_periods_roll_on_the_clock_and_late_or_skewed_reports_are_ignored(store: Store) -> None:
    ledger, clock, uid, cid = setup(store)
    ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT, "used_bytes": 700}})
    assert ledger.tick() == []
    clock.now = MIDNIGHT + DAY_S + 1
    (rolled,) = ledger.tick()
    assert (rolled.period_start, rolled.used_bytes, rolled.exhausted_at) == (MIDNIGHT + DAY_S, 0, None)
    assert audit(store, "quota.reset")[0]["period_ended_with_bytes"] == 700
    # The old period's last report arrives late: it does not come back into the new period.
    ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT, "used_bytes": 900}})
    assert row(store, uid, cid).used_bytes == 0
    # A client whose clock is far ahead reports a period that has not begun: ignored.
    ahead = MIDNIGHT + 3 * DAY_S
    assert ahead > clock.now + MAX_CLOCK_SKEW_S
    assert ledger.on_report(cid, {"user:alice": {"period_start": ahead, "used_bytes": 5}}) == []
    # Nor is a start that is no period boundary of this quota.
    assert ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT + DAY_S + 60, "used_bytes": 5}}) == []
    assert row(store, uid, cid).used_bytes == 0
    # A client a little ahead, already past the next midnight, rolls the ledger with its report.
    clock.now = MIDNIGHT + 2 * DAY_S - 30
    (rolled,) = ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT + 2 * DAY_S, "used_bytes": 42}})
    assert rolled.period_start == MIDNIGHT + 2 * DAY_S
    assert row(store, uid, cid).used_bytes == 42
    assert len(audit(store, "quota.reset")) == 2


def test_editing_a_quota_keeps_the_count_and_rearms_the_exhaustion_event(store: Store) -> None:
    ledger, _, uid, cid = setup(store)
    ledger.on_report(cid, {"user:alice": {"period_start": MIDNIGHT, "used_bytes": 1000}})
    raised = ledger.set(uid, cid, QuotaSpec(5000, "daily"))
    assert (raised.used_bytes, raised.exhausted_at) == (1000, None)
    # Another kind of period starts its own period, with the count carried over.
    monthly = ledger.set(uid, cid, QuotaSpec(5000, "monthly", 1))
    assert (monthly.period_start, monthly.used_bytes) == (MIDNIGHT, 1000)  # 1 December is also the month's start
    never = ledger.set(uid, cid, QuotaSpec(5000, "never"))
    assert (never.period_start, never.used_bytes) == (0.0, 1000)
    ledger.on_report(cid, {"user:alice": {"period_start": 0.0, "used_bytes": 5000}})
    assert len(audit(store, "quota.exhausted")) == 2  # spent again after the raise: a second event
    assert ledger.status(never)["period_end"] is None
