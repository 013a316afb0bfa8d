"""Test clocks. `ManualClock`: a callable clock a unit test sets by hand (for code that takes a
`clock` argument). `TestClock`: the test clock of portunus.quota.wall_time, a file of seconds that
the processes add to time.time().

Processes read the file at every look at the clock, so a test sets it well
before midnight UTC while it sets things up (however slow the host), then
moves it to a few seconds before midnight to watch the daily period roll.
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path

from portunus.quota import CLOCK_OFFSET_ENV


class ManualClock:
    """A clock for code that takes a `clock` callable: it reads `now`, which the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestClock:
    """An offset file aimed at one UTC midnight (the next one when the test began)."""

    __test__ = False  # not a pytest test class

    def __init__(self, path: Path) -> None:
        self.path = path
        t = time.gmtime()
        self.midnight = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86400.0
        self.set_before_midnight(3600.0)

    @property
    def env(self) -> dict[str, str]:
        return {CLOCK_OFFSET_ENV: str(self.path)}

    def set_before_midnight(self, seconds: float) -> None:
        """From now on the processes' clock reads `seconds` before the midnight."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(self.midnight - seconds - time.time()))
        tmp.replace(self.path)  # whole: a reader never sees a half-written number
