"""notebooks/analysis.ipynb as a user runs it: `jupyter execute` from the repository root on every
committed result directory and on the fixture set, its cross-check against report.md passing there
and failing on a report that disagrees.

Every run is real: the project's jupyter, a kernel of this venv's Python, the committed result
files, git for which of them are committed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from harness.kinds import KINDS
from harness.records.results import load_results_dir
from tests.harness.test_analysis_support import support
from tests.harness.test_report import SMOKE, copy_results

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
BIN = Path(sys.executable).parent

# Kernel start-up plus pandas and matplotlib imports on a loaded 2-core host.
CELL_TIMEOUT_S = 300
EXECUTE_TIMEOUT_S = 600


def jupyter_env(tmp: Path, results: str | None) -> dict[str, str]:
    """This environment with Jupyter's and IPython's per-user directories in tmp (nothing in ~ is
    read or written) and PORTUNUS_RESULTS set to `results` or unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORTUNUS_RESULTS", "JUPYTER_PATH", "RESULTS")}
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        (tmp / "jupyter-home" / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(tmp / "jupyter-home" / sub)
    if results is not None:
        env["PORTUNUS_RESULTS"] = results
    return env


def jupyter_execute(tmp: Path, results: str | None, *extra: str) -> nbformat.NotebookNode:
    """`PORTUNUS_RESULTS=<results> jupyter execute notebooks/analysis.ipynb` from the repository root;
    the executed copy goes to tmp (the committed notebook is not touched)."""
    out = tmp / "executed"
    proc = subprocess.run([str(BIN / "jupyter"), "execute", "notebooks/analysis.ipynb", f"--output={out}",
                           f"--timeout={CELL_TIMEOUT_S}", *extra],
                          cwd=REPO, env=jupyter_env(tmp, results), capture_output=True, text=True,
                          timeout=EXECUTE_TIMEOUT_S)
    assert proc.returncode == 0, f"jupyter execute failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return nbformat.read(out.with_suffix(".ipynb"), as_version=4)


def outputs(nb: nbformat.NotebookNode) -> tuple[str, int, list[str]]:
    """All text output, how many PNG images were shown, and the errors raised (name: value)."""
    text, images, errors = [], 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                images += "image/png" in out.data
                text.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
            elif out.output_type == "error":
                errors.append(f"{out.ename}: {out.evalue}")
    return "\n".join(text), images, errors


def committed_dirs() -> list[str]:
    return [str(d.relative_to(REPO)) for d in support.committed_run_dirs(REPO)]


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not stale, (f"code cells {stale} of {NOTEBOOK} hold outputs: clear them before committing "
                       "(JupyterLab: Edit > Clear Outputs of All Cells, then save)")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_there_is_a_committed_result_directory() -> None:
    assert committed_dirs(), "no committed result directory under results/: the notebook test below runs on none"


@pytest.mark.timeout(EXECUTE_TIMEOUT_S + 60)
@pytest.mark.parametrize("results", committed_dirs())
def test_jupyter_execute_on_every_committed_result_directory(tmp_path: Path, results: str) -> None:
    """The README's command, with a path relative to the repository root, and the cross-check passing."""
    d = REPO / results
    text, images, errors = outputs(jupyter_execute(tmp_path, results))
    assert not errors
    assert f"Results directory: {d}\n  chosen by: PORTUNUS_RESULTS={results}, relative to the repository root" in text
    assert f"Kernel Python: {BIN}" in text
    sets = load_results_dir(d)
    assert f"{len(sets)} result file(s), {sum(len(rs.records) for rs in sets)} measurement(s)" in text
    for rs in sets:  # every file is listed, and shown in its kind's section
        assert rs.path.name in text and f"### {rs.header.experiment} ({rs.header.kind})" in text
    kinds = {rs.header.kind for rs in sets}
    for kind in set(KINDS) - kinds:
        assert f"*No `{kind}` result file in `{d.name}`" in text
    assert images >= len(sets)
    m = re.search(r"Cross-check passed: (\d+) median\(s\) in (\d+) file\(s\) equal (\S+)\.", text)
    assert m, "the cross-check against report.md did not run"
    assert int(m.group(1)) >= len(sets) and int(m.group(2)) == len(sets)
    assert m.group(3) == f"{results}/report.md"
    assert "Not cross-checked" not in text


@pytest.mark.timeout(EXECUTE_TIMEOUT_S + 60)
def test_jupyter_execute_on_the_committed_fixture_set(tmp_path: Path) -> None:
    results = str(SMOKE.relative_to(REPO))
    text, images, errors = outputs(jupyter_execute(tmp_path, results))
    assert not errors
    assert f"Results directory: {SMOKE}" in text
    assert "4 result file(s), 52 measurement(s), 0 failed" in text
    assert "| Offered, Mbit/s | `direct` | % |" in text  # the report's tables
    assert "cv_pct" in text and "mbps_per_busy_core" in text  # the two analyses
    assert "One topology in this directory" in text
    assert images == 6  # five report figures + throughput vs CPU
    assert f"Cross-check passed: 27 median(s) in 4 file(s) equal {results}/report.md." in text


@pytest.mark.timeout(EXECUTE_TIMEOUT_S + 60)
def test_other_kinds_render_from_their_summary_and_the_cross_check_fails_on_a_wrong_report(
        tmp_path: Path) -> None:
    """A kind the notebook has no section for (`http`, as a newer harness would write) is shown
    from its summary; a report.md whose sweep cell differs from the measurements fails the check."""
    d = copy_results(tmp_path / "run", only=("sweep",))
    lines = (SMOKE / "headline.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    header.update(kind="http", experiment="http")
    header["config"].update(kind="http", name="http", description="Requests per second through every path.")
    body = [json.loads(x) for x in lines[1:]]
    for line in body:
        if line.get("type") == "measurement":
            line["experiment"] = "http"
    (d / "http.jsonl").write_text("\n".join(json.dumps(x) for x in [header, *body]) + "\n")
    report = subprocess.run([str(BIN / "portunus-bench"), "report", str(d)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    # The report's sweep row at 100 Mbit/s with a `direct` cell that no measurement gave.
    text = (d / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 100 | "))
    cells = row.split(" | ")
    true_value = cells[1]
    cells[1] = "999.9"
    (d / "report.md").write_text(text.replace(row, " | ".join(cells)))

    out, _, errors = outputs(jupyter_execute(tmp_path, str(d), "--allow-errors"))
    assert f"Results directory: {d}\n  chosen by: PORTUNUS_RESULTS={d}\n" in out  # absolute: taken as is
    assert "*No `headline` result file in `run`" in out
    assert "### Kind `http`: `http.jsonl`" in out and "**Question:** Requests per second through every path." in out
    assert "This version of the report has no section for kind `http`" in out  # its report section
    assert "throughput_mbps_median" in out  # its summary as a table
    assert len(errors) == 1 and errors[0].startswith("AssertionError: ")
    assert errors[0].endswith(
        f"disagrees with the medians computed here:\nsweep.jsonl: `direct` at 100 Mbit/s: computed {true_value}, "
        "report.md says 999.9")
    assert re.search(r"http\.jsonl\s+http\s+5", out)  # the fallback table was compared too


@pytest.fixture
def kernel_of_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter (the project venv), found before any user-wide spec."""
    spec = tmp_path / "jupyter" / "kernels" / "portunus-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Portunus (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "portunus-test"


@pytest.mark.timeout(CELL_TIMEOUT_S + 60)
def test_the_default_is_the_newest_committed_run(kernel_of_this_python: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """PORTUNUS_RESULTS unset: the notebook's first cell picks what `make notebook` opens."""
    monkeypatch.delenv("PORTUNUS_RESULTS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:first + 1]
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_of_this_python,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text, _, _ = outputs(nb)
    newest = REPO / committed_dirs()[-1]
    assert f"Results directory: {newest}\n  chosen by: PORTUNUS_RESULTS not set: the newest committed run" in text
    cli = subprocess.run([sys.executable, "notebooks/analysis_support.py", "resolve"], cwd=REPO,
                         capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.strip() == committed_dirs()[-1]

