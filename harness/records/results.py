"""Result files: one JSONL file per experiment run, appended as each measurement ends.

Layout (one JSON object per line, each with a "type"):
  header       first line, once: schema_version, experiment, kind, config, sysinfo, argv, ...
               (records/header.py: loads back into typed values)
  measurement  one per measurement (a Record), written + flushed + fsynced as it ends
  run_end      when a run stops: status complete | interrupted | failed
  run_resumed  when `run --resume` continues the file
An interrupted run therefore keeps every measurement it finished, and the
file stays valid (every line is whole: each is one write() of a full line).

The raw iperf3 JSON of every run is kept verbatim (`iperf_raw`), so every
derived number can be recomputed with harness.records.iperf_json.parse_iperf_json.
The format's version history and the upgrades of older files: records/schema.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.records import schema
from harness.records.header import Header

DRIVER_IPERF3 = "iperf3"

SUFFIX = ".jsonl"
BYTES_PER_GB = 1e9  # cpu_s_per_gb uses decimal GB, like Mbit/s uses 1e6

STATUS_OK = "ok"
STATUS_FAILED = "failed"


class ResultsError(HarnessError):
    """A result file that cannot be read (corrupt, newer, or not a result file)."""


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Record:
    """One measurement: one path, one round, one offered rate / cap."""

    experiment: str
    path: str
    round: int
    index: int  # position in the run's plan (execution order)
    offered_mbps: float | None  # iperf3 -b pacing; None = uncapped sender
    cap_bytes_per_s: int | None  # forwarder bandwidth cap; None = no cap
    seconds: int  # iperf3 -t (measured seconds, after the omitted ones)
    omit_seconds: int  # iperf3 -O
    protocol: str
    backend: str  # iperf3 backend: "cli" | "python"
    status: str  # "ok" | "failed"
    error: str | None
    started_at: str
    ended_at: str
    # "The" throughput: sender side over the non-omitted interval (same for every path).
    throughput_mbps: float | None = None
    sender_mbps: float | None = None
    receiver_mbps: float | None = None
    retransmits: int | None = None
    sender_bytes: int | None = None  # non-omitted interval
    receiver_bytes: int | None = None  # non-omitted interval
    total_bytes: int | None = None  # all intervals incl. omitted: what the forwarder carried
    iperf_host_cpu_pct: float | None = None
    iperf_remote_cpu_pct: float | None = None
    forwarder_pids: tuple[int, ...] = ()
    # utime+stime of forwarder_pids (all threads) from client start to client end; None for kernel paths.
    forwarder_cpu_s: float | None = None
    cpu_s_per_gb: float | None = None  # forwarder_cpu_s / (total_bytes / 1e9)
    path_info: dict[str, Any] = field(default_factory=dict)
    iperf_raw: str | None = None  # iperf3's JSON report, verbatim
    # --- since schema 2
    driver: str = DRIVER_IPERF3  # what measured: "iperf3" | "latency" | "connrate" | "wrk" (harness.measure.drivers)
    lost_pct: float | None = None  # UDP: datagrams lost, receiver side, non-omitted interval
    jitter_ms: float | None = None  # UDP: iperf3's receiver-side jitter
    # latency: connect() -> first byte of the reply, and 1-byte RTT; percentiles over the samples
    setup_p50_us: float | None = None
    setup_p90_us: float | None = None
    setup_p99_us: float | None = None
    setup_samples: int | None = None
    rtt_p50_us: float | None = None
    rtt_p90_us: float | None = None
    rtt_p99_us: float | None = None
    rtt_samples: int | None = None
    # connrate: completed short connections per second over the measured window
    conn_per_s: float | None = None
    conns_ok: int | None = None
    conn_errors: int | None = None  # latency and connrate: connections / requests that failed
    probe_raw: str | None = None  # the latency / connrate probe's JSON report, verbatim
    # --- since schema 5
    # udp: this measurement's datagram payload (iperf3 -l) and offered datagrams/s (None: offered in Mbit/s)
    datagram_bytes: int | None = None
    offered_pps: float | None = None
    datagrams_sent: int | None = None  # iperf3 sender, non-omitted interval
    datagrams_delivered: int | None = None  # iperf3 receiver: packets - lost_packets
    delivered_pps: float | None = None  # datagrams_delivered / the receiver's seconds
    socket_drops: int | None = None  # dropped at the forwarder's UDP listening socket(s) (/proc/net/udp)
    # http (driver "wrk"): keepalive | close, the file size served, and what wrk measured
    http_mode: str | None = None
    response_bytes: int | None = None
    requests: int | None = None  # complete responses
    requests_per_s: float | None = None
    latency_p50_us: float | None = None  # request written -> response complete
    latency_p90_us: float | None = None
    latency_p99_us: float | None = None
    latency_p999_us: float | None = None
    http_errors: dict[str, int] | None = None  # connect / read / write / timeout / status (>= 400)
    wrk_raw: str | None = None  # wrk's command line, context and stdout (harness.records.wrk_report.WrkRun)
    # also since schema 5 (the cost fields): the edge host's CPU, all cores (/proc/stat), from client start to client end
    host_busy_cpu_s: float | None = None  # user + nice + system + irq + softirq: every process and the kernel
    host_softirq_s: float | None = None  # of which softirq (loopback / veth packet processing, mostly)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["forwarder_pids"] = list(self.forwarder_pids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown record field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        d["forwarder_pids"] = tuple(d.get("forwarder_pids") or ())
        return cls(**d)


@dataclass(frozen=True)
class ResultSet:
    """A loaded result file."""

    path: Path
    header: Header
    records: tuple[Record, ...]
    events: tuple[dict[str, Any], ...]  # run_end / run_resumed lines, in order
    file_schema_version: int = schema.SCHEMA_VERSION  # as written on disk, before in-memory upgrades

    def provenance(self) -> list[tuple[str | None, bool | None]]:
        """(commit, dirty) of the run that started the file and of every resumed run that recorded it."""
        out = [(self.header.sysinfo.commit, self.header.sysinfo.dirty)]
        for e in self.events:
            si = e.get("sysinfo")
            if e["type"] == "run_resumed" and isinstance(si, dict):
                out.append((si.get("commit"), si.get("dirty")))
        return out

    @property
    def complete(self) -> bool:
        """True if the last run over this file ended normally."""
        ends = [e for e in self.events if e["type"] == "run_end"]
        return bool(ends) and ends[-1].get("status") == "complete"


# ---------------------------------------------------------------- writing


class ResultWriter:
    """Appends lines to a result file, each flushed and fsynced before the call returns."""

    def __init__(self, path: Path, fh: Any) -> None:
        self.path = path
        self._fh = fh

    def _write(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, record: Record) -> None:
        self._write({"type": "measurement", **record.to_dict()})

    def end(self, status: str, **extra: Any) -> None:
        self._write({"type": "run_end", "at": utc_now(), "status": status, **extra})

    def close(self) -> None:
        self._fh.close()


def create_results(path: Path, header: Header) -> ResultWriter:
    """Start a new result file (refuses to overwrite one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(path, "x", encoding="utf-8")  # noqa: SIM115 - owned by the returned writer
    except FileExistsError:
        raise ResultsError(f"{path} already exists: pass --resume to continue it, or choose another --out") from None
    w = ResultWriter(path, fh)
    w._write({"type": "header", **header.to_dict()})
    return w


def resume_results(path: Path, sysinfo: Mapping[str, Any] | None = None) -> tuple[ResultWriter, ResultSet]:
    """Reopen an existing result file for appending; returns the writer and what it holds.

    sysinfo: the host and commit that measure from here on (collect_sysinfo), kept in the
    run_resumed line so a file continued on another commit or a dirty tree says so.
    """
    existing = load_results(path)
    if existing.file_schema_version != schema.SCHEMA_VERSION:
        # Appending current-version lines under an older header would mix two formats in one file.
        raise ResultsError(f"{path} was written with result schema {existing.file_schema_version} and this "
                           f"harness writes {schema.SCHEMA_VERSION}: it can be read and reported, not resumed; "
                           "start a new --out")
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - owned by the returned writer
    w = ResultWriter(path, fh)
    w._write({"type": "run_resumed", "at": utc_now(), **({"sysinfo": dict(sysinfo)} if sysinfo is not None else {})})
    return w, existing


# ---------------------------------------------------------------- loading


def load_results(path: str | Path) -> ResultSet:
    """Load and validate one result file, upgrading older schema versions in memory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path} is not a portunus-bench result file (not UTF-8 text)") from None
    lines = text.splitlines()
    if not lines:
        raise ResultsError(f"{path} is empty: not a portunus-bench result file")
    objs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            last = n == len(lines) and not text.endswith("\n")
            hint = " (the last line is cut short: the run was killed mid-write; delete that line to keep the rest)" if last else ""
            raise ResultsError(f"{path}:{n}: corrupt line, not JSON ({e.msg}){hint}") from None
        if not isinstance(obj, dict) or "type" not in obj:
            raise ResultsError(f"{path}:{n}: corrupt line, not a result object")
        objs.append((n, obj))
    n0, first = objs[0]
    if first.get("type") != "header" or first.get("format") != schema.FORMAT_NAME:
        raise ResultsError(f"{path}:{n0}: no portunus-bench header: not a result file")
    version = first.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ResultsError(f"{path}:{n0}: bad schema_version {version!r}")
    if version > schema.SCHEMA_VERSION:
        raise ResultsError(
            f"{path} has schema_version {version}, newer than this portunus-bench reads "
            f"({schema.SCHEMA_VERSION}): update the harness (git pull && pip install -e .) to read it")
    header: Header | None = None
    records: list[Record] = []
    events: list[dict[str, Any]] = []
    for n, obj in objs:
        obj = schema.upgrade_line(obj, version)
        kind = obj.pop("type")
        try:
            if kind == "header":
                if header is not None:
                    raise ValueError("second header")
                header = Header.from_dict(obj)
            elif kind == "measurement":
                records.append(Record.from_dict(obj))
            elif kind in ("run_end", "run_resumed"):
                events.append({"type": kind, **obj})
            else:
                raise ValueError(f"unknown line type {kind!r}")
        except (TypeError, ValueError) as e:
            raise ResultsError(f"{path}:{n}: corrupt {kind} line: {e}") from None
    assert header is not None
    return ResultSet(path, header, tuple(records), tuple(events), file_schema_version=version)


def load_results_dir(directory: str | Path) -> list[ResultSet]:
    """Every result file in a directory, by name."""
    d = Path(directory)
    if not d.is_dir():
        raise ResultsError(f"{d} is not a directory")
    return [load_results(p) for p in sorted(d.glob(f"*{SUFFIX}"))]


def to_dataframe(records: Iterable[Record], include_raw: bool = False) -> Any:
    """Records as a pandas DataFrame, one row per measurement (iperf_raw left out unless asked)."""
    import pandas as pd  # the harness core does not need pandas; analysis does

    raw = ("iperf_raw", "probe_raw", "wrk_raw")
    rows = []
    for r in records:
        d = r.to_dict()
        if not include_raw:
            for k in raw:
                d.pop(k)
        rows.append(d)
    columns: Sequence[str] = [f.name for f in fields(Record) if include_raw or f.name not in raw]
    return pd.DataFrame(rows, columns=list(columns))
