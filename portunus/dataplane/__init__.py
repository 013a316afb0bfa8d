"""The data plane shared by portunus-standalone and portunus-client."""

from __future__ import annotations

from typing import Any

from portunus.dataplane.forwarder import BindError, Forwarder, splice_disabled_by_env
from portunus.dataplane.pipes import SPLICE_AVAILABLE

__all__ = ["BindError", "Forwarder", "SPLICE_AVAILABLE", "open_forwarder", "splice_disabled_by_env",
           "tune_process"]


def open_forwarder(workers: int | str | None = 1, *,
                   log_settings: tuple[str, str, str] = ("info", "pretty", "portunus")) -> Any:
    """A Forwarder in this process (workers = 1) or a WorkerGroup of that many processes
    ("auto" = one per CPU); both have apply / snapshot / active_connections / close."""
    from portunus.dataplane.workers import WorkerGroup, resolve_workers

    n = resolve_workers(workers)
    if n == 1:
        return Forwarder()
    return WorkerGroup(n, log_settings=log_settings)


def tune_process() -> None:
    """Process settings for many connections: fd limit raised to the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
