"""Figures of the summaries (matplotlib, no pyplot state): the shared look, and dump_plots writing PNG + SVG.

Plots compute no statistics: each kind's figures (harness/kinds/<kind>.py,
`Kind.figures`) draw what its summary holds, with the helpers here. Each
figure has labelled axes with units, a legend where there is more than one
series, and a caption line naming the experiment, the host and the commit.
matplotlib is imported when a figure is drawn, not when a kind is imported,
so `run` and `validate` do not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.records.header import Header
from harness.summarise.stats import Summary

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from harness.kinds.base import FileSummary

PLOTS_DIRNAME = "plots"

FORMATS = ("png", "svg")

FIG_SIZE_IN = (8.0, 5.0)

PNG_DPI = 120

# One colour per path in every figure, so a path is recognisable across plots.
PATH_COLORS = {
    "direct": "tab:gray", "iptables": "tab:blue", "reference": "tab:purple",
    "standalone": "tab:orange", "standalone_copy": "tab:brown", "standalone_capped": "tab:orange",
    "standalone_w2": "darkorange",
    "client": "tab:green", "client_capped": "tab:green",
    # Comparable forwarders: one hue per forwarder, lighter for its variants.
    "nftables": "navy", "haproxy": "tab:olive", "haproxy_bigbuf": "olivedrab", "haproxy_splice": "yellowgreen",
    "nginx": "tab:cyan", "nginx_bigbuf": "darkturquoise", "socat": "tab:pink", "socat_bigbuf": "hotpink",
    "rinetd": "tab:red", "ssh": "black",
}

FALLBACK_COLORS = ("tab:red", "tab:pink", "tab:olive", "tab:cyan")

# Paths that deliver the same rate sit on top of each other: distinct markers and line styles keep
# every series visible where they coincide.
MARKERS = ("o", "s", "D", "^", "v", "P", "X")

LINESTYLES = ("-", "--", "-.", ":")

# SVG ids are hashed with a fixed salt (not random), so redrawing the same data gives the same file.
SVG_HASHSALT = "portunus-bench"


def color(path: str, i: int = 0) -> str:
    """The path's colour in every figure (a fallback cycle for paths without one)."""
    return PATH_COLORS.get(path, FALLBACK_COLORS[i % len(FALLBACK_COLORS)])


def series_style(path: str, i: int) -> dict[str, Any]:
    """Line, marker and colour of the i-th series (paths that coincide stay visible)."""
    return {"color": color(path, i), "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)], "markersize": 7 - i % 3, "capsize": 3, "alpha": 0.85}


def caption(h: Header) -> str:
    """One line: experiment, host, commit, date."""
    si = h.sysinfo
    commit = (si.commit or "?")[:12] + ("-dirty" if si.dirty else "")
    return (f"{h.experiment} ({h.kind}) · host {si.hostname}: {si.cpu_model}, "
            f"{si.cpu_cores} cores, kernel {si.kernel} · commit {commit} · {h.created_at[:16]}")


def new_figure(title: str, cap: str) -> tuple[Figure, Axes]:
    """One panel with its title and the caption line at the bottom."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE_IN)
    ax = fig.add_subplot()
    ax.set_title(title)
    fig.text(0.01, 0.01, cap, fontsize=7, color="dimgray")
    return fig, ax


def finish(fig: Figure) -> Figure:
    """Lay the figure out around the caption."""
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # leave the bottom strip to the caption
    return fig


def whiskers(s: Summary, scale: float = 1.0) -> tuple[float, float]:
    """(below, above) the median for an errorbar from min to max, scaled (a unit change)."""
    if s.median is None or s.min is None or s.max is None:
        return (0.0, 0.0)
    return ((s.median - s.min) * scale, (s.max - s.median) * scale)


def hbars(ax: Axes, labels: Sequence[str], values: Sequence[Summary], colors: Sequence[str],
          scale: float = 1.0) -> None:
    """Horizontal bars at each median (scaled), whiskers min-max, first label on top."""
    ys = list(range(len(labels)))[::-1]
    errs = [whiskers(v, scale) for v in values]
    ax.barh(ys, [(v.median or 0.0) * scale for v in values], color=list(colors),
            xerr=([e[0] for e in errs], [e[1] for e in errs]), capsize=3)
    ax.set_yticks(ys, list(labels), fontsize=8)


def new_panels(size_in: tuple[float, float], title: str, cap: str) -> Figure:
    """A figure for several panels (add_subplot), with a title over all and the caption line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_in)
    fig.suptitle(title)
    fig.text(0.01, 0.01, cap, fontsize=7, color="dimgray")
    return fig


def whole_number_ticks(axis: Any) -> None:
    """Tick labels as whole numbers with thousands separators (log axes print 10^3 otherwise)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))


def no_minor_labels(axis: Any) -> None:
    """No labels on minor ticks (log axes crowd them)."""
    from matplotlib.ticker import NullFormatter

    axis.set_minor_formatter(NullFormatter())


def figures_for(fs: FileSummary[Any]) -> dict[str, Figure]:
    """The figures of one summarised result file, named '<file stem>-<figure>' (none for a kind without)."""
    return {f"{fs.result_set.path.stem}-{name}": fig for name, fig in fs.kind.figures(fs).items()}


def dump_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write name.png and name.svg into out_dir."""
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # SVG text stays text (searchable, diffable); no date in the files.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": SVG_HASHSALT}):
        for fmt in FORMATS:
            p = out_dir / f"{name}.{fmt}"
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            fig.savefig(p, format=fmt, dpi=PNG_DPI, metadata=metadata)
            written.append(p)
    return written


def dump_plots(files: Sequence[FileSummary[Any]], out_dir: Path) -> dict[str, list[Path]]:
    """Every figure of every summarised result file into out_dir; returns result file name -> files written."""
    out: dict[str, list[Path]] = {}
    for fs in files:
        for name, fig in figures_for(fs).items():
            out.setdefault(fs.result_set.path.name, []).extend(dump_figure(fig, out_dir, name))
    return out
