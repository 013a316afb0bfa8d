"""SNI routing and health checks pushed over the operator API to a real portunus-client:
routing by name with real TLS clients, conflicts refused with 409 and audited, a rule
changed in place, counters reported to the server, target health in stats and metrics."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.portunus.control.support import ControlPlane, wait_until
from tests.portunus.test_health import Named
from tests.support.net import free_port
from tests.support.proc import run_cli
from tests.support.tls import NamedServer, intact, talk, tls_talk, write_cert


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    made = {}
    for name, hosts in (("exact", ["a.example.com", "b.example.com"]), ("wild", ["*.wild.example.com"]),
                        ("fallback", ["fallback.example.com"])):
        cert, key = write_cert(d, name, hosts)
        made[name] = (NamedServer(name, cert, key), cert)
    try:
        yield made
    finally:
        for srv, _cert in made.values():
            srv.close()


def _audit(edge: ControlPlane) -> list[dict]:
    resp = edge.api().get("/v1/audit?limit=500")
    assert resp.status == 200, resp
    return resp.body["entries"]


def test_sni_rules_pushed_routed_conflicts_refused_and_audited(edge: ControlPlane, servers) -> None:
    port = free_port()
    target = {name: f"127.0.0.1:{srv.port}" for name, (srv, _c) in servers.items()}
    ids = {}
    for name, pattern in (("sni-exact", "a.example.com"), ("sni-wild", "*.wild.example.com"), ("sni-fb", None)):
        extra = {"sni_pattern": pattern} if pattern else {}
        resp = edge.push("edge", name, port, target[name.removeprefix("sni-").replace("fb", "fallback")], **extra)
        assert resp.status == 201 and resp.body["status"] == "active", resp
        ids[name] = resp.body["id"]

    payload = b"x" * 50_000
    r = tls_talk(port, "a.example.com", servers["exact"][1], payload, 70_000)
    assert r[0] == "id:exact tls" and intact(r, payload)
    r = tls_talk(port, "n.wild.example.com", servers["wild"][1], payload, 70_000)
    assert r[0] == "id:wild tls" and intact(r, payload)
    r = tls_talk(port, "fallback.example.com", servers["fallback"][1], payload, 70_000)
    assert r[0] == "id:fallback tls" and intact(r, payload)

    # Conflicts are refused before anything reaches the client, naming the rule in the way.
    dup = edge.push("edge", "sni-dup", port, target["exact"], sni_pattern="A.example.com")
    assert dup.status == 409 and dup.error["code"] == "sni_conflict", dup
    assert 'sni_pattern "a.example.com" on tcp 127.0.0.1:' in dup.error["message"]
    assert f'rule "sni-exact" (id {ids["sni-exact"]})' in dup.error["message"]
    fb2 = edge.push("edge", "sni-fb2", port, target["fallback"])
    assert fb2.status == 409 and "two fallback rules" in fb2.error["message"] and '"sni-fb"' in fb2.error["message"]
    udp = edge.push("edge", "sni-udp", free_port(), target["exact"], sni_pattern="u.example.com", protocol="udp")
    assert udp.status == 400 and "sni_pattern: only for tcp rules" in udp.error["message"], udp

    # Change a rule's pattern in place: the next connection follows it.
    new = {"name": "sni-exact", "listen_addr": "127.0.0.1", "listen_port": port, "target": target["exact"],
           "sni_pattern": "b.example.com"}
    resp = edge.api().put(f"/v1/rules/{ids['sni-exact']}", new)
    assert resp.status == 200 and resp.body["status"] == "active", resp
    assert tls_talk(port, "b.example.com", servers["exact"][1])[0] == "id:exact tls"

    entries = _audit(edge)
    results = [(e["action"], e["result"]) for e in entries if "sni-" in (e["target"] or "")]
    assert results.count(("rule.create", "ok")) >= 3
    assert ("rule.update", "ok") in results
    assert any(a == "rule.create" and res.startswith("error 409 sni_conflict") for a, res in results)

    # Counters travel: per rule on the server's API and fleet metrics.
    def routed() -> dict | None:
        stats = edge.api().get(f"/v1/rules/{ids['sni-wild']}").body["stats"]
        return stats if stats and stats.get("sni_routes", {}).get("wildcard") == 1 else None
    wait_until(routed, 15, "the client's stats report with SNI counters")
    text = edge.metrics()
    assert f'portunus_sni_routes_total{{client="edge",listener="127.0.0.1:{port}",result="wildcard",' \
           f'rule="sni-wild"}} 1.0' in text

    # The CLI pushes an SNI rule onto the same port, and refuses a clash with the API's words.
    r = run_cli("portunus-server", "push-rule", "edge", str(port), target["wild"], "--name", "sni-cli",
                "--listen-addr", "127.0.0.1", "--sni-pattern", "c.example.com", "--http-endpoint",
                edge.http_endpoint, env={"PORTUNUS_OPERATOR_TOKEN": edge.token})
    assert r.returncode == 0, r.stderr
    ids["sni-cli"] = int(r.stdout.strip())
    ctx = ssl.create_default_context(cafile=str(servers["wild"][1]))
    ctx.check_hostname = False  # the wild server's certificate does not name c.example.com: trust the key only
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="c.example.com") as tls:
        assert talk(tls, b"hi", 3)[0] == "id:wild tls"
    r = run_cli("portunus-server", "push-rule", "edge", str(port), target["wild"], "--name", "sni-cli2",
                "--listen-addr", "127.0.0.1", "--sni-pattern", "c.example.com", "--http-endpoint",
                edge.http_endpoint, env={"PORTUNUS_OPERATOR_TOKEN": edge.token})
    assert r.returncode == 1 and 'sni_pattern "c.example.com"' in r.stderr and '"sni-cli"' in r.stderr, r.stderr

    for rule_id in ids.values():
        assert edge.api().delete(f"/v1/rules/{rule_id}").status == 200


def test_health_checked_rule_pushed_skips_a_stopped_target(edge: ControlPlane) -> None:
    port, a_port = free_port(), free_port()
    a, b = Named("A", a_port), Named("B")
    try:
        resp = edge.api().post("/v1/rules", {
            "client": "edge", "name": "checked", "listen_addr": "127.0.0.1", "listen_port": port,
            "health_check_interval_secs": 1,
            "targets": [{"host": "127.0.0.1", "port": a_port, "priority": 0},
                        {"host": "127.0.0.1", "port": b.port, "priority": 1}]})
        assert resp.status == 201, resp
        rule_id = resp.body["id"]
        assert edge.api().get(f"/v1/rules/{rule_id}").body["rule"]["health_check_interval_secs"] == 1

        def reached() -> str:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"hi")
                return s.recv(10).decode()
        assert reached() == "A"
        a.close()
        target_a = f"127.0.0.1:{a_port}"
        wait_until(lambda: edge.edge_client.stats()["rules"]["checked"]["target_health"][target_a] == "down",  # type: ignore[attr-defined]
                   5, "the client to mark A down")
        assert reached() == "B"
        wait_until(lambda: (edge.api().get(f"/v1/rules/{rule_id}").body["stats"] or {}).get(
            "target_health", {}).get(target_a) == "down", 15, "the server to see A down")
        assert f'rule "checked": target {target_a} is down' in edge.edge_client.log()  # type: ignore[attr-defined]
        assert edge.api().delete(f"/v1/rules/{rule_id}").status == 200
    finally:
        a.close()
        b.close()
