"""Report markdown: golden file rendered from real result files (tests/fixtures/results)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.experiments import summarise_headline
from harness.report import fmt_mbps, fmt_range, render_headline_table, render_report
from harness.results import load_results_dir
from harness.stats import summarise
from tests.harness.conftest import FIXTURES
from tests.harness.test_results import record

RESULTS = FIXTURES / "results"
GOLDEN = RESULTS / "report.md"


def test_report_matches_golden_file() -> None:
    """Regenerate after an intended change with: UPDATE_GOLDEN=1 pytest tests/harness/test_report.py"""
    text = render_report(load_results_dir(RESULTS))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_report_sections_in_kind_order() -> None:
    text = GOLDEN.read_text()
    assert text.index("## headline") < text.index("## ab") < text.index("## capped")


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


def test_empty_dir(tmp_path: Path) -> None:
    assert "No result files found." in render_report(load_results_dir(tmp_path))
