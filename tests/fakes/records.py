"""TLS over a socket, one record at a time (to see where a peer's records end)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct


class RecordStream:
    """An SSL object over memory BIOs on a non-blocking socket, fed exactly one TLS
    record per :meth:`next_record` (so that the next ``tls.read`` returns that record's
    plaintext alone)."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None, within: float = 5.0) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=server_hostname)
        self.raw = bytearray()
        self.within = within

    async def send_pending(self) -> None:
        """Send what the SSL object has written (handshake or application records)."""
        await asyncio.get_running_loop().sock_sendall(self.sock, self.outgoing.read())

    async def next_record(self) -> bool:
        """Receive until one whole record is buffered and feed exactly that record to
        the SSL object. False if the peer closed first."""
        loop = asyncio.get_running_loop()
        raw = self.raw
        while len(raw) < 5 or len(raw) < 5 + struct.unpack_from("!H", raw, 3)[0]:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), self.within)
            if not data:
                return False
            raw.extend(data)
        size = 5 + struct.unpack_from("!H", raw, 3)[0]
        self.incoming.write(bytes(raw[:size]))
        del raw[:size]
        return True

    async def handshake(self) -> bool:
        """Complete the handshake (and send its last flight); False if the peer closed."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.send_pending()
                if not await self.next_record():
                    return False
        await self.send_pending()
        return True
