"""Topologies: the YAML key, the tc/ip parsers on real output, and real namespaces built and removed.

The netns tests create namespaces with a prefix unique to this test process
(`ptt<pid>-`), so they never collide with a concurrent run, and check after
every exit path (success, failure half-way, a claimed name) that no namespace
of theirs and no process inside one is left.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.define.load import ConfigError, parse_config
from harness.define.plan import Measurement
from harness.define.topology import TopologySpec
from harness.errors import PreflightError
from harness.measure.preflight import check_topology
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.paths import PATHS
from harness.site.executor.nsenter import entered_netns
from harness.site.topology import netns as tnetns
from harness.site.topology import open_topology, parse_topology
from harness.site.topology.shaping import (
    LinkSettings,
    Qdisc,
    netem_delay_ms,
    parse_ip_link_details,
    parse_tc_qdisc_show,
    qdisc_support,
    tbf_burst_bytes,
    tbf_rate_mbit,
    tc_commands,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "topology"
PREFIX = f"ptt{os.getpid() % 100000}-"


def _spec(raw: object) -> TopologySpec:
    problems: list[tuple[str, str]] = []
    spec = parse_topology(raw, lambda k, m: problems.append((k, m)))
    assert not problems, problems
    return spec


def _problems(raw: object) -> list[str]:
    out: list[str] = []
    parse_topology(raw, lambda k, m: out.append(f"{k}: {m}"))
    return out


def ours() -> list[str]:
    """Namespaces of this test process still present."""
    return [n for n in tnetns.list_namespaces() if n.startswith(PREFIX)]


@pytest.fixture(autouse=True)
def _no_namespace_left():
    yield
    left = ours()
    for n in left:
        tnetns.delete_namespace(n)
    assert not left, f"test left namespaces behind: {left}"


# ---------------------------------------------------------------- the YAML key (pure)


def test_topology_forms_and_defaults() -> None:
    assert _spec(None).kind == "loopback" and _spec("loopback").kind == "loopback"
    s = _spec("netns")
    assert s.namespaces() == {"client": "pt-client", "edge": "pt-edge", "target": "pt-target"}
    assert s.control == "edge" and s.link("client_edge") == LinkSettings()
    s = _spec({"kind": "netns", "prefix": "lab-", "namespaces": {"edge": "box"}, "control": "target",
               "subnets": {"edge_target": "192.168.77.0/30"},
               "links": {"client_edge": {"mtu": 9000, "delay_ms": 5, "rate_mbit": 250}}})
    assert s.namespaces() == {"client": "lab-client", "edge": "box", "target": "lab-target"}
    assert s.link("client_edge") == LinkSettings(9000, 5.0, 250.0) and s.link("edge_target") == LinkSettings()
    assert str(s.subnet("edge_target")) == "192.168.77.0/30" and s.control == "target"


def test_topology_round_trips_through_the_experiment_config() -> None:
    base = {"name": "t", "kind": "headline", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}
    assert "topology" not in parse_config(base).to_dict()  # old configs keep their exact mapping (resume)
    for topo in ("netns", {"kind": "netns", "links": {"edge_target": {"mtu": 1400}}}):
        cfg = parse_config({**base, "topology": topo})
        assert parse_config(cfg.to_dict()) == cfg and cfg.to_dict()["topology"] == cfg.topology.to_dict()


@pytest.mark.parametrize("raw, expected", [
    ("mesh", "topology: must be one of loopback, netns, hosts"),
    ({"kind": "netns", "prefx": "a-"}, "topology.prefx: unknown key"),
    ({"kind": "netns", "links": {"client_edge": {"mtu": 10}}}, "topology.links.client_edge.mtu: must be in [68, 65535]"),
    ({"kind": "netns", "links": {"client_edge": {"delay": 5}}}, "topology.links.client_edge.delay: unknown key"),
    ({"kind": "netns", "links": {"edge_target": {"rate_mbit": 0}}}, "rate_mbit: must be in"),
    ({"kind": "netns", "subnets": {"client_edge": "10.203.2.0/25"}}, "topology.subnets: the two links need separate"),
    ({"kind": "netns", "subnets": {"client_edge": "10.1.1.1/32"}}, "needs at least two host addresses"),
    ({"kind": "netns", "namespaces": {"client": "x", "edge": "x"}}, "three different namespaces"),
    ({"kind": "netns", "control": "router"}, "topology.control: must be one of client, edge, target"),
    ({"kind": "hosts", "hosts": {"client": {"executor": "local"}}}, "topology.hosts.edge: required"),
    ({"kind": "hosts", "hosts": {}}, "topology.edge_address: required for kind hosts"),
    ({"kind": "hosts", "control": "client", "edge_address": "10.0.0.1", "target_address": "10.0.0.2",
      "hosts": {r: {"executor": "local"} for r in ("client", "edge", "target")}}, "client_address: required"),
    ({"kind": "hosts", "edge_address": "nope", "target_address": "10.0.0.2",
      "hosts": {r: {"executor": "local"} for r in ("client", "edge", "target")}}, "edge_address: must be an IP"),
    ({"kind": "hosts", "edge_address": "10.0.0.1", "target_address": "10.0.0.2",
      "hosts": {"client": {"executor": "ssh"}, "edge": {"executor": "local"}, "target": {"executor": "telnet"}}},
     "topology.hosts.client.host: required"),
])
def test_bad_topologies_are_refused_naming_the_key(raw: object, expected: str) -> None:
    problems = _problems(raw)
    assert any(expected in p for p in problems), problems


def test_hosts_topology_parses_ssh_hosts_and_refuses_the_python_backend_with_them() -> None:
    raw = {"kind": "hosts", "edge_address": "192.0.2.10", "target_address": "198.51.100.20",
           "edge_devices": ["eth1", "eth2"],
           "hosts": {"client": {"executor": "ssh", "host": "192.0.2.5", "user": "bench", "port": 2222,
                                "identity_file": "~/.ssh/bench", "extra_path": ["/opt/p/.venv/bin"]},
                     "edge": {"executor": "local"}, "target": {"executor": "netns", "netns": "lab-target"}}}
    s = _spec(raw)
    client = s.host("client")
    assert client.executor == "ssh" and client.ssh is not None and client.ssh.port == 2222
    assert client.ssh.extra_path == ("/opt/p/.venv/bin",) and s.host("target").netns == "lab-target"
    base = {"name": "t", "kind": "headline", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}
    cfg = parse_config({**base, "topology": raw})
    assert parse_config(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="python iperf3 backend runs on this machine only"):
        parse_config({**base, "topology": raw, "backend": "python"})


# ---------------------------------------------------------------- tc / ip parsers on real output


def test_tc_commands_for_each_kind_of_shaping() -> None:
    assert tc_commands("to-edge", LinkSettings(mtu=9000)) == []
    assert tc_commands("x", LinkSettings(delay_ms=5)) == [
        ["qdisc", "replace", "dev", "x", "root", "handle", "1:", "netem", "delay", "5ms", "limit", "100000"]]
    rate = tc_commands("x", LinkSettings(rate_mbit=100))
    assert rate == [["qdisc", "replace", "dev", "x", "root", "handle", "1:", "tbf", "rate", "100mbit", "burst",
                     str(tbf_burst_bytes(100)), "latency", "50ms"]]
    both = tc_commands("x", LinkSettings(delay_ms=2.5, rate_mbit=1000))
    assert both[0][7:10] == ["netem", "delay", "2.5ms"] and both[1][4:8] == ["parent", "1:1", "handle", "10:"]
    assert tbf_burst_bytes(100) == 65536 and tbf_burst_bytes(10_000) == 5_000_000  # 4 ms at 10 Gbit/s


def test_parse_tc_qdisc_show_on_real_output() -> None:
    (tbf,) = parse_tc_qdisc_show((FIXTURES / "tc-tbf.txt").read_text())
    assert (tbf.kind, tbf.handle, tbf.parent) == ("tbf", "1:", "root") and tbf_rate_mbit(tbf) == 250.0
    (noq,) = parse_tc_qdisc_show((FIXTURES / "tc-noqueue.txt").read_text())
    assert noq.kind == "noqueue" and tbf_rate_mbit(noq) is None and netem_delay_ms(noq) is None
    # iproute2's netem print format (this kernel has no netem to capture it from; see fixtures README).
    (netem, child) = parse_tc_qdisc_show("qdisc netem 1: root refcnt 2 limit 100000 delay 20ms\n"
                                         "qdisc tbf 10: parent 1:1 rate 1Gbit burst 500000b lat 50ms\n")
    assert netem_delay_ms(netem) == 20.0 and child.parent == "1:1" and tbf_rate_mbit(child) == 1000.0
    assert netem_delay_ms(Qdisc("netem", "1:", "root", "limit 1000 delay 500us")) == 0.5


def test_parse_ip_link_details_on_real_output() -> None:
    st = parse_ip_link_details((FIXTURES / "ip-link.txt").read_text())
    assert (st.ifname, st.mtu, st.state, st.gso_max_size, st.gro_max_size) == ("va", 9000, "UP", 65536, 65536)
    with pytest.raises(ValueError):
        parse_ip_link_details("Device \"x\" does not exist.")


def test_parse_netns_list_and_owner_mark_on_real_output() -> None:
    assert tnetns.parse_ip_netns_list((FIXTURES / "ip-netns-list.txt").read_text()) == ["ptx-f", "ptx-g"]
    assert tnetns.parse_owner_mark((FIXTURES / "ip-link-lo-marked.txt").read_text()) == 4242
    assert tnetns.parse_owner_mark("1: lo: <LOOPBACK> mtu 65536\n    alias somebody else\n") is None
    assert tnetns.parse_owner_mark("1: lo: <LOOPBACK> mtu 65536\n") is None


# ---------------------------------------------------------------- real namespaces


def _connect_from(ns: str, host: str, port: int) -> socket.socket:
    with entered_netns(ns):
        return socket.create_connection((host, port), timeout=5)


def test_netns_topology_is_built_isolated_and_removed() -> None:
    spec = _spec({"kind": "netns", "prefix": PREFIX,
                  "links": {"client_edge": {"mtu": 1400}, "edge_target": {"mtu": 9000}}})
    with open_topology(spec) as topo:
        names = topo.names  # type: ignore[attr-defined]
        assert set(ours()) == set(names.values())
        inodes = dict(topo.inodes)  # type: ignore[attr-defined]
        # MTU as `ip link` reports it, on both ends of each link.
        for ns, ifname, mtu in ((names["client"], "to-edge", 1400), (names["edge"], "to-client", 1400),
                                (names["edge"], "to-target", 9000), (names["target"], "to-edge", 9000)):
            out = subprocess.run(["ip", "-n", ns, "link", "show", "dev", ifname], capture_output=True, text=True,
                                 check=True).stdout
            assert f" mtu {mtu} " in out, out
        applied = topo.describe()["applied"]["interfaces"]
        assert applied[f"{names['edge']}/to-target"]["mtu"] == 9000
        a = topo.site
        # The edge is reachable from the client; the target is not (no route): only the edge crosses.
        with entered_netns(names["edge"]):
            edge_srv = socket.create_server((a.listen_host, 0))
        with entered_netns(names["target"]):
            target_srv = socket.create_server((a.target_host, 0))
        try:
            _connect_from(names["client"], a.listen_host, edge_srv.getsockname()[1]).close()
            with pytest.raises(OSError) as e:
                _connect_from(names["client"], a.target_host, target_srv.getsockname()[1])
            assert e.value.errno == errno.ENETUNREACH
            # direct's route through the edge makes it reachable, and closing it takes it away again.
            assert a.crossing is not None
            a.crossing.open_direct_route()
            _connect_from(names["client"], a.target_host, target_srv.getsockname()[1]).close()
            a.crossing.close_direct_route()
            with pytest.raises(OSError):
                _connect_from(names["client"], a.target_host, target_srv.getsockname()[1])
            # A process of ours inside the edge: close() must stop it before deleting the namespace.
            straggler = subprocess.Popen(["ip", "netns", "exec", names["edge"], "sleep", "300"])
        finally:
            edge_srv.close()
            target_srv.close()
    assert straggler.wait(timeout=10) is not None
    assert not ours()
    for inode in inodes.values():
        assert tnetns.processes_in_inode(inode) == []


def test_a_failure_half_way_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """tc fails after the namespaces and the first veth exist: everything made so far is removed."""
    monkeypatch.setattr(tnetns, "tc_commands", lambda ifname, link: [["qdisc", "add", "dev", ifname, "root",
                                                                      "no-such-qdisc"]])
    spec = _spec({"kind": "netns", "prefix": PREFIX})
    with pytest.raises(tnetns.TopologyError, match="no-such-qdisc"), open_topology(spec):
        pass
    assert not ours()


def test_names_in_use_are_refused_and_leftovers_of_dead_runs_are_reclaimed() -> None:
    spec = _spec({"kind": "netns", "prefix": PREFIX})
    name = f"{PREFIX}edge"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with pytest.raises(tnetns.TopologyError, match="not made by portunus-bench"), open_topology(spec):
            pass
        assert ours() == [name]  # someone else's namespace is left alone
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "alias", f"{tnetns.MARK_PREFIX}1"], check=True)
        with pytest.raises(tnetns.TopologyError, match="running harness \\(pid 1\\)"), open_topology(spec):
            pass
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "alias", f"{tnetns.MARK_PREFIX}{int(dead.stdout)}"],
                       check=True)
        with open_topology(spec) as topo:  # the dead run's namespace is removed and made afresh
            assert tnetns.namespace_owner(name) == os.getpid() and topo.kind == "netns"
    finally:
        tnetns.delete_namespace(name)


def _direct_record(spec: TopologySpec, tmp_path: Path, kind: str = "headline", **cfg_kw: object):
    cfg = parse_config({"name": "t", "kind": kind, "paths": ["direct"], "rounds": 1, "seconds": 2,
                        "omit_seconds": 0, "topology": spec.to_dict(), **cfg_kw})
    with open_topology(spec) as topo:
        return measure_one(Measurement(0, 1, "direct"), cfg, PATHS["direct"](), tmp_path / "w",
                           PortAllocator(None), SignalGuard(), topo), topo


def test_rate_shaping_is_applied(tmp_path: Path) -> None:
    """tbf at 100 Mbit/s on the client-edge link: iperf3 through it cannot deliver more."""
    assert qdisc_support("tbf") is None, qdisc_support("tbf")
    spec = _spec({"kind": "netns", "prefix": PREFIX, "links": {"client_edge": {"rate_mbit": 100}}})
    rec, topo = _direct_record(spec, tmp_path)
    assert rec.ok, rec.error
    # An upper bound only (a loaded host can be slower, never faster than the shaper); the
    # lower bound just says traffic flowed at a shaped, not a broken, rate.
    assert rec.receiver_mbps is not None and 20 < rec.receiver_mbps <= 100 * 1.1, rec.receiver_mbps
    qd = topo.describe()["applied"]["interfaces"][f"{PREFIX}client/to-edge"]["qdiscs"]
    assert any(q.startswith("tbf") and "rate 100Mbit" in q for q in qd), qd


def test_netem_delay_is_applied_or_refused_with_the_reason(tmp_path: Path) -> None:
    """20 ms each way on the client-edge link: the latency probe's RTT is 40 ms plus the path's own.

    On a kernel without sch_netem (this project's VM) a delay cannot be applied: the
    preflight and the topology both refuse it with that reason, and nothing is left behind.
    """
    spec = _spec({"kind": "netns", "prefix": PREFIX, "links": {"client_edge": {"delay_ms": 20}}})
    why = qdisc_support("netem")
    if why is not None:
        assert "sch_netem" in why and "delay_ms" in why
        with pytest.raises(PreflightError, match="sch_netem"):
            check_topology(spec)
        with pytest.raises(tnetns.TopologyError, match="sch_netem"), open_topology(spec):
            pass
        assert not ours()
        return
    rec, topo = _direct_record(spec, tmp_path, kind="latency",
                               probe={"setup_connections": 50, "rtt_connections": 2, "rtt_per_connection": 50,
                                      "warmup": 2})
    assert rec.ok, rec.error
    assert rec.rtt_p50_us is not None and 40_000 <= rec.rtt_p50_us <= 40_000 + 15_000, rec.rtt_p50_us
    qd = topo.describe()["applied"]["interfaces"][f"{PREFIX}edge/to-client"]["qdiscs"]
    assert any(q.startswith("netem") and "delay 20ms" in q for q in qd), qd


# ---------------------------------------------------------------- results and report across topologies


def _rs(tmp_path: Path, name: str, topology: dict, values: dict[str, list[float]]):
    from harness.records.header import Header, SysInfo, TopologyInfo
    from harness.records.results import Record, ResultSet
    from tests.harness.test_results import config

    recs = tuple(Record(experiment=name, path=p, round=i + 1, index=i, offered_mbps=None, cap_bytes_per_s=None,
                        seconds=1, omit_seconds=0, protocol="tcp", backend="cli", status="ok", error=None,
                        started_at="a", ended_at="b", throughput_mbps=v)
                 for p, vs in values.items() for i, v in enumerate(vs))
    h = Header(experiment=name, kind="headline", created_at="2026-01-01", config=config(paths=tuple(values)),
               sysinfo=SysInfo(), topology=TopologyInfo.from_dict(topology))
    return ResultSet(tmp_path / f"{name}.jsonl", h, recs, ())


def test_topology_labels_and_the_side_by_side_summary(tmp_path: Path) -> None:
    from harness.records.header import TopologyInfo
    from harness.summarise.topology import same_topology, summarise_topologies, topology_label

    netns = {"kind": "netns", "links": {"client_edge": {"mtu": 1500}, "edge_target": {}}}
    jumbo = {"kind": "netns", "links": {"client_edge": {"mtu": 9000}}}
    shaped = {"kind": "netns", "links": {"edge_target": {"delay_ms": 5, "rate_mbit": 100}}}
    assert topology_label(None) == "loopback" and topology_label(TopologyInfo.from_dict(netns)) == "netns"
    assert topology_label(TopologyInfo.from_dict(jumbo)) == "netns (client_edge MTU 9000)"
    assert topology_label(TopologyInfo.from_dict(shaped)) == "netns (edge_target delay 5 ms each way, rate 100 Mbit/s)"
    lo = _rs(tmp_path, "headline", {"kind": "loopback"}, {"iptables": [200, 220], "standalone": [100, 120]})
    ns = _rs(tmp_path, "netns-headline", netns, {"iptables": [100], "standalone": [110], "nftables": [90]})
    assert same_topology(ns, [lo, ns]) == [ns]
    assert summarise_topologies([lo]) is None
    c = summarise_topologies([ns, lo])
    assert c is not None and c.labels == ("loopback", "netns")
    rows = {r.path: r for r in c.rows}
    assert [r.path for r in c.rows] == ["iptables", "standalone", "nftables"]
    assert rows["standalone"].vs_first_pct == pytest.approx(100.0)  # 110 / 110
    assert rows["standalone"].pct_of_baseline == {"loopback": pytest.approx(100 * 110 / 210),
                                                  "netns": pytest.approx(110.0)}
    assert rows["nftables"].vs_first_pct is None and c.largest_drop is not None and c.largest_drop.path == "iptables"
    assert c.rank_changes == ("standalone",) and c.ratio_median_pct == pytest.approx((100 * 100 / 210 + 100) / 2)


def test_version_2_result_files_read_as_loopback(tmp_path: Path) -> None:
    import json

    from harness.records.results import load_results
    from tests.harness.test_results import config

    head = {"type": "header", "format": "portunus-bench-results", "schema_version": 2, "experiment": "t",
            "kind": "headline", "created_at": "x", "config": config().to_dict(), "sysinfo": {}, "argv": [],
            "unavailable_paths": {}}
    p = tmp_path / "v2.jsonl"
    p.write_text(json.dumps(head) + "\n")
    rs = load_results(p)
    assert rs.header.topology.to_dict() == {"kind": "loopback", "address": "127.0.0.1"}
    assert rs.file_schema_version == 2
