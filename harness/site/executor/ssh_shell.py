"""The SSH executor's remote command lines and the parsing of what comes back (pure text; no connection).

Remote processes start as `exec sh -c 'echo $$ >&2; exec CMD'` so the first
line of stderr is the pid; the environment is sent as the difference from
the harness's own; listeners and CPU come from `ss -p` and one /proc
snapshot of the host (harness.site.executor.ssh runs them).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from harness.site import procs

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SS_PID = re.compile(r"pid=(\d+),")


def env_delta(env: Mapping[str, str] | None, base: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(set, unset): what turns environment `base` into `env` (None: no change)."""
    if env is None:
        return {}, []
    sets = {k: v for k, v in env.items() if base.get(k) != v and _ENV_NAME.match(k)}
    unsets = sorted(k for k in base if k not in env and _ENV_NAME.match(k))
    return sets, unsets


def shell_prefix(extra_path: Sequence[str], sets: Mapping[str, str], unsets: Sequence[str],
                 cwd: str | None) -> str:
    """`export ...; unset ...; cd ...; ` for a remote command line (empty if nothing to do)."""
    parts = []
    if extra_path:
        parts.append(f'export PATH={shlex.quote(":".join(extra_path))}:"$PATH"')
    parts += [f"export {k}={shlex.quote(v)}" for k, v in sets.items()]
    if unsets:
        parts.append("unset " + " ".join(unsets))
    if cwd:
        parts.append(f"cd {shlex.quote(cwd)}")
    return "".join(p + "; " for p in parts)


def spawn_command(argv: Sequence[str], prefix: str, log_path: str | None) -> str:
    """The remote command line that reports its pid on stderr's first line, then becomes argv."""
    inner = shlex.join(argv)
    if log_path is not None:
        inner += f" >>{shlex.quote(log_path)} 2>&1"
    return "exec sh -c " + shlex.quote(f"{prefix}echo $$ >&2; exec {inner}")


def parse_ss_pids(ss_output: str) -> set[int]:
    """Pids named in `ss -p` output (users:(("name",pid=123,fd=4),...))."""
    return {int(m) for m in _SS_PID.findall(ss_output)}


def parse_stat_snapshot(text: str) -> tuple[int, dict[int, str]]:
    """`getconf CLK_TCK; cat /proc/[0-9]*/stat` output -> (ticks per second, {pid: stat line})."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("empty /proc snapshot")
    clk = int(lines[0].strip())
    stats: dict[int, str] = {}
    for line in lines[1:]:
        try:
            stats[procs.parse_stat_pid(line)] = line
        except ValueError:
            continue
    return clk, stats


STAT_SNAPSHOT_CMD = "getconf CLK_TCK; cat /proc/[0-9]*/stat 2>/dev/null; true"
