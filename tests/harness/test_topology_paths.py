"""Every path across network namespaces: bytes intact both ways, nothing left behind, every driver.

One netns topology for the module (client -> edge -> target over veth pairs).
The target is tests/support/net.py's ExchangeServer inside the target
namespace; the clients run in threads that enter the client namespace; the
path runs in the edge. SHA-256 of every byte is compared both ways over
concurrent connections (rinetd, which has no half-close, gets the same
exchanges framed). HAProxy gets them framed too, and that is a finding, not a
convenience: across namespaces (not on loopback, where test_peers.py runs the
half-closed exchanges through it), HAProxy 2.6 intermittently ends the
connection that carries 2 MiB up and 3 MiB down concurrently, each side
half-closing when done, with an RST to the client: seen after the whole reply
had arrived, and seen with the target's SHA-256 of the upload not matching
(it did not get every byte). Its log calls the session a normal end ("--").
iperf3 never half-closes mid-test, so throughput runs are unaffected.
Kernel paths must leave no rule and ip_forward off;
process paths no process. Paths that cannot run here say why (never a
number): on this project's VM that is nft_flowtable (no nf_flow_table).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.define.load import parse_config
from harness.define.plan import Measurement
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.paths import PATHS, PathSetup
from harness.paths import iptables as ipt
from harness.paths import nftables as nft
from harness.site import procs
from harness.site.executor.nsenter import entered_netns
from harness.site.topology import Topology, open_topology, parse_topology
from harness.site.topology import netns as tnetns
from tests.support.net import (
    ExchangeServer,
    FramedServer,
    assert_exchanges_intact,
    exchange,
    framed_exchange,
)

PREFIX = f"ptp{os.getpid() % 100000}-"
NETNS_PATHS = ["direct", "iptables", "nftables", "nft_flowtable", "reference", "standalone", "standalone_copy",
               "standalone_w2", "client", "haproxy", "haproxy_bigbuf", "haproxy_splice", "nginx", "nginx_bigbuf", "socat",
               "socat_bigbuf", "rinetd", "ssh"]
# Per connection: bytes client -> target, bytes target -> client.
EXCHANGES = [(0, 1 << 20), (3 << 20, 0), (1, 1), (2 << 20, 3 << 20), (65537, 777)]


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    problems: list[str] = []
    spec = parse_topology({"kind": "netns", "prefix": PREFIX}, lambda k, m: problems.append(m))
    assert not problems
    with open_topology(spec) as t:
        yield t
    assert not [n for n in tnetns.list_namespaces() if n.startswith(PREFIX)]


def test_every_path_is_covered_here() -> None:
    assert set(NETNS_PATHS) | {"standalone_capped", "client_capped"} == set(PATHS)


def _tag(i: int) -> bytes:
    return f"netns-x-{i:08d}".encode()[:16].ljust(16, b".")


def _edge_rules(topo: Topology) -> str:
    edge = topo.site.edge
    return edge.run(["iptables-save", "-t", "nat"]).stdout + edge.run(["nft", "list", "tables"]).stdout


def _ip_forward(topo: Topology) -> str:
    return topo.site.edge.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()


@pytest.mark.parametrize("name", NETNS_PATHS)
def test_bytes_cross_the_namespaces_intact(name: str, topo: Topology, tmp_path: Path) -> None:
    path = PATHS[name]()
    av = path.available_on("netns")
    assert av.ok, av.reason
    av = path.available()
    if not av.ok:
        # Only a kernel feature may be missing here, and the path must name it.
        assert name == "nft_flowtable" and "nf_flow_table" in av.reason, (name, av.reason)
        return
    site = topo.site
    names = topo.names  # type: ignore[attr-defined]
    # Framed for rinetd (no half-close) and HAProxy (RSTs across namespaces, see the module docstring).
    half_close = getattr(PATHS[name], "half_close", True) and not name.startswith("haproxy")
    reply = {_tag(i): down for i, (_, down) in enumerate(EXCHANGES)}
    rng = random.Random(name)
    with entered_netns(names["target"]):  # the listening socket lives in the target namespace
        srv = (ExchangeServer(reply_size=lambda tag: reply[tag], rng=random.Random(7), host=site.target_host)
               if half_close else FramedServer(site.target_host))
    tree: set[int] = set()
    try:
        setup = PathSetup(target_port=srv.port, workdir=tmp_path, alloc_port=PortAllocator(None).alloc,
                          site=site, local_workdir=tmp_path)
        try:
            ep = path.start(setup)
            path.ready(30)
            assert ep.host == (site.target_host if name == "direct" else site.listen_host)
            results: dict[int, tuple[str, str]] = {}
            errors: list[tuple[int, tuple[int, int], BaseException]] = []

            def one(i: int, up: int) -> None:
                try:
                    with entered_netns(names["client"]):
                        if half_close:
                            results[i] = exchange(ep.port, rng.randbytes(up), _tag(i), host=ep.host, timeout_s=60)
                        else:
                            results[i] = framed_exchange(ep.port, _tag(i), rng.randbytes(up), reply[_tag(i)], host=ep.host)
                except BaseException as e:  # reported below, with the exchange it happened in
                    errors.append((i, EXCHANGES[i], e))

            threads = [threading.Thread(target=one, args=(i, up)) for i, (up, _) in enumerate(EXCHANGES)]
            for t in threads:
                t.start()
            for pid in path.forwarder_pids():
                tree |= {pid, *site.edge.descendants(pid)}
            for t in threads:
                t.join(90)
            assert not errors, errors
            assert_exchanges_intact(srv, results, [_tag(i) for i in range(len(EXCHANGES))], name)
            info = path.describe()
            if name in ("iptables", "nftables"):
                assert "10.203" in str(info) and _ip_forward(topo) == "1"
        finally:
            path.stop()
    finally:
        srv.close()
    assert not [p for p in tree if procs.pid_alive(p)], f"{name} left processes running"
    assert path.has_forwarder_process == bool(tree)
    rules = _edge_rules(topo)
    assert ipt.chain_name() not in rules and nft.table_name() not in rules, rules
    assert _ip_forward(topo) == "0"


def _cfg(name: str, kind: str, **kw: object):
    return parse_config({"name": "t", "kind": kind, "paths": [name], "rounds": 1, "seconds": 1,
                         "omit_seconds": 0, "topology": "netns", **kw})


@pytest.mark.parametrize("name", ["direct", "iptables", "nftables", "standalone", "socat", "nginx"])
def test_udp_crosses_the_namespaces(name: str, topo: Topology, tmp_path: Path) -> None:
    cfg = _cfg(name, "udp", protocol="udp", offered_mbps=[50])
    rec = measure_one(Measurement(0, 1, name, 50.0), cfg, PATHS[name](), tmp_path, PortAllocator(None),
                      SignalGuard(), topo)
    assert rec.ok, rec.error
    assert rec.receiver_mbps and rec.receiver_mbps > 10 and rec.lost_pct is not None and rec.lost_pct < 50


@pytest.mark.parametrize("kind", ["latency", "connrate"])
def test_probe_drivers_run_across_the_namespaces(kind: str, topo: Topology, tmp_path: Path) -> None:
    probe = ({"setup_connections": 100, "rtt_connections": 2, "rtt_per_connection": 100, "warmup": 5}
             if kind == "latency" else {"processes": 1, "concurrency": 4})
    cfg = _cfg("standalone", kind, probe=probe)
    rec = measure_one(Measurement(0, 1, "standalone"), cfg, PATHS["standalone"](), tmp_path, PortAllocator(None),
                      SignalGuard(), topo)
    assert rec.ok, rec.error
    if kind == "latency":
        assert rec.rtt_p50_us and rec.setup_p50_us and rec.rtt_samples and rec.rtt_samples > 100
    else:
        assert rec.conn_per_s and rec.conns_ok and rec.conns_ok > 0


def test_the_control_server_can_run_in_the_target_namespace(tmp_path: Path) -> None:
    """topology control: target: portunus-server in pt-target, portunus-client in the edge dials it there."""
    problems: list[str] = []
    spec = parse_topology({"kind": "netns", "prefix": PREFIX.replace("ptp", "ptc"), "control": "target"},
                          lambda k, m: problems.append(m))
    path = PATHS["client"]()
    if not path.available().ok:
        pytest.fail(path.available().reason)
    with open_topology(spec) as t:
        assert t.site.control_host == t.site.target_host
        rec = measure_one(Measurement(0, 1, "client"), _cfg("client", "headline"), path, tmp_path,
                          PortAllocator(None), SignalGuard(), t)
    assert rec.ok, rec.error
    assert rec.path_info["server_on"].endswith("-target") and rec.path_info["client_on"].endswith("-edge")


def test_nft_flowtable_ruleset_is_accepted_up_to_the_kernel_feature(topo: Topology) -> None:
    """The flowtable ruleset checked by nft in the edge (`nft -c`): on a kernel with nf_flow_table it
    must pass; without it, the only complaint allowed is the missing flowtable support (no syntax error)."""
    from harness.paths.nft_flowtable import flowtable_support

    text = nft.render_ruleset("portunus_check", 5000, 5001, "udp", listen_host=topo.site.listen_host,
                              target_host=topo.site.target_host, forwarded=True,
                              flowtable_devices=topo.site.edge_devices)
    r = topo.site.edge.run(["nft", "-c", "-f", "-"], input=text)
    if flowtable_support() is None:
        assert r.ok, r.why()
    else:
        assert not r.ok and "syntax error" not in r.why() and "No such file or directory" in r.why(), r.why()
