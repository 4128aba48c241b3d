"""A scriptable fake upstream resolver on loopback: UDP, TCP and DoT.

Everyone may use it to test what a DNS client of ours does against a misbehaving
server. It records every query it receives (message, raw wire, connection number) and
answers according to a :class:`Behavior`, taken per query from ``script`` (a queue)
and otherwise from ``behavior``::

    async with FakeUpstream("tls", ssl_context=pki.server_context()) as up:
        up.script.extend([Behavior.CLOSE_MID_ANSWER])   # first query only
        spec = up.spec(tls_auth_name="dns.test", ca_file=pki.ca_file)
        ...
        assert [r.connection for r in up.received] == [0, 1]

Ports are chosen by the OS (port 0) on 127.0.0.1. Normal answers: the question echoed,
``A 192.0.2.1`` for type A (``AAAA 2001:db8::1`` for AAAA), EDNS echoed with the
server's own padding (468-byte blocks when the query was padded) and, when the query
asked for it and ``keepalive`` is set, an edns-tcp-keepalive timeout -- so tests can
check that these never leak to clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import socket
import ssl
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from dnstls.proto import edns
from dnstls.upstreams import UpstreamSpec

#: Port pairs a UDP+TCP fake tries before it gives up (each collision is rare: the TCP
#: side of a free UDP port is taken by another program).
PORT_PAIR_ATTEMPTS = 20


class Behavior(enum.Enum):
    NORMAL = "normal"
    REVERSE = "reverse"  # streams: hold ``reverse_batch`` queries, answer last first
    WRONG_ID = "wrong_id"  # answer under another ID (and nothing else)
    WRONG_QUESTION = "wrong_question"  # right ID, another question name
    QR0 = "qr0"  # right ID and question, QR bit clear
    GARBAGE = "garbage"  # a frame/datagram that does not parse
    TRUNCATED_FRAME = "truncated_frame"  # streams: half a message, then silence
    DUPLICATE = "duplicate"  # the answer twice
    CLOSE_MID_ANSWER = "close_mid_answer"  # streams: half a message, then close
    CLOSE_AFTER_ANSWER = "close_after_answer"  # streams: answer, then close
    STALL = "stall"  # never answer (UDP: drop)
    RESET = "reset"  # streams: close with a TCP RST, no answer
    TRUNCATED = "truncated"  # UDP: TC=1 with empty sections
    FORGED_FIRST = "forged_first"  # forged answers (wrong ID/question/port) then the right one
    REFUSED = "refused"
    SERVFAIL = "servfail"


@dataclass(slots=True)
class Received:
    message: dns.message.Message
    wire: bytes
    connection: int  # stream connection number (0, 1, ...); -1 for UDP
    peer: tuple[Any, ...]


def default_answer(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, pad=0)
    rrset = query.question[0]
    if rrset.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(rrset.name, 300, "IN", "A", "192.0.2.1"))
    elif rrset.rdtype == dns.rdatatype.AAAA:
        response.answer.append(dns.rrset.from_text(rrset.name, 300, "IN", "AAAA",
                                                   "2001:db8::1"))
    return response


@dataclass
class FakeUpstream:
    transport: str = "tls"
    ssl_context: ssl.SSLContext | None = None
    behavior: Behavior = Behavior.NORMAL
    answer: Callable[[dns.message.Message], dns.message.Message] = default_answer
    keepalive: float | None = None  # seconds advertised to queries that ask
    reverse_batch: int = 2
    also_tcp: bool = False  # UDP fake: serve TCP on the same port too (TC=1 fallback)
    address: str = "127.0.0.1"
    script: deque[Behavior] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    connections_accepted: int = 0
    port: int = 0
    #: Streams only: answer every query with ``A 192.0.2.1`` built on bytes (no dnspython,
    #: nothing recorded in ``received``; ``raw_counts`` counts queries per connection) --
    #: for load cases where a parse per query would make the fake the bottleneck.
    raw: bool = False
    raw_counts: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(self.transport)
        if self.transport == "tls" and self.ssl_context is None:
            raise ValueError("a DoT fake needs ssl_context (see tests/fakes/pki.py)")
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._forger: socket.socket | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> FakeUpstream:
        if self.transport == "udp":
            await self._start_udp()
            self._forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._forger.bind((self.address, 0))
        else:
            ctx = self.ssl_context if self.transport == "tls" else None
            # port 0 unless given (a test bringing an upstream up on a port it
            # knows is down)
            self._server = await asyncio.start_server(self._serve, self.address, self.port,
                                                      ssl=ctx)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _start_udp(self) -> None:
        """UDP on a free port (or ``port``) and, with ``also_tcp``, TCP on the same
        number. The OS picks the UDP port without looking at TCP, so another program
        may hold its TCP side: then take a new pair, up to :data:`PORT_PAIR_ATTEMPTS`
        times (not for a port the test chose)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, PORT_PAIR_ATTEMPTS + 1):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpServer(self), local_addr=(self.address, self.port))
            port = transport.get_extra_info("sockname")[1]
            if not self.also_tcp:
                break
            try:
                self._server = await asyncio.start_server(self._serve, self.address, port)
            except OSError as exc:
                transport.close()
                if self.port or exc.errno != errno.EADDRINUSE \
                        or attempt == PORT_PAIR_ATTEMPTS:
                    raise
                continue
            break
        self._udp = transport  # type: ignore[assignment]
        self.port = port

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()
        if self._udp is not None:
            self._udp.close()
        if self._forger is not None:
            self._forger.close()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- helpers for tests

    def uri(self, auth_name: str | None = None) -> str:
        text = f"{self.transport}://{self.address}:{self.port}"
        return f"{text}#{auth_name}" if auth_name else text

    def spec(self, **changes: Any) -> UpstreamSpec:
        if self.transport == "tls" and not ({"tls_auth_name", "tls_pubkey_pinset",
                                             "opportunistic"} & set(changes)):
            changes["opportunistic"] = True
        return UpstreamSpec(address=self.address, port=self.port,
                            transport=self.transport,  # type: ignore[arg-type]
                            **changes)

    def next_behavior(self) -> Behavior:
        return self.script.popleft() if self.script else self.behavior

    def respond(self, query: dns.message.Message, behavior: Behavior, *,
                stream: bool = True) -> dns.message.Message:
        """The response message for ``query`` under ``behavior`` (wire-level faults apart)."""
        response = self.answer(query)
        if behavior is Behavior.REFUSED:
            response = dns.message.make_response(query, pad=0)
            response.set_rcode(dns.rcode.REFUSED)
        elif behavior is Behavior.SERVFAIL:
            response = dns.message.make_response(query, pad=0)
            response.set_rcode(dns.rcode.SERVFAIL)
        elif behavior is Behavior.TRUNCATED and not stream:
            response = dns.message.make_response(query, pad=0)
            response.flags |= dns.flags.TC
        if query.edns >= 0:
            options: list[dns.edns.Option] = []
            if (self.keepalive is not None and stream
                    and edns.has_option(query, edns.KEEPALIVE)):
                options.append(edns.keepalive_option(self.keepalive))
            pad = edns.SERVER_BLOCK if edns.has_option(query, edns.PADDING) else 0
            response.use_edns(0, response.ednsflags, 1232, options=options, pad=pad)
        if behavior is Behavior.WRONG_ID:
            response.id = query.id ^ 0x5A5A
        elif behavior is Behavior.WRONG_QUESTION:
            rrset = response.question[0]
            response.question = [dns.rrset.RRset(dns.name.from_text("evil.example."),
                                                 rrset.rdclass, rrset.rdtype)]
            response.answer = []
        elif behavior is Behavior.QR0:
            response.flags &= ~dns.flags.QR
        return response

    def _record(self, wire: bytes, connection: int, peer: Any) -> dns.message.Message | None:
        try:
            message = dns.message.from_wire(wire)
        except Exception:
            return None
        self.received.append(Received(message, wire, connection, tuple(peer or ())))
        return message

    # ---------------------------------------------------------------- streams

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        number = self.connections_accepted
        self.connections_accepted += 1
        held: list[tuple[dns.message.Message, Behavior]] = []
        try:
            while True:
                try:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    return
                if self.raw:
                    self.raw_counts[number] += 1
                    writer.write(_frame(raw_answer(wire)))
                    if writer.transport.get_write_buffer_size() > 1 << 16:
                        await writer.drain()
                    continue
                query = self._record(wire, number, writer.get_extra_info("peername"))
                if query is None:
                    return
                behavior = self.next_behavior()
                if behavior is Behavior.REVERSE:
                    held.append((query, behavior))
                    if len(held) >= self.reverse_batch:
                        for q, b in reversed(held):
                            writer.write(_frame(self.respond(q, b).to_wire()))
                        held.clear()
                    continue
                if not await self._answer_stream(writer, query, behavior):
                    return
                await writer.drain()
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()
            self._tasks.discard(task)

    async def _answer_stream(self, writer: asyncio.StreamWriter, query: dns.message.Message,
                             behavior: Behavior) -> bool:
        """Write the answer; False when the connection is to end."""
        if behavior is Behavior.STALL:
            return True
        if behavior is Behavior.RESET:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if behavior is Behavior.GARBAGE:
            writer.write(_frame(struct.pack("!HHHHHH", query.id, 0x8180, 1, 0, 0, 0) + b"\xff"))
            return True
        if behavior is Behavior.FORGED_FIRST:
            for bad in (Behavior.WRONG_ID,):
                writer.write(_frame(self.respond(query, bad).to_wire()))
            behavior = Behavior.NORMAL
        frame = _frame(self.respond(query, behavior).to_wire())
        if behavior in (Behavior.TRUNCATED_FRAME, Behavior.CLOSE_MID_ANSWER):
            writer.write(frame[: len(frame) // 2])
            if behavior is Behavior.CLOSE_MID_ANSWER:
                await writer.drain()
                return False
            return True
        writer.write(frame)
        if behavior is Behavior.DUPLICATE:
            writer.write(frame)
        if behavior is Behavior.CLOSE_AFTER_ANSWER:
            await writer.drain()
            return False
        return True

    # ---------------------------------------------------------------- UDP

    def _datagram(self, data: bytes, addr: Any) -> None:
        assert self._udp is not None
        query = self._record(data, -1, addr)
        if query is None:
            return
        behavior = self.next_behavior()
        if behavior is Behavior.STALL:
            return
        if behavior is Behavior.GARBAGE:
            self._udp.sendto(data[:2] + b"\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\xff", addr)
            return
        if behavior is Behavior.FORGED_FIRST:
            right = self.respond(query, Behavior.NORMAL, stream=False).to_wire()
            if self._forger is not None:  # right ID and question, wrong source port
                with contextlib.suppress(OSError):
                    self._forger.sendto(right, addr)
            for bad in (Behavior.WRONG_ID, Behavior.WRONG_QUESTION, Behavior.QR0):
                self._udp.sendto(self.respond(query, bad, stream=False).to_wire(), addr)
            self._udp.sendto(right, addr)
            return
        wire = self.respond(query, behavior, stream=False).to_wire()
        self._udp.sendto(wire, addr)
        if behavior is Behavior.DUPLICATE:
            self._udp.sendto(wire, addr)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.fake._datagram(data, addr)


def raw_answer(query: bytes) -> bytes:
    """``A 192.0.2.1`` (TTL 300) for a query with one uncompressed question, on bytes."""
    pos = 12
    while query[pos]:
        pos += 1 + query[pos]
    question = query[12:pos + 5]
    flags = 0x8080 | (query[2] & 0x01) << 8  # QR, RA, and RD as asked
    return (struct.pack("!HHHHHH", (query[0] << 8) | query[1], flags, 1, 1, 0, 0) + question
            + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes((192, 0, 2, 1)))


def _frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire
