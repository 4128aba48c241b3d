"""UdpListener with a fake handler and transport: identical queries in flight share one
forwarded exchange and each gets the answer under its own ID (no sockets)."""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest

from dnstls.net.udp import UdpListener
from dnstls.proto.acl import AccessControl, parse_rules
from dnstls.proto.answers import Transport
from dnstls.proto.cachekey import read_query


class FakeHandler:
    """route() sends every readable query to the wire path; answer_wire() waits until
    the test releases it, then answers NOERROR (or what ``rcode`` says)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.forwarded: list[bytes] = []
        self.responses: Counter[tuple[str, str]] = Counter()
        self.rcode = dns.rcode.NOERROR
        self.routed = 0

    def route(self, wire: bytes, transport: Transport) -> Any:
        self.routed += 1
        return read_query(wire)

    def forward_wire(self, query: Any, wire: bytes, transport: Transport,
                     deliver: Callable[[bytes], None]) -> bool:
        return False  # this fake's path is the task (answer_wire)

    async def answer_wire(self, query: Any, wire: bytes, transport: Transport) -> bytes:
        self.forwarded.append(wire)
        await self.release.wait()
        message = dns.message.from_wire(wire)
        response = dns.message.make_response(message)
        response.set_rcode(self.rcode)
        self.responses[(transport.value, dns.rcode.to_text(self.rcode))] += 1
        return response.to_wire()


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def query(name: str, qid: int, rdtype: str = "A", *, use_edns: bool = False) -> bytes:
    message = dns.message.make_query(name, rdtype, use_edns=use_edns)
    message.id = qid
    return message.to_wire()


async def make() -> tuple[UdpListener, FakeHandler, FakeTransport]:
    handler = FakeHandler()
    listener = UdpListener(handler)  # type: ignore[arg-type]
    transport = FakeTransport()
    listener.connection_made(transport)  # type: ignore[arg-type]
    return listener, handler, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_identical_queries_share_one_exchange_each_with_its_own_id() -> None:
    listener, handler, transport = await make()
    a, b = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
    listener.datagram_received(query("www.example.", 0x1111), a)
    listener.datagram_received(query("www.example.", 0x2222), b)
    listener.datagram_received(query("www.example.", 0x3333), a)
    await settle()
    assert len(handler.forwarded) == 1 and handler.routed == 1  # joiners are not parsed
    assert listener.statistics()["in_flight"] == 3
    handler.release.set()
    await settle()
    assert [(struct.unpack_from("!H", d)[0], addr) for d, addr in transport.sent] == [
        (0x1111, a), (0x2222, b), (0x3333, a)]
    first = transport.sent[0][0]
    assert all(d[2:] == first[2:] for d, _ in transport.sent)
    for data, _ in transport.sent:
        assert dns.message.from_wire(data).question[0].name.to_text() == "www.example."
    assert handler.responses[("udp", "NOERROR")] == 3
    stats = listener.statistics()
    assert (stats["in_flight"], stats["coalesced"]) == (0, 2)
    assert listener.flights == {}


async def test_ipv6_clients_four_item_addresses_are_answered_and_joined() -> None:
    """The loop hands IPv6 clients' addresses as (host, port, flowinfo, scope_id): the
    compiled listener must take them as they come (its annotations are checked)."""
    listener, handler, transport = await make()
    a, b = ("::1", 1000, 0, 0), ("::1", 2000, 0, 0)
    listener.datagram_received(query("www.example.", 0x1111), a)  # type: ignore[arg-type]
    listener.datagram_received(query("www.example.", 0x2222), b)  # type: ignore[arg-type]
    handler.release.set()
    await settle()
    assert [(struct.unpack_from("!H", d)[0], addr) for d, addr in transport.sent] == [
        (0x1111, a), (0x2222, b)]


async def test_queries_differing_after_the_id_are_not_joined() -> None:
    listener, handler, transport = await make()
    addr = ("127.0.0.1", 1000)
    listener.datagram_received(query("www.example.", 1), addr)
    listener.datagram_received(query("www.example.", 2, "AAAA"), addr)
    listener.datagram_received(query("WWW.example.", 3), addr)  # name case differs
    listener.datagram_received(query("www.example.", 4, use_edns=True), addr)
    await settle()
    assert len(handler.forwarded) == 4
    handler.release.set()
    await settle()
    assert sorted(struct.unpack_from("!H", d)[0] for d, _ in transport.sent) == [1, 2, 3, 4]
    assert listener.statistics()["coalesced"] == 0


async def test_a_query_after_the_answer_starts_a_new_exchange() -> None:
    listener, handler, transport = await make()
    addr = ("127.0.0.1", 1000)
    handler.release.set()
    listener.datagram_received(query("www.example.", 1), addr)
    await settle()
    listener.datagram_received(query("www.example.", 2), addr)
    await settle()
    assert len(handler.forwarded) == 2 and len(transport.sent) == 2


async def test_joiners_get_the_failure_answer_too() -> None:
    listener, handler, transport = await make()
    handler.rcode = dns.rcode.SERVFAIL
    addr = ("127.0.0.1", 1000)
    listener.datagram_received(query("www.example.", 7), addr)
    listener.datagram_received(query("www.example.", 8), addr)
    handler.release.set()
    await settle()
    assert [dns.message.from_wire(d).rcode() for d, _ in transport.sent] == [
        dns.rcode.SERVFAIL, dns.rcode.SERVFAIL]
    assert handler.responses[("udp", "SERVFAIL")] == 2


async def test_joiners_count_against_the_in_flight_limit() -> None:
    listener, handler, transport = await make()
    listener.max_in_flight = 2
    addr = ("127.0.0.1", 1000)
    for qid in range(3):
        listener.datagram_received(query("www.example.", qid), addr)
    assert listener.dropped["overload"] == 1
    handler.release.set()
    await settle()
    assert len(transport.sent) == 2


async def test_drain_cut_off_counts_joiners_and_sends_nothing() -> None:
    listener, _handler, transport = await make()
    addr = ("127.0.0.1", 1000)
    for qid in range(3):
        listener.datagram_received(query("www.example.", qid), addr)
    await settle()
    cut = await listener.drain(0.01)
    assert cut == 3
    await settle()
    assert transport.sent == [] and listener.flights == {} and listener.joined == 0


class CallbackHandler(FakeHandler):
    """forward_wire() takes every query (no task); the test answers through ``deliver``."""

    def __init__(self) -> None:
        super().__init__()
        self.delivers: list[tuple[bytes, Callable[[bytes], None]]] = []

    def forward_wire(self, query: Any, wire: bytes, transport: Transport,
                     deliver: Callable[[bytes], None]) -> bool:
        assert transport is Transport.UDP
        self.forwarded.append(wire)
        self.delivers.append((wire, deliver))
        return True

    def answer(self, index: int, rcode: int = dns.rcode.NOERROR) -> None:
        wire, deliver = self.delivers[index]
        response = dns.message.make_response(dns.message.from_wire(wire))
        response.set_rcode(rcode)
        self.responses[("udp", dns.rcode.to_text(rcode))] += 1
        deliver(response.to_wire())


async def make_cb() -> tuple[UdpListener, CallbackHandler, FakeTransport]:
    handler = CallbackHandler()
    listener = UdpListener(handler)  # type: ignore[arg-type]
    transport = FakeTransport()
    listener.connection_made(transport)  # type: ignore[arg-type]
    return listener, handler, transport


async def test_a_callback_forward_needs_no_task_and_answers_its_joiners() -> None:
    listener, handler, transport = await make_cb()
    a, b = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
    listener.datagram_received(query("www.example.", 0x1111), a)
    listener.datagram_received(query("www.example.", 0x2222), b)
    listener.datagram_received(query("other.example.", 0x3333), a)
    assert listener.tasks == set() and len(handler.delivers) == 2
    assert listener.statistics()["in_flight"] == 3
    handler.answer(1, dns.rcode.NXDOMAIN)
    handler.answer(0, dns.rcode.SERVFAIL)
    assert [(struct.unpack_from("!H", d)[0], addr) for d, addr in transport.sent] == [
        (0x3333, a), (0x1111, a), (0x2222, b)]
    assert transport.sent[1][0][2:] == transport.sent[2][0][2:]
    assert handler.responses[("udp", "SERVFAIL")] == 2
    stats = listener.statistics()
    assert (stats["in_flight"], stats["coalesced"]) == (0, 1)
    assert listener.flights == {} and listener.forwarding == 0


async def test_callback_forwards_count_against_the_in_flight_limit() -> None:
    listener, handler, _transport = await make_cb()
    listener.max_in_flight = 2
    addr = ("127.0.0.1", 1000)
    for name in ("a.example.", "b.example.", "c.example."):
        listener.datagram_received(query(name, 1), addr)
    assert listener.dropped["overload"] == 1 and len(handler.delivers) == 2
    handler.answer(0)
    listener.datagram_received(query("d.example.", 1), addr)
    assert len(handler.delivers) == 3


async def test_drain_waits_for_callback_forwards_within_the_grace() -> None:
    listener, handler, transport = await make_cb()
    addr = ("127.0.0.1", 1000)
    listener.datagram_received(query("a.example.", 1), addr)
    listener.datagram_received(query("a.example.", 2), addr)  # a joiner
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, handler.answer, 0)
    assert await listener.drain(5.0) == 0
    assert [struct.unpack_from("!H", d)[0] for d, _ in transport.sent] == [1, 2]
    assert transport.closed


async def test_drain_cuts_callback_forwards_at_the_grace_and_drops_their_answers() -> None:
    listener, handler, transport = await make_cb()
    addr = ("127.0.0.1", 1000)
    listener.datagram_received(query("a.example.", 1), addr)
    listener.datagram_received(query("a.example.", 2), addr)  # a joiner
    listener.datagram_received(query("b.example.", 3), addr)
    assert await listener.drain(0.01) == 3
    listener.datagram_received(query("c.example.", 4), addr)  # closing: dropped
    assert listener.dropped["closing"] == 1
    handler.answer(0)
    handler.answer(1)
    assert transport.sent == [] and listener.flights == {} and listener.forwarding == 0
    assert listener.joined == 0


class NorecHandler(FakeHandler):
    """refuse_norec() refuses every RD=0 query it is asked about (records the names)."""

    def __init__(self) -> None:
        super().__init__()
        self.norec: list[bytes] = []

    def refuse_norec(self, wire: bytes, transport: Transport) -> bytes | None:
        self.norec.append(wire)
        return b"refused" + wire[:2]


@pytest.mark.parametrize(("rules", "asked"), [
    (None, False),  # no access control: every query as before
    (["127.0.0.0/8 allow"], True),
    (["127.0.0.0/8 allow_snoop"], False),
])
async def test_rd0_goes_to_refuse_norec_for_clients_of_allow_only(
        rules: list[str] | None, asked: bool) -> None:
    handler = NorecHandler()
    acl = None if rules is None else AccessControl(parse_rules(rules, "access_control"))
    listener = UdpListener(handler, acl=acl)  # type: ignore[arg-type]
    transport = FakeTransport()
    listener.connection_made(transport)  # type: ignore[arg-type]
    addr = ("127.0.0.1", 1000)
    norec = dns.message.make_query("www.example.", "A")
    norec.flags &= ~dns.flags.RD
    norec.id = 0x1234
    listener.datagram_received(norec.to_wire(), addr)
    listener.datagram_received(query("www.example.", 0x5678), addr)  # RD=1
    await settle()
    assert handler.norec == ([norec.to_wire()] if asked else [])
    assert handler.routed == (1 if asked else 2)
    if asked:
        assert transport.sent[0] == (b"refused\x12\x34", addr)
        assert acl is not None and acl.norec_refused == {"udp": 1}
    handler.release.set()
    await settle()
