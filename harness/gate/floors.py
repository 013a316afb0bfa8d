"""Quick-run floors: a path's median throughput as % of another's must not fall below a committed floor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.gate.verdicts import EXIT_DATA, EXIT_OK, EXIT_REGRESSION, VERDICT_MISSING, VERDICT_OK
from harness.kinds.headline import HeadlineSummary
from harness.records.bench_file import Floor


@dataclass(frozen=True)
class FloorCheck:
    floor: Floor
    verdict: str  # ok | BELOW FLOOR | missing
    value_pct: float | None = None
    n: int = 0
    note: str = ""


VERDICT_BELOW_FLOOR = "BELOW FLOOR"


def check_floors(floors: Sequence[Floor], summary: HeadlineSummary) -> tuple[FloorCheck, ...]:
    """Each floor against the headline summary of a run (its uncapped records; median vs median)."""
    out = []
    for fl in floors:
        p, v = summary.get(fl.path), summary.get(fl.vs)
        missing = [name for name, res in ((fl.path, p), (fl.vs, v)) if res is None or res.throughput_mbps.n == 0]
        if missing:
            out.append(FloorCheck(fl, VERDICT_MISSING, note=f"no successful measurement of {', '.join(missing)}"))
            continue
        assert p is not None and v is not None
        pm, vm = p.throughput_mbps.median, v.throughput_mbps.median
        assert pm is not None and vm is not None
        pct = 100.0 * pm / vm if vm else 0.0
        n = min(p.throughput_mbps.n, v.throughput_mbps.n)
        verdict = VERDICT_OK if pct >= fl.min_pct else VERDICT_BELOW_FLOOR
        out.append(FloorCheck(fl, verdict, pct, n, f"{pm:.0f} / {vm:.0f} Mbit/s"))
    return tuple(out)


def floors_exit_code(checks: Sequence[FloorCheck]) -> int:
    if any(c.verdict == VERDICT_BELOW_FLOOR for c in checks):
        return EXIT_REGRESSION
    if any(c.verdict == VERDICT_MISSING for c in checks):
        return EXIT_DATA
    return EXIT_OK
