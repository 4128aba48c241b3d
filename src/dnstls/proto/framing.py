"""DNS over TCP/TLS length-prefix framing (RFC 1035 §4.2.2, RFC 7766 §8).

Every DNS message on a stream is preceded by a two-byte, big-endian length. A stream
carries any number of messages back to back: one TLS record may hold several messages,
and one message may arrive across many records or TCP segments, split at *any* byte,
including between the two length bytes. :class:`FrameDecoder` accepts bytes as they
arrive and returns the complete messages.

A length prefix of zero is a protocol violation (no DNS message is empty); it is
reported as :class:`FramingError` so the connection can be closed. Lengths smaller than
the 12-byte DNS header are returned as messages: the layer above decides whether to
answer FORMERR or close (it cannot answer without a readable header).

The decoder also reports whether a message is partly received (``in_message``), so the
stream layer can apply a per-message read deadline that is distinct from the idle
timeout (RFC 7766 §6.2.3: the idle timer restarts only after a whole message).
"""

from __future__ import annotations

import struct
from typing import TypeAlias

#: What :meth:`FrameDecoder.feed` takes: bytes from the transport, or any bytes-like
#: object (an explicit union, not ``bytes``: mypyc checks argument types at run time).
Buffer: TypeAlias = bytes | bytearray | memoryview

MAX_MESSAGE = 65535
LENGTH = struct.Struct("!H")  # the two-byte length prefix
_LEN = LENGTH


class FramingError(Exception):
    """The byte stream cannot be framed (zero-length message).

    ``messages`` holds the complete messages that preceded the bad length prefix in the
    same :meth:`FrameDecoder.feed` call: they were received intact and deserve answers
    before the connection is closed.
    """

    def __init__(self, reason: str, messages: list[bytes] | None = None) -> None:
        super().__init__(reason)
        self.messages = messages or []


def encode(message: bytes) -> bytes:
    """Return ``message`` with its two-byte length prefix."""
    n = len(message)
    if n == 0 or n > MAX_MESSAGE:
        raise ValueError(f"DNS message length {n} out of range 1..{MAX_MESSAGE}")
    return _LEN.pack(n) + message


def encode_many(messages: list[bytes]) -> bytes:
    """Frame several messages into one buffer (one write, one TLS record if it fits).

    Prefixes and messages are joined in one copy (``pack(n) + m`` per message would copy
    every answer twice).
    """
    parts: list[bytes] = []
    add = parts.append
    pack = _LEN.pack
    for m in messages:
        add(pack(len(m)))
        add(m)
    return b"".join(parts)


class FrameDecoder:
    """Incremental decoder of length-prefixed DNS messages."""

    __slots__ = ("_buf", "in_message")

    def __init__(self) -> None:
        self._buf = bytearray()
        # True while part of a message (or of its length) has been received: an
        # attribute kept equal to bool(buffer), read by the stream state after each read
        self.in_message = False

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete message."""
        return len(self._buf)

    def feed(self, data: Buffer) -> list[bytes]:
        """Add ``data`` and return every message it completes, in order."""
        buf = self._buf
        if not buf and len(data) >= 2:
            # Fast path: nothing buffered; slice complete messages straight from data
            # (a slice of bytes is bytes: one copy per message, no bytes() call).
            if type(data) is not bytes:
                data = bytes(data)
            end = len(data)
            n = (data[0] << 8) | data[1]
            if n + 2 == end and n:  # exactly one whole message: the usual read
                return [data[2:]]
            out: list[bytes] = []
            append = out.append
            pos = 0
            start = 2
            while start <= end:  # a length prefix is here: pos, pos + 1
                stop = start + ((data[pos] << 8) | data[pos + 1])
                if stop > end or stop == start:
                    if stop == start:
                        raise FramingError("zero-length DNS message", out)
                    break
                append(data[start:stop])
                pos = stop
                start = stop + 2
            if pos < end:
                buf += data[pos:]
                self.in_message = True
            return out
        buf += data
        self.in_message = bool(buf)
        return self._drain()

    def _drain(self) -> list[bytes]:
        buf = self._buf
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            n = (buf[pos] << 8) | buf[pos + 1]
            if n == 0:
                raise FramingError("zero-length DNS message", out)
            if end - pos - 2 < n:
                break
            out.append(bytes(buf[pos + 2 : pos + 2 + n]))
            pos += 2 + n
        if pos:
            del buf[:pos]
            self.in_message = bool(buf)
        return out
