"""Python calls per forwarded connection on a plain listener, counted on the loop thread.

A deterministic complement to the timed connection-rate A/B on a shared host:
it shows which functions a connection runs, so a change that must not touch
the plain path can be checked against another checkout.

    python benchmarks/calls_per_connection.py REPO_DIR [CONNECTIONS]

Per-round calls (poll, monotonic, min/max of the loop's timeout) depend on how
connections fall into loop rounds and vary from run to run; the rest is the
connection's own code.
"""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time
from typing import Any


def main() -> None:
    repo, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    sys.path.insert(0, repo)
    from portunus.config import parse_rule
    from portunus.dataplane.forwarder import Forwarder

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)

    def echo() -> None:
        while True:
            c, _ = srv.accept()
            with c:
                c.sendall(c.recv(100))

    threading.Thread(target=echo, daemon=True).start()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            counts[(frame.f_code.co_filename.rsplit("/", 1)[-1], frame.f_code.co_name)] += 1
        elif event == "c_call":
            counts[("C", getattr(arg, "__name__", "?"))] += 1

    threading.setprofile(profile)  # the forwarder's loop thread starts now and inherits it
    fwd = Forwarder()
    threading.setprofile(None)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    fwd.apply([parse_rule({"name": "r", "listen_addr": "127.0.0.1", "listen_port": port,
                           "target": f"127.0.0.1:{srv.getsockname()[1]}"})])

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"x")
            s.recv(10)

    for _ in range(50):
        one()
    time.sleep(0.5)
    counts.clear()
    for _ in range(n):
        one()
    time.sleep(0.5)
    print(f"{repo}: {sum(counts.values()) / n:.1f} profiled calls per connection on the loop thread ({n} connections)")
    for (where, name), v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if v / n >= 0.01:
            print(f"  {v / n:7.2f}  {where}:{name}")
    fwd.close()


if __name__ == "__main__":
    main()
