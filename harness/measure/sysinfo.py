"""Host metadata recorded once per result file: what produced these numbers, on what.

Every probe is best effort: a missing tool or file becomes None, never an
exception, so metadata collection cannot stop a run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Kernel knobs that move loopback throughput: socket buffer autotuning limits,
# the splice pipe ceiling, accept backlog, congestion control.
SYSCTLS = (
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "fs.pipe-max-size",
    "net.core.somaxconn",
    "net.ipv4.tcp_congestion_control",
)


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return (proc.stdout or proc.stderr).strip()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The first 'model name' from /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return None


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of /etc/os-release (quotes removed)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def read_sysctl(name: str) -> str | None:
    """A sysctl's value via /proc/sys, whitespace normalised ("4096 131072 6291456")."""
    value = _read("/proc/sys/" + name.replace(".", "/"))
    return " ".join(value.split()) if value is not None else None


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag (tracked files only: untracked result files do not make a tree dirty)."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def collect_sysinfo() -> dict[str, Any]:
    """Everything a reader needs to judge and reproduce a result file."""
    uname = platform.uname()
    os_release = parse_os_release(_read("/etc/os-release") or "")
    iperf_version = _run(["iperf3", "--version"])
    return {
        **git_state(),
        "hostname": uname.node,
        "cpu_model": parse_cpu_model(_read("/proc/cpuinfo") or ""),
        "cpu_cores": os.cpu_count(),
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "memory_kib": _meminfo_total_kib(),
        "kernel": uname.release,
        "kernel_version": uname.version,
        "machine": uname.machine,
        "distro": os_release.get("PRETTY_NAME"),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "iperf3": iperf_version.splitlines()[0] if iperf_version else None,
        "iperf3_wrapper": _package_version("iperf3"),
        "iptables": _run(["iptables", "--version"]),
        "cc": (_run(["cc", "--version"]) or "").splitlines()[0] or None,
        "portunus": _package_version("portunus"),
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
    }


def _meminfo_total_kib() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return None
