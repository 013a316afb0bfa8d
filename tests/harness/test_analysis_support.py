"""notebooks/analysis_support.py: which result directory the notebook loads (a relative one from the
repository root, by default the newest committed run, by git), report.md's tables read back, and any
kind's summary as rows. Real git repositories and the committed fixture results."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.kinds import summarise_results
from harness.kinds.headline import HeadlineSummary
from harness.kinds.sweep import SweepSummary
from harness.present.format import fmt_mbps
from harness.records.results import load_results_dir
from tests.harness.test_report import SMOKE

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "notebooks"))
support: Any = importlib.import_module("analysis_support")  # a script next to the notebook, not a package

def test_relative_results_are_taken_from_the_repository_root(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.chdir(REPO / "notebooks")  # where Jupyter starts the kernel
    rel = str(SMOKE.relative_to(REPO))
    assert support.resolve_results(rel, REPO)[0] == SMOKE
    assert support.resolve_results(str(SMOKE), REPO)[0] == SMOKE
    assert support.repo_root(Path.cwd()) == REPO
    with pytest.raises(support.ResultsDirError, match=r"results/nope is not a directory \(PORTUNUS_RESULTS="
                                                      r"results/nope, relative to the repository root"):
        support.resolve_results("results/nope", REPO)
    with pytest.raises(support.ResultsDirError, match=r"holds no result files"):
        support.resolve_results(str(tmp_path), REPO)
    bad = subprocess.run([sys.executable, "notebooks/analysis_support.py", "resolve", "results/nope"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "results/nope is not a directory" in bad.stderr


def _commit(repo: Path, when: str, *files: str) -> None:
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text(f"{f} {when}\n")
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    subprocess.run(["git", "-C", str(repo), "add", *files], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", "commit",
                    "-q", "-m", when], check=True, env=env)


def test_the_newest_committed_run_is_the_last_one_committed(tmp_path: Path) -> None:
    """Only committed result files count; a directory's age is its result files' last commit."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    _commit(repo, "2026-01-01T00:00:00Z", "results/b-run/headline.jsonl")
    _commit(repo, "2026-01-02T00:00:00Z", "results/a-run/sweep.jsonl", "results/baselines/microbench.json")
    assert [d.name for d in support.committed_run_dirs(repo)] == ["b-run", "a-run"]
    _commit(repo, "2026-01-03T00:00:00Z", "results/b-run/udp.jsonl")
    _commit(repo, "2026-01-04T00:00:00Z", "results/a-run/report.md")  # not a result file
    (repo / "results" / "c-run").mkdir()
    (repo / "results" / "c-run" / "headline.jsonl").write_text("{}\n")  # not committed
    assert [d.name for d in support.committed_run_dirs(repo)] == ["a-run", "b-run"]
    assert support.newest_committed_run(repo) == repo / "results" / "b-run"
    with pytest.raises(support.ResultsDirError, match="git cannot list"):
        support.committed_run_dirs(tmp_path / "not-a-repo")


def test_report_tables_are_read_back_as_the_harness_wrote_them() -> None:
    """The fixture's report.md, parsed: each file's section, and cells equal to the summaries'."""
    sections = support.report_sections((SMOKE / "report.md").read_text())
    assert sorted(sections) == sorted(p.name for p in SMOKE.glob("*.jsonl"))
    files = {fs.result_set.path.name: fs for fs in summarise_results(load_results_dir(SMOKE)).files}
    sweep: SweepSummary = files["sweep.jsonl"].summary
    tables = support.markdown_tables(sections["sweep.jsonl"])
    for row in sweep.rows:
        cell = next(c for t in tables if (c := t.cell(f"`{row.path}`", {"Offered, Mbit/s": f"{row.offered_mbps:,.0f}"})))
        assert cell == fmt_mbps(row.delivered_mbps.median)
    head: HeadlineSummary = files["headline.jsonl"].summary
    tables = support.markdown_tables(sections["headline.jsonl"])
    for p in head.paths:
        cell = tables[0].cell(f"`{p.path}`", {"": "Throughput, Mbit/s: median [min–max]"})
        assert cell is not None and support.first_word(cell) == fmt_mbps(p.throughput_mbps.median)
    assert tables[0].cell("`nope`", {"": "Runs (n)"}) is None


def test_any_summary_becomes_rows() -> None:
    files = {fs.result_set.path.name: fs for fs in summarise_results(load_results_dir(SMOKE)).files}
    head: HeadlineSummary = files["headline.jsonl"].summary
    rows = support.summary_rows(head)
    assert [r["path"] for r in rows] == [p.path for p in head.paths]
    iptables = next(r for r in rows if r["path"] == "iptables")
    assert iptables["throughput_mbps_median"] == head.get("iptables").throughput_mbps.median  # type: ignore[union-attr]
    assert iptables["throughput_mbps_n"] == 2 and iptables["vs_pct_iptables"] == 100.0
