"""Per-owner traffic quotas through a real portunus-standalone (TCP splice, copy, capped, workers).

A quota is a byte budget per owner and period, both directions together.
The forwarder charges what each send or splice moved; the connection whose
charge spends the budget is reset (so at most one chunk goes past it), and new
connections are refused with reason "quota" until the period ends. Usage is
kept in [global] quota_state_file across restarts and reloads.
"""

from __future__ import annotations

import calendar
import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from portunus.dataplane.pipes import PIPE_SIZE_BYTES
from portunus.dataplane.tcp import COPY_BUFFER_BYTES
from tests.support.clock import TestClock
from tests.support.net import echo_handler, free_port, random_payload, recv_all, tcp_server
from tests.support.proc import run_cli
from tests.support.tls import client_hello
from tests.support.traffic import ByteSink, UdpSink, blast, connection_refused, udp_blast
from tests.support.wait import wait_for

MIB = 1024 * 1024
QUOTA_BYTES = 10 * MIB

pytestmark = pytest.mark.slow


def quota_toml(tmp: Path, port: int, target: int, *, quota: str = f"bytes = {QUOTA_BYTES}, period = \"daily\"",
               workers: int = 1, rule_extra: str = "", with_rule: bool = True) -> str:
    rule = (f'[[rule]]\nname = "r"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
            f'target = "127.0.0.1:{target}"\nowner = "alice"\n{rule_extra}\n') if with_rule else ""
    # A second rule of another owner: never charged to alice, and a file needs one rule.
    other = (f'[[rule]]\nname = "other"\nlisten_addr = "127.0.0.1"\nlisten_port = {port + 1}\n'
             f'target = "127.0.0.1:{target}"\n')
    return (f'[global]\nworkers = {workers}\nquota_state_file = "{tmp / "usage.json"}"\nshutdown_drain_secs = 1\n'
            f'[[owner]]\nname = "alice"\nquota = {{ {quota} }}\n{rule}{other}')


def stats(addr: str) -> dict:
    with urllib.request.urlopen(f"http://{addr}/stats", timeout=10) as r:
        return json.load(r)


def metrics(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        return r.read().decode()


def quota_status(addr: str) -> dict:
    return stats(addr)["quotas"]["alice"]


PATHS = {
    # name: (env, rule keys, workers, largest chunk one charge can cover)
    "splice": ({}, "", 1, PIPE_SIZE_BYTES),
    "copy": ({"PORTUNUS_DISABLE_SPLICE": "1"}, "", 1, COPY_BUFFER_BYTES),
    "capped": ({}, "rate_limit = { bandwidth_in_bps = 40000000 }", 1, COPY_BUFFER_BYTES),
    "workers": ({}, "", 2, PIPE_SIZE_BYTES),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_quota_stops_tcp_at_the_budget(standalone, tmp_path: Path, path: str) -> None:
    env, rule_extra, workers, chunk = PATHS[path]
    port, maddr = free_port(), f"127.0.0.1:{free_port()}"
    with ByteSink() as sink:
        fwd = standalone(quota_toml(tmp_path, port, sink.port, workers=workers, rule_extra=rule_extra),
                         env=env, metrics_addr=maddr, wait_ports=[port])
        sent, cut = blast(port, 3 * QUOTA_BYTES)
        assert cut, f"a {3 * QUOTA_BYTES}-byte upload went through a {QUOTA_BYTES}-byte quota"
        # Every charge happens after a send, and the charge that spends the budget resets
        # the connection: at most one chunk past the budget is counted, and the target got
        # no more than was counted (the reset drops what was still in flight).
        st = wait_for(lambda: (q := quota_status(maddr))["exhausted"] and q, 10, "quota exhausted")
        assert QUOTA_BYTES <= st["used_bytes"] <= QUOTA_BYTES + chunk, st
        wait_for(lambda: len(sink.per_conn) == 1, 10, "the sink saw the connection end")
        assert sink.total <= st["used_bytes"]
        # New connections are refused until the period ends, and say why.
        assert connection_refused(port)
        rule = stats(maddr)["rules"]["r"]
        assert rule["rejected"].get("quota", 0) >= 1, rule
        assert rule["quota_cuts"] == 1, rule
        if path in ("splice", "workers"):
            assert rule["splice_connections"] == 1, rule
        else:
            assert rule["copy_connections"] == 1, rule
        # Another owner's rule is not affected.
        assert blast(port + 1, 1 * MIB) == (1 * MIB, False)
        m = metrics(maddr)
        assert 'portunus_quota_exhausted{owner="alice"} 1.0' in m
        assert f'portunus_quota_limit_bytes{{owner="alice"}} {float(QUOTA_BYTES):.6e}' in m
        assert 'portunus_rule_rejected_total{reason="quota",rule="r"}' in m
        assert 'traffic quota exhausted' in fwd.wait_log("exhausted")


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
def test_quota_counts_both_directions_exactly(standalone, tmp_path: Path, splice: bool) -> None:
    port, maddr = free_port(), f"127.0.0.1:{free_port()}"
    env = {} if splice else {"PORTUNUS_DISABLE_SPLICE": "1"}
    with tcp_server(echo_handler) as echo:
        standalone(quota_toml(tmp_path, port, echo.port, quota='bytes = 1073741824, period = "never"'),
                   env=env, metrics_addr=maddr, wait_ports=[port])
        sizes = [3 * MIB, 1 * MIB + 7, 513, 2 * MIB]
        results: list[bytes] = [b""] * len(sizes)

        def echo_once(i: int) -> None:
            payload = random_payload(sizes[i], __import__("random").Random(i))
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                t = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
                t.start()
                results[i] = recv_all(s)
                t.join()

        threads = [threading.Thread(target=echo_once, args=(i,)) for i in range(len(sizes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [len(r) for r in results] == sizes
        expected = 2 * sum(sizes)  # every byte crossed the forwarder twice: up and back
        st = wait_for(lambda: (q := quota_status(maddr))["used_bytes"] == expected and q, 10,
                      f"used_bytes == {expected}")
        assert not st["exhausted"] and st["period"] == "never" and st["period_end"] is None


def test_usage_survives_restart_reload_and_re_created_rules(standalone, tmp_path: Path) -> None:
    port, maddr = free_port(), f"127.0.0.1:{free_port()}"
    with ByteSink() as sink:
        text = quota_toml(tmp_path, port, sink.port)
        fwd = standalone(text, metrics_addr=maddr, wait_ports=[port])
        assert blast(port, 6 * MIB) == (6 * MIB, False)
        wait_for(lambda: quota_status(maddr)["used_bytes"] == 6 * MIB, 10, "6 MiB charged")
        assert fwd.stop() == 0
        saved = json.loads((tmp_path / "usage.json").read_text())
        assert saved["owners"]["alice"]["used_bytes"] == 6 * MIB
        assert (tmp_path / "usage.json").stat().st_mode & 0o777 == 0o600

        # A restart continues from the saved count.
        fwd = standalone(text, metrics_addr=maddr, wait_ports=[port])
        assert quota_status(maddr)["used_bytes"] == 6 * MIB
        # Deleting the rule and adding it back (a reload each) does not reset the count.
        fwd.reload(quota_toml(tmp_path, port, sink.port, with_rule=False))
        fwd.wait_log("reloaded")
        assert stats(maddr)["rules"].get("r") is None or "listen" not in stats(maddr)["rules"]["r"]
        fwd.reload(text)
        wait_for(lambda: fwd.log().count("reloaded") == 2, 10, "second reload")
        assert quota_status(maddr)["used_bytes"] == 6 * MIB
        assert blast(port, 6 * MIB)[1], "the second 6 MiB went through a 10 MiB quota"
        used = wait_for(lambda: (q := quota_status(maddr))["exhausted"] and q["used_bytes"], 10, "exhausted")
        assert QUOTA_BYTES <= used <= QUOTA_BYTES + PIPE_SIZE_BYTES
        fwd.stop()

        # Still spent after another restart; raising the budget by a reload opens it again.
        fwd = standalone(text, metrics_addr=maddr, wait_ports=[port])
        assert quota_status(maddr)["exhausted"]
        assert connection_refused(port)
        fwd.reload(quota_toml(tmp_path, port, sink.port, quota=f'bytes = {3 * QUOTA_BYTES}, period = "daily"'))
        wait_for(lambda: not quota_status(maddr)["exhausted"], 10, "quota raised")
        assert blast(port, 1 * MIB) == (1 * MIB, False)


def test_daily_quota_resets_at_midnight_utc(standalone, tmp_path: Path) -> None:
    """The test clock (PORTUNUS_CLOCK_OFFSET_FILE) puts the forwarder an hour before midnight UTC,
    then 3 s before it once the budget is spent."""
    clock = TestClock(tmp_path / "clock-offset")
    port, maddr = free_port(), f"127.0.0.1:{free_port()}"
    with ByteSink() as sink:
        fwd = standalone(quota_toml(tmp_path, port, sink.port, quota='bytes = 1048576, period = "daily"'),
                         env=clock.env, metrics_addr=maddr, wait_ports=[port])
        before = quota_status(maddr)
        assert blast(port, 4 * MIB)[1]
        wait_for(lambda: quota_status(maddr)["exhausted"], 10, "exhausted")
        assert connection_refused(port)
        clock.set_before_midnight(3.0)
        log = fwd.wait_log("quota period ended", timeout_s=15)
        assert "new period from" in log
        after = quota_status(maddr)
        assert after["period_start"] == before["period_end"]
        assert not after["exhausted"] and after["used_bytes"] == 0
        assert blast(port, 512 * 1024) == (512 * 1024, False)
        saved = lambda: json.loads((tmp_path / "usage.json").read_text())["owners"]["alice"]  # noqa: E731
        wait_for(lambda: saved()["used_bytes"] == 512 * 1024, 5, "the new period's count saved")
        assert saved()["period_start"] == calendar.timegm(time.strptime(after["period_start"], "%Y-%m-%dT%H:%M:%SZ"))


def test_quota_keys_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[owner]]\nname = "a"\nquota = { bytes = 0, period = "weekly", reset_day = 3, x = 1 }\n'
                   '[[rule]]\nname = "r"\nlisten_port = 1000\ntarget = "127.0.0.1:1"\nowner = "a"\n')
    r = run_cli("portunus-standalone", "--config", str(bad), "--check")
    assert r.returncode == 2
    assert 'owner "a" (owner #1): quota: x: unknown key' in r.stderr
    assert "quota.bytes: must be an integer from 1 to" in r.stderr
    assert "quota.period: must be one of monthly, daily, never, got 'weekly'" in r.stderr
    nofile = tmp_path / "nofile.toml"
    nofile.write_text('[[owner]]\nname = "a"\nquota = { bytes = 100, reset_day = 31 }\n'
                      '[[rule]]\nname = "r"\nlisten_port = 1000\ntarget = "127.0.0.1:1"\nowner = "a"\n')
    r = run_cli("portunus-standalone", "--config", str(nofile), "--check")
    assert r.returncode == 2 and "[global]: quota_state_file: missing" in r.stderr, r.stderr


def test_unreadable_usage_file_is_kept_and_reported(standalone, tmp_path: Path) -> None:
    (tmp_path / "usage.json").write_text("{not json")
    port = free_port()
    with ByteSink() as sink:
        fwd = standalone(quota_toml(tmp_path, port, sink.port), wait_ports=[port])
        assert "not a quota usage file" in fwd.wait_log("not a quota usage file")
        assert blast(port, 1 * MIB) == (1 * MIB, False)
        fwd.send_signal(signal.SIGTERM)
        fwd.proc.wait(20)
    assert (tmp_path / "usage.json").read_text() == "{not json"


def udp_toml(tmp: Path, port: int, target: int, quota_bytes: int) -> str:
    return (f'[global]\nquota_state_file = "{tmp / "usage.json"}"\n'
            f'[[owner]]\nname = "alice"\nquota = {{ bytes = {quota_bytes}, period = "never" }}\n'
            f'[[rule]]\nname = "u"\nprotocol = "udp"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
            f'target = "127.0.0.1:{target}"\nowner = "alice"\n')


def test_quota_stops_udp_at_the_budget(standalone, tmp_path: Path) -> None:
    """Datagrams both ways are charged; the one that spends the budget is the last that goes."""
    size, reply = 1400, 100
    port, maddr = free_port(socket.SOCK_DGRAM), f"127.0.0.1:{free_port()}"
    sink = UdpSink(reply_bytes=reply)
    try:
        standalone(udp_toml(tmp_path, port, sink.port, QUOTA_BYTES), metrics_addr=maddr, wait_ports=[port])
        sock, replies = udp_blast(port, QUOTA_BYTES // size + 2000, size)
        sock.close()
        st = wait_for(lambda: (q := quota_status(maddr))["exhausted"] and q, 10, "quota exhausted")
        # Charged: every datagram forwarded either way; at most the one that crossed goes past.
        assert QUOTA_BYTES <= st["used_bytes"] <= QUOTA_BYTES + size, st
        rule = stats(maddr)["rules"]["u"]
        assert rule["bytes_in"] + rule["bytes_out"] == st["used_bytes"], (rule, st)
        assert sink.bytes == rule["bytes_in"] and rule["bytes_out"] == reply * rule["datagrams_out"]
        # The datagrams after the cut were dropped in their batch or, in a later batch, refused as a new flow.
        assert rule["quota_cuts"] == 1, rule
        assert rule["dropped"].get("quota", 0) + rule["rejected"].get("quota", 0) >= 1, rule
        # A new flow (another source port) is refused at its first datagram.
        sock2, _ = udp_blast(port, 5, size)
        sock2.close()
        wait_for(lambda: stats(maddr)["rules"]["u"]["rejected"].get("quota", 0) >= 5, 10, "new flow refused")
        assert sink.bytes == rule["bytes_in"]
        assert 'portunus_quota_exhausted{owner="alice"} 1.0' in metrics(maddr)
    finally:
        sink.close()


def test_a_quota_reaches_connections_opened_before_it(standalone, tmp_path: Path) -> None:
    """A connection open when the quota arrives (reload) is charged from its next chunk and cut."""
    port, maddr = free_port(), f"127.0.0.1:{free_port()}"
    with ByteSink() as sink:
        big = quota_toml(tmp_path, port, sink.port, quota=f'bytes = {1 << 40}, period = "never"')
        fwd = standalone(big.replace(f"quota = {{ bytes = {1 << 40}, period = \"never\" }}\n", ""),
                         metrics_addr=maddr, wait_ports=[port])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"\0" * MIB)
            wait_for(lambda: sink.total == MIB, 10, "1 MiB through")
            fwd.reload(quota_toml(tmp_path, port, sink.port, quota='bytes = 2097152, period = "never"'))
            fwd.wait_log("reloaded")
            with pytest.raises(OSError):
                for _ in range(64):  # 4 MiB more at most; the quota allows 2 MiB
                    s.sendall(b"\0" * (64 * 1024))
                    time.sleep(0.005)
                s.shutdown(socket.SHUT_WR)
                s.recv(1)
        st = wait_for(lambda: (q := quota_status(maddr))["exhausted"] and q, 10, "exhausted")
        assert st["used_bytes"] <= 2 * MIB + PIPE_SIZE_BYTES, st
        assert stats(maddr)["rules"]["r"]["quota_cuts"] == 1


def test_quota_cuts_connections_routed_by_sni(standalone, tmp_path: Path) -> None:
    """A connection an SNI listener routed (ClientHello peeked, then bulk) is charged and cut like any other."""
    port, maddr = free_port(), f"127.0.0.1:{free_port()}"
    with ByteSink() as sink:
        text = quota_toml(tmp_path, port, sink.port, rule_extra='sni_pattern = "a.example"')
        standalone(text, metrics_addr=maddr, wait_ports=[port])
        sent = 0
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(client_hello("a.example"))
            while sent < 3 * QUOTA_BYTES:
                s.sendall(b"\0" * (64 * 1024))
                sent += 64 * 1024
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        st = wait_for(lambda: (q := quota_status(maddr))["exhausted"] and q, 10, "exhausted")
        assert QUOTA_BYTES <= st["used_bytes"] <= QUOTA_BYTES + PIPE_SIZE_BYTES, st
        assert stats(maddr)["rules"]["r"]["quota_cuts"] == 1
