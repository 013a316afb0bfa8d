"""Report sections, the peers overview columns and plots of the http and packet-rate udp kinds, from a real
short run (tests/fixtures/kinds), next to the peers fixture run (tests/fixtures/peers)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.kinds import summarise_results
from harness.kinds.base import ReportContext
from harness.present.plots import dump_plots, figures_for
from harness.present.report import render_report
from harness.records.results import load_results_dir
from tests.harness.golden import assert_matches_golden, render_kind_sections

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KINDS_DIR = FIXTURES / "kinds"
GOLDEN = KINDS_DIR / "sections.md"


def render_sections() -> str:
    return render_kind_sections(load_results_dir(KINDS_DIR), ("http", "udp"))


def test_sections_match_golden_file() -> None:
    assert_matches_golden(render_sections(), GOLDEN)


def test_sections_carry_their_units() -> None:
    text = render_sections()
    # http: requests/s per mode with the ceiling and the peer, latency in ms, CPU in µs per request.
    assert "| Mode | Response | `direct`, requests/s | `haproxy`, requests/s | `standalone`, requests/s | " \
           "`standalone` ÷ `haproxy` |" in text
    assert "| Response | Path | Requests/s, keep-alive: median [min–max] | % of `direct` | `standalone` ÷ this | p50, ms | " \
           "p99, ms | p99.9, ms | Errors | Forwarder CPU, µs/request |" in text
    assert "| 1 KiB | `iptables` |" in text and "kernel (not attributable)" in text
    assert "Machine: 2 CPUs shared by wrk, nginx and the forwarder (nothing pinned)" in text
    # udp: datagrams/s offered (and Mbit/s), delivered, loss and jitter; the most at < 1% loss; CPU per million.
    assert "| 64 B: offered, datagrams/s (Mbit/s) | `direct` delivered/s | loss; jitter, ms |" in text
    assert "| 20,000 (10.2 Mbit/s) |" in text
    assert "64 B: most delivered/s at < 1% loss (offered)" in text and "64 B: CPU, s per million" in text
    assert "nginx: 17,225 datagrams dropped at its own listening socket, against 17,209 lost end to end" in text


def test_peers_overview_shows_http_and_datagram_rate_columns(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    for f in [*(FIXTURES / "peers").glob("*.jsonl"), *KINDS_DIR.glob("*.jsonl")]:
        shutil.copy(f, d / f.name)
    files = summarise_results(load_results_dir(d)).files
    peers = next(f for f in files if f.header.kind == "peers")
    text = "\n\n".join(peers.kind.section(peers, ReportContext(files)))
    overview = text[text.index("All experiments of this directory at a glance"):]
    header = next(line for line in overview.splitlines() if line.startswith("| Forwarder"))
    # The newest udp file counts datagrams: its column is the rate at the smallest size, not Mbit/s.
    assert "UDP, 64-byte datagrams: most delivered/s at < 1% loss" in header and "Mbit/s: delivered" not in header
    assert "HTTP 1 KiB, keep-alive: requests/s (% of direct)" in header
    assert "HTTP 1 KiB, one connection per request: requests/s (% of direct)" in header
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in overview.splitlines()
            if line.startswith("| ") and not line.startswith("| Forwarder")]
    haproxy = next(r for r in rows if r[0].startswith("HAProxy") and "defaults" in r[0])
    assert haproxy[-3] == "–"  # HAProxy forwards no UDP: a dash, not "not run"
    portunus = next(r for r in rows if r[0].startswith("Portunus") and "splice fast path" in r[0])
    assert portunus[-3].replace(",", "").lstrip("≥ ").isdigit(), portunus  # datagrams/s
    assert all(c.endswith("%)") and c[0].isdigit() for c in portunus[-2:]), portunus  # requests/s (% of direct)
    # The whole directory renders, every kind with its section.
    report = render_report(summarise_results(load_results_dir(d)), plots={})
    assert "## http-smoke (http)" in report and "## udp-smoke (udp)" in report and "## peers (peers)" in report


def test_figures_are_drawn(tmp_path: Path) -> None:
    files = summarise_results(load_results_dir(KINDS_DIR)).files
    names = set()
    for fs in files:
        names |= set(figures_for(fs))
    assert names == {"http-smoke-requests", "udp-smoke-pps"}
    written = dump_plots(files, tmp_path)
    assert {Path(p).name for paths in written.values() for p in paths} >= {"http-smoke-requests.png", "http-smoke-requests.svg",
                                          "udp-smoke-pps.png", "udp-smoke-pps.svg"}
