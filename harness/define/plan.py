"""Experiment config -> the ordered list of measurements to run.

Repeats are interleaved across paths: round 1 runs every (path, rate, cap,
datagram size, HTTP mode and response size) combination once, then round 2, ... Within a round the order is shuffled
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
    """One planned run of the experiment's client through one path."""

    index: int  # position in the plan
    round: int  # 1-based
    path: str
    offered_mbps: float | None = None  # iperf3 -b (for an offered_pps point: the same rate in Mbit/s)
    cap_bytes_per_s: int | None = None
    datagram_bytes: int | None = None  # udp: iperf3 -l of this measurement
    offered_pps: float | None = None  # udp: the offered rate as configured in datagrams/s
    http_mode: str | None = None  # http: keepalive | close
    response_bytes: int | None = None  # http: the size of the file requested

    @property
    def key(self) -> tuple[int, str, float | None, int | None, int | None, str | None, int | None]:
        """Identity across runs of the same plan (for --resume)."""
        return (self.round, self.path, self.offered_mbps, self.cap_bytes_per_s, self.datagram_bytes,
                self.http_mode, self.response_bytes)


@dataclass(frozen=True)
class Point:
    """What one measurement of a round varies besides its path (rate, cap, datagram size, HTTP request)."""

    offered_mbps: float | None = None
    cap_bytes_per_s: int | None = None
    datagram_bytes: int | None = None
    offered_pps: float | None = None
    http_mode: str | None = None
    response_bytes: int | None = None


def _rates(config: ExperimentConfig) -> list[tuple[int | None, float | None, float | None]]:
    """(datagram size, offered Mbit/s, offered datagrams/s) of one path's runs, in config order."""
    sizes = config.datagram_sizes if config.protocol == "udp" else (None,)
    out: list[tuple[int | None, float | None, float | None]] = []
    for size in sizes:
        if config.offered_pps and size is not None:
            out += [(size, pps * size * 8 / 1e6, pps) for pps in config.offered_pps]
        else:
            rates: list[float | None] = list(config.offered_mbps) or [None]
            out += [(size, rate, None) for rate in rates]
    return out


def combinations(config: ExperimentConfig, paths: tuple[str, ...]) -> list[tuple[str, Point]]:
    """Every (path, point) one round measures, in config order."""
    http = config.http
    requests: list[tuple[str | None, int | None]] = (
        [(mode, size) for mode in http.modes for size in http.response_bytes] if http is not None else [(None, None)])
    out = []
    for path in paths:
        caps: list[int | None] = list(config.caps_bytes_per_s) if PATHS[path].capped else [None]
        for size, rate, pps in _rates(config):
            for cap in caps:
                for mode, response_bytes in requests:
                    out.append((path, Point(rate, cap, size, pps, mode, response_bytes)))
    return out


def build_plan(config: ExperimentConfig, exclude_paths: frozenset[str] = frozenset()) -> tuple[Measurement, ...]:
    """All measurements of the experiment, interleaved by round, shuffled within each round."""
    paths = tuple(p for p in config.paths if p not in exclude_paths)
    rng = random.Random(config.shuffle_seed)
    plan: list[Measurement] = []
    for rnd in range(1, config.rounds + 1):
        combos = combinations(config, paths)
        rng.shuffle(combos)
        for path, pt in combos:
            plan.append(Measurement(len(plan), rnd, path, pt.offered_mbps, pt.cap_bytes_per_s, pt.datagram_bytes,
                                    pt.offered_pps, pt.http_mode, pt.response_bytes))
    return tuple(plan)
