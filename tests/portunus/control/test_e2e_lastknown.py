"""A client restarted while its server is down forwards its last rules (issue 15 item 5), and a
validly signed but older rule set is refused after a restart (item 9: persisted high-water mark).

Real server and client processes; the last-known file is the client's own, verified on start.
"""

from __future__ import annotations

import random
import shutil
import time

import pytest

from tests.portunus.control.support import ControlPlane, refused, through, wait_until
from tests.support.net import ExchangeServer, free_port


@pytest.fixture
def target():
    srv = ExchangeServer(lambda tag: 2048, random.Random(5))
    try:
        yield srv
    finally:
        srv.close()


def test_client_started_while_its_server_is_down_serves_its_last_rules(plane: ControlPlane,
                                                                       target: ExchangeServer) -> None:
    bundle = plane.enroll("edge")
    client = plane.start_client(bundle)
    plane.wait_online("edge")
    p1, p2 = free_port(), free_port()
    assert plane.push("edge", "one", p1, f"127.0.0.1:{target.port}").status == 201
    assert plane.push("edge", "two", p2, f"127.0.0.1:{target.port}").status == 201
    through(p1, target, b"before-000000001")
    version = client.stats()["control"]["ruleset_version"]

    client.stop()
    assert plane.server is not None
    plane.server.kill9()  # a control-plane outage, then the edge host reboots
    assert refused(p1)

    t0 = time.monotonic()
    client = plane.start_client(bundle)
    wait_until(lambda: not refused(p1) and not refused(p2), 30, "restored listeners", 0.01)
    serving_s = time.monotonic() - t0
    print(f"\nclient started with its server down: forwarding after {serving_s:.2f} s")
    through(p1, target, b"server-down-0001")
    through(p2, target, b"server-down-0002")
    status = client.stats()["control"]
    assert (status["connected"], status["ruleset_version"], status["restored_rules"]) == (False, version, 2)
    # It restored before it ever heard from the (absent) server: the dial failure is logged
    # after the restore (waited for: the first dial may still be under way).
    wait_until(lambda: " down (" in client.log(), 30, "the failed dial logged", 0.05)
    log = client.log()
    assert f"restored 2 rule(s) at version {version}" in log
    assert log.index("restored 2 rule(s)") < log.index(" down (")

    # The server comes back: its full set takes over, and a change made now still arrives.
    plane.start_server()
    plane.wait_online("edge")
    p3 = free_port()
    assert plane.push("edge", "three", p3, f"127.0.0.1:{target.port}").status == 201
    through(p3, target, b"server-back-0001")


def test_an_older_validly_signed_rule_set_is_refused_after_a_restart(plane: ControlPlane,
                                                                      target: ExchangeServer) -> None:
    """The server's state.db is restored from an older backup: its (validly signed) rule set is
    older than what the client ran, and the restarted client must not go back to it."""
    bundle = plane.enroll("edge")
    client = plane.start_client(bundle)
    plane.wait_online("edge")
    pa, pb = free_port(), free_port()
    assert plane.push("edge", "a", pa, f"127.0.0.1:{target.port}").status == 201
    assert plane.server is not None
    plane.server.stop()  # clean stop: state.db holds everything (WAL checkpointed)
    backup = plane.root / "state.db.backup"
    shutil.copy(plane.data_dir / "state.db", backup)

    plane.start_server()
    plane.wait_online("edge")
    assert plane.push("edge", "b", pb, f"127.0.0.1:{target.port}").status == 201
    newest = client.stats()["control"]["ruleset_version"]
    client.stop()
    plane.server.stop()
    for suffix in ("", "-wal", "-shm"):
        (plane.data_dir / f"state.db{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, plane.data_dir / "state.db")

    plane.start_server()
    client = plane.start_client(bundle)
    client.wait_log("stale rule set", timeout_s=30)
    assert f"older than the running {newest}" in client.log()
    assert client.stats()["control"]["ruleset_version"] == newest
    through(pb, target, b"newest-rules-001")  # rule "b" (newer than the backup) still runs
