"""Forwarder.apply_changes: the same tables as a whole-set apply, without visiting untouched rules.

Two real forwarders run the same random deltas on their own loopback address
(127.0.0.2 through apply_changes, 127.0.0.3 through apply with the whole set);
their listeners, routes, rule states, health checks and counters must match
after every step. Real sockets: listeners bind, a port held by another socket
fails on both, a relayed connection survives deltas that do not name its rule.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest

from portunus.config import Rule, parse_rule
from portunus.control.ruleset import conflicts, conflicts_with, rule_to_dict
from portunus.dataplane import forwarder as forwarder_module
from portunus.dataplane.forwarder import Forwarder
from tests.support.net import echo_handler, free_port_range, free_ports, tcp_server

CHANGED, WHOLE = "127.0.0.2", "127.0.0.3"
PORTS = 24
NAMES = [f"n{i}" for i in range(30)]
SNI_NAMES = ["a.example", "b.example", "*.example", "*.b.example"]


def _spec(rng: random.Random, name: str, base: int) -> dict[str, Any]:
    protocol = rng.choice(("tcp", "tcp", "tcp", "udp"))
    port = base + rng.randrange(PORTS - 3)
    spec: dict[str, Any] = {"name": name, "protocol": protocol, "target": f"127.0.0.1:{rng.choice((9, 19))}"}
    if rng.random() < 0.2:
        spec["listen_ports"] = f"{port}-{port + 2}"
        spec["target"] = "127.0.0.1:2000-2002"
    else:
        spec["listen_port"] = port
    if protocol == "tcp" and "listen_port" in spec and rng.random() < 0.5:
        spec["sni_pattern"] = rng.choice(SNI_NAMES)
    if protocol == "tcp" and "listen_port" in spec and rng.random() < 0.2:
        spec["health_check_interval_secs"] = 30.0
    if protocol == "tcp" and rng.random() < 0.3:
        spec["tcp_keepalive_secs"] = rng.choice((30.0, 120.0))
    return spec


def _rule(spec: dict[str, Any], addr: str) -> Rule:
    return parse_rule({**spec, "listen_addr": addr})


def _table(fwd: Forwarder) -> dict[str, Any]:
    """What the forwarder runs, without its address: listeners, routes, states, health, counters."""
    listeners = {}
    for key, lst in fwd._listeners.items():
        if lst.routes is None:
            listeners[(key[0], key[2])] = (lst.state.rule.name, lst.state.keepalive_s)
        else:
            r = lst.routes
            listeners[(key[0], key[2])] = (
                sorted((p, st.rule.name) for p, st in r.exact.items()),
                sorted((p, st.rule.name) for p, st in r.wild.items()),
                None if r.fallback is None else r.fallback.rule.name, r.max_bytes, r.timeout_s, r.keepalive_s)
    rules = {}
    for name, st in fwd._states.items():
        spec = rule_to_dict(st.rule)
        spec.pop("listen_addr", None)
        rules[name] = spec
    return {"listeners": listeners, "rules": rules,
            "health": sorted(n for n, st in fwd._states.items() if st.health is not None),
            "sni_ports": sorted(label.rsplit(":", 1)[1] for label in fwd._sni_closed),
            "stats": sorted(fwd._stats)}


def _results(results: dict[str, str | None], addr: str) -> dict[str, str | None]:
    return {n: None if r is None else r.replace(addr, "ADDR") for n, r in results.items()}


def test_random_deltas_match_a_whole_set_apply() -> None:
    rng = random.Random(21)
    base = free_port_range(PORTS)
    changed, whole = Forwarder(), Forwarder()
    specs: dict[str, dict[str, Any]] = {}
    held: list[socket.socket] = []
    seen = {"sni": 0, "health": 0, "failed": 0, "udp": 0}
    try:
        for step in range(250):
            if step % 40 == 39:  # another process takes a port: the rule binding it fails on both
                port = base + rng.randrange(PORTS)
                for addr in (CHANGED, WHOLE):
                    s = socket.socket()
                    try:
                        s.bind((addr, port))
                        s.listen()
                        held.append(s)
                    except OSError:
                        s.close()
            running = {n: sp for n, sp in specs.items() if n in changed._states}
            remove = rng.sample(sorted(running), k=min(len(running), rng.choice((0, 0, 1, 2))))
            upsert_specs = [_spec(rng, n, base) for n in rng.sample(NAMES, k=rng.choice((0, 1, 1, 2, 3)))]
            upsert_specs = [sp for sp in upsert_specs if sp["name"] not in remove]
            upsert = [_rule(sp, CHANGED) for sp in upsert_specs]
            names = {r.name for r in upsert}
            others = [_rule(sp, CHANGED) for n, sp in running.items() if n not in names and n not in remove]
            if conflicts(upsert) or conflicts_with(upsert, others):
                continue  # the client's rule book refuses such a set before the data plane sees it
            got = changed.apply_changes(upsert, remove)
            gone = {*remove, *names}
            whole_rules = [r for r in whole.rules() if r.name not in gone] + [_rule(sp, WHOLE) for sp in upsert_specs]
            expected = whole.apply(whole_rules, atomic=False)
            assert _results(got, CHANGED) == {n: r for n, r in _results(expected, WHOLE).items() if n in names}
            for sp in upsert_specs:
                specs[sp["name"]] = sp
            table = _table(changed)
            assert table == _table(whole), f"step {step}"
            seen["sni"] += bool(table["sni_ports"])
            seen["health"] += bool(table["health"])
            seen["failed"] += any(r is not None for r in got.values())
            seen["udp"] += any(proto == "udp" for proto, _ in table["listeners"])
        assert all(seen.values()), seen  # the walk went through each kind of change
    finally:
        changed.close()
        whole.close()
        for s in held:
            s.close()


def test_a_delta_leaves_other_rules_and_their_connections_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = free_ports(302)  # any free ports: 302 in a row are hard to find late in a full test run
    fwd = Forwarder()
    try:
        with tcp_server(echo_handler) as echo:
            keep = parse_rule({"name": "keep", "listen_addr": "127.0.0.1", "listen_port": ports[0], "target": f"127.0.0.1:{echo.port}"})
            fwd.apply_changes([keep], [])
            conn = socket.create_connection(("127.0.0.1", ports[0]), timeout=5)
            conn.sendall(b"before")
            assert conn.recv(16) == b"before"
            state, listener = fwd._states["keep"], fwd._listeners[("tcp", "127.0.0.1", ports[0])]
            assert state._targets  # the dial list cached by that connection
            others = [parse_rule({"name": f"o{i}", "listen_addr": "127.0.0.1", "listen_port": ports[1 + i], "target": "127.0.0.1:9"})
                      for i in range(300)]
            for rule in others:
                fwd.apply_changes([rule], [])
            # One delta visits the rules it names, not the 301 running: count socket_keys calls.
            calls = []
            real = forwarder_module.socket_keys

            def counting(rule: Rule) -> list[tuple[str, str, int]]:
                calls.append(rule.name)
                return real(rule)
            monkeypatch.setattr(forwarder_module, "socket_keys", counting)
            moved = parse_rule({"name": "o0", "listen_addr": "127.0.0.1", "listen_port": ports[301], "target": "127.0.0.1:19"})
            assert fwd.apply_changes([moved], ["o1"]) == {"o0": None}
            assert set(calls) == {"o0", "o1"} and len(calls) <= 4
            monkeypatch.undo()
            for rule in others[2:150]:
                fwd.apply_changes([], [rule.name])
            assert fwd._states["keep"] is state and fwd._listeners[("tcp", "127.0.0.1", ports[0])] is listener
            assert state._targets  # not updated: its cached dial list is still there
            assert ("tcp", "127.0.0.1", ports[1]) not in fwd._listeners  # o0 left that port
            assert len(fwd._listeners) == 1 + 1 + 150 and fwd.rules()[0].name == "keep"
            conn.sendall(b"after")
            assert conn.recv(16) == b"after"
            conn.close()
    finally:
        fwd.close()
