"""A result file's header as typed values: the experiment config, the host, the topology (pure).

Headers are written once per file from the run's own objects and load back
into the same types, so analysis reads `header.config.cap_bound_pct` with the
default defined once (harness.define.experiment), never `config.get(key, 10.0)`.
Keys a newer harness of the same schema added are kept (`extra`), not dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from harness.define.experiment import ExperimentConfig
from harness.records.schema import FORMAT_NAME, LOOPBACK_TOPOLOGY, SCHEMA_VERSION


def _split(cls: type, d: Mapping[str, Any], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(known fields, the rest) of a mapping for dataclass cls."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be an object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


@dataclass(frozen=True)
class SysInfo:
    """Host metadata recorded once per file (harness.measure.sysinfo.collect_sysinfo); None = not known."""

    commit: str | None = None
    dirty: bool | None = None
    hostname: str | None = None
    cpu_model: str | None = None
    cpu_cores: int | None = None
    cpu_governor: str | None = None
    memory_kib: int | None = None
    kernel: str | None = None
    kernel_version: str | None = None
    machine: str | None = None
    distro: str | None = None
    python: str | None = None
    python_executable: str | None = None
    iperf3: str | None = None
    iperf3_wrapper: str | None = None
    iptables: str | None = None
    cc: str | None = None
    portunus: str | None = None
    sysctls: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this harness does not know

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SysInfo:
        known, extra = _split(cls, d, "sysinfo")
        known["sysctls"] = dict(known.get("sysctls") or {})
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The mapping as collected: every known key (None where unknown), then the extra ones."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["sysctls"] = dict(self.sysctls)
        return {**d, **self.extra}


@dataclass(frozen=True)
class TopologyInfo:
    """Where a run's roles were: the topology's describe() at run time (harness.site.topology).

    Nested values (addresses, link settings, what the kernel applied) stay
    mappings: they describe kernel state, whose keys differ by kind and kernel.
    """

    kind: str = "loopback"
    address: str | None = None  # loopback: the one address every role used
    namespaces: Mapping[str, str] | None = None  # netns: role -> namespace
    control: str | None = None  # netns / hosts: the role portunus-server ran in
    addresses: Mapping[str, Any] | None = None  # netns / hosts: role (side) -> address
    links: Mapping[str, Mapping[str, Any]] | None = None  # netns: link -> settings as asked
    applied: Mapping[str, Any] | None = None  # netns: interfaces and sysctls as the kernel reported them
    roles: Mapping[str, Mapping[str, Any]] | None = None  # hosts: role -> its executor's description
    edge_devices: list[str] | None = None  # hosts: the edge's NICs (nft_flowtable)
    direct: str | None = None  # what the `direct` path means on this topology
    kernel_nat: str | None = None  # how the kernel paths forward on this topology
    extra: dict[str, Any] = field(default_factory=dict)  # keys this harness does not know

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TopologyInfo:
        known, extra = _split(cls, d if d is not None else LOOPBACK_TOPOLOGY, "topology")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The description as written: the keys it has, then the extra ones."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in d.items() if v is not None}, **self.extra}


LOOPBACK_INFO = TopologyInfo.from_dict(LOOPBACK_TOPOLOGY)


@dataclass(frozen=True)
class PathFacts:
    """What analysis needs to know about a path, recorded from its class at run time (since schema 4)."""

    forwarder_process: bool  # False: kernel or no forwarder, no CPU of its own to charge
    protocols: tuple[str, ...]  # "udp": UDP and TCP on the same port (iperf3 -u keeps TCP for control)
    half_close: bool  # an EOF one way is passed on while the other way keeps flowing
    capped: bool  # measured at each of the experiment's caps

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PathFacts:
        return cls(bool(d["forwarder_process"]), tuple(d["protocols"]), bool(d["half_close"]), bool(d["capped"]))

    def to_dict(self) -> dict[str, Any]:
        return {"forwarder_process": self.forwarder_process, "protocols": list(self.protocols),
                "half_close": self.half_close, "capped": self.capped}


@dataclass(frozen=True)
class Header:
    """What the whole file shares: the experiment, its config, the host."""

    experiment: str
    kind: str
    created_at: str
    config: ExperimentConfig
    sysinfo: SysInfo
    argv: list[str] = field(default_factory=list)
    unavailable_paths: dict[str, str] = field(default_factory=dict)  # path -> reason it was skipped
    # since schema 3: where it ran (harness.site.topology.*.describe())
    topology: TopologyInfo = LOOPBACK_INFO
    # since schema 4: path -> its facts, for every path of the config (harness.paths at run time)
    path_facts: dict[str, PathFacts] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "kind": self.kind, "created_at": self.created_at,
                "config": self.config.to_dict(), "sysinfo": self.sysinfo.to_dict(), "argv": list(self.argv),
                "unavailable_paths": dict(self.unavailable_paths), "topology": self.topology.to_dict(),
                "path_facts": {p: f.to_dict() for p, f in self.path_facts.items()},
                "schema_version": self.schema_version, "format": self.format}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Header:
        """A header line (upgraded to SCHEMA_VERSION) -> Header; ValueError naming what is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown header field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        d["config"] = ExperimentConfig.from_dict(d.get("config"))
        d["sysinfo"] = SysInfo.from_dict(d.get("sysinfo") or {})
        d["topology"] = TopologyInfo.from_dict(d.get("topology"))
        d["path_facts"] = {str(p): PathFacts.from_dict(f) for p, f in (d.get("path_facts") or {}).items()}
        return cls(**d)
