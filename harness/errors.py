"""Exceptions the CLI turns into exit codes."""

from __future__ import annotations


class HarnessError(Exception):
    """A problem the user can fix (bad config, missing tool, busy port): exit 2, one clear message."""


class PreflightError(HarnessError):
    """The environment cannot run the requested measurements; raised before any measurement starts."""


class PathError(Exception):
    """A forwarding path failed to start, become ready, or stop; the measurement is recorded as failed."""


class IperfError(Exception):
    """iperf3 failed (reported an error, timed out, crashed, or printed no usable JSON)."""


class ProbeError(Exception):
    """The probe client failed, timed out, or printed no usable report."""
