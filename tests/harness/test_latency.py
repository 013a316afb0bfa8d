"""The latency probe: its numbers are right (a path with a known added delay), its parser, its target.

The check that matters: through tests/harness/delay_forwarder.py, which holds
every client->target chunk for DELAY_MS, the probe must report the direct
path's figure plus DELAY_MS, for both the setup time and the RTT.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from harness.define.experiment import ProbeSettings
from harness.define.load import parse_config
from harness.define.plan import Measurement
from harness.errors import ProbeError
from harness.kinds.latency import summarise_latency
from harness.measure.probe import latency_params, open_echo_server, run_probe
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.records.probe_json import parse_latency_json, percentile
from tests.harness.delay_path import DelayPath
from tests.support.net import free_port

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "probe" / "latency.json"
DELAY_MS = 20.0
# Sleep overshoot, thread wake-ups and the delay forwarder's own Python time on a
# loaded 2-core host: the measured extra may exceed the delay by this much, never fall short.
TOLERANCE_MS = 6.0
SMALL = {"setup_connections": 40, "rtt_connections": 2, "rtt_per_connection": 40, "warmup": 3}


def _cfg(**probe: int):
    return parse_config({"name": "lat", "kind": "latency", "paths": ["direct"], "rounds": 1, "seconds": 60,
                         "omit_seconds": 0, "probe": {**SMALL, **probe}})


def test_latency_probe_reports_floor_plus_a_known_delay(tmp_path: Path) -> None:
    from harness.paths import PATHS

    cfg = _cfg()
    direct = measure_one(Measurement(0, 1, "direct"), cfg, PATHS["direct"](), tmp_path / "d", PortAllocator(None),
                         SignalGuard())
    delayed = measure_one(Measurement(1, 1, "delay"), cfg, DelayPath(DELAY_MS), tmp_path / "x", PortAllocator(None),
                          SignalGuard())
    for rec in (direct, delayed):
        assert rec.ok, rec.error
        assert rec.driver == "latency" and rec.probe_raw and rec.iperf_raw is None
        assert rec.setup_samples == SMALL["setup_connections"]
        assert rec.rtt_samples == SMALL["rtt_connections"] * SMALL["rtt_per_connection"]
        assert rec.conn_errors == 0
        assert rec.setup_p50_us <= rec.setup_p90_us <= rec.setup_p99_us  # type: ignore[operator]
        assert rec.rtt_p50_us <= rec.rtt_p90_us <= rec.rtt_p99_us  # type: ignore[operator]
    assert direct.rtt_p50_us < 5000, "the floor itself must be far below the delay for this check to mean much"
    for what in ("setup", "rtt"):
        floor_us = getattr(direct, f"{what}_p50_us")
        measured_us = getattr(delayed, f"{what}_p50_us")
        extra_ms = (measured_us - floor_us) / 1000
        assert DELAY_MS - 0.5 <= extra_ms <= DELAY_MS + TOLERANCE_MS, (what, floor_us, measured_us)
    assert delayed.forwarder_cpu_s is not None and delayed.path_info == {"delay_ms": DELAY_MS}
    s = summarise_latency([direct, delayed], ["direct"])
    assert s.floor is not None and s.floor.path == "direct"
    added = s.get("delay")
    assert added is not None and added.added_rtt_us is not None
    assert DELAY_MS - 0.5 <= added.added_rtt_us / 1000 <= DELAY_MS + TOLERANCE_MS


def test_the_probe_stops_at_its_time_limit_and_says_so(tmp_path: Path) -> None:
    """100 ms per sample through the delay path, 2 s allowed (1 s for setup samples, the rest for RTT):
    fewer samples of each series, marked truncated."""
    cfg = parse_config({"name": "lat", "kind": "latency", "paths": ["direct"], "rounds": 1, "seconds": 2,
                        "omit_seconds": 0, "probe": {"setup_connections": 1000, "warmup": 0}})
    rec = measure_one(Measurement(0, 1, "delay"), cfg, DelayPath(100.0), tmp_path, PortAllocator(None), SignalGuard())
    assert rec.ok, rec.error
    assert rec.setup_samples is not None and 3 <= rec.setup_samples <= 11
    assert rec.rtt_samples is not None and 1 <= rec.rtt_samples <= 11  # RTT still got its half
    assert json.loads(rec.probe_raw or "{}")["truncated"] is True
    assert summarise_latency([rec]).rows[0].truncated_rounds == 1


def test_a_path_that_refuses_gives_a_failed_measurement_with_the_errors() -> None:
    port = free_port()  # nothing listens
    raw = run_probe("latency", latency_params("127.0.0.1", port, ProbeSettings(**SMALL), 30.0), 60.0)
    doc = json.loads(raw)
    assert doc["errors"].get("setup:ECONNREFUSED") == SMALL["setup_connections"] + SMALL["warmup"]
    with pytest.raises(ProbeError, match="ECONNREFUSED"):
        parse_latency_json(raw)


def test_parse_latency_fixture() -> None:
    """A report saved from a real probe run (direct path, this host)."""
    text = FIXTURE.read_text()
    r = parse_latency_json(text)
    doc = json.loads(text)
    assert r.setup.n == len(doc["setup_ns"]) and r.rtt.n == len(doc["rtt_ns"])
    setup_us = sorted(x / 1e3 for x in doc["setup_ns"])
    assert r.setup.p50_us == pytest.approx(percentile(setup_us, 50))
    assert r.setup.min_us == setup_us[0] and r.setup.max_us == setup_us[-1]
    assert 0 < r.rtt.p50_us <= r.rtt.p90_us <= r.rtt.p99_us <= r.rtt.max_us  # type: ignore[operator]
    assert r.errors == {} and r.truncated is False
    with pytest.raises(ProbeError, match="not a latency probe report"):
        parse_latency_json(json.dumps({"probe": "connrate"}))
    with pytest.raises(ProbeError, match="not JSON"):
        parse_latency_json("iperf3: error")


def test_percentile_matches_numpy_linear() -> None:
    import numpy as np

    values = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0])
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None


def test_echo_server_modes(tmp_path: Path) -> None:
    port = free_port()
    with open_echo_server(port, tmp_path / "echo.log", workers=2):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # one-shot: reply, then EOF
            s.sendall(b"C")
            assert s.recv(10) == b"C" and s.recv(10) == b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # echo until EOF
            s.sendall(b"Ehello")
            got = b""
            while len(got) < 6:
                got += s.recv(10)
            assert got == b"Ehello"
            s.sendall(b"x" * 100_000)
            n = 0
            while n < 100_000:
                n += len(s.recv(65536))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # anything else: closed
            s.sendall(b"?")
            assert s.recv(10) == b""
