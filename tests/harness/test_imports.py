"""Imports run one way: analysis (records, summarise, kinds, present, gate) never reaches measurement,
paths or sites; statistics never reach presentation; the product never imports the harness."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "harness"

# What running a measurement needs, and what analysis must work without (a report of an old file
# renders from the file alone: what it needs about a path is in the header's path_facts).
MEASURING = ("harness.measure", "harness.paths", "harness.site", "harness.define.load", "harness.define.plan",
             "harness.commands", "harness.cli")
OFFLINE = ("records", "summarise", "kinds", "present", "gate")
# stage -> module prefixes its modules may not import (on top of MEASURING for the offline ones)
FORBIDDEN = {
    "records": ("harness.summarise", "harness.kinds", "harness.present", "harness.gate"),
    "summarise": ("harness.kinds", "harness.present", "harness.gate"),
    "kinds": ("harness.gate",),
    "present": (),
    "gate": (),
}


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module an import statement of this file names (relative imports resolved in package)."""
    tree = ast.parse(path.read_text(), str(path))
    if package is None:
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from harness import procs` names a module
    return out


def _hits(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("stage", OFFLINE)
def test_analysis_stages_import_no_measurement_path_or_site_module(stage: str) -> None:
    bad = {}
    for f in sorted((HARNESS / stage).rglob("*.py")):
        hits = _hits(imported_modules(f), MEASURING + FORBIDDEN[stage])
        if hits:
            bad[str(f.relative_to(REPO))] = hits
    assert not bad, f"{stage}/ must read result files alone; these imports reach further: {bad}"


def test_analysis_stages_do_not_load_measurement_modules_indirectly() -> None:
    """Import every analysis module in a fresh interpreter: nothing of MEASURING may end up loaded."""
    modules = sorted(".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                     for stage in OFFLINE for f in (HARNESS / stage).rglob("*.py"))
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({MEASURING!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"loaded by analysis modules: {out.stdout.split()}"


def test_the_product_never_imports_the_harness() -> None:
    bad = {str(f.relative_to(REPO)): _hits(imported_modules(f), ("harness", "benchmarks", "tests"))
           for f in sorted((REPO / "portunus").rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


def test_the_checker_sees_each_kind_of_import(tmp_path: Path) -> None:
    """The rules above are only as good as imported_modules: plain, from-, nested and relative imports."""
    f = tmp_path / "m.py"
    f.write_text("import harness.site.procs\nfrom harness.paths import PATHS\nfrom harness import measure\n"
                 "def f():\n    from harness.define import load\nfrom ..commands import run\n")
    assert _hits(imported_modules(f, "harness.present"), MEASURING) == [
        "harness.commands", "harness.commands.run", "harness.define.load", "harness.measure", "harness.paths",
        "harness.paths.PATHS", "harness.site.procs"]
