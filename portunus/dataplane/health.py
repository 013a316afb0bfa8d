"""Active health checks: periodic TCP connect probes of a rule's targets, on the event loop.

A rule with `health_check_interval_secs` gets one `HealthMonitor`. Each
target is probed with a non-blocking connect (no thread per probe: the
socket waits on the forwarder's epoll loop, a loop timer bounds it) that is
closed as soon as it completes. HEALTH_FALL failed probes in a row mark a
target down; HEALTH_RISE passed probes in a row mark it up again. While a
target is between states, it is probed four times as often (HAProxy's
`fastinter` idea), so a blackholed target is down within
interval + 2 * timeout + interval / 4 <= 1.75 intervals, and a refused one
within 1.25 intervals.

New connections skip targets that are down; if every target is down, they
try all of them in priority order (the checks may be wrong, the targets may
be back). Transitions are logged (only transitions) and counted; the state
of every target is in the forwarder's snapshot, hence in `stats` and
/metrics.

With `workers = N`, every worker process probes on its own: N probes per
target and interval, ~0.23 ms of CPU each on the 2-core test host, loopback
kernel work of both ends included (results/sni/README.md), so 10 targets at
1 s on 2 workers cost ~0.5% of a CPU. Sharing state through the supervisor
would need a probing loop there and a cross-process read on every dial-list
rebuild, to save that half percent; workers may disagree for a fast re-probe
(interval / 4) around a transition, and each logs its own.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from typing import Any

from portunus.dataplane.loop import EPOLLERR, EPOLLHUP, EPOLLOUT
from portunus.dataplane.tcp import Target, literal_family

log = logging.getLogger("portunus.health")

# Failed probes in a row that mark a target down, passed ones that mark it up:
# one lost SYN does not take a target out, one lucky connect does not bring it back.
HEALTH_FALL = 2
HEALTH_RISE = 2
# While a target is between states it is probed this many times per interval.
FAST_PROBES_PER_INTERVAL = 4
# A probe waits this share of the interval for the handshake, at most PROBE_TIMEOUT_MAX_S
# (the forwarder's connect timeout): fast enough that two timeouts plus the fast
# re-probe fit in two intervals.
PROBE_TIMEOUT_SHARE = 0.25
PROBE_TIMEOUT_MAX_S = 5.0

Key = tuple[str, int]  # (host as configured, port)


def display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TargetHealth:
    """What the checks know about one target."""

    __slots__ = ("host", "port", "label", "up", "streak", "probes", "failures", "went_down", "went_up",
                 "last_error", "probe", "timer")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.label = display(host, port)
        self.up = True        # assumed up until probes say otherwise: a new rule forwards at once
        self.streak = 0       # probes in a row that disagree with `up`
        self.probes = 0
        self.failures = 0
        self.went_down = 0
        self.went_up = 0
        self.last_error: str | None = None
        self.probe: Probe | None = None
        self.timer: Any = None


class HealthMonitor:
    """Probes the targets of one rule every `interval_s` on `loop`; loop thread only, but
    `usable` and `snapshot` may be read from any thread."""

    def __init__(self, loop: Any, resolve: Callable[[Any, Target], None], rule_name: str,
                 targets: Sequence[Key], interval_s: float, on_change: Callable[[], None],
                 previous: HealthMonitor | None = None) -> None:
        self.loop = loop
        self.resolve = resolve
        self.rule_name = rule_name
        self.interval_s = interval_s
        self.timeout_s = min(interval_s * PROBE_TIMEOUT_SHARE, PROBE_TIMEOUT_MAX_S)
        self.on_change = on_change
        self.stopped = False
        old = previous.targets if previous is not None else {}
        self.targets: dict[Key, TargetHealth] = {}
        for key in dict.fromkeys(targets):  # in order, each once
            th = TargetHealth(*key)
            before = old.get(key)
            if before is not None:  # a reload keeps what the checks learned
                for f in ("up", "probes", "failures", "went_down", "went_up", "last_error"):
                    setattr(th, f, getattr(before, f))
            self.targets[key] = th

    def same(self, targets: Sequence[Key], interval_s: float) -> bool:
        return interval_s == self.interval_s and list(dict.fromkeys(targets)) == list(self.targets)

    def start(self) -> None:
        # Spread the first probes so rules (and workers) loaded together do not probe in step.
        for th in self.targets.values():
            th.timer = self.loop.call_later(random.uniform(0, self.interval_s / FAST_PROBES_PER_INTERVAL),
                                            self._probe, th)

    def stop(self) -> None:
        self.stopped = True
        for th in self.targets.values():
            if th.timer is not None:
                th.timer.cancel()
                th.timer = None
            if th.probe is not None:
                th.probe.cancel()
                th.probe = None

    # ------------------------------------------------------------ probing (loop thread)

    def _probe(self, th: TargetHealth) -> None:
        th.timer = None
        if self.stopped:
            return
        th.probe = Probe(self, th)
        th.probe.start()

    def result(self, th: TargetHealth, ok: bool, error: str | None) -> None:
        """A probe of `th` ended: count it, maybe change state, schedule the next one."""
        th.probe = None
        if self.stopped:
            return
        th.probes += 1
        if not ok:
            th.failures += 1
            th.last_error = error
        if ok == th.up:
            th.streak = 0
        else:
            th.streak += 1
            if th.streak >= (HEALTH_RISE if ok else HEALTH_FALL):
                self._flip(th, ok, error)
        delay = self.interval_s if th.streak == 0 else self.interval_s / FAST_PROBES_PER_INTERVAL
        th.timer = self.loop.call_later(delay, self._probe, th)

    def _flip(self, th: TargetHealth, up: bool, error: str | None) -> None:
        th.up = up
        th.streak = 0
        if up:
            th.went_up += 1
            log.info('rule "%s": target %s is up (%d probes passed); new connections use it again',
                     self.rule_name, th.label, HEALTH_RISE)
        else:
            th.went_down += 1
            log.warning('rule "%s": target %s is down (%d probes failed, last: %s); new connections skip it',
                        self.rule_name, th.label, HEALTH_FALL, error)
            if not any(t.up for t in self.targets.values()):
                log.warning('rule "%s": every target is down; new connections try them all in priority order',
                            self.rule_name)
        self.on_change()

    # ------------------------------------------------------------ reading

    def usable(self, targets: list[Target]) -> list[Target]:
        """The dial list without targets that are down (all of it if every one is down)."""
        state = self.targets
        up = [t for t in targets if (th := state.get((t.host, t.port))) is None or th.up]
        return up or targets

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Counter maps by target, as `RuleStats` snapshots carry them (summed over workers)."""
        out: dict[str, dict[str, int]] = {k: {} for k in (
            "health_up", "health_checked", "health_probes", "health_probe_failures", "health_went_down",
            "health_went_up")}
        for th in list(self.targets.values()):
            out["health_up"][th.label] = int(th.up)
            out["health_checked"][th.label] = 1
            out["health_probes"][th.label] = th.probes
            out["health_probe_failures"][th.label] = th.failures
            out["health_went_down"][th.label] = th.went_down
            out["health_went_up"][th.label] = th.went_up
        return out


class Probe:
    """One TCP connect to a target: success once a handshake completes, failure on an
    error or after the monitor's timeout. A DNS name is resolved first (off the loop) and
    its addresses are tried in order, as a forwarded connection would."""

    __slots__ = ("mon", "th", "sock", "fd", "timer", "done", "addrs")

    def __init__(self, mon: HealthMonitor, th: TargetHealth) -> None:
        self.mon = mon
        self.th = th
        self.sock: socket.socket | None = None
        self.fd = -1
        self.timer: Any = None
        self.done = False
        self.addrs: list[tuple[int, str]] = []  # resolved addresses not tried yet

    def start(self) -> None:
        th = self.th
        self.timer = self.mon.loop.call_later(self.mon.timeout_s, self._timed_out)
        family = literal_family(th.host)
        if family is None:
            self.mon.resolve(self, Target(th.host, th.port, None, None))
        else:
            self._connect(family, th.host)

    def resolved(self, target: Target, addrs: list[tuple[int, str, int]], error: str | None) -> None:
        """The forwarder's resolver answered (on the loop thread)."""
        if self.done:
            return
        if not addrs:
            self._finish(False, f"cannot resolve: {error or 'no address'}")
            return
        self.addrs = [(family, host) for family, host, _port in addrs[1:]]
        self._connect(addrs[0][0], addrs[0][1])

    def _failed(self, error: str) -> None:
        """This address failed: the next resolved one, or the verdict."""
        if self.addrs:
            self._close_sock()
            family, host = self.addrs.pop(0)
            self._connect(family, host)
        else:
            self._finish(False, error)

    def _connect(self, family: int, host: str) -> None:
        try:
            sock = self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            rc = sock.connect_ex((host, self.th.port))
        except OSError as e:  # out of fds, or an address the kernel refuses outright
            self._failed(e.strerror or str(e))
            return
        if rc == 0:
            self._finish(True, None)
        elif rc == errno.EINPROGRESS:
            self.fd = sock.fileno()
            self.mon.loop.add(self.fd, self._on_event, EPOLLOUT | EPOLLERR | EPOLLHUP)
        else:
            self._failed(os.strerror(rc))

    def _on_event(self, _mask: int) -> None:
        if self.done or self.sock is None:
            return
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._failed(os.strerror(err))
        else:
            self._finish(True, None)

    def _timed_out(self) -> None:
        self.timer = None
        if not self.done:
            self._finish(False, f"no answer within {self.mon.timeout_s:g} s")

    def _close_sock(self) -> None:
        if self.sock is not None:
            if self.fd >= 0:
                self.mon.loop.forget(self.fd)
                self.fd = -1
            self.sock.close()  # closing removes it from epoll
            self.sock = None

    def _release(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._close_sock()

    def _finish(self, ok: bool, error: str | None) -> None:
        self._release()
        self.mon.result(self.th, ok, error)

    def cancel(self) -> None:
        if not self.done:
            self._release()
