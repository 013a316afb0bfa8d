"""Number and table formats of the report (pure text): one way to write Mbit/s, %, µs and a markdown table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from harness.define.experiment import ExperimentConfig
from harness.records.header import PathFacts
from harness.summarise.stats import Summary

DASH = "–"

# What the CPU row says for paths with no forwarder process to measure.
NO_FORWARDER_CPU = {"direct": "none (no forwarder)", "iptables": "kernel (not attributable)"}



def fmt_mbps(v: float | None) -> str:
    """Mbit/s with as many digits as the magnitude deserves."""
    if v is None:
        return DASH
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:,.1f}"
    return f"{v:.3f}"


def fmt_rate(v: float) -> str:
    """An offered rate as configured: '100', '12,500', '0.5'."""
    return f"{v:,.0f}" if v == int(v) else f"{v:,g}"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return DASH if v is None else f"{v:.{digits}f}%"


def fmt_range(s: Summary, fmt: Callable[[float | None], str] = fmt_mbps) -> str:
    """'median [min–max]', or the single value when n == 1."""
    if s.n == 0:
        return DASH
    if s.n == 1:
        return fmt(s.median)
    return f"{fmt(s.median)} [{fmt(s.min)}{DASH}{fmt(s.max)}]"


def fmt_cpu(s: Summary) -> str:
    return DASH if s.median is None else f"{s.median:.3f}"


def fmt_us(v: float | None) -> str:
    """Microseconds: one decimal below 100 µs, whole µs above."""
    if v is None:
        return DASH
    return f"{v:.1f}" if abs(v) < 100 else f"{v:,.0f}"


def fmt_signed_us(v: float | None) -> str:
    return DASH if v is None else ("+" if v >= 0 else "−") + fmt_us(abs(v))


def fmt_count(v: float | None) -> str:
    return DASH if v is None else f"{v:,.0f}"


def fmt_bytes(v: int | None) -> str:
    if v is None:
        return DASH
    return f"{v // 1024} KiB" if v % 1024 == 0 else f"{v:,} B"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align_first_left: bool = True) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(("---" if i == 0 and align_first_left else "---:") for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def notes_block(notes: Sequence[str]) -> list[str]:
    return ["Notes:\n\n" + "\n".join(f"- {n}" for n in notes)] if notes else []


def no_cpu(path: str, facts: PathFacts | None) -> str:
    """What a CPU cell says for a path without a forwarder process of its own (facts: its header's)."""
    if path in NO_FORWARDER_CPU:
        return NO_FORWARDER_CPU[path]
    return "kernel (not attributable)" if facts is not None and not facts.forwarder_process else DASH


def probe_settings(cfg: ExperimentConfig) -> Mapping[str, Any]:
    """The config's probe settings by name, '?' for each when it recorded none."""
    return cfg.probe.to_dict() if cfg.probe is not None else defaultdict(lambda: "?")
