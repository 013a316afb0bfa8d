"""What notebooks/analysis.ipynb needs besides the harness: which result directory to read, the
tables of its report.md, and a flat view of any kind's summary.

`make notebook` runs `python notebooks/analysis_support.py resolve [DIR]` to choose the directory;
tests/harness/test_notebook.py runs the notebook on every directory `committed` lists.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV = "PORTUNUS_RESULTS"
RESULTS = "results"  # committed runs live in results/<run>/ (next to baselines and other benchmark files)
SUFFIX = ".jsonl"  # a result file (harness.records.results.SUFFIX)


class ResultsDirError(Exception):
    """The result directory asked for (or the default) cannot be used; the message says why."""


def repo_root(start: Path) -> Path:
    """The Portunus checkout holding `start` (pyproject.toml and harness/ at its top)."""
    start = start.resolve()
    for d in [start, *start.parents]:
        if (d / "pyproject.toml").is_file() and (d / "harness").is_dir():
            return d
    raise ResultsDirError(f"{start} is not inside a Portunus checkout (no pyproject.toml with harness/ above it)")


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        why = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
        raise ResultsDirError(f"git cannot list the committed result files of {root} ({why}): "
                              f"name a directory with {ENV}=results/<run>") from e
    return out.stdout


def committed_run_dirs(root: Path) -> list[Path]:
    """Directories under results/ holding committed result files, oldest first.

    Order: the commit time of the last commit that changed the directory's result files, then name.
    """
    files = _git(root, "ls-files", "-z", "--", f"{RESULTS}/*{SUFFIX}").split("\0")
    dirs = sorted({(root / f).parent for f in files if f})
    when = {d: int(_git(root, "log", "-1", "--format=%ct", "--", f"{d.relative_to(root)}/*{SUFFIX}").strip() or 0)
            for d in dirs}
    return sorted(dirs, key=lambda d: (when[d], d.name))


def newest_committed_run(root: Path) -> Path:
    dirs = committed_run_dirs(root)
    if not dirs:
        raise ResultsDirError(f"no committed result files (*{SUFFIX}) under {root / RESULTS}: "
                              f"name a directory with {ENV}=<dir>")
    return dirs[-1]


def resolve_results(value: str | None, root: Path) -> tuple[Path, str]:
    """The result directory to load and how it was chosen.

    value: PORTUNUS_RESULTS as given (None or empty: the newest committed run). A relative path is
    taken from the repository root, wherever the kernel runs (Jupyter starts it in notebooks/).
    """
    if value:
        given = Path(value).expanduser()
        d = given if given.is_absolute() else root / given
        how = f"{ENV}={value}" + ("" if given.is_absolute() else f", relative to the repository root {root}")
    else:
        d = newest_committed_run(root)
        how = f"{ENV} not set: the newest committed run directory under {root / RESULTS}"
    d = d.resolve()
    if not d.is_dir():
        raise ResultsDirError(f"{d} is not a directory ({how})")
    if not any(d.glob(f"*{SUFFIX}")):
        raise ResultsDirError(f"{d} holds no result files (*{SUFFIX}) ({how})")
    return d, how


# ---------------------------------------------------------------- report.md


@dataclasses.dataclass(frozen=True)
class Table:
    """One markdown table of a report: its header cells and rows of cells, as written."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def cell(self, column: str, keys: Mapping[str, str]) -> str | None:
        """The cell under `column` in the row whose key columns say the given text, if any.

        A key cell matches in full or on its first word: "`direct` (floor)" is `direct`, "18,000 ‡"
        is 18,000, "**median**" is median.
        """
        if column not in self.header or any(k not in self.header for k in keys):
            return None
        at = self.header.index(column)
        for row in self.rows:
            if len(row) == len(self.header) and all(
                    row[self.header.index(k)] == v or first_word(row[self.header.index(k)]) == v
                    for k, v in keys.items()):
                return row[at]
        return None


def first_word(cell: str) -> str:
    """What a cell starts with, bold marks removed: the median of "22,031 [17,585–24,479]"."""
    return cell.strip().split(" ", 1)[0].strip("*")


def markdown_tables(text: str) -> list[Table]:
    """Every pipe table in a markdown text (header row, separator row, body)."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            header = _cells(lines[i])
            j, rows = i + 2, []
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(_cells(lines[j]))
                j += 1
            tables.append(Table(header, tuple(rows)))
            i = j
        else:
            i += 1
    return tables


def _cells(line: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in line.strip().strip("|").split("|"))


def report_sections(text: str) -> dict[str, str]:
    """report.md's section of each result file, by file name (the section's run line names it)."""
    out = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        m = re.search(rf"^`([^`]+{re.escape(SUFFIX)})`: ", section, flags=re.M)
        if m:
            out[m.group(1)] = section
    return out


# ---------------------------------------------------------------- summaries


def summary_rows(summary: Any) -> list[dict[str, Any]]:
    """Any kind's summary as flat rows: one per item of its first tuple of dataclasses (paths, rows),
    else one for the summary itself; a Summary field becomes <name>_n/_median/_min/_max."""
    items: Sequence[Any] = [summary]
    for f in dataclasses.fields(summary):
        v = getattr(summary, f.name)
        if isinstance(v, tuple) and v and all(dataclasses.is_dataclass(x) for x in v):
            items = v
            break
    return [_flat(x) for x in items]


def _flat(obj: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v) and {"n", "median", "min", "max"} <= {g.name for g in dataclasses.fields(v)}:
            row.update({f"{f.name}_{k}": getattr(v, k) for k in ("n", "median", "min", "max")})
        elif v is None or isinstance(v, (str, int, float, bool)):
            row[f.name] = v
        elif isinstance(v, Mapping) and all(isinstance(x, (int, float, type(None))) for x in v.values()):
            row.update({f"{f.name}_{k}": x for k, x in v.items()})
    return row


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str]) -> int:
    """`resolve [DIR]`: the directory to open (relative to the root); `committed`: every committed run."""
    try:
        root = repo_root(Path.cwd())
        if argv and argv[0] == "resolve" and len(argv) <= 2:
            d, _ = resolve_results(argv[1] if len(argv) == 2 else None, root)
            print(d.relative_to(root) if d.is_relative_to(root) else d)
            return 0
        if list(argv) == ["committed"]:
            print("\n".join(str(d.relative_to(root)) for d in committed_run_dirs(root)))
            return 0
    except ResultsDirError as e:
        print(f"analysis_support: {e}", file=sys.stderr)
        return 2
    print("usage: analysis_support.py resolve [DIR] | committed", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
