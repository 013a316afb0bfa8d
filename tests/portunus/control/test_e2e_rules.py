"""Rules pushed over the operator API to a real portunus-client, with real traffic.

Processes: one portunus-server (TLS gRPC, SQLite file) and one portunus-client
per module; targets are ExchangeServers checked with SHA-256 both ways.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading

import pytest

from tests.portunus.control.support import ControlPlane, refused, wait_until
from tests.support.net import ExchangeServer, exchange, free_port, free_ports, random_payload

PAYLOAD_BYTES = 512 * 1024


def _exchange_ok(port: int, target: ExchangeServer, n: int = 4) -> None:
    """n parallel connections through `port`; every byte arrives intact both ways."""
    rng = random.Random(port)
    results: list[tuple[bytes, tuple[str, str]]] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        tag = f"t{port:05d}-{i:04d}-xxxx".encode()[:16].ljust(16, b"x")
        try:
            results.append((tag, exchange(port, random_payload(PAYLOAD_BYTES, rng), tag, timeout_s=30)))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == n
    for tag, (sent_sha, got_sha) in results:
        server_got, server_sent = wait_until(lambda tag=tag: target.results.get(tag), 10, "target result")
        assert server_got == sent_sha, "client->target bytes corrupted"
        assert got_sha == server_sent, "target->client bytes corrupted"


@pytest.fixture
def targets():
    a = ExchangeServer(lambda tag: PAYLOAD_BYTES, random.Random(1))
    b = ExchangeServer(lambda tag: PAYLOAD_BYTES // 2, random.Random(2))
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_push_traffic_change_delete(edge: ControlPlane, targets) -> None:
    a, b = targets
    port = free_port()
    resp = edge.push("edge", "web", port, f"127.0.0.1:{a.port}")
    assert resp.status == 201, resp
    assert resp.body["status"] == "active"
    rule_id = resp.body["id"]
    _exchange_ok(port, a)
    assert b.accepted == 0

    got = edge.api().get(f"/v1/rules/{rule_id}")
    assert got.status == 200 and got.body["status"] == "active" and got.body["client"] == "edge"
    assert got.body["rule"]["target"] == f"127.0.0.1:{a.port}"

    # Change: same listener, new target. The socket is kept, new connections go to b.
    new = {"name": "web", "listen_addr": "127.0.0.1", "listen_port": port, "target": f"127.0.0.1:{b.port}"}
    resp = edge.api().put(f"/v1/rules/{rule_id}", new)
    assert resp.status == 200 and resp.body["status"] == "active", resp
    before_a = a.accepted
    _exchange_ok(port, b)
    assert a.accepted == before_a

    # The client reports stats; the server exposes them per client and rule.
    wait_until(lambda: (edge.api().get(f"/v1/rules/{rule_id}").body["stats"] or {}).get("bytes_in", 0)
               >= 8 * PAYLOAD_BYTES, 15, "stats report with the bytes forwarded")
    metrics = edge.metrics()
    assert 'portunus_rule_bytes_total{client="edge",direction="in",rule="web"}' in metrics
    assert "portunus_server_clients_connected 1.0" in metrics

    resp = edge.api().delete(f"/v1/rules/{rule_id}")
    assert resp.status == 200 and resp.body == {"id": rule_id, "status": "deleted", "client_acked": True}
    assert refused(port), "listener still open after DELETE was acked"
    assert edge.api().get(f"/v1/rules/{rule_id}").status == 404

    actions = [(e["action"], e["result"]) for e in edge.api().get("/v1/audit").body["entries"]]
    for action in ("rule.create", "rule.update", "rule.delete"):
        assert (action, "ok") in actions


def test_rule_range_and_udp_fields_round_trip(edge: ControlPlane) -> None:
    start = free_port()
    body = {"client": "edge", "name": "range", "listen_addr": "127.0.0.1", "listen_ports": f"{start}-{start}",
            "targets": [{"host": "127.0.0.1", "port": 9, "priority": 1}, {"host": "[::1]", "port": 9}],
            "rate_limit": {"concurrent_connections": 5}}
    resp = edge.api().post("/v1/rules", body)
    assert resp.status == 201, resp
    stored = edge.api().get(f"/v1/rules/{resp.body['id']}").body["rule"]
    assert stored["targets"] == [{"host": "127.0.0.1", "port": 9, "priority": 1}, {"host": "[::1]", "port": 9}]
    assert stored["rate_limit"] == {"concurrent_connections": 5}
    assert edge.api().delete(f"/v1/rules/{resp.body['id']}").status == 200


def test_validation_and_conflicts(edge: ControlPlane) -> None:
    port, other = free_ports(2)
    api = edge.api()
    # 400: the shared rule validation, naming the key.
    resp = api.post("/v1/rules", {"client": "edge", "name": "bad", "listen_port": 70000, "target": "x:1"})
    assert resp.status == 400 and resp.error["code"] == "invalid_rule"
    assert any("listen_port" in p and "out of range" in p for p in resp.error["problems"])
    resp = api.post("/v1/rules", {"client": "edge", "name": "bad", "listen_port": port, "target": "h:1", "color": 1})
    assert resp.status == 400 and "color: unknown key" in resp.error["message"]
    # 404: unknown client.
    assert edge.push("nobody", "r", port, "127.0.0.1:9").status == 404
    # 409: duplicate name, and port in use on that client.
    assert edge.push("edge", "first", port, "127.0.0.1:9").status == 201
    resp = edge.push("edge", "first", other, "127.0.0.1:9")
    assert resp.status == 409 and resp.error["code"] == "duplicate_name"
    resp = edge.push("edge", "second", port, "127.0.0.1:9")
    assert resp.status == 409 and resp.error["code"] == "port_in_use"
    resp = api.post("/v1/rules", {"client": "edge", "name": "wild", "listen_addr": "0.0.0.0",
                                  "listen_port": port, "target": "127.0.0.1:9"})
    assert resp.status == 409 and resp.error["code"] == "port_in_use"
    # Errors are audited with their result.
    results = [e["result"] for e in api.get("/v1/audit?limit=20").body["entries"] if e["action"] == "rule.create"]
    assert any(r.startswith("error 409 port_in_use") for r in results)
    assert any(r.startswith("error 400 invalid_rule") for r in results)
    first = next(r for r in api.get("/v1/rules?client=edge").body["rules"] if r["name"] == "first")
    assert api.delete(f"/v1/rules/{first['id']}").status == 200


def test_client_cannot_bind_gives_422_and_rolls_back(edge: ControlPlane) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        resp = edge.push("edge", "blocked", port, "127.0.0.1:9")
        assert resp.status == 422, resp
        assert resp.error["code"] == "rule_failed"
        assert "Address already in use" in resp.error["reason"]
        names = [r["name"] for r in edge.api().get("/v1/rules?client=edge").body["rules"]]
        assert "blocked" not in names
    finally:
        blocker.close()
    # The port is free now: the same rule works.
    resp = edge.push("edge", "blocked", port, "127.0.0.1:9")
    assert resp.status == 201, resp
    assert edge.api().delete(f"/v1/rules/{resp.body['id']}").status == 200


def test_a_failed_rule_is_tried_again_with_the_next_delta(edge: ControlPlane) -> None:
    """A rule whose port was taken stays stored; the next rule set for that client binds it once the port is free."""
    api = edge.api()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        resp = api.post("/v1/rules?wait=false", {"client": "edge", "name": "later", "listen_addr": "127.0.0.1",
                                                 "listen_port": port, "target": "127.0.0.1:9"})
        assert resp.status == 202, resp
        rule_id = resp.body["id"]
        wait_until(lambda: api.get(f"/v1/rules/{rule_id}").body["status"] == "failed", 30, "the rule failed")
    finally:
        blocker.close()
    (other_port,) = free_ports(1)
    other = edge.push("edge", "unrelated", other_port, "127.0.0.1:9")
    assert other.status == 201, other
    wait_until(lambda: api.get(f"/v1/rules/{rule_id}").body["status"] == "active", 30, "the rule active")
    # Something listens there now (the target, port 9, is closed: the forwarder may reset the connection).
    with contextlib.suppress(ConnectionResetError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    for rid in (rule_id, other.body["id"]):
        assert api.delete(f"/v1/rules/{rid}").status == 200


def test_owner_rate_limit(edge: ControlPlane) -> None:
    api = edge.api()
    resp = api.put("/v1/clients/edge/owners/team-a/rate-limit", {"bandwidth_in_bps": 1_000_000})
    assert resp.status == 200 and resp.body["status"] == "active", resp
    assert edge.client_view("edge")["owners"] == {"team-a": {"bandwidth_in_bps": 1_000_000}}
    resp = api.put("/v1/clients/edge/owners/team-a/rate-limit", {"bandwidth_in_bps": 0})
    assert resp.status == 400 and resp.error["code"] == "invalid_rate_limit"
    assert api.put("/v1/clients/ghost/owners/team-a/rate-limit", {"bandwidth_in_bps": 1}).status == 404
