"""The result file format's version, its history, and the step-by-step upgrades of older lines (pure).

Loaders refuse newer files ("update the harness") and bring older ones up to
SCHEMA_VERSION one version at a time, line by line, in memory; the file on
disk is never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FORMAT_NAME = "portunus-bench-results"

# Format history (bump SCHEMA_VERSION and add an upgrader to UPGRADES for
# every change that an older reader could misread):
#   1  first version: header / measurement / run_end / run_resumed lines.
#   2  measurements name their `driver` ("iperf3" | "latency" | "connrate"); new
#      fields: UDP `lost_pct` / `jitter_ms` (iperf3 -u), latency `setup_*_us` /
#      `rtt_*_us` percentiles, connrate `conn_per_s` / `conns_ok` / `conn_errors`,
#      and `probe_raw` (the probe client's JSON report, verbatim). Version-1
#      measurements were all iperf3 TCP runs: driver "iperf3", the rest None.
#   3  the header records the `topology` the run used (harness.site.topology: kind,
#      roles, addresses, link settings as requested and as the kernel applied
#      them). Version-2 files all ran on loopback: {"kind": "loopback"}.
#   4  the header records `path_facts`: per path of the config, what analysis needs
#      to know about it (forwarder_process, protocols, half_close, capped), taken from
#      the path class at run time, so reports never import the path classes.
#      Version-3 files get the facts the paths had then (PATH_FACTS_V3).
#   5  measurements of the `http` kind (driver "wrk": `http_mode`, `response_bytes`,
#      `requests`, `requests_per_s`, `latency_p50/p90/p99/p999_us`, `http_errors`,
#      `wrk_raw`) and UDP at packet rate (`datagram_bytes` and `offered_pps` of the
#      measurement, `datagrams_sent` / `datagrams_delivered` / `delivered_pps`,
#      `socket_drops` at the forwarder's UDP socket). Version-4 lines carry none of
#      them: they read with those fields None (a udp file's datagram size is then its
#      config's `datagram_bytes`).
#      The same version also added the whole host's CPU over the client's run
#      (`host_busy_cpu_s`, `host_softirq_s`: /proc/stat of the edge host, all cores),
#      for kernel paths too; older lines read with both None (not measured).
SCHEMA_VERSION = 5

LOOPBACK_TOPOLOGY = {"kind": "loopback", "address": "127.0.0.1"}


def _upgrade_1_to_2(line: dict[str, Any]) -> dict[str, Any]:
    if line.get("type") == "measurement":
        line = {**line, "driver": "iperf3"}
    return line


def _upgrade_2_to_3(line: dict[str, Any]) -> dict[str, Any]:
    if line.get("type") == "header":
        line = {**line, "topology": dict(LOOPBACK_TOPOLOGY)}
    return line


# The path classes' facts from schema 1 to 3 (harness.paths at that version): name ->
# (forwarder_process, protocols, half_close, capped). Frozen: they describe the old files.
PATH_FACTS_V3: dict[str, tuple[bool, tuple[str, ...], bool, bool]] = {
    "direct": (False, ("tcp", "udp"), True, False),
    "iptables": (False, ("tcp", "udp"), True, False),
    "reference": (True, ("tcp",), True, False),
    "standalone": (True, ("tcp", "udp"), True, False),
    "standalone_copy": (True, ("tcp", "udp"), True, False),
    "standalone_capped": (True, ("tcp", "udp"), True, True),
    "client": (True, ("tcp",), True, False),
    "client_capped": (True, ("tcp",), True, True),
    "nftables": (False, ("tcp", "udp"), True, False),
    "haproxy": (True, ("tcp",), True, False),
    "haproxy_bigbuf": (True, ("tcp",), True, False),
    "haproxy_splice": (True, ("tcp",), True, False),
    "nginx": (True, ("tcp", "udp"), True, False),
    "nginx_bigbuf": (True, ("tcp", "udp"), True, False),
    "socat": (True, ("tcp", "udp"), True, False),
    "socat_bigbuf": (True, ("tcp", "udp"), True, False),
    "rinetd": (True, ("tcp", "udp"), False, False),
    "ssh": (True, ("tcp",), True, False),
    "nft_flowtable": (False, ("tcp", "udp"), True, False),
}


def _upgrade_3_to_4(line: dict[str, Any]) -> dict[str, Any]:
    if line.get("type") == "header":
        paths = (line.get("config") or {}).get("paths") or ()
        facts = {}
        for p in paths:
            if p in PATH_FACTS_V3:
                forwarder_process, protocols, half_close, capped = PATH_FACTS_V3[p]
                facts[p] = {"forwarder_process": forwarder_process, "protocols": list(protocols),
                            "half_close": half_close, "capped": capped}
        line = {**line, "path_facts": facts}
    return line


def _upgrade_4_to_5(line: dict[str, Any]) -> dict[str, Any]:
    # Only fields were added, all optional: an old line means the same with them None.
    return line


# UPGRADES[v] turns one line (dict) of a version-v file into version v+1.
# Loading applies them step by step up to SCHEMA_VERSION.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _upgrade_1_to_2, 2: _upgrade_2_to_3, 3: _upgrade_3_to_4, 4: _upgrade_4_to_5}


def upgrade_line(obj: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring one line from `version` to SCHEMA_VERSION, one step at a time."""
    for v in range(version, SCHEMA_VERSION):
        obj = UPGRADES[v](obj)
    if obj.get("type") == "header":
        obj["schema_version"] = SCHEMA_VERSION
    return obj
