"""A result file of a kind this harness does not know (newer, or renamed): it still reports its throughput.

Not registered in KINDS: harness.kinds.kind_of falls back to it, so a
directory holding such a file still renders, with a section that says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.kinds.base import FileSummary, Kind, ReportContext
from harness.kinds.headline import HeadlineSummary, render_headline_table, summarise_headline
from harness.records.results import ResultSet


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> HeadlineSummary:
    return summarise_headline(rs.records, rs.header.config.paths)


def _section(fs: FileSummary[HeadlineSummary], ctx: ReportContext) -> list[str]:
    """Say there is no section for the kind, and show the per-path throughput anyway."""
    out = [f"This version of the report has no section for kind `{fs.header.kind}`; per-path throughput of "
           "its unpaced, uncapped runs follows."]
    if fs.summary.paths:
        out.append(render_headline_table(fs.summary))
    return out


KIND = Kind(name="unknown", driver="iperf3", summarise=_summarise, section=_section)
