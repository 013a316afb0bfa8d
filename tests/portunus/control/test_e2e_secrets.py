"""Secrets and state on disk (issue 15 item 3): what the server and client write is theirs alone,
a server.toml others can read is called out, and no planted symlink redirects a secret.

Real server and client processes; the processes inherit a permissive umask (022), as a
service started from a login shell would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from portunus.control.bundle import load_bundle
from tests.portunus.control.support import ControlPlane, new_plane, remove_plane
from tests.support.proc import run_cli


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _private_files(data_dir: Path) -> dict[str, str]:
    """Every file the server keeps in its data dir, with its mode (as text, for a readable failure)."""
    return {str(p.relative_to(data_dir)): f"{_mode(p):04o}" for p in sorted(data_dir.rglob("*"))
            if p.name != "server.toml"}


def test_state_db_wal_keys_and_lock_are_private(umask_022: None, plane: ControlPlane) -> None:
    assert plane.enrollment_uri("edge")  # a committed write: state.db-wal and -shm exist now
    files = _private_files(plane.data_dir)
    assert {"state.db", "state.db-wal", "state.db-shm", "state.lock", "tls", "tls/server.key",
            "tls/signing.key"} <= set(files), files
    loose = {name: mode for name, mode in files.items() if int(mode, 8) & 0o077}
    assert not loose, f"readable by other users: {loose}"


def test_a_data_dir_with_loose_modes_is_tightened_at_start(umask_022: None, plane: ControlPlane) -> None:
    assert plane.server is not None
    plane.server.stop()
    for name in ("state.db", "tls/signing.key"):
        (plane.data_dir / name).chmod(0o644)
    plane.start_server()
    assert _mode(plane.data_dir / "state.db") == 0o600
    assert _mode(plane.data_dir / "tls/signing.key") == 0o600
    plane.server.wait_log("was mode 0644 (readable by other users); changed it to 0600")


def test_readable_server_toml_is_called_out_and_writable_one_refused(umask_022: None) -> None:
    plane = new_plane()
    toml = plane.data_dir / "server.toml"
    try:
        toml.chmod(0o644)
        server = plane.start_server()
        server.wait_log(f"WARNING portunus.server: {toml} is mode 0644: other local users can read "
                        "operator_token, an admin token; run `chmod 600")
        server.stop()

        toml.chmod(0o666)
        r = run_cli("portunus-server", "--data-dir", str(plane.data_dir), "serve")
        assert r.returncode == 2, r.stderr
        assert f"error: {toml}: mode 0666 lets other users change it" in r.stderr
    finally:
        remove_plane(plane)


def test_enroll_does_not_write_through_a_planted_tmp_symlink(umask_022: None, plane: ControlPlane) -> None:
    victim = plane.root / "victim.txt"
    victim.write_text("precious\n")
    out = plane.root / "edge.json"
    (plane.root / "edge.json.tmp").symlink_to(victim)  # the old fixed temp name

    r = run_cli("portunus-client", "enroll", plane.enrollment_uri("edge"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n", "the bundle (with its private key) was written through the link"
    assert stat.S_ISREG(os.lstat(out).st_mode) and _mode(out) == 0o600
    assert load_bundle(out).client == "edge"
    assert not [p for p in plane.root.iterdir() if p.name.startswith(".edge.json.")], "temp file left behind"
