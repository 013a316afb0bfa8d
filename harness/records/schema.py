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
SCHEMA_VERSION = 3

LOOPBACK_TOPOLOGY = {"kind": "loopback", "address": "127.0.0.1"}


def _upgrade_1_to_2(line: dict[str, Any]) -> dict[str, Any]:
    if line.get("type") == "measurement":
        line = {**line, "driver": "iperf3"}
    return line


def _upgrade_2_to_3(line: dict[str, Any]) -> dict[str, Any]:
    if line.get("type") == "header":
        line = {**line, "topology": dict(LOOPBACK_TOPOLOGY)}
    return line


# UPGRADES[v] turns one line (dict) of a version-v file into version v+1.
# Loading applies them step by step up to SCHEMA_VERSION.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2, 2: _upgrade_2_to_3}


def upgrade_line(obj: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring one line from `version` to SCHEMA_VERSION, one step at a time."""
    for v in range(version, SCHEMA_VERSION):
        obj = UPGRADES[v](obj)
    if obj.get("type") == "header":
        obj["schema_version"] = SCHEMA_VERSION
    return obj
