"""HTTP: wrk against nginx serving static files, directly and through each path; requests/s per mode and size.

Two modes: keep-alive (wrk's connections stay open, request after request:
the forwarder relays small exchanges on a few long connections) and close
(`Connection: close`: the server closes after each response and wrk
reconnects, so every request is a new TCP connection through the forwarder:
accept, dial, relay, teardown). Three file sizes by default (1, 16, 256 KiB)
from small API-like replies to bulk-ish ones. `direct` (wrk to nginx, no
forwarder) is the ceiling of the client and server on this host; Portunus is
compared with HAProxy (TCP mode, defaults), the peer issue 13 measures it
against. Forwarder CPU per request = forwarder CPU over the whole wrk run /
the responses wrk received (every second counts: wrk has no warm-up).

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.define.experiment import ConfigDraft, ExperimentConfig
from harness.kinds.base import Add, FileSummary, Kind, ReportContext
from harness.present.format import (
    DASH,
    fmt_bytes,
    fmt_count,
    fmt_pct,
    fmt_range,
    fmt_us,
    no_cpu,
    notes_block,
    table,
)
from harness.present.plots import FIG_SIZE_IN, caption, color, finish, new_panels, whiskers
from harness.records.header import PathFacts
from harness.records.results import Record, ResultSet
from harness.records.wrk_report import ERROR_KINDS, WrkError, WrkRun
from harness.summarise.stats import Summary, ratio_pct, summarise

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CEILING = "direct"
PEER = "haproxy"  # what issue 13 measures Portunus against
PORTUNUS = ("standalone", "standalone_w2", "client")  # Portunus's paths, in the order they are compared
MODE_LABELS = {"keepalive": "Keep-alive connections", "close": "One connection per request (`Connection: close`)"}
MODE_SHORT = {"keepalive": "keep-alive", "close": "close"}
# A path at or above this share of the ceiling is limited by wrk and nginx sharing the CPU, not by itself.
AT_CEILING_PCT = 90.0


@dataclass(frozen=True)
class HttpRow:
    """One (path, mode, response size) over the rounds."""

    path: str
    mode: str
    response_bytes: int
    requests_per_s: Summary
    pct_of_ceiling: float | None  # this median / direct's median at the same mode and size * 100
    portunus_pct: float | None  # standalone's median / this median * 100
    latency_p50_us: Summary
    latency_p99_us: Summary
    latency_p999_us: Summary
    errors: dict[str, int]  # summed over the ok runs, by kind (harness.records.wrk_report.ERROR_KINDS)
    cpu_us_per_request: Summary  # forwarder CPU per response; n == 0 for kernel paths and direct
    n_failed: int

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class HttpSummary:
    rows: tuple[HttpRow, ...]
    paths: tuple[str, ...]
    modes: tuple[str, ...]
    sizes: tuple[int, ...]
    load_1m: Summary  # the host's 1-minute load average when each run started (the machine's state)
    host_cpus: int | None
    notes: tuple[str, ...] = field(default=())

    def cell(self, path: str, mode: str, size: int) -> HttpRow | None:
        return next((r for r in self.rows if r.path == path and r.mode == mode and r.response_bytes == size), None)


def _context(r: Record) -> dict:
    if not r.wrk_raw:
        return {}
    try:
        return WrkRun.from_json(r.wrk_raw).context
    except WrkError:
        return {}


def cpu_us_per_request(r: Record) -> float | None:
    """Forwarder CPU (µs) per response over the whole wrk run."""
    if r.forwarder_cpu_s is None or not r.requests:
        return None
    return r.forwarder_cpu_s / r.requests * 1e6


def summarise_http(records: Iterable[Record], path_order: Sequence[str] = ()) -> HttpSummary:
    """One row per (path, mode, size) over the wrk records; ratios of medians at the same mode and size."""
    rows_in = [r for r in records if r.driver == "wrk" and r.http_mode and r.response_bytes]
    paths = tuple(dict.fromkeys([p for p in path_order if any(r.path == p for r in rows_in)]
                                + [r.path for r in rows_in]))
    seen_modes = [r.http_mode for r in rows_in if r.http_mode]
    modes = tuple(m for m in dict.fromkeys(["keepalive", "close", *seen_modes]) if m in seen_modes)
    sizes = tuple(sorted({r.response_bytes for r in rows_in if r.response_bytes}))
    medians = {(r.path, r.http_mode, r.response_bytes): summarise(
        x.requests_per_s for x in rows_in if x.ok and (x.path, x.http_mode, x.response_bytes)
        == (r.path, r.http_mode, r.response_bytes)).median for r in rows_in}
    rows, notes = [], []
    for mode in modes:
        for size in sizes:
            for path in paths:
                mine = [r for r in rows_in if (r.path, r.http_mode, r.response_bytes) == (path, mode, size)]
                if not mine:
                    continue
                ok = [r for r in mine if r.ok]
                errors = {k: sum((r.http_errors or {}).get(k, 0) for r in ok) for k in ERROR_KINDS}
                med = medians.get((path, mode, size))
                rows.append(HttpRow(
                    path, mode, size, summarise(r.requests_per_s for r in ok),
                    ratio_pct(med, medians.get((CEILING, mode, size))),
                    ratio_pct(medians.get((PORTUNUS[0], mode, size)), med),
                    summarise(r.latency_p50_us for r in ok), summarise(r.latency_p99_us for r in ok),
                    summarise(r.latency_p999_us for r in ok), errors,
                    summarise(cpu_us_per_request(r) for r in ok), len(mine) - len(ok)))
    for r in rows:
        where = f"{r.path}, {MODE_SHORT.get(r.mode, r.mode)}, {fmt_bytes(r.response_bytes)}"
        if r.n_errors:
            notes.append(f"{where}: {r.n_errors:,} error(s): "
                         + ", ".join(f"{k} {v:,}" for k, v in r.errors.items() if v)
                         + " (status = responses with a status >= 400; timeouts after wrk's --timeout)")
        if r.n_failed:
            notes.append(f"{where}: {r.n_failed} failed measurement(s) left out")
        if r.path != CEILING and r.pct_of_ceiling is not None and r.pct_of_ceiling >= AT_CEILING_PCT:
            notes.append(f"{where}: {r.pct_of_ceiling:.0f}% of `{CEILING}`: at the ceiling of wrk and nginx "
                         "sharing the CPUs; not ranked against the other paths at the ceiling")
        elif r.requests_per_s.wide:
            notes.append(f"{where}: spread is {r.requests_per_s.spread_pct:.0f}% of the median over "
                         f"n={r.requests_per_s.n}: too noisy to rank")
    contexts = [_context(r) for r in rows_in]
    load = summarise((c.get("loadavg_before") or [None])[0] for c in contexts)
    cpus = next((c["host_cpus"] for c in contexts if c.get("host_cpus")), None)
    return HttpSummary(tuple(rows), paths, modes, sizes, load, cpus, tuple(notes))


# ---------------------------------------------------------------- report section


def _fmt_ms(s: Summary) -> str:
    return DASH if s.median is None else f"{s.median / 1000:.2f}"


def _rate(v: float | None) -> str:
    return fmt_count(v)


def _ratio_to(c: HttpRow | None, denominator: float | None) -> float | None:
    return ratio_pct(c.requests_per_s.median, denominator) if c is not None else None


def render_versus_table(s: HttpSummary) -> str | None:
    """Per mode and size: the ceiling, HAProxy, each Portunus path, and Portunus as % of HAProxy."""
    mine = [p for p in PORTUNUS if p in s.paths]
    if PEER not in s.paths or not mine:
        return None
    cols = [p for p in (CEILING, PEER, *mine) if p in s.paths]
    header = ["Mode", "Response"] + [f"`{p}`, requests/s" for p in cols] + [f"`{p}` ÷ `{PEER}`" for p in mine]
    rows = []
    for mode in s.modes:
        for size in s.sizes:
            cells = {p: s.cell(p, mode, size) for p in cols}
            peer = cells.get(PEER)
            peer_med = peer.requests_per_s.median if peer is not None else None
            rows.append([MODE_SHORT.get(mode, mode), fmt_bytes(size)]
                        + [_rate(c.requests_per_s.median) if c is not None else DASH for c in cells.values()]
                        + [fmt_pct(_ratio_to(cells.get(p), peer_med), 0) for p in mine])
    return table(header, rows)


def render_mode_table(s: HttpSummary, mode: str, facts: Mapping[str, PathFacts]) -> str:
    """One mode: per size and path requests/s median [min–max], ratios, latency, errors, CPU per request."""
    # The mode in the column's name: the two mode tables are told apart by it (notebooks read the cells).
    header = ["Response", "Path", f"Requests/s, {MODE_SHORT.get(mode, mode)}: median [min–max]", f"% of `{CEILING}`",
              f"`{PORTUNUS[0]}` ÷ this",
              "p50, ms", "p99, ms", "p99.9, ms", "Errors", "Forwarder CPU, µs/request"]
    rows = []
    for size in s.sizes:
        for p in s.paths:
            c = s.cell(p, mode, size)
            if c is None:
                continue
            if not c.requests_per_s.n:
                rows.append([fmt_bytes(size), f"`{p}`", f"failed ({c.n_failed} run(s))"] + [DASH] * 7)
                continue
            rows.append([fmt_bytes(size), f"`{p}`", fmt_range(c.requests_per_s, _rate), fmt_pct(c.pct_of_ceiling, 0),
                         fmt_pct(c.portunus_pct, 0), _fmt_ms(c.latency_p50_us), _fmt_ms(c.latency_p99_us),
                         _fmt_ms(c.latency_p999_us), f"{c.n_errors:,}",
                         fmt_us(c.cpu_us_per_request.median) if c.cpu_us_per_request.n
                         else no_cpu(p, facts.get(p))])
    return table(header, rows)


def _section(fs: FileSummary[HttpSummary], ctx: ReportContext) -> list[str]:
    s, cfg = fs.summary, fs.config
    h = cfg.http
    how = (f"wrk {h.threads} threads x {h.connections} connections" if h is not None else "wrk")
    server = f"nginx ({h.server_workers} worker{'s' if h.server_workers != 1 else ''})" if h is not None else "nginx"
    load = (f"load average (1 min) when the runs started: median {s.load_1m.median:.1f} "
            f"[{s.load_1m.min:.1f}–{s.load_1m.max:.1f}]" if s.load_1m.n else "load average not recorded")
    out = [f"HTTP/1.1 GET of a static file ({', '.join(fmt_bytes(b) for b in s.sizes)}) from {server} on the "
           f"target, {how} for {cfg.seconds} s per run, in two modes: keep-alive (connections reused) and close "
           "(`Connection: close`: a new TCP connection through the forwarder for every request). "
           f"`{CEILING}` (wrk to nginx, no forwarder) is the ceiling; `{PORTUNUS[0]}` ÷ this > 100% means Portunus "
           "is faster than that path. Latency is wrk's: request written to response complete (a new connection's "
           "connect() is not in it). Errors: connect / read / write / timeout / status >= 400, summed over the "
           "rounds. Forwarder CPU per request = its process tree's CPU over the run / responses.",
           f"Machine: {s.host_cpus or '?'} CPUs shared by wrk, nginx and the forwarder (nothing pinned); {load}."]
    versus = render_versus_table(s)
    if versus is not None:
        out += ["Portunus against HAProxy (TCP mode, defaults), medians over rounds:", versus]
    for mode in s.modes:
        out += [f"{MODE_LABELS.get(mode, mode)}:", render_mode_table(s, mode, fs.header.path_facts)]
    failed = [r for r in fs.result_set.records if not r.ok]
    notes = list(s.notes) + sorted({f"{r.path}: {(r.error or '').splitlines()[0][:240]}" for r in failed})
    return out + notes_block(notes)


# ---------------------------------------------------------------- figures


def plot_http(s: HttpSummary, cap: str) -> Figure:
    """Per mode, requests/s per path as % of direct, grouped by response size (median, whiskers min–max)."""
    n = max(len(s.modes), 1)
    fig = new_panels((FIG_SIZE_IN[0] * 0.75 * n + 1.0, FIG_SIZE_IN[1] * 1.1),
                     "HTTP through each path (wrk against nginx): requests/s as % of direct", cap)
    paths = list(s.paths)
    width = 0.8 / max(len(paths), 1)
    for col, mode in enumerate(s.modes):
        ax = fig.add_subplot(1, n, col + 1)
        labels, top = [], 100.0
        for j, size in enumerate(s.sizes):
            ceiling = s.cell(CEILING, mode, size)
            base = ceiling.requests_per_s.median if ceiling is not None else None
            labels.append(f"{fmt_bytes(size)}\n({CEILING}: {_rate(base)}/s)")
            for i, path in enumerate(paths):
                c = s.cell(path, mode, size)
                if c is None or not base or c.requests_per_s.median is None:
                    continue
                lo, hi = whiskers(c.requests_per_s, 100.0 / base)
                top = max(top, c.requests_per_s.median * 100.0 / base + hi)
                ax.bar(j - 0.4 + width * (i + 0.5), c.requests_per_s.median * 100.0 / base, width,
                       yerr=([lo], [hi]), capsize=2, color=color(path, i), label=path if j == 0 else None)
        ax.set_ylim(0, top * 1.3)  # headroom for the legend above the bars
        ax.set_xticks(range(len(s.sizes)), labels, fontsize=8)
        ax.axhline(100, color="tab:gray", linestyle="--", linewidth=1)
        ax.set_title(MODE_LABELS.get(mode, mode).replace("`", ""), fontsize=9)
        ax.set_xlabel("Response size")
        ax.grid(axis="y", alpha=0.3)
        if col == 0:
            ax.set_ylabel(f"Requests/s, % of {CEILING} (median, whiskers min–max)")
            ax.legend(loc="upper right", fontsize=6, ncol=2)
    return finish(fig)


def _figures(fs: FileSummary[HttpSummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"requests": plot_http(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> HttpSummary:
    return summarise_http(rs.records, rs.header.config.paths)


def _check(d: ConfigDraft, add: Add) -> None:
    if d.protocol != "tcp":
        add("protocol", "an http experiment measures HTTP over TCP: protocol must be tcp")
    if d.offered_mbps or d.offered_pps or d.caps_bytes_per_s:
        add("offered_mbps" if d.offered_mbps else "offered_pps" if d.offered_pps else "caps_bytes_per_s",
            "not used by an http experiment (wrk sends as fast as the responses come)")
    if d.omit_seconds:
        add("omit_seconds", "must be 0 for an http experiment: wrk has no warm-up, every second is counted")


def _run_line(cfg: ExperimentConfig) -> str:
    h = cfg.http
    what = f"wrk -t{h.threads} -c{h.connections}" if h is not None else "wrk"
    return f"{cfg.rounds} round(s) of {cfg.seconds} s per mode and size, {what} against nginx"


KIND = Kind(name="http", driver="wrk", summarise=_summarise, section=_section, figures=_figures, check=_check,
            uses_http=True, run_line=_run_line)
