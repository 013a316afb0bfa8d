"""iperf3's JSON report (client side) -> IperfResult: a pure parser, tested on real iperf3 output.

Throughput definition (the same for every path): `sender_mbps`, iperf3's
sender-side bits per second over the non-omitted interval (`end.sum_sent`),
divided by 1e6. The receiver-side figure (`end.sum_received`) is kept too and
is what cap accuracy uses (bytes actually delivered). iperf3 resets its
counters after the `-O` omit period, so both `end` sums exclude the omitted
seconds; the omitted intervals stay in the raw JSON, flagged `omitted: true`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.errors import IperfError


@dataclass(frozen=True)
class Interval:
    """One iperf3 reporting interval (summed over streams), as the sender saw it."""

    start_s: float
    end_s: float
    bytes: int
    bits_per_second: float
    omitted: bool


@dataclass(frozen=True)
class IperfResult:
    """The parsed iperf3 client report."""

    version: str
    protocol: str
    duration_s: float  # sender-side length of the non-omitted interval
    omit_seconds: int
    sender_bytes: int
    receiver_bytes: int
    sender_mbps: float
    receiver_mbps: float
    retransmits: int | None  # TCP only
    host_cpu_pct: float | None  # iperf3 client's CPU use (% of one core, summed user+system)
    remote_cpu_pct: float | None  # iperf3 server's
    total_bytes: int  # sender bytes of every interval, omitted ones included: what the path carried
    intervals: tuple[Interval, ...]
    lost_pct: float | None = None  # UDP only
    jitter_ms: float | None = None  # UDP only
    datagrams_sent: int | None = None  # UDP only: the sender's datagrams, non-omitted interval
    datagrams_delivered: int | None = None  # UDP only: the receiver's packets - lost_packets
    receiver_seconds: float | None = None  # UDP only: the receiver's interval

    @property
    def delivered_pps(self) -> float | None:
        """UDP: datagrams delivered per second over the receiver's interval."""
        if self.datagrams_delivered is None or not self.receiver_seconds:
            return None
        return self.datagrams_delivered / self.receiver_seconds

    @property
    def throughput_mbps(self) -> float:
        """"The" throughput of a run: sender side, non-omitted interval (see module docstring)."""
        return self.sender_mbps


def parse_iperf_json(text: str) -> IperfResult:
    """Parse iperf3's JSON report (client side). Raises IperfError on an error report or bad text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        head = text.strip()[:200]
        raise IperfError(f"iperf3 output is not JSON ({e}): {head!r}") from None
    if not isinstance(doc, dict):
        raise IperfError("iperf3 output is not a JSON object")
    # iperf3 3.12 exits 0 even when it reports an error: the "error" key is the truth.
    if doc.get("error"):
        raise IperfError(f"iperf3: {doc['error']}")
    start = doc.get("start") or {}
    end = doc.get("end") or {}
    test = start.get("test_start") or {}
    protocol = str(test.get("protocol", "TCP")).lower()
    # UDP reports in 3.12 carry sum_sent/sum_received too; older ones only "sum".
    sent = end.get("sum_sent") or end.get("sum")
    received = end.get("sum_received") or end.get("sum")
    if not sent or not received:
        raise IperfError("iperf3 report has no end summary (test did not complete)")
    intervals = tuple(
        Interval(
            start_s=float(i["sum"]["start"]),
            end_s=float(i["sum"]["end"]),
            bytes=int(i["sum"]["bytes"]),
            bits_per_second=float(i["sum"]["bits_per_second"]),
            omitted=bool(i["sum"].get("omitted", False)),
        )
        for i in doc.get("intervals") or []
        if "sum" in i
    )
    cpu = end.get("cpu_utilization_percent") or {}
    is_udp = protocol == "udp"
    return IperfResult(
        version=str(start.get("version", "")),
        protocol=protocol,
        duration_s=float(sent["seconds"]),
        omit_seconds=int(test.get("omit", 0)),
        sender_bytes=int(sent["bytes"]),
        receiver_bytes=int(received["bytes"]),
        sender_mbps=float(sent["bits_per_second"]) / 1e6,
        receiver_mbps=float(received["bits_per_second"]) / 1e6,
        retransmits=int(sent["retransmits"]) if "retransmits" in sent else None,
        host_cpu_pct=_float_or_none(cpu.get("host_total")),
        remote_cpu_pct=_float_or_none(cpu.get("remote_total")),
        total_bytes=sum(i.bytes for i in intervals),
        intervals=intervals,
        lost_pct=_float_or_none(received.get("lost_percent")) if is_udp else None,
        jitter_ms=_float_or_none(received.get("jitter_ms")) if is_udp else None,
        datagrams_sent=int(sent["packets"]) if is_udp and "packets" in sent else None,
        datagrams_delivered=(int(received["packets"]) - int(received.get("lost_packets", 0))
                             if is_udp and "packets" in received else None),
        receiver_seconds=_float_or_none(received.get("seconds")) if is_udp else None,
    )


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)
