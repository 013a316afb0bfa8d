"""The iperf3 driver: parser on verbatim iperf3 3.12 output, both backends on a real server."""

from __future__ import annotations

import json
import statistics

import pytest

from harness.errors import IperfError
from harness.measure.iperf import (
    IperfParams,
    cli_argv,
    open_iperf_server,
    run_client,
)
from harness.records.iperf_json import parse_iperf_json
from harness.site.netutil import free_port
from tests.harness.conftest import iperf_fixture


def test_parse_tcp() -> None:
    raw = iperf_fixture("tcp.json")
    r = parse_iperf_json(raw)
    doc = json.loads(raw)
    assert r.protocol == "tcp" and r.version == "iperf 3.12"
    assert r.sender_mbps == pytest.approx(doc["end"]["sum_sent"]["bits_per_second"] / 1e6)
    assert r.receiver_mbps == pytest.approx(doc["end"]["sum_received"]["bits_per_second"] / 1e6)
    assert r.throughput_mbps == r.sender_mbps  # the documented definition
    assert r.retransmits == doc["end"]["sum_sent"]["retransmits"]
    assert r.host_cpu_pct == pytest.approx(doc["end"]["cpu_utilization_percent"]["host_total"])
    assert r.remote_cpu_pct == pytest.approx(doc["end"]["cpu_utilization_percent"]["remote_total"])
    assert len(r.intervals) == 2 and not any(i.omitted for i in r.intervals)
    assert r.total_bytes == sum(i["sum"]["bytes"] for i in doc["intervals"])
    assert r.lost_pct is None and r.jitter_ms is None


def test_parse_omit_marks_intervals_and_excludes_them_from_throughput() -> None:
    raw = iperf_fixture("tcp_omit.json")
    r = parse_iperf_json(raw)
    assert r.omit_seconds == 1
    assert [i.omitted for i in r.intervals] == [True, False, False, False]
    kept = sum(i.bytes for i in r.intervals if not i.omitted)
    # iperf3 resets its counters after the omit period: the end sum is the non-omitted bytes.
    assert r.sender_bytes == kept
    assert r.total_bytes == kept + r.intervals[0].bytes  # what the path carried, warm-up included
    assert r.sender_mbps == pytest.approx(r.sender_bytes * 8 / r.duration_s / 1e6, rel=1e-3)


def test_parse_paced() -> None:
    r = parse_iperf_json(iperf_fixture("tcp_paced.json"))
    assert r.sender_mbps == pytest.approx(500, rel=0.02)  # -b 500M


def test_parse_udp() -> None:
    r = parse_iperf_json(iperf_fixture("udp.json"))
    assert r.protocol == "udp" and r.retransmits is None
    assert r.sender_mbps == pytest.approx(100, rel=0.02)
    assert r.lost_pct == 0 and r.jitter_ms is not None


@pytest.mark.parametrize(("name", "message"), [
    ("error_refused.json", "unable to connect to server: Connection refused"),
    ("error_server_terminated.json", "the server has terminated"),
])
def test_parse_error_reports(name: str, message: str) -> None:
    # iperf3 3.12 exits 0 in both cases: only the "error" key tells.
    with pytest.raises(IperfError, match=message):
        parse_iperf_json(iperf_fixture(name))


@pytest.mark.parametrize("text", ["", "iperf3: error - boom", "[1, 2]", '{"start": {}, "end": {}}'])
def test_parse_garbage(text: str) -> None:
    with pytest.raises(IperfError):
        parse_iperf_json(text)


def test_cli_argv() -> None:
    argv = cli_argv(IperfParams("127.0.0.1", 5201, 30, 5, offered_mbps=2500))
    assert argv[:5] == ["iperf3", "-c", "127.0.0.1", "-p", "5201"]
    assert "-J" in argv and argv[argv.index("-t") + 1] == "30" and argv[argv.index("-O") + 1] == "5"
    assert argv[argv.index("-b") + 1] == "2500000000"
    assert "-u" in cli_argv(IperfParams("127.0.0.1", 1, 1, protocol="udp"))


@pytest.mark.parametrize("backend", ["cli", "python"])
def test_backend_reports_connection_refused(backend: str) -> None:
    port = free_port()  # nothing listens there
    raw = run_client(IperfParams("127.0.0.1", port, 1), backend)
    with pytest.raises(IperfError, match="(?i)connect|refused"):
        parse_iperf_json(raw)


def test_backends_agree_on_direct_path() -> None:
    """Both backends measure the same thing: 2 interleaved rounds each, medians within 0.5x-2x."""
    rates: dict[str, list[float]] = {"cli": [], "python": []}
    for _ in range(2):
        for backend in ("python", "cli"):
            port = free_port()
            with open_iperf_server(port):
                raw = run_client(IperfParams("127.0.0.1", port, 1), backend)
            r = parse_iperf_json(raw)
            assert r.sender_mbps > 0 and r.receiver_mbps > 0
            rates[backend].append(r.sender_mbps)
    ratio = statistics.median(rates["python"]) / statistics.median(rates["cli"])
    # Loose: the machine is shared with other test suites; this catches unit or parsing mix-ups.
    assert 0.5 < ratio < 2.0, rates


def test_server_is_stopped_on_exit_even_after_an_error() -> None:
    port = free_port()
    with pytest.raises(RuntimeError), open_iperf_server(port) as server:
        raise RuntimeError("boom")
    assert server.poll() is not None
