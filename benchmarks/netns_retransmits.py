"""Where do the retransmits on the netns topology come from? Count them where TCP counts them.

    python -m benchmarks.netns_retransmits --json-out results/netns-retransmits/<run>.json

The netns headline shows iperf3 reporting ~40x more retransmits through a
userspace forwarder (Portunus or the C reference) than through iptables.
This builds its own three namespaces (client -> edge -> target over veth,
MTU 1500, like the harness's netns topology), runs one iperf3 transfer per
path (routed, iptables DNAT in the edge, portunus-standalone in the edge),
optionally with the iperf3 client pinned to one CPU, and records per
namespace the kernel's TCP counters (nstat) and per CPU the softnet backlog
drops. A retransmission whose original arrived anyway is reported back by
the receiver as a D-SACK (TcpExtTCPDSACKRecvSegs): when those equal the
retransmitted segments, nothing was lost; the sender retransmitted because
segments arrived out of order (TcpExtTCPSACKReorder), and undid the
congestion response (TcpExtTCPDSACKUndo).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
PREFIX = "ptrx-"
NS = {"client": PREFIX + "c", "edge": PREFIX + "e", "target": PREFIX + "t"}
NET = "10.209"
COUNTERS = ("TcpRetransSegs", "TcpExtTCPFastRetrans", "TcpExtTCPSlowStartRetrans", "TcpExtTCPTimeouts",
            "TcpExtTCPLossProbes", "TcpExtTCPLostRetransmit", "TcpExtTCPSACKReorder", "TcpExtTCPDSACKRecv",
            "TcpExtTCPDSACKRecvSegs", "TcpExtTCPDSACKUndo", "TcpExtTCPSackRecovery", "TcpExtTCPOFOQueue",
            "TcpExtTCPBacklogDrop", "TcpExtTCPRcvQDrop", "TcpExtTCPZeroWindowDrop")
PATHS = ("routed", "iptables", "portunus")


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=check).stdout


def ns(role: str, *args: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", NS[role], *args, check=check)


def setup() -> None:
    teardown()
    for name in NS.values():
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", NS["client"], "link", "add", "to-edge", "type", "veth", "peer", "name", "to-client",
       "netns", NS["edge"])
    sh("ip", "-n", NS["edge"], "link", "add", "to-target", "type", "veth", "peer", "name", "to-edge",
       "netns", NS["target"])
    for role, dev, addr in (("client", "to-edge", f"{NET}.1.1/24"), ("edge", "to-client", f"{NET}.1.2/24"),
                            ("edge", "to-target", f"{NET}.2.1/24"), ("target", "to-edge", f"{NET}.2.2/24")):
        sh("ip", "-n", NS[role], "addr", "add", addr, "dev", dev)
        sh("ip", "-n", NS[role], "link", "set", dev, "mtu", "1500", "up")
    sh("ip", "-n", NS["client"], "route", "add", f"{NET}.2.0/24", "via", f"{NET}.1.2")
    sh("ip", "-n", NS["target"], "route", "add", f"{NET}.1.0/24", "via", f"{NET}.2.1")
    for role in NS:  # the host's congestion control, as the harness records it
        cc = sh("sysctl", "-n", "net.ipv4.tcp_congestion_control").strip()
        ns(role, "sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={cc}", check=False)


def teardown() -> None:
    for name in NS.values():
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def softnet() -> list[tuple[int, int]]:
    rows = [line.split() for line in Path("/proc/net/softnet_stat").read_text().splitlines()]
    return [(int(r[0], 16), int(r[1], 16)) for r in rows]


def nstat_all(role: str) -> dict[str, int]:
    """Absolute counters of a namespace (nstat -a: since the namespace was made, no history file)."""
    out = {}
    for line in ns(role, "nstat", "-a", "-z").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in COUNTERS:
            out[parts[0]] = int(parts[1])
    return out


def transfer(path: str, seconds: int, pin: bool, python_bin: str) -> dict[str, Any]:
    fwd = None
    port = 5201
    host = f"{NET}.2.2"
    if path == "routed":
        ns("edge", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    elif path == "iptables":
        ns("edge", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        ns("edge", "iptables", "-t", "nat", "-A", "PREROUTING", "-d", f"{NET}.1.2", "-p", "tcp", "--dport",
           "6000", "-j", "DNAT", "--to-destination", f"{NET}.2.2:5201")
        ns("edge", "iptables", "-t", "nat", "-A", "POSTROUTING", "-d", f"{NET}.2.2", "-j", "MASQUERADE")
        host, port = f"{NET}.1.2", 6000
    else:
        cfg = Path(f"/tmp/{PREFIX}portunus.toml")
        cfg.write_text(f'[global]\nlog_level = "warning"\n[[rule]]\nname = "x"\nlisten_addr = "{NET}.1.2"\n'
                       f'listen_port = 6001\ntarget = "{NET}.2.2:5201"\n')
        fwd = subprocess.Popen(["ip", "netns", "exec", NS["edge"], str(Path(python_bin).parent / "portunus-standalone"),
                                "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        host, port = f"{NET}.1.2", 6001
    try:
        start = {role: nstat_all(role) for role in NS}
        before = softnet()
        cmd = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"]
        if pin:
            cmd = ["taskset", "-c", "0", *cmd]
        out = json.loads(ns("client", *cmd))
        after = softnet()
        counters = {role: {k: v - start[role].get(k, 0) for k, v in nstat_all(role).items()} for role in NS}
    finally:
        if fwd is not None:
            fwd.terminate()
            fwd.wait(10)
        ns("edge", "iptables", "-t", "nat", "-F", check=False)
        ns("edge", "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    sent = out["end"]["sum_sent"]
    return {"path": path, "pinned_client": pin, "mbps": round(sent["bits_per_second"] / 1e6, 1),
            "iperf3_retransmits": sent.get("retransmits"), "nstat": counters,
            "softnet_drops": [b[1] - a[1] for a, b in zip(before, after, strict=True)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (network namespaces)", file=sys.stderr)
        return 2
    setup()
    server = subprocess.Popen(["ip", "netns", "exec", NS["target"], "iperf3", "-s", "-B", f"{NET}.2.2", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = []
    try:
        time.sleep(0.5)
        for r in range(args.rounds):
            for pin in (False, True):
                for path in PATHS:
                    res = transfer(path, args.seconds, pin, sys.executable)
                    res["round"] = r
                    c = res["nstat"]["client"]
                    print(f"round {r} {path:9s} pinned={pin!s:5s} {res['mbps']:9,.0f} Mbit/s  iperf3 retransmits "
                          f"{res['iperf3_retransmits']:6}  client: retrans {c.get('TcpRetransSegs', 0)}, "
                          f"dsack'd {c.get('TcpExtTCPDSACKRecvSegs', 0)}, reorder {c.get('TcpExtTCPSACKReorder', 0)}; "
                          f"softnet drops {sum(res['softnet_drops'])}", flush=True)
                    runs.append(res)
    finally:
        server.terminate()
        server.wait(10)
        teardown()
    out = {"format_version": FORMAT_VERSION, "benchmark": "netns_retransmits",
           "command": "python -m benchmarks.netns_retransmits " + " ".join(argv or sys.argv[1:]),
           "host": platform.node(), "kernel": platform.release(), "note": args.note,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
