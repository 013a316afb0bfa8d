"""The server's traffic-quota ledger: one budget per (user, client), kept in state.db.

The client enforces (its data plane counts every byte of the user's owner
`user:NAME` and cuts at the budget); the server keeps the books:

* each rule set carries the client's quotas with the ledger's period start
  and used count, so a client that restarted, or lost its usage file, starts
  from the ledger (the client merges with max(): nothing is counted twice);
* the client reports {owner: period_start, used_bytes} with its stats; the
  ledger takes max(ledger, report) within the period. An offline client
  keeps counting and reconciles with its first report after it comes back;
* `tick` rolls periods on the server's clock (portunus.quota.wall_time) and
  writes "quota.reset" to the audit log; a report that shows the budget spent
  writes "quota.exhausted". A report from an older period is late and ignored;
  one from a newer period (the client's clock is ahead) rolls the ledger if
  that period has begun within MAX_CLOCK_SKEW_S.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from portunus.config import QuotaSpec
from portunus.control.store import Store
from portunus.control.tenants_db import QuotaRow, TenantStore, owner_name
from portunus.quota import iso, period_bounds, wall_time

log = logging.getLogger("portunus.server.quota")

# A client's clock may run ahead of the server's by this much before its new
# period is believed (NTP keeps real hosts within milliseconds).
MAX_CLOCK_SKEW_S = 300.0
AUDIT_ACTOR = "quota-ledger"


def quota_payload(row: QuotaRow) -> dict[str, Any]:
    """What a rule set tells the client about one quota."""
    return {**row.spec.to_dict(), "period_start": row.period_start, "used_bytes": row.used_bytes}


class QuotaLedger:
    """Quota rows of state.db, their periods, and the clients' usage reports (event-loop thread only)."""

    def __init__(self, store: Store, clock: Callable[[], float] = wall_time) -> None:
        self.store = store
        self.tenants = TenantStore(store)
        self.clock = clock

    # ------------------------------------------------------------ operator side

    def set(self, user_id: int, client_id: int, spec: QuotaSpec) -> QuotaRow:
        """Create or change a quota. A change keeps the count of the current period."""
        start, _ = period_bounds(spec, self.clock())
        old = self.tenants.quota(user_id, client_id)
        self.tenants.set_quota(user_id, client_id, spec, start)
        if old is not None and start != old.period_start:
            # A new period kind or reset day starts its own period; the count carries over so an
            # edit is never a way to clear usage.
            self.tenants.record_usage(user_id, client_id, start, old.used_bytes, old.exhausted_at, None)
        row = self.tenants.quota(user_id, client_id)
        assert row is not None
        return row

    def status(self, row: QuotaRow) -> dict[str, Any]:
        _, end = period_bounds(row.spec, row.period_start) if row.spec.period != "never" else (0.0, None)
        return {"user_id": row.user_id, "username": row.username, "client": row.client, "owner": row.owner,
                **row.spec.to_dict(), "limit_bytes": row.spec.bytes, "used_bytes": row.used_bytes,
                "remaining_bytes": max(0, row.spec.bytes - row.used_bytes),
                "exhausted": row.used_bytes >= row.spec.bytes,
                "period_start": iso(row.period_start) if row.spec.period != "never" else None,
                "period_end": iso(end), "exhausted_at": iso(row.exhausted_at),
                "last_report_at": iso(row.reported_at)}

    def payload(self, client_id: int) -> dict[str, dict[str, Any]]:
        return {row.owner: quota_payload(row) for row in self.tenants.quotas(client_id)}

    # ------------------------------------------------------------ clock and reports

    def tick(self) -> list[QuotaRow]:
        """Start new periods whose time has come; returns the rows that were reset (to push)."""
        now = self.clock()
        reset = []
        for row in self.tenants.quotas():
            start, _ = period_bounds(row.spec, now)
            if start > row.period_start:
                reset.append(self._reset(row, start))
        return reset

    def _reset(self, row: QuotaRow, start: float) -> QuotaRow:
        self.tenants.record_usage(row.user_id, row.client_id, start, 0, None, None)
        self.store.add_audit(AUDIT_ACTOR, None, "quota.reset", f"quota of user {row.username} on client {row.client}",
                             {"period_ended_with_bytes": row.used_bytes, "limit_bytes": row.spec.bytes,
                              "new_period_start": iso(start)}, "ok", user_id=row.user_id)
        log.info('quota of user "%s" on client "%s": period ended with %d of %d bytes; new period from %s',
                 row.username, row.client, row.used_bytes, row.spec.bytes, iso(start))
        new = self.tenants.quota(row.user_id, row.client_id)
        assert new is not None
        return new

    def on_report(self, client_id: int, reported: dict[str, dict[str, Any]]) -> list[QuotaRow]:
        """Merge a client's {owner: {period_start, used_bytes}}; returns rows whose period rolled."""
        rows = {row.owner: row for row in self.tenants.quotas(client_id)}
        now = self.clock()
        rolled = []
        for owner, rep in reported.items():
            row = rows.get(owner)
            if row is None:
                continue
            start, used = float(rep["period_start"]), int(rep["used_bytes"])
            if start < row.period_start:
                continue  # the end of a period that is over: the ledger moved on
            if start > row.period_start:
                own_start, _ = period_bounds(row.spec, start)
                if own_start != start or start > now + MAX_CLOCK_SKEW_S:
                    log.warning('client "%s" reports quota period %s for %s; not a period this quota has '
                                "begun (clock skew?): ignored", row.client, iso(start), owner)
                    continue
                row = self._reset(row, start)
                rolled.append(row)
            exhausted_at = row.exhausted_at
            if used >= row.spec.bytes and exhausted_at is None:
                exhausted_at = now
                self.store.add_audit(f"client:{row.client}", None, "quota.exhausted",
                                     f"quota of user {row.username} on client {row.client}",
                                     {"used_bytes": used, "limit_bytes": row.spec.bytes}, "ok", user_id=row.user_id)
                log.warning('quota of user "%s" on client "%s" exhausted: %d of %d bytes', row.username,
                            row.client, used, row.spec.bytes)
            self.tenants.record_usage(row.user_id, row.client_id, row.period_start, max(used, row.used_bytes),
                                      exhausted_at, now)
        return rolled

    def metrics(self) -> dict[tuple[str, str], dict[str, Any]]:
        """{(user, client): limit, used, exhausted} for the metrics endpoint."""
        return {(row.username, row.client): {"limit_bytes": row.spec.bytes, "used_bytes": row.used_bytes,
                                             "exhausted": row.used_bytes >= row.spec.bytes}
                for row in self.tenants.quotas()}


__all__ = ["QuotaLedger", "owner_name", "quota_payload"]
