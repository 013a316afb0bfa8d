"""The latency and connection-rate client: `python -m harness.measure.probe_child latency|connrate PARAMS_JSON`.

Runs in its own process (like harness.measure.iperf_child), so the harness's own
threads and GIL never sit in the measured loop, and prints one JSON report
on stdout with the raw samples (harness.measure.probe parses it). It talks to
harness.measure.echo_server through the path under test.

latency   1. setup samples: `setup_connections` short connections, one after the
             other: time from connect() to the first byte of the reply to a
             1-byte request sent as soon as connect() returns (b"C", one-shot).
          2. RTT samples: `rtt_connections` connections (b"E", echo), each
             `rtt_per_connection` 1-byte round trips, back to back.
          The first `warmup` samples of each series are dropped. One
          request is in flight at a time: the client waits, it does not
          compete for the CPU. Setup sampling stops at half of time_limit_s,
          RTT sampling at time_limit_s (either marks the report truncated).
connrate  `processes` processes (forked here) x `concurrency` connections in
          flight each, non-blocking with epoll: connect, send b"C", read the
          reply and the server's EOF, close, open the next. Completions and
          errors are counted in 1-second bins from a common start; the
          first omit_seconds are warm-up.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

PROBE_FORMAT_VERSION = 1
MODE_ONESHOT = b"C"
MODE_ECHO = b"E"
# A request that has not completed in this long counts as an error (timeout).
OP_TIMEOUT_S = 5.0
# Forked connrate workers start together at now + this (fork is fast; this
# covers a loaded host scheduling them late).
START_DELAY_S = 0.3
# Time after the window in which connrate waits for nothing: in-flight
# connections are simply closed (they finish after the window, uncounted).
BIN_S = 1.0
_PR_SET_PDEATHSIG = 1
# Errors kept verbatim (first few per kind) for the report.
ERROR_EXAMPLES = 3


class _Errors:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []

    def add(self, kind: str, detail: str = "") -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= ERROR_EXAMPLES:
            self.examples.append(f"{kind}: {detail}" if detail else kind)

    def to_dict(self) -> dict[str, Any]:
        return {"errors": self.counts, "error_examples": self.examples}


def _errno_kind(prefix: str, e: OSError) -> str:
    return f"{prefix}:{errno.errorcode.get(e.errno or 0, str(e.errno))}"


# ---------------------------------------------------------------- latency


def _oneshot_sample(host: str, port: int) -> int:
    """ns from connect() to the first byte of the one-shot reply; raises OSError/ValueError."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(OP_TIMEOUT_S)
        t0 = time.perf_counter_ns()
        s.connect((host, port))
        s.send(MODE_ONESHOT)
        first = s.recv(1)
        t1 = time.perf_counter_ns()
        if first != MODE_ONESHOT:
            raise ValueError(f"reply {first!r}, expected {MODE_ONESHOT!r}")
        s.recv(1)  # the server's EOF: it closes first (TIME_WAIT stays on its side)
        return t1 - t0
    finally:
        s.close()


def run_latency(p: dict[str, Any]) -> dict[str, Any]:
    host, port = p["host"], int(p["port"])
    warmup = int(p["warmup"])
    t_start = time.monotonic()
    deadline = t_start + float(p["time_limit_s"])
    # A slow path must not spend the whole limit on setup samples and leave no RTT sample.
    setup_deadline = t_start + float(p["time_limit_s"]) / 2
    errors = _Errors()
    truncated = False
    setup: list[int] = []
    for i in range(warmup + int(p["setup_connections"])):
        if time.monotonic() > setup_deadline:
            truncated = True
            break
        try:
            ns = _oneshot_sample(host, port)
        except TimeoutError:
            errors.add("setup:timeout")
            continue
        except OSError as e:
            errors.add(_errno_kind("setup", e), str(e))
            continue
        except ValueError as e:
            errors.add("setup:bad_reply", str(e))
            continue
        if i >= warmup:
            setup.append(ns)
    rtt: list[int] = []
    for _ in range(int(p["rtt_connections"])):
        if time.monotonic() > deadline:
            truncated = True
            break
        try:
            s = socket.create_connection((host, port), timeout=OP_TIMEOUT_S)
        except OSError as e:
            errors.add(_errno_kind("rtt_connect", e), str(e))
            continue
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(MODE_ECHO)
            if s.recv(1) != MODE_ECHO:
                errors.add("rtt:bad_reply")
                continue
            send, recv, clock = s.send, s.recv, time.perf_counter_ns
            for j in range(warmup + int(p["rtt_per_connection"])):
                t0 = clock()
                send(b"x")
                b = recv(1)
                t1 = clock()
                if b != b"x":
                    errors.add("rtt:bad_reply" if b else "rtt:eof", repr(b))
                    break
                if j >= warmup:
                    rtt.append(t1 - t0)
                if time.monotonic() > deadline:  # outside the timed part
                    truncated = True
                    break
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        except TimeoutError:
            errors.add("rtt:timeout")
        except OSError as e:
            errors.add(_errno_kind("rtt", e), str(e))
        finally:
            s.close()
    return {"probe": "latency", "format_version": PROBE_FORMAT_VERSION, "params": p,
            "elapsed_s": time.monotonic() - t_start, "truncated": truncated,
            "setup_ns": setup, "rtt_ns": rtt, **errors.to_dict()}


# ---------------------------------------------------------------- connrate


def _connrate_worker(host: str, port: int, concurrency: int, start_at: float, omit_s: float,
                     seconds: float) -> dict[str, Any]:
    """One process: keep `concurrency` one-shot connections in flight until the window ends."""
    n_bins = int(round((omit_s + seconds) / BIN_S))
    ok_bins = [0] * n_bins
    err_bins = [0] * n_bins
    errors = _Errors()
    end_at = start_at + omit_s + seconds
    ep = select.epoll()
    # fd -> [socket, stage, started]; stage 0 connecting, 1 waiting for the reply, 2 waiting for EOF
    inflight: dict[int, list[Any]] = {}
    addr = (host, port)

    def bin_of(t: float) -> int | None:
        i = int((t - start_at) / BIN_S)
        return i if 0 <= i < n_bins else None

    def finish(fd: int, ok: bool, kind: str = "", detail: str = "") -> None:
        entry = inflight.pop(fd)
        entry[0].close()
        b = bin_of(time.monotonic())
        if b is None:
            return
        if ok:
            ok_bins[b] += 1
        else:
            err_bins[b] += 1
            errors.add(kind, detail)

    def open_one() -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        rc = s.connect_ex(addr)
        fd = s.fileno()
        inflight[fd] = [s, 0, time.monotonic()]
        if rc in (0, errno.EINPROGRESS):
            ep.register(fd, select.EPOLLOUT)
            return True
        finish(fd, False, f"connect:{errno.errorcode.get(rc, str(rc))}", os.strerror(rc))
        return False

    while time.monotonic() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
    last_sweep = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end_at:
            break
        # An immediate connect failure (e.g. no ephemeral port) waits for the next poll, not a busy loop.
        while len(inflight) < concurrency and open_one():
            pass
        for fd, _ev in ep.poll(0.05):
            entry = inflight.get(fd)
            if entry is None:
                continue
            s, stage = entry[0], entry[1]
            try:
                if stage == 0:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(fd, False, f"connect:{errno.errorcode.get(err, str(err))}", os.strerror(err))
                        continue
                    s.send(MODE_ONESHOT)
                    entry[1] = 1
                    ep.modify(fd, select.EPOLLIN)
                    continue
                data = s.recv(64)
                if stage == 1:
                    if not data:
                        finish(fd, False, "eof_before_reply")
                        continue
                    if data[:1] != MODE_ONESHOT:
                        finish(fd, False, "bad_reply", repr(data[:16]))
                        continue
                    entry[1] = 2
                    data = data[1:]
                    if not data:
                        # EOF usually arrives with or right after the reply: try once without epoll.
                        try:
                            data = s.recv(64)
                        except BlockingIOError:
                            continue
                        if data:
                            finish(fd, False, "bad_reply", "bytes after the reply")
                            continue
                        finish(fd, True)
                        continue
                if data:
                    finish(fd, False, "bad_reply", "bytes after the reply")
                else:
                    finish(fd, True)
            except BlockingIOError:
                continue
            except OSError as e:
                finish(fd, False, _errno_kind("io", e), str(e))
        now = time.monotonic()
        if now - last_sweep > 0.1:
            last_sweep = now
            for fd in [fd for fd, e in inflight.items() if now - e[2] > OP_TIMEOUT_S]:
                finish(fd, False, "timeout", f"no reply within {OP_TIMEOUT_S:.0f} s")
    for entry in list(inflight.values()):
        entry[0].close()  # in flight at the end of the window: not counted either way
    return {"ok_bins": ok_bins, "error_bins": err_bins, **errors.to_dict()}


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def run_connrate(p: dict[str, Any]) -> dict[str, Any]:
    host, port = p["host"], int(p["port"])
    processes, concurrency = int(p["processes"]), int(p["concurrency"])
    omit_s, seconds = float(p["omit_seconds"]), float(p["seconds"])
    start_at = time.monotonic() + START_DELAY_S
    children: list[tuple[int, int]] = []  # (pid, read end of its result pipe)
    for _ in range(processes - 1):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _die_with_parent()
            code = 0
            try:
                res = _connrate_worker(host, port, concurrency, start_at, omit_s, seconds)
                os.write(w, json.dumps(res).encode())  # < pipe capacity: a few KiB
            except BaseException as e:  # the parent reports a worker that failed
                os.write(w, json.dumps({"failed": f"{type(e).__name__}: {e}"}).encode())
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    workers = [_connrate_worker(host, port, concurrency, start_at, omit_s, seconds)]
    for pid, r in children:
        with os.fdopen(r, "rb") as f:
            text = f.read()
        os.waitpid(pid, 0)
        workers.append(json.loads(text) if text else {"failed": "worker exited without a report"})
    return {"probe": "connrate", "format_version": PROBE_FORMAT_VERSION, "params": p, "bin_s": BIN_S,
            "workers": workers}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("latency", "connrate"):
        print("usage: python -m harness.measure.probe_child latency|connrate PARAMS_JSON", file=sys.stderr)
        return 2
    params = json.loads(argv[2])
    out = run_latency(params) if argv[1] == "latency" else run_connrate(params)
    sys.stdout.write(json.dumps(out, separators=(",", ":")))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
