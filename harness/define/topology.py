"""The `topology:` key of an experiment file -> a frozen TopologySpec (pure; no I/O).

    topology: loopback                 # the default: everything on this host's loopback
    topology: netns                    # three namespaces pt-client, pt-edge, pt-target, default settings
    topology:                          # the long form
      kind: netns
      prefix: pt-                      # namespaces <prefix>client, <prefix>edge, <prefix>target
      namespaces: {edge: lab-edge}     # or name any of them outright
      control: edge                    # where portunus-server runs: client | edge | target
      subnets: {client_edge: 10.203.1.0/24, edge_target: 10.203.2.0/24}
      links:                           # per veth pair, both directions; each key optional
        client_edge: {mtu: 1500, delay_ms: 5, rate_mbit: 1000}
        edge_target: {mtu: 9000}
    topology:                          # real machines (or namespaces) reached by executors
      kind: hosts
      control: edge
      edge_address: 192.0.2.10         # the client dials forwarders here
      target_address: 198.51.100.20    # the edge dials the target here
      client_address: 192.0.2.5        # only needed with control: client
      edge_devices: [eth1, eth2]       # the edge's two interfaces (nft_flowtable only)
      hosts:
        client: {executor: ssh, host: 192.0.2.5, user: bench, identity_file: ~/.ssh/bench_ed25519,
                 known_hosts: ~/.ssh/known_hosts, extra_path: [/opt/portunus/.venv/bin], python: python3}
        edge:   {executor: local}
        target: {executor: ssh, host: 198.51.100.20, user: bench}

Link settings: `mtu` (bytes, both ends), `delay_ms` (one-way delay added by
tc netem on each end's egress, so the link adds 2 x delay_ms to a round
trip), `rate_mbit` (tc tbf on each end's egress: each direction capped).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("loopback", "netns", "hosts")
ROLES = ("client", "edge", "target")
LINKS = ("client_edge", "edge_target")
EXECUTOR_KINDS = ("local", "netns", "ssh")
DEFAULT_PREFIX = "pt-"
DEFAULT_SUBNETS = {"client_edge": "10.203.1.0/24", "edge_target": "10.203.2.0/24"}
# Linux veth MTU bounds: 68 is IPv4's minimum; 65535 is veth's maximum.
MTU_RANGE = (68, 65535)
# tc netem takes up to seconds; past 10 s an iperf3 run would not connect in its connect timeout.
MAX_DELAY_MS = 10_000.0
_NS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Add = Callable[[str, str], None]  # (key, message): one problem


@dataclass(frozen=True)
class SshSpec:
    """Where and how to reach one host (the `ssh` executor of a hosts topology)."""

    host: str
    port: int = 22
    user: str | None = None  # None: the local user name
    identity_file: str | None = None  # None: asyncssh's defaults (~/.ssh/id_*, an agent)
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts; host keys are always checked
    python: str = "python3"  # interpreter with the harness installed, for probe/echo children
    extra_path: tuple[str, ...] = ()  # prepended to PATH there (e.g. the venv holding portunus)
    scratch_dir: str = "/tmp"  # where the remote scratch directory is made
    connect_netns: str | None = None  # open the TCP connection from this local namespace (labs, tests)
    connect_timeout_s: float = 15.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["extra_path"] = list(self.extra_path)
        return d


@dataclass(frozen=True)
class LinkSettings:
    """What a veth pair should look like; None = the kernel's default (MTU 1500, no qdisc of ours)."""

    mtu: int | None = None
    delay_ms: float | None = None
    rate_mbit: float | None = None

    @property
    def shaped(self) -> bool:
        return self.delay_ms is not None or self.rate_mbit is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("mtu", self.mtu), ("delay_ms", self.delay_ms), ("rate_mbit", self.rate_mbit))
                if v is not None}


@dataclass(frozen=True)
class HostSpec:
    """One role of a hosts topology: how the harness reaches it."""

    executor: str  # local | netns | ssh
    netns: str | None = None  # executor netns: the namespace on this machine
    ssh: SshSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"executor": self.executor}
        if self.netns is not None:
            d["netns"] = self.netns
        if self.ssh is not None:
            d.update({k: v for k, v in self.ssh.to_dict().items() if v not in (None, ()) and v != []})
        return d


@dataclass(frozen=True)
class TopologySpec:
    """A validated topology definition."""

    kind: str = "loopback"
    control: str = "edge"
    # netns
    prefix: str = DEFAULT_PREFIX
    namespace_names: tuple[tuple[str, str], ...] = ()  # explicit (role, name) overrides
    subnets: tuple[tuple[str, str], ...] = tuple(DEFAULT_SUBNETS.items())
    links: tuple[tuple[str, LinkSettings], ...] = ()
    # hosts
    hosts: tuple[tuple[str, HostSpec], ...] = ()
    edge_address: str | None = None
    target_address: str | None = None
    client_address: str | None = None
    edge_devices: tuple[str, ...] = ()
    # what the YAML said, for to_dict (so a config round-trips as written)
    raw: Any = field(default=None, compare=False)

    def namespaces(self) -> dict[str, str]:
        """role -> namespace name (netns kind)."""
        names = {r: f"{self.prefix}{r}" for r in ROLES}
        names.update(dict(self.namespace_names))
        return names

    def link(self, name: str) -> LinkSettings:
        return dict(self.links).get(name, LinkSettings())

    def subnet(self, name: str) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(dict(self.subnets)[name])

    def host(self, role: str) -> HostSpec:
        return dict(self.hosts)[role]

    def to_dict(self) -> Any:
        """The mapping (or plain name) the YAML gave, normalised."""
        if self.kind == "loopback" and self.raw in (None, "loopback"):
            return "loopback"
        if isinstance(self.raw, str):
            return self.raw
        d: dict[str, Any] = {"kind": self.kind, "control": self.control}
        if self.kind == "netns":
            d["prefix"] = self.prefix
            if self.namespace_names:
                d["namespaces"] = dict(self.namespace_names)
            d["subnets"] = dict(self.subnets)
            if self.links:
                d["links"] = {k: v.to_dict() for k, v in self.links}
        if self.kind == "hosts":
            d["hosts"] = {r: h.to_dict() for r, h in self.hosts}
            for k in ("edge_address", "target_address", "client_address"):
                if getattr(self, k) is not None:
                    d[k] = getattr(self, k)
            if self.edge_devices:
                d["edge_devices"] = list(self.edge_devices)
        return d


LOOPBACK_SPEC = TopologySpec()

_NETNS_KEYS = ("kind", "control", "prefix", "namespaces", "subnets", "links")
_HOSTS_KEYS = ("kind", "control", "hosts", "edge_address", "target_address", "client_address", "edge_devices")
_LINK_KEYS = ("mtu", "delay_ms", "rate_mbit")
_SSH_KEYS = ("executor", "host", "port", "user", "identity_file", "known_hosts", "python", "extra_path",
             "scratch_dir", "connect_netns", "connect_timeout_s")


def _unknown(add: Add, where: str, d: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for k in sorted(set(d) - set(known)):
        add(f"{where}.{k}", f"unknown key (known: {', '.join(known)})")


def _number(add: Add, key: str, v: Any, lo: float, hi: float, integer: bool = False) -> Any:
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        add(key, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        return None
    if not lo <= v <= hi:
        add(key, f"must be in [{lo:g}, {hi:g}], got {v}")
        return None
    return v if integer else float(v)


def _address(add: Add, key: str, v: Any) -> str | None:
    try:
        return str(ipaddress.ip_address(str(v)))
    except ValueError:
        add(key, f"must be an IP address, got {v!r}")
        return None


def parse_link(add: Add, where: str, raw: Any) -> LinkSettings:
    """One `links.<name>` mapping."""
    if not isinstance(raw, Mapping):
        add(where, f"must be a mapping of {', '.join(_LINK_KEYS)}, got {raw!r}")
        return LinkSettings()
    _unknown(add, where, raw, _LINK_KEYS)
    mtu = _number(add, f"{where}.mtu", raw["mtu"], *MTU_RANGE, integer=True) if "mtu" in raw else None
    delay = _number(add, f"{where}.delay_ms", raw["delay_ms"], 0.0, MAX_DELAY_MS) if "delay_ms" in raw else None
    rate = None
    if "rate_mbit" in raw:
        rate = _number(add, f"{where}.rate_mbit", raw["rate_mbit"], 0.001, 1e6)
    return LinkSettings(mtu, delay, rate)


def _parse_netns(add: Add, d: Mapping[str, Any]) -> dict[str, Any]:
    _unknown(add, "topology", d, _NETNS_KEYS)
    out: dict[str, Any] = {}
    prefix = d.get("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not _NS_NAME.match(prefix + "x"):
        add("topology.prefix", f"must be letters, digits, '-', '_', '.', got {prefix!r}")
    else:
        out["prefix"] = prefix
    names = d.get("namespaces") or {}
    if not isinstance(names, Mapping):
        add("topology.namespaces", f"must map roles ({', '.join(ROLES)}) to names, got {names!r}")
        names = {}
    _unknown(add, "topology.namespaces", names, ROLES)
    good = {}
    for role, name in names.items():
        if role in ROLES and (not isinstance(name, str) or not _NS_NAME.match(name)):
            add(f"topology.namespaces.{role}", f"must be a namespace name (letters, digits, '-', '_', '.'), got {name!r}")
        elif role in ROLES:
            good[role] = name
    out["namespace_names"] = tuple(sorted(good.items()))
    all_names = {r: f"{out.get('prefix', DEFAULT_PREFIX)}{r}" for r in ROLES} | good
    if len(set(all_names.values())) != len(ROLES):
        add("topology.namespaces", f"the three roles need three different namespaces, got {all_names}")
    subnets = dict(DEFAULT_SUBNETS)
    raw_subnets = d.get("subnets") or {}
    if not isinstance(raw_subnets, Mapping):
        add("topology.subnets", f"must map {', '.join(LINKS)} to IPv4 /24../30 networks, got {raw_subnets!r}")
        raw_subnets = {}
    _unknown(add, "topology.subnets", raw_subnets, LINKS)
    for link in LINKS:
        if link in raw_subnets:
            try:
                net = ipaddress.IPv4Network(str(raw_subnets[link]))
                if net.prefixlen > 30:
                    raise ValueError("needs at least two host addresses (a /30 or larger)")
                subnets[link] = str(net)
            except ValueError as e:
                add(f"topology.subnets.{link}", f"must be an IPv4 network like 10.203.1.0/24: {e}")
    nets = [ipaddress.IPv4Network(v) for v in subnets.values()]
    if nets[0].overlaps(nets[1]):
        add("topology.subnets", f"the two links need separate networks, got {subnets}")
    out["subnets"] = tuple(subnets.items())
    links = d.get("links") or {}
    if not isinstance(links, Mapping):
        add("topology.links", f"must map {', '.join(LINKS)} to link settings, got {links!r}")
        links = {}
    _unknown(add, "topology.links", links, LINKS)
    out["links"] = tuple((k, parse_link(add, f"topology.links.{k}", links[k])) for k in LINKS if k in links)
    return out


def parse_host(add: Add, role: str, raw: Any) -> HostSpec | None:
    """One `hosts.<role>` mapping."""
    where = f"topology.hosts.{role}"
    if not isinstance(raw, Mapping):
        add(where, f"must be a mapping with an executor ({', '.join(EXECUTOR_KINDS)}), got {raw!r}")
        return None
    ex = raw.get("executor")
    if ex not in EXECUTOR_KINDS:
        add(f"{where}.executor", f"must be one of {', '.join(EXECUTOR_KINDS)}, got {ex!r}")
        return None
    if ex == "local":
        _unknown(add, where, raw, ("executor",))
        return HostSpec("local")
    if ex == "netns":
        _unknown(add, where, raw, ("executor", "netns"))
        name = raw.get("netns")
        if not isinstance(name, str) or not _NS_NAME.match(name):
            add(f"{where}.netns", f"must name a network namespace of this machine, got {name!r}")
            return None
        return HostSpec("netns", netns=name)
    _unknown(add, where, raw, _SSH_KEYS)
    host = raw.get("host")
    if not isinstance(host, str) or not host:
        add(f"{where}.host", f"required: the host name or address to ssh to, got {host!r}")
        return None
    kw: dict[str, Any] = {"host": host}
    if "port" in raw:
        kw["port"] = _number(add, f"{where}.port", raw["port"], 1, 65535, integer=True) or 22
    for k in ("user", "identity_file", "known_hosts", "python", "scratch_dir", "connect_netns"):
        if k in raw:
            if not isinstance(raw[k], str) or not raw[k]:
                add(f"{where}.{k}", f"must be a non-empty string, got {raw[k]!r}")
            else:
                kw[k] = raw[k]
    if "extra_path" in raw:
        ep = raw["extra_path"]
        if not isinstance(ep, list) or not all(isinstance(x, str) and x for x in ep):
            add(f"{where}.extra_path", f"must be a list of directories, got {ep!r}")
        else:
            kw["extra_path"] = tuple(ep)
    if "connect_timeout_s" in raw:
        kw["connect_timeout_s"] = _number(add, f"{where}.connect_timeout_s", raw["connect_timeout_s"], 0.1, 600) or 15.0
    return HostSpec("ssh", ssh=SshSpec(**kw))


def _parse_hosts(add: Add, d: Mapping[str, Any], control: str) -> dict[str, Any]:
    _unknown(add, "topology", d, _HOSTS_KEYS)
    out: dict[str, Any] = {}
    hosts = d.get("hosts")
    if not isinstance(hosts, Mapping):
        add("topology.hosts", f"required: a mapping of {', '.join(ROLES)} to executors")
        hosts = {}
    _unknown(add, "topology.hosts", hosts, ROLES)
    parsed = []
    for role in ROLES:
        if role not in hosts:
            add(f"topology.hosts.{role}", "required")
            continue
        h = parse_host(add, role, hosts[role])
        if h is not None:
            parsed.append((role, h))
    out["hosts"] = tuple(parsed)
    for k in ("edge_address", "target_address"):
        if k not in d:
            add(f"topology.{k}", "required for kind hosts")
        else:
            out[k] = _address(add, f"topology.{k}", d[k])
    if "client_address" in d:
        out["client_address"] = _address(add, "topology.client_address", d["client_address"])
    elif control == "client":
        add("topology.client_address", "required with control: client (the edge reaches the control server there)")
    devs = d.get("edge_devices", [])
    if not isinstance(devs, list) or not all(isinstance(x, str) and x for x in devs):
        add("topology.edge_devices", f"must be a list of interface names, got {devs!r}")
    else:
        out["edge_devices"] = tuple(devs)
    return out


def parse_topology(raw: Any, add: Add) -> TopologySpec:
    """Validate the `topology:` value (None = loopback); problems go to add(key, message)."""
    if raw is None or raw == "loopback":
        return TopologySpec(raw=raw)
    if isinstance(raw, str):
        if raw not in KINDS:
            add("topology", f"must be one of {', '.join(KINDS)} (or a mapping with kind:), got {raw!r}")
            return LOOPBACK_SPEC
        if raw == "hosts":
            add("topology", "kind hosts needs a mapping (hosts:, edge_address:, target_address:)")
            return LOOPBACK_SPEC
        return TopologySpec(kind=raw, raw=raw)
    if not isinstance(raw, Mapping):
        add("topology", f"must be a kind ({', '.join(KINDS)}) or a mapping, got {raw!r}")
        return LOOPBACK_SPEC
    kind = raw.get("kind")
    if kind not in KINDS:
        add("topology.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        return LOOPBACK_SPEC
    control = raw.get("control", "edge")
    if control not in ROLES:
        add("topology.control", f"must be one of {', '.join(ROLES)}, got {control!r}")
        control = "edge"
    if kind == "loopback":
        _unknown(add, "topology", raw, ("kind", "control"))
        return TopologySpec(control=control, raw=dict(raw))
    extra = _parse_netns(add, raw) if kind == "netns" else _parse_hosts(add, raw, control)
    return TopologySpec(kind=kind, control=control, raw=dict(raw), **extra)
