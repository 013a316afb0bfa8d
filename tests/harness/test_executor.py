"""Executors: local, netns and SSH (asyncssh against private sshds the test starts inside namespaces).

The lab: a netns topology of this test's own (client, edge, target), an sshd
in the client namespace and one in the target namespace, each with fresh
keys in a temp dir (harness.site.executor.lab_sshd; no system sshd involved).
The harness's SSH connections start from the edge namespace (a management
position that reaches both subnets), so every byte stays inside namespaces
this test created.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.define.load import parse_config
from harness.measure.iperf import IperfParams, open_iperf_server, run_client
from harness.measure.probe import open_echo_server
from harness.measure.runner import run_experiment
from harness.records.iperf_json import parse_iperf_json
from harness.records.results import load_results
from harness.site import procs
from harness.site.executor.base import ExecutorError
from harness.site.executor.lab_sshd import LabSshd, open_lab_sshd
from harness.site.executor.local import LOCAL, NetnsExecutor
from harness.site.executor.nsenter import entered_netns
from harness.site.executor.ssh import SshExecutor
from harness.site.executor.ssh_shell import (
    env_delta,
    parse_ss_pids,
    parse_stat_snapshot,
    shell_prefix,
    spawn_command,
)
from harness.site.topology import Topology, open_topology, parse_topology
from harness.site.topology import netns as tnetns

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "topology"
PREFIX = f"pte{os.getpid() % 100000}-"
SSH_PORT = 2222


@dataclass
class Lab:
    topo: Topology
    client_sshd: LabSshd
    target_sshd: LabSshd

    def ssh(self, which: str, **kw: object) -> SshExecutor:
        sshd = self.client_sshd if which == "client" else self.target_sshd
        return SshExecutor(sshd.spec(connect_netns=self.topo.names["edge"], **kw))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    problems: list[str] = []
    spec = parse_topology({"kind": "netns", "prefix": PREFIX}, lambda k, m: problems.append(m))
    tmp = tmp_path_factory.mktemp("lab")
    with open_topology(spec) as topo:
        a = topo.addresses  # type: ignore[attr-defined]
        with open_lab_sshd(topo.executor("client"), tmp / "client-sshd", a.client, SSH_PORT) as c, \
                open_lab_sshd(topo.executor("target"), tmp / "target-sshd", a.target, SSH_PORT) as t:
            # The sshds outlive each test on purpose (open_lab_sshd stops them at module end): keep
            # them out of the per-test check for leftover children.
            procs.unregister(c.proc)
            procs.unregister(t.proc)
            yield Lab(topo, c, t)
    assert not [n for n in tnetns.list_namespaces() if n.startswith(PREFIX)]


# ---------------------------------------------------------------- pure parts


def test_local_private_write_is_0600_even_over_an_existing_file(tmp_path: Path) -> None:
    from harness.site.executor.local import LOCAL
    f = tmp_path / "d" / "server.toml"
    LOCAL.write_text(f, "public\n")
    f.chmod(0o644)
    LOCAL.write_text(f, 'operator_token = "x"\n', private=True)
    assert (f.stat().st_mode & 0o777, f.read_text()) == (0o600, 'operator_token = "x"\n')


def test_env_delta_sends_differences_only() -> None:
    base = {"HOME": "/root", "PATH": "/usr/bin", "PORTUNUS_DISABLE_SPLICE": "1", "BASH_FUNC_x%%": "()"}
    sets, unsets = env_delta({**base, "A": "x y", "PATH": "/usr/bin"}, base)
    assert sets == {"A": "x y"} and unsets == []
    sets, unsets = env_delta({"HOME": "/root", "PATH": "/usr/bin"}, base)
    assert sets == {} and unsets == ["PORTUNUS_DISABLE_SPLICE"]  # odd names are never sent
    assert env_delta(None, base) == ({}, [])
    assert shell_prefix(["/opt/v/bin"], {"A": "x y"}, ["B"], "/tmp/w") == (
        "export PATH=/opt/v/bin:\"$PATH\"; export A='x y'; unset B; cd /tmp/w; ")
    cmd = spawn_command(["iperf3", "-s", "-p", "5201"], "", "/tmp/a log")
    assert cmd == "exec sh -c 'echo $$ >&2; exec iperf3 -s -p 5201 >>'\"'\"'/tmp/a log'\"'\"' 2>&1'"


def test_parse_ss_pids_on_real_output() -> None:
    assert parse_ss_pids((FIXTURES / "ss-tlnp.txt").read_text()) == {24580}
    assert parse_ss_pids((FIXTURES / "ss-uanp.txt").read_text()) == {24580}
    assert parse_ss_pids("") == set()


def test_parse_stat_snapshot_matches_the_local_tree_arithmetic() -> None:
    me = os.getpid()
    text = "100\n" + "\n".join(Path(f"/proc/{p}/stat").read_text().strip() for p in (me, os.getppid()))
    clk, stats = parse_stat_snapshot(text)
    assert clk == 100 and set(stats) == {me, os.getppid()}
    assert procs.tree_ticks_in(me, stats) == procs.parse_proc_stat_tree_ticks(stats[me])
    assert procs.tree_ticks_in(12345678, stats) is None


# ---------------------------------------------------------------- local and netns


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_entered_netns_moves_only_this_thread_and_comes_back(lab: Lab) -> None:
    before = _netns_inode()
    inside, leave = threading.Event(), threading.Event()
    seen: list[int] = []

    def other() -> None:
        with entered_netns(lab.topo.names["edge"]):  # type: ignore[attr-defined]
            seen.append(_netns_inode())
            inside.set()
            leave.wait(10)
        seen.append(_netns_inode())

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(10)
    assert seen[0] != before and _netns_inode() == before  # this thread stayed where it was
    leave.set()
    t.join(10)
    assert seen[1] == before
    with pytest.raises(OSError, match="does not exist"), entered_netns("no-such-namespace-here"):
        pass
    assert _netns_inode() == before


def test_netns_executor_runs_spawns_and_connects_inside_its_namespace(lab: Lab, tmp_path: Path) -> None:
    ex = NetnsExecutor(lab.topo.names["target"])  # type: ignore[attr-defined]
    addr = lab.topo.site.target_host
    r = ex.run(["ip", "-br", "addr", "show", "dev", "to-edge"])
    assert r.ok and addr in r.stdout
    assert not LOCAL.run(["ip", "-br", "addr", "show", "dev", "to-edge"]).ok  # not in the harness's namespace
    with open_echo_server(7007, tmp_path / "echo.log", host="127.0.0.1", ex=ex) as proc:
        assert ex.tree_cpu_seconds(proc.pid) is not None
        with ex.connect("127.0.0.1", 7007, 5) as s:  # the namespace's own loopback
            s.sendall(b"Eping")
            got = b""
            while len(got) < 5:
                got += s.recv(16)
            assert got == b"Eping"
        with pytest.raises(OSError):
            LOCAL.connect("127.0.0.1", 7007, 1).close()  # nothing listens on the harness's loopback


# ---------------------------------------------------------------- SSH


def test_ssh_executor_runs_commands_with_codes_streams_input_and_env(lab: Lab) -> None:
    ex = lab.ssh("target", extra_path=("/opt/nowhere/bin",))
    try:
        r = ex.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        assert ex.run(["cat"], input="hello\n").stdout == "hello\n"
        assert ex.run(["sh", "-c", "echo $PATH"]).stdout.startswith("/opt/nowhere/bin:")
        r = ex.run(["ip", "-br", "addr", "show", "dev", "to-edge"])
        assert lab.topo.site.target_host in r.stdout  # it really runs in the target namespace
        r = ex.run(["sh", "-c", 'echo "$PT_X|${PORTUNUS_DISABLE_SPLICE-unset}"'],
                   env={**{k: v for k, v in os.environ.items() if k != "PORTUNUS_DISABLE_SPLICE"}, "PT_X": "a b"})
        assert r.stdout.strip() == "a b|unset"
        assert ex.which("sh") and ex.which("no-such-tool-anywhere") is None
        assert ex.name.startswith("ssh:") and ex.describe()["connect_netns"] == lab.topo.names["edge"]  # type: ignore[attr-defined]
    finally:
        ex.close()


def test_ssh_executor_stops_the_whole_remote_process_group(lab: Lab) -> None:
    ex = lab.ssh("target")
    try:
        p = ex.spawn(["sh", "-c", "sleep 300 & exec sleep 301"])
        deadline = time.monotonic() + 10
        while not ex.descendants(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = ex.descendants(p.pid)
        assert kids and p in procs.live_children() and p.poll() is None
        procs.stop(p)
        assert p.poll() is not None and p not in procs.live_children()
        for pid in [p.pid, *kids]:  # gone (or a zombie awaiting its reaper) on "the remote host", asked over SSH
            gone = f"test ! -e /proc/{pid} || grep -q '^{pid} ([^)]*) Z' /proc/{pid}/stat"
            deadline = time.monotonic() + 5
            while not ex.run(["sh", "-c", gone]).ok and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ex.run(["sh", "-c", gone]).ok, ex.run(["cat", f"/proc/{pid}/stat"]).stdout
    finally:
        ex.close()


def test_ssh_executor_files_cpu_listeners_and_connections(lab: Lab, tmp_path: Path) -> None:
    ex = lab.ssh("target", python=sys.executable)  # the "remote host" has the harness in this venv
    try:
        d = ex.mirror_dir(tmp_path / "0001-x")
        assert str(d).startswith("/tmp/portunus-bench-remote-") and not (tmp_path / "0001-x").exists()
        ex.write_text(d / "sub" / "a.txt", "héllo\n")
        assert ex.read_text(d / "sub" / "a.txt") == "héllo\n" and ex.read_text(d / "missing") == ""
        ex.write_text(d / "sub" / "a.txt", "token\n", private=True)  # an existing 0644 file becomes 0600
        assert ex.run(["stat", "-c", "%a", str(d / "sub" / "a.txt")]).stdout.strip() == "600"
        busy = ex.spawn(["sh", "-c", "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done; sleep 60"])
        time.sleep(1.5)
        cpu = ex.tree_cpu_seconds(busy.pid)
        assert cpu is not None and cpu > 0.3, cpu
        procs.stop(busy)
        assert ex.tree_cpu_seconds(busy.pid) is None
        # An echo server on the remote's own loopback, reached through connect() (an SSH port forward).
        with open_echo_server(7008, d / "echo.log", host="127.0.0.1", ex=ex), ex.connect("127.0.0.1", 7008, 5) as s:
            s.sendall(b"Ex")
            assert s.recv(2) == b"Ex"
        with pytest.raises(TimeoutError):
            ex.wait_listening(7009, ex.spawn(["sleep", "30"]), 0.5)
    finally:
        procs.stop_all()
        ex.close()
    check = lab.ssh("target")
    try:
        assert not check.run(["test", "-e", str(d)]).ok  # close() removed the remote scratch dir
    finally:
        check.close()
    with pytest.raises(ExecutorError, match="cannot connect"):
        SshExecutor(lab.target_sshd.spec(port=1, connect_timeout_s=2.0,
                                         connect_netns=lab.topo.names["edge"])).run(["true"])  # type: ignore[attr-defined]


def test_ssh_executor_runs_an_iperf3_pair_in_namespaces(lab: Lab, tmp_path: Path) -> None:
    """iperf3 -s in the target namespace and iperf3 -c in the client namespace, both driven over SSH."""
    site = lab.topo.site
    assert site.crossing is not None
    client, target = lab.ssh("client"), lab.ssh("target")
    site.crossing.open_direct_route()  # the client reaches the target through the edge
    try:
        with open_iperf_server(5301, target.mirror_dir(tmp_path) / "srv.log", host=site.target_host, ex=target):
            raw = run_client(IperfParams(site.target_host, 5301, 1), "cli", client)
        r = parse_iperf_json(raw)
        assert r.throughput_mbps > 0 and r.receiver_bytes > 0
        assert '"local_host":\t"10.203.1.1"' in raw or '"local_host":"10.203.1.1"' in raw.replace(" ", "")
    finally:
        site.crossing.close_direct_route()
        client.close()
        target.close()


def test_a_hosts_topology_runs_an_experiment_over_ssh(lab: Lab, tmp_path: Path) -> None:
    """`portunus-bench run`'s runner with kind hosts: client and target over SSH, the edge a namespace."""
    site = lab.topo.site
    names = lab.topo.names  # type: ignore[attr-defined]

    def ssh_host(s: LabSshd) -> dict:
        return {"executor": "ssh", "host": s.host, "port": s.port, "user": s.user,
                "identity_file": str(s.identity_file), "known_hosts": str(s.known_hosts),
                "connect_netns": names["edge"]}

    cfg = parse_config({
        "name": "over-ssh", "kind": "headline", "paths": ["direct", "iptables", "standalone"], "rounds": 1,
        "seconds": 1, "omit_seconds": 0,
        "topology": {"kind": "hosts", "edge_address": site.listen_host, "target_address": site.target_host,
                     "edge_devices": list(site.edge_devices),
                     "hosts": {"client": ssh_host(lab.client_sshd), "edge": {"executor": "netns", "netns": names["edge"]},
                               "target": ssh_host(lab.target_sshd)}}})
    assert site.crossing is not None
    site.crossing.open_direct_route()  # the lab's "network" routes client -> target (direct needs it on hosts)
    try:
        out = run_experiment(cfg, tmp_path / "over-ssh.jsonl", progress_stream=open(os.devnull, "w"))  # noqa: SIM115
    finally:
        site.crossing.close_direct_route()
    assert not out.interrupted and len(out.records) == 3
    assert all(r.ok for r in out.records), [r.error for r in out.records]
    rs = load_results(tmp_path / "over-ssh.jsonl")
    roles = rs.header.topology.roles or {}
    assert rs.header.topology.kind == "hosts" and roles["client"]["kind"] == "ssh" and roles["edge"]["kind"] == "netns"
    standalone = next(r for r in rs.records if r.path == "standalone")
    assert standalone.forwarder_cpu_s is not None and standalone.throughput_mbps and standalone.throughput_mbps > 0


def test_every_role_over_ssh_including_the_edge_and_the_control_server(lab: Lab, tmp_path: Path) -> None:
    """Edge over SSH too: forwarders found on the remote PATH (extra_path), csplice compiled there, kernel
    rules applied there, portunus-server's operator API reached through an SSH port forward."""
    site = lab.topo.site
    names = lab.topo.names  # type: ignore[attr-defined]
    with open_lab_sshd(lab.topo.executor("edge"), tmp_path / "edge-sshd", "127.0.0.1", SSH_PORT) as edge_sshd:
        procs.unregister(edge_sshd.proc)

        def ssh_host(s: LabSshd) -> dict:
            return {"executor": "ssh", "host": s.host, "port": s.port, "user": s.user,
                    "identity_file": str(s.identity_file), "known_hosts": str(s.known_hosts),
                    "connect_netns": names["edge"], "python": sys.executable,
                    "extra_path": [str(Path(sys.executable).parent)]}

        cfg = parse_config({
            "name": "all-ssh", "kind": "headline", "paths": ["iptables", "standalone", "reference", "client",
                                                             "socat", "haproxy"],
            "rounds": 1, "seconds": 1, "omit_seconds": 0,
            "topology": {"kind": "hosts", "edge_address": site.listen_host, "target_address": site.target_host,
                         "hosts": {"client": ssh_host(lab.client_sshd), "edge": ssh_host(edge_sshd),
                                   "target": ssh_host(lab.target_sshd)}}})
        out = run_experiment(cfg, tmp_path / "all-ssh.jsonl", progress_stream=open(os.devnull, "w"))  # noqa: SIM115
    bad = [(r.path, r.error) for r in out.records if not r.ok]
    assert not bad and len(out.records) == 6, bad
    recs = {r.path: r for r in out.records}
    assert recs["client"].path_info["server_on"].startswith("ssh:")
    assert recs["reference"].path_info["binary"].startswith("/tmp/portunus-bench-remote-")
    assert recs["haproxy"].path_info["spliced"] is None  # the splice check needs the edge's /proc
    assert all(recs[p].forwarder_cpu_s is not None for p in ("standalone", "reference", "client", "socat"))
    assert lab.topo.site.edge.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
