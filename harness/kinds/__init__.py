"""Experiment kinds: one module each, registered once below (flent's runner/aggregator per test, in one place).

A kind module holds its summary (pure statistics over its records), its
report section, its figures and a `KIND = Kind(...)` declaration naming the
driver that measures it (harness.measure.drivers.DRIVERS) and its config
rules. Adding a kind = one module + one entry in KINDS (see harness/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.kinds import ab, capped, connrate, headline, http, latency, peers, sweep, udp, unknown
from harness.kinds.base import DirectorySummary, FileSummary, Kind
from harness.records.results import ResultSet
from harness.summarise.topology import same_topology, summarise_topologies

# name -> kind; the report shows the files of each kind in this order (unknown kinds last).
KINDS: dict[str, Kind[Any]] = {kind.name: kind for kind in (
    headline.KIND,
    ab.KIND,
    capped.KIND,
    sweep.KIND,
    peers.KIND,
    latency.KIND,
    connrate.KIND,
    udp.KIND,
    http.KIND,
)}


def kind_of(name: str) -> Kind[Any]:
    """The registered kind, or the fallback that still reports per-path throughput."""
    return KINDS.get(name, unknown.KIND)


def summarise_file(rs: ResultSet, result_sets: Sequence[ResultSet] = ()) -> FileSummary[Any]:
    """One file summarised by its kind; cross-file inputs come from files of the same topology only."""
    kind = kind_of(rs.header.kind)
    return FileSummary(rs, kind, kind.summarise(rs, same_topology(rs, [*result_sets] or [rs])))


def summarise_results(result_sets: Sequence[ResultSet]) -> DirectorySummary:
    """Every file of a directory, each summarised once, and the comparison across topologies."""
    return DirectorySummary(tuple(summarise_file(rs, result_sets) for rs in result_sets),
                            summarise_topologies(result_sets))
