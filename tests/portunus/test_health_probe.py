"""HealthMonitor on a real event loop with real sockets: a name that resolves to several
addresses is probed on each in turn (the resolver's answer is given: no DNS name here
resolves to two loopback addresses)."""

from __future__ import annotations

import socket
import threading

from portunus.dataplane.health import HEALTH_FALL, HealthMonitor
from portunus.dataplane.loop import EventLoop
from tests.support.net import free_port
from tests.support.wait import wait_for


def _monitor(loop: EventLoop, answer: list[tuple[int, str, int]], changes: list[int]) -> HealthMonitor:
    def resolve(probe, target):  # the answer a DNS lookup would give, delivered on the loop thread
        loop.call_soon_threadsafe(probe.resolved, target, answer, None)

    return HealthMonitor(loop, resolve, "r", [("svc.example", answer[0][2])], 1.0, lambda: changes.append(1))


def test_probe_tries_every_resolved_address():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    loop = EventLoop("test")
    loop.start()
    changes: list[int] = []
    try:
        # ::1 first (nothing listens there, or no IPv6 at all), then the address that answers.
        mon = loop.call_and_wait(_monitor, loop, [(socket.AF_INET6, "::1", port), (socket.AF_INET, "127.0.0.1", port)],
                                 changes)
        loop.call_and_wait(mon.start)
        th = mon.targets[("svc.example", port)]
        wait_for(lambda: th.probes >= 3, 10, "three probes")
        assert (th.up, th.failures, changes) == (True, 0, [])

        dead = free_port()
        mon2 = loop.call_and_wait(_monitor, loop, [(socket.AF_INET6, "::1", dead), (socket.AF_INET, "127.0.0.1", dead)],
                                  changes)
        loop.call_and_wait(mon2.start)
        th2 = mon2.targets[("svc.example", dead)]
        wait_for(lambda: not th2.up, 10, "the dead name to go down")
        assert th2.failures == HEALTH_FALL and th2.went_down == 1 and changes == [1]
        loop.call_and_wait(mon.stop)
        loop.call_and_wait(mon2.stop)
    finally:
        stop.set()
        srv.close()
        loop.stop()
        loop.close()
