"""Result files: append-as-you-go, strict versioned loading, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.define.experiment import ExperimentConfig
from harness.records import results, schema
from harness.records.header import Header, SysInfo
from harness.records.results import (
    Record,
    ResultsError,
    create_results,
    load_results,
    resume_results,
    to_dataframe,
)


def config(**kw) -> ExperimentConfig:
    """A small valid experiment config (headline over direct unless kw says otherwise)."""
    return ExperimentConfig(**{"name": "t", "kind": "headline", "paths": ("direct",), "rounds": 1, "seconds": 1,
                               "omit_seconds": 0, **kw})


def header(**kw) -> Header:
    kw.setdefault("sysinfo", SysInfo(kernel="x"))
    return Header(experiment="t", kind="headline", created_at=results.utc_now(), config=config(), **kw)


def record(path: str = "direct", rnd: int = 1, mbps: float | None = 100.0, **kw) -> Record:
    base = dict(experiment="t", path=path, round=rnd, index=rnd, offered_mbps=None, cap_bytes_per_s=None,
                seconds=1, omit_seconds=0, protocol="tcp", backend="cli",
                status="ok" if mbps is not None else "failed", error=None if mbps is not None else "boom",
                started_at="a", ended_at="b", throughput_mbps=mbps, sender_mbps=mbps,
                receiver_mbps=mbps, iperf_raw='{"raw": true}')
    base.update(kw)
    return Record(**base)


def test_roundtrip_and_each_record_is_on_disk_when_append_returns(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    w = create_results(p, header(unavailable_paths={"client": "not built"}))
    w.append(record(rnd=1, forwarder_pids=(12, 13), path_info={"binary": "x"}))
    # Readable by someone else before the writer is closed (the run may die next).
    assert len(load_results(p).records) == 1
    w.append(record(rnd=2, mbps=None))
    w.end("complete", measurements=2)
    w.close()
    rs = load_results(p)
    assert rs.header.unavailable_paths == {"client": "not built"}
    assert [r.round for r in rs.records] == [1, 2]
    assert rs.records[0].forwarder_pids == (12, 13) and rs.records[0].iperf_raw == '{"raw": true}'
    assert rs.records[1].status == "failed" and rs.complete


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    create_results(p, header()).close()
    with pytest.raises(ResultsError, match="--resume"):
        create_results(p, header())


def test_resume_appends(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    w = create_results(p, header())
    w.append(record(rnd=1))
    w.end("interrupted")
    w.close()
    w, existing = resume_results(p)
    assert len(existing.records) == 1 and not existing.complete
    w.append(record(rnd=2))
    w.end("complete")
    w.close()
    rs = load_results(p)
    assert len(rs.records) == 2 and rs.complete
    assert [e["type"] for e in rs.events] == ["run_end", "run_resumed", "run_end"]


def test_provenance_lists_the_commit_of_every_run_and_the_report_warns_on_a_mix(tmp_path: Path) -> None:
    from harness.kinds import summarise_file
    from harness.present.report import render_provenance

    clean = tmp_path / "a.jsonl"
    w = create_results(clean, header(sysinfo=SysInfo(commit="a" * 40, dirty=False)))
    w.append(record(rnd=1))
    w.end("interrupted")
    w.close()
    rs = load_results(clean)
    assert rs.provenance() == [("a" * 40, False)]
    assert render_provenance([summarise_file(rs)]) is None  # one clean commit: nothing to say
    w, _ = resume_results(clean, {"commit": "b" * 40, "dirty": True, "hostname": "h"})
    w.append(record(rnd=2))
    w.end("complete")
    w.close()
    rs = load_results(clean)
    assert rs.provenance() == [("a" * 40, False), ("b" * 40, True)]
    text = render_provenance([summarise_file(rs)])
    assert text is not None and "2 commits" in text and f"`{'b' * 12}`: `a.jsonl`" in text
    assert "dirty tree): `a.jsonl`" in text


def _write(p: Path, lines: list[str], newline_at_end: bool = True) -> None:
    p.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))


def _header_line(**kw) -> str:
    return json.dumps({"type": "header", **header().to_dict(), **kw})


def test_newer_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    _write(p, [_header_line(schema_version=schema.SCHEMA_VERSION + 1)])
    with pytest.raises(ResultsError, match=r"newer than this portunus-bench reads.*update the harness"):
        load_results(p)


@pytest.mark.parametrize(("lines", "newline", "match"), [
    (["{not json"], True, r"r\.jsonl:1: corrupt line"),
    ([_header_line(), "{\"type\": \"measurement\", \"path\": \"x\"}"], True, r"r\.jsonl:2: corrupt measurement line"),
    ([_header_line(), json.dumps({"type": "measurement", **record().to_dict(), "bogus": 1})], True, "unknown record field"),
    ([_header_line(), '{"type": "measurement", "experi'], False, "cut short"),
    ([json.dumps({"type": "measurement"})], True, "no portunus-bench header"),
    ([_header_line(), _header_line()], True, "second header"),
    ([_header_line(), '{"type": "strange"}'], True, "unknown line type"),
])
def test_corrupt_files_give_a_clear_error(tmp_path: Path, lines: list[str], newline: bool, match: str) -> None:
    p = tmp_path / "r.jsonl"
    _write(p, lines, newline)
    with pytest.raises(ResultsError, match=match):
        load_results(p)


def test_binary_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ResultsError, match="not a portunus-bench result file"):
        load_results(tmp_path / "bin.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ResultsError, match="empty"):
        load_results(tmp_path / "empty.jsonl")


def test_older_versions_are_upgraded_step_by_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade chain: pretend the current version is 3 and the file is version 1."""
    def v1_to_v2(line: dict) -> dict:
        if line["type"] == "measurement":
            line["throughput_mbps"] = line.pop("mbps_v1")
        return line

    def v2_to_v3(line: dict) -> dict:
        if line["type"] == "measurement":
            line["path"] = {"kernel": "iptables"}.get(line["path"], line["path"])
        return line

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(schema, "UPGRADES", {1: v1_to_v2, 2: v2_to_v3})
    old = record(path="kernel").to_dict()
    old["mbps_v1"] = old.pop("throughput_mbps")
    p = tmp_path / "old.jsonl"
    _write(p, [_header_line(schema_version=1), json.dumps({"type": "measurement", **old})])
    rs = load_results(p)
    assert rs.header.schema_version == 3
    assert rs.records[0].path == "iptables" and rs.records[0].throughput_mbps == 100.0


def test_dataframe(tmp_path: Path) -> None:
    df = to_dataframe([record(rnd=1), record(path="iptables", rnd=1, mbps=90.0)])
    assert list(df["path"]) == ["direct", "iptables"]
    assert "iperf_raw" not in df.columns
    assert df.groupby("path")["throughput_mbps"].median()["iptables"] == 90.0
    assert "iperf_raw" in to_dataframe([record()], include_raw=True).columns


def test_an_older_file_is_readable_but_not_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "old.jsonl"
    _write(p, [_header_line(schema_version=1), json.dumps({"type": "measurement", **record().to_dict()})])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "UPGRADES", {1: lambda line: line})
    rs = load_results(p)
    assert rs.file_schema_version == 1 and rs.header.schema_version == 2 and len(rs.records) == 1
    with pytest.raises(ResultsError, match="not resumed"):
        resume_results(p)
    assert p.read_text().count("\n") == 2  # nothing was appended
