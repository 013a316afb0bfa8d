"""The stream contract: client messages are checked before the server acts on them."""

from __future__ import annotations

import pytest

from portunus.control import wire


def test_client_messages_parse() -> None:
    assert wire.parse_client_message(wire.hello("edge", "sig", 3, "a")) == wire.Hello("edge", "sig", 3, "a")
    assert wire.parse_client_message(wire.ack(4, {"r": None, "s": "EADDRINUSE"})) == \
        wire.Ack(4, {"r": None, "s": "EADDRINUSE"})
    assert wire.parse_client_message(wire.rejected(None, "bad")) == wire.Rejected(None, "bad")
    assert wire.parse_client_message(wire.stats({}, 2)) == wire.Stats({}, 2)
    assert wire.decode(wire.encode(wire.resync("gap"))) == {"type": "resync", "reason": "gap"}


@pytest.mark.parametrize("msg, message", [
    ({"type": "hello", "client": "e", "signature": "s", "version": -1}, "version must be an integer from 0 to"),
    ({"type": "hello", "client": 1, "signature": "s", "version": 1}, "client must be a string"),
    ({"type": "ack", "version": 1, "results": {"r": 5}}, "results must map rule names"),
    ({"type": "stats", "rules": [], "active_connections": 0}, "rules must be an object"),
    ({"type": "launch"}, "unknown client message type"),
])
def test_bad_client_messages(msg: dict, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.parse_client_message(msg)


def test_decode_refuses_non_objects() -> None:
    for raw in (b"[1]", b"not json"):
        with pytest.raises(wire.WireError):
            wire.decode(raw)
