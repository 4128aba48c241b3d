"""Clients that misbehave on purpose: raw DoT streams, memory-BIO TLS, RST, trickling.

:class:`Conn` is a DoT connection through asyncio's TLS (for well-formed TLS carrying
bad DNS). :class:`BioTLS` runs TLS in memory over a plain TCP stream, so a case can send
half a ClientHello, half a TLS record, or stop at any byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time

import dns.message
import dns.rdatatype

from .harness import LOOPBACK, TLS_NAME, Daemon

CLOSE_ERRORS = (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError)


def make_query(name: str, rdtype: str = "A", *, qid: int | None = None,
               **kw: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    if qid is not None:
        message.id = qid
    return message.to_wire()


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def rst_socket(sock: socket.socket | None) -> None:
    """Make the next close send a TCP RST (SO_LINGER on, 0 s)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def open_tcp(daemon: Daemon, *, source: str | None = None,
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = daemon.tls_addr
    return await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None)


class Conn:
    """A DoT connection through asyncio's TLS."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, daemon: Daemon, *, source: str | None = None,
                   ctx: ssl.SSLContext | None = None, within: float = 10.0,
                   rcvbuf: int | None = None) -> Conn:
        host, port = daemon.tls_addr
        sock = None
        if rcvbuf is not None or source is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((source or LOOPBACK, 0))
            sock.setblocking(False)
            try:
                await asyncio.wait_for(
                    asyncio.get_running_loop().sock_connect(sock, (host, port)), within)
            except BaseException:
                sock.close()
                raise
        kwargs: dict[str, object] = {"sock": sock} if sock is not None else {
            "host": host, "port": port}
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            ssl=ctx or daemon.certs.client_context(), server_hostname=TLS_NAME,
            **kwargs), within)  # type: ignore[arg-type]
        return cls(reader, writer)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self.writer.get_extra_info("ssl_object")  # type: ignore[no-any-return]

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv_frame(self, within: float = 5.0) -> bytes | None:
        """The next DNS message; None if the server closed (EOF or reset)."""
        try:
            async with asyncio.timeout(within):
                head = await self.reader.readexactly(2)
                return await self.reader.readexactly(struct.unpack("!H", head)[0])
        except CLOSE_ERRORS:
            return None

    async def query(self, wire: bytes, within: float = 5.0) -> dns.message.Message | None:
        try:
            self.send(frame(wire))
            await self.drain()
        except CLOSE_ERRORS:
            return None
        got = await self.recv_frame(within)
        return None if got is None else dns.message.from_wire(got)

    async def closed_by_server(self, within: float) -> str:
        """Read and discard until the server closes: 'eof', 'reset' or 'timeout'."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except CLOSE_ERRORS:
            return "eof"
        return "eof"

    def rst(self) -> None:
        rst_socket(self.writer.get_extra_info("socket"))
        self.writer.transport.abort()

    async def aclose(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.close()
        with contextlib.suppress(*CLOSE_ERRORS, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class BioTLS:
    """TLS in memory over a plain TCP stream: every byte on the wire is ours to choose."""

    def __init__(self, daemon: Daemon, *, ctx: ssl.SSLContext | None = None) -> None:
        self.daemon = daemon
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl = (ctx or daemon.certs.client_context()).wrap_bio(
            self.incoming, self.outgoing, server_hostname=TLS_NAME)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, *, source: str | None = None) -> BioTLS:
        self.reader, self.writer = await open_tcp(self.daemon, source=source)
        return self

    def client_hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.ssl.do_handshake()
        return self.outgoing.read()

    async def handshake(self, within: float = 5.0) -> None:
        assert self.reader is not None and self.writer is not None
        async with asyncio.timeout(within):
            while True:
                try:
                    self.ssl.do_handshake()
                except ssl.SSLWantReadError:
                    self.writer.write(self.outgoing.read())
                    data = await self.reader.read(65536)
                    if not data:
                        raise ConnectionError("closed during handshake") from None
                    self.incoming.write(data)
                    continue
                self.writer.write(self.outgoing.read())
                return

    def encrypt(self, data: bytes) -> bytes:
        self.ssl.write(data)
        return self.outgoing.read()

    def write_raw(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def rst(self) -> None:
        assert self.writer is not None
        rst_socket(self.writer.get_extra_info("socket"))
        self.writer.transport.abort()

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(*CLOSE_ERRORS, TimeoutError):
                await asyncio.wait_for(self.writer.wait_closed(), 2)


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> tuple[str, float]:
    """Plain-stream variant of :meth:`Conn.closed_by_server`; also returns the seconds."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return "timeout", time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.monotonic() - start
    except CLOSE_ERRORS:
        return "eof", time.monotonic() - start
    return "eof", time.monotonic() - start


def answer_ok(wire: bytes, qid: int, *, name: str = "www.example.test.",
              address: str = "192.0.2.1") -> bool:
    """True if ``wire`` is a correct NOERROR answer of A ``address`` for ``name``."""
    try:
        msg = dns.message.from_wire(wire)
    except Exception:
        return False
    return (msg.id == qid and msg.rcode() == 0 and len(msg.answer) == 1
            and msg.answer[0].name.to_text().lower() == name
            and msg.answer[0].rdtype == dns.rdatatype.A
            and msg.answer[0][0].to_text() == address)


async def legit_client(d: Daemon, stop: asyncio.Event, latencies: list[float],
                       errors: list[str], *, source: str, limit: int = 5000,
                       pause: float = 0.0) -> None:
    """A well-behaved client beside an attack: one connection from ``source``, queries
    one after the other (``pause`` apart) until ``stop`` or ``limit``; each latency goes
    to ``latencies``, the first wrong answer to ``errors`` (and ends it)."""
    conn = await Conn.open(d, source=source)
    try:
        for qid in range(1, limit + 1):
            if stop.is_set():
                break
            start = time.monotonic()
            got = await conn.query(make_query("www.example.test", qid=qid), 5.0)
            latencies.append(time.monotonic() - start)
            if got is None or not answer_ok(got.to_wire(), qid):
                errors.append(f"query {qid}: {got}")
                break
            if pause:
                await asyncio.sleep(pause)
    finally:
        await conn.aclose()
