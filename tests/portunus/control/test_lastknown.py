"""The client's last-known rule set file: verified replay, high-water mark, identity binding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portunus.control.bundle import ClientBundle
from portunus.control.lastknown import MAX_DELTAS, LastKnown, default_path
from portunus.control.pki import (
    cert_fingerprint,
    make_self_signed_cert,
    private_key_pem,
    public_key_b64,
)
from portunus.control.ruleset import BundleRejected, RuleBook, delta_payload, full_payload
from portunus.control.signing import sign_document


def _rule(name: str, port: int) -> dict:
    return {"name": name, "listen_addr": "127.0.0.1", "listen_port": port, "target": "127.0.0.1:9"}


class Server:
    """The two keys that matter: the server's signing key and the bundle pinned to it."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        cert_pem, _ = make_self_signed_cert(["127.0.0.1"])
        self.bundle = ClientBundle("edge", "127.0.0.1:7443", f"sha256:{cert_fingerprint(cert_pem)}",
                                   cert_pem.decode(), public_key_b64(self.key.public_key()),
                                   private_key_pem(Ed25519PrivateKey.generate()), "2026-01-01T00:00:00+00:00")

    def full(self, version: int, *rules: dict) -> dict:
        return sign_document(self.key, full_payload("edge", version, list(rules), {}))

    def delta(self, version: int, **kw: list) -> dict:
        return sign_document(self.key, delta_payload("edge", version, **kw))


def test_full_then_deltas_replay_to_the_same_book(tmp_path: Path) -> None:
    s = Server()
    path = default_path(tmp_path / "edge.json")
    assert path.name == "edge.json.ruleset.jsonl"
    lk = LastKnown(path, s.bundle)
    assert lk.restore().book.version == 0 and not path.exists()
    lk.record(s.delta(1, upsert=[_rule("a", 1000)]), "delta", 1)  # no base on disk yet: not written
    assert not path.exists()
    lk.record(s.full(4, _rule("a", 1000)), "full", 4)
    lk.record(s.delta(5, upsert=[_rule("b", 1001)]), "delta", 5)
    lk.record(s.delta(6, remove=["a"]), "delta", 6)
    assert path.stat().st_mode & 0o777 == 0o600

    restored = LastKnown(path, s.bundle).restore()
    assert (restored.book.version, sorted(restored.book.rules), restored.high_water, restored.documents) == \
        (6, ["b"], 6, 3)


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    s = Server()
    path = tmp_path / "state.jsonl"
    lk = LastKnown(path, s.bundle)
    lk.record(s.full(1, _rule("a", 1000)), "full", 1)
    with path.open("ab") as f:
        f.write(json.dumps({"signed": s.delta(2, remove=["a"])}).encode()[:40])  # crash mid-append
    restored = LastKnown(path, s.bundle).restore()
    assert (restored.book.version, list(restored.book.rules)) == (1, ["a"])


def test_a_tampered_file_is_not_run_but_its_high_water_mark_holds(tmp_path: Path) -> None:
    s = Server()
    path = tmp_path / "state.jsonl"
    LastKnown(path, s.bundle).record(s.full(7, _rule("a", 1000)), "full", 7)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("1000", "2000")  # the signature no longer matches
    path.write_text("\n".join(lines) + "\n")
    restored = LastKnown(path, s.bundle).restore()
    assert (restored.book.version, dict(restored.book.rules), restored.high_water) == (7, {}, 7)
    # So a replayed, validly signed older set is refused after the restart.
    _, err = _advance(restored.book, s.full(6, _rule("old", 1000)))
    assert err is not None and "stale rule set: version 6 is older than the running 7" in err


def test_another_signing_key_or_reenrollment_is_not_trusted(tmp_path: Path) -> None:
    s = Server()
    path = tmp_path / "state.jsonl"
    LastKnown(path, s.bundle).record(s.full(3, _rule("a", 1000)), "full", 3)
    other = dataclasses.replace(s.bundle, client_private_key_pem=private_key_pem(Ed25519PrivateKey.generate()))
    restored = LastKnown(path, other).restore()
    assert (restored.book.version, restored.high_water) == (0, 0)  # a new enrollment starts afresh
    forged = Server()
    forged_lines = path.read_text().splitlines()
    forged_lines[1] = json.dumps({"signed": forged.full(9, _rule("evil", 1000))})
    path.write_text("\n".join(forged_lines) + "\n")
    restored = LastKnown(path, s.bundle).restore()
    assert not restored.book.rules and restored.high_water == 3


def test_many_deltas_ask_for_a_full_set(tmp_path: Path) -> None:
    s = Server()
    lk = LastKnown(tmp_path / "state.jsonl", s.bundle)
    lk.record(s.full(1, _rule("a", 1000)), "full", 1)
    for v in range(2, 2 + MAX_DELTAS):
        assert not lk.wants_full_set
        lk.record(s.delta(v, upsert=[_rule("a", 1000 + v)]), "delta", v)
    assert lk.wants_full_set
    lk.record(s.full(MAX_DELTAS + 1, _rule("a", 1)), "full", MAX_DELTAS + 1)
    assert not lk.wants_full_set and len((tmp_path / "state.jsonl").read_text().splitlines()) == 2


def _advance(book: RuleBook, signed: dict) -> tuple[RuleBook | None, str | None]:
    """Offer a (validly signed) rule set to a book: (new book, None) or (None, why it was refused)."""
    try:
        return book.advance(json.loads(signed["payload"]))[0], None
    except BundleRejected as e:
        return None, str(e)
