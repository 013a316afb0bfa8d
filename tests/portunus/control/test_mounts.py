"""parse_mountinfo on real /proc/self/mountinfo text, and the tmpfs check."""

from __future__ import annotations

from pathlib import Path

from portunus.control.mounts import mount_of, parse_mountinfo, volatile_mount

# Verbatim from this host's /proc/self/mountinfo (Debian 12 VM), plus one
# mount point with a space, which the kernel writes as \040.
MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k,nr_inodes=3083615,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
28 27 0:25 / /mnt/sandboxing/model_tools_env/v1/python ro,nosuid,nodev,relatime - tmpfs model_tools_unavailable ro,size=4k,mode=755
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 0:40 / /srv/my\040data rw,relatime shared:5 - xfs /dev/vdb rw
"""


def test_parse_mountinfo() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 9
    assert (mounts[3].mount_point, mounts[3].fs_type, mounts[3].source) == ("/", "ext4", "/dev/vda")
    assert mounts[-1].mount_point == "/srv/my data"  # optional field "shared:5" skipped, \040 unescaped
    assert mounts[-1].fs_type == "xfs"


def test_mount_of_longest_prefix_and_later_mount_wins() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert mount_of("/tmp/x", mounts).fs_type == "ext4"
    assert mount_of("/dev/shm/portunus", mounts).fs_type == "tmpfs"
    assert mount_of("/dev/shm", mounts).mount_point == "/dev/shm"
    assert mount_of("/dev/shmx", mounts).fs_type == "devtmpfs"
    assert mount_of("/sys/fs/cgroup/unified/a", mounts).fs_type == "cgroup2"
    assert mount_of("/srv/my data/state", mounts).fs_type == "xfs"


def test_volatile_mount_on_this_host(tmp_path: Path) -> None:
    assert volatile_mount("/dev/shm/not-created-yet/deeper") is not None  # nearest existing parent
    assert volatile_mount("/tmp") is None  # ext4 here
