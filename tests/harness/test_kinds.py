"""The kind registry: each kind declared once, with a driver that exists; analysis without matplotlib at import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from harness.define.experiment import ConfigDraft
from harness.define.load import ConfigError, parse_config
from harness.kinds import KINDS, kind_of, summarise_results
from harness.kinds import unknown as unknown_kind
from harness.kinds.base import Add, FileSummary, Kind, ReportContext
from harness.measure.drivers import DRIVERS, IperfDriver, driver_for
from harness.present.format import fmt_mbps, table
from harness.present.plots import caption, dump_plots, finish, new_figure
from harness.present.report import render_report
from harness.records.results import ResultSet, load_results_dir
from harness.summarise.stats import Summary, summarise
from tests.harness.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]


def test_every_kind_module_is_registered_under_its_name_with_a_driver_that_exists() -> None:
    modules = {f.stem for f in (REPO / "harness" / "kinds").glob("*.py")} - {"__init__", "base", "unknown"}
    assert set(KINDS) == modules
    assert list(KINDS)[:4] == ["headline", "ab", "capped", "sweep"]  # the report's order starts with the spec's
    for name, kind in KINDS.items():
        assert kind.name == name and kind.driver in DRIVERS, name
        assert type(driver_for(name)) is DRIVERS[kind.driver]
    assert kind_of("from-a-newer-harness") is unknown_kind.KIND and driver_for("from-a-newer-harness").name == "iperf3"


def test_the_probe_kinds_are_the_ones_measured_by_the_probe() -> None:
    assert {n for n, k in KINDS.items() if k.uses_probe} == {"latency", "connrate"}
    assert {n for n, k in KINDS.items() if k.uses_http} == {"http"}
    assert {n: k.driver for n, k in KINDS.items() if k.driver != "iperf3"} == {
        "latency": "latency", "connrate": "connrate", "http": "wrk"}


@pytest.mark.parametrize(("doc", "key", "message"), [
    ({"kind": "sweep"}, "offered_mbps", "a sweep experiment needs at least one offered rate"),
    ({"kind": "capped", "paths": ["direct"]}, "caps_bytes_per_s", "a capped experiment needs at least one cap"),
    ({"kind": "ab"}, "paths", "an ab experiment needs two paths (or a pair)"),
    ({"kind": "udp", "offered_mbps": [100]}, "kind", "a udp experiment needs protocol: udp"),
    ({"kind": "latency", "offered_mbps": [100]}, "offered_mbps", "not used by a latency experiment"),
    ({"kind": "headline", "probe": {"warmup": 1}}, "probe", "only for the kinds latency, connrate"),
    ({"kind": "headline", "http": {"threads": 1}}, "http", "only for the kinds http"),
    ({"kind": "http", "omit_seconds": 1}, "omit_seconds", "must be 0 for an http experiment"),
    ({"kind": "http", "offered_mbps": [100]}, "offered_mbps", "not used by an http experiment"),
    ({"kind": "http", "protocol": "udp"}, "protocol", "an http experiment measures HTTP over TCP"),
    ({"kind": "http", "http": {"threads": 4, "connections": 2}}, "http.connections",
     "wrk needs at least one connection per thread"),
    ({"kind": "http", "http": {"modes": ["keepalive", "pipelined"]}}, "http.modes", "must be a list of distinct"),
    ({"kind": "http", "http": {"response_bytes": [0]}}, "http.response_bytes", "must be a list of distinct sizes"),
    ({"kind": "http", "http": {"worker": 1}}, "http.worker", "unknown key"),
    ({"kind": "udp", "protocol": "udp", "offered_pps": [1000]}, "offered_pps", "needs datagram_bytes"),
    ({"kind": "udp", "protocol": "udp", "datagram_bytes": [64, 64], "offered_pps": [1000]}, "datagram_bytes",
     "lists a size twice"),
    ({"kind": "udp", "protocol": "udp", "datagram_bytes": 64, "offered_pps": [1000], "offered_mbps": [1]},
     "offered_pps", "give the rates either in Mbit/s"),
    ({"kind": "headline", "offered_pps": [1000]}, "offered_pps", "only for protocol: udp"),
    ({"kind": "headline", "socket_buffer_bytes": 1 << 20, "backend": "python"}, "socket_buffer_bytes",
     "iperf3 -w needs backend: cli"),
])
def test_a_kind_s_own_rules_run_when_its_config_loads(doc: dict, key: str, message: str) -> None:
    base = {"name": "t", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}
    with pytest.raises(ConfigError) as e:
        parse_config({**base, **doc}, "x.yaml")
    assert any(p.startswith(f"x.yaml: {key}: {message}") for p in e.value.problems), e.value.problems


def test_probe_settings_only_for_probe_kinds() -> None:
    base = {"name": "t", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}
    assert parse_config({**base, "kind": "latency"}).probe is not None
    assert parse_config({**base, "kind": "headline"}).probe is None


def test_measuring_and_validating_do_not_load_matplotlib() -> None:
    code = ("import sys; import harness.cli, harness.define.load, harness.measure.runner, harness.kinds; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------- a kind added in one place (the README walkthrough)


@dataclass(frozen=True)
class _MaxSummary:
    per_path: tuple[tuple[str, Summary], ...]


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> _MaxSummary:
    paths = rs.header.config.paths
    return _MaxSummary(tuple((p, summarise(r.throughput_mbps for r in rs.records if r.path == p and r.ok))
                             for p in paths))


def _section(fs: FileSummary[_MaxSummary], ctx: ReportContext) -> list[str]:
    return [table(["Path", "Max, Mbit/s"], [[f"`{p}`", fmt_mbps(s.max)] for p, s in fs.summary.per_path])]


def _figures(fs: FileSummary[_MaxSummary]) -> dict:
    fig, ax = new_figure("Max throughput", caption(fs.header))
    ax.bar([p for p, _ in fs.summary.per_path], [s.max or 0.0 for _, s in fs.summary.per_path])
    return {"max": finish(fig)}


def _check(d: ConfigDraft, add: Add) -> None:
    if len(d.paths) < 2:
        add("paths", "a maxima experiment compares at least two paths")


MAXIMA = Kind(name="maxima", driver="iperf3", summarise=_summarise, section=_section, figures=_figures,
              check=_check)


def test_a_kind_registered_in_one_place_is_validated_measured_reported_and_plotted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(KINDS, "maxima", MAXIMA)  # the one registration
    base = {"name": "m", "kind": "maxima", "rounds": 1, "seconds": 1, "omit_seconds": 0}
    assert parse_config({**base, "paths": ["direct", "standalone"]}).kind == "maxima"
    with pytest.raises(ConfigError, match="a maxima experiment compares at least two paths"):
        parse_config({**base, "paths": ["direct"]})
    assert isinstance(driver_for("maxima"), IperfDriver)
    headline = next(rs for rs in load_results_dir(FIXTURES / "results" / "smoke") if rs.header.kind == "headline")
    rs = ResultSet(tmp_path / "maxima.jsonl", replace(headline.header, kind="maxima"), headline.records, headline.events)
    summaries = summarise_results([rs])
    text = render_report(summaries)
    assert "## headline (maxima)" in text and "| Path | Max, Mbit/s |" in text and "no section for kind" not in text
    written = dump_plots(summaries.files, tmp_path)
    assert [p.name for p in written["maxima.jsonl"]] == ["maxima-max.png", "maxima-max.svg"]
