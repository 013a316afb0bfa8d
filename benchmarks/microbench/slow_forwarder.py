"""A deliberately slower forwarder, to prove the regression gate catches a real slowdown.

Runs the real `portunus-standalone` (same config, same Forwarder, same
event loop) with one realistic mistake applied from outside the product: the
userspace copy path with a 4 KiB buffer instead of 256 KiB, and splice off.
That is what a careless edit of `COPY_BUFFER_BYTES` plus losing the splice
path would ship: 64x more recv/send syscalls (and GIL round trips) per byte.
Nothing in `portunus/` knows about this module; only the benchmark launcher
(`PORTUNUS_BENCH_FORWARDER=small-buffer-copy`) starts it.

Usage: python -m benchmarks.microbench.slow_forwarder --config FILE
"""

from __future__ import annotations

import os
import sys

# A page: the smallest buffer anyone would plausibly write, and the one
# socat-like tools default to (8 KiB) halved.
SLOW_COPY_BUFFER_BYTES = 4096


def main() -> int:
    os.environ["PORTUNUS_DISABLE_SPLICE"] = "1"
    from portunus.dataplane import tcp

    # The forwarder sizes its copy buffer from the module constant when it
    # starts, so every connection gets the small buffer.
    tcp.COPY_BUFFER_BYTES = SLOW_COPY_BUFFER_BYTES
    from portunus.standalone import main as standalone_main

    return standalone_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
