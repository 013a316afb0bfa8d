"""Traffic quotas above the data plane: periods, the wall clock, saved usage, and the keeper.

The data plane counts (portunus.limits.Quota: one counter per owner, shared
by worker processes, charged per chunk and per datagram). This module
decides what the count means over time, the same way for
`portunus-standalone` and `portunus-client`:

* a period is a half-open interval [start, end) of UTC time: "daily" from
  00:00, "monthly" from `reset_day` 00:00 (the month's last day when it has
  fewer days), "never" is one period from the epoch on;
* `QuotaKeeper.tick` (about once a second) starts a new period when the
  clock crosses a boundary (the counter drops to 0: a "reset" event), notices
  a spent budget (an "exhausted" event) and saves the counts to a file, so a
  restart continues where the last run stopped. Counts only grow within a
  period: a saved or reported count is merged with max(), never added, so the
  same bytes are never counted twice.

The wall clock is `wall_time()`: time.time(), shifted by the number of
seconds in the file PORTUNUS_CLOCK_OFFSET_FILE names when that variable is
set. It exists so tests (and drills) can cross a period boundary without
waiting for midnight; production never sets it.
"""

from __future__ import annotations

import calendar
import datetime
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portunus.config import QuotaSpec

log = logging.getLogger("portunus.quota")

CLOCK_OFFSET_ENV = "PORTUNUS_CLOCK_OFFSET_FILE"
# Usage file format history:
#   1  {"format": 1, "owners": {owner: {"period_start": s, "used_bytes": n, "exhausted": bool,
#                                        "period": "monthly:1" | "daily" | "never"}}}
USAGE_FORMAT = 1
# How often the keeper looks at the counters (resets are this late at most).
TICK_S = 1.0

_DAY_S = 86400.0


def wall_time() -> float:
    """Seconds since the epoch (UTC), shifted by the test clock offset file if one is set."""
    now = time.time()
    path = os.environ.get(CLOCK_OFFSET_ENV)
    if path:
        try:
            now += float(Path(path).read_text().strip() or 0)
        except (OSError, ValueError):
            pass
    return now


def _month_start(year: int, month: int, day: int) -> float:
    """00:00 UTC of `day` in that month, or of its last day if the month is shorter."""
    last = calendar.monthrange(year, month)[1]
    return calendar.timegm((year, month, min(day, last), 0, 0, 0))


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def period_bounds(spec: QuotaSpec, now: float) -> tuple[float, float | None]:
    """[start, end) of the period that holds `now`; end None for "never"."""
    if spec.period == "never":
        return 0.0, None
    t = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if spec.period == "daily":
        start = calendar.timegm((t.year, t.month, t.day, 0, 0, 0))
        return float(start), float(start + _DAY_S)
    this = _month_start(t.year, t.month, spec.reset_day)
    if now >= this:
        year, month = _shift_month(t.year, t.month, 1)
        return float(this), float(_month_start(year, month, spec.reset_day))
    year, month = _shift_month(t.year, t.month, -1)
    return float(_month_start(year, month, spec.reset_day)), float(this)


def period_key(spec: QuotaSpec) -> str:
    """What decides the boundaries: an edit of this starts the new kind of period without a reset."""
    return f"monthly:{spec.reset_day}" if spec.period == "monthly" else spec.period


def iso(ts: float | None) -> str | None:
    """UTC ISO 8601 with a Z, or None."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Usage:
    """One owner's count in one period."""

    period_start: float
    used_bytes: int
    exhausted: bool = False
    period: str = ""  # period_key() of the spec the count runs under ("": not known yet)


def load_usage(path: Path) -> dict[str, Usage]:
    """Saved counts by owner ({} if the file does not exist); ValueError for a file we cannot read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
        fmt = data["format"]
        if fmt > USAGE_FORMAT:
            raise ValueError(f"format {fmt} is newer than this version reads ({USAGE_FORMAT})")
        out = {}
        for owner, u in data["owners"].items():
            start, used = float(u["period_start"]), int(u["used_bytes"])
            if used < 0:
                raise ValueError(f"owner {owner!r}: negative used_bytes")
            out[str(owner)] = Usage(start, used, bool(u.get("exhausted", False)), str(u.get("period", "")))
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a quota usage file: {e}") from None


def dump_usage(path: Path, usage: Mapping[str, Usage]) -> None:
    """Write the counts atomically (0600: it is the ledger of this forwarder)."""
    from portunus.control.files import write_private

    doc = {"format": USAGE_FORMAT, "owners": {
        o: {"period_start": u.period_start, "used_bytes": u.used_bytes, "exhausted": u.exhausted,
            "period": u.period}
        for o, u in sorted(usage.items())}}
    write_private(path, json.dumps(doc, indent=1).encode() + b"\n")


@dataclass(frozen=True)
class QuotaEvent:
    """Something an operator is told about: "exhausted" or "reset"."""

    kind: str
    owner: str
    used_bytes: int
    limit_bytes: int
    period_start: float


class QuotaKeeper:
    """Periods, resets and saved usage of every owner quota of one forwarder.

    `forwarder` is a Forwarder or WorkerGroup (quota_used / set_quota_used).
    Call `configure` after each apply with the owners' quota specs, and
    `tick` about once a second from one thread.
    """

    def __init__(self, forwarder: Any, path: Path | None, *, clock: Callable[[], float] = wall_time,
                 on_event: Callable[[QuotaEvent], None] | None = None) -> None:
        self.fwd = forwarder
        self.path = path
        self.clock = clock
        self.on_event = on_event
        self._lock = threading.Lock()  # tick/merge (control thread) vs status (metrics thread)
        self.specs: dict[str, QuotaSpec] = {}
        self.usage: dict[str, Usage] = {}
        self._saved: dict[str, tuple[float, int, bool, str]] = {}
        if path is not None:
            try:
                self.usage = load_usage(path)
            except ValueError as e:
                log.error("%s; starting every quota at 0 (the file is left as it is)", e)
                self.path = None  # never overwrite what we could not read
        self._saved = {o: (u.period_start, u.used_bytes, u.exhausted, u.period) for o, u in self.usage.items()}

    def configure(self, specs: Mapping[str, QuotaSpec]) -> None:
        """The owners that have quotas now; their counters start from what is known."""
        with self._lock:
            self.specs = dict(specs)
        self.tick()

    def merge(self, owner: str, period_start: float, used_bytes: int) -> None:
        """Adopt a count known elsewhere (the server's ledger) for `owner`: max() within a period,
        the newer period if they differ."""
        with self._lock:
            self._merge(owner, period_start, used_bytes)

    def _merge(self, owner: str, period_start: float, used_bytes: int) -> None:
        u = self.usage.get(owner)
        if u is None or period_start > u.period_start:
            spec = self.specs.get(owner)
            self.usage[owner] = Usage(period_start, used_bytes, period=period_key(spec) if spec else "")
            self.fwd.set_quota_used(owner, used_bytes, reset=True)
        elif period_start == u.period_start and used_bytes > u.used_bytes:
            u.used_bytes = used_bytes
            self.fwd.set_quota_used(owner, used_bytes)

    def tick(self) -> list[QuotaEvent]:
        """Roll periods, read the counters, report transitions, save; returns the events."""
        with self._lock:
            events = self._tick()
        for e in events:
            if e.kind == "reset":
                log.info('owner "%s": quota period ended with %d of %d bytes used; new period from %s',
                         e.owner, e.used_bytes, e.limit_bytes, iso(e.period_start))
            else:
                log.warning('owner "%s": traffic quota exhausted (%d of %d bytes); its connections are cut '
                            "and new ones refused until the period ends", e.owner, e.used_bytes, e.limit_bytes)
            if self.on_event is not None:
                self.on_event(e)
        self.save()
        return events

    def _tick(self) -> list[QuotaEvent]:
        now = self.clock()
        counters = self.fwd.quota_used()
        events: list[QuotaEvent] = []
        for owner, spec in self.specs.items():
            start, _end = period_bounds(spec, now)
            key = period_key(spec)
            u = self.usage.get(owner)
            if u is None:
                u = self.usage[owner] = Usage(start, 0, period=key)
            elif u.period != key:
                # The period was edited (daily -> monthly, another reset day): the new kind of
                # period starts now and the count carries over; an edit never clears usage.
                u.period_start, u.period = max(start, u.period_start), key
            elif start > u.period_start:
                events.append(QuotaEvent("reset", owner, u.used_bytes, spec.bytes, start))
                u.period_start, u.used_bytes, u.exhausted = start, 0, False
                self.fwd.set_quota_used(owner, 0, reset=True)
                counters[owner] = 0
            used = counters.get(owner)
            if used is None:
                continue  # not applied yet
            if used < u.used_bytes:
                # A fresh counter (restart, new slot) below what we know: raise it.
                self.fwd.set_quota_used(owner, u.used_bytes)
            else:
                u.used_bytes = used
            exhausted = u.used_bytes >= spec.bytes
            if exhausted and not u.exhausted:
                events.append(QuotaEvent("exhausted", owner, u.used_bytes, spec.bytes, u.period_start))
            u.exhausted = exhausted
        return events

    def save(self) -> None:
        """Write the usage file if a count changed since the last write."""
        if self.path is None:
            return
        with self._lock:
            state = {o: (u.period_start, u.used_bytes, u.exhausted, u.period) for o, u in self.usage.items()}
            if state == self._saved:
                return
            snapshot = {o: Usage(*t) for o, t in state.items()}
        try:
            dump_usage(self.path, snapshot)
        except OSError as e:
            log.error("cannot save quota usage to %s: %s (a restart would lose the usage since the last "
                      "save)", self.path, e.strerror or e)
            return
        self._saved = state

    def status(self) -> dict[str, dict[str, Any]]:
        """{owner: limit, used, exhausted, period start/end} for stats and metrics."""
        now = self.clock()
        out = {}
        with self._lock:
            specs = sorted(self.specs.items())
            known = {o: u.used_bytes for o, u in self.usage.items()}
        for owner, spec in specs:
            start, end = period_bounds(spec, now)
            used = known.get(owner, 0)
            out[owner] = {"limit_bytes": spec.bytes, "used_bytes": used, "exhausted": used >= spec.bytes,
                          "period": spec.period, "period_start": iso(start) if spec.period != "never" else None,
                          "period_end": iso(end)}
        return out
