"""Plots drawn from the real fixture result set: files exist, are non-empty, axes are labelled."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness import cli
from harness.kinds import KINDS, summarise_file, summarise_results
from harness.present.plots import PLOTS_DIRNAME, caption, dump_plots, figures_for
from harness.records.results import load_results_dir
from tests.harness.test_report import SMOKE, _with_kind, copy_results

EXPECTED = {
    "headline.jsonl": ["headline-throughput"],
    "ab.jsonl": ["ab-ratio"],
    "capped.jsonl": ["capped-accuracy"],
    "sweep.jsonl": ["sweep-delivered", "sweep-ratio"],
}


def test_every_figure_of_the_fixture_set_is_written_as_png_and_svg(tmp_path: Path) -> None:
    sets = load_results_dir(SMOKE)
    written = dump_plots(summarise_results(sets).files, tmp_path)
    assert {k: sorted({p.stem for p in v}) for k, v in written.items()} == EXPECTED
    labels = {name: (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel())
              for rs in sets for name, fig in figures_for(summarise_file(rs, sets)).items()}
    commit = (sets[0].header.sysinfo.commit or "")[:12]
    for files in written.values():
        for p in files:
            data = p.read_bytes()
            assert len(data) > 10_000, p
            if p.suffix == ".png":
                assert data.startswith(b"\x89PNG\r\n\x1a\n")
                continue
            svg = data.decode()
            # Text stays text in the SVG: axis labels and the caption are searchable.
            xlabel, ylabel = labels[p.stem]
            assert "<svg" in svg and xlabel in svg and ylabel in svg, p
            assert f"commit {commit}" in svg, p


def test_axes_are_labelled_with_units_and_captioned(tmp_path: Path) -> None:
    sets = load_results_dir(SMOKE)
    for rs in sets:
        cap = caption(rs.header)
        si = rs.header.sysinfo
        assert si.hostname and si.hostname in cap and (si.commit or "?")[:12] in cap
        for name, fig in figures_for(summarise_file(rs, sets)).items():
            (ax,) = fig.axes
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), name
            assert any(u in ax.get_ylabel() for u in ("Mbit/s", "%")), (name, ax.get_ylabel())
            assert ax.get_legend() is not None and ax.get_legend().get_texts(), name
            assert cap in [t.get_text() for t in fig.texts], name


def test_sweep_figures_show_the_ideal_line_and_every_path() -> None:
    sets = load_results_dir(SMOKE)
    sweep = next(rs for rs in sets if rs.header.kind == "sweep")
    figs = figures_for(summarise_file(sweep, sets))
    legend = [t.get_text() for t in figs["sweep-delivered"].axes[0].get_legend().get_texts()]
    assert "ideal (delivered = offered)" in legend
    for path in sweep.header.config.paths:
        assert path in legend
    # The capacity comes from the headline file of the same directory.
    assert any(t.startswith("direct capacity") for t in legend)
    ax = figs["sweep-ratio"].axes[0]
    assert ax.get_xscale() == "log" and "Offered load, Mbit/s" in ax.get_xlabel()


def test_plots_verb_draws_into_dir_plots(tmp_path: Path) -> None:
    d = copy_results(tmp_path / "r")
    assert cli.main(["plots", str(d)]) == 0
    names = sorted(p.name for p in (d / PLOTS_DIRNAME).iterdir())
    assert names == sorted(f"{n}.{ext}" for v in EXPECTED.values() for n in v for ext in ("png", "svg"))


def test_a_kind_without_plotter_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    sets = load_results_dir(SMOKE)
    other = _with_kind(sets[0], "future_kind")
    assert figures_for(summarise_file(other, sets)) == {}
    monkeypatch.setitem(KINDS, "future_kind", replace(KINDS[sets[0].header.kind], name="future_kind"))
    figs = figures_for(summarise_file(other, sets))
    assert figs and all(k.startswith("future_kind-") for k in figs)
