"""Which concurrency model should the TCP data plane use? Measure, don't guess.

Three minimal splice forwarders, identical but for how they wait for I/O:

* threads:   one thread per direction, blocking splice (what portunus shipped until the
             event-driven data plane: these models tie on bulk; per connection they do not,
             see configs/connrate.yaml)
* selectors: one thread, non-blocking sockets, a selectors loop, splice on readiness
* asyncio:   one event loop, loop.add_reader callbacks, splice on readiness

Each runs in its own process; iperf3 drives traffic through them in
interleaved rounds (the same order shuffled per round), and we record
sender-side Gbit/s and the forwarder's CPU seconds per GB (from /proc).
A second scenario opens 1,000 idle connections plus one bulk transfer,
to see what holding many connections costs each model.

    python benchmarks/concurrency_models.py --rounds 5 --seconds 10 --omit 2 --json-out results/concurrency-models.json
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import platform
import random
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
    return r, w


def _listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    return s


# ---------------------------------------------------------------- model: threads

def serve_threads(pairs: list[tuple[int, int]]) -> None:
    def pump(src: int, dst: int, other: socket.socket) -> None:
        r, w = _pipe()
        try:
            while True:
                n = os.splice(src, w, PIPE_SIZE, flags=os.SPLICE_F_MOVE)
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, dst, n, flags=os.SPLICE_F_MOVE)
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(w)
        try:
            other.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def conn(c: socket.socket, target: int) -> None:
        u = socket.create_connection(("127.0.0.1", target))
        t = threading.Thread(target=pump, args=(u.fileno(), c.fileno(), c), daemon=True)
        t.start()
        pump(c.fileno(), u.fileno(), u)
        t.join()
        c.close()
        u.close()

    def accept_loop(ls: socket.socket, target: int) -> None:
        while True:
            c, _ = ls.accept()
            threading.Thread(target=conn, args=(c, target), daemon=True).start()

    threading.stack_size(512 * 1024)
    loops = [threading.Thread(target=accept_loop, args=(_listener(lp), tp), daemon=True) for lp, tp in pairs]
    for t in loops:
        t.start()
    loops[0].join()


# ---------------------------------------------------------------- model: selectors

class _Dir:
    """One direction on a readiness loop: drain the pipe before reading more."""

    __slots__ = ("src", "dst", "r", "w", "pending", "done", "dst_sock")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst_sock = src, dst
        self.dst = dst.fileno()
        self.r, self.w = _pipe()
        self.pending = 0
        self.done = False

    def step(self) -> str:
        """Move what can move now; return 'read', 'write' (what to wait for) or 'eof'."""
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while True:
            if self.pending:
                try:
                    self.pending -= os.splice(self.r, self.dst, self.pending, flags=flags)
                except BlockingIOError:
                    return "write"
                continue
            try:
                n = os.splice(self.src.fileno(), self.w, PIPE_SIZE, flags=flags)
            except BlockingIOError:
                return "read"
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return "read"
                raise
            if n == 0:
                return "eof"
            self.pending = n


def serve_selectors(pairs: list[tuple[int, int]]) -> None:
    sel = selectors.DefaultSelector()
    listeners = {}
    for lp, tp in pairs:
        ls = _listener(lp)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, None)
        listeners[ls.fileno()] = (ls, tp)
    # fd -> {event: direction}; a socket can be the source of one direction and
    # the destination of the other, so interest is the union.
    interest: dict[int, dict[int, _Dir]] = {}
    socks: dict[int, socket.socket] = {}

    def set_interest(sock: socket.socket, event: int, d: _Dir | None) -> None:
        fd = sock.fileno()
        m = interest.setdefault(fd, {})
        if d is None:
            m.pop(event, None)
        else:
            m[event] = d
        mask = 0
        for ev in m:
            mask |= ev
        if fd in socks:
            if mask:
                sel.modify(sock, mask, fd)
            else:
                sel.unregister(sock)
                del socks[fd]
        elif mask:
            sel.register(sock, mask, fd)
            socks[fd] = sock

    def drive(d: _Dir) -> None:
        if d.done:
            return
        try:
            state = d.step()
        except OSError:  # reset: tear down both sides, stop watching both fds
            state = "eof"
            for sock in (d.src, d.dst_sock):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        set_interest(d.src, selectors.EVENT_READ, d if state == "read" else None)
        set_interest(d.dst_sock, selectors.EVENT_WRITE, d if state == "write" else None)
        if state == "eof":
            d.done = True
            try:
                d.dst_sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            os.close(d.r)
            os.close(d.w)

    while True:
        for key, ev in sel.select():
            if key.data is None:
                ls, target = listeners[key.fd]
                c, _ = ls.accept()
                u = socket.create_connection(("127.0.0.1", target))
                for s in (c, u):
                    s.setblocking(False)
                drive(_Dir(c, u))
                drive(_Dir(u, c))
                continue
            m = interest.get(key.data, {})
            for e in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                if ev & e and e in m:
                    drive(m[e])


# ---------------------------------------------------------------- model: asyncio

def serve_asyncio(pairs: list[tuple[int, int]]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def start(d: _Dir) -> None:
            def again() -> None:
                if state[0] == "read":
                    loop.remove_reader(d.src.fileno())
                elif state[0] == "write":
                    loop.remove_writer(d.dst)
                run()

            state = [""]

            def run() -> None:
                try:
                    state[0] = d.step()
                except OSError:
                    state[0] = "eof"
                if state[0] == "read":
                    loop.add_reader(d.src.fileno(), again)
                elif state[0] == "write":
                    loop.add_writer(d.dst, again)
                else:
                    try:
                        d.dst_sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    os.close(d.r)
                    os.close(d.w)

            run()

        async def accept_loop(lp: int, target: int) -> None:
            ls = _listener(lp)
            ls.setblocking(False)
            while True:
                c, _ = await loop.sock_accept(ls)
                u = socket.create_connection(("127.0.0.1", target))
                for s in (c, u):
                    s.setblocking(False)
                start(_Dir(c, u))
                start(_Dir(u, c))

        await asyncio.gather(*(accept_loop(lp, tp) for lp, tp in pairs))

    asyncio.run(main())


MODELS = {"threads": serve_threads, "selectors": serve_selectors, "asyncio": serve_asyncio}


# ---------------------------------------------------------------- driver

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _iperf(port: int, seconds: int, omit: int) -> dict:
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-O", str(omit), "-J"],
                         capture_output=True, text=True, timeout=seconds + omit + 30)
    return json.loads(out.stdout)


def _serve_sink(ls: socket.socket) -> None:
    """Accept connections and close each one when its peer closes (EOF or reset)."""
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                c, _ = ls.accept()
                sel.register(c, selectors.EVENT_READ, c)
                continue
            try:
                data = key.data.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.data)
                key.data.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--omit", type=int, default=2)
    ap.add_argument("--idle-connections", type=int, default=1000,
                    help="idle connections held open during the second scenario")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--serve", choices=list(MODELS), help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        nums = list(map(int, args.ports.split(",")))
        MODELS[args.serve](list(zip(nums[::2], nums[1::2], strict=True)))
        return 0

    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    iperf_port = _free_port()
    server = subprocess.Popen(["iperf3", "-s", "-p", str(iperf_port)], stdout=subprocess.DEVNULL)
    # A sink that holds connections open until their client side closes: the far end of the idle ones.
    sink = _listener(_free_port())
    threading.Thread(target=_serve_sink, args=(sink,), daemon=True).start()
    procs, bulk_port, idle_port = {}, {}, {}
    records = []
    try:
        for name in MODELS:
            bulk_port[name], idle_port[name] = _free_port(), _free_port()
            ports = f"{bulk_port[name]},{iperf_port},{idle_port[name]},{sink.getsockname()[1]}"
            procs[name] = subprocess.Popen([sys.executable, __file__, "--serve", name, "--ports", ports])
        time.sleep(1.0)
        for scenario in ("bulk", "bulk+idle"):
            for rnd in range(args.rounds):
                order = list(MODELS)
                random.shuffle(order)
                for name in order:
                    idle = []
                    if scenario == "bulk+idle":
                        idle = [socket.create_connection(("127.0.0.1", idle_port[name]))
                                for _ in range(args.idle_connections)]
                        time.sleep(0.5)
                    pid = procs[name].pid
                    c0 = _cpu_s(pid)
                    res = _iperf(bulk_port[name], args.seconds, args.omit)
                    c1 = _cpu_s(pid)
                    for s_ in idle:
                        s_.close()
                    sent = res["end"]["sum_sent"]
                    gbit = sent["bits_per_second"] / 1e9
                    total_gb = sum(iv["sum"]["bytes"] for iv in res["intervals"]) / 1e9
                    rec = {"scenario": scenario, "model": name, "round": rnd, "sender_gbit_s": gbit,
                           "forwarder_cpu_s": c1 - c0, "cpu_s_per_gb": (c1 - c0) / total_gb if total_gb else None}
                    records.append(rec)
                    print(f"{scenario:10s} round {rnd} {name:10s} {gbit:6.2f} Gbit/s  "
                          f"{rec['cpu_s_per_gb']:.3f} CPU s/GB", flush=True)
                    time.sleep(0.5)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        server.kill()
        server.wait()
    print("\nmedian [min-max] over rounds")
    summary = {}
    for scenario in ("bulk", "bulk+idle"):
        for name in MODELS:
            rs = [r for r in records if r["scenario"] == scenario and r["model"] == name]
            g = [r["sender_gbit_s"] for r in rs]
            c = [r["cpu_s_per_gb"] for r in rs]
            summary[f"{scenario}/{name}"] = {"gbit_s_median": statistics.median(g), "gbit_s_min": min(g),
                                             "gbit_s_max": max(g), "cpu_s_per_gb_median": statistics.median(c), "n": len(g)}
            print(f"{scenario:10s} {name:10s} {statistics.median(g):6.2f} [{min(g):.2f}-{max(g):.2f}] Gbit/s  "
                  f"{statistics.median(c):.3f} CPU s/GB")
    if args.json_out:
        doc = {"schema_version": 1, "kind": "concurrency-models", "command": " ".join(sys.argv),
               "host": {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count()},
               "params": vars(args), "records": records, "summary": summary}
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
