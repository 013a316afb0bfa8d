"""Connection rate: completed short request/response connections per second per path.

The `direct` path (client to echo server, no forwarder) is the ceiling: the
rate the probe client and the echo server reach on this host. A path near
the ceiling is limited by the client/server, not by itself, and cannot be
ranked above it. Forwarder CPU per connection = forwarder CPU seconds over
the whole probe run / every connection it completed (warm-up included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.errors import ProbeError
from harness.records.probe_json import parse_connrate_json
from harness.records.results import Record
from harness.summarise.stats import Summary, ratio_pct, summarise

CEILING = "direct"
# A path at or above this share of the ceiling's median is "at the ceiling".
AT_CEILING_PCT = 90.0


@dataclass(frozen=True)
class ConnrateRow:
    path: str
    conn_per_s: Summary
    pct_of_ceiling: float | None  # median / the ceiling's median * 100
    errors: int  # failed connections in the measured windows of every ok round
    cpu_us_per_conn: Summary  # forwarder CPU per completed connection; n == 0 for kernel paths
    n_failed: int


@dataclass(frozen=True)
class ConnrateSummary:
    rows: tuple[ConnrateRow, ...]
    ceiling: ConnrateRow | None
    notes: tuple[str, ...]

    def get(self, path: str) -> ConnrateRow | None:
        return next((r for r in self.rows if r.path == path), None)


def cpu_us_per_conn(r: Record) -> float | None:
    """Forwarder CPU (µs) per connection completed during the whole probe run."""
    if r.forwarder_cpu_s is None or not r.probe_raw:
        return None
    try:
        total = sum(parse_connrate_json(r.probe_raw).per_second)
    except (ProbeError, KeyError, ValueError):
        return None
    return r.forwarder_cpu_s / total * 1e6 if total else None


def summarise_connrate(records: Iterable[Record], path_order: Sequence[str] = ()) -> ConnrateSummary:
    """One row per path (path_order first), over the connrate records."""
    rows_in = [r for r in records if r.driver == "connrate"]
    order = list(dict.fromkeys([p for p in path_order if any(r.path == p for r in rows_in)]
                               + [r.path for r in rows_in]))
    base = [(path, [r for r in rows_in if r.path == path]) for path in order]
    medians = {path: summarise(r.conn_per_s for r in mine if r.ok).median for path, mine in base}
    rows = []
    for path, mine in base:
        ok = [r for r in mine if r.ok]
        rows.append(ConnrateRow(
            path=path, conn_per_s=summarise(r.conn_per_s for r in ok),
            pct_of_ceiling=ratio_pct(medians.get(path), medians.get(CEILING)),
            errors=sum(r.conn_errors or 0 for r in ok),
            cpu_us_per_conn=summarise(cpu_us_per_conn(r) for r in ok), n_failed=len(mine) - len(ok)))
    ceiling = next((r for r in rows if r.path == CEILING), None)
    notes = []
    if ceiling is None:
        notes.append(f"no `{CEILING}` path in this run: the client's own ceiling is unknown, so no rate "
                     "here is shown to be the forwarder's limit")
    for r in rows:
        if r is not ceiling and r.pct_of_ceiling is not None and r.pct_of_ceiling >= AT_CEILING_PCT:
            notes.append(f"{r.path}: {r.pct_of_ceiling:.0f}% of the ceiling: limited by the client and echo "
                         "server sharing this host's CPU, not (only) by the forwarder; paths at the ceiling "
                         "are not ranked against each other")
        if r.errors:
            notes.append(f"{r.path}: {r.errors} connection(s) failed in the measured windows")
        if r.n_failed:
            notes.append(f"{r.path}: {r.n_failed} failed measurement(s) left out")
        if r.conn_per_s.wide:
            notes.append(f"{r.path}: spread is {r.conn_per_s.spread_pct:.0f}% of the median over "
                         f"n={r.conn_per_s.n}: too noisy to rank")
    return ConnrateSummary(tuple(rows), ceiling, tuple(notes))
