"""Server side at fleet scale: list calls page and filter, overlap checks follow every change, the fd
limit is raised (real server, SQLite, no client process).

Rules are created with ?wait=false for clients that are enrolled on paper
only (no process), so they stay pending: what is tested is the server's view.
"""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.portunus.control.support import ControlPlane, new_plane, remove_plane
from tests.support.net import wait_port
from tests.support.proc import BIN

PAGE = 7


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    """A server whose acks time out fast: no client process runs here."""
    p = new_plane(ack_timeout_secs=0.5)
    try:
        p.start_server()
        yield p
    finally:
        remove_plane(p)


def _rule(client: str, name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"client": client, "name": name, "listen_addr": "127.0.0.1", "listen_port": port,
            "target": "127.0.0.1:9", **extra}


def _create(plane: ControlPlane, body: dict[str, Any]) -> int:
    resp = plane.api().post("/v1/rules?wait=false", body)
    assert resp.status == 202, resp
    return int(resp.body["id"])


def _pages(plane: ControlPlane, path: str, key: str) -> list[list[dict[str, Any]]]:
    pages, after = [], 0
    while True:
        sep = "&" if "?" in path else "?"
        resp = plane.api().get(f"{path}{sep}limit={PAGE}&after={after}")
        assert resp.status == 200, resp
        pages.append(resp.body[key])
        if resp.body["next_after"] is None:
            return pages
        after = resp.body["next_after"]


def test_pages_and_filters(plane: ControlPlane) -> None:
    for name in ("a", "b", "c"):
        plane.enrollment_uri(name)
    ids = {name: [_create(plane, _rule(name, f"{name}{i}", 21000 + i)) for i in range(n)]
           for name, n in (("a", 16), ("b", 3), ("c", 0))}
    pages = _pages(plane, "/v1/rules", "rules")
    assert [len(p) for p in pages] == [7, 7, 5]
    assert [r["id"] for p in pages for r in p] == sorted(ids["a"] + ids["b"])
    a_pages = _pages(plane, "/v1/rules?client=a", "rules")
    assert [r["name"] for p in a_pages for r in p] == [f"a{i}" for i in range(16)]
    assert {r["client"] for p in a_pages for r in p} == {"a"}
    # Exactly one full page left: next_after is null, not a pointer to an empty page.
    resp = plane.api().get(f"/v1/rules?client=a&limit={PAGE}&after={ids['a'][8]}")
    assert [r["id"] for r in resp.body["rules"]] == ids["a"][9:16] and resp.body["next_after"] is None
    assert plane.api().get("/v1/rules?client=c").body == {"rules": [], "next_after": None}

    clients = _pages(plane, "/v1/clients", "clients")
    assert [c["name"] for p in clients for c in p] == ["a", "b", "c"]
    one = plane.api().get("/v1/clients?client=b").body
    assert [c["name"] for c in one["clients"]] == ["b"] and one["clients"][0]["rules"]["pending"] == 3
    enrollments = plane.api().get("/v1/client-enrollments?client=c").body["enrollments"]
    assert [e["client"] for e in enrollments] == ["c"]

    for query, code in (("client=nobody", 404), ("limit=0", 400), ("limit=1001", 400), ("limit=x", 400),
                        ("after=-1", 400), ("clinet=a", 400)):
        for path in ("/v1/rules", "/v1/clients", "/v1/client-enrollments"):
            resp = plane.api().get(f"{path}?{query}")
            assert resp.status == code, (path, query, resp)
    assert "clinet" in plane.api().get("/v1/rules?clinet=a").error["message"]


def test_overlap_checks_follow_every_change(plane: ControlPlane) -> None:
    plane.enrollment_uri("a")
    plane.enrollment_uri("b")
    first = _create(plane, _rule("a", "first", 22000))
    resp = plane.api().post("/v1/rules?wait=false", _rule("a", "second", 22000))
    assert resp.status == 409 and resp.error["code"] == "port_in_use" and resp.error["conflicting_rule_id"] == first
    wide = plane.api().post("/v1/rules?wait=false", {"client": "a", "name": "wide", "listen_addr": "0.0.0.0",
                                                     "listen_ports": "21990-22010", "target": "127.0.0.1:1-21"})
    assert wide.status == 409 and '"first"' in wide.error["message"]
    _create(plane, _rule("b", "first", 22000))  # another client: its own ports
    # Moving "first" frees 22000 and takes 22001.
    assert plane.api().put(f"/v1/rules/{first}", _rule("a", "first", 22001)).status == 504  # offline: kept
    second = _create(plane, _rule("a", "second", 22000))
    assert plane.api().post("/v1/rules?wait=false", _rule("a", "third", 22001)).status == 409
    # A rule may be replaced on its own port; deleting it frees the port.
    assert plane.api().put(f"/v1/rules/{second}", _rule("a", "second", 22000, target="127.0.0.1:10")).status == 504
    assert plane.api().delete(f"/v1/rules/{first}").status == 200
    _create(plane, _rule("a", "third", 22001))
    # After a restart the index is rebuilt from state.db.
    assert plane.server is not None
    plane.server.stop()
    plane.start_server()
    resp = plane.api().post("/v1/rules?wait=false", _rule("a", "fourth", 22001))
    assert resp.status == 409 and '"third"' in resp.error["message"]
    resp = plane.api().post("/v1/rules?wait=false", _rule("a", "fourth", 22000))
    assert resp.status == 409 and '"second"' in resp.error["message"]
    _create(plane, _rule("a", "fourth", 22002))


def test_server_raises_its_fd_limit_for_a_fleet() -> None:
    """One fd per connected client: started with a soft limit of 256, the server raises it to the hard limit."""
    plane = new_plane()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = subprocess.Popen([str(BIN / "portunus-server"), "--data-dir", str(plane.data_dir), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    try:
        wait_port(plane.control_port, timeout_s=30)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
        assert soft == (str(hard) if hard != resource.RLIM_INFINITY else "unlimited")
    finally:
        proc.terminate()
        proc.wait(30)
        remove_plane(plane)
