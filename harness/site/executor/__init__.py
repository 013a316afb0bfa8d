"""Executors: where the harness runs a role's processes and commands (see harness.site.executor.base).

    LocalExecutor   this machine, the harness's own network namespace (LOCAL)
    NetnsExecutor   this machine, inside a named network namespace (`ip netns exec`)
    SshExecutor     another host over SSH (asyncssh); harness.site.executor.ssh
"""

from harness.site.executor.base import Completed, Executor, ExecutorError, Proc, log_tail_of
from harness.site.executor.local import LOCAL, LocalExecutor, NetnsExecutor, find_local_executable

__all__ = ["LOCAL", "Completed", "Executor", "ExecutorError", "LocalExecutor", "NetnsExecutor", "Proc",
           "find_local_executable", "log_tail_of"]
