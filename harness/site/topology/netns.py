"""The `netns` topology: three network namespaces on this machine joined by two veth pairs.

    <prefix>client [to-edge 10.203.1.1] --- [to-client 10.203.1.2] <prefix>edge [to-target 10.203.2.1]
        --- [to-edge 10.203.2.2] <prefix>target

Each namespace has its own `lo` up. Routes: only the connected subnets, and
net.ipv4.ip_forward is 0 in the edge, so the client cannot reach the target:
a forwarder in the edge (listening on 10.203.1.2, dialling 10.203.2.2) is the
only way across. Kernel paths switch ip_forward on for their measurement and
masquerade towards the target, so replies return through the edge. `direct`
adds the two routes (client -> target subnet via the edge, target -> client
subnet via the edge) and ip_forward for its measurement: plain routing
through the edge, no NAT and no forwarder, the ceiling of the crossing.

The veth pairs are created straight into the namespaces (`ip -n A link add
X type veth peer name Y netns B`): nothing is ever added to the harness's
own namespace, and two runs with different prefixes never collide. Every
namespace we create carries an owner mark, the alias of its `lo`
("portunus-bench pid=<harness pid>"), so `portunus-bench cleanup` finds the
namespaces of dead runs whatever their names. Deleting a namespace removes
its veth end, which destroys the pair; close() first stops any process still
inside (they are ours: nothing else starts processes in our namespaces), so
no process keeps a deleted namespace alive.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from harness.define.topology import LINKS, ROLES, TopologySpec
from harness.errors import HarnessError
from harness.site import procs
from harness.site.executor.base import Completed, Executor
from harness.site.executor.local import IP, LOCAL, NetnsExecutor
from harness.site.executor.nsenter import netns_path
from harness.site.netutil import LOOPBACK
from harness.site.topology.base import Crossing, Site, Topology
from harness.site.topology.shaping import (
    explain_tc_failure,
    parse_ip_link_details,
    parse_tc_qdisc_show,
    tc_commands,
)

log = logging.getLogger("harness.site.topology")

MARK_PREFIX = "portunus-bench pid="
# Interface names inside each namespace: the name says where the cable goes.
IFNAMES = {("client", "client_edge"): "to-edge", ("edge", "client_edge"): "to-client",
           ("edge", "edge_target"): "to-target", ("target", "edge_target"): "to-edge"}
# The per-namespace sysctls recorded in the result header (the TCP stack each end runs).
RECORDED_SYSCTLS = ("net.ipv4.tcp_congestion_control", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
                    "net.core.somaxconn", "net.ipv4.ip_forward")
_ALIAS = re.compile(r"^\s*alias\s+(.*)$", re.M)


class TopologyError(HarnessError):
    """A topology that cannot be built or torn down here (the message names the fix)."""


def _ip(*args: str, check: bool = True) -> Completed:
    r = LOCAL.run([IP, *args])
    if check and not r.ok:
        raise TopologyError(f"`ip {' '.join(args)}` failed: {r.why()}")
    return r


# ---------------------------------------------------------------- namespaces and their owner mark


def parse_ip_netns_list(text: str) -> list[str]:
    """Names in `ip netns list` output ("name" or "name (id: N)" per line)."""
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_owner_mark(ip_link_show_lo: str) -> int | None:
    """The harness pid in our mark (the alias of lo in `ip link show lo`), or None if not ours."""
    m = _ALIAS.search(ip_link_show_lo)
    if not m or not m.group(1).startswith(MARK_PREFIX):
        return None
    try:
        return int(m.group(1)[len(MARK_PREFIX):].strip())
    except ValueError:
        return None


def list_namespaces() -> list[str]:
    return parse_ip_netns_list(_ip("netns", "list").stdout)


def namespace_owner(name: str) -> int | None:
    """The pid of the harness that created namespace `name`, or None (not ours / gone)."""
    r = _ip("-n", name, "link", "show", "lo", check=False)
    return parse_owner_mark(r.stdout) if r.ok else None


@dataclass(frozen=True)
class BenchNamespace:
    name: str
    pid: int


def list_bench_namespaces() -> list[BenchNamespace]:
    """Namespaces carrying our owner mark."""
    out = []
    for name in list_namespaces():
        pid = namespace_owner(name)
        if pid is not None:
            out.append(BenchNamespace(name, pid))
    return out


def namespace_pids(name: str) -> list[int]:
    """Processes inside namespace `name` (`ip netns pids`)."""
    r = _ip("netns", "pids", name, check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()] if r.ok else []


def delete_namespace(name: str) -> bool:
    """Stop what still runs inside, then delete the namespace (its veths go with it). True if it existed."""
    if not netns_path(name).exists():
        return False
    left = namespace_pids(name)
    if left:
        log.warning("stopping %d process(es) still inside namespace %s: %s", len(left), name, left)
        procs.stop_pids(left)
    r = _ip("netns", "del", name, check=False)
    if not r.ok and netns_path(name).exists():
        raise TopologyError(f"cannot delete namespace {name}: {r.why()}")
    return True


def cleanup_leftovers(include_live: bool = False, pid: int | None = None) -> list[str]:
    """Delete our namespaces whose harness process is gone (all of ours with include_live; with pid only
    that harness's, and only once it is gone)."""
    removed = []
    for ns in list_bench_namespaces():
        if pid is not None and ns.pid != pid:
            continue
        if not procs.cleanup_selects(ns.pid, include_live=include_live):  # running: only with include_live
            continue
        if delete_namespace(ns.name):
            removed.append(ns.name)
    return removed


def namespace_inode(name: str) -> int | None:
    """The nsfs inode of a named namespace (identifies it even after its name is gone)."""
    try:
        return os.stat(netns_path(name)).st_ino
    except FileNotFoundError:
        return None


def processes_in_inode(inode: int) -> list[int]:
    """Pids whose network namespace is the one with this inode (a deleted namespace's last holders)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}/ns/net").st_ino == inode:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def netns_available() -> str | None:
    """None if this process can create namespaces and veths, else why not (with the fix)."""
    if os.geteuid() != 0:
        return "network namespaces need root: run portunus-bench as root, or use topology: loopback"
    if not os.path.exists(IP):
        return "the `ip` tool is missing: apt-get install iproute2 (or make setup)"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces (CONFIG_NET_NS)"
    return None


# ---------------------------------------------------------------- the topology


@dataclass(frozen=True)
class Addresses:
    """Who has which address (derived from the two subnets)."""

    client: str  # on client_edge
    edge_client_side: str  # on client_edge: forwarders listen here
    edge_target_side: str  # on edge_target
    target: str  # on edge_target
    client_subnet: str
    target_subnet: str
    prefixlen_client: int
    prefixlen_target: int

    @classmethod
    def of(cls, spec: TopologySpec) -> Addresses:
        ce, et = spec.subnet("client_edge"), spec.subnet("edge_target")
        hce, het = list(ce.hosts()), list(et.hosts())
        return cls(str(hce[0]), str(hce[1]), str(het[0]), str(het[1]), str(ce), str(et), ce.prefixlen, et.prefixlen)


class NetnsCrossing(Crossing):
    def __init__(self, topo: NetnsTopology) -> None:
        self._t = topo
        self._routed = False
        self._forward_before: bool | None = None

    def set_ip_forward(self, on: bool) -> bool:
        return set_ip_forward(self._t.executor("edge"), on)

    def open_direct_route(self) -> None:
        a, names = self._t.addresses, self._t.names
        self._routed = True  # first: close must undo a half-done open
        _ip("-n", names["client"], "route", "replace", a.target_subnet, "via", a.edge_client_side)
        _ip("-n", names["target"], "route", "replace", a.client_subnet, "via", a.edge_target_side)
        self._forward_before = self.set_ip_forward(True)

    def close_direct_route(self) -> None:
        if not self._routed:
            return
        a, names = self._t.addresses, self._t.names
        _ip("-n", names["client"], "route", "del", a.target_subnet, check=False)
        _ip("-n", names["target"], "route", "del", a.client_subnet, check=False)
        if self._forward_before is not None:
            self.set_ip_forward(self._forward_before)
        self._routed = False
        self._forward_before = None


def set_ip_forward(edge: Executor, on: bool) -> bool:
    """Set net.ipv4.ip_forward on the host/namespace of `edge`; returns the previous value."""
    r = edge.run(["sysctl", "-n", "net.ipv4.ip_forward"])
    if not r.ok:
        raise TopologyError(f"{edge.name}: cannot read net.ipv4.ip_forward: {r.why()}")
    before = r.stdout.strip() == "1"
    if before != on:
        w = edge.run(["sysctl", "-q", "-w", f"net.ipv4.ip_forward={1 if on else 0}"])
        if not w.ok:
            raise TopologyError(f"{edge.name}: cannot set net.ipv4.ip_forward: {w.why()}")
    return before


class NetnsTopology(Topology):
    """Created by open(); close() removes every namespace it created (and nothing else)."""

    kind = "netns"

    def __init__(self, spec: TopologySpec, owner_pid: int | None = None) -> None:
        assert spec.kind == "netns"
        self.spec = spec
        self.owner_pid = os.getpid() if owner_pid is None else owner_pid
        self.names = spec.namespaces()
        self.addresses = Addresses.of(spec)
        self._executors = {role: NetnsExecutor(self.names[role]) for role in ROLES}
        self._created: list[str] = []
        self.inodes: dict[str, int] = {}
        self._crossing = NetnsCrossing(self)
        self._applied: dict[str, Any] = {}

    # ---- roles

    def executor(self, role: str) -> NetnsExecutor:
        return self._executors[role]

    @property
    def client(self) -> Executor:
        return self._executors["client"]

    @property
    def target(self) -> Executor:
        return self._executors["target"]

    def _control_host(self) -> str:
        role = self.spec.control
        a = self.addresses
        return {"edge": LOOPBACK, "target": a.target, "client": a.client}[role]

    @property
    def site(self) -> Site:
        return Site(topology="netns", edge=self._executors["edge"], control=self._executors[self.spec.control],
                    listen_host=self.addresses.edge_client_side, target_host=self.addresses.target,
                    control_host=self._control_host(), crossing=self._crossing,
                    edge_devices=(IFNAMES[("edge", "client_edge")], IFNAMES[("edge", "edge_target")]))

    # ---- lifecycle

    def open(self) -> NetnsTopology:
        """Create the namespaces, veths, addresses and shaping; TopologyError (after cleanup) on failure."""
        why = netns_available()
        if why:
            raise TopologyError(why)
        try:
            self._create()
            self._applied = self._inspect()
        except BaseException:
            self.close()
            raise
        return self

    def _claim(self, name: str) -> None:
        if not netns_path(name).exists():
            return
        owner = namespace_owner(name)
        if owner is None:
            raise TopologyError(f"network namespace {name} already exists and was not made by portunus-bench: "
                                "choose another topology prefix (topology: {kind: netns, prefix: ...})")
        if owner != self.owner_pid and os.path.exists(f"/proc/{owner}"):
            raise TopologyError(f"network namespace {name} belongs to a running harness (pid {owner}): "
                                "wait for it, or give this run another topology prefix")
        log.warning("removing leftover namespace %s of dead harness pid %d", name, owner)
        delete_namespace(name)

    def _create(self) -> None:
        for role in ROLES:
            self._claim(self.names[role])
        for role in ROLES:
            name = self.names[role]
            _ip("netns", "add", name)
            self._created.append(name)
            self.inodes[name] = namespace_inode(name) or 0
            _ip("-n", name, "link", "set", "lo", "alias", f"{MARK_PREFIX}{self.owner_pid}")
            _ip("-n", name, "link", "set", "lo", "up")
        a = self.addresses
        plan = [("client_edge", "client", "edge", a.client, a.edge_client_side, a.prefixlen_client),
                ("edge_target", "edge", "target", a.edge_target_side, a.target, a.prefixlen_target)]
        for link, left, right, left_addr, right_addr, plen in plan:
            lname, rname = IFNAMES[(left, link)], IFNAMES[(right, link)]
            _ip("-n", self.names[left], "link", "add", lname, "type", "veth", "peer", "name", rname,
                "netns", self.names[right])
            settings = self.spec.link(link)
            for role, ifname, addr in ((left, lname, left_addr), (right, rname, right_addr)):
                ns = self.names[role]
                if settings.mtu is not None:
                    _ip("-n", ns, "link", "set", "dev", ifname, "mtu", str(settings.mtu))
                _ip("-n", ns, "addr", "add", f"{addr}/{plen}", "dev", ifname)
                _ip("-n", ns, "link", "set", "dev", ifname, "up")
                for cmd in tc_commands(ifname, settings):
                    r = self._executors[role].run(["tc", *cmd])
                    if not r.ok:
                        raise TopologyError(f"link {link} ({ns} {ifname}): `tc {' '.join(cmd)}` failed: "
                                            f"{explain_tc_failure(r.stderr, settings)}")

    def _inspect(self) -> dict[str, Any]:
        """What the kernel reports now: per interface MTU, offload sizes, qdiscs; per namespace sysctls."""
        out: dict[str, Any] = {"interfaces": {}, "sysctls": {}}
        for (role, link), ifname in IFNAMES.items():
            ex = self._executors[role]
            st = parse_ip_link_details(ex.run([IP, "-d", "link", "show", "dev", ifname]).stdout)
            qd = parse_tc_qdisc_show(ex.run(["tc", "qdisc", "show", "dev", ifname]).stdout)
            out["interfaces"][f"{self.names[role]}/{ifname}"] = {
                "link": link, "mtu": st.mtu, "state": st.state, "gso_max_size": st.gso_max_size,
                "gro_max_size": st.gro_max_size, "qdiscs": [f"{q.kind} {q.handle} {q.parent} {q.params}".strip()
                                                            for q in qd]}
        for role in ROLES:
            r = self._executors[role].run(["sysctl", *RECORDED_SYSCTLS])
            out["sysctls"][self.names[role]] = dict(
                (k.strip(), " ".join(v.split())) for k, _, v in
                (line.partition("=") for line in r.stdout.splitlines() if "=" in line))
        return out

    def close(self) -> None:
        """Remove every namespace this topology created (idempotent; safe after a failed open)."""
        errors = []
        if self._created:
            try:
                self._crossing.close_direct_route()
            except TopologyError as e:
                errors.append(str(e))
        for name in reversed(self._created):
            try:
                delete_namespace(name)
            except TopologyError as e:
                errors.append(str(e))
        self._created = []
        if errors:
            raise TopologyError("; ".join(errors))

    def describe(self) -> dict[str, Any]:
        a = self.addresses
        return {
            "kind": "netns",
            "namespaces": dict(self.names),
            "control": self.spec.control,
            "addresses": {"client": a.client, "edge_client_side": a.edge_client_side,
                          "edge_target_side": a.edge_target_side, "target": a.target},
            "links": {link: self.spec.link(link).to_dict() for link in LINKS},
            "applied": self._applied,
            "direct": "routed through the edge (ip_forward=1, a route each way), no NAT, no forwarder",
            "kernel_nat": "DNAT in the edge's nat PREROUTING, MASQUERADE towards the target, ip_forward=1",
        }

