"""Reading a TLS stream one record at a time (to see where a peer's records end)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct


async def feed_one_record(sock: socket.socket, raw: bytearray, incoming: ssl.MemoryBIO,
                          within: float = 5.0) -> bool:
    """Receive from ``sock`` into ``raw`` until it holds one whole TLS record, and
    write exactly that record into ``incoming`` (so that the SSL object's next read
    returns that record's plaintext alone). False if the peer closed first."""
    loop = asyncio.get_running_loop()
    while len(raw) < 5 or len(raw) < 5 + struct.unpack_from("!H", raw, 3)[0]:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), within)
        if not data:
            return False
        raw.extend(data)
    size = 5 + struct.unpack_from("!H", raw, 3)[0]
    incoming.write(bytes(raw[:size]))
    del raw[:size]
    return True
