"""A forwarder on asyncio Protocols (on uvloop with `uv`): the event-loop libraries' cost per connection.

    python benchmarks/alternatives/asyncio_protocols.py LISTEN_PORT TARGET_PORT [uv]

Transports copy every chunk through Python bytes; no limits or stats. Used by
benchmarks/connrate_alternatives.py to compare the stock loops with portunus's own.
"""

import asyncio
import sys

LP, TP = int(sys.argv[1]), int(sys.argv[2])
USE_UV = len(sys.argv) > 3 and sys.argv[3] == "uv"


class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client = client

    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.client.t.write(data)

    def eof_received(self):
        if self.client.t.can_write_eof():
            self.client.t.write_eof()
        return True

    def connection_lost(self, exc):
        self.client.t.close()


class Client(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.up = None
        self.buf = []
        self.eof = False
        loop = asyncio.get_running_loop()
        loop.create_task(self.dial(loop))

    async def dial(self, loop):
        try:
            t, p = await loop.create_connection(lambda: Upstream(self), "127.0.0.1", TP)
        except OSError:
            self.t.abort()
            return
        self.up = t
        for d in self.buf:
            t.write(d)
        if self.eof:
            t.write_eof()

    def data_received(self, data):
        if self.up is None:
            self.buf.append(data)
        else:
            self.up.write(data)

    def eof_received(self):
        if self.up is None:
            self.eof = True
        else:
            self.up.write_eof()
        return True

    def connection_lost(self, exc):
        if self.up is not None:
            self.up.close()


async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Client, "127.0.0.1", LP, backlog=4096, reuse_address=True)
    await srv.serve_forever()


if USE_UV:
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
