"""UDP at packet rate (kind udp with offered_pps): real iperf3 at small datagrams through real paths,
datagrams counted exactly, drops at the forwarder's socket read from /proc, the report's pps tables."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from harness.define.load import parse_config
from harness.define.plan import build_plan
from harness.kinds.udp import cpu_s_per_mdgram, summarise_udp
from harness.measure.drivers import IperfDriver
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.paths import PATHS
from harness.paths.base import Endpoint
from harness.records.results import load_results
from harness.site.executor.local import LOCAL
from harness.site.netutil import parse_proc_net_udp_drops
from tests.harness.test_cli import bench

SIZE = 64
RATE_PPS = 5000.0


def _cfg(paths: list[str], rates: list[float], sizes: list[int], **kw):
    return parse_config({"name": "pps", "kind": "udp", "paths": paths, "rounds": 1, "seconds": 1,
                         "omit_seconds": 0, "protocol": "udp", "datagram_bytes": sizes, "offered_pps": rates,
                         "socket_buffer_bytes": 1 << 20, **kw})


def test_the_plan_measures_every_size_at_every_rate() -> None:
    plan = build_plan(_cfg(["direct", "standalone"], [1000, 2000], [64, 1400]))
    points = sorted({(m.datagram_bytes, m.offered_pps, m.offered_mbps) for m in plan})
    assert points == [(64, 1000.0, 0.512), (64, 2000.0, 1.024), (1400, 1000.0, 11.2), (1400, 2000.0, 22.4)]
    assert len(plan) == 8


@pytest.mark.parametrize("name", ["direct", "iptables", "standalone", "nginx", "socat"])
def test_small_datagrams_through_path_are_counted(name: str, tmp_path: Path) -> None:
    cfg = _cfg([name], [RATE_PPS], [SIZE])
    (m,) = build_plan(cfg)
    rec = measure_one(m, cfg, PATHS[name](), tmp_path, PortAllocator(None), SignalGuard())
    assert rec.ok, rec.error
    assert rec.datagram_bytes == SIZE and rec.offered_pps == RATE_PPS
    raw = json.loads(rec.iperf_raw or "{}")
    assert raw["start"]["test_start"]["blksize"] == SIZE
    # iperf3 -w: the socket buffer asked for (the kernel doubles it for its bookkeeping).
    assert raw["start"]["sock_bufsize"] == 1 << 20 and raw["start"]["rcvbuf_actual"] == 2 << 20
    sent, recv = raw["end"]["sum_sent"], raw["end"]["sum_received"]
    # Exact counts from iperf3's report: delivered = the receiver's packets less the ones it saw lost.
    assert rec.datagrams_sent == sent["packets"]
    assert rec.datagrams_delivered == recv["packets"] - recv["lost_packets"]
    assert rec.delivered_pps == pytest.approx(rec.datagrams_delivered / recv["seconds"])
    # Paced at 5,000 datagrams/s for 1 s: delivered close to it (a forwarder that batches adds no loss here).
    assert 0.9 * RATE_PPS <= (rec.delivered_pps or 0) <= 1.05 * RATE_PPS, rec.delivered_pps
    if PATHS[name].has_forwarder_process:
        # The forwarder's own listening socket is read from /proc: it kept up, nothing dropped there.
        assert rec.socket_drops is not None and rec.socket_drops <= (rec.datagrams_sent or 0) - (
            rec.datagrams_delivered or 0)
        assert cpu_s_per_mdgram(rec) is not None and cpu_s_per_mdgram(rec) > 0
    else:
        assert rec.socket_drops is None and cpu_s_per_mdgram(rec) is None


def test_socket_drops_are_read_from_a_real_overflowing_socket() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few datagrams fill it
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        for _ in range(500):
            tx.sendto(b"x" * 512, ("127.0.0.1", port))
        received = 0
        rx.setblocking(False)
        while True:
            try:
                rx.recv(2048)
                received += 1
            except BlockingIOError:
                break
        table = Path("/proc/self/net/udp").read_text()
        drops = parse_proc_net_udp_drops(table, port)
        assert received > 0 and drops == 500 - received
        assert parse_proc_net_udp_drops(table, port ^ 1) == 0  # another port's sockets are not counted
        # The driver reads the same counter through the forwarder's pid (here: this process).
        cfg = _cfg(["direct"], [RATE_PPS], [SIZE])
        counted = IperfDriver().edge_counters(LOCAL, Endpoint("127.0.0.1", port), [os.getpid()], cfg)
        assert counted == {"socket_drops": drops}
    finally:
        rx.close()
        tx.close()


def test_run_report_validate_and_plots_end_to_end(tmp_path: Path) -> None:
    """`portunus-bench run` on a small pps config, then `validate` and `report`: the pps tables and figure."""
    cfg_path = tmp_path / "udp.yaml"
    cfg_path.write_text("schema_version: 1\nname: pps-e2e\nkind: udp\npaths: [direct, standalone]\n"
                        "protocol: udp\ndatagram_bytes: [64, 512]\noffered_pps: [2000, 8000]\n"
                        "socket_buffer_bytes: 1048576\nrounds: 1\nseconds: 1\nomit_seconds: 0\n")
    out = tmp_path / "out"
    run = bench("run", str(cfg_path), "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    rs = load_results(out / "pps-e2e.jsonl")
    assert rs.file_schema_version == 5 and len(rs.records) == 8 and all(r.ok for r in rs.records)
    val = bench("validate", str(out / "pps-e2e.jsonl"))
    assert val.returncode == 0 and "ok (result file, schema 5, udp 'pps-e2e', 8 measurements, 0 failed" in val.stdout
    s = summarise_udp(rs.records, ["direct", "standalone"])
    assert s.packet_rates and s.sizes == (64, 512) and s.offered_pps_of(64) == [2000.0, 8000.0]
    best = s.max_rate("standalone", 64)
    assert best is not None and best.offered_pps == 8000.0 and best.below_every_rate
    rep = bench("report", str(out))
    assert rep.returncode == 0, rep.stderr
    report = (out / "report.md").read_text()
    assert "## pps-e2e (udp)" in report and "64-byte datagrams" in report and "512-byte datagrams" in report
    assert "| 64 B: offered, datagrams/s (Mbit/s) | `direct` delivered/s | loss; jitter, ms |" in report
    assert "| 8,000 (4.1 Mbit/s) |" in report
    assert "64 B: most delivered/s at < 1% loss (offered)" in report and "64 B: CPU, s per million" in report
    assert (out / "plots" / "pps-e2e-pps.png").stat().st_size > 0
