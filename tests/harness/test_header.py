"""Result headers load back into typed values (config, host, topology) and write out unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.define.experiment import ExperimentConfig
from harness.define.load import ConfigError, load_config, with_base_port
from harness.records.header import Header, PathFacts, SysInfo, TopologyInfo
from harness.records.results import ResultsError, load_results
from harness.records.schema import upgrade_line
from tests.harness.conftest import FIXTURES
from tests.harness.test_results import header

REPO = Path(__file__).resolve().parents[2]
# Every committed result file, current and older schema versions.
RESULT_FILES = sorted([*REPO.glob("results/*/*.jsonl"), *FIXTURES.glob("**/*.jsonl")])


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_headers_load_typed_and_write_back_the_same(path: Path) -> None:
    line = json.loads(path.read_text().splitlines()[0])
    line = upgrade_line(line, line["schema_version"])
    line.pop("type")
    h = Header.from_dict(line)
    assert isinstance(h.config, ExperimentConfig) and h.config.kind == h.kind
    assert isinstance(h.sysinfo, SysInfo) and isinstance(h.topology, TopologyInfo)
    assert h.to_dict() == line


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_round_trips_through_a_header(path: Path) -> None:
    cfg = load_config(path)
    assert ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_defaults_come_from_the_model() -> None:
    cfg = ExperimentConfig.from_dict({"name": "t", "kind": "capped", "paths": ["client_capped"], "rounds": 1,
                                      "seconds": 1, "omit_seconds": 0, "caps_bytes_per_s": [65536]})
    assert (cfg.cap_bound_pct, cfg.cap_goal_pct, cfg.backend, cfg.probe) == (10.0, 2.0, "cli", None)
    assert cfg.caps_bytes_per_s == (65536,) and cfg.topology.kind == "loopback"


def test_unknown_host_and_topology_keys_are_kept() -> None:
    si = SysInfo.from_dict({"kernel": "6.1", "gpu": "none"})
    assert si.kernel == "6.1" and si.extra == {"gpu": "none"} and si.to_dict()["gpu"] == "none"
    t = TopologyInfo.from_dict({"kind": "netns", "namespaces": {"edge": "e"}, "vlan": 7})
    assert t.namespaces == {"edge": "e"} and t.to_dict() == {"kind": "netns", "namespaces": {"edge": "e"}, "vlan": 7}


@pytest.mark.parametrize(("config", "match"), [
    ({"name": "t"}, "missing key"),
    ({**header().config.to_dict(), "colour": "red"}, "unknown key"),
    ({**header().config.to_dict(), "topology": {"kind": "mars"}}, "topology.kind"),
])
def test_a_malformed_config_names_the_file_and_line(tmp_path: Path, config: dict, match: str) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"type": "header", **header().to_dict(), "config": config}) + "\n")
    with pytest.raises(ResultsError, match=rf"r\.jsonl:1: corrupt header line: .*{match}"):
        load_results(p)


def test_base_port_override_is_checked_and_keeps_the_rest() -> None:
    cfg = load_config(REPO / "configs/quick.yaml")
    assert with_base_port(cfg, 20000, "--base-port") == ExperimentConfig(**{**cfg.__dict__, "base_port": 20000})
    with pytest.raises(ConfigError, match=r"--base-port with x: base_port: must be in \[1024, 65519\], got 5"):
        with_base_port(cfg, 5, "--base-port with x")


def test_version_3_headers_get_the_facts_their_paths_had() -> None:
    from harness.paths import PATHS
    from harness.records.schema import PATH_FACTS_V3

    # The frozen table is what the path classes said when schema 3 was current (this commit): if a
    # path's facts change on purpose later, old files keep the old facts; drop that path from here.
    for name, (forwarder_process, protocols, half_close, capped) in PATH_FACTS_V3.items():
        assert PATHS[name].facts() == PathFacts(forwarder_process, protocols, half_close, capped), name
    peers = REPO / "results/2026-11-25-vm/peers.jsonl"
    h = load_results(peers).header
    assert set(h.path_facts) == set(h.config.paths)
    assert not h.path_facts["rinetd"].half_close and not h.path_facts["iptables"].forwarder_process
    assert "udp" not in h.path_facts["haproxy"].protocols and "udp" in h.path_facts["socat"].protocols


def test_a_new_header_records_the_facts_of_every_configured_path(tmp_path: Path) -> None:
    from harness.paths import PATHS
    from harness.records.results import create_results

    cfg = load_config(REPO / "configs/peers.yaml")
    h = replace(header(), config=cfg, path_facts={p: PATHS[p].facts() for p in cfg.paths})
    create_results(tmp_path / "r.jsonl", h).close()
    back = load_results(tmp_path / "r.jsonl").header
    assert back == h and back.path_facts["rinetd"] == PathFacts(True, ("tcp", "udp"), False, False)
