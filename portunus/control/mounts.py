"""Which filesystem holds a path, from /proc/self/mountinfo.

The server refuses to keep state.db on tmpfs/ramfs: the clients, rules and
audit log would silently vanish at reboot. Python has no statfs(), so the
mount table is read instead (the longest mount point that prefixes the
resolved path wins; later mounts shadow earlier ones on the same point).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

VOLATILE_FS_TYPES = ("tmpfs", "ramfs")
MOUNTINFO_PATH = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/<pid>/mountinfo text (see proc(5)) into mounts, in table order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        mounts.append(Mount(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2])))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds the absolute, resolved `path`."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if (path == mp or path.startswith(mp + "/") or mp == "/") and (
                best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/")):
            best = m
    return best


def volatile_mount(path: str | Path) -> Mount | None:
    """The tmpfs/ramfs mount holding `path` (or its nearest existing parent), else None."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        text = Path(MOUNTINFO_PATH).read_text()
    except OSError:
        return None  # not Linux, or /proc not mounted: nothing to go by
    m = mount_of(os.path.realpath(p), parse_mountinfo(text))
    return m if m is not None and m.fs_type in VOLATILE_FS_TYPES else None
