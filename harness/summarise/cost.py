"""CPU per unit of work, per path: the forwarder's and the whole host's (pure statistics over records).

Three units, each from the experiment that does that work: bytes (GB) from
uncapped iperf3 TCP runs (headline / peers), connections from connrate runs
(every connection the probe completed), datagrams from UDP runs at the
highest offered rate (datagrams the sender sent through the path). Per
record: CPU seconds over the client's run / units of work in that run, then
the median over rounds.

Forwarder CPU is the forwarder process tree's (none for kernel paths); host
CPU is the edge host's busy time over all cores (Record.host_busy_cpu_s:
every process, the iperf3 / probe endpoints included, and the kernel's
softirq work), so `direct` measures what the endpoints alone cost and
`above_direct` is what forwarding adds, for kernel paths too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from harness.errors import ProbeError
from harness.records.probe_json import parse_connrate_json
from harness.records.results import Record
from harness.summarise.stats import EMPTY, Summary, summarise

BYTES_PER_GB = 1e9
DIRECT = "direct"  # the path whose host CPU is the endpoints' own cost

# unit -> (display factor from CPU seconds per unit, label)
UNITS: dict[str, tuple[float, str]] = {"GB": (1.0, "s/GB"), "connection": (1e6, "µs/connection"),
                                       "datagram": (1e6, "µs/datagram")}


@dataclass(frozen=True)
class CostCell:
    """One path's CPU per unit of work (already in the unit's display scale: s/GB, µs/connection, µs/datagram)."""

    forwarder: Summary  # n == 0 for kernel paths (no forwarder process)
    host: Summary  # whole host, all cores, busy time
    host_softirq: Summary  # of which softirq
    above_direct: float | None  # host median minus direct's host median (what forwarding adds)


@dataclass(frozen=True)
class CostTable:
    """Per unit of work present in the files: path -> cell, in path order."""

    cells: dict[str, dict[str, CostCell]]  # unit -> path -> cell
    paths: tuple[str, ...]

    def get(self, unit: str, path: str) -> CostCell | None:
        return self.cells.get(unit, {}).get(path)


def gb_of(r: Record) -> float | None:
    """GB the path carried (every iperf3 interval, omitted ones too: the CPU window covers them)."""
    return r.total_bytes / BYTES_PER_GB if r.total_bytes else None


def connections_of(r: Record) -> float | None:
    """Connections the connrate probe completed over its whole run (the CPU window)."""
    if not r.probe_raw:
        return None
    try:
        total = sum(parse_connrate_json(r.probe_raw).per_second)
    except (ProbeError, KeyError, ValueError):
        return None
    return float(total) or None


def datagrams_of(datagram_bytes: int) -> Callable[[Record], float | None]:
    """Datagrams the iperf3 UDP sender sent through the path (its bytes / the datagram size)."""
    return lambda r: r.total_bytes / datagram_bytes if r.total_bytes and datagram_bytes else None


def _per_unit(cpu_s: float | None, units: float | None, factor: float) -> float | None:
    return None if cpu_s is None or not units else cpu_s / units * factor


def summarise_cost_cells(records: Iterable[Record], unit: str,
                         units_of: Callable[[Record], float | None]) -> dict[str, CostCell]:
    """path -> CostCell over the ok records given (the caller picks which records measure this unit)."""
    factor, _ = UNITS[unit]
    by_path: dict[str, list[Record]] = {}
    for r in records:
        if r.ok:
            by_path.setdefault(r.path, []).append(r)
    raw = {}
    for path, rs in by_path.items():
        work = [(r, units_of(r)) for r in rs]
        raw[path] = (summarise(_per_unit(r.forwarder_cpu_s, u, factor) for r, u in work),
                     summarise(_per_unit(r.host_busy_cpu_s, u, factor) for r, u in work),
                     summarise(_per_unit(r.host_softirq_s, u, factor) for r, u in work))
    base = raw.get(DIRECT, (EMPTY, EMPTY, EMPTY))[1].median
    return {path: CostCell(fwd, host, soft, None if base is None or host.median is None or path == DIRECT
                           else host.median - base)
            for path, (fwd, host, soft) in raw.items()}


def build_cost_table(by_unit: dict[str, dict[str, CostCell]], path_order: Sequence[str] = ()) -> CostTable:
    """The units' cells under one path order (path_order first, then any others as they come)."""
    order = list(dict.fromkeys([*path_order, *(p for cells in by_unit.values() for p in cells)]))
    return CostTable({u: c for u, c in by_unit.items() if c}, tuple(p for p in order
                                                                   if any(p in c for c in by_unit.values())))
