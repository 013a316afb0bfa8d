"""nftables: kernel DNAT in a nat `output` chain, a second kernel baseline next to iptables.

The rule lives in a table of our own, `ip PORTUNUS_BENCH_<pid of the
harness>`, created by start() and deleted by stop() (every exit path of a
measurement), by the runner's safety net, and by `portunus-bench cleanup`
when its harness process is gone (e.g. after SIGKILL). Loopback clients pass
the output hook, not prerouting, so the DNAT goes there (priority -100,
dstnat), like iptables' REDIRECT in nat OUTPUT.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from harness.errors import PathError
from harness.netutil import LOOPBACK
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup

NFT = "nft"
FAMILY = "ip"
TABLE_PREFIX = "PORTUNUS_BENCH_"
CHAIN = "output"
NAT_PRIORITY = -100  # dstnat: where DNAT belongs
NFT_TIMEOUT_S = 30.0
_TABLE_RE = re.compile(r"^table\s+" + FAMILY + r"\s+(" + re.escape(TABLE_PREFIX) + r"(\d+))\s*$")


def table_name(pid: int | None = None) -> str:
    """The table owned by harness process pid (default: this process)."""
    return f"{TABLE_PREFIX}{os.getpid() if pid is None else pid}"


def _nft(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([NFT, *args], input=stdin, capture_output=True, text=True, timeout=NFT_TIMEOUT_S)
    if check and proc.returncode != 0:
        what = " ".join(args) if stdin is None else f"-f - <<{stdin!r}"
        raise PathError(f"nft {what} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def render_ruleset(table: str, listen_port: int, target_port: int, protocol: str = "tcp") -> str:
    """An `nft -f` script: our table, a nat output chain, DNAT listen_port -> 127.0.0.1:target_port.

    protocol "udp" adds the UDP rule next to the TCP one (iperf3 -u keeps TCP for control).
    """
    l4 = ["tcp", "udp"] if protocol == "udp" else ["tcp"]
    rules = [f"        {FAMILY} daddr {LOOPBACK} {p} dport {listen_port} dnat to {LOOPBACK}:{target_port}" for p in l4]
    return "\n".join([
        f"table {FAMILY} {table} {{",
        f"    chain {CHAIN} {{",
        f"        type nat hook output priority {NAT_PRIORITY}; policy accept;",
        *rules,
        "    }",
        "}",
        "",
    ])


def remove_table(table: str) -> bool:
    """Delete our table (its chain and rules go with it). True if it existed."""
    return _nft("delete", "table", FAMILY, table, check=False).returncode == 0


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


def cleanup_leftovers(include_live: bool = False) -> list[str]:
    """Delete harness tables whose harness process is gone (all of them with include_live)."""
    removed = []
    for t in list_bench_tables():
        if not include_live and t.pid != os.getpid() and os.path.exists(f"/proc/{t.pid}"):
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
    description = "kernel nftables DNAT (own table, nat output chain), no userspace forwarder"
    has_forwarder_process = False
    needs_root = True
    ports_needed = 1
    protocols = ("tcp", "udp")

    def __init__(self) -> None:
        self._table: str | None = None
        self._ruleset = ""

    def available(self) -> Availability:
        return nftables_available()

    def start(self, setup: PathSetup) -> Endpoint:
        listen_port = setup.alloc_port()
        table = table_name()
        self._table = table  # first: stop() must clean up even if loading fails half-way
        remove_table(table)  # a leftover of an earlier measurement that could not be removed
        self._ruleset = render_ruleset(table, listen_port, setup.target_port, setup.protocol)
        _nft("-f", "-", stdin=self._ruleset)
        return Endpoint(LOOPBACK, listen_port)

    def ready(self, timeout_s: float) -> None:
        assert self._table is not None
        listing = _nft("list", "table", FAMILY, self._table, check=False)
        if listing.returncode != 0 or "dnat to" not in listing.stdout:
            raise PathError(f"nftables table {self._table} missing its DNAT rule right after loading it")

    def stop(self) -> None:
        if self._table is not None:
            remove_table(self._table)
            self._table = None

    def describe(self) -> dict[str, Any]:
        return {"table": f"{FAMILY} {self._table}" if self._table else None, "ruleset": self._ruleset}
