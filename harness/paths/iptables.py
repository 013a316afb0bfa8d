"""iptables: the kernel NAT baseline. Loopback: REDIRECT in nat OUTPUT; forwarded: DNAT in PREROUTING.

Loopback clients never pass PREROUTING, so there the rule is a REDIRECT in
the nat OUTPUT hook. On a forwarded topology (netns, hosts) the packets
arrive at the edge from another host, so the rule is what a port-forwarding
box runs: in the edge's nat table, DNAT in PREROUTING (edge address:port ->
target address:port), MASQUERADE in POSTROUTING towards the target (so the
target's replies come back through the edge without a route to the client),
and net.ipv4.ip_forward=1 for the measurement (restored after). The filter
FORWARD policy must be ACCEPT (it is in a fresh namespace; ready() checks).

Rules live in chains of our own, `PORTUNUS-BENCH-<pid of the harness>`
(and `...-<pid>-SNAT` for POSTROUTING), jumped to from the hooks, so the
harness never edits rules it did not create, two harness runs do not step
on each other, and `portunus-bench cleanup` can find leftovers (chains whose
harness pid is gone) after a SIGKILL. In a netns topology the chains live in
the edge namespace and go away with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import PathError
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.site import procs
from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK
from harness.site.topology.base import Crossing

IPTABLES = "iptables"
CHAIN_PREFIX = "PORTUNUS-BENCH-"
TABLE = "nat"
HOOK = "OUTPUT"  # loopback
DNAT_HOOK = "PREROUTING"  # forwarded topologies
SNAT_HOOK = "POSTROUTING"
SNAT_SUFFIX = "SNAT"
# iptables-nft serialises through the kernel, but -w keeps the legacy backend
# from failing when another tool holds the xtables lock.
_WAIT = ["-w", "5"]
_CHAIN_RE = re.compile(r"^:(" + re.escape(CHAIN_PREFIX) + r"(\d+)(?:-[A-Z]+)?)\s")


def chain_name(pid: int | None = None, suffix: str = "") -> str:
    """The chain owned by harness process pid (default: this process); suffix for a second hook's chain."""
    return f"{CHAIN_PREFIX}{os.getpid() if pid is None else pid}" + (f"-{suffix}" if suffix else "")


def _ipt(*args: str, check: bool = True, ex: Executor = LOCAL, table: str = TABLE) -> subprocess.CompletedProcess:
    r = ex.run([IPTABLES, *_WAIT, "-t", table, *args], timeout_s=30)
    if check and not r.ok:
        where = "" if ex is LOCAL else f" on {ex.name}"
        raise PathError(f"iptables {' '.join(args)} failed{where}: {r.why()}")
    return subprocess.CompletedProcess(list(r.argv), r.returncode, r.stdout, r.stderr)


def redirect_rule(listen_port: int, target_port: int, protocol: str = "tcp") -> list[str]:
    """Rule spec (after -A CHAIN) redirecting 127.0.0.1:listen_port to local target_port."""
    return ["-p", protocol, "-d", LOOPBACK, "--dport", str(listen_port), "-j", "REDIRECT",
            "--to-ports", str(target_port)]


def dnat_rule(listen_host: str, listen_port: int, target_host: str, target_port: int,
              protocol: str = "tcp") -> list[str]:
    """Rule spec (after -A CHAIN, in PREROUTING) sending listen_host:listen_port to target_host:target_port."""
    return ["-p", protocol, "-d", listen_host, "--dport", str(listen_port), "-j", "DNAT",
            "--to-destination", f"{target_host}:{target_port}"]


def masquerade_rule(target_host: str, target_port: int, protocol: str = "tcp") -> list[str]:
    """Rule spec (in POSTROUTING): the edge's own address as the source towards the target."""
    return ["-p", protocol, "-d", target_host, "--dport", str(target_port), "-j", "MASQUERADE"]


def ensure_chain(chain: str, hook: str = HOOK, ex: Executor = LOCAL) -> None:
    """Create chain (if absent) and the jump to it from the nat hook (if absent)."""
    if _ipt("-S", chain, check=False, ex=ex).returncode != 0:
        _ipt("-N", chain, ex=ex)
    if _ipt("-C", hook, "-j", chain, check=False, ex=ex).returncode != 0:
        _ipt("-I", hook, "1", "-j", chain, ex=ex)


def remove_chain(chain: str, ex: Executor = LOCAL) -> bool:
    """Remove every jump to chain, then flush and delete it. True if anything was removed."""
    removed = False
    for hook in ("OUTPUT", "PREROUTING", "POSTROUTING"):
        while _ipt("-D", hook, "-j", chain, check=False, ex=ex).returncode == 0:
            removed = True
    if _ipt("-S", chain, check=False, ex=ex).returncode == 0:
        _ipt("-F", chain, ex=ex)
        _ipt("-X", chain, ex=ex)
        removed = True
    return removed


def forward_policy(ex: Executor) -> str | None:
    """The filter FORWARD chain's policy there ('ACCEPT', 'DROP'), or None if unreadable."""
    r = _ipt("-S", "FORWARD", check=False, ex=ex, table="filter")
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["-P", "FORWARD"] and len(parts) > 2:
            return parts[2]
    return None


@dataclass(frozen=True)
class BenchChain:
    name: str
    pid: int


def parse_bench_chains(iptables_save: str) -> list[BenchChain]:
    """Harness chains declared in `iptables-save -t nat` output."""
    out = []
    for line in iptables_save.splitlines():
        m = _CHAIN_RE.match(line)
        if m:
            out.append(BenchChain(m.group(1), int(m.group(2))))
    return out


def list_bench_chains() -> list[BenchChain]:
    """Harness chains present in the nat table now."""
    proc = subprocess.run(["iptables-save", "-t", TABLE], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise PathError(f"iptables-save failed: {proc.stderr.strip()}")
    return parse_bench_chains(proc.stdout)


def cleanup_leftovers(include_live: bool = False, pid: int | None = None) -> list[str]:
    """Remove harness chains whose harness process is gone (all of them with include_live; only harness pid's, alive or not, with pid)."""
    removed = []
    for c in list_bench_chains():
        if not procs.cleanup_selects(c.pid, include_live=include_live, only_pid=pid):
            continue
        if remove_chain(c.name):
            removed.append(c.name)
    return removed


def iptables_available() -> Availability:
    """Can this process change the nat table?"""
    if shutil.which(IPTABLES) is None:
        return Availability.no("iptables is not installed: apt-get install iptables (or run scripts/setup-system.sh)")
    if os.geteuid() != 0:
        return Availability.no("changing iptables needs root: run portunus-bench as root (e.g. with sudo), "
                               "or leave the iptables path out")
    probe = _ipt("-S", HOOK, check=False)
    if probe.returncode != 0:
        return Availability.no(f"the iptables nat table is not usable here: {probe.stderr.strip()}")
    return Availability.yes()


class IptablesPath(ForwardPath):
    name = "iptables"
    description = ("kernel iptables NAT, no userspace forwarder (loopback: REDIRECT in nat OUTPUT; "
                   "netns/hosts: DNAT in the edge's PREROUTING + MASQUERADE + ip_forward)")
    has_forwarder_process = False
    needs_root = True
    ports_needed = 1
    protocols = ("tcp", "udp")  # udp: a UDP and a TCP rule (iperf3 -u keeps TCP for control)

    def __init__(self) -> None:
        self._chain: str | None = None
        self._chains: list[str] = []
        self._rules: list[tuple[str, list[str]]] = []  # (chain, rule spec)
        self._edge: Executor = LOCAL
        self._crossing: Crossing | None = None
        self._forward_before: bool | None = None

    def available(self) -> Availability:
        return iptables_available()

    def start(self, setup: PathSetup) -> Endpoint:
        listen_port = setup.alloc_port()
        site = setup.site
        self._edge = ex = site.edge
        chain = chain_name()
        self._chain = chain  # set first: stop() must clean up even if the next call fails
        l4 = ["tcp", "udp"] if setup.protocol == "udp" else [setup.protocol]
        if site.crossing is None:
            self._chains = [chain]
            ensure_chain(chain, HOOK, ex)
            self._rules = [(chain, redirect_rule(listen_port, setup.target_port, proto)) for proto in l4]
        else:
            snat = chain_name(suffix=SNAT_SUFFIX)
            self._chains = [chain, snat]
            ensure_chain(chain, DNAT_HOOK, ex)
            ensure_chain(snat, SNAT_HOOK, ex)
            self._rules = [(chain, dnat_rule(site.listen_host, listen_port, site.target_host, setup.target_port, p))
                           for p in l4]
            self._rules += [(snat, masquerade_rule(site.target_host, setup.target_port, p)) for p in l4]
            self._crossing = site.crossing
            self._forward_before = site.crossing.set_ip_forward(True)
        for c, rule in self._rules:
            _ipt("-A", c, *rule, ex=ex)
        return Endpoint(site.listen_host, listen_port)

    def ready(self, timeout_s: float) -> None:
        assert self._chain is not None and self._rules
        for c, rule in self._rules:
            if _ipt("-C", c, *rule, check=False, ex=self._edge).returncode != 0:
                raise PathError(f"NAT rule missing from chain {c} right after adding it")
        if self._crossing is not None and forward_policy(self._edge) not in ("ACCEPT", None):
            raise PathError(f"the filter FORWARD policy on {self._edge.name} is not ACCEPT: forwarded packets "
                            "would be dropped; allow forwarding between the edge's interfaces first")

    def stop(self) -> None:
        if self._chain is not None:
            for c in self._chains or [self._chain]:
                remove_chain(c, self._edge)
            self._chain = None
        if self._crossing is not None and self._forward_before is not None:
            self._crossing.set_ip_forward(self._forward_before)
        self._crossing = None
        self._forward_before = None

    def describe(self) -> dict:
        return {"chain": self._chain, "rule": "; ".join(" ".join(["-A", c, *r]) if len(self._chains) > 1
                                                        else " ".join(r) for c, r in self._rules),
                "mode": "redirect-output" if len(self._chains) <= 1 else "dnat-prerouting+masquerade"}
