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
