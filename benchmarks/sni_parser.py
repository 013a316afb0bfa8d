"""Parser choice for SNI routing: portunus.dataplane.sni.parse_client_hello vs dpkt.ssl.

dpkt (1.9.8, the maintained packet library that parses TLS records) is not a
dependency: run this with an interpreter that has it, with the repo on
sys.path, e.g.

    python -m venv /tmp/dpkt && /tmp/dpkt/bin/pip install dpkt
    /tmp/dpkt/bin/python benchmarks/sni_parser.py

It times both on the same real ClientHello (Python ssl, TLS 1.3) and shows
what each does with a prefix of it (what a peek holds before the rest arrives).
"""

from __future__ import annotations

import struct
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portunus.dataplane.sni import parse_client_hello  # noqa: E402
from tests.support.tls import client_hello  # noqa: E402


def dpkt_server_name(data: bytes) -> str | None:
    """SNI with dpkt: records, handshake, ClientHello extensions; the server_name list by hand."""
    import dpkt

    records, _used = dpkt.ssl.tls_multi_factory(data)
    hs = dpkt.ssl.TLSHandshake(records[0].data)
    for ext_type, ext in hs.data.extensions:
        if ext_type == 0:
            (n,) = struct.unpack("!H", ext[3:5])
            return ext[5:5 + n].decode("ascii").lower()
    return None


def main() -> None:
    hello = client_hello("bench.example.com")
    n = 20000
    ours = timeit.timeit(lambda: parse_client_hello(hello, 16389), number=n) / n * 1e6
    print(f"ClientHello: {len(hello)} bytes")
    print(f"portunus parse_client_hello: {ours:6.1f} us  -> {parse_client_hello(hello, 16389)}")
    try:
        import dpkt
    except ImportError:
        print("dpkt not installed: see the module docstring")
        return
    theirs = timeit.timeit(lambda: dpkt_server_name(hello), number=n) / n * 1e6
    print(f"dpkt {dpkt.__version__} ssl:          {theirs:6.1f} us  -> {dpkt_server_name(hello)}")
    for cut in (3, 40, len(hello) - 1):
        try:
            got: object = dpkt_server_name(hello[:cut])
        except Exception as e:  # what a peek would have to interpret
            got = f"{type(e).__name__}: {e}"
        print(f"prefix of {cut:3d} bytes: portunus {parse_client_hello(hello[:cut], 16389)}, dpkt {got!r}")


if __name__ == "__main__":
    main()
