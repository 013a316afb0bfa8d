"""A client restarted while its server is down forwards its last rules (issue 15 item 5), and a
validly signed but older rule set is refused after a restart (item 9: persisted high-water mark).

Real server and client processes; the last-known file is the client's own, verified on start.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from pathlib import Path

import pytest

from portunus.control import client as client_mod
from portunus.control import lastknown
from portunus.control.client import ClientOptions
from tests.portunus.control.support import (
    ControlPlane,
    in_process_client,
    refused,
    through,
    wait_until,
)
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


def test_deltas_on_disk_are_compacted_when_pushes_pause_or_pile_up(plane: ControlPlane, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Thresholds shrunk to 5 (when idle) and 12 (at once); the idle wait is 600 s at first, so only the
    at-once path can compact, then 0.3 s."""
    monkeypatch.setattr(lastknown, "MAX_DELTAS", 5)
    monkeypatch.setattr(lastknown, "MAX_DELTAS_BUSY", 12)
    monkeypatch.setattr(client_mod, "COMPACT_IDLE_S", 600.0)
    state = tmp_path / "edge.ruleset.jsonl"
    ports = [free_port() for _ in range(17)]

    def full_sets_sent() -> float:
        m = re.search(r'portunus_server_rulesets_sent_total\{kind="full"\} ([0-9.e+]+)', plane.metrics())
        return float(m.group(1)) if m else 0.0

    with in_process_client(plane.enroll("edge"), ClientOptions(), state) as control:
        wait_until(lambda: control.connected and state.exists(), 30, "first full set on disk")
        for i in range(12):
            assert plane.push("edge", f"r{i}", ports[i], "127.0.0.1:9").status == 201
        # 12 deltas on disk: the client asked at once, without waiting for a pause.
        wait_until(lambda: len(state.read_text().splitlines()) == 2 and control.book.version == 12, 30,
                   "a full set replacing 12 deltas")
        assert full_sets_sent() == 2
        monkeypatch.setattr(client_mod, "COMPACT_IDLE_S", 0.3)
        for i in range(12, 17):
            assert plane.push("edge", f"r{i}", ports[i], "127.0.0.1:9").status == 201
        wait_until(lambda: len(state.read_text().splitlines()) == 2, 30, "a full set once pushes paused")
        assert full_sets_sent() == 3
