"""Deliberately slower forwarders, to prove the regression gate catches a real slowdown.

Each runs the real `portunus-standalone` (same config, same Forwarder, same
event loop) with one realistic mistake applied from outside the product:

* `small-buffer-copy`: the userspace copy path with a 4 KiB buffer instead of
  256 KiB, and splice off. That is what a careless edit of `COPY_BUFFER_BYTES`
  plus losing the splice path would ship: 64x more recv/send syscalls (and
  GIL round trips) per byte.
* `slow-accept`: every accepted connection costs SLOW_ACCEPT_CPU_S more CPU on
  the loop thread (a busy wait inside the Forwarder's admission step, which
  `_accept_batch` runs once per accepted connection), as an extra lookup or
  log call per connection would. Bulk transfers do not notice it; per-connection
  cost and connection rate do.

Nothing in `portunus/` knows about this module; only the benchmark launcher
(`PORTUNUS_BENCH_FORWARDER=small-buffer-copy | slow-accept`) starts it. The
patches live in this process: with `[global] workers = N > 1` the workers are
fresh interpreters (spawn) and would not carry them, so the benchmark
forwarders run with the default single worker.

Usage: python -m benchmarks.microbench.slow_forwarder VARIANT --config FILE
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

# A page: the smallest buffer anyone would plausibly write, and the one
# socat-like tools default to (8 KiB) halved.
SLOW_COPY_BUFFER_BYTES = 4096
# CPU added to each accepted connection: the example, about a third of
# what the forwarder spends on a short connection on the 2-vCPU dev host.
SLOW_ACCEPT_CPU_S = 100e-6


def burn_cpu(seconds: float) -> None:
    """Spin until this thread has used `seconds` more CPU (not wall) time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def small_buffer_copy() -> None:
    os.environ["PORTUNUS_DISABLE_SPLICE"] = "1"
    from portunus.dataplane import tcp

    # The forwarder sizes its copy buffer from the module constant when it
    # starts, so every connection gets the small buffer.
    tcp.COPY_BUFFER_BYTES = SLOW_COPY_BUFFER_BYTES


def slow_accept() -> None:
    from portunus.dataplane import forwarder

    admit = forwarder.admit

    def slow_admit(*args: Any, **kwargs: Any) -> Any:
        burn_cpu(SLOW_ACCEPT_CPU_S)
        return admit(*args, **kwargs)

    # _accept_batch calls the module-level name once per accepted connection.
    forwarder.admit = slow_admit  # type: ignore[assignment]


VARIANTS: dict[str, Callable[[], None]] = {"small-buffer-copy": small_buffer_copy, "slow-accept": slow_accept}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VARIANTS:
        print(f"usage: python -m benchmarks.microbench.slow_forwarder {{{'|'.join(VARIANTS)}}} --config FILE",
              file=sys.stderr)
        return 2
    VARIANTS[argv[0]]()
    from portunus.standalone import main as standalone_main

    return standalone_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
