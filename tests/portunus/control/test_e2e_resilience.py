"""Failure cases with real processes: kill -9 of the server, restart and re-sync,
tampered rule sets, a second server on the same data dir, unusable data dirs."""

from __future__ import annotations

import asyncio
import base64
import random
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portunus.control import wire
from portunus.control.mounts import MOUNTINFO_PATH, parse_mountinfo
from portunus.control.pki import load_private_key_pem
from portunus.control.ruleset import full_payload
from portunus.control.signing import sign_document
from tests.portunus.control.support import (
    ControlPlane,
    new_plane,
    refused,
    remove_plane,
    through,
    wait_until,
)
from tests.support.net import ExchangeServer, free_port
from tests.support.proc import run_cli

PAYLOAD_BYTES = 256 * 1024


@pytest.fixture
def target():
    srv = ExchangeServer(lambda tag: PAYLOAD_BYTES, random.Random(7))
    try:
        yield srv
    finally:
        srv.close()


def test_kill9_server_forwarding_continues_restart_resyncs(plane: ControlPlane, target: ExchangeServer) -> None:
    client = plane.start_client(plane.enroll("edge"))
    plane.wait_online("edge")
    p1, p2 = free_port(), free_port()
    r1 = plane.push("edge", "one", p1, f"127.0.0.1:{target.port}")
    assert r1.status == 201, r1
    through(p1, target, b"before-kill-0001", PAYLOAD_BYTES)

    assert plane.server is not None
    plane.server.kill9()
    client.wait_log(" down (")  # it noticed
    for i in range(3):
        through(p1, target, f"server-dead-{i:04d}".encode(), PAYLOAD_BYTES)
    assert client.stats()["control"]["connected"] is False

    plane.start_server()  # same data dir: the kernel dropped the dead server's lock
    plane.wait_online("edge")
    wait_until(lambda: client.stats()["control"]["sessions"] == 2, 15, "second session")
    rule = plane.api().get(f"/v1/rules/{r1.body['id']}")
    assert rule.status == 200 and rule.body["status"] == "active" and rule.body["name"] == "one"
    assert ("rule.create", "ok") in {(e["action"], e["result"]) for e in plane.api().get("/v1/audit").body["entries"]}
    through(p1, target, b"after-restart-01", PAYLOAD_BYTES)

    r2 = plane.push("edge", "two", p2, f"127.0.0.1:{target.port}")
    assert r2.status == 201, r2
    through(p2, target, b"second-rule-0001", PAYLOAD_BYTES)
    assert client.stats()["control"]["ruleset_version"] == plane.client_view("edge")["ruleset_version"]

    # A change made while the client is away reaches it when it comes back.
    client.stop()
    resp = plane.api().delete(f"/v1/rules/{r1.body['id']}")
    assert resp.status == 200 and resp.body["client_acked"] is False
    client = plane.start_client(Path(client.args[2]))
    plane.wait_online("edge")
    wait_until(lambda: client.stats()["control"]["ruleset_version"] == plane.client_view("edge")["ruleset_version"],
               15, "client synced")
    assert refused(p1)
    through(p2, target, b"resynced-rule-02", PAYLOAD_BYTES)


class RogueServer:
    """Holds the real server's TLS identity (so the client's pin matches) and sends
    whatever rule-set messages the test gives it, recording the client's answers."""

    def __init__(self, data_dir: Path, port: int, messages: list[dict[str, Any]]) -> None:
        self.cert = (data_dir / "tls" / "server.crt").read_bytes()
        self.key = (data_dir / "tls" / "server.key").read_bytes()
        self.port = port
        self.messages = messages
        self.received: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._started.wait(15), "rogue server did not start"

    async def _session(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.write(wire.challenge(base64.b64encode(b"n" * 32).decode()))
        self.received.append(await context.read())  # hello (not checked: we are the rogue)
        for m in self.messages:
            await context.write(m)
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            self.received.append(msg)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(wire.SERVICE, {
            "Session": grpc.stream_stream_rpc_method_handler(
                self._session, request_deserializer=wire.decode, response_serializer=wire.encode)}),))
        server.add_secure_port(f"127.0.0.1:{self.port}", grpc.ssl_server_credentials([(self.key, self.cert)]))
        await server.start()
        self._started.set()
        await self._stop.wait()
        await server.stop(0)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_tampered_rule_sets_are_rejected_and_old_rules_keep_running(plane: ControlPlane, target: ExchangeServer) -> None:
    decoy = ExchangeServer(lambda tag: 1, random.Random(8))
    try:
        client = plane.start_client(plane.enroll("edge"))
        plane.wait_online("edge")
        port = free_port()
        assert plane.push("edge", "web", port, f"127.0.0.1:{target.port}").status == 201
        through(port, target, b"genuine-rule-001", PAYLOAD_BYTES)
        version = client.stats()["control"]["ruleset_version"]
        spec = plane.api().get("/v1/rules?client=edge").body["rules"][0]["rule"]
        evil = {**spec, "target": f"127.0.0.1:{decoy.port}"}
        real_key = load_private_key_pem((plane.data_dir / "tls" / "signing.key").read_bytes())

        altered = sign_document(real_key, full_payload("edge", version + 1, [spec], {}))
        altered["payload"] = altered["payload"].replace(str(target.port), str(decoy.port))
        attacks = {
            "altered after signing": altered,
            "signed by another key": sign_document(Ed25519PrivateKey.generate(),
                                                   full_payload("edge", version + 1, [evil], {})),
            "stale version": sign_document(real_key, full_payload("edge", version - 1, [evil], {})),
            "for another client": sign_document(real_key, full_payload("other", version + 1, [evil], {})),
        }
        assert plane.server is not None
        plane.server.kill9()
        rogue = RogueServer(plane.data_dir, plane.control_port, [wire.ruleset(s) for s in attacks.values()])
        try:
            wait_until(lambda: client.stats()["control"]["rulesets_rejected"] == len(attacks), 20,
                       "client to refuse every forged rule set")
            answers = [m for m in rogue.received if m.get("type") == "rejected"]
        finally:
            rogue.close()
        reasons = [a["reason"] for a in answers]
        assert len(reasons) == 4, rogue.received
        assert "bad signature" in reasons[0] and "bad signature" in reasons[1]
        assert "stale rule set" in reasons[2]
        assert "'other'" in reasons[3]
        assert client.stats()["control"]["ruleset_version"] == version
        assert not any(m.get("type") == "ack" for m in rogue.received)
        log = client.log()
        assert log.count("rule set refused, keeping the 1 running rule(s)") == 4

        # The genuine rule is still the running one: traffic reaches the real target, never the decoy.
        through(port, target, b"after-attacks-01", PAYLOAD_BYTES)
        assert decoy.accepted == 0

        # The real server comes back; the client converges to it again.
        plane.start_server()
        plane.wait_online("edge")
        through(port, target, b"after-return-001", PAYLOAD_BYTES)
    finally:
        decoy.close()


def test_second_server_on_same_data_dir_is_refused(plane: ControlPlane) -> None:
    r = run_cli("portunus-server", "--data-dir", str(plane.data_dir), "serve")
    assert r.returncode == 1
    assert plane.server is not None
    assert f"another portunus-server (pid {plane.server.pid}) is already using this data dir" in r.stderr
    assert plane.server.alive()
    assert plane.api().get("/v1/rules").status == 200


def _tmpfs_dir() -> Path:
    """A fresh dir on a tmpfs mount (/dev/shm on Debian)."""
    mounts = parse_mountinfo(Path(MOUNTINFO_PATH).read_text())
    for m in mounts:
        if m.fs_type == "tmpfs" and m.mount_point == "/dev/shm":
            return Path(tempfile.mkdtemp(prefix="portunus-test-", dir="/dev/shm"))
    pytest.fail("no tmpfs at /dev/shm on this host; the tmpfs refusal cannot be shown")


def test_tmpfs_data_dir_is_refused() -> None:
    d = _tmpfs_dir()
    try:
        plane_toml = new_plane()
        try:
            shutil.copy(plane_toml.data_dir / "server.toml", d / "server.toml")
        finally:
            remove_plane(plane_toml)
        r = run_cli("portunus-server", "--data-dir", str(d), "serve", timeout_s=60)
        assert r.returncode == 2, r.stderr
        assert "is on tmpfs" in r.stderr and "persistent disk" in r.stderr
        assert not (d / "state.db").exists()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_server_toml_exits_2_naming_file_and_key() -> None:
    plane = new_plane()
    try:
        toml = plane.data_dir / "server.toml"
        toml.write_text(toml.read_text() + 'colour = "blue"\ncontrol_listen_typo = "x"\n')
        r = run_cli("portunus-server", "--data-dir", str(plane.data_dir), "serve")
        assert r.returncode == 2
        assert f"error: {toml}: colour: unknown key" in r.stderr
        assert f"error: {toml}: control_listen_typo: unknown key" in r.stderr
    finally:
        remove_plane(plane)
