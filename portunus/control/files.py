"""Files that hold secrets or state: written atomically, mode 0600, never through a planted link.

A fixed temp name (`OUT.tmp`) opened with O_CREAT|O_TRUNC follows a symlink
someone else planted there and writes our secret wherever it points. Here
the temp file gets an unpredictable name and is opened O_EXCL|O_NOFOLLOW,
so it is always a new file of ours; the rename then replaces the target
path itself (a link at the target is replaced, not followed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("portunus.files")

PRIVATE_MODE = 0o600
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_private(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (write, fsync, rename, fsync the dir), mode 0600."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _TMP_FLAGS, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_MODE)  # whatever the umask left
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (the entry lives in the directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def others_may_access(path: Path) -> int | None:
    """The mode of `path` if its group or others have any access to it, else None."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return mode if mode & 0o077 else None


def make_private(path: Path) -> bool:
    """chmod 0600 an existing file that group or others could access; True if it changed."""
    try:
        mode = others_may_access(path)
    except FileNotFoundError:
        return False
    if mode is None:
        return False
    os.chmod(path, PRIVATE_MODE)
    log.warning("%s was mode %04o (readable by other users); changed it to %04o", path, mode, PRIVATE_MODE)
    return True
