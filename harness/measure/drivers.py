"""Measurement drivers: what runs through a path once it is up, named by the experiment's kind.

A driver owns the target the path forwards to (started on setup.target_port
before the client), the client that measures, and how the client's raw
report becomes record fields. The runner does the rest the same way for
every driver: path up, target, forwarder CPU around the client, path down,
one Record. The target runs on the topology's target executor, bound to the
target address; the client on the client executor (harness.site.topology).

    iperf3    iperf3 server + client (TCP or UDP; UDP in datagrams/s too, with the forwarder's socket drops)
    latency   echo server + the latency probe (setup time, 1-byte RTT)
    connrate  echo server + the connection-rate probe (several processes)
    wrk       nginx serving static files + wrk (HTTP requests/s, latency percentiles, errors)
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from harness.define.experiment import ExperimentConfig, HttpSettings, ProbeSettings
from harness.define.plan import Measurement
from harness.errors import IperfError, ProbeError
from harness.kinds import kind_of
from harness.measure.http import NGINX, WRK, WrkParams, open_web_server, run_wrk
from harness.measure.iperf import IperfParams, open_iperf_server, run_client
from harness.measure.probe import (
    CHILD_TIMEOUT_MARGIN_S,
    connrate_params,
    latency_params,
    open_echo_server,
    run_probe,
)
from harness.paths.base import Endpoint
from harness.records.iperf_json import parse_iperf_json
from harness.records.probe_json import parse_connrate_json, parse_latency_json
from harness.records.results import BYTES_PER_GB
from harness.records.wrk_report import WrkError, WrkRun, parse_wrk_raw
from harness.site.executor.base import Executor
from harness.site.netutil import parse_proc_net_udp_drops


class Driver(abc.ABC):
    """The target + client pair of one measurement."""

    name: ClassVar[str]
    raw_field: ClassVar[str]  # the Record field that keeps the client's report verbatim
    tools: ClassVar[tuple[tuple[str, str], ...]] = ()  # (executable, Debian package) preflight checks

    @abc.abstractmethod
    def open_target(self, ex: Executor, host: str, port: int, workdir: Path,
                    cfg: ExperimentConfig) -> AbstractContextManager[Any]:
        """The server the path forwards to, on executor ex, listening on host:port when entered."""

    @abc.abstractmethod
    def run_client(self, ex: Executor, endpoint: Endpoint, cfg: ExperimentConfig, m: Measurement,
                   workdir: Path) -> str:
        """Measure through endpoint from executor ex (scratch files in workdir there); returns the
        client's report as text (raises on failure)."""

    @abc.abstractmethod
    def record_fields(self, raw: str, forwarder_cpu_s: float | None, m: Measurement | None = None,
                      edge_counters: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Record fields from the report (raises IperfError / ProbeError / WrkError on an error report).

        edge_counters: what edge_counters() counted on the forwarder's host during the client's run.
        """

    def edge_counters(self, ex: Executor, endpoint: Endpoint, pids: Sequence[int],
                      cfg: ExperimentConfig) -> dict[str, int]:
        """Counters of the forwarder's host read before and after the client (the runner keeps the difference)."""
        return {}


class IperfDriver(Driver):
    name = "iperf3"
    raw_field = "iperf_raw"

    def open_target(self, ex: Executor, host: str, port: int, workdir: Path,
                    cfg: ExperimentConfig) -> AbstractContextManager[Any]:
        return open_iperf_server(port, workdir / "iperf3-server.log", host=host, ex=ex)

    def run_client(self, ex: Executor, endpoint: Endpoint, cfg: ExperimentConfig, m: Measurement,
                   workdir: Path) -> str:
        size = m.datagram_bytes if m.datagram_bytes is not None else cfg.datagram_sizes[0]
        params = IperfParams(endpoint.host, endpoint.port, cfg.seconds, cfg.omit_seconds, cfg.protocol,
                             m.offered_mbps, cfg.streams, size if cfg.protocol == "udp" else None,
                             cfg.socket_buffer_bytes)
        return run_client(params, cfg.backend, ex)

    def edge_counters(self, ex: Executor, endpoint: Endpoint, pids: Sequence[int],
                      cfg: ExperimentConfig) -> dict[str, int]:
        """UDP: datagrams dropped at the forwarder's sockets on the listening port, read through the
        forwarder's own /proc/PID/net (its network namespace). Kernel paths and direct have no such socket."""
        if cfg.protocol != "udp" or not pids:
            return {}
        tables = [ex.read_text(Path(f"/proc/{pids[0]}/net/{t}")) for t in ("udp", "udp6")]
        if not any(tables):
            return {}
        return {"socket_drops": sum(parse_proc_net_udp_drops(t, endpoint.port) for t in tables)}

    def record_fields(self, raw: str, forwarder_cpu_s: float | None, m: Measurement | None = None,
                      edge_counters: Mapping[str, int] | None = None) -> dict[str, Any]:
        r = parse_iperf_json(raw)
        if r.lost_pct is not None and not 0.0 <= r.lost_pct <= 100.0:
            # Seen through rinetd's UDP relay: iperf3's server counts every datagram out of order
            # and its loss counters wrap. Not a measurement; say so instead of recording garbage.
            raise IperfError(f"iperf3's UDP receiver counters are invalid (loss {r.lost_pct:g}%): the path "
                             "delivered datagrams iperf3 could not sequence (see iperf3-server.log)")
        per_gb = (forwarder_cpu_s / (r.total_bytes / BYTES_PER_GB)
                  if forwarder_cpu_s is not None and r.total_bytes > 0 else None)
        return dict(throughput_mbps=r.throughput_mbps, sender_mbps=r.sender_mbps, receiver_mbps=r.receiver_mbps,
                    retransmits=r.retransmits, sender_bytes=r.sender_bytes, receiver_bytes=r.receiver_bytes,
                    total_bytes=r.total_bytes, iperf_host_cpu_pct=r.host_cpu_pct,
                    iperf_remote_cpu_pct=r.remote_cpu_pct, cpu_s_per_gb=per_gb, lost_pct=r.lost_pct,
                    jitter_ms=r.jitter_ms, datagrams_sent=r.datagrams_sent, datagrams_delivered=r.datagrams_delivered,
                    delivered_pps=r.delivered_pps, socket_drops=(edge_counters or {}).get("socket_drops"))


def _probe(cfg: ExperimentConfig) -> ProbeSettings:
    """The config's probe settings (the defaults for a config built in code without any)."""
    return cfg.probe if cfg.probe is not None else ProbeSettings()


class _ProbeDriver(Driver):
    raw_field = "probe_raw"

    def open_target(self, ex: Executor, host: str, port: int, workdir: Path,
                    cfg: ExperimentConfig) -> AbstractContextManager[Any]:
        return open_echo_server(port, workdir / "echo-server.log", workers=_probe(cfg).server_workers, host=host,
                                ex=ex)


class LatencyDriver(_ProbeDriver):
    name = "latency"

    def run_client(self, ex: Executor, endpoint: Endpoint, cfg: ExperimentConfig, m: Measurement,
                   workdir: Path) -> str:
        params = latency_params(endpoint.host, endpoint.port, _probe(cfg), time_limit_s=float(cfg.seconds))
        return run_probe("latency", params, cfg.seconds + CHILD_TIMEOUT_MARGIN_S, ex)

    def record_fields(self, raw: str, forwarder_cpu_s: float | None, m: Measurement | None = None,
                      edge_counters: Mapping[str, int] | None = None) -> dict[str, Any]:
        r = parse_latency_json(raw)
        return dict(setup_p50_us=r.setup.p50_us, setup_p90_us=r.setup.p90_us, setup_p99_us=r.setup.p99_us,
                    setup_samples=r.setup.n, rtt_p50_us=r.rtt.p50_us, rtt_p90_us=r.rtt.p90_us,
                    rtt_p99_us=r.rtt.p99_us, rtt_samples=r.rtt.n, conn_errors=r.n_errors)


class ConnrateDriver(_ProbeDriver):
    name = "connrate"

    def run_client(self, ex: Executor, endpoint: Endpoint, cfg: ExperimentConfig, m: Measurement,
                   workdir: Path) -> str:
        params = connrate_params(endpoint.host, endpoint.port, _probe(cfg), cfg.seconds, cfg.omit_seconds)
        return run_probe("connrate", params, cfg.seconds + cfg.omit_seconds + CHILD_TIMEOUT_MARGIN_S, ex)

    def record_fields(self, raw: str, forwarder_cpu_s: float | None, m: Measurement | None = None,
                      edge_counters: Mapping[str, int] | None = None) -> dict[str, Any]:
        r = parse_connrate_json(raw)
        if r.conns_ok == 0:
            # A rate of zero is not a measured rate of a working path: fail, with the errors seen.
            raise ProbeError(f"no connection completed in the measured window ({r.conn_errors} failed: "
                             f"{'; '.join(r.error_examples) or 'no error recorded'})")
        return dict(conn_per_s=r.conn_per_s, conns_ok=r.conns_ok, conn_errors=r.conn_errors)


def _http(cfg: ExperimentConfig) -> HttpSettings:
    """The config's http settings (the defaults for a config built in code without any)."""
    return cfg.http if cfg.http is not None else HttpSettings()


# More responses with a status >= 400 than this share fail the measurement (nginx answers every request
# for the file with 200; a stray error is reported, not fatal).
MAX_STATUS_ERROR_SHARE = 0.001


class WrkDriver(Driver):
    name = "wrk"
    raw_field = "wrk_raw"
    tools = ((WRK, "wrk"), (NGINX, "nginx"))

    def open_target(self, ex: Executor, host: str, port: int, workdir: Path,
                    cfg: ExperimentConfig) -> AbstractContextManager[Any]:
        return open_web_server(ex, host, port, workdir, _http(cfg), workdir / "web-server.log")

    def run_client(self, ex: Executor, endpoint: Endpoint, cfg: ExperimentConfig, m: Measurement,
                   workdir: Path) -> str:
        s = _http(cfg)
        mode = m.http_mode or s.modes[0]
        size = m.response_bytes if m.response_bytes is not None else s.response_bytes[0]
        params = WrkParams(endpoint.host, endpoint.port, cfg.seconds, mode, size, s.threads, s.connections,
                           s.timeout_s)
        return run_wrk(params, workdir, ex)

    def record_fields(self, raw: str, forwarder_cpu_s: float | None, m: Measurement | None = None,
                      edge_counters: Mapping[str, int] | None = None) -> dict[str, Any]:
        r = parse_wrk_raw(raw)
        ok = r.requests - r.errors["status"]
        if ok <= 0:
            # No successful response is not a rate of a working path: fail, with what wrk saw.
            raise WrkError(f"no successful HTTP response ({r.requests} response(s), errors: "
                           f"{', '.join(f'{k} {v}' for k, v in r.errors.items() if v) or 'none'}; "
                           f"wrk: {WrkRun.from_json(raw).stderr.strip()[-200:] or 'no stderr'})")
        if r.errors["status"] > MAX_STATUS_ERROR_SHARE * r.requests:
            # Error pages are small and cheap: counted as requests they would inflate the rate, and the file
            # is there for the whole run, so they measure something other than the path. Seen on the shared
            # host (direct, keep-alive: 24% of the responses in one run), not reproduced on its own.
            raise WrkError(f"{r.errors['status']:,} of {r.requests:,} responses had a status >= 400 "
                           f"({100 * r.errors['status'] / r.requests:.1f}%): not the file asked for; wrk's "
                           "output is kept in wrk_raw")
        if m is not None and m.response_bytes is not None and (r.bytes_per_request or 0) < m.response_bytes:
            # Fewer bytes per response than the file: the server did not serve it (an error page).
            raise WrkError(f"responses average {r.bytes_per_request:.0f} bytes, less than the "
                           f"{m.response_bytes}-byte file requested: not the file (see web-error.log)")
        lat = r.latency_us
        return dict(requests=r.requests, requests_per_s=r.requests_per_s, latency_p50_us=lat.get("p50"),
                    latency_p90_us=lat.get("p90"), latency_p99_us=lat.get("p99"),
                    latency_p999_us=lat.get("p99.9"), http_errors=dict(r.errors))


# Driver name (a kind's `driver`, harness.kinds) -> driver.
DRIVERS: dict[str, type[Driver]] = {"iperf3": IperfDriver, "latency": LatencyDriver, "connrate": ConnrateDriver,
                                    "wrk": WrkDriver}


def driver_for(kind: str) -> Driver:
    """The driver an experiment kind measures with (the one its declaration names)."""
    return DRIVERS[kind_of(kind).driver]()
