"""AuthorityTransport against tiny loopback UDP/TCP responders: only the answer from
the address asked, with our ID and question, is taken; TCP framing; timeouts."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable

import dns.flags
import dns.message
import dns.rcode
import pytest

from dnstls.errors import NetworkError, ProtocolError, QueryTimeout
from dnstls.net.authority import AuthorityTransport

Reply = Callable[[dns.message.Message], list[bytes]]


def answer(query: dns.message.Message, **changes: object) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if "rcode" in changes:
        response.set_rcode(changes["rcode"])  # type: ignore[arg-type]
    wire = bytearray(response.to_wire())
    if "id" in changes:
        wire[0:2] = struct.pack("!H", changes["id"])  # type: ignore[arg-type]
    return bytes(wire)


class Responder(asyncio.DatagramProtocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.queries: list[dns.message.Message] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.queries.append(query)
        assert self.transport is not None
        for wire in self.reply(query):
            self.transport.sendto(wire, addr)


_OPEN: list[asyncio.BaseTransport] = []


@pytest.fixture(autouse=True)
async def _close_responders() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()
    await asyncio.sleep(0)  # let the transports' close callbacks run
    await asyncio.sleep(0)


async def udp_responder(reply: Reply) -> tuple[Responder, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Responder(reply), local_addr=("127.0.0.1", 0))
    _OPEN.append(transport)
    return protocol, transport.get_extra_info("sockname")[:2]


def query(name: str = "www.example.com.", rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0)
    q.flags = 0
    return q


async def test_udp_answer_with_our_id_and_question_is_taken() -> None:
    responder, address = await udp_responder(lambda q: [answer(q)])
    transport = AuthorityTransport()
    loop = asyncio.get_running_loop()
    response = await transport.exchange(query(), address, tcp=False,
                                        deadline=loop.time() + 2)
    assert response.flags & dns.flags.AA
    assert response.id == responder.queries[0].id
    ids = set()
    for _ in range(20):
        await transport.exchange(query(), address, tcp=False, deadline=loop.time() + 2)
        ids.add(responder.queries[-1].id)
    assert len(ids) > 1  # random IDs
    assert transport.statistics()["udp"] == 21


async def test_mismatched_datagrams_are_ignored_until_the_real_answer() -> None:
    def reply(q: dns.message.Message) -> list[bytes]:
        other = query("www.example.org.")
        other.id = q.id
        wrong_type = query("www.example.com.", "AAAA")
        wrong_type.id = q.id
        return [answer(q, id=(q.id + 1) % 65536), answer(other), answer(wrong_type),
                q.to_wire(),  # QR clear: our own query echoed
                answer(q, rcode=dns.rcode.REFUSED)]

    _, address = await udp_responder(reply)
    transport = AuthorityTransport()
    loop = asyncio.get_running_loop()
    response = await transport.exchange(query("WWW.Example.COM."), address, tcp=False,
                                        deadline=loop.time() + 2)
    assert response.rcode() == dns.rcode.REFUSED
    assert transport.statistics()["mismatched"] == 4


async def test_a_datagram_from_another_address_is_not_taken() -> None:
    # the right ID and question, sent from another port than the one asked: ignored
    loop = asyncio.get_running_loop()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    peers: list[tuple[str, int]] = []
    responder, address = await udp_responder(lambda q: [])
    original = responder.datagram_received

    def forge(data: bytes, addr: tuple[str, int]) -> None:
        original(data, addr)
        other.sendto(answer(responder.queries[-1]), addr)
        peers.append(addr)

    responder.datagram_received = forge  # type: ignore[method-assign]
    try:
        with pytest.raises(QueryTimeout):
            await AuthorityTransport().exchange(query(), address, tcp=False,
                                                deadline=loop.time() + 0.3)
    finally:
        other.close()
    assert peers  # the forgery was sent


async def test_timeout_and_malformed_answer() -> None:
    _, silent = await udp_responder(lambda q: [])
    transport = AuthorityTransport()
    loop = asyncio.get_running_loop()
    with pytest.raises(QueryTimeout):
        await transport.exchange(query(), silent, tcp=False, deadline=loop.time() + 0.1)
    _, broken = await udp_responder(lambda q: [answer(q)[:12] + answer(q)[12:-3] + b"\xff"
                                               ])
    with pytest.raises(ProtocolError):
        await transport.exchange(query("www.example.com.", "TXT"), broken, tcp=False,
                                 deadline=loop.time() + 2)


async def test_truncated_udp_answer_is_returned_as_is() -> None:
    def reply(q: dns.message.Message) -> list[bytes]:
        wire = bytearray(answer(q))
        wire[2] |= 0x02  # TC
        return [bytes(wire)]

    _, address = await udp_responder(reply)
    loop = asyncio.get_running_loop()
    response = await AuthorityTransport().exchange(query(), address, tcp=False,
                                                   deadline=loop.time() + 2)
    assert response.flags & dns.flags.TC


async def test_tcp_framing_fresh_connection_closed_after() -> None:
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        length = struct.unpack("!H", await reader.readexactly(2))[0]
        q = dns.message.from_wire(await reader.readexactly(length))
        wire = answer(q)
        # framed in two writes: the reader must reassemble
        writer.write(struct.pack("!H", len(wire)) + wire[:5])
        await writer.drain()
        writer.write(wire[5:])
        await writer.drain()
        assert await reader.read() == b""  # the client closes after one answer
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    loop = asyncio.get_running_loop()
    transport = AuthorityTransport()
    async with server:
        for _ in range(2):
            response = await transport.exchange(query(), address, tcp=True,
                                                deadline=loop.time() + 2)
            assert response.flags & dns.flags.AA
    assert len(connections) == 2
    assert transport.statistics()["tcp"] == 2


async def test_tcp_refused_is_a_network_error_and_short_answer_a_protocol_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[:2]
    probe.close()
    loop = asyncio.get_running_loop()
    transport = AuthorityTransport()
    with pytest.raises(NetworkError):
        await transport.exchange(query(), closed, tcp=True, deadline=loop.time() + 2)

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)
        writer.write(b"\x00\x40abc")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    async with server:
        with pytest.raises(ProtocolError):
            await transport.exchange(query(), server.sockets[0].getsockname()[:2], tcp=True,
                                     deadline=loop.time() + 2)


async def test_exchange_wire_sends_a_random_id_and_returns_the_checked_bytes() -> None:
    ports: list[int] = []

    def reply(q: dns.message.Message) -> list[bytes]:
        return [answer(q, id=(q.id + 1) % 65536), answer(q)]  # a wrong ID first: ignored

    responder, address = await udp_responder(reply)
    original = responder.datagram_received

    def note(data: bytes, addr: tuple[str, int]) -> None:
        ports.append(addr[1])
        original(data, addr)

    responder.datagram_received = note  # type: ignore[method-assign]
    transport = AuthorityTransport()
    loop = asyncio.get_running_loop()
    sent = query()
    sent.id = 0
    for _ in range(5):
        got = await transport.exchange_wire(sent.to_wire(), address, tcp=False,
                                            deadline=loop.time() + 2)
        assert isinstance(got, bytes)
        assert got[:2] == responder.queries[-1].id.to_bytes(2, "big")
        assert dns.message.from_wire(got).question == sent.question
    assert len({q.id for q in responder.queries}) > 1  # random IDs, not the 0 we passed
    assert len(set(ports)) > 1  # a fresh socket (source port) per query
    assert transport.statistics()["mismatched"] == 5 and transport.statistics()["udp"] == 5
    # TCP: the same bytes, the same checks
    tcp_response = answer(sent)
    server = await asyncio.start_server(lambda r, w: _tcp_reply(r, w, tcp_response),
                                        "127.0.0.1", 0)
    try:
        tcp_address = server.sockets[0].getsockname()[:2]
        with pytest.raises(ProtocolError):  # our random ID is not the 0 it answers with
            await transport.exchange_wire(sent.to_wire(), tcp_address, tcp=True,
                                          deadline=loop.time() + 2)
    finally:
        server.close()


async def _tcp_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     wire: bytes) -> None:
    size = struct.unpack("!H", await reader.readexactly(2))[0]
    await reader.readexactly(size)
    writer.write(struct.pack("!H", len(wire)) + wire)
    await writer.drain()
    writer.close()
