"""Experiment config -> the ordered list of measurements to run.

Repeats are interleaved across paths: round 1 runs every (path, rate, cap)
combination once, then round 2, ... Within a round the order is shuffled
with a seeded RNG, so slow drift of the host (thermal, other load) spreads
over all paths instead of biasing whichever runs last, and a resumed run
sees the same plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness.define.experiment import ExperimentConfig
from harness.paths import PATHS


@dataclass(frozen=True)
class Measurement:
    """One planned iperf3 run."""

    index: int  # position in the plan
    round: int  # 1-based
    path: str
    offered_mbps: float | None = None
    cap_bytes_per_s: int | None = None

    @property
    def key(self) -> tuple[int, str, float | None, int | None]:
        """Identity across runs of the same plan (for --resume)."""
        return (self.round, self.path, self.offered_mbps, self.cap_bytes_per_s)


def combinations(config: ExperimentConfig, paths: tuple[str, ...]) -> list[tuple[str, float | None, int | None]]:
    """Every (path, offered_mbps, cap) one round measures, in config order."""
    rates: list[float | None] = list(config.offered_mbps) or [None]
    out = []
    for path in paths:
        caps: list[int | None] = list(config.caps_bytes_per_s) if PATHS[path].capped else [None]
        for rate in rates:
            for cap in caps:
                out.append((path, rate, cap))
    return out


def build_plan(config: ExperimentConfig, exclude_paths: frozenset[str] = frozenset()) -> tuple[Measurement, ...]:
    """All measurements of the experiment, interleaved by round, shuffled within each round."""
    paths = tuple(p for p in config.paths if p not in exclude_paths)
    rng = random.Random(config.shuffle_seed)
    plan: list[Measurement] = []
    for rnd in range(1, config.rounds + 1):
        combos = combinations(config, paths)
        rng.shuffle(combos)
        for path, rate, cap in combos:
            plan.append(Measurement(len(plan), rnd, path, rate, cap))
    return tuple(plan)
