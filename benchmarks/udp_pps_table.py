"""Markdown tables from a benchmarks/udp_pps.py result file (pure: reads the file's summary).

    .venv/bin/python benchmarks/udp_pps_table.py results/udp-pps/after.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_WINDOW_BYTES = 4 << 20
MBPS_1400 = (1000, 2000)  # the two offered rates for 1400-byte datagrams


def _entry(summary: dict[str, Any], path: str, size: int, window: int) -> dict[str, Any] | None:
    return summary.get(f"{path}/{size}/w{window}")


def _row(entry: dict[str, Any] | None, offered_bps: int) -> dict[str, Any] | None:
    if entry is None:
        return None
    return next((r for r in entry["rates"] if r["offered_bps"] == offered_bps), None)


def render_tables(doc: dict[str, Any]) -> str:
    """Max pps at < 1% loss per size, 1400 B at 1 and 2 Gbit/s, and CPU per million datagrams."""
    summary, paths = doc["summary"], doc["paths"]
    sizes = sorted({e["size_bytes"] for e in summary.values()})
    lines = [f"Max delivered datagrams/s at < {doc['loss_limit_pct']:g}% loss (median of {doc['rounds']} rounds; "
             "iperf3 -w 4 MiB; in brackets: iperf3's own sending rate at that point)", "",
             "| path | " + " | ".join(f"{s} B" for s in sizes) + " |", "| --- |" + " ---: |" * len(sizes)]
    for p in paths:
        cells = []
        for s in sizes:
            e = _entry(summary, p, s, DEFAULT_WINDOW_BYTES)
            best = e and e["max_pps_below_1pct_loss"]
            row = _row(e, next((r["offered_bps"] for r in e["rates"] if r["offered_pps"] == e["at_offered_pps"]),
                               -1)) if best else None
            cells.append(f"{best:,} ({row['sent_pps_median']:,})" if best and row else "-" if e else "")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    for base in ("nginx", "before"):
        if base in paths and "standalone" in paths:
            ratios = []
            for s in sizes:
                a = _entry(summary, "standalone", s, DEFAULT_WINDOW_BYTES)
                b = _entry(summary, base, s, DEFAULT_WINDOW_BYTES)
                va = a and a["max_pps_below_1pct_loss"]
                vb = b and b["max_pps_below_1pct_loss"]
                ratios.append(f"{va / vb:.2f}x" if va and vb else "-")
            lines.append(f"| standalone / {base} | " + " | ".join(ratios) + " |")
    windows = sorted({e["window_bytes"] for e in summary.values() if e["size_bytes"] == 1400}, reverse=True)
    if windows:
        lines += ["", "1400-byte datagrams: delivered % of offered / receiver-side loss % (medians)", "",
                  "| path | " + " | ".join(f"{m} Mbit/s, -w {'4 MiB' if w else 'default'}"
                                         for w in windows for m in MBPS_1400) + " |",
                  "| --- |" + " ---: |" * (len(windows) * len(MBPS_1400))]
        for p in paths:
            cells = []
            for w in windows:
                for m in MBPS_1400:
                    r = _row(_entry(summary, p, 1400, w), m * 1_000_000)
                    cells.append(f"{r['delivered_pct_of_offered']:.1f}% / {r['lost_pct_median']:.2f}%" if r else "")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    cpu_paths = [p for p in paths if any(e["path"] == p and any(r["cpu_s_per_mdgram_median"] for r in e["rates"])
                                         for e in summary.values())]
    if cpu_paths:
        lines += ["", "Forwarder CPU seconds per million delivered datagrams (median over that size's offered rates)",
                  "", "| path | " + " | ".join(f"{s} B" for s in sizes) + " |", "| --- |" + " ---: |" * len(sizes)]
        for p in cpu_paths:
            cells = []
            for s in sizes:
                e = _entry(summary, p, s, DEFAULT_WINDOW_BYTES)
                vals = sorted(r["cpu_s_per_mdgram_median"] for r in (e["rates"] if e else [])
                              if r["cpu_s_per_mdgram_median"] is not None)
                cells.append(f"{vals[len(vals) // 2]:.2f}" if vals else "")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(render_tables(json.loads(Path(sys.argv[1]).read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
