"""Reconnects across server outages: one control connection per client, and a fast return.

Real portunus-server processes stopped and started on the same data dir; a
real portunus-client (or an in-process ControlClient on a real Forwarder)
over the real TLS gRPC stream. Connections are counted from /proc.
"""

from __future__ import annotations

import datetime
import time

from benchmarks.fleet.procstat import established_to
from portunus.control.client import ClientOptions
from portunus.metrics import PREFIX
from tests.portunus.control.support import ControlPlane, in_process_client, wait_until

OUTAGES = 5
OUTAGE_S = 1.5
# Connections dialed during an outage completed once the server was back (the
# leak this guards against); give stragglers this long before counting.
SETTLE_S = 1.0


def _outage(plane: ControlPlane, down_s: float) -> None:
    assert plane.server is not None
    plane.server.stop()
    time.sleep(down_s)
    plane.start_server()


def test_one_control_connection_across_outages(plane: ControlPlane) -> None:
    client = plane.start_client(plane.enroll("edge"))  # --reconnect-max-secs 1: many attempts per outage
    plane.wait_online("edge")
    assert established_to(client.pid, plane.control_port) == 1
    counts = []
    for i in range(OUTAGES):
        _outage(plane, OUTAGE_S)
        wait_until(lambda i=i: client.stats()["control"]["sessions"] == i + 2 and client.stats()["control"]["connected"],
                   60, f"session {i + 2}")
        time.sleep(SETTLE_S)
        counts.append(established_to(client.pid, plane.control_port))
    assert counts == [1] * OUTAGES, f"control connections held by the client after each outage: {counts}"
    assert "reached" in client.log()  # the channel noticed the server back (see the fast-return test)
    # When the client was last seen is written in batches, and at the latest when the server stops.
    client.stop()
    left_at = time.time()
    _outage(plane, 0)
    seen = plane.client_view("edge")["last_seen_at"]
    assert datetime.datetime.fromisoformat(seen).timestamp() >= left_at - 2.0, seen


def test_fast_return_after_outage_whatever_the_backoff(plane: ControlPlane) -> None:
    """With every backoff delay drawn from [0, 600 s], only the channel noticing the server can bring it back."""
    options = ClientOptions(stats_interval_s=5.0, reconnect_base_s=600.0, reconnect_max_s=600.0)
    with in_process_client(plane.enroll("edge"), options) as control:
        wait_until(lambda: control.connected, 30, "first session")
        _outage(plane, OUTAGE_S)
        wait_until(lambda: control.sessions == 2 and control.connected, 60, "second session")
        fast = control.metrics.registry.get_sample_value(f"{PREFIX}_client_fast_reconnects_total")
        assert fast is not None and fast >= 1
        plane.wait_online("edge")
