"""Traffic quotas per (user, client) through a real server and a real client.

The client enforces (its data plane counts each byte of the user's rules and
cuts at the budget); the server keeps the ledger in state.db from the
client's reports. Checked here: a 10 MiB budget is cut within one chunk on
splice, copy and UDP (a new UDP flow refused), the budget holds across a client kill -9, a
server restart and a server outage (the client reconciles when it is back),
re-creating a rule does not reset it, the period resets at its boundary
(test clock), and the status is the same through API, CLI and metrics.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

from portunus.dataplane.pipes import PIPE_SIZE_BYTES
from portunus.dataplane.tcp import COPY_BUFFER_BYTES
from tests.portunus.control.support import ControlPlane, wait_until
from tests.portunus.control.test_e2e_tenants import PASSWORD, grant, make_user, rule
from tests.support.clock import TestClock
from tests.support.net import free_port, free_port_range
from tests.support.proc import run_cli
from tests.support.traffic import ByteSink, UdpSink, blast, connection_refused, udp_blast

MIB = 1024 * 1024
QUOTA_BYTES = 10 * MIB


def set_quota(plane: ControlPlane, user_id: int, client: str, nbytes: int, period: str = "daily") -> dict[str, Any]:
    resp = plane.api().put(f"/v1/users/{user_id}/quotas/{client}", {"bytes": nbytes, "period": period})
    assert resp.status == 200 and resp.body["client_acked"], resp
    return resp.body


def status(plane: ControlPlane, user_id: int, client: str) -> dict[str, Any]:
    resp = plane.api().get(f"/v1/users/{user_id}/quotas/{client}/status")
    assert resp.status == 200, resp
    return resp.body


def wait_used(plane: ControlPlane, user_id: int, used: int) -> dict[str, Any]:
    return wait_until(lambda: (s := status(plane, user_id, "edge"))["used_bytes"] == used and s, 20,
                      f"ledger used_bytes == {used}")


def test_quota_holds_across_restarts_and_outages(plane: ControlPlane) -> None:
    bundle = plane.enroll("edge")
    client = plane.start_client(bundle)
    plane.wait_online("edge")
    uid = make_user(plane, "alice")
    base = free_port_range(4)
    grant(plane, uid, "edge", base, base + 3, ["tcp"])
    alice = plane.api(plane.api().post("/v1/tokens", {"name": "alice-t", "role": "operator", "user_id": uid}).body["token"])
    q = set_quota(plane, uid, "edge", QUOTA_BYTES)
    assert (q["limit_bytes"], q["used_bytes"], q["exhausted"], q["owner"]) == (QUOTA_BYTES, 0, False, "user:alice")
    with ByteSink() as sink:
        resp = alice.post("/v1/rules", rule("edge", "web", base, sink.port))
        assert resp.status == 201, resp
        assert blast(base, 4 * MIB) == (4 * MIB, False)
        wait_used(plane, uid, 4 * MIB)

        # kill -9 the client: the restarted one starts from the ledger (and its usage file), not from 0.
        client.kill9()
        client = plane.start_client(bundle)
        plane.wait_online("edge")
        assert blast(base, 2 * MIB) == (2 * MIB, False)
        wait_used(plane, uid, 6 * MIB)

        # The server goes away: the client forwards and counts on, and reconciles when it is back;
        # the restarted server still has the ledger (state.db).
        assert plane.server is not None
        plane.server.stop()
        assert blast(base, 2 * MIB) == (2 * MIB, False)
        plane.start_server()
        plane.wait_online("edge")
        wait_used(plane, uid, 8 * MIB)

        # The budget: the transfer that crosses it is cut within one chunk.
        assert blast(base, 6 * MIB)[1], "6 MiB more went through a quota with 2 MiB left"
        st = wait_until(lambda: (s := status(plane, uid, "edge"))["exhausted"] and s, 20, "exhausted in the ledger")
        assert QUOTA_BYTES <= st["used_bytes"] <= QUOTA_BYTES + PIPE_SIZE_BYTES, st
        assert sink.total <= st["used_bytes"]
        assert connection_refused(base)

        # Deleting the rule and creating it again does not give the budget back.
        rule_id = alice.get("/v1/rules").body["rules"][0]["id"]
        assert alice.delete(f"/v1/rules/{rule_id}").status == 200
        assert alice.post("/v1/rules", rule("edge", "web2", base + 1, sink.port)).status == 201
        assert connection_refused(base + 1)

    # One status, three ways: API, CLI, metrics (server ledger and client), and the audit log.
    r = run_cli("portunus-server", "quota", "status", "alice", "edge", "--http-endpoint", plane.http_endpoint,
                env={"PORTUNUS_OPERATOR_TOKEN": plane.token})
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    assert (cli["used_bytes"], cli["limit_bytes"], cli["exhausted"]) == (st["used_bytes"], QUOTA_BYTES, True)
    assert cli["period_end"] and cli["remaining_bytes"] == 0
    assert alice.get(f"/v1/users/{uid}/quotas/edge/status").body["exhausted"]  # users read their own
    # The metrics endpoint reads a copy of the ledger refreshed once a second.
    def exported() -> str | None:
        text = plane.metrics()
        return text if 'portunus_quota_exhausted{client="edge",user="alice"} 1.0' in text else None

    metrics = wait_until(exported, 10, "the ledger in the metrics")
    used = re.search(r'^portunus_quota_used_bytes\{client="edge",user="alice"\} (\S+)$', metrics, re.M)
    assert used and float(used.group(1)) == float(st["used_bytes"]), used
    assert 'portunus_quota_exhausted{owner="user:alice"} 1.0' in client.metrics()
    assert client.stats()["quotas"]["user:alice"]["exhausted"] is True
    # The refusal reaches the server with the client's next stats report (periodic): waited for.
    rejected = 'portunus_rule_rejected_total{client="edge",reason="quota",rule="web2"}'
    wait_until(lambda: rejected in plane.metrics(), 20, "the client's report of the quota refusal")
    audit = plane.api().get("/v1/audit?limit=1000").body["entries"]
    assert [e["target"] for e in audit if e["action"] == "quota.exhausted"] == ["quota of user alice on client edge"]
    # Raising the budget opens the way again at once (pushed to the client), and keeps the count.
    raised = set_quota(plane, uid, "edge", 3 * QUOTA_BYTES)
    assert (raised["used_bytes"], raised["exhausted"]) == (st["used_bytes"], False), raised
    assert not status(plane, uid, "edge")["exhausted"]


def test_quota_resets_at_the_period_boundary(plane: ControlPlane, tmp_path: Path) -> None:
    """Server and client run on a test clock an hour before midnight UTC, moved to 3 s before once the
    budget is spent; the daily period rolls over."""
    clock = TestClock(tmp_path / "clock-offset")
    env = clock.env
    assert plane.server is not None
    plane.server.stop()
    plane.start_server(env=env)
    client = plane.start_client(plane.enroll("edge"), env=env)
    plane.wait_online("edge")
    uid = make_user(plane, "bob")
    base = free_port_range(1)
    grant(plane, uid, "edge", base, base, ["tcp"])
    before = set_quota(plane, uid, "edge", 1 * MIB)
    with ByteSink() as sink:
        assert plane.api().post("/v1/rules", rule("edge", "b", base, sink.port) | {"owner": "user:bob"}).status == 201
        assert blast(base, 4 * MIB)[1]
        wait_until(lambda: status(plane, uid, "edge")["exhausted"], 10, "exhausted")
        assert connection_refused(base)
        clock.set_before_midnight(3.0)
        after = wait_until(lambda: (s := status(plane, uid, "edge"))["period_start"] != before["period_start"] and s,
                           30, "a new period in the ledger")
        assert after["period_start"] == before["period_end"] and not after["exhausted"]
        client.wait_log("quota period ended", timeout_s=15)
        assert blast(base, 512 * 1024) == (512 * 1024, False)
        wait_used(plane, uid, 512 * 1024)
    audit = plane.api().get("/v1/audit?limit=1000").body["entries"]
    resets = [e for e in audit if e["action"] == "quota.reset"]
    assert len(resets) == 1 and resets[0]["detail"]["period_ended_with_bytes"] >= MIB, resets
    bob = plane.api().post("/v1/auth/login", {"username": "bob", "password": PASSWORD})
    assert bob.status == 200


def test_quota_requests_are_validated(plane: ControlPlane) -> None:
    plane.enrollment_uri("edge")
    uid = make_user(plane, "carol")
    api = plane.api()
    resp = api.put(f"/v1/users/{uid}/quotas/edge", {"bytes": 0, "period": "weekly", "reset_day": 40})
    assert resp.status == 400 and resp.error["code"] == "invalid_quota", resp
    assert "bytes: must be an integer from 1" in resp.body["error"]["message"]
    assert api.put(f"/v1/users/{uid}/quotas/nope", {"bytes": 5}).status == 404
    assert api.put("/v1/users/999/quotas/edge", {"bytes": 5}).status == 404
    assert api.get(f"/v1/users/{uid}/quotas/edge/status").status == 404
    # Offline client: stored, pushed when it connects.
    resp = api.put(f"/v1/users/{uid}/quotas/edge", {"bytes": 5 * MIB, "period": "monthly", "reset_day": 31})
    assert resp.status == 200 and resp.body["client_acked"] is False and resp.body["reset_day"] == 31


def test_copy_path_quota_through_the_client(plane: ControlPlane) -> None:
    """The client forced onto the copy path: cut within one copy buffer of 10 MiB."""
    client = plane.start_client(plane.enroll("edge"), env={"PORTUNUS_DISABLE_SPLICE": "1"})
    plane.wait_online("edge")
    uid = make_user(plane, "erin")
    port = free_port()
    grant(plane, uid, "edge", port, port, ["tcp"])
    set_quota(plane, uid, "edge", QUOTA_BYTES)
    erin = plane.api(plane.api().post("/v1/tokens", {"name": "erin-t", "role": "operator", "user_id": uid}).body["token"])
    with ByteSink() as sink:
        assert erin.post("/v1/rules", rule("edge", "bulk", port, sink.port)).status == 201
        assert blast(port, 3 * QUOTA_BYTES)[1], "30 MiB went through a 10 MiB quota"
        st = wait_until(lambda: (s := status(plane, uid, "edge"))["exhausted"] and s, 20, "exhausted in the ledger")
        assert QUOTA_BYTES <= st["used_bytes"] <= QUOTA_BYTES + COPY_BUFFER_BYTES, st
        wait_until(lambda: len(sink.per_conn) == 1, 10, "the sink saw the connection end")
        assert sink.total <= st["used_bytes"]
        assert connection_refused(port)
    counters = client.stats()["rules"]["bulk"]
    assert counters["copy_connections"] == 1 and counters["quota_cuts"] == 1, counters


def test_udp_quota_through_the_client(plane: ControlPlane) -> None:
    client = plane.start_client(plane.enroll("edge"))
    plane.wait_online("edge")
    uid = make_user(plane, "dora")
    port = free_port(socket.SOCK_DGRAM)
    grant(plane, uid, "edge", port, port, ["udp"])
    set_quota(plane, uid, "edge", QUOTA_BYTES, period="monthly")
    sink = UdpSink()
    try:
        resp = plane.api().post("/v1/rules", rule("edge", "dns", port, sink.port, "udp") | {"owner": "user:dora"})
        assert resp.status == 201, resp
        sock, _ = udp_blast(port, QUOTA_BYTES // 1000 + 500, 1000)
        sock.close()
        st = wait_until(lambda: (s := status(plane, uid, "edge"))["exhausted"] and s, 20, "exhausted in the ledger")
        assert QUOTA_BYTES <= st["used_bytes"] <= QUOTA_BYTES + 1000, st
        assert sink.bytes == st["used_bytes"]  # one way only: the sink does not answer
        # A new flow (another source port) is refused at its first datagram.
        refused_before = client.stats()["rules"]["dns"]["rejected"].get("quota", 0)
        sock, _ = udp_blast(port, 5, 1000)
        sock.close()
        wait_until(lambda: client.stats()["rules"]["dns"]["rejected"].get("quota", 0) == refused_before + 5, 10,
                   "the new flow's 5 datagrams refused (reason quota)")
        assert sink.bytes == st["used_bytes"]
    finally:
        sink.close()
