"""One enrolled client's malformed stats report must not empty /metrics for the fleet
(issue 15 item 6). A real server, a real client, and a second enrolled client speaking
the wire protocol by hand with its genuine key."""

from __future__ import annotations

import queue
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from portunus.control import wire
from portunus.control.bundle import load_bundle
from portunus.control.pki import TLS_NAME
from portunus.control.signing import SESSION_CONTEXT, sign_bytes
from tests.portunus.control.support import ControlPlane, wait_until
from tests.support.net import free_port

GOOD_COUNTERS = {"bytes_in": 1, "bytes_out": 2, "connections_active": 0, "connections_total": 1,
                 "connect_failures": 0}
BAD_REPORTS = [
    {"r": {"bytes_out": 5, "connections_active": 0, "connections_total": 0, "connect_failures": 0}},  # no bytes_in
    {"r": {**GOOD_COUNTERS, "bytes_in": 10**400}},
    {"r": {**GOOD_COUNTERS, "bytes_in": -1}},
    {"r": {**GOOD_COUNTERS, "rejected": {"concurrency": "many"}}},
    {"r": {**GOOD_COUNTERS, "dropped": []}},
    {"r": "not counters"},
    {"": GOOD_COUNTERS},
]


class HandSession:
    """A control stream opened with an enrolled client's real key, sending what the test says."""

    def __init__(self, plane: ControlPlane, bundle_path: Path) -> None:
        b = load_bundle(bundle_path)
        self._out: queue.Queue[dict[str, Any] | None] = queue.Queue()
        creds = grpc.ssl_channel_credentials(root_certificates=b.server_cert_pem.encode())
        self.channel = grpc.secure_channel(b.endpoint, creds, options=(("grpc.ssl_target_name_override", TLS_NAME),))
        call = self.channel.stream_stream(wire.SESSION_METHOD, request_serializer=wire.encode,
                                          response_deserializer=wire.decode)
        self.responses = call(iter(self._out.get, None))
        challenge = next(self.responses)
        proof = sign_bytes(b.client_key(), wire.session_proof_bytes(challenge["nonce"], b.client), SESSION_CONTEXT)
        self.send(wire.hello(b.client, proof, 0, "hand"))
        assert next(self.responses)["type"] == "ruleset"  # authenticated: the server sent the full set

    def send(self, msg: dict[str, Any]) -> None:
        self._out.put(msg)

    def close(self) -> None:
        self._out.put(None)
        self.channel.close()


@pytest.fixture
def hand(plane: ControlPlane) -> Iterator[HandSession]:
    s = HandSession(plane, plane.enroll("rogue"))
    try:
        yield s
    finally:
        s.close()


def _scrape(plane: ControlPlane) -> str:
    try:
        return plane.metrics()
    except (urllib.error.URLError, ConnectionError) as e:
        raise AssertionError(f"/metrics failed: {e}") from None


def _scrape_ok(plane: ControlPlane) -> bool:
    try:
        _scrape(plane)
        return True
    except AssertionError:
        return False


def test_a_malformed_report_is_refused_and_the_fleet_keeps_its_metrics(plane: ControlPlane, hand: HandSession) -> None:
    client = plane.start_client(plane.enroll("good"), stats_interval_s=0.2)
    plane.wait_online("good")
    assert plane.push("good", "web", free_port(), "127.0.0.1:9").status == 201
    series = 'portunus_rule_bytes_total{client="good",direction="in",rule="web"}'
    wait_until(lambda: series in _scrape(plane), 15, "good client's series")

    for i, rules in enumerate(BAD_REPORTS):
        hand.send({"type": "stats", "rules": rules, "active_connections": 0})
        assert plane.server is not None
        # Until the server has dealt with it: refused (logged), or (the old failure) the scrape broke.
        wait_until(lambda i=i: plane.server.log().count('client "rogue": ignoring bad message: stats:') > i
                   or not _scrape_ok(plane), 10, f"bad report {i} handled")
        text = _scrape(plane)
        assert series in text and "portunus_server_clients_connected 2.0" in text, text[-2000:]
    hand.send({"type": "stats", "rules": {"r": GOOD_COUNTERS}, "active_connections": 10**400})
    hand.send({"type": "stats", "rules": {"r": GOOD_COUNTERS}, "active_connections": 3})
    wait_until(lambda: 'portunus_rule_bytes_total{client="rogue",direction="in",rule="r"} 1.0' in _scrape(plane),
               10, "the rogue client's valid report")

    hand.close()  # it leaves; the metrics stay whole
    wait_until(lambda: "portunus_server_clients_connected 1.0" in _scrape(plane), 15, "rogue gone")
    assert series in _scrape(plane)
    assert client.alive() and "Traceback" not in plane.server.log()
