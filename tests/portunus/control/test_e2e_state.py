"""A state.db that lost its contents is refused, not taken for a fresh install (issue 15 item 7).
Real server process on a real data dir."""

from __future__ import annotations

import sqlite3

from tests.portunus.control.support import ControlPlane, new_plane, remove_plane
from tests.support.proc import run_cli


def _serve(plane: ControlPlane):
    # A server that (wrongly) starts runs until killed: the timeout turns that into a failure.
    return run_cli("portunus-server", "--data-dir", str(plane.data_dir), "serve", timeout_s=20)


def test_a_zero_byte_state_db_is_refused(plane: ControlPlane) -> None:
    plane.enroll("edge")
    assert plane.server is not None
    plane.server.stop()
    db = plane.data_dir / "state.db"
    db.write_bytes(b"")  # a botched copy, a full disk at the wrong moment, a restore gone wrong
    r = _serve(plane)
    assert r.returncode == 2, r.stderr
    assert f"error: {db}: is empty (0 bytes) in a data dir that has been used" in r.stderr
    assert db.stat().st_size == 0, "the empty file must be left as it was found"


def test_an_unrecognised_database_is_refused() -> None:
    plane = new_plane()
    try:
        db = plane.data_dir / "state.db"
        other = sqlite3.connect(db)
        other.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        other.commit()
        other.close()
        r = _serve(plane)
        assert r.returncode == 2, r.stderr
        assert f"error: {db}: not a portunus-server state database (it has tables users" in r.stderr
        tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
        assert tables == {"users"}, "nothing may be added to someone else's database"

        db.write_bytes(b"this is not SQLite at all\n" * 200)
        r = _serve(plane)
        assert r.returncode == 2 and "cannot open state database" in r.stderr, r.stderr
    finally:
        remove_plane(plane)


def test_an_empty_file_from_an_interrupted_first_start_is_a_fresh_install() -> None:
    plane = new_plane()
    try:
        (plane.data_dir / "state.db").write_bytes(b"")  # first start died before writing anything (no tls/ yet)
        plane.start_server()
        assert plane.api().get("/v1/clients").body["clients"] == []
    finally:
        remove_plane(plane)
