"""wrk's output (the `http` kind's client) -> WrkResult: a pure parser, tested on real wrk output.

The driver (harness.measure.http) runs `wrk --latency -s <report script>`:
wrk prints its usual text, then the script's `done()` prints one JSON line
with the exact counts and percentiles (`"report": "wrk"`; wrk's text rounds
them: "1.62ms", "153.29MB"). The record keeps a small JSON wrapper
(`wrk_raw`): the command line, where and how it ran (CPUs, pinning, load
average before and after) and wrk's stdout verbatim, so every number here
can be recomputed from the result file.

Latency is wrk's: from writing a request to its complete response. A new
connection's connect() is not in it (wrk starts the clock when it writes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

REPORT_KEY = "wrk"
ERROR_KINDS = ("connect", "read", "write", "timeout", "status")  # status = responses with a status >= 400
PERCENTILES = ("p50", "p90", "p99", "p99.9")

# wrk's Lua `done()` hook: one JSON line after wrk's text. Without any request the latency
# histogram is empty (its min is UINT64_MAX), so the percentiles are written only when there are some.
REPORT_SCRIPT = """\
-- portunus-bench: exact counts and latency percentiles (microseconds) as one JSON line
done = function(summary, latency, requests)
  local e = summary.errors
  local lat = "null"
  if summary.requests > 0 then
    lat = string.format('{"min":%d,"max":%d,"mean":%.3f,"stdev":%.3f,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}',
      latency.min, latency.max, latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9))
  end
  io.write(string.format('{"report":"wrk","duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":%s}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, lat))
end
"""


class WrkError(Exception):
    """wrk printed no usable report (it could not connect at all, crashed, or ran without the script)."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: completed requests, the rate, latency percentiles (µs) and errors by kind."""

    requests: int  # complete responses (any status)
    duration_s: float
    bytes_read: int  # headers and bodies
    errors: dict[str, int]  # ERROR_KINDS -> count
    latency_us: dict[str, float] = field(default_factory=dict)  # PERCENTILES, min, max, mean, stdev; {} if none

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def bytes_per_request(self) -> float | None:
        return self.bytes_read / self.requests if self.requests else None


def parse_wrk_stdout(text: str) -> WrkResult:
    """wrk's stdout with the report script's JSON line -> WrkResult. WrkError if there is no such line."""
    doc = None
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and f'"report":"{REPORT_KEY}"' in line.replace(" ", ""):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise WrkError(f"wrk's report line is not JSON ({e}): {line[:200]!r}") from None
            break
    if doc is None:
        raise WrkError(f"wrk printed no report line (did it run with the report script?): {text.strip()[-300:]!r}")
    errors = {k: int((doc.get("errors") or {}).get(k, 0)) for k in ERROR_KINDS}
    latency = {k: float(v) for k, v in (doc.get("latency_us") or {}).items()}
    return WrkResult(int(doc["requests"]), float(doc["duration_us"]) / 1e6, int(doc["bytes"]), errors, latency)


@dataclass(frozen=True)
class WrkRun:
    """The record's `wrk_raw`: how wrk ran and what it printed."""

    argv: tuple[str, ...]
    stdout: str
    stderr: str = ""
    returncode: int | None = None
    context: dict[str, Any] = field(default_factory=dict)  # host CPUs, pinning, load average, server

    def to_json(self) -> str:
        return json.dumps({"argv": list(self.argv), "returncode": self.returncode, "context": self.context,
                           "stdout": self.stdout, "stderr": self.stderr}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WrkRun:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise WrkError(f"wrk_raw is not JSON ({e})") from None
        if not isinstance(d, dict) or "stdout" not in d:
            raise WrkError("wrk_raw has no wrk output (stdout)")
        return cls(tuple(d.get("argv") or ()), str(d["stdout"]), str(d.get("stderr") or ""), d.get("returncode"),
                   dict(d.get("context") or {}))


def parse_wrk_raw(text: str) -> WrkResult:
    """A record's wrk_raw -> WrkResult (the stdout inside it, parsed)."""
    return parse_wrk_stdout(WrkRun.from_json(text).stdout)
