"""Quota periods (portunus.quota.period_bounds), the keeper's merge rules, and limits.Quota."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from portunus.config import QuotaSpec
from portunus.limits import ADMITTED, REFUSED_QUOTA, LimitSet, admit, release
from portunus.quota import QuotaKeeper, load_usage, period_bounds


def utc(*args: int) -> float:
    return float(calendar.timegm((*args, 0, 0, 0)[:6]))


@pytest.mark.parametrize(("now", "day", "start", "end"), [
    (utc(2026, 3, 15, 12), 1, utc(2026, 3, 1), utc(2026, 4, 1)),
    (utc(2026, 3, 1), 1, utc(2026, 3, 1), utc(2026, 4, 1)),          # the boundary belongs to the new period
    (utc(2026, 3, 1) - 1, 1, utc(2026, 2, 1), utc(2026, 3, 1)),
    (utc(2026, 3, 10), 15, utc(2026, 2, 15), utc(2026, 3, 15)),
    (utc(2026, 2, 28, 1), 31, utc(2026, 2, 28), utc(2026, 3, 31)),   # short month: its last day
    (utc(2026, 1, 30), 31, utc(2025, 12, 31), utc(2026, 1, 31)),     # across the year
    (utc(2028, 2, 29, 5), 30, utc(2028, 2, 29), utc(2028, 3, 30)),   # leap year
])
def test_monthly_periods(now: float, day: int, start: float, end: float) -> None:
    assert period_bounds(QuotaSpec(1, "monthly", day), now) == (start, end)


def test_daily_and_never_periods() -> None:
    assert period_bounds(QuotaSpec(1, "daily"), utc(2026, 12, 31, 23) + 3599) == (utc(2026, 12, 31), utc(2027, 1, 1))
    assert period_bounds(QuotaSpec(1, "daily"), utc(2027, 1, 1)) == (utc(2027, 1, 1), utc(2027, 1, 2))
    assert period_bounds(QuotaSpec(1, "never"), utc(2030, 5, 5)) == (0.0, None)


def test_quota_charges_refuses_and_keeps_its_count_when_lifted() -> None:
    owner = LimitSet()
    owner.set_quota(100)
    quota = owner.quota
    assert quota is not None
    assert not quota.charge(60)
    assert admit([owner]) is ADMITTED
    release([owner])
    assert quota.charge(40)  # exactly the budget: spent
    assert admit([owner]) is REFUSED_QUOTA
    owner.set_quota(None)  # lifted: new connections pass, live relays holding it are no longer cut
    assert admit([owner]) is ADMITTED and not quota.charge(10**9)
    release([owner])
    owner.set_quota(200)  # back: the count was kept, nothing was reset
    assert owner.quota is quota and owner.quota_used == 100 + 10**9 and quota.exhausted()


class FakeForwarder:
    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def quota_used(self) -> dict[str, int]:
        return dict(self.used)

    def set_quota_used(self, owner: str, used: int, *, reset: bool = False) -> None:
        if owner in self.used:
            self.used[owner] = used if reset else max(used, self.used[owner])


def test_keeper_merges_with_max_rolls_periods_and_saves(tmp_path: Path) -> None:
    now = [utc(2026, 5, 31, 23) + 3590]
    fwd = FakeForwarder()
    fwd.used["a"] = 0
    events = []
    keeper = QuotaKeeper(fwd, tmp_path / "u.json", clock=lambda: now[0], on_event=events.append)
    keeper.configure({"a": QuotaSpec(1000, "daily")})
    fwd.used["a"] = 400
    keeper.tick()
    keeper.merge("a", utc(2026, 5, 31), 300)   # an older count of the same period: no change
    assert fwd.used["a"] == 400
    keeper.merge("a", utc(2026, 5, 31), 900)   # a larger one (e.g. the server's ledger): adopted
    assert fwd.used["a"] == 900
    keeper.merge("a", utc(2026, 5, 30), 5000)  # a past period: ignored
    fwd.used["a"] = 1000
    keeper.tick()
    assert [e.kind for e in events] == ["exhausted"]
    assert load_usage(tmp_path / "u.json")["a"].used_bytes == 1000
    now[0] += 20  # past midnight
    keeper.tick()
    assert [e.kind for e in events] == ["exhausted", "reset"] and events[1].used_bytes == 1000
    assert fwd.used["a"] == 0
    saved = load_usage(tmp_path / "u.json")["a"]
    assert (saved.period_start, saved.used_bytes, saved.exhausted) == (utc(2026, 6, 1), 0, False)
    # A restart (fresh counter at 0) is raised to the saved count at the first tick.
    fwd2 = FakeForwarder()
    fwd2.used["a"] = 0
    (tmp_path / "u.json").write_text((tmp_path / "u.json").read_text().replace('"used_bytes": 0', '"used_bytes": 77'))
    k2 = QuotaKeeper(fwd2, tmp_path / "u.json", clock=lambda: now[0])
    k2.configure({"a": QuotaSpec(1000, "daily")})
    assert fwd2.used["a"] == 77


def test_editing_the_period_never_clears_usage(tmp_path: Path) -> None:
    now = [utc(2026, 5, 20, 12)]
    fwd = FakeForwarder()
    fwd.used["a"] = 0
    events = []
    keeper = QuotaKeeper(fwd, tmp_path / "u.json", clock=lambda: now[0], on_event=events.append)
    keeper.configure({"a": QuotaSpec(1000, "monthly", 1)})
    fwd.used["a"] = 600
    keeper.tick()
    keeper.configure({"a": QuotaSpec(1000, "daily")})      # a new kind of period starts now ...
    keeper.configure({"a": QuotaSpec(1000, "monthly", 15)})  # ... and another: the count carries over
    assert fwd.used["a"] == 600 and [e.kind for e in events] == []
    saved = load_usage(tmp_path / "u.json")["a"]
    assert (saved.period_start, saved.used_bytes, saved.period) == (utc(2026, 5, 20), 600, "monthly:15")
    now[0] = utc(2026, 6, 15)  # the edited period's own boundary resets as usual
    keeper.tick()
    assert [e.kind for e in events] == ["reset"] and fwd.used["a"] == 0
