"""The experiment model: ExperimentConfig and its probe settings (pure: no I/O, no path or kind registry).

Every default of an experiment lives here, once. `define.load` validates
YAML into this model; result headers load back into it
(`ExperimentConfig.from_dict`), so the report reads the same typed values
the run used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from harness.define.topology import LOOPBACK_SPEC, TopologySpec, parse_topology

# Format history of experiment YAML files:
#   1  first version (keys listed in define.load's docstring). Later additions are
#      optional keys whose absence reads as before: datagram_bytes, probe, topology,
#      and the kinds peers / latency / connrate / udp, protocol udp; then the kind
#      http with its `http:` settings, `offered_pps`, `socket_buffer_bytes`, and a
#      list of sizes in `datagram_bytes`.
CONFIG_SCHEMA_VERSION = 1

EXPERIMENT_PROTOCOLS = ("tcp", "udp")
# Cap accuracy (capped kind): the spec's acceptance bound (delivered <= cap + 10%) and the
# tighter goal (|delivered - cap| <= 2%); an experiment file may set others.
DEFAULT_CAP_BOUND_PCT = 10.0
DEFAULT_CAP_GOAL_PCT = 2.0
# iperf3 drivers (harness.measure.iperf): the iperf3 CLI with -J, or the PyPI wrapper in a child process.
IPERF_BACKENDS = ("cli", "python")
MAX_PORT = 65535


@dataclass(frozen=True)
class ProbeSettings:
    """The `probe:` mapping of an experiment file (latency and connrate kinds)."""

    setup_connections: int = 2000  # latency: short connections, one setup-time sample each
    rtt_connections: int = 10  # latency: long connections carrying the RTT samples
    rtt_per_connection: int = 1000  # latency: 1-byte round trips per long connection
    warmup: int = 20  # latency: samples dropped at the start of each series
    processes: int = 2  # connrate: client processes (this host has 2 cores)
    concurrency: int = 16  # connrate: connections in flight per client process
    server_workers: int = 1  # echo server processes sharing the listening socket

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# HTTP modes (kind http): one request per keep-alive connection's turn, or `Connection: close` (one
# connection per request).
HTTP_MODES = ("keepalive", "close")


@dataclass(frozen=True)
class HttpSettings:
    """The `http:` mapping of an experiment file (kind http): what wrk asks of the web server."""

    modes: tuple[str, ...] = HTTP_MODES  # each measured separately
    response_bytes: tuple[int, ...] = (1024, 16384, 262144)  # file sizes the web server serves
    threads: int = 2  # wrk -t
    connections: int = 32  # wrk -c: requests in flight (one per connection)
    timeout_s: int = 5  # wrk --timeout: a request without a response by then counts as a timeout error
    server_workers: int = 1  # nginx worker_processes of the web server

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modes"], d["response_bytes"] = list(self.modes), list(self.response_bytes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HttpSettings:
        v = dict(d)
        for k in ("modes", "response_bytes"):
            if k in v:
                v[k] = tuple(v[k])
        return cls(**v)


# Bounds the config loader enforces (lo, hi) for the integer HttpSettings keys, and the largest file.
HTTP_LIMITS: dict[str, tuple[int, int]] = {
    "threads": (1, 64), "connections": (1, 10_000), "timeout_s": (1, 600), "server_workers": (1, 64),
}
HTTP_MAX_RESPONSE_BYTES = 64 << 20

# Bounds the config loader enforces (lo, hi) for each ProbeSettings key.
PROBE_LIMITS: dict[str, tuple[int, int]] = {
    "setup_connections": (1, 1_000_000), "rtt_connections": (1, 10_000), "rtt_per_connection": (1, 1_000_000),
    "warmup": (0, 100_000), "processes": (1, 64), "concurrency": (1, 4096), "server_workers": (1, 64),
}


@dataclass(frozen=True)
class ConfigDraft:
    """What a kind's own config rules see (harness.kinds.base.Kind.check): the values validated so far.

    A value that failed its own check reads as empty (or None), so a kind rule
    never repeats a problem already reported for that key.
    """

    kind: str
    paths: tuple[str, ...]
    pair: tuple[str, str] | None
    offered_mbps: tuple[float, ...]
    caps_bytes_per_s: tuple[int, ...]
    protocol: str | None
    offered_pps: tuple[float, ...] = ()
    omit_seconds: int | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment definition."""

    name: str
    kind: str
    paths: tuple[str, ...]
    rounds: int
    seconds: int
    omit_seconds: int
    backend: str = "cli"
    protocol: str = "tcp"
    streams: int = 1
    offered_mbps: tuple[float, ...] = ()
    caps_bytes_per_s: tuple[int, ...] = ()
    shuffle_seed: int = 1
    base_port: int | None = None
    cap_bound_pct: float = DEFAULT_CAP_BOUND_PCT
    cap_goal_pct: float = DEFAULT_CAP_GOAL_PCT
    pair: tuple[str, str] | None = None
    description: str = ""
    datagram_bytes: int | tuple[int, ...] | None = None  # udp: iperf3 -l; a tuple = each size measured
    probe: ProbeSettings | None = None  # set for the kinds that measure with the probe (latency, connrate)
    topology: TopologySpec = LOOPBACK_SPEC
    schema_version: int = CONFIG_SCHEMA_VERSION
    offered_pps: tuple[float, ...] = ()  # udp: offered datagrams/s (iperf3 -b = rate x size x 8)
    socket_buffer_bytes: int | None = None  # iperf3 -w on both ends; None = iperf3's (the kernel's) default
    http: HttpSettings | None = None  # set for the http kind

    @property
    def datagram_sizes(self) -> tuple[int | None, ...]:
        """The datagram payload sizes measured (None = iperf3's default)."""
        if isinstance(self.datagram_bytes, tuple):
            return self.datagram_bytes
        return (self.datagram_bytes,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # probe becomes a plain mapping, as in the YAML
        d["topology"] = self.topology.to_dict()
        for k in ("paths", "offered_mbps", "caps_bytes_per_s", "pair"):
            if d[k] is not None:
                d[k] = list(d[k])
        # Keys added after the first version appear only where they mean something, so a
        # config without them round-trips to the same mapping as before (resume compares them).
        if self.datagram_bytes is None:
            del d["datagram_bytes"]
        elif isinstance(self.datagram_bytes, tuple):
            d["datagram_bytes"] = list(self.datagram_bytes)
        if self.probe is None:
            del d["probe"]
        for k in ("offered_pps", "socket_buffer_bytes", "http"):
            if not d[k]:
                del d[k]
        if d.get("offered_pps"):
            d["offered_pps"] = list(self.offered_pps)
        if self.http is not None:
            d["http"] = self.http.to_dict()
        if d["topology"] == "loopback" and self.topology.raw is None:
            del d["topology"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ExperimentConfig:
        """A config as a result header stored it (to_dict) -> ExperimentConfig; ValueError if malformed.

        Structure only: the paths and kinds are not checked against this harness's registries,
        so a file that names a path or kind since renamed still loads (and reports).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"config must be an object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        missing = [k for k in ("name", "kind", "paths", "rounds", "seconds", "omit_seconds") if k not in d]
        if unknown or missing:
            raise ValueError(f"config: unknown key(s) {unknown}, missing key(s) {missing}")
        v = dict(d)
        for k in ("paths", "offered_mbps", "caps_bytes_per_s"):
            v[k] = tuple(v.get(k) or ())
        if v.get("pair") is not None:
            v["pair"] = tuple(v["pair"])
        if v.get("probe") is not None:
            v["probe"] = ProbeSettings(**v["probe"])
        if isinstance(v.get("datagram_bytes"), list):
            v["datagram_bytes"] = tuple(v["datagram_bytes"])
        v["offered_pps"] = tuple(v.get("offered_pps") or ())
        if v.get("http") is not None:
            v["http"] = HttpSettings.from_dict(v["http"])
        problems: list[str] = []
        v["topology"] = parse_topology(v.get("topology"), lambda key, msg: problems.append(f"{key}: {msg}"))
        if problems:
            raise ValueError("config: " + "; ".join(problems))
        return cls(**v)

    @property
    def ab_pair(self) -> tuple[str, str]:
        """The (A, B) paths an ab experiment compares."""
        return self.pair if self.pair is not None else (self.paths[0], self.paths[1])
