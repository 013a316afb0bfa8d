"""Report markdown: golden file rendered from a real result set (tests/fixtures/results/smoke),
section dispatch by kind, the sweep / cap / stability parts, and the README results block."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessError
from harness.kinds import KINDS, summarise_results
from harness.kinds.ab import summarise_ab
from harness.kinds.capped import render_capped_table, summarise_capped
from harness.kinds.headline import render_headline_table, summarise_headline
from harness.kinds.sweep import render_sweep_findings, render_sweep_table, summarise_sweep
from harness.present.format import fmt_mbps, fmt_range, fmt_rate
from harness.present.readme import BEGIN_MARKER, END_MARKER, replace_results
from harness.present.report import render_report
from harness.records.header import Header
from harness.records.results import ResultSet, load_results_dir
from harness.summarise.stats import summarise
from tests.harness.conftest import FIXTURES
from tests.harness.test_results import record

SMOKE = FIXTURES / "results" / "smoke"
GOLDEN = SMOKE / "report.md"


def copy_results(dst: Path, src: Path = SMOKE, only: tuple[str, ...] = ()) -> Path:
    """The fixture's result files (not its report or plots) in a fresh directory."""
    dst.mkdir(parents=True)
    for f in src.glob("*.jsonl"):
        if not only or f.stem in only:
            shutil.copy(f, dst / f.name)
    return dst


def test_report_matches_golden_file(tmp_path: Path) -> None:
    """Re-render after an intended change: make report RESULTS=tests/fixtures/results/smoke (review the diff)."""
    d = copy_results(tmp_path / "smoke")  # same name: the title carries the directory's name
    assert cli.main(["report", str(d)]) == 0
    assert (d / "report.md").read_text() == GOLDEN.read_text()
    # Every linked plot was drawn next to it.
    for link in re.findall(r"\]\((plots/[^)]+)\)", GOLDEN.read_text()):
        assert (d / link).stat().st_size > 0


def test_report_layout() -> None:
    text = GOLDEN.read_text()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == ["## Host", "## headline (headline)", "## ab (ab)", "## capped (capped)", "## sweep (sweep)"]
    assert text.count("```text") == 1, "the host block appears once when every file shares it"
    # The spec's tables: paths as columns, vs iptables / reference, CPU s/GB; pairs; caps; sweep with %.
    assert "| Throughput, Mbit/s: median [min–max] |" in text and "| vs `iptables` (ratio of medians) |" in text
    assert "| vs `reference` (ratio of medians) |" in text and "| Forwarder CPU, s/GB: median |" in text
    assert "| Round | `standalone`, Mbit/s | `client`, Mbit/s | standalone / client |" in text
    assert "| Offered, Mbit/s | `direct` | % | `iptables` | % | `standalone` | % | `client` | % |" in text
    assert "Capacity of this host: the `direct` path" in text and "40,000 ‡" in text
    assert "Delivered, Mbit/s: median [min–max]" in text and "Sender side, Mbit/s (not used)" in text


def test_cap_accuracy_uses_the_receiver_side() -> None:
    # Measured at a 64 KiB/s cap: iperf3's sender side said 0.0 Mbit/s, the receiver 0.5236 (target 0.5243).
    rec = record("client_capped", 1, 0.0, cap_bytes_per_s=65536, sender_mbps=0.0, receiver_mbps=0.5236)
    s = summarise_capped([rec])
    row = s.rows[0]
    assert row.within_goal and row.within_bound and row.error_pct == pytest.approx(-0.13, abs=0.01)
    table = render_capped_table(s)
    assert "| `client_capped` | 65,536 | 0.524 | 0.524 | -0.13% | yes (1/1 runs) | yes (1/1 runs) | 0.000 |" in table


def sweep_records() -> list:
    recs = []
    for rnd in (1, 2, 3):
        for path, delivered in (("direct", {1000: 1000.2, 20000: 19000.0}), ("standalone", {1000: 999.9, 20000: 9000.0 + rnd * 600})):
            for rate, mbps in delivered.items():
                recs.append(record(path, rnd, mbps, offered_mbps=float(rate)))
    return recs


def test_sweep_table_findings_and_capacity() -> None:
    unpaced = [record("direct", r, v) for r, v in ((1, 15000.0), (2, 16000.0), (3, 17000.0))]
    s = summarise_sweep(sweep_records(), ["direct", "standalone"], unpaced)
    table = render_sweep_table(s).splitlines()
    assert table[0] == "| Offered, Mbit/s | `direct` | % | `standalone` | % |"
    assert table[2] == "| 1,000 | 1,000 | 100.0% | 999.9 | 100.0% |"
    assert table[3] == "| 20,000 ‡ | 19,000 | 95.0% | 10,200 | 51.0% |"  # 20,000 > the direct median 16,000
    text = "\n".join(render_sweep_findings(s))
    assert "carries 16,000 [15,000–17,000] Mbit/s (unpaced `direct` runs of t)" in text
    assert "`direct` delivers ≥ 95% of the offered rate at every rate measured." in text
    assert ("`standalone` falls below 95% of the offered rate at 20,000 Mbit/s; first at 20,000: 10,200 Mbit/s "
            "delivered (51.0%, above the host's capacity; `direct` at that rate: 95.0%).") in text
    # Spread of standalone at 20,000: 9,600..10,800 = 12% of the median > 10%: flagged, with what to do.
    assert any("standalone" in n and "20,000 Mbit/s (spread 12%, n=3)" in n and "more rounds" in n for n in s.notes)


def test_sweep_without_unpaced_runs_bounds_the_capacity() -> None:
    s = summarise_sweep([r for r in sweep_records() if r.offered_mbps == 1000.0])
    assert s.capacity is not None and s.capacity.lower_bound and not s.above_capacity(1000.0)
    assert "its ceiling is higher" in "\n".join(render_sweep_findings(s))
    single = summarise_sweep([r for r in sweep_records() if r.round == 1])
    assert any("one run per path and rate" in n and "rounds >= 3" in n for n in single.notes)


def test_stability_warnings_say_why_and_what_to_do() -> None:
    recs = [record("standalone", 1, 90.0), record("client", 1, 100.0), record("standalone", 2, 110.0),
            record("client", 2, 100.0), record("standalone", 3, 100.0), record("client", 3, 101.0)]
    ab = summarise_ab(recs, "standalone", "client")
    assert len(ab.notes) == 1 and "do not agree on which is faster" in ab.notes[0] and "more rounds" in ab.notes[0]
    steady = [record("standalone", r, 120.0 + r) for r in (1, 2, 3)] + [record("client", r, 100.0) for r in (1, 2, 3)]
    assert summarise_ab(steady, "standalone", "client").notes == ()
    wide = summarise_headline([record("client", 1, 100.0), record("client", 2, 150.0)])
    assert any("spread (max-min) is 40%" in n and "more rounds" in n for n in wide.notes)


def test_headline_table_has_paths_as_columns() -> None:
    recs = [record("iptables", 1, 20000.0), record("iptables", 2, 22000.0), record("standalone", 1, 11000.0,
            cpu_s_per_gb=0.25), record("standalone", 2, 12000.0, cpu_s_per_gb=0.35)]
    table = render_headline_table(summarise_headline(recs, ["iptables", "standalone"]))
    lines = table.splitlines()
    assert lines[0] == "|  | `iptables` | `standalone` |"
    assert "| 21,000 [20,000–22,000] | 11,500 [11,000–12,000] |" in lines[2]
    assert "| vs `iptables` (ratio of medians) | 100.0% | 54.8% |" in table
    assert "| Forwarder CPU, s/GB: median | kernel (not attributable) | 0.300 |" in table


def test_number_formats() -> None:
    assert fmt_mbps(31935.997) == "31,936" and fmt_mbps(83.88) == "83.9" and fmt_mbps(8.3886) == "8.389"
    assert fmt_range(summarise([1.0])) == "1.000" and fmt_range(summarise([])) == "–"
    assert fmt_rate(100.0) == "100" and fmt_rate(12500.0) == "12,500" and fmt_rate(0.5) == "0.5"


def test_empty_dir(tmp_path: Path) -> None:
    assert "No result files found." in render_report(summarise_results(load_results_dir(tmp_path)))


def _with_kind(rs: ResultSet, kind: str, **sysinfo) -> ResultSet:
    h = rs.header
    header = Header(h.experiment, kind, h.created_at, h.config, replace(h.sysinfo, **sysinfo), h.argv,
                    h.unavailable_paths)
    return ResultSet(rs.path.with_name(f"{kind}.jsonl"), header, rs.records, rs.events)


def test_sections_dispatch_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    sets = load_results_dir(SMOKE)
    headline = next(rs for rs in sets if rs.header.kind == "headline")
    # A kind without a section still shows its throughput, and says it has no section.
    text = render_report(summarise_results([headline, _with_kind(headline, "future_kind")]))
    assert "## headline (future_kind)" in text and "no section for kind `future_kind`" in text
    # Registering a kind is one entry in KINDS; sections follow KINDS order.
    future = replace(KINDS["headline"], name="future_kind",
                     section=lambda fs, ctx: [f"custom section with {len(fs.result_set.records)} runs"])
    monkeypatch.setitem(KINDS, "future_kind", future)
    text = render_report(summarise_results([_with_kind(headline, "future_kind"), headline]))
    assert "custom section with 10 runs" in text and text.index("## headline (headline)") < text.index("## headline (future_kind)")


def test_a_file_from_another_commit_shows_its_own_host_block() -> None:
    sets = load_results_dir(SMOKE)
    other = _with_kind(next(rs for rs in sets if rs.header.kind == "ab"), "ab", commit="0123456789abcdef")
    text = render_report(summarise_results([*[rs for rs in sets if rs.header.kind != "ab"], other]))
    assert text.count("```text") == 2 and "Recorded on a different host or commit" in text
    assert "commit 0123456789ab" in text


# ---------------------------------------------------------------- README results block

README = f"""# Project

Intro.

## Results

How to read them (hand-written, kept).

{BEGIN_MARKER}
old generated text
{END_MARKER}

## After
"""


def test_replace_results_keeps_everything_outside_the_markers() -> None:
    out = replace_results(README, "| new | table |\n")
    assert out.startswith(README.split(BEGIN_MARKER)[0] + BEGIN_MARKER + "\n")
    assert out.endswith(END_MARKER + "\n\n## After\n") and "old generated text" not in out
    assert "| new | table |" in out
    assert replace_results(out, "| new | table |\n") == out  # idempotent
    for bad in ("no markers", f"{END_MARKER}\n{BEGIN_MARKER}\n", README + BEGIN_MARKER + "\n"):
        with pytest.raises(HarnessError, match="results:begin"):
            replace_results(bad, "x")


def test_readme_command_inserts_the_fixture_tables(tmp_path: Path) -> None:
    results = copy_results(tmp_path / "results" / "smoke")
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert cli.main(["readme", str(results), str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(README.split(BEGIN_MARKER)[0]) and text.endswith(f"{END_MARKER}\n\n## After\n")
    block = text.split(BEGIN_MARKER)[1].split(END_MARKER)[0]
    assert "Generated from `results/smoke`" in block and "`portunus-bench readme results/smoke README.md`" in block
    for head in ("### Host", "### headline (headline)", "### ab (ab)", "### capped (capped)", "### sweep (sweep)"):
        assert head in block
    # The same tables as the report.
    golden = GOLDEN.read_text()
    for table_line in ("| Offered, Mbit/s | `direct` | % |", "| Throughput, Mbit/s: median [min–max] |"):
        golden_line = next(line for line in golden.splitlines() if line.startswith(table_line))
        assert golden_line in block
    # Plot links are relative to the README and point at drawn files.
    links = re.findall(r"\]\(([^)]+\.png)\)", block)
    assert len(links) == 5 and all((tmp_path / link).stat().st_size > 0 for link in links)
    # Running it again replaces the block instead of adding another.
    assert cli.main(["readme", str(results), str(readme), "--no-plots"]) == 0
    assert readme.read_text().count(BEGIN_MARKER) == 1 and "](results/smoke/plots/" not in readme.read_text()


def test_readme_command_needs_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    assert cli.main(["readme", str(SMOKE), str(readme), "--no-plots"]) == 2
    assert readme.read_text() == "# no markers here\n"


def test_the_project_readme_takes_the_generated_block(tmp_path: Path) -> None:
    """README.md has the markers once, and `portunus-bench readme` fills them from a result set."""
    original = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert original.count(BEGIN_MARKER) == 1 and original.count(END_MARKER) == 1
    readme = tmp_path / "README.md"
    readme.write_text(original)
    results = copy_results(tmp_path / "results" / "smoke")
    assert cli.main(["readme", str(results), str(readme)]) == 0
    before, _, after = original.partition(BEGIN_MARKER)
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after.split(END_MARKER, 1)[1])
    assert "### sweep (sweep)" in text and "| Offered, Mbit/s |" in text


def test_a_netns_headline_says_what_its_retransmits_are() -> None:
    """The netns headline of a real run explains its retransmit row (issue 13); a loopback one has no such note."""
    from harness.kinds import summarise_file
    from harness.kinds.headline import NETNS_RETRANSMITS_EVIDENCE
    from harness.present.report import render_file
    from harness.records.results import load_results

    repo = Path(__file__).resolve().parents[2]
    netns = summarise_file(load_results(repo / "results/2026-11-25-vm/netns-headline.jsonl"))
    text = render_file(netns)
    assert "What the retransmits on netns are:" in text
    assert "spurious fast retransmits caused by reordering on veth, not packets the forwarder dropped" in text
    assert "D-SACK" in text and "`standalone` " in text and "x iptables)" in text
    # The evidence it names is in the repository.
    for part in ("benchmarks/netns_retransmits.py", "results/netns-retransmits/README.md"):
        assert part in NETNS_RETRANSMITS_EVIDENCE and (repo / part).exists()
    (loopback,) = [f for f in summarise_results(load_results_dir(SMOKE)).files if f.kind.name == "headline"]
    assert "What the retransmits" not in render_file(loopback)
