"""iptables: kernel REDIRECT in the nat OUTPUT hook (loopback clients never pass PREROUTING).

Rules live in a chain of our own, `PORTUNUS-BENCH-<pid of the harness>`,
jumped to from nat OUTPUT, so the harness never edits rules it did not
create, two harness runs do not step on each other, and `portunus-bench
cleanup` can find leftovers (chains whose harness pid is gone) after a
SIGKILL.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import PathError
from harness.netutil import LOOPBACK
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup

IPTABLES = "iptables"
CHAIN_PREFIX = "PORTUNUS-BENCH-"
TABLE = "nat"
HOOK = "OUTPUT"
# iptables-nft serialises through the kernel, but -w keeps the legacy backend
# from failing when another tool holds the xtables lock.
_WAIT = ["-w", "5"]
_CHAIN_RE = re.compile(r"^:(" + re.escape(CHAIN_PREFIX) + r"(\d+))\s")


def chain_name(pid: int | None = None) -> str:
    """The chain owned by harness process pid (default: this process)."""
    return f"{CHAIN_PREFIX}{os.getpid() if pid is None else pid}"


def _ipt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([IPTABLES, *_WAIT, "-t", TABLE, *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise PathError(f"iptables {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def redirect_rule(listen_port: int, target_port: int, protocol: str = "tcp") -> list[str]:
    """Rule spec (after -A CHAIN) redirecting 127.0.0.1:listen_port to local target_port."""
    return ["-p", protocol, "-d", LOOPBACK, "--dport", str(listen_port), "-j", "REDIRECT",
            "--to-ports", str(target_port)]


def ensure_chain(chain: str) -> None:
    """Create chain (if absent) and the jump to it from nat OUTPUT (if absent)."""
    if _ipt("-S", chain, check=False).returncode != 0:
        _ipt("-N", chain)
    if _ipt("-C", HOOK, "-j", chain, check=False).returncode != 0:
        _ipt("-I", HOOK, "1", "-j", chain)


def remove_chain(chain: str) -> bool:
    """Remove every jump to chain, then flush and delete it. True if anything was removed."""
    removed = False
    for hook in ("OUTPUT", "PREROUTING"):
        while _ipt("-D", hook, "-j", chain, check=False).returncode == 0:
            removed = True
    if _ipt("-S", chain, check=False).returncode == 0:
        _ipt("-F", chain)
        _ipt("-X", chain)
        removed = True
    return removed


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


def cleanup_leftovers(include_live: bool = False) -> list[str]:
    """Remove harness chains whose harness process is gone (all of them with include_live)."""
    removed = []
    for c in list_bench_chains():
        if not include_live and c.pid != os.getpid() and os.path.exists(f"/proc/{c.pid}"):
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
    description = "kernel iptables REDIRECT (nat OUTPUT), no userspace forwarder"
    has_forwarder_process = False
    needs_root = True
    ports_needed = 1
    protocols = ("tcp", "udp")  # udp: a UDP and a TCP rule (iperf3 -u keeps TCP for control)

    def __init__(self) -> None:
        self._chain: str | None = None
        self._rules: list[list[str]] = []

    def available(self) -> Availability:
        return iptables_available()

    def start(self, setup: PathSetup) -> Endpoint:
        listen_port = setup.alloc_port()
        chain = chain_name()
        self._chain = chain  # set first: stop() must clean up even if the next call fails
        ensure_chain(chain)
        l4 = ["tcp", "udp"] if setup.protocol == "udp" else [setup.protocol]
        self._rules = [redirect_rule(listen_port, setup.target_port, proto) for proto in l4]
        for rule in self._rules:
            _ipt("-A", chain, *rule)
        return Endpoint(LOOPBACK, listen_port)

    def ready(self, timeout_s: float) -> None:
        assert self._chain is not None and self._rules
        for rule in self._rules:
            if _ipt("-C", self._chain, *rule, check=False).returncode != 0:
                raise PathError(f"REDIRECT rule missing from chain {self._chain} right after adding it")

    def stop(self) -> None:
        if self._chain is not None:
            remove_chain(self._chain)
            self._chain = None

    def describe(self) -> dict:
        return {"chain": self._chain, "rule": "; ".join(" ".join(r) for r in self._rules)}
