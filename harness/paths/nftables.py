"""nftables: kernel DNAT in a table of our own, a second kernel baseline next to iptables.

The rules live in a table of our own, `ip PORTUNUS_BENCH_<pid of the
harness>`, created by start() and deleted by stop() (every exit path of a
measurement), by the runner's safety net, and by `portunus-bench cleanup`
when its harness process is gone (e.g. after SIGKILL). Loopback clients pass
the output hook, not prerouting, so there the DNAT goes into a nat `output`
chain (priority -100, dstnat), like iptables' REDIRECT in nat OUTPUT. On a
forwarded topology the table is loaded on the edge: DNAT in a nat
`prerouting` chain, masquerade in a nat `postrouting` chain towards the
target, and ip_forward=1 for the measurement (harness.paths.nft_flowtable
adds a flowtable on top).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from harness.errors import PathError
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.site import procs
from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK
from harness.site.topology.base import Crossing, Site

NFT = "nft"
FAMILY = "ip"
TABLE_PREFIX = "PORTUNUS_BENCH_"
CHAIN = "output"
NAT_PRIORITY = -100  # dstnat: where DNAT belongs
SRCNAT_PRIORITY = 100  # srcnat: where masquerade belongs
NFT_TIMEOUT_S = 30.0
_TABLE_RE = re.compile(r"^table\s+" + FAMILY + r"\s+(" + re.escape(TABLE_PREFIX) + r"(\d+))\s*$")


def table_name(pid: int | None = None) -> str:
    """The table owned by harness process pid (default: this process)."""
    return f"{TABLE_PREFIX}{os.getpid() if pid is None else pid}"


def _nft(*args: str, stdin: str | None = None, check: bool = True, ex: Executor = LOCAL) -> subprocess.CompletedProcess:
    r = ex.run([NFT, *args], input=stdin, timeout_s=NFT_TIMEOUT_S)
    if check and not r.ok:
        what = " ".join(args) if stdin is None else f"-f - <<{stdin!r}"
        where = "" if ex is LOCAL else f" on {ex.name}"
        raise PathError(f"nft {what} failed{where}: {r.why()}")
    return subprocess.CompletedProcess(list(r.argv), r.returncode, r.stdout, r.stderr)


def render_ruleset(table: str, listen_port: int, target_port: int, protocol: str = "tcp", *,
                   listen_host: str = LOOPBACK, target_host: str = LOOPBACK, forwarded: bool = False,
                   flowtable_devices: tuple[str, ...] = ()) -> str:
    """An `nft -f` script: our table with DNAT listen_host:listen_port -> target_host:target_port.

    Loopback (forwarded False): one nat output chain. Forwarded: nat prerouting (DNAT) and
    postrouting (masquerade towards the target); with flowtable_devices also a flowtable `ft` on
    those devices and a filter forward chain that counts what still takes the slow path and adds
    every TCP/UDP flow to the flowtable. protocol "udp" adds UDP rules next to the TCP ones
    (iperf3 -u keeps TCP for control).
    """
    l4 = ["tcp", "udp"] if protocol == "udp" else ["tcp"]
    dnat = [f"        {FAMILY} daddr {listen_host} {p} dport {listen_port} dnat to {target_host}:{target_port}"
            for p in l4]
    if not forwarded:
        chains = [f"    chain {CHAIN} {{", f"        type nat hook output priority {NAT_PRIORITY}; policy accept;",
                  *dnat, "    }"]
        return "\n".join([f"table {FAMILY} {table} {{", *chains, "}", ""])
    masq = [f"        {FAMILY} daddr {target_host} {p} dport {target_port} masquerade" for p in l4]
    lines = [f"table {FAMILY} {table} {{"]
    if flowtable_devices:
        lines += [f"    flowtable {FLOWTABLE} {{",
                  f"        hook ingress priority {FLOWTABLE_PRIORITY}; devices = {{ {', '.join(flowtable_devices)} }};",
                  "    }"]
    lines += [f"    chain {PREROUTING} {{", f"        type nat hook prerouting priority {NAT_PRIORITY}; policy accept;",
              *dnat, "    }",
              f"    chain {POSTROUTING} {{", f"        type nat hook postrouting priority {SRCNAT_PRIORITY}; policy accept;",
              *masq, "    }"]
    if flowtable_devices:
        # The counter sees only packets that take the slow path: once a flow is offloaded,
        # its packets leave the flowtable's ingress hook straight for the output device.
        lines += [f"    chain {FORWARD} {{", "        type filter hook forward priority 0; policy accept;",
                  "        counter",
                  f"        meta l4proto {{ tcp, udp }} flow add @{FLOWTABLE}", "    }"]
    return "\n".join([*lines, "}", ""])


PREROUTING, POSTROUTING, FORWARD = "prerouting", "postrouting", "forward"
FLOWTABLE = "ft"
FLOWTABLE_PRIORITY = 0  # the filter priority at ingress, as in the nftables wiki's flowtable example


def remove_table(table: str, ex: Executor = LOCAL) -> bool:
    """Delete our table (its chains, rules and flowtable go with it). True if it existed."""
    return _nft("delete", "table", FAMILY, table, check=False, ex=ex).returncode == 0


@dataclass(frozen=True)
class BenchTable:
    name: str
    pid: int


def parse_bench_tables(nft_list_tables: str) -> list[BenchTable]:
    """Harness tables in the output of `nft list tables`."""
    out = []
    for line in nft_list_tables.splitlines():
        m = _TABLE_RE.match(line.strip())
        if m:
            out.append(BenchTable(m.group(1), int(m.group(2))))
    return out


def list_bench_tables() -> list[BenchTable]:
    return parse_bench_tables(_nft("list", "tables").stdout)


def cleanup_leftovers(include_live: bool = False, pid: int | None = None) -> list[str]:
    """Delete harness tables whose harness process is gone (all of them with include_live; only harness pid's, alive or not, with pid)."""
    removed = []
    for t in list_bench_tables():
        if not procs.cleanup_selects(t.pid, include_live=include_live, only_pid=pid):
            continue
        if remove_table(t.name):
            removed.append(t.name)
    return removed


def nftables_available() -> Availability:
    """Can this process create nft tables?"""
    if shutil.which(NFT) is None:
        return Availability.no("nft is not installed: apt-get install nftables (or make setup)")
    if os.geteuid() != 0:
        return Availability.no("changing nftables needs root: run portunus-bench as root, "
                               "or leave the nftables path out")
    probe = _nft("list", "tables", check=False)
    if probe.returncode != 0:
        return Availability.no(f"nftables is not usable here: {probe.stderr.strip()}")
    return Availability.yes()


class NftablesPath(ForwardPath):
    name = "nftables"
    description = ("kernel nftables DNAT (own table), no userspace forwarder (loopback: nat output chain; "
                   "netns/hosts: prerouting DNAT + postrouting masquerade on the edge)")
    has_forwarder_process = False
    needs_root = True
    ports_needed = 1
    protocols = ("tcp", "udp")
    uses_flowtable = False

    def __init__(self) -> None:
        self._table: str | None = None
        self._ruleset = ""
        self._edge: Executor = LOCAL
        self._crossing: Crossing | None = None
        self._forward_before: bool | None = None

    def available(self) -> Availability:
        return nftables_available()

    def flowtable_devices(self, site: Site) -> tuple[str, ...]:
        return ()

    def start(self, setup: PathSetup) -> Endpoint:
        listen_port = setup.alloc_port()
        site = setup.site
        self._edge = site.edge
        table = table_name()
        self._table = table  # first: stop() must clean up even if loading fails half-way
        remove_table(table, self._edge)  # a leftover of an earlier measurement that could not be removed
        self._ruleset = render_ruleset(table, listen_port, setup.target_port, setup.protocol,
                                       listen_host=site.listen_host, target_host=site.target_host,
                                       forwarded=site.crossing is not None,
                                       flowtable_devices=self.flowtable_devices(site))
        if site.crossing is not None:
            self._crossing = site.crossing
            self._forward_before = site.crossing.set_ip_forward(True)
        _nft("-f", "-", stdin=self._ruleset, ex=self._edge)
        return Endpoint(site.listen_host, listen_port)

    def ready(self, timeout_s: float) -> None:
        assert self._table is not None
        listing = _nft("list", "table", FAMILY, self._table, check=False, ex=self._edge)
        if listing.returncode != 0 or "dnat to" not in listing.stdout:
            raise PathError(f"nftables table {self._table} missing its DNAT rule right after loading it")

    def stop(self) -> None:
        if self._table is not None:
            remove_table(self._table, self._edge)
            self._table = None
        if self._crossing is not None and self._forward_before is not None:
            self._crossing.set_ip_forward(self._forward_before)
        self._crossing = None
        self._forward_before = None

    def describe(self) -> dict[str, Any]:
        return {"table": f"{FAMILY} {self._table}" if self._table else None, "ruleset": self._ruleset}
