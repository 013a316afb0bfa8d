"""Experiment definitions: YAML -> validated, frozen ExperimentConfig.

An experiment is data. Every key below is accepted, nothing else (a typo is
an error, not a silently ignored setting); every problem is reported at
once, each line naming the file and the key.

    schema_version: 1          # of this file format
    name: headline             # result file is <out>/<name>.jsonl
    kind: headline             # a key of harness.kinds.KINDS (headline | ab | capped | sweep | peers | latency |
                               # connrate | udp | http): its driver, summary, report section, figures and rules
    description: "..."         # optional
    paths: [direct, iptables, reference, standalone, client]
    rounds: 5                  # repeats; every round runs every combination once
    seconds: 30                # iperf3 -t (measured seconds); connrate: the measured window;
                               # latency: the time limit of one measurement (it stops when its samples are in)
    omit_seconds: 5            # iperf3 -O (warm-up, excluded from the throughput); connrate: warm-up window
    backend: cli               # cli | python (iperf3 driver)
    protocol: tcp              # tcp | udp (iperf3 -u: every path forwards UDP and TCP on its port, for iperf3's
                               # control connection; only paths with "udp" in their protocols)
    datagram_bytes: null       # udp: iperf3 -l (datagram payload size); null = iperf3's default;
                               # a list [64, 512, 1400] measures each size at every offered rate
    offered_pps: []            # udp: offered rates in datagrams/s instead of offered_mbps (needs datagram_bytes)
    socket_buffer_bytes: null  # iperf3 -w on both ends (SO_SNDBUF / SO_RCVBUF); null = the kernel's default
    streams: 1                 # iperf3 -P
    offered_mbps: []           # iperf3 -b rates; empty = one uncapped (unpaced) run
    caps_bytes_per_s: []       # caps for the capped paths (client_capped, standalone_capped); others run uncapped
    shuffle_seed: 1            # order within each round is shuffled reproducibly
    base_port: null            # null = kernel-chosen free ports; N = fixed ports N, N+1, ...
    cap_bound_pct: 10          # capped: the spec's acceptance bound (delivered <= cap + 10%)
    cap_goal_pct: 2            # capped: the tighter goal (|delivered - cap| <= 2%)
    pair: [standalone, client] # ab: the two paths compared (A / B); default: the first two paths
    probe:                     # latency / connrate only (harness.define.experiment.ProbeSettings; defaults shown)
      setup_connections: 2000  #   latency: short connections, one connect->first-byte sample each
      rtt_connections: 10      #   latency: long connections for the 1-byte RTT samples
      rtt_per_connection: 1000 #   latency: round trips per long connection
      warmup: 20               #   latency: samples dropped at the start of each series
      processes: 2             #   connrate: client processes
      concurrency: 16          #   connrate: connections in flight per client process
      server_workers: 1        #   echo server processes
    http:                      # http only (harness.define.experiment.HttpSettings; defaults shown)
      modes: [keepalive, close]          # keep-alive connections / `Connection: close` (one per request)
      response_bytes: [1024, 16384, 262144]  # files the web server (nginx) serves, one measurement each
      threads: 2               #   wrk -t
      connections: 32          #   wrk -c (requests in flight)
      timeout_s: 5             #   wrk --timeout
      server_workers: 1        #   nginx worker_processes
    topology: loopback         # loopback (default) | netns | a mapping: where client, forwarder and target
                               # run and the links between them (harness.define.topology documents every key)

Kinds (harness/kinds/, one module each): headline / ab / capped / sweep /
peers / udp measure with iperf3 (peers is the headline run over the
comparable forwarders; udp is a sweep with protocol udp, reporting loss and
jitter, in datagrams/s as well as bits); latency and connrate measure with the harness's own probe
(harness.measure.probe) against an echo server; http measures with wrk against
nginx serving static files (harness.measure.http). A kind's own rules (a sweep
needs offered rates, ...) are its `check`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from harness.define.experiment import (
    CONFIG_SCHEMA_VERSION,
    EXPERIMENT_PROTOCOLS,
    HTTP_LIMITS,
    HTTP_MAX_RESPONSE_BYTES,
    HTTP_MODES,
    IPERF_BACKENDS,
    MAX_PORT,
    PROBE_LIMITS,
    ConfigDraft,
    ExperimentConfig,
    HttpSettings,
    ProbeSettings,
)
from harness.define.topology import parse_topology
from harness.errors import HarnessError
from harness.kinds import KINDS
from harness.paths import PATHS


class ConfigError(HarnessError):
    """An experiment file that does not validate; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


_REQUIRED = ("name", "kind", "paths", "rounds", "seconds", "omit_seconds")
_KEYS = tuple(ExperimentConfig.__dataclass_fields__)
# The model's defaults (define.experiment), for keys a file leaves out.
DEFAULTS = {f.name: f.default for f in fields(ExperimentConfig)}


class _Problems:
    def __init__(self, where: str):
        self.where = where
        self.items: list[str] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append(f"{self.where}: {key}: {msg}")


def _int(p: _Problems, d: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        p.add(key, f"must be an integer, got {v!r}")
        return None
    if v < lo or (hi is not None and v > hi):
        p.add(key, f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
        return None
    return v


def _number(p: _Problems, d: Mapping[str, Any], key: str, lo_exclusive: float) -> float | None:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        p.add(key, f"must be a number, got {v!r}")
        return None
    if v <= lo_exclusive:
        p.add(key, f"must be > {lo_exclusive}, got {v}")
        return None
    return float(v)


def _choice(p: _Problems, d: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    v = d.get(key)
    if v not in choices:
        p.add(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return None
    return str(v)


def _list(p: _Problems, d: Mapping[str, Any], key: str) -> list[Any]:
    v = d.get(key, [])
    if v is None:
        return []
    if not isinstance(v, list):
        p.add(key, f"must be a list, got {v!r}")
        return []
    return v


def parse_config(data: Any, where: str = "<config>") -> ExperimentConfig:
    """Validate a parsed YAML document into an ExperimentConfig (ConfigError lists every problem)."""
    p = _Problems(where)
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: the file must be a YAML mapping of keys, got {type(data).__name__}"])
    for k in sorted(set(data) - set(_KEYS)):
        p.add(k, f"unknown key (known: {', '.join(_KEYS)})")
    for k in _REQUIRED:
        if k not in data:
            p.add(k, "required")
    if p.items:
        raise ConfigError(p.items)

    version = data.get("schema_version", CONFIG_SCHEMA_VERSION)
    if version != CONFIG_SCHEMA_VERSION:
        p.add("schema_version", f"this harness reads version {CONFIG_SCHEMA_VERSION}, got {version!r}")
    name = data["name"]
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        p.add("name", f"must be a non-empty name of letters, digits, '-', '_', '.', got {name!r}")
    kind = _choice(p, data, "kind", tuple(KINDS))
    paths = _list(p, data, "paths")
    for path in paths:
        if path not in PATHS:
            p.add("paths", f"unknown path {path!r} (known: {', '.join(PATHS)})")
    if not paths:
        p.add("paths", "must list at least one path")
    if len(set(paths)) != len(paths):
        p.add("paths", "lists a path twice")
    rounds = _int(p, data, "rounds", 1)
    seconds = _int(p, data, "seconds", 1)
    omit = _int(p, data, "omit_seconds", 0)
    backend = _choice(p, {"backend": data.get("backend", DEFAULTS["backend"])}, "backend", IPERF_BACKENDS)
    # iperf3 -u still runs its control connection over TCP to the same port, so a
    # UDP experiment needs a TCP+UDP rule pair on every path: not built yet.
    protocol = _choice(p, {"protocol": data.get("protocol", DEFAULTS["protocol"])}, "protocol", EXPERIMENT_PROTOCOLS)
    streams = _int(p, {"streams": data.get("streams", DEFAULTS["streams"])}, "streams", 1, 128)
    offered = []
    for v in _list(p, data, "offered_mbps"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            p.add("offered_mbps", f"each rate must be a number > 0 (Mbit/s), got {v!r}")
        else:
            offered.append(float(v))
    caps = []
    for v in _list(p, data, "caps_bytes_per_s"):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            p.add("caps_bytes_per_s", f"each cap must be an integer > 0 (bytes/s), got {v!r}")
        else:
            caps.append(v)
    capped_paths = [x for x in paths if x in PATHS and PATHS[x].capped]
    for path in capped_paths:
        if not caps:
            p.add("caps_bytes_per_s", f"path {path!r} is a capped path: list at least one cap")
    if caps and not capped_paths:
        p.add("caps_bytes_per_s", "caps are set but no capped path is listed "
              f"(capped paths: {', '.join(n for n, c in PATHS.items() if c.capped)})")
    seed = _int(p, {"shuffle_seed": data.get("shuffle_seed", DEFAULTS["shuffle_seed"])}, "shuffle_seed", 0)
    base_port = None
    if data.get("base_port") is not None:
        base_port = _base_port(p, data)
    bound = _number(p, {"cap_bound_pct": data.get("cap_bound_pct", DEFAULTS["cap_bound_pct"])}, "cap_bound_pct", 0.0)
    goal = _number(p, {"cap_goal_pct": data.get("cap_goal_pct", DEFAULTS["cap_goal_pct"])}, "cap_goal_pct", 0.0)
    pair = None
    if data.get("pair") is not None:
        raw_pair = _list(p, data, "pair")
        if len(raw_pair) != 2 or any(x not in paths for x in raw_pair):
            p.add("pair", f"must name two of the listed paths, got {raw_pair!r}")
        else:
            pair = (str(raw_pair[0]), str(raw_pair[1]))
    description = data.get("description", "")
    if not isinstance(description, str):
        p.add("description", "must be a string")
    datagram_bytes = _datagram_bytes(p, data.get("datagram_bytes"))
    if datagram_bytes is not None and protocol != "udp":
        p.add("datagram_bytes", "only for protocol: udp")
    offered_pps = []
    for v in _list(p, data, "offered_pps"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            p.add("offered_pps", f"each rate must be a number > 0 (datagrams/s), got {v!r}")
        else:
            offered_pps.append(float(v))
    if offered_pps:
        if protocol != "udp":
            p.add("offered_pps", "only for protocol: udp (datagrams per second)")
        elif datagram_bytes is None:
            p.add("offered_pps", "needs datagram_bytes: a rate in datagrams/s is offered at a known size")
        if offered:
            p.add("offered_pps", "give the rates either in Mbit/s (offered_mbps) or in datagrams/s, not both")
    socket_buffer_bytes = None
    if data.get("socket_buffer_bytes") is not None:
        socket_buffer_bytes = _int(p, data, "socket_buffer_bytes", 4096, 1 << 30)
        if backend == "python":
            p.add("socket_buffer_bytes", "iperf3 -w needs backend: cli (the python wrapper does not set it)")
    if protocol == "udp":
        for path in paths:
            if path in PATHS and "udp" not in PATHS[path].protocols:
                p.add("paths", f"path {path!r} does not forward UDP (UDP paths: "
                      f"{', '.join(n for n, c in PATHS.items() if 'udp' in c.protocols)})")
    if kind is not None:  # the kind's own rules (harness.kinds)
        KINDS[kind].check(ConfigDraft(kind, tuple(paths), pair, tuple(offered), tuple(caps), protocol,
                                      tuple(offered_pps), omit), p.add)
    probe = _probe(p, data.get("probe"))
    if data.get("probe") is not None and (kind is None or not KINDS[kind].uses_probe):
        p.add("probe", f"only for the kinds {', '.join(n for n, k in KINDS.items() if k.uses_probe)}")
    http = _http(p, data.get("http"))
    if data.get("http") is not None and (kind is None or not KINDS[kind].uses_http):
        p.add("http", f"only for the kinds {', '.join(n for n, k in KINDS.items() if k.uses_http)}")
    topology = parse_topology(data.get("topology"), p.add)
    if backend == "python" and any(h.executor == "ssh" for _, h in topology.hosts):
        p.add("backend", "the python iperf3 backend runs on this machine only; a topology with ssh hosts "
              "needs backend: cli")
    if p.items:
        raise ConfigError(p.items)
    assert kind and rounds and seconds and omit is not None and backend and protocol and streams
    assert seed is not None and bound is not None and goal is not None
    return ExperimentConfig(
        name=name, kind=kind, paths=tuple(paths), rounds=rounds, seconds=seconds, omit_seconds=omit,
        backend=backend, protocol=protocol, streams=streams, offered_mbps=tuple(offered),
        caps_bytes_per_s=tuple(caps), shuffle_seed=seed, base_port=base_port, cap_bound_pct=bound,
        cap_goal_pct=goal, pair=pair, description=description, datagram_bytes=datagram_bytes,
        probe=probe if KINDS[kind].uses_probe else None,
        topology=topology, offered_pps=tuple(offered_pps), socket_buffer_bytes=socket_buffer_bytes,
        http=http if KINDS[kind].uses_http else None,
    )


def _datagram_bytes(p: _Problems, raw: Any) -> int | tuple[int, ...] | None:
    """`datagram_bytes`: one size, or a list of sizes (each measured); None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        return _int(p, {"datagram_bytes": raw}, "datagram_bytes", 16, 65507)
    sizes = [_int(p, {"datagram_bytes": v}, "datagram_bytes", 16, 65507) for v in raw]
    if not raw:
        p.add("datagram_bytes", "an empty list: give one size or several")
    if len(set(raw)) != len(raw):
        p.add("datagram_bytes", "lists a size twice")
    return tuple(v for v in sizes if v is not None) or None


def _http(p: _Problems, raw: Any) -> HttpSettings:
    """The optional `http:` mapping -> HttpSettings (unknown keys and bad values reported)."""
    if raw is None:
        return HttpSettings()
    known = tuple(HttpSettings.__dataclass_fields__)
    if not isinstance(raw, dict):
        p.add("http", f"must be a mapping of {', '.join(known)}, got {raw!r}")
        return HttpSettings()
    for k in sorted(set(raw) - set(known)):
        p.add(f"http.{k}", f"unknown key (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    if "modes" in raw:
        modes = raw["modes"]
        if not isinstance(modes, list) or not modes or any(m not in HTTP_MODES for m in modes) \
                or len(set(modes)) != len(modes):
            p.add("http.modes", f"must be a list of distinct modes from {', '.join(HTTP_MODES)}, got {modes!r}")
        else:
            values["modes"] = tuple(modes)
    if "response_bytes" in raw:
        sizes = raw["response_bytes"]
        if not isinstance(sizes, list) or not sizes or len(set(map(repr, sizes))) != len(sizes) or any(
                isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= HTTP_MAX_RESPONSE_BYTES
                for v in sizes):
            p.add("http.response_bytes", f"must be a list of distinct sizes in [1, {HTTP_MAX_RESPONSE_BYTES}] "
                  f"bytes, got {sizes!r}")
        else:
            values["response_bytes"] = tuple(sizes)
    for k, (lo, hi) in HTTP_LIMITS.items():
        if k in raw:
            v = _int(p, {f"http.{k}": raw[k]}, f"http.{k}", lo, hi)
            if v is not None:
                values[k] = v
    settings = HttpSettings(**values)
    if settings.connections < settings.threads:
        p.add("http.connections", f"wrk needs at least one connection per thread ({settings.threads} threads), "
              f"got {settings.connections}")
    return settings


def _probe(p: _Problems, raw: Any) -> ProbeSettings:
    """The optional `probe:` mapping -> ProbeSettings (unknown keys and bad values reported)."""
    if raw is None:
        return ProbeSettings()
    if not isinstance(raw, dict):
        p.add("probe", f"must be a mapping of {', '.join(PROBE_LIMITS)}, got {raw!r}")
        return ProbeSettings()
    for k in sorted(set(raw) - set(PROBE_LIMITS)):
        p.add(f"probe.{k}", f"unknown key (known: {', '.join(PROBE_LIMITS)})")
    values = {}
    for k, (lo, hi) in PROBE_LIMITS.items():
        if k in raw:
            v = _int(p, {f"probe.{k}": raw[k]}, f"probe.{k}", lo, hi)
            if v is not None:
                values[k] = v
    return ProbeSettings(**values)


def _base_port(p: _Problems, data: Mapping[str, Any]) -> int | None:
    # 16 ports above it stay below 65536: the most one measurement allocates.
    return _int(p, data, "base_port", 1024, MAX_PORT - 16)


def with_base_port(cfg: ExperimentConfig, base_port: int, where: str) -> ExperimentConfig:
    """cfg with another base_port (run --base-port); ConfigError if the port is out of range."""
    p = _Problems(where)
    port = _base_port(p, {"base_port": base_port})
    if p.items:
        raise ConfigError(p.items)
    return replace(cfg, base_port=port)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {e}"]) from None
    return parse_config(data, str(path))
