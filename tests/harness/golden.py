"""Golden-file helpers of the report tests: kind sections rendered from a real result set, and the
comparison with a committed file (rewritten instead with PORTUNUS_UPDATE_GOLDEN=1 after an intended
change; review the diff)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.kinds import summarise_results
from harness.kinds.base import ReportContext
from harness.records.results import ResultSet


def render_kind_sections(sets: Sequence[ResultSet], kinds: Iterable[str]) -> str:
    """The report sections of each kind in `kinds`, in that order, from one summarised result set."""
    files = summarise_results(sets).files
    ctx = ReportContext(files)
    out = []
    for kind in kinds:
        fs = next(f for f in files if f.header.kind == kind)
        out.append(f"<!-- {kind} -->\n\n" + "\n\n".join(fs.kind.section(fs, ctx)))
    return "\n\n".join(out) + "\n"


def assert_matches_golden(text: str, golden: Path) -> None:
    """`text` equals the committed golden file (or becomes it, with PORTUNUS_UPDATE_GOLDEN=1)."""
    if os.environ.get("PORTUNUS_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
