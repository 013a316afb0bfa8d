"""SNI routing through a real `portunus-standalone`, with real TLS clients and servers.

Three TLS servers (an exact name, a wildcard, the fallback) sit behind one
listening port; Python ssl clients and `openssl s_client` that verify the
server's certificate against only the server they expect reach it by name.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.net import free_port, recv_exact, tcp_server
from tests.support.proc import scrape, stats_of
from tests.support.tls import (
    NamedServer,
    client_hello,
    intact,
    reply_bytes,
    talk,
    tls_talk,
    write_cert,
)
from tests.support.wait import wait_for

BULK_BYTES = 16 << 20


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    made = {}
    for name, hosts in (("exact", ["a.example.com"]), ("wild", ["*.wild.example.com"]),
                        ("fallback", ["fallback.example.com", "other.example.org"])):
        cert, key = write_cert(d, name, hosts)
        made[name] = (NamedServer(name, cert, key), cert)
    try:
        yield made
    finally:
        for srv, _cert in made.values():
            srv.close()


def sni_toml(port: int, servers: dict, extra_rule: str = "", fallback: bool = True) -> str:
    out = ""
    for name, pattern in (("exact", "A.example.com"), ("wild", "*.wild.example.com")):
        out += (f'[[rule]]\nname = "{name}"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
                f'target = "127.0.0.1:{servers[name][0].port}"\nsni_pattern = "{pattern}"\n{extra_rule}\n')
    if fallback:
        out += (f'[[rule]]\nname = "fallback"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
                f'target = "127.0.0.1:{servers["fallback"][0].port}"\n{extra_rule}\n')
    return out


def pipe_fds(pid: int) -> int:
    """Pipes the process holds: the splice path's (the copy path has none)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return n


def test_tls_clients_reach_servers_by_name_exact_wildcard_fallback(standalone, servers):
    port, mport = free_port(), free_port()
    st = standalone(sni_toml(port, servers), metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
    cert = {name: c for name, (_srv, c) in servers.items()}
    payload = os.urandom(100_000)

    # Exact (case-insensitive both in the pattern and the client's name).
    r = tls_talk(port, "a.EXAMPLE.com", cert["exact"], payload, reply_size=300_000)
    assert r[0] == "id:exact tls" and intact(r, payload)
    # Wildcard, one label and two labels deep.
    for name in ("x.wild.example.com", "deep.x.wild.example.com"):
        if name.count(".") > 3:  # a certificate wildcard covers one label: verify the routing, not the name
            ctx = ssl.create_default_context(cafile=str(cert["wild"]))
            ctx.check_hostname = False
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                    ctx.wrap_socket(raw, server_hostname=name) as tls:
                r = talk(tls, payload, 1000)
        else:
            r = tls_talk(port, name, cert["wild"], payload, reply_size=1000)
        assert r[0] == "id:wild tls" and intact(r, payload), name
    # The wildcard's own suffix and unknown names go to the fallback.
    for name in ("wild.example.com", "other.example.org"):
        ctx = ssl.create_default_context(cafile=str(cert["fallback"]))
        ctx.check_hostname = name == "other.example.org"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            r = talk(tls, payload, 1000)
        assert r[0] == "id:fallback tls" and intact(r, payload), name
    # What each server saw as SNI: the client's own name, replayed untouched.
    assert servers["exact"][0].server_names[-1] == "a.EXAMPLE.com"
    assert servers["wild"][0].server_names[-2:] == ["x.wild.example.com", "deep.x.wild.example.com"]

    # Plain text goes to the fallback too.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        r = talk(s, payload, 1000)
    assert r[0] == "id:fallback plain" and intact(r, payload)

    snap = stats_of(f"127.0.0.1:{mport}")["rules"]
    assert snap["exact"]["sni_routes"] == {"exact": 1}
    assert snap["wild"]["sni_routes"] == {"wildcard": 2}
    assert snap["fallback"]["sni_routes"] == {"fallback": 2, "not_tls": 1}
    # The peeked ClientHello counts as payload: client->target bytes exceed the payload by it.
    assert snap["exact"]["bytes_in"] > len(payload) + 200
    metrics = scrape(f"127.0.0.1:{mport}")
    listener = f"127.0.0.1:{port}"
    for rule, result, n in (("exact", "exact", 1), ("wild", "wildcard", 2), ("fallback", "fallback", 2),
                            ("fallback", "not_tls", 1)):
        line = f'portunus_sni_routes_total{{listener="{listener}",result="{result}",rule="{rule}"}} {float(n)}'
        assert line in metrics, line
    assert st.proc.poll() is None


def test_openssl_s_client_by_name(standalone, servers):
    port = free_port()
    standalone(sni_toml(port, servers), wait_ports=[])
    for name, expect in (("a.example.com", "exact"), ("b.wild.example.com", "wild"),
                         ("nobody.example.net", "fallback")):
        cafile = servers[expect][1]
        out = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, "-CAfile", str(cafile),
             "-verify_return_error", "-quiet"],
            input=b"4 6\nping", capture_output=True, timeout=30)
        assert out.stdout.startswith(f"id:{expect} tls\n".encode()), (name, out.stdout, out.stderr)
        assert reply_bytes(6) + hashlib.sha256(b"ping").hexdigest().encode() in out.stdout, out.stdout


def test_splice_after_the_peek(standalone, servers):
    """A bulk transfer through an SNI route moves by splice: pipes appear in the forwarder."""
    port, mport = free_port(), free_port()
    st = standalone(sni_toml(port, servers), metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
    assert pipe_fds(st.proc.pid) == 0
    payload = os.urandom(BULK_BYTES)
    r = tls_talk(port, "bulk.wild.example.com", servers["wild"][1], payload, reply_size=BULK_BYTES)
    assert r[0] == "id:wild tls" and intact(r, payload)
    rules = stats_of(f"127.0.0.1:{mport}")["rules"]
    assert rules["wild"]["splice_connections"] == 1
    assert pipe_fds(st.proc.pid) > 0, "no splice pipe was ever opened: the relay copied everything"


def test_no_fallback_closes_unknown_names_and_plain_text(standalone, servers):
    port, mport = free_port(), free_port()
    standalone(sni_toml(port, servers, fallback=False), metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
    accepted = servers["fallback"][0].accepted
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        tls_talk(port, "unknown.example.net", servers["fallback"][1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(100) == b""
    assert servers["fallback"][0].accepted == accepted
    closed = stats_of(f"127.0.0.1:{mport}")["sni_listeners"][f"127.0.0.1:{port}"]
    assert (closed["no_match"], closed["not_tls"]) == (1, 1)


def test_slow_client_is_closed_after_the_peek_limit(standalone, servers):
    """A client that stops halfway through its ClientHello is closed once sni_peek_timeout_secs pass."""
    port, mport = free_port(), free_port()
    standalone(sni_toml(port, servers, extra_rule="sni_peek_timeout_secs = 1.5"),
               metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
    accepted = {name: srv.accepted for name, (srv, _c) in servers.items()}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes([0x16, 3, 1, 2, 0, 1, 0, 1, 0xFC, 3, 3]))  # a ClientHello's first 11 bytes
        t0 = time.monotonic()
        s.settimeout(0.8)
        with pytest.raises(TimeoutError):
            s.recv(1)  # still open well before the limit
        s.settimeout(10)
        assert s.recv(1) == b""
        waited = time.monotonic() - t0
    assert 1.0 < waited < 6.0, waited
    assert {name: srv.accepted for name, (srv, _c) in servers.items()} == accepted
    snap = stats_of(f"127.0.0.1:{mport}")
    assert snap["sni_listeners"][f"127.0.0.1:{port}"]["timeout"] == 1


def test_too_large_first_flight_goes_to_the_fallback(standalone, servers):
    port, mport = free_port(), free_port()
    standalone(sni_toml(port, servers, extra_rule="sni_peek_max_bytes = 1024"),
               metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
    accepted = servers["fallback"][0].accepted
    # A record header announcing a 4 KiB ClientHello: it cannot end within 1024 bytes,
    # so it is not read further and goes, as it is, to the fallback.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes([0x16, 3, 1, 0x10, 4, 1, 0, 0x10, 0]))
        wait_for(lambda: servers["fallback"][0].accepted > accepted, 10, "the fallback to get the connection")
    rules = stats_of(f"127.0.0.1:{mport}")["rules"]
    assert rules["fallback"]["sni_routes"] == {"too_large": 1}
    assert rules["fallback"]["bytes_in"] == 9


def test_reload_keeps_connections_and_switches_a_listener_to_sni(standalone, servers, tmp_path):
    """A plain rule on a port gains SNI siblings by reload: the socket and its live connection stay."""
    port = free_port()
    plain = (f'[[rule]]\nname = "fallback"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
             f'target = "127.0.0.1:{servers["fallback"][0].port}"\n')
    st = standalone(plain, wait_ports=[])
    live = socket.create_connection(("127.0.0.1", port), timeout=10)
    live.sendall(b"3 2\nab")  # one byte short: the server waits for it
    assert live.recv(100) == b"id:fallback plain\n"
    st.reload(sni_toml(port, servers))
    st.wait_log("reloaded")
    r = tls_talk(port, "a.example.com", servers["exact"][1])
    assert r[0] == "id:exact tls"
    live.sendall(b"c")  # the connection opened before the reload still works
    assert recv_exact(live, 2 + 65) == reply_bytes(2) + hashlib.sha256(b"abc").hexdigest().encode() + b"\n"
    live.close()
    # Back to one plain rule: SNI routing ends, TLS to any name reaches the fallback.
    st.reload(plain)
    wait_for(lambda: st.log().count("reloaded") == 2, 10, "the second reload")
    assert _reaches(port, "a.example.com", servers["fallback"][1])


def _reaches(port: int, name: str, cafile: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            return talk(tls, b"x", 1)[0] == "id:fallback tls"
    except (OSError, ssl.SSLError):
        return False


def test_proxy_header_then_the_peeked_hello_and_only_the_hello_counted(standalone, tmp_path):
    """PROXY v1 header first (not payload), then the ClientHello exactly as the client sent it
    (payload); a capped rule (copy path) behaves the same."""
    captured: list[bytes] = []

    def capture(conn: socket.socket) -> None:
        data = b""
        while True:
            b = conn.recv(65536)
            if not b:
                break
            data += b
        captured.append(data)

    hello = client_hello("proxy.example.com")
    with tcp_server(capture) as target:
        port, capped_port, mport = free_port(), free_port(), free_port()
        toml = ""
        for name, p, extra in (("proxied", port, ""), ("capped", capped_port, "rate_limit = { bandwidth_in_bps = 100000 }\n")):
            toml += (f'[[rule]]\nname = "{name}"\nlisten_addr = "127.0.0.1"\nlisten_port = {p}\n'
                     f'sni_pattern = "proxy.example.com"\n'
                     f'targets = [{{host = "127.0.0.1", port = {target.port}, proxy_protocol = "v1"}}]\n{extra}')
        standalone(toml, metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
        for p in (port, capped_port):
            with socket.create_connection(("127.0.0.1", p), timeout=10) as s:
                s.sendall(hello[:50])  # in two pieces: the peek waits for the rest
                time.sleep(0.1)
                s.sendall(hello[50:] + b"after")
                local = s.getsockname()
            header = f"PROXY TCP4 127.0.0.1 127.0.0.1 {local[1]} {p}\r\n".encode()
            wait_for(lambda h=header: any(c == h + hello + b"after" for c in captured), 10,
                     f"header + hello + rest at the target ({captured!r:.200})")
        rules = stats_of(f"127.0.0.1:{mport}")["rules"]
        for name in ("proxied", "capped"):
            wait_for(lambda name=name: stats_of(f"127.0.0.1:{mport}")["rules"][name]["bytes_in"] == len(hello) + 5,
                     10, f"{name}: bytes_in = hello + rest, header not counted")
        assert rules["capped"]["copy_connections"] == 1 and rules["proxied"]["splice_connections"] == 1


def test_two_workers_route_by_name_and_sum_counters(standalone, servers):
    port, mport = free_port(), free_port()
    standalone("[global]\nworkers = 2\n" + sni_toml(port, servers), metrics_addr=f"127.0.0.1:{mport}",
               wait_ports=[])
    for i in range(8):
        assert tls_talk(port, f"w{i}.wild.example.com", servers["wild"][1])[0] == "id:wild tls"
        assert tls_talk(port, "a.example.com", servers["exact"][1])[0] == "id:exact tls"
    snap = stats_of(f"127.0.0.1:{mport}")
    assert snap["rules"]["wild"]["sni_routes"] == {"wildcard": 8}
    assert snap["rules"]["exact"]["sni_routes"] == {"exact": 8}
    assert snap["sni_listeners"][f"127.0.0.1:{port}"]["no_match"] == 0
