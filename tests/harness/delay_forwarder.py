"""A forwarder with a known added delay: `python delay_forwarder.py LISTEN_PORT TARGET_PORT DELAY_MS`.

Each chunk from the client is held for DELAY_MS before it is passed on;
replies pass at once. A request/response therefore takes the direct path's
time plus DELAY_MS (plus this script's small overhead), which is what the
latency and connrate probes must report. Thread per direction, half-close
passed on (EOF one way -> shutdown(SHUT_WR) the other way). Prints one
line per accepted connection (to its log).
"""

from __future__ import annotations

import socket
import sys
import threading
import time

ACCEPTED = "accepted"


def pump(src: socket.socket, dst: socket.socket, delay_s: float) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if delay_s:
                time.sleep(delay_s)
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def handle(client: socket.socket, target_port: int, delay_s: float) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up = threading.Thread(target=pump, args=(client, upstream, delay_s), daemon=True)
    up.start()
    pump(upstream, client, 0.0)
    up.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    listen_port, target_port, delay_ms = int(argv[1]), int(argv[2]), float(argv[3])
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", listen_port))
    lsock.listen(1024)
    while True:
        conn, _ = lsock.accept()
        print(ACCEPTED, flush=True)  # one line per connection (its log): how many connections a client opened
        threading.Thread(target=handle, args=(conn, target_port, delay_ms / 1000.0), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
