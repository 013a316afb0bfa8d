"""Report sections and plots of the peers / latency / connrate / udp kinds, from a real result set.

tests/fixtures/peers holds a real shortened run of the four experiments; its
rendered sections are compared to a golden file, and its plots are drawn.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.kinds import summarise_results
from harness.kinds.connrate import summarise_connrate
from harness.kinds.latency import summarise_latency
from harness.kinds.peers import NOT_MEASURED, summarise_peers
from harness.kinds.udp import summarise_udp
from harness.present.plots import dump_plots, figures_for
from harness.present.report import render_report
from harness.records.results import ResultSet, load_results_dir
from tests.harness.golden import assert_matches_golden, render_kind_sections

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peers"
GOLDEN = FIXTURES / "sections.md"
KINDS = ("peers", "latency", "connrate", "udp")


def _sets():
    sets = load_results_dir(FIXTURES)
    assert sorted(rs.header.kind for rs in sets) == sorted(KINDS)
    return sets


def render_sections() -> str:
    return render_kind_sections(_sets(), KINDS)


def test_sections_match_golden_file() -> None:
    assert_matches_golden(render_sections(), GOLDEN)


def test_sections_say_what_a_reader_needs() -> None:
    text = render_sections()
    for name in NOT_MEASURED:
        assert name in text and "Debian 12" in text  # Envoy: said, not silently missing
    assert "rinetd: no TCP half-close" in text
    assert "Floor (`direct`" in text and "Ceiling (`direct`" in text
    assert "UDP receiver counters are invalid" in text  # rinetd's UDP failure, with the reason
    assert "All experiments of this directory at a glance" in text  # the measured comparison table
    assert "(spliced: pipes seen)" in text and "(no splice: no pipes seen)" in text


def test_summaries_of_the_fixture_are_consistent() -> None:
    sets = {rs.header.kind: rs for rs in _sets()}
    peers = summarise_peers(sets["peers"].records, sets["peers"].header.config.paths)
    assert tuple(r.path for r in peers.rows) == sets["peers"].header.config.paths
    ipt = peers.get("iptables")
    assert ipt is not None and ipt.pct_of_iptables == 100.0
    splice = peers.get("haproxy_splice")
    assert splice is not None and splice.spliced is True
    lat = summarise_latency(sets["latency"].records)
    assert lat.floor is not None and lat.floor.added_rtt_us == 0.0
    cr = summarise_connrate(sets["connrate"].records)
    assert cr.ceiling is not None and cr.ceiling.pct_of_ceiling == 100.0
    udp = summarise_udp(sets["udp"].records)
    assert set(udp.rates_mbps) == {100.0, 500.0, 1000.0}
    rinetd = udp.cell("rinetd", 100.0)
    assert rinetd is not None and rinetd.delivered_mbps.n == 0 and rinetd.n_failed == 2


def test_plots_of_each_kind(tmp_path: Path) -> None:
    files = summarise_results(_sets()).files
    names = {name for fs in files for name in figures_for(fs)}
    assert names == {"peers-throughput", "latency-latency", "connrate-rate", "udp-udp"}
    written = dump_plots(files, tmp_path)
    files = sorted(p.name for ps in written.values() for p in ps)
    assert len(files) == 8 and all((tmp_path / f).stat().st_size > 1000 for f in files)


def test_whole_report_renders_with_the_new_kinds() -> None:
    text = render_report(summarise_results(_sets()))
    for kind in KINDS:
        assert f"## {kind} ({kind})" in text


def test_what_a_path_is_comes_from_the_file_not_the_path_classes() -> None:
    """The report reads path facts from the header: change them there and the report follows."""
    sets = _sets()
    peers = next(rs for rs in sets if rs.header.kind == "peers")
    facts = dict(peers.header.path_facts)
    facts["rinetd"] = replace(facts["rinetd"], half_close=True)
    facts["socat"] = replace(facts["socat"], half_close=False, forwarder_process=False)
    edited = ResultSet(peers.path, replace(peers.header, path_facts=facts), peers.records, peers.events)
    text = render_report(summarise_results([edited if rs is peers else rs for rs in sets]))
    assert "socat: no TCP half-close" in text and "rinetd: no TCP half-close" not in text
    assert "rinetd: no TCP half-close" in render_sections()  # what the committed file says
