"""Child processes and /proc readings, on real processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from harness.site import procs
from harness.site.netutil import (
    free_port,
    listeners,
    parse_proc_net_tcp_listeners,
    port_bindable,
    socket_inodes,
    wait_listening,
)

# /proc/net/tcp as the kernel prints it: one LISTEN socket on 127.0.0.1:5201, one established.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D2F0 0100007F:1451 01 00000000:00000000 00:00000000 00000000     0        0 123457 1 0000000000000000 20 4 30 10 -1
"""


def test_parse_proc_net_tcp() -> None:
    assert parse_proc_net_tcp_listeners(PROC_NET_TCP) == {5201: {123456}}


def test_parse_proc_stat_handles_odd_process_names() -> None:
    # comm may hold spaces and parentheses; utime=7 (field 14), stime=5 (field 15).
    text = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 100 1000 10"
    assert procs.parse_proc_stat_cpu_ticks(text) == 12
    assert procs.parse_ppid(text) == 1


def test_cpu_seconds_counts_all_threads_of_a_busy_child(tmp_path: Path) -> None:
    done = tmp_path / "done"
    # Each thread spins until it has used 0.3 s of CPU itself (thread_time, not wall time: a
    # loaded host must not make the test fail), then the child says so and idles.
    code = ("import threading,time\n"
            "def spin():\n  while time.thread_time()<0.3: pass\n"
            "ts=[threading.Thread(target=spin) for _ in range(2)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
            f"open({str(done)!r},'w').write('1')\ntime.sleep(30)\n")
    p = procs.spawn([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not done.exists():
            assert time.monotonic() < deadline, "the child never finished spinning"
            time.sleep(0.05)
        used = procs.cpu_seconds(p.pid)
        # The spinning threads have exited; their time stays with the process.
        assert used is not None and used >= 0.55  # 2 x 0.3 s, less clock-tick rounding
    finally:
        procs.stop(p)
    assert procs.cpu_seconds(p.pid) is None  # gone


def test_process_cpu_clock_reads_another_process_to_the_nanosecond() -> None:
    code = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(30)\n"
    p = procs.spawn([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while (procs.cpu_seconds(p.pid) or 0.0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        precise, ticks = procs.process_cpu_seconds(p.pid), procs.cpu_seconds(p.pid)
        assert precise is not None and ticks is not None
        # The same quantity: ticks are the precise clock rounded down to 10 ms (a tick or two).
        assert precise >= 0.3 and abs(precise - ticks) < 0.03
        assert precise != round(precise, 2)  # not a multiple of a tick: the scheduler's own clock
        assert procs.tree_cpu_seconds(p.pid) == pytest.approx(procs.process_cpu_seconds(p.pid), abs=0.01)
    finally:
        procs.stop(p)
    assert procs.process_cpu_seconds(p.pid) is None and procs.tree_cpu_seconds(p.pid) is None


def test_stop_escalates_and_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    code = (f"import subprocess,signal,time,sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)'])\n"
            f"open({str(pidfile)!r},'w').write(str(c.pid))\ntime.sleep(60)\n")
    p = procs.spawn([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert grandchild in procs.descendants(p.pid)
    t0 = time.monotonic()
    rc = procs.stop(p, grace_s=1.0)
    assert rc == -signal.SIGKILL and time.monotonic() - t0 < 5
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{grandchild}") and "Z" not in Path(f"/proc/{grandchild}/stat").read_text().split(")")[-1][:3]:
        assert time.monotonic() < deadline, "grandchild survived"
        time.sleep(0.05)
    assert p not in procs.live_children()


def test_wait_listening_sees_the_owner_without_connecting() -> None:
    port = free_port()
    code = ("import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"time.sleep(0.3)\ns.bind(('127.0.0.1',{port}))\ns.listen()\n"
            "c,_=s.accept()\nprint('CONNECTED', flush=True)\ntime.sleep(30)\n")
    p = procs.spawn([sys.executable, "-c", code], capture=True)
    try:
        wait_listening(port, 10, alive=lambda: p.poll() is None, pid=p.pid)
        assert port in listeners() and listeners()[port] & socket_inodes(p.pid)
        assert not port_bindable(port)
    finally:
        procs.stop(p)
    out = p.stdout.read().decode() if p.stdout else ""
    assert "CONNECTED" not in out  # readiness never opened a connection


PROC_STAT = """\
cpu  1000 50 400 9000 30 20 130 70 0 0
cpu0 500 25 200 4500 15 10 65 35 0 0
intr 12345
"""


def test_parse_proc_stat_host_counts_busy_time_without_idle_iowait_or_steal() -> None:
    h = procs.parse_proc_stat_host(PROC_STAT, clk_tck=100)
    # user 1000 + nice 50 + system 400 + irq 20 + softirq 130 ticks; idle, iowait and steal excluded.
    assert h.busy_s == pytest.approx(16.0) and h.softirq_s == pytest.approx(1.3)
    assert (h - procs.HostCpu(10.0, 1.0)) == procs.HostCpu(pytest.approx(6.0), pytest.approx(0.3))
    with pytest.raises(ValueError, match="no aggregate"):
        procs.parse_proc_stat_host("cpu0 1 2 3 4 5 6 7\n")


def test_host_cpu_sees_a_busy_child() -> None:
    code = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass\n"
    before = procs.host_cpu()
    p = procs.spawn([sys.executable, "-c", code])
    try:
        p.wait(timeout=60)
    finally:
        procs.stop(p)
    used = procs.host_cpu() - before
    assert used.busy_s >= 0.4  # the child's 0.5 s at least (ticks: +-4 ms per core), other work on top


def test_cleanup_selects_by_owner() -> None:
    """What a cleanup takes: gone harnesses' leftovers and this process's own; a running harness's only
    with include_live; with only_pid that one harness's, running or not, and nothing else."""
    import subprocess as sp

    gone = int(sp.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                      check=True).stdout)
    running = 1
    assert procs.cleanup_selects(gone) and procs.cleanup_selects(os.getpid())
    assert not procs.cleanup_selects(running)
    assert procs.cleanup_selects(running, include_live=True)
    assert procs.cleanup_selects(running, only_pid=running)
    assert not procs.cleanup_selects(gone, only_pid=running)
    assert not procs.cleanup_selects(os.getpid(), include_live=True, only_pid=running)
