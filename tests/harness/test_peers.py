"""Comparable-forwarder paths: each starts, carries bytes intact both ways, and stops leaving nothing.

Real tools (haproxy, nginx, socat, rinetd, ssh/sshd, nft) from `make setup`;
throughput through the runner is covered for every registered path by
test_paths.py. Here: SHA-256 of every byte both ways over concurrent
connections, no process left, HAProxy's splice check, nftables tables gone
on every exit path, and a missing tool reported as unavailable with its
package (never a zero).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.errors import PathError
from harness.measure.runner import PortAllocator
from harness.paths import PATHS, PathSetup
from harness.paths import nftables as nft
from harness.paths.haproxy import render_haproxy_cfg
from harness.paths.nginx import render_nginx_conf
from harness.paths.socat import SocatPath, socat_argv
from harness.site import procs
from tests.support.net import (
    ExchangeServer,
    FramedServer,
    assert_exchanges_intact,
    exchange,
    framed_exchange,
)

PEERS = ["nftables", "haproxy", "haproxy_bigbuf", "haproxy_splice", "nginx", "nginx_bigbuf",
         "socat", "socat_bigbuf", "rinetd", "ssh"]
# Per connection: bytes client -> target, bytes target -> client (empty ways and MiB ones).
EXCHANGES = [(0, 1 << 20), (3 << 20, 0), (1, 1), (2 << 20, 3 << 20), (65537, 777)]


def _tag(i: int) -> bytes:
    return f"exchange-{i:07d}".encode()[:16].ljust(16, b".")


def _forward_and_check(path_name: str, tmp_path: Path) -> dict:
    """Start the path to an ExchangeServer, run EXCHANGES concurrently, check SHA-256 both ways, stop.

    A path without TCP half-close (rinetd) gets the same exchanges framed, each side
    sending only after the other finished: it cannot carry a half-closed connection.
    """
    rng = random.Random(path_name)
    reply = {_tag(i): down for i, (_, down) in enumerate(EXCHANGES)}
    half_close = getattr(PATHS[path_name], "half_close", True)
    server = (ExchangeServer(reply_size=lambda tag: reply[tag], rng=random.Random(7)) if half_close
              else FramedServer())
    with server as srv:
        path = PATHS[path_name]()
        av = path.available()
        assert av.ok, av.reason
        setup = PathSetup(target_port=srv.port, workdir=tmp_path, alloc_port=PortAllocator(None).alloc)
        tree: set[int] = set()
        try:
            ep = path.start(setup)
            path.ready(30)
            results: dict[int, tuple[str, str]] = {}
            errors: list[BaseException] = []

            def one(i: int, up: int) -> None:
                try:
                    if half_close:
                        results[i] = exchange(ep.port, rng.randbytes(up), _tag(i), timeout_s=60)
                    else:
                        results[i] = framed_exchange(ep.port, _tag(i), rng.randbytes(up), reply[_tag(i)])
                except BaseException as e:  # reported below with the index
                    errors.append(e)

            threads = [threading.Thread(target=one, args=(i, up)) for i, (up, _) in enumerate(EXCHANGES)]
            for t in threads:
                t.start()
            # Every process of the path while connections are open (forks, workers, sshd sessions).
            for pid in path.forwarder_pids():
                tree |= {pid, *procs.descendants(pid)}
            for t in threads:
                t.join(90)
            assert not errors, errors
            assert_exchanges_intact(srv, results, [_tag(i) for i in range(len(EXCHANGES))], path_name)
            for pid in path.forwarder_pids():
                tree |= {pid, *procs.descendants(pid)}
            info = path.describe()
        finally:
            path.stop()
    left = [pid for pid in tree if procs.pid_alive(pid)]
    assert not left, f"{path_name} left processes running: {left}"
    assert path.has_forwarder_process == bool(tree)
    return info


@pytest.mark.parametrize("name", PEERS)
def test_peer_forwards_bytes_intact_and_stops_clean(name: str, tmp_path: Path) -> None:
    info = _forward_and_check(name, tmp_path)
    if name.startswith("haproxy"):
        # The splice variant really spliced (pipe fds seen); the copy variants did not.
        assert info["spliced"] is (name == "haproxy_splice"), info
    if name == "nftables":
        assert nft.table_name() not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                                      text=True, check=True).stdout


def test_nftables_table_is_removed_when_the_measurement_fails(tmp_path: Path) -> None:
    from harness.define.load import parse_config
    from harness.define.plan import Measurement
    from harness.measure.runner import measure_one
    from harness.measure.signals import SignalGuard

    path = PATHS["nftables"]()
    seen = {}
    original_ready = path.ready

    def ready_then_break(timeout_s: float) -> None:
        original_ready(timeout_s)
        seen["tables"] = [t.name for t in nft.list_bench_tables()]
        raise PathError("simulated failure after the table went in")

    path.ready = ready_then_break  # type: ignore[method-assign]
    cfg = parse_config({"name": "t", "kind": "peers", "paths": ["nftables"], "rounds": 1, "seconds": 1,
                        "omit_seconds": 0})
    rec = measure_one(Measurement(0, 1, "nftables"), cfg, path, tmp_path, PortAllocator(None), SignalGuard())
    assert not rec.ok and "simulated" in (rec.error or "")
    assert nft.table_name() in seen["tables"]
    assert nft.table_name() not in [t.name for t in nft.list_bench_tables()]


def test_cleanup_removes_nft_tables_of_dead_harnesses_only() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_table, live_table = nft.table_name(int(dead.stdout)), nft.table_name(1)
    try:
        for t in (dead_table, live_table):
            subprocess.run(["nft", "-f", "-"], input=nft.render_ruleset(t, 1, 2), text=True, check=True)
        removed = nft.cleanup_leftovers()
        names = [t.name for t in nft.list_bench_tables()]
        assert dead_table in removed and live_table not in removed
        assert dead_table not in names and live_table in names
        # --pid, not --all: --all would also remove the chains and scratch dirs of other harnesses running here.
        proc = subprocess.run([sys.executable, "-m", "harness", "cleanup", "--pid", "1"], capture_output=True,
                              text=True)
        assert proc.returncode == 0 and live_table in proc.stdout, proc.stdout + proc.stderr
        assert live_table not in [t.name for t in nft.list_bench_tables()]
    finally:
        nft.remove_table(dead_table)
        nft.remove_table(live_table)


def test_parse_bench_tables() -> None:
    listing = "table ip nat\ntable ip PORTUNUS_BENCH_42\ntable inet filter\ntable ip6 PORTUNUS_BENCH_7\n"
    assert nft.parse_bench_tables(listing) == [nft.BenchTable("PORTUNUS_BENCH_42", 42)]


class _MissingSocat(SocatPath):
    tool = "portunus-bench-no-such-tool"


def test_a_missing_tool_is_unavailable_with_its_package_never_a_zero(tmp_path: Path) -> None:
    path = _MissingSocat()
    av = path.available()
    assert not av.ok and "apt-get install socat" in av.reason
    with pytest.raises(PathError, match="apt-get install socat"):
        path.start(PathSetup(1, tmp_path, PortAllocator(None).alloc))
    path.stop()


def test_rinetd_has_no_half_close() -> None:
    """rinetd closes both ways on the first EOF (the reply in flight is lost): the report says so."""
    from harness.paths.rinetd import RinetdPath

    assert RinetdPath.half_close is False
    assert all(getattr(PATHS[n], "half_close", True) for n in PEERS if n != "rinetd")


def test_every_peer_names_its_package_when_missing() -> None:
    for name in PEERS:
        cls = PATHS[name]
        if name == "nftables":
            continue  # a kernel path: nft is checked by nftables_available
        missing = type(f"Missing{cls.__name__}", (cls,), {"tool": "portunus-bench-no-such-tool"})()
        av = missing.available()
        assert not av.ok and "apt-get install" in av.reason, (name, av.reason)


def test_configs_the_peers_are_given(tmp_path: Path) -> None:
    """The rendered configs carry the settings the variants are named after (checked by the tools)."""
    for bufsize, splice in ((None, False), (262144, False), (None, True)):
        cfg = tmp_path / f"h-{bufsize}-{splice}.cfg"
        cfg.write_text(render_haproxy_cfg(9000, 9001, bufsize_bytes=bufsize, splice=splice))
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        text = cfg.read_text()
        assert ("tune.bufsize 262144" in text) == (bufsize is not None)
        assert ("option splice-request" in text and "option splice-response" in text) == splice
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(tmp_path, 9000, 9001, protocol="udp", proxy_buffer_bytes=262144))
    check = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "proxy_buffer_size 262144;" in conf.read_text() and "udp reuseport" in conf.read_text()
    assert socat_argv("/usr/bin/socat", "tcp", 1, 2, 262144)[1:3] == ["-b", "262144"]
    assert socat_argv("/usr/bin/socat", "udp", 1, 2)[1].startswith("UDP-LISTEN:1,")
    assert os.geteuid() == 0  # the peers run as root here (sshd, nft)
