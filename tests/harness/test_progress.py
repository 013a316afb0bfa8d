"""Progress output: plain lines for logs, a redrawn line on a terminal."""

from __future__ import annotations

import io
import time

from harness.define.plan import Measurement
from harness.measure.progress import Progress, format_duration
from tests.harness.test_results import record


def test_plain_lines_for_logs() -> None:
    out = io.StringIO()
    p = Progress(2, per_run_s=1, stream=out, live=False)
    m = Measurement(0, 1, "standalone", offered_mbps=500.0)
    p.start(m)
    p.finish(m, record("standalone", 1, 1234.5))
    m2 = Measurement(1, 1, "client", cap_bytes_per_s=65536)
    p.start(m2)
    p.finish(m2, record("client", 1, None))
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/2] standalone, round 1, offered 500 Mbit/s | elapsed 0s, ETA ")
    assert lines[1] == "[1/2] standalone, round 1, offered 500 Mbit/s -> 1,234.5 Mbit/s"
    assert lines[3] == "[2/2] client, round 1, cap 65536 B/s -> FAILED: boom"
    assert "\r" not in out.getvalue()


def test_live_line_is_redrawn_while_a_run_lasts() -> None:
    out = io.StringIO()
    p = Progress(1, per_run_s=1, stream=out, live=True)
    m = Measurement(0, 1, "direct")
    p.start(m)
    time.sleep(2.3)
    p.finish(m, record("direct", 1, 10.0))
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K[1/1] direct, round 1 (") >= 2  # the ticker redrew it
    assert text.endswith("[1/1] direct, round 1 -> 10.0 Mbit/s\n")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_http_and_packet_rate_lines_say_what_was_measured_in_their_units() -> None:
    from dataclasses import replace

    from harness.measure.progress import describe, result_text

    m = Measurement(0, 2, "haproxy", http_mode="close", response_bytes=1024)
    assert describe(m) == "haproxy, round 2, close, 1024 B responses"
    r = replace(record("haproxy", 2, None), status="ok", error=None, driver="wrk", requests_per_s=2640.4,
                http_errors={"connect": 0, "read": 3, "write": 0, "timeout": 0, "status": 0})
    assert result_text(r) == "2,640 requests/s, 3 errors"
    u = Measurement(1, 1, "nginx", offered_mbps=30.72, datagram_bytes=64, offered_pps=60000.0)
    assert describe(u) == "nginx, round 1, 64 B x 60,000/s offered"
    d = replace(record("nginx", 1, 30.0), protocol="udp", lost_pct=11.87, delivered_pps=52508.3)
    assert result_text(d) == "52,508 datagrams/s delivered, 11.87% lost"
