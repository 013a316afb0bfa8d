"""Exceptions the CLI turns into exit codes, and the codes."""

from __future__ import annotations

# portunus-bench exit codes (128+N: stopped by signal N, see measure.signals).
EXIT_OK = 0
EXIT_FAILED_MEASUREMENTS = 1  # a measurement failed (recorded with its error); the run went on
EXIT_USAGE = 2  # usage, config, preflight or result-file error: one `error:` line naming the fix


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
