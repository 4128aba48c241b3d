"""Zone transfers over TCP, TLS (XFR-over-TLS, RFC 9103) or UDP: the asyncio adapter.

:func:`transfer` opens its own connection (a transfer holds it to itself, RFC 5936
§4.1, so it does not go through the pipelining pool), authenticates a TLS server
exactly as the pool does (:mod:`dnstls.net.tls_client`: CA and name, pins, or
opportunistic), sends one query and yields the answer's messages as they arrive, each
parsed, TSIG-verified over the whole stream (RFC 8945 §5.3.1) and fed to the sans-IO
:class:`~dnstls.proto.xfr.Transfer`, which says when the transfer ends or why it is
broken. Every message must arrive within ``per_message`` seconds of the previous one (of
the query, for the first), as kdig's ``+timeout`` bounds each reply.

Failures are :mod:`dnstls.errors` types: :class:`~dnstls.errors.QueryTimeout`,
:class:`TransferClosed` (the server closed the connection mid-transfer),
:class:`~dnstls.errors.MalformedAnswer`, :class:`~dnstls.proto.xfr.TransferError`
(error RCODE, no SOA first, TSIG) and, before the query is sent,
:class:`~dnstls.errors.NetworkError` and the TLS authentication errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.tsig

from dnstls.errors import MalformedAnswer, NetworkError, QueryTimeout
from dnstls.net import tls_client
from dnstls.net.pool import ConnectionDetails
from dnstls.proto import upstream
from dnstls.proto.pins import PinSet
from dnstls.proto.xfr import Transfer, TransferError
from dnstls.upstreams import UpstreamSpec

#: A bound on what one transfer may bring (records); beyond it the transfer fails.
DEFAULT_RECORD_LIMIT = 10_000_000

_TSIG_ERRORS = (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm,
                dns.tsig.BadTime, dns.tsig.PeerError, dns.message.UnknownTSIGKey)


class TransferClosed(NetworkError):
    """The server closed (or reset) the connection before the transfer ended."""


@dataclass(frozen=True, slots=True)
class XfrMessage:
    """One message of a transfer: ``size`` as received (without the TCP length
    prefix), ``elapsed`` seconds since the query was sent, the ``connection``, and the
    :class:`~dnstls.proto.xfr.Transfer` state after it (a copy: counts, ``done``)."""

    message: dns.message.Message
    size: int
    elapsed: float
    connection: ConnectionDetails
    transfer: Transfer


async def transfer(spec: UpstreamSpec, query: dns.message.Message, wire: bytes, *,
                   per_message: float, sni: str | None = None, verify: bool | None = None,
                   limit_records: int = DEFAULT_RECORD_LIMIT,
                   started: list[float] | None = None) -> AsyncIterator[XfrMessage]:
    """Send ``wire`` (``query`` rendered for the transport, signed if ``query`` has a
    TSIG key) to ``spec``'s server and yield the transfer's messages until the last.

    ``query``'s first question names the zone and the type (AXFR or IXFR). ``started``,
    if given, receives the loop time the query was sent at (for a caller's report of a
    failure's elapsed time)."""
    zone = query.question[0].name
    transfer_state = Transfer(zone, int(query.question[0].rdtype), limit_records)
    signed = query.tsig is not None and bool(query.keyring)
    loop = asyncio.get_running_loop()
    if spec.transport == "udp":
        stream: _Stream = await _UdpStream.open(spec, per_message)
    else:
        stream = await _TcpStream.open(spec, per_message, sni=sni, verify=verify)
    try:
        sent = loop.time()
        if started is not None:
            started.append(sent)
        await stream.send(wire)
        tsig_ctx: Any = None
        while True:
            frame = await stream.receive(per_message)
            message, verdict = _parse(frame, query if signed else None, tsig_ctx)
            tsig_ctx = message.tsig_ctx
            if not message.flags & dns.flags.QR or message.id != query.id:
                raise MalformedAnswer("malformed reply packet")
            try:
                done = transfer_state.feed(message, len(frame), signed=signed,
                                           verdict=verdict)
            except TransferError as exc:
                exc.response, exc.size = message, len(frame)
                raise
            yield XfrMessage(message, len(frame), loop.time() - sent, stream.details,
                             dataclasses.replace(transfer_state))
            if done:
                return
    finally:
        stream.close()


def _parse(frame: bytes, signed: dns.message.Message | None,
           tsig_ctx: Any) -> tuple[dns.message.Message, str | None]:
    """One message of the transfer; with ``signed`` (the query, its key and MAC), its
    TSIG verified as the next of the stream (RFC 8945 §5.3.1). A TSIG that does not
    verify gives the message unverified and kdig's verdict (it prints the message,
    then fails)."""
    try:
        if signed is None:
            return dns.message.from_wire(frame, one_rr_per_rrset=True), None
        try:
            return dns.message.from_wire(
                frame, keyring=signed.keyring, request_mac=signed.mac or b"",
                tsig_ctx=tsig_ctx, multi=True, one_rr_per_rrset=True), None
        except _TSIG_ERRORS:
            return (dns.message.from_wire(frame, keyring=False, one_rr_per_rrset=True),
                    upstream.TSIG_FAILED)
    except (dns.exception.DNSException, ValueError):
        raise MalformedAnswer("malformed reply packet") from None


class _Stream:
    details: ConnectionDetails

    async def send(self, wire: bytes) -> None:
        raise NotImplementedError

    async def receive(self, seconds: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _TcpStream(_Stream):
    """One TCP or TLS connection, DNS messages framed by a 2-byte length (RFC 7766)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 details: ConnectionDetails) -> None:
        self.reader = reader
        self.writer = writer
        self.details = details

    @classmethod
    async def open(cls, spec: UpstreamSpec, seconds: float, *, sni: str | None,
                   verify: bool | None) -> _TcpStream:
        context = (tls_client.client_context(spec, sni=sni, verify=verify)
                   if spec.transport == "tls" else None)
        try:
            async with asyncio.timeout(seconds):
                if context is None:
                    reader, writer = await asyncio.open_connection(spec.address, spec.port)
                else:
                    reader, writer = await asyncio.open_connection(
                        spec.address, spec.port, ssl=context,
                        server_hostname=tls_client.server_hostname(spec, sni) or "",
                        ssl_handshake_timeout=seconds)
        except TimeoutError:
            raise QueryTimeout(f"no connection to {spec.name} within {seconds:g} s") from None
        except Exception as exc:
            raise tls_client.translate_error(exc, spec) from None
        details = ConnectionDetails(spec.transport, spec.address, spec.port, 0)
        if context is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            try:
                pinset = PinSet.of(spec.tls_pubkey_pinset)
                tls_client.authenticate(ssl_object, spec, pinset,
                                        check_name=tls_client.name_left_to_check(context, spec))
            except Exception:
                writer.transport.abort()
                raise
            tls = tls_client.session_details(ssl_object, spec, pinset,
                                             verified=context.verify_mode == ssl.CERT_REQUIRED,
                                             sni=sni)
            details = ConnectionDetails(spec.transport, spec.address, spec.port, 0, tls)
        return cls(reader, writer, details)

    async def send(self, wire: bytes) -> None:
        self.writer.write(struct.pack("!H", len(wire)) + wire)
        try:
            await self.writer.drain()
        except OSError as exc:
            raise TransferClosed(f"connection to {self.details.address} lost: {exc}") from None

    async def receive(self, seconds: float) -> bytes:
        try:
            async with asyncio.timeout(seconds):
                head = await self.reader.readexactly(2)
                return await self.reader.readexactly(struct.unpack("!H", head)[0])
        except TimeoutError:
            raise QueryTimeout("response timeout") from None
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError) as exc:
            raise TransferClosed(f"connection closed: {exc}") from None

    def close(self) -> None:
        self.writer.transport.abort()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


class _UdpStream(_Stream):
    """kdig's ``+notcp``: the query in one datagram, the answer's messages in others."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _UdpProtocol,
                 details: ConnectionDetails) -> None:
        self.transport = transport
        self.protocol = protocol
        self.details = details

    @classmethod
    async def open(cls, spec: UpstreamSpec, seconds: float) -> _UdpStream:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                _UdpProtocol, remote_addr=(spec.address, spec.port))
        except OSError as exc:
            raise tls_client.translate_error(exc, spec) from None
        return cls(transport, protocol, ConnectionDetails("udp", spec.address, spec.port))

    async def send(self, wire: bytes) -> None:
        self.transport.sendto(wire)

    async def receive(self, seconds: float) -> bytes:
        try:
            async with asyncio.timeout(seconds):
                item = await self.protocol.queue.get()
        except TimeoutError:
            raise QueryTimeout("response timeout") from None
        if isinstance(item, BaseException):
            raise TransferClosed(f"network error: {item}")
        return item

    def close(self) -> None:
        self.transport.close()
