"""One query to one authoritative server: the iterator's network (resolver/iterate.py).

:class:`AuthorityTransport` implements :class:`dnstls.resolver.iterate.Authority`:

* **UDP**: a fresh socket per query, *connected* to the server, so the kernel picks a
  random ephemeral source port (RFC 5452 §9.1, RFC 6056) and drops datagrams from any
  other address or port; a random 16-bit ID from :mod:`secrets`. A datagram is accepted
  only with QR set, that ID and the question asked (name case-insensitively, type,
  class); anything else is counted (``mismatched``) and ignored -- we keep waiting until
  the deadline, as the forwarder's UDP upstream does (a forger's packet must not make
  us give up on the real answer). A datagram that matches but cannot be parsed is a
  :class:`~dnstls.errors.ProtocolError` at once. The socket is closed after the exchange.
* **TCP** (``tcp=True``; the iterator asks again this way after TC=1): a fresh
  connection, one query with RFC 1035 §4.2.2 two-byte framing, closed after the answer.

``deadline`` is in the event loop's clock (the iterator is built with ``loop.time``).
Errors are translated at this boundary: :class:`~dnstls.errors.QueryTimeout`,
:class:`~dnstls.errors.NetworkError` (``OSError``: unreachable, refused, reset),
:class:`~dnstls.errors.ProtocolError` (malformed answer, framing). A truncated UDP
answer is returned as it is (TC=1): the iterator decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
from collections import Counter
from typing import Any

import dns.exception
import dns.flags
import dns.message

from dnstls.errors import NetworkError, ProtocolError, QueryTimeout

Address = tuple[str, int]
MAX_UDP = 65535


def _matches(wire: bytes, query_id: int, question: bytes) -> bool:
    """QR, our ID, one question equal to ours (the name case-insensitively)."""
    if len(wire) < 12 + len(question) or int.from_bytes(wire[0:2], "big") != query_id:
        return False
    if not wire[2] & 0x80 or wire[4:6] != b"\x00\x01":
        return False
    name = len(question) - 4
    return wire[12:12 + name].lower() == question[:name].lower() \
        and wire[12 + name:12 + len(question)] == question[name:]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, query_id: int, question: bytes, counts: Counter[str]) -> None:
        self.query_id = query_id
        self.question = question
        self.counts = counts
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.answer.done():
            return
        if _matches(data, self.query_id, self.question):
            self.answer.set_result(data)
        else:
            self.counts["mismatched"] += 1

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.answer.done():
            self.answer.set_exception(exc)


class AuthorityTransport:
    """The iterator's Authority over asyncio sockets (module docstring)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def statistics(self) -> dict[str, int]:
        """``udp``, ``tcp`` exchanges; ``mismatched`` datagrams ignored; ``timeouts``,
        ``network_errors``, ``malformed``."""
        return dict(self.counts)

    async def exchange(self, query: dns.message.Message, address: Address, *, tcp: bool,
                       deadline: float) -> dns.message.Message:
        query_id = secrets.randbits(16)
        query.id = query_id
        wire = query.to_wire()
        question = _question_bytes(wire)
        host = address[0]
        what = f"{host}#{address[1]}"
        try:
            async with asyncio.timeout_at(deadline):
                if tcp:
                    self.counts["tcp"] += 1
                    answer = await self._tcp(wire, address)
                    if not _matches(answer, query_id, question):
                        self.counts["mismatched"] += 1
                        raise ProtocolError(f"{what}: TCP answer does not match the query")
                else:
                    self.counts["udp"] += 1
                    answer = await self._udp(wire, address, query_id, question)
        except TimeoutError:
            self.counts["timeouts"] += 1
            raise QueryTimeout(f"no answer from {what}") from None
        except OSError as exc:
            self.counts["network_errors"] += 1
            raise NetworkError(f"{what}: {exc.strerror or exc}") from None
        try:
            return dns.message.from_wire(answer)
        except (dns.exception.DNSException, ValueError) as exc:
            self.counts["malformed"] += 1
            raise ProtocolError(f"malformed answer from {what}: {exc}") from None

    async def _udp(self, wire: bytes, address: Address, query_id: int,
                   question: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Datagrams(query_id, question, self.counts), remote_addr=address)
        try:
            transport.sendto(wire)
            return await protocol.answer
        finally:
            transport.close()

    async def _tcp(self, wire: bytes, address: Address) -> bytes:
        reader, writer = await asyncio.open_connection(address[0], address[1])
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            try:
                head = await reader.readexactly(2)
                return await reader.readexactly(struct.unpack("!H", head)[0])
            except asyncio.IncompleteReadError:
                raise ProtocolError(f"{address[0]}#{address[1]}: connection closed "
                                    "before a whole answer") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _question_bytes(wire: bytes) -> bytes:
    """The question section of our own query (uncompressed: it is the first name)."""
    end = 12
    while wire[end]:
        end += wire[end] + 1
    return wire[12:end + 5]
