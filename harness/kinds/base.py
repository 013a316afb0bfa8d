"""An experiment kind, declared once: the driver that measures it, the summary of its result file,
its report section, its figures and its config rules (harness/kinds/__init__.py registers it).

Kinds are analysis: a kind names its driver (a key of harness.measure.drivers.DRIVERS) instead of
importing it, so nothing here or in the kind modules imports measurement, paths or sites.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from harness.define.experiment import ConfigDraft, ExperimentConfig
from harness.records.header import Header
from harness.records.results import ResultSet
from harness.summarise.topology import TopologyComparison, same_topology

if TYPE_CHECKING:
    from matplotlib.figure import Figure

S = TypeVar("S")
Add = Callable[[str, str], None]  # (config key, message): one problem with the experiment file


@dataclass(frozen=True)
class FileSummary(Generic[S]):
    """One result file and its kind's summary of it, made once; the report, plots, gate and compare read it."""

    result_set: ResultSet
    kind: Kind[S]
    summary: S

    @property
    def header(self) -> Header:
        return self.result_set.header

    @property
    def config(self) -> ExperimentConfig:
        return self.result_set.header.config

    def same_topology(self, files: Sequence[FileSummary[Any]]) -> list[FileSummary[Any]]:
        """The files of `files` that ran on this file's topology (numbers are never mixed across)."""
        mine = same_topology(self.result_set, [f.result_set for f in files])
        return [f for f in files if any(f.result_set is rs for rs in mine)]


@dataclass(frozen=True)
class DirectorySummary:
    """Every result file of a directory summarised (in file-name order), and the cross-topology comparison."""

    files: tuple[FileSummary[Any], ...]
    topologies: TopologyComparison | None = None


@dataclass(frozen=True)
class ReportContext:
    """What a section may use beyond its own file: the directory's other summaries, the plot files."""

    files: tuple[FileSummary[Any], ...] = ()
    plots: Mapping[str, Sequence[str]] = field(default_factory=dict)  # result file name -> plot paths

    def latest(self, kind: str, like: FileSummary[Any]) -> FileSummary[Any] | None:
        """The newest file of a kind on like's topology (the peers overview's other experiments)."""
        files = [f for f in like.same_topology(self.files) if f.header.kind == kind]
        return max(files, key=lambda f: f.header.created_at, default=None)

    def plot_links(self, fs: FileSummary[Any]) -> list[str]:
        return [f"![{p.rsplit('/', 1)[-1]}]({p})" for p in self.plots.get(fs.result_set.path.name, ())
                if p.endswith(".png")]


def iperf_run_line(cfg: ExperimentConfig) -> str:
    """How each measurement of an iperf3 kind ran, for the report's run line."""
    return (f"{cfg.rounds} round(s) of {cfg.seconds} s (+{cfg.omit_seconds} s omitted), "
            f"iperf3 backend {cfg.backend}")


def no_figures(fs: FileSummary[Any]) -> dict[str, Figure]:
    """A kind without figures."""
    return {}


def no_check(d: ConfigDraft, add: Add) -> None:
    """A kind without rules of its own beyond the general ones."""
    return None


@dataclass(frozen=True)
class Kind(Generic[S]):
    """Everything the harness does differently for one experiment kind."""

    name: str
    driver: str  # what runs through a path: a key of harness.measure.drivers.DRIVERS
    # (the file, the files of the same directory and topology, itself included) -> the file's summary
    summarise: Callable[[ResultSet, Sequence[ResultSet]], S]
    section: Callable[[FileSummary[S], ReportContext], list[str]]  # the report's markdown blocks
    figures: Callable[[FileSummary[S]], dict[str, Figure]] = no_figures  # name -> figure
    check: Callable[[ConfigDraft, Add], None] = no_check  # the kind's own config rules
    uses_probe: bool = False  # the config's `probe:` settings apply (probe drivers)
    uses_http: bool = False  # the config's `http:` settings apply (the wrk driver)
    seconds_is_limit: bool = False  # `seconds` caps a run that ends when its samples are in
    run_line: Callable[[ExperimentConfig], str] = iperf_run_line  # how one measurement ran


def check_probe_kind(d: ConfigDraft, add: Add) -> None:
    """The probe kinds' rules (latency, connrate): they measure TCP connections, at no offered rate or cap."""
    if d.protocol != "tcp":
        add("protocol", f"a {d.kind} experiment measures TCP connections: protocol must be tcp")
    if d.offered_mbps or d.caps_bytes_per_s:
        add("offered_mbps" if d.offered_mbps else "caps_bytes_per_s", f"not used by a {d.kind} experiment")
