"""The data plane shared by portunus-standalone and portunus-client."""

from portunus.dataplane.forwarder import BindError, Forwarder, splice_disabled_by_env
from portunus.dataplane.pipes import SPLICE_AVAILABLE

__all__ = ["BindError", "Forwarder", "SPLICE_AVAILABLE", "splice_disabled_by_env", "tune_process"]


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
