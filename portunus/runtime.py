"""Runtime pieces shared by the standalone, client and server processes:
logging setup, the metrics/stats HTTP endpoint, signal handling and the GC's
treatment of startup objects."""

from __future__ import annotations

import gc
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.registry import CollectorRegistry

from portunus.bounds import show
from portunus.metrics_http import MetricsServer, open_listener

RUNTIME_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", fmt: str = "pretty", label: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{label} " if label else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def parse_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" -> (host, port); ValueError naming `what`."""
    host, sep, port = text.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:9464), got {show(text)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def serve_metrics(addr: str, registry: CollectorRegistry, stats: Callable[[], dict[str, Any]]) -> MetricsServer:
    """Serve /metrics (Prometheus), /stats (JSON) and /healthz on `addr` in a daemon thread (OSError if it cannot bind)."""
    host, port = parse_host_port(addr, "--metrics-addr")
    return MetricsServer(open_listener(host, port), registry, stats)


def stop_data_plane(fwd: Any, drain_s: float, keeper: Any, metrics: MetricsServer | None) -> None:
    """The end of a forwarder process (standalone or client): stop accepting and drain open
    connections for up to `drain_s`, count and save the drain's bytes against traffic quotas
    (`keeper`: portunus.quota.QuotaKeeper), then stop /metrics."""
    fwd.close(drain_s)
    if keeper.specs:
        keeper.tick()
    if metrics is not None:
        metrics.shutdown()


def freeze_startup_objects() -> None:
    """Take everything alive at the end of startup (modules, classes, grpc and asyncio machinery,
    loaded state) out of the cyclic GC's generations, after one collection so no garbage is kept.

    A full (generation 2) collection scans every tracked object and stops every thread of the
    process while it does: the data plane and the control stream alike. Most of those objects
    are the imports, which live as long as the process; frozen, they are neither scanned nor
    counted towards the next full collection. Measured by `benchmarks/fleet` (1,000 pushes to
    one client, results/fleet/README.md): the slow pushes from full collections near push 950
    are gone. Objects frozen here are still freed by reference counting when dropped."""
    gc.collect()
    gc.freeze()


def block_runtime_signals() -> None:
    """Block SIGHUP/SIGINT/SIGTERM in this thread and every thread it starts later;
    the main loop then takes them synchronously with `wait_signal`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, RUNTIME_SIGNALS)


def wait_signal(timeout_s: float | None = None) -> int | None:
    """The next runtime signal; None if `timeout_s` passed first."""
    if timeout_s is None:
        return signal.sigwait(RUNTIME_SIGNALS)
    info = signal.sigtimedwait(RUNTIME_SIGNALS, timeout_s)
    return None if info is None else info.si_signo
