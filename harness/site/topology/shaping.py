"""Link shaping with tc: netem for delay, tbf for rate; and parsers for what the kernel reports.

Per veth end (egress), from a LinkSettings:
  delay only   root netem delay D limit L
  rate only    root tbf rate R burst B latency Q
  both         root netem delay D limit L, and tbf as netem's child (parent 1:1): netem's
               documented way to combine a delay with a rate limit
Both ends of a link get the same qdiscs, so delay_ms applies to each direction
(a round trip over the link gains 2 x delay_ms) and rate_mbit caps each direction.

Kernels without sch_netem (CONFIG_NET_SCH_NETEM unset; this project's CI VM is
one) refuse the netem qdisc with "Specified qdisc kind is unknown": a topology
asking for delay_ms then fails to open, naming that reason; it never runs
without the delay it promised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.define.topology import LinkSettings

# tbf: bucket of 4 ms at the rate, at least 64 KiB. veth hands tbf GSO packets of up to
# 64 KiB; a bucket smaller than one of them makes tbf segment every packet (slow), and
# a bucket of a few ms keeps the shaped rate smooth at the time scale of an RTT.
TBF_BURST_S = 0.004
TBF_MIN_BURST_BYTES = 64 * 1024
# tbf: how long a packet may wait in the queue before it is dropped; one generous RTT.
TBF_LATENCY_MS = 50
# netem's default queue (1000 packets) drops at bandwidth-delay products of a fast veth
# (10 Gbit/s x 10 ms is ~8,000 full-size packets); the limit only bounds memory.
NETEM_LIMIT_PACKETS = 100_000
NETEM_UNKNOWN = "Specified qdisc kind is unknown"


def tbf_burst_bytes(rate_mbit: float) -> int:
    return max(TBF_MIN_BURST_BYTES, math.ceil(rate_mbit * 1e6 / 8 * TBF_BURST_S))


def tc_commands(ifname: str, link: LinkSettings) -> list[list[str]]:
    """The `tc` argv lists (without the leading 'tc') that shape one veth end's egress."""
    cmds: list[list[str]] = []
    tbf = []
    if link.rate_mbit is not None:
        tbf = ["tbf", "rate", f"{link.rate_mbit:g}mbit", "burst", str(tbf_burst_bytes(link.rate_mbit)),
               "latency", f"{TBF_LATENCY_MS}ms"]
    if link.delay_ms is not None:
        cmds.append(["qdisc", "replace", "dev", ifname, "root", "handle", "1:", "netem", "delay",
                     f"{link.delay_ms:g}ms", "limit", str(NETEM_LIMIT_PACKETS)])
        if tbf:
            cmds.append(["qdisc", "add", "dev", ifname, "parent", "1:1", "handle", "10:", *tbf])
    elif tbf:
        cmds.append(["qdisc", "replace", "dev", ifname, "root", "handle", "1:", *tbf])
    return cmds


def explain_tc_failure(stderr: str, link: LinkSettings) -> str:
    """A tc error turned into the reason and the fix."""
    if NETEM_UNKNOWN in stderr and link.delay_ms is not None:
        return ("this kernel has no netem qdisc (sch_netem, CONFIG_NET_SCH_NETEM), so delay_ms cannot be "
                "applied: remove delay_ms from the topology's links, or run on a kernel with netem "
                "(modprobe sch_netem)")
    if NETEM_UNKNOWN in stderr:
        return ("this kernel has no tbf qdisc (sch_tbf, CONFIG_NET_SCH_TBF), so rate_mbit cannot be applied: "
                "remove rate_mbit, or run on a kernel with tbf")
    return stderr.strip()


@dataclass(frozen=True)
class Qdisc:
    """One line of `tc qdisc show dev IF`."""

    kind: str
    handle: str
    parent: str  # "root" or the parent class id
    params: str  # the rest of the line, verbatim


_QDISC = re.compile(r"^qdisc\s+(\S+)\s+(\S+)\s+(root|parent\s+\S+)\s*(.*)$")


def parse_tc_qdisc_show(text: str) -> list[Qdisc]:
    """`tc qdisc show dev IF` -> qdiscs (continuation lines of -s output ignored)."""
    out = []
    for line in text.splitlines():
        m = _QDISC.match(line.strip())
        if m:
            parent = m.group(3)
            out.append(Qdisc(m.group(1), m.group(2), "root" if parent == "root" else parent.split()[1],
                             m.group(4).strip()))
    return out


_NETEM_DELAY = re.compile(r"\bdelay\s+([\d.]+)(us|ms|s)\b")
_TBF_RATE = re.compile(r"\brate\s+([\d.]+)([KMG]?)bit\b")


def netem_delay_ms(q: Qdisc) -> float | None:
    """The delay a netem qdisc line reports, in ms."""
    m = _NETEM_DELAY.search(q.params)
    if q.kind != "netem" or not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def tbf_rate_mbit(q: Qdisc) -> float | None:
    """The rate a tbf qdisc line reports, in Mbit/s."""
    m = _TBF_RATE.search(q.params)
    if q.kind != "tbf" or not m:
        return None
    return float(m.group(1)) * {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}[m.group(2)]


@dataclass(frozen=True)
class LinkState:
    """What `ip -d link show dev IF` says about one interface."""

    ifname: str
    mtu: int
    state: str
    gso_max_size: int | None
    gro_max_size: int | None


_LINK_HEAD = re.compile(r"^\d+:\s+([^:@]+)(?:@\S+)?:\s+<[^>]*>\s+mtu\s+(\d+).*?\bstate\s+(\S+)")
_KV_INT = r"\b{}\s+(\d+)"


def parse_ip_link_details(text: str) -> LinkState:
    """The first interface in `ip -d link show dev IF` output."""
    m = _LINK_HEAD.search(text)
    if not m:
        raise ValueError(f"not `ip link` output: {text.strip()[:200]!r}")

    def num(key: str) -> int | None:
        k = re.search(_KV_INT.format(key), text)
        return int(k.group(1)) if k else None

    return LinkState(m.group(1), int(m.group(2)), m.group(3), num("gso_max_size"), num("gro_max_size"))


_QDISC_PROBES = {"netem": ["netem", "delay", "1ms"], "tbf": ["tbf", "rate", "1mbit", "burst", "65536", "latency", "50ms"]}
_SUPPORT: dict[str, str | None] = {}


def qdisc_support(kind: str) -> str | None:
    """None if this kernel has the qdisc ("netem" | "tbf"), else the reason; probed once per process.

    Tried on `lo` of a throwaway namespace (`unshare --net`), so nothing is left behind.
    """
    if kind not in _SUPPORT:
        import shutil

        from harness.site.executor.local import LOCAL

        unshare = shutil.which("unshare")
        if unshare is None:
            return "cannot check the kernel's qdiscs: unshare (util-linux) is missing"
        r = LOCAL.run([unshare, "--net", "tc", "qdisc", "add", "dev", "lo", "root", *_QDISC_PROBES[kind]])
        if r.ok:
            _SUPPORT[kind] = None
        else:
            link = LinkSettings(delay_ms=1.0) if kind == "netem" else LinkSettings(rate_mbit=1.0)
            _SUPPORT[kind] = explain_tc_failure(r.stderr, link)
    return _SUPPORT[kind]


def shaping_support(links: list[LinkSettings]) -> str | None:
    """None if every requested delay / rate can be applied here, else the reason."""
    if any(link.delay_ms is not None for link in links):
        why = qdisc_support("netem")
        if why:
            return why
    if any(link.rate_mbit is not None for link in links):
        why = qdisc_support("tbf")
        if why:
            return why
    return None
