"""HAProxy in TCP mode (`haproxy -db -f <workdir>/haproxy.cfg`), three variants.

- `haproxy`: defaults (tune.bufsize 16 KiB, threads = CPUs), what users get.
- `haproxy_bigbuf`: `tune.bufsize 262144`, buffers comparable to Portunus's copy path.
- `haproxy_splice`: `option splice-request` + `option splice-response`. HAProxy
  falls back to copying silently when it cannot splice (`option splice-auto`
  never spliced on loopback here), so this path checks that it really did:
  a sampler thread counts the pipe fds in /proc/PID/fd while traffic flows,
  and path_info records `splice_pipes_max` and `spliced` (pipes seen or not).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

from harness.paths._peer import BIGBUF_BYTES, PeerPath
from harness.paths._proc_path import READY_TIMEOUT_S
from harness.paths.base import PathSetup
from harness.site.executor.base import Proc
from harness.site.executor.local import LocalExecutor
from harness.site.netutil import LOOPBACK

HAPROXY_DEFAULT_BUFSIZE_BYTES = 16384  # haproxy 2.6 configuration.txt: tune.bufsize
# Timeouts only bound idle connections; an iperf3 run is never idle that long.
TIMEOUT_CONNECT = "5s"
TIMEOUT_IDLE = "1m"
# How often the splice check looks at /proc/PID/fd: pipes live as long as a
# spliced connection (seconds), so a few samples per second see them.
PIPE_SAMPLE_INTERVAL_S = 0.2


def render_haproxy_cfg(listen_port: int, target_port: int, *, bufsize_bytes: int | None = None,
                       splice: bool = False, listen_host: str = LOOPBACK, target_host: str = LOOPBACK) -> str:
    """haproxy.cfg for one TCP forward listen_host:listen_port -> target_host:target_port."""
    glob = ["global", "    log stderr format short local0 warning"]
    if bufsize_bytes is not None:
        glob.append(f"    tune.bufsize {bufsize_bytes}")
    defaults = ["defaults", "    mode tcp", "    log global", f"    timeout connect {TIMEOUT_CONNECT}",
                f"    timeout client {TIMEOUT_IDLE}", f"    timeout server {TIMEOUT_IDLE}"]
    if splice:
        defaults += ["    option splice-request", "    option splice-response"]
    return "\n".join([
        *glob, "",
        *defaults, "",
        "frontend bench",
        f"    bind {listen_host}:{listen_port}",
        "    default_backend target", "",
        "backend target",
        f"    server t1 {target_host}:{target_port}", "",
    ])


def count_pipe_fds(pid: int) -> int:
    """How many pipes process pid holds open (both ends counted), from /proc/PID/fd."""
    n = 0
    try:
        entries = os.scandir(f"/proc/{pid}/fd")
    except (FileNotFoundError, PermissionError):
        return 0
    with entries:
        for e in entries:
            try:
                if os.readlink(e.path).startswith("pipe:"):
                    n += 1
            except OSError:
                continue
    return n


class PipeSampler:
    """Samples count_pipe_fds(pid) in a thread until stopped; keeps the baseline and the maximum."""

    def __init__(self, pid: int, interval_s: float = PIPE_SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.baseline = count_pipe_fds(pid)  # before any traffic (stdio is not a pipe: it is a log file)
        self.max_pipes = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"pipes-{pid}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Take one sample now (also called by describe(): a short exchange can fall between ticks)."""
        self.max_pipes = max(self.max_pipes, count_pipe_fds(self.pid))
        self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    @property
    def spliced(self) -> bool:
        return self.max_pipes > self.baseline


class HaproxyPath(PeerPath):
    name = "haproxy"
    description = "HAProxy TCP mode, defaults (16 KiB tune.bufsize, copy through buffers)"
    tool = "haproxy"
    package = "haproxy"
    version_args = ("-v",)
    bufsize_bytes: ClassVar[int | None] = None
    splice: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._sampler: PipeSampler | None = None

    def launch(self, setup: PathSetup, listen_port: int) -> Proc:
        assert self._binary is not None
        cfg: Path = setup.workdir / "haproxy.cfg"
        self._edge.write_text(cfg, render_haproxy_cfg(listen_port, setup.target_port, bufsize_bytes=self.bufsize_bytes,
                                                      splice=self.splice, listen_host=setup.site.listen_host,
                                                      target_host=setup.site.target_host))
        # -db: stay in the foreground, one process (threads = CPUs); stopped by PID with SIGTERM.
        proc = self.spawn([self._binary, "-db", "-f", str(cfg)])
        self._info = {"config": str(cfg), "bufsize_bytes": self.bufsize_bytes or HAPROXY_DEFAULT_BUFSIZE_BYTES,
                      "splice_options": self.splice}
        return proc

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        super().ready(timeout_s)
        # Every variant: the default one must show no pipes. /proc of this machine only (a
        # namespace shares it); on a remote edge splicing is not checked and says so.
        if self._listener is not None and isinstance(self._edge, LocalExecutor):
            self._sampler = PipeSampler(self._listener.pid)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        super().stop()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self._sampler is not None:
            # Read after the traffic: the runner calls describe() again once the client is done.
            # HAProxy keeps used pipes in a pool, so they are still open then.
            self._sampler.sample()
            info.update(splice_pipes_max=self._sampler.max_pipes - self._sampler.baseline,
                        splice_pipe_samples=self._sampler.samples, spliced=self._sampler.spliced)
        elif self._listener is not None:
            info.update(spliced=None, splice_check=f"not checked on {self._edge.name} (needs its /proc)")
        return info


class HaproxyBigbufPath(HaproxyPath):
    name = "haproxy_bigbuf"
    description = f"HAProxy TCP mode, tune.bufsize {BIGBUF_BYTES} (buffers comparable to Portunus's copy path)"
    bufsize_bytes = BIGBUF_BYTES


class HaproxySplicePath(HaproxyPath):
    name = "haproxy_splice"
    description = "HAProxy TCP mode, option splice-request + splice-response (checked: pipe fds seen in use)"
    splice = True
