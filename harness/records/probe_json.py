"""The latency / connection-rate probe's JSON report -> percentiles and rates (pure; no processes).

The probe client (harness.measure.probe_child) prints one report with its raw
samples; these parsers keep the samples' meaning in one place. The raw JSON is
stored in the record verbatim (`probe_raw`), so every percentile can be
recomputed from the result file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ProbeError


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of ascending values, linear between closest ranks (numpy's default)."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Percentiles:
    """n, p50, p90, p99 (and min/max) of one series of samples, in microseconds."""

    n: int
    p50_us: float | None
    p90_us: float | None
    p99_us: float | None
    min_us: float | None
    max_us: float | None

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Percentiles:
        v = sorted(x / 1e3 for x in samples_ns)
        return cls(len(v), percentile(v, 50), percentile(v, 90), percentile(v, 99),
                   v[0] if v else None, v[-1] if v else None)


@dataclass(frozen=True)
class LatencyResult:
    setup: Percentiles  # connect() -> first byte of the reply
    rtt: Percentiles  # 1-byte request -> 1-byte reply on an open connection
    errors: dict[str, int]
    error_examples: tuple[str, ...]
    truncated: bool  # stopped at its time limit before taking every sample
    elapsed_s: float

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def _load(text: str, probe: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{probe} probe output is not JSON ({e}): {text.strip()[:200]!r}") from None
    if not isinstance(doc, dict) or doc.get("probe") != probe:
        raise ProbeError(f"not a {probe} probe report: {text.strip()[:200]!r}")
    return doc


def parse_latency_json(text: str) -> LatencyResult:
    """The latency probe's report -> percentiles. ProbeError if it has no sample at all."""
    doc = _load(text, "latency")
    setup, rtt = doc.get("setup_ns") or [], doc.get("rtt_ns") or []
    errors = {str(k): int(v) for k, v in (doc.get("errors") or {}).items()}
    if not setup and not rtt:
        examples = "; ".join(doc.get("error_examples") or []) or "no error recorded"
        raise ProbeError(f"latency probe took no sample ({examples})")
    return LatencyResult(Percentiles.of_ns(setup), Percentiles.of_ns(rtt), errors,
                         tuple(doc.get("error_examples") or ()), bool(doc.get("truncated")),
                         float(doc.get("elapsed_s", 0.0)))


@dataclass(frozen=True)
class ConnrateResult:
    conn_per_s: float  # completed connections per second over the measured window, all processes
    conns_ok: int  # completed in the measured window
    conn_errors: int  # failed in the measured window
    errors: dict[str, int]  # by kind, measured window
    error_examples: tuple[str, ...]
    seconds: float  # measured window
    per_second: tuple[int, ...]  # completions per 1-s bin over the whole run (warm-up included)
    failed_workers: tuple[str, ...] = field(default=())


def parse_connrate_json(text: str) -> ConnrateResult:
    """The connrate probe's report -> rate over the measured window (warm-up bins left out)."""
    doc = _load(text, "connrate")
    p = doc["params"]
    bin_s = float(doc.get("bin_s", 1.0))
    skip = int(round(float(p["omit_seconds"]) / bin_s))
    seconds = float(p["seconds"])
    workers = doc.get("workers") or []
    failed = tuple(str(w["failed"]) for w in workers if "failed" in w)
    good = [w for w in workers if "failed" not in w]
    if not good:
        raise ProbeError(f"every connrate worker failed: {'; '.join(failed) or 'no worker report'}")
    n_bins = max(len(w["ok_bins"]) for w in good)
    per_second = tuple(sum(w["ok_bins"][i] for w in good if i < len(w["ok_bins"])) for i in range(n_bins))
    ok = sum(per_second[skip:])
    err = sum(sum(w["error_bins"][skip:]) for w in good)
    kinds: dict[str, int] = {}
    examples: list[str] = []
    for w in good:
        for k, v in (w.get("errors") or {}).items():
            kinds[k] = kinds.get(k, 0) + int(v)
        examples += w.get("error_examples") or []
    return ConnrateResult(ok / seconds, ok, err, kinds, tuple(examples[:5]), seconds, per_second, failed)
