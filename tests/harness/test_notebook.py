"""notebooks/analysis.ipynb executes top to bottom (nbclient, a real kernel of this Python) on the
committed fixture result set and on parts of it, so it cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from tests.harness.test_report import copy_results

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
KERNEL = "portunus-test"
# Kernel start-up plus pandas and matplotlib imports on a loaded 2-core host.
CELL_TIMEOUT_S = 180


@pytest.fixture
def kernel_of_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter (the project venv), found before any user-wide spec."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Portunus (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def execute(kernel: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell("import sys; print('kernel python:', sys.executable)"))
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All text output, and how many PNG images were shown."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                images += "image/png" in out.data
                text.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
    return "\n".join(text), images


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)


@pytest.mark.timeout(300)
def test_notebook_executes_on_the_committed_fixture_set(kernel_of_this_python: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTUNUS_RESULTS", raising=False)  # the default: tests/fixtures/results/smoke
    text, images = outputs(execute(kernel_of_this_python))
    assert f"kernel python: {sys.executable}" in text
    assert "4 result file(s), 52 measurement(s), 0 failed" in text
    assert "| Offered, Mbit/s | `direct` | % |" in text  # the report's tables
    assert "cv_pct" in text and "mbps_per_busy_core" in text  # the two analyses
    assert images == 6  # five report figures + throughput vs CPU


@pytest.mark.timeout(300)
@pytest.mark.parametrize("only", [("sweep",), ("capped",)], ids=["sweep-only", "capped-only"])
def test_notebook_executes_on_any_result_directory(kernel_of_this_python: str, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, only: tuple[str, ...]) -> None:
    d = copy_results(tmp_path / "r", only=only)
    monkeypatch.setenv("PORTUNUS_RESULTS", str(d))
    text, _ = outputs(execute(kernel_of_this_python))
    assert f"PosixPath('{d}')" in text and "1 result file(s)" in text
