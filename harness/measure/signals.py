"""SIGINT/SIGTERM during a run: stop cleanly instead of dying mid-teardown.

The first signal raises Interrupted in the main thread (unwinding through
every `finally`, which stops processes and removes iptables rules), unless a
teardown is in progress: then it is held until the teardown finishes.
Further signals are ignored while the harness cleans up; SIGKILL remains
the way to stop it hard (children then get SIGTERM via PR_SET_PDEATHSIG, and
`portunus-bench cleanup` removes leftover iptables chains).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """The run was asked to stop by a signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignalGuard:
    """Installs the handlers; `deferred()` marks teardown sections that must not be cut short."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._raised = False
        self._defer_depth = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for s in HANDLED:
            self._previous[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping
        self.received = signum
        if self._defer_depth == 0:
            self._raised = True
            raise Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a signal arriving inside this block until the block ends."""
        self._defer_depth += 1
        try:
            yield
        finally:
            self._defer_depth -= 1
            if self._defer_depth == 0 and self.received is not None and not self._raised:
                self._raised = True
                raise Interrupted(self.received)

    def __enter__(self) -> SignalGuard:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
