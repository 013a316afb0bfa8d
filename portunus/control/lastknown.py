"""The client's last-known rule set on disk, so a restart during a control-plane outage forwards.

    <bundle>.ruleset.jsonl   (0600, next to the bundle)
    line 1   {"format": 1, "client": NAME, "identity": HEX, "high_water": N}
    line 2   {"signed": <the last full rule set, exactly as the server signed it>}
    line 3.. {"signed": <each signed delta applied since, in order>}

Nothing here is trusted because it is on disk: at start every document is
verified with the server's signing key from the bundle and replayed through
`RuleBook.plan` / `commit`, the same path a rule set from the stream takes. A full
set rewrites the file (atomically); a delta is one appended, fsynced line, so
a push costs a small write, not a rewrite of a 1,000-rule set. A torn last
line (a crash mid-append) is ignored.

`high_water` is the highest version ever applied; with the replayed version
it is the floor below which no rule set is accepted after a restart, even a
validly signed one (a replayed old set, a server restored from an old
backup). `identity` ties the file to one enrollment: after a re-enrollment
the old file is ignored instead of pinning the new identity to old versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portunus.control.bundle import ClientBundle
from portunus.control.files import write_private
from portunus.control.pki import public_key_b64
from portunus.control.ruleset import BundleRejected, NeedResync, RuleBook
from portunus.control.signing import SignatureError, verify_document

log = logging.getLogger("portunus.client.lastknown")

# File format history:
#   1  header line, then the last full signed rule set and the signed deltas since
LASTKNOWN_FORMAT = 1
SUFFIX = ".ruleset.jsonl"
# After this many deltas the client asks the server for a full set, which
# replaces the file, as soon as pushes pause (a full set in the middle of a
# burst would delay the push behind it by the size of the whole set)...
MAX_DELTAS = 100
# ...and at once after this many, however busy: start-up replays at most
# this many documents (about 0.2 ms each here).
MAX_DELTAS_BUSY = 1000


class LastKnownError(Exception):
    """A last-known file that cannot be used; the client starts without it."""


def default_path(bundle_path: str | Path) -> Path:
    return Path(str(bundle_path) + SUFFIX)


def identity(bundle: ClientBundle) -> str:
    """What ties a file to one enrollment: client name, client key, server signing key."""
    text = "\n".join((bundle.client, public_key_b64(bundle.client_key().public_key()), bundle.signing_public_key))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Restored:
    """What a start-up found on disk: the book to run (maybe empty) and the version floor."""

    book: RuleBook
    high_water: int
    documents: int


class LastKnown:
    """Reads the file at start, then records every rule set the client applies."""

    def __init__(self, path: Path, bundle: ClientBundle) -> None:
        self.path = path
        self.bundle = bundle
        self._identity = identity(bundle)
        self.deltas = 0

    # ------------------------------------------------------------ start-up

    def restore(self) -> Restored:
        """Verify and replay the file; an unusable file gives an empty book (at its high-water mark if known)."""
        empty = RuleBook(self.bundle.client)
        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return Restored(empty, 0, 0)
        except OSError as e:
            log.error("cannot read %s (%s); starting without a last-known rule set", self.path, e.strerror or e)
            return Restored(empty, 0, 0)
        try:
            header = self._header(lines[0])
        except LastKnownError as e:
            log.error("%s: %s; starting without a last-known rule set", self.path, e)
            return Restored(empty, 0, 0)
        high_water = header["high_water"]
        book, count = RuleBook(self.bundle.client), 0
        key = self.bundle.signing_key()
        try:
            for i, raw in enumerate(lines[1:], start=2):
                if not raw.strip():
                    continue
                try:
                    signed = json.loads(raw)["signed"]
                except (ValueError, TypeError, KeyError):
                    if not any(x.strip() for x in lines[i:]):
                        log.warning("%s: ignoring a torn last line (a write cut short)", self.path)
                        break
                    raise LastKnownError(f"line {i} is not a signed rule set") from None
                try:
                    book.commit(book.plan(verify_document(key, signed)))
                except (SignatureError, BundleRejected, NeedResync) as e:
                    raise LastKnownError(f"line {i}: {e}") from None
                count += 1
        except LastKnownError as e:
            log.error("%s does not verify (%s); not using it, and accepting no rule set below version %d",
                      self.path, e, high_water)
            return Restored(RuleBook(self.bundle.client, version=high_water), high_water, 0)
        self.deltas = max(0, count - 1)
        high_water = max(high_water, book.version)
        book.version = max(book.version, high_water)
        return Restored(book, high_water, count)

    def _header(self, raw: bytes) -> dict[str, Any]:
        try:
            header = json.loads(raw)
        except ValueError:
            raise LastKnownError("header is not JSON") from None
        if not isinstance(header, dict):
            raise LastKnownError("header is not a JSON object")
        fmt = header.get("format")
        if fmt != LASTKNOWN_FORMAT:
            raise LastKnownError(f"format {fmt!r} is not {LASTKNOWN_FORMAT}")
        if header.get("client") != self.bundle.client or header.get("identity") != self._identity:
            raise LastKnownError("it belongs to another enrollment (the bundle was re-enrolled)")
        hw = header.get("high_water")
        if not isinstance(hw, int) or isinstance(hw, bool) or hw < 0:
            raise LastKnownError(f"bad high_water {hw!r}")
        return header

    # ------------------------------------------------------------ recording

    def record(self, signed: dict[str, Any], kind: str, version: int) -> None:
        """Persist a rule set that was just verified and applied (a full set rewrites, a delta appends)."""
        line = json.dumps({"signed": signed}, separators=(",", ":")) + "\n"
        if kind == "full" or not self.path.exists():
            if kind != "full":
                return  # a delta without its base is no use on disk; the next full set starts the file
            header = {"format": LASTKNOWN_FORMAT, "client": self.bundle.client, "identity": self._identity,
                      "high_water": version}
            write_private(self.path, (json.dumps(header) + "\n" + line).encode())
            self.deltas = 0
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.deltas += 1

    @property
    def wants_full_set(self) -> bool:
        """True once enough deltas piled up that a full set should replace them (when pushes pause)."""
        return self.deltas >= MAX_DELTAS

    @property
    def needs_full_set(self) -> bool:
        """True once so many deltas piled up that a full set should replace them now."""
        return self.deltas >= MAX_DELTAS_BUSY
