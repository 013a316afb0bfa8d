"""nft_flowtable: nftables DNAT on the edge plus a flowtable, the kernel's fastest path for eligible flows.

Ruleset (loaded on the edge by harness.paths.nftables.render_ruleset; one
table `ip PORTUNUS_BENCH_<pid>`):

    flowtable ft { hook ingress priority 0; devices = { to-client, to-target }; }
    chain prerouting  { type nat hook prerouting priority -100; ... dnat to TARGET:PORT }
    chain postrouting { type nat hook postrouting priority 100; ... masquerade }
    chain forward     { type filter hook forward priority 0; policy accept;
                        counter
                        meta l4proto { tcp, udp } flow add @ft }

The first packets of a connection take the classic path (conntrack, NAT,
the forward chain); once conntrack has seen both directions, `flow add`
puts the flow into the flowtable and from then on its packets are forwarded
from the ingress hook of the device they arrive on, with the NAT applied
there, skipping the IP stack's routing, prerouting/forward/postrouting hooks.

Whether that really happened is recorded, not assumed (path_info):
- `offloaded_flows_max`: the most conntrack entries of our listen port seen
  flagged [OFFLOAD] (or [HW_OFFLOAD]) in /proc/net/nf_conntrack of the edge,
  sampled while traffic flows (the flag goes when the flow is torn down at
  FIN/RST, so it is sampled during the run, not after);
- `slow_path_packets` / `slow_path_bytes`: the forward chain's counter; an
  offloaded bulk transfer leaves it at a handful of packets against the
  gigabytes iperf3 moved;
- `flowtables`: `nft list flowtables` on the edge.
`offloaded` is True only if an [OFFLOAD] entry was seen.

Needs a forwarded topology (netns or hosts: the flows must cross two
interfaces of the edge) and a kernel with nf_flow_table
(CONFIG_NF_FLOW_TABLE, CONFIG_NF_FLOW_TABLE_INET): available() tries to
create a flowtable in a throwaway namespace (`unshare --net`) and reports
the kernel's answer when it cannot.
"""

from __future__ import annotations

import re
import shutil
import threading
from typing import Any

from harness.errors import PathError
from harness.paths.base import Availability, Endpoint, PathSetup
from harness.paths.nftables import (
    FAMILY,
    FLOWTABLE,
    FORWARD,
    NftablesPath,
    _nft,
    nftables_available,
)
from harness.site.executor.base import Executor
from harness.site.executor.local import LocalExecutor
from harness.site.executor.nsenter import entered_netns
from harness.site.topology.base import Site

# Offload flags in /proc/net/nf_conntrack (net/netfilter/nf_conntrack_standalone.c, ct_seq_show):
# "[HW_OFFLOAD] " or "[OFFLOAD] " where a non-offloaded entry prints "[ASSURED] ".
_OFFLOAD_FLAGS = ("[OFFLOAD]", "[HW_OFFLOAD]")
# Samples per second of the edge's conntrack table while traffic flows.
SAMPLE_INTERVAL_S = 0.25
_COUNTER = re.compile(r"\bcounter packets (\d+) bytes (\d+)")
PROBE_RULESET = "table ip portunus_probe {\n    flowtable f {\n        hook ingress priority 0; devices = { pa };\n    }\n}\n"
_PROBE: dict[str, str | None] = {}


def parse_conntrack_offload(text: str, port: int) -> tuple[int, int]:
    """(entries, offloaded entries) for connections to `port` in /proc/net/nf_conntrack.

    `port` is matched as the original direction's dport: the port the client dialled (the
    listen port, before DNAT); the reply tuple carries the target's port.
    """
    flows = offloaded = 0
    needle = f" dport={port} "
    for line in text.splitlines():
        first_dport = line.find(" dport=")
        if first_dport < 0 or not line.startswith(needle[1:], first_dport + 1):
            continue
        flows += 1
        if any(f in line for f in _OFFLOAD_FLAGS):
            offloaded += 1
    return flows, offloaded


def parse_nft_counter(listing: str) -> tuple[int, int] | None:
    """(packets, bytes) of the first `counter` in `nft list chain ...` output."""
    m = _COUNTER.search(listing)
    return (int(m.group(1)), int(m.group(2))) if m else None


def flowtable_support() -> str | None:
    """None if this kernel can create an nftables flowtable, else the reason (cached per process)."""
    if "r" not in _PROBE:
        _PROBE["r"] = _probe_flowtable()
    return _PROBE["r"]


def _probe_flowtable() -> str | None:
    unshare = shutil.which("unshare")
    if unshare is None:
        return "cannot check for flowtable support: unshare (util-linux) is missing"
    ex = LocalExecutor()
    # A throwaway namespace that dies with the shell: nothing to clean up.
    r = ex.run([unshare, "--net", "sh", "-c", "ip link add pa type veth peer name pb && nft -f -"],
               input=PROBE_RULESET, timeout_s=30)
    if r.ok:
        return None
    err = next((ln.split("Error:", 1)[1].strip() for ln in r.why().splitlines() if "Error:" in ln), r.why())
    return (f"this kernel cannot create an nftables flowtable (nft: {err}): it needs nf_flow_table "
            "(CONFIG_NF_FLOW_TABLE and CONFIG_NF_FLOW_TABLE_INET, or modprobe nf_flow_table_inet)")


class ConntrackSampler:
    """Reads the edge's conntrack table a few times a second; keeps the most offloaded flows seen."""

    def __init__(self, edge: Executor, port: int, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.edge, self.port, self.interval_s = edge, port, interval_s
        self.max_flows = self.max_offloaded = self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="conntrack-sampler", daemon=True)
        self._thread.start()

    def _read(self) -> str:
        if isinstance(self.edge, LocalExecutor):
            # /proc/thread-self/net is this thread's namespace: no process per sample.
            with entered_netns(self.edge.netns), open("/proc/thread-self/net/nf_conntrack") as f:
                return f.read()
        r = self.edge.run(["cat", "/proc/net/nf_conntrack"])
        if not r.ok:
            raise OSError(r.why())
        return r.stdout

    def sample(self) -> None:
        try:
            flows, off = parse_conntrack_offload(self._read(), self.port)
        except OSError as e:
            self.error = str(e)
            return
        self.max_flows, self.max_offloaded = max(self.max_flows, flows), max(self.max_offloaded, off)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class NftFlowtablePath(NftablesPath):
    name = "nft_flowtable"
    description = ("kernel nftables DNAT + masquerade on the edge with a flowtable (flow offload of "
                   "established TCP/UDP flows); offload checked in conntrack")
    uses_flowtable = True

    def __init__(self) -> None:
        super().__init__()
        self._sampler: ConntrackSampler | None = None
        self._listen_port: int | None = None
        self._devices: tuple[str, ...] = ()

    def available(self) -> Availability:
        av = nftables_available()
        if not av.ok:
            return av
        why = flowtable_support()
        return Availability.no(why) if why else Availability.yes()

    def available_on(self, topology: str) -> Availability:
        if topology == "loopback":
            return Availability.no("a flowtable offloads flows forwarded between two interfaces; on loopback "
                                   "nothing is forwarded: use topology: netns (or hosts)")
        return Availability.yes()

    def flowtable_devices(self, site: Site) -> tuple[str, ...]:
        if not site.edge_devices:
            raise PathError("nft_flowtable needs the edge's interfaces (topology edge_devices for kind hosts)")
        return site.edge_devices

    def start(self, setup: PathSetup) -> Endpoint:
        if setup.site.crossing is None:
            raise PathError(self.available_on("loopback").reason)
        self._devices = setup.site.edge_devices
        ep = super().start(setup)
        self._listen_port = ep.port
        return ep

    def ready(self, timeout_s: float) -> None:
        super().ready(timeout_s)
        assert self._table is not None and self._listen_port is not None
        listing = _nft("list", "flowtables", check=False, ex=self._edge)
        if self._table not in listing.stdout:
            raise PathError(f"flowtable {FLOWTABLE} of table {self._table} missing right after loading it")
        self._sampler = ConntrackSampler(self._edge, self._listen_port)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        super().stop()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self._table is None:
            return info
        info["flowtable_devices"] = list(self._devices)
        info["flowtables"] = _nft("list", "flowtables", check=False, ex=self._edge).stdout.strip()
        counter = parse_nft_counter(_nft("list", "chain", FAMILY, self._table, FORWARD, check=False,
                                         ex=self._edge).stdout)
        if counter is not None:
            info["slow_path_packets"], info["slow_path_bytes"] = counter
        if self._sampler is not None:
            self._sampler.sample()  # one more now: a short exchange can fall between ticks
            info.update(offloaded_flows_max=self._sampler.max_offloaded, flows_seen_max=self._sampler.max_flows,
                        conntrack_samples=self._sampler.samples, offloaded=self._sampler.max_offloaded > 0)
            if self._sampler.error:
                info["conntrack_error"] = self._sampler.error
        return info
