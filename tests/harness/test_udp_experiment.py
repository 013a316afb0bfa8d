"""UDP experiment: iperf3 -u through every UDP-capable path (UDP data + TCP control on one port)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.define.load import ConfigError, parse_config
from harness.define.plan import Measurement
from harness.errors import IperfError
from harness.kinds.udp import summarise_udp
from harness.measure.drivers import IperfDriver
from harness.measure.iperf import IperfParams, cli_argv
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.paths import PATHS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "udp" / "rinetd_invalid_counters.json"
RATE_MBPS = 50.0
# Loopback here: paths that need a forwarded topology (nft_flowtable) are covered by test_topology_paths.py.
UDP_PATHS = [n for n, c in PATHS.items() if "udp" in c.protocols and not c.capped
             and c().available_on("loopback").ok]


def _cfg(paths: list[str]):
    return parse_config({"name": "udp", "kind": "udp", "paths": paths, "rounds": 1, "seconds": 1,
                         "omit_seconds": 0, "protocol": "udp", "offered_mbps": [RATE_MBPS], "datagram_bytes": 1400})


def test_the_udp_paths_are_the_expected_ones() -> None:
    assert {"direct", "iptables", "nftables", "standalone", "socat", "nginx", "rinetd"} <= set(UDP_PATHS)
    assert "haproxy" not in UDP_PATHS and "ssh" not in UDP_PATHS  # no UDP forwarding in them


@pytest.mark.parametrize("name", UDP_PATHS)
def test_udp_through_path(name: str, tmp_path: Path) -> None:
    rec = measure_one(Measurement(0, 1, name, RATE_MBPS), _cfg([name]), PATHS[name](), tmp_path,
                      PortAllocator(None), SignalGuard())
    if name == "rinetd":
        # rinetd's UDP relay leaves iperf3 unable to sequence the datagrams: failed, with the reason.
        assert not rec.ok and "UDP receiver counters are invalid" in (rec.error or ""), rec.error
        return
    assert rec.ok, rec.error
    assert rec.protocol == "udp" and rec.driver == "iperf3"
    assert '"protocol":\t"UDP"' in (rec.iperf_raw or "") or '"protocol": "UDP"' in (rec.iperf_raw or "")
    # Paced at 50 Mbit/s for 1 s on loopback: delivered close to it, little or no loss.
    assert rec.receiver_mbps is not None and 0.8 * RATE_MBPS <= rec.receiver_mbps <= 1.05 * RATE_MBPS
    assert rec.lost_pct is not None and 0.0 <= rec.lost_pct < 5.0
    assert rec.jitter_ms is not None and rec.jitter_ms >= 0
    assert json.loads(rec.iperf_raw or "{}")["start"]["test_start"]["blksize"] == 1400
    s = summarise_udp([rec])
    cell = s.cell(name, RATE_MBPS)
    assert cell is not None and cell.loss_pct.median == rec.lost_pct and cell.delivered_mbps.n == 1


def test_invalid_udp_counters_fail_the_measurement() -> None:
    with pytest.raises(IperfError, match="UDP receiver counters are invalid"):
        IperfDriver().record_fields(FIXTURE.read_text(), None)


def test_udp_config_rules() -> None:
    with pytest.raises(ConfigError, match="does not forward UDP"):
        _cfg(["direct", "haproxy"])
    with pytest.raises(ConfigError, match="needs protocol: udp and at least one offered rate"):
        parse_config({"name": "u", "kind": "udp", "paths": ["direct"], "rounds": 1, "seconds": 1,
                      "omit_seconds": 0, "protocol": "udp"})
    with pytest.raises(ConfigError, match="only for protocol: udp"):
        parse_config({"name": "u", "kind": "headline", "paths": ["direct"], "rounds": 1, "seconds": 1,
                      "omit_seconds": 0, "datagram_bytes": 1400})
    argv = cli_argv(IperfParams("127.0.0.1", 5201, 1, protocol="udp", offered_mbps=100, length_bytes=1400))
    assert argv[-5:] == ["-u", "-b", "100000000", "-l", "1400"]
