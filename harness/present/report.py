"""The markdown report over a directory's summarised result files: pure render_* functions, no I/O.

    render_report(summaries)      # title, how to read, the host block once, one section per file
    render_readme_results(...)    # the same sections for the README (between its results markers)

Each file's tables come from its kind (harness/kinds/<kind>.py, `Kind.section`),
in KINDS order; this module adds what every file shares (what ran, where,
on which host, what failed, its plots) and the comparison across topologies.
Every number comes from the summaries (harness.kinds.summarise_results).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.kinds import KINDS
from harness.kinds.base import DirectorySummary, FileSummary, ReportContext
from harness.present.format import fmt_pct, fmt_range, notes_block, table
from harness.records.header import Header
from harness.summarise.topology import TopologyComparison, describe_topology

HOW_TO_READ = (
    "How to read: throughput is iperf3's sender-side rate over the non-omitted seconds, taken the same "
    "way for every path (cap accuracy uses the receiver side: the bytes that actually crossed the cap). "
    "Paths are measured one at a time in interleaved, shuffled rounds, so compare them as ratios within "
    "one run, not as absolute numbers across hosts or days. Uncapped maxima are median [min–max] over the "
    "rounds: where ranges overlap, the run does not rank the paths (see the notes under each table).")



def render_sysinfo(h: Header) -> str:
    """One compact block: where and from what these numbers came."""
    si = h.sysinfo
    commit = (si.commit or "?")[:12] + (" (dirty)" if si.dirty else "")
    sysctls = si.sysctls or {}
    return "\n".join([
        "```text",
        f"commit {commit}; {si.distro}; kernel {si.kernel}",
        f"{si.cpu_model} ({si.cpu_cores} cores, governor {si.cpu_governor or 'n/a'})",
        f"{si.iperf3}; {si.iptables}; Python {si.python}",
        "sysctls: " + ", ".join(f"{k}={v}" for k, v in sysctls.items()),
        "```",
    ])


def _run_line(fs: FileSummary[Any]) -> str:
    rs, h = fs.result_set, fs.header
    return (f"`{rs.path.name}`: {len(rs.records)} measurement(s), {fs.kind.run_line(h.config)}, "
            f"started {h.created_at}." + ("" if rs.complete else " **The run did not complete.**"))


def render_file(fs: FileSummary[Any], ctx: ReportContext | None = None, host: Header | None = None,
                level: int = 2) -> str:
    """One file's section: what ran, the tables and notes of its kind, and its plots.

    Its host block is shown unless it matches `host` (the report's, shown once at the top).
    """
    ctx = ctx if ctx is not None else ReportContext((fs,))
    rs, h = fs.result_set, fs.header
    out = [f"{'#' * level} {h.experiment} ({h.kind})"]
    if h.config.description:
        out.append(h.config.description.strip())
    out.append(_run_line(fs))
    out.append(f"Topology: {describe_topology(h.topology)}")
    if host is None or render_sysinfo(h) != render_sysinfo(host):
        if host is not None:
            out.append("Recorded on a different host or commit than the block at the top:")
        out.append(render_sysinfo(h))
    if h.unavailable_paths:
        out.append("Paths skipped (unavailable on this host):\n\n"
                   + "\n".join(f"- `{p}`: {why}" for p, why in h.unavailable_paths.items()))
    out += fs.kind.section(fs, ctx)
    failed = [r for r in rs.records if not r.ok]
    if failed:
        out += notes_block([f"{len(failed)} measurement(s) failed; first error: {failed[0].path} round "
                            f"{failed[0].round}: {(failed[0].error or '').splitlines()[0][:200]}"])
    out += ctx.plot_links(fs)
    return "\n\n".join(out) + "\n"


def _section_order(fs: FileSummary[Any]) -> tuple[int, str]:
    kinds = list(KINDS)
    kind = fs.header.kind
    return (kinds.index(kind) if kind in kinds else len(kinds), fs.result_set.path.name)


def ordered(files: Iterable[FileSummary[Any]]) -> list[FileSummary[Any]]:
    """Result files in report order: by kind (KINDS order, unknown kinds last), then file name."""
    return sorted(files, key=_section_order)


def report_host(files: Sequence[FileSummary[Any]]) -> Header | None:
    """The header whose host block heads the report: the earliest file's."""
    return min((fs.header for fs in files), key=lambda h: h.created_at, default=None)


def render_provenance(files: Sequence[FileSummary[Any]]) -> str | None:
    """A warning when the directory's runs (resumed ones included) mix commits or ran on a dirty tree."""
    runs = [(fs.result_set.path.name, commit, dirty) for fs in ordered(files)
            for commit, dirty in fs.result_set.provenance()]
    commits = sorted({(c or "?")[:12] for _, c, _ in runs})
    dirty = sorted({name for name, _, d in runs if d})
    if len(commits) <= 1 and not dirty:
        return None
    lines = ["**Provenance warning**: these numbers do not all come from one clean commit."]
    if len(commits) > 1:
        lines.append(f"The runs of this directory (resumed runs included) measured {len(commits)} commits: "
                     + "; ".join(f"`{c}`: " + ", ".join(sorted({f'`{n}`' for n, cc, _ in runs
                                                             if (cc or '?')[:12] == c})) for c in commits)
                     + ". Compare paths within one file; across files only with that in mind.")
    if dirty:
        lines.append("Measured with uncommitted changes (dirty tree): " + ", ".join(f"`{n}`" for n in dirty)
                     + "; the commit alone does not say what ran.")
    return " ".join(lines)


def _sections(summaries: DirectorySummary, plots: Mapping[str, Sequence[str]], level: int) -> list[str]:
    files = summaries.files
    ctx = ReportContext(files, plots)
    host = report_host(files)
    out = []
    if host is not None:
        si = host.sysinfo
        out += [f"{'#' * level} Host", f"`{si.hostname}`, {si.cpu_cores} cores, "
                f"{(si.memory_kib or 0) / 2**20:.1f} GiB RAM.", render_sysinfo(host)]
        warning = render_provenance(files)
        if warning:
            out.append(warning)
    out += [render_file(fs, ctx, host, level).rstrip("\n") for fs in ordered(files)]
    if summaries.topologies is not None:
        out += render_topology_section(summaries.topologies, level)
    return out


# ---------------------------------------------------------------- across topologies


def render_topology_table(c: TopologyComparison) -> str:
    """Per path: median [min–max] on each topology, second / first, % of iptables within each."""
    first, second = c.labels[0], c.labels[1]
    header = ["Path"] + [f"{lab}, Mbit/s" for lab in c.labels] + [f"{second} ÷ {first}"] + [
        f"% of iptables ({lab})" for lab in c.labels]
    rows = []
    for r in c.rows:
        rows.append([f"`{r.path}`"] + [fmt_range(r.throughput_mbps[lab]) for lab in c.labels]
                    + [fmt_pct(r.vs_first_pct, 0)] + [fmt_pct(r.pct_of_baseline[lab], 0) for lab in c.labels])
    return table(header, rows)


# What changes between loopback and the namespace topology, mechanically (the numbers above say how much).
NETNS_DIFFERENCES = (
    "Packets cross two veth pairs and the edge namespace's IP stack (routing, conntrack) instead of one "
    "loopback device; segments are cut to the veth MTU (1500 unless the topology sets one) where loopback "
    "carries 65536-byte frames, so there are many more packets per byte (GSO/GRO sizes are in each file's "
    "header, `topology.applied`).",
    "The kernel baselines change mechanism: loopback uses REDIRECT (iptables) / DNAT (nftables) in the nat "
    "OUTPUT hook; netns uses DNAT in the edge's PREROUTING with forwarding and MASQUERADE towards the target, "
    "which is what a port-forwarding box runs. `nft_flowtable` exists only there.",
    "`direct` on netns is routed through the edge (ip_forward, no NAT, no forwarder), so it measures the "
    "crossing, not a same-host socket pair.",
    "Namespaces separate network stacks, not CPUs: the iperf3 ends and the forwarder still share this "
    "host's cores, so CPU contention shapes both topologies alike.",
)



def render_topology_section(c: TopologyComparison, level: int = 2) -> list[str]:
    """The side-by-side table and the 'what differs' notes (a template the numbers fill in)."""
    files = "; ".join(f"{lab}: {', '.join(f'`{f}`' for f in fs)}" for lab, fs in c.files.items())
    out = [f"{'#' * level} Across topologies: {' vs '.join(c.labels)}",
           f"The same paths measured on each topology (headline-style runs, uncapped; files: {files}). Compare "
           "the ratios within a topology first; the cross-topology column is a ratio of medians of separate runs.",
           render_topology_table(c)]
    found = []
    first, second = c.labels[0], c.labels[1]
    if c.ratio_median_pct is not None:
        found.append(f"Across the paths measured on both, {second} delivers a median {fmt_pct(c.ratio_median_pct, 0)} "
                     f"of what {first} does.")
    if c.largest_drop is not None and c.largest_drop.vs_first_pct is not None:
        found.append(f"Largest change: `{c.largest_drop.path}` at {fmt_pct(c.largest_drop.vs_first_pct, 0)} "
                     f"of its {first} throughput.")
    if c.rank_changes:
        found.append("Changes side of the iptables line (≥ 100% on one topology, < 100% on the other): "
                     + ", ".join(f"`{p}`" for p in c.rank_changes) + ".")
    if "netns" in " ".join(c.labels):
        out.append("What differs on netns:\n\n" + "\n".join(f"- {d}" for d in NETNS_DIFFERENCES))
    out += notes_block(found)
    return out


def render_report(summaries: DirectorySummary, title: str = "Portunus benchmark results",
                  plots: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole report over every result file of a directory (plots: file name -> plot paths)."""
    out = [f"# {title}"]
    if not summaries.files:
        out.append("No result files found.")
    else:
        out.append(HOW_TO_READ)
        out += _sections(summaries, plots or {}, level=2)
    return "\n\n".join(out).rstrip() + "\n"


def render_readme_results(summaries: DirectorySummary, results_dir: str,
                          plots: Mapping[str, Sequence[str]] | None = None, level: int = 3) -> str:
    """The report's sections for the README; results_dir and plot paths relative to the README."""
    host = report_host(summaries.files)
    if host is None:
        return f"No result files in `{results_dir}`.\n"
    commit = (host.sysinfo.commit or "?")[:12]
    files = ", ".join(f"`{fs.result_set.path.name}`" for fs in ordered(summaries.files))
    out = [f"Generated from `{results_dir}` ({files}; commit {commit}, started {host.created_at}) by "
           f"`portunus-bench readme {results_dir} README.md`; the full report with every note is "
           f"[`{results_dir}/report.md`]({results_dir}/report.md).", HOW_TO_READ]
    out += _sections(summaries, plots or {}, level)
    return "\n\n".join(out).rstrip() + "\n"
