#!/usr/bin/env python3
"""Summarise a `make gate-aa` log (scripts/gate-aa.sh): per microbenchmark, the current median
ratio of every run, their spread ((max - min) / median) and the verdicts; and each run's exit code.

    scripts/gate-aa-table.py results/gate/<run>-aa.log
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

RUN = re.compile(r"^== gate run (\d+) of (\d+)")
EXIT = re.compile(r"^gate run (\d+) exit (\d+)")
# | name | baseline ratio | current ratio | delta | threshold | > threshold | p | p < 0.01 | verdict |
ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*[\d.]+x \[[^]]*\]\s*\|\s*([\d.]+)x \[[^]]*\]\s*\|\s*[-+\d.]+%\s*\|"
                 r"\s*([\d.]+%)\s*\|[^|]*\|[^|]*\|[^|]*\|\s*(\S+)\s*\|$")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    ratios: dict[str, list[float]] = defaultdict(list)
    thresholds: dict[str, str] = {}
    verdicts: dict[str, Counter[str]] = defaultdict(Counter)
    exits: dict[int, int] = {}
    run = 0
    for line in Path(argv[0]).read_text().splitlines():
        if m := RUN.match(line):
            run = int(m.group(1))
        elif m := EXIT.match(line):
            exits[int(m.group(1))] = int(m.group(2))
        elif run and (m := ROW.match(line)):
            name, ratio, threshold, verdict = m.groups()
            ratios[name].append(float(ratio))
            thresholds[name] = threshold
            verdicts[name][verdict] += 1
    print("| benchmark | threshold | current median ratio, run by run | spread | verdicts |")
    print("| --- | ---: | --- | ---: | --- |")
    for name, rs in ratios.items():
        spread = (max(rs) - min(rs)) / statistics.median(rs) * 100
        v = ", ".join(f"{k} x{n}" for k, n in verdicts[name].most_common())
        print(f"| {name} | {thresholds[name]} | {' '.join(f'{r:.2f}' for r in rs)} | {spread:.1f}% | {v} |")
    ok = sum(1 for rc in exits.values() if rc == 0)
    print(f"\n`make gate` exit codes, run by run: {' '.join(str(exits[k]) for k in sorted(exits))} "
          f"({ok} of {len(exits)} exit 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
