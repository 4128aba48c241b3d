"""The server's NSID (RFC 5001, ``server.nsid``) end to end, over UDP, TCP and DoT.

Every kind of answer -- local data (first and kept), forwarded on the wire path and on
the message path (``log_queries``), then from the cache, relayed upstream errors, our
SERVFAIL, FORMERR, NOTIMP, zone transfer REFUSED -- carries the configured NSID when
the query asks for it, and none otherwise or when none is configured; BADVERS and
access control's REFUSED carry none (as Unbound 1.17, checked on loopback). Both sides
are asserted: the upstream never receives an NSID option (options are hop-by-hop), and
its own NSID never reaches the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest
from conftest import ServeFactory

from dnstls.proto import edns
from dnstls.upstreams import UpstreamSpec

pytestmark = pytest.mark.timeout(60)

NSID = b"dot-1"


class Upstream(asyncio.DatagramProtocol):
    """``refused.*`` gets REFUSED, ``servfail.*`` SERVFAIL, ``big.*`` a large TXT set,
    other names an A record; every answer with an NSID of its own. Keeps the queries it
    received."""

    def __init__(self) -> None:
        self.received: list[dns.message.Message] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        self.received.append(query)
        response = dns.message.make_response(query, pad=0)
        name = query.question[0].name
        if name.labels[0] == b"refused":
            response.set_rcode(dns.rcode.REFUSED)
        elif name.labels[0] == b"servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name.labels[0] == b"big":  # ~1 KB: past a 512-byte client's UDP size
            response.answer.append(dns.rrset.from_text(
                name, 60, "IN", "TXT", *(f'"{c * 200}"' for c in "abcde")))
        else:
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.9"))
        response.use_edns(0, 0, 1232, options=[dns.edns.NSIDOption(b"upstream")])
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[UpstreamSpec, Upstream]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Upstream, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        yield UpstreamSpec(address="127.0.0.1", port=port, transport="udp"), protocol
    finally:
        transport.close()


def nsid_of(response: dns.message.Message) -> bytes | None:
    option = edns.find_option(response, edns.NSID)
    return None if option is None else option.to_wire()


def _queries(asked: bool, tag: str) -> list[tuple[str, dns.message.Message, bool]]:
    """(what, query, whether its answer carries the NSID when asked)."""
    options = [dns.edns.GenericOption(edns.NSID, b"")] if asked else []

    def query(name: str, rdtype: str = "A", *, version: int = 0) -> dns.message.Message:
        return dns.message.make_query(name, rdtype, use_edns=version, options=options)

    notify = query("example.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    two = query("www.example.test")
    two.question.append(two.question[0])
    return [
        ("local", query("www.example.test"), True),
        ("local again", query("www.example.test"), True),
        ("local NXDOMAIN", query(f"nx{tag}.example.test"), True),
        ("default zone", query(f"x{tag}.localhost"), True),
        ("forwarded", query(f"fwd{tag}.example.net"), True),
        ("forwarded again", query(f"fwd{tag}.example.net"), True),
        ("upstream REFUSED", query(f"refused.{tag}.example.net"), True),
        ("upstream SERVFAIL", query(f"servfail.{tag}.example.net"), True),
        ("zone transfer", query("example.test", "AXFR"), True),
        ("NOTIFY", notify, True),
        ("QDCOUNT 2", two, True),
        ("BADVERS", query("www.example.test", version=1), False),
    ]


@pytest.mark.parametrize("configured", [True, False], ids=["nsid", "no nsid"])
@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_every_answer_carries_the_nsid_when_asked(
        serve: ServeFactory, upstream: tuple[UpstreamSpec, Upstream], log_queries: bool,
        configured: bool) -> None:
    spec, fake = upstream
    server: dict[str, Any] = {"log_queries": log_queries}
    if configured:
        server["nsid"] = "ascii_dot-1"
    served = await serve(upstreams=[spec], server=server)
    wrong = []
    for transport in ("udp", "tcp", "dot"):
        for asked in (True, False, True):  # a rendering kept for one must not serve the other
            for what, query, carries in _queries(asked, f"{transport}{int(asked)}"):
                response = await served.ask(transport, query)
                want = NSID if configured and asked and carries else None
                if nsid_of(response) != want:
                    wrong.append(f"{transport} {what} asked={asked}: "
                                 f"{dns.rcode.to_text(response.rcode())}, "
                                 f"NSID {nsid_of(response)!r}, want {want!r}")
    assert wrong == [], "\n".join(wrong)
    assert fake.received  # forwarded, without the client's NSID option
    assert all(not edns.has_option(q, edns.NSID) for q in fake.received)


async def test_a_padded_dot_answer_is_padded_with_the_nsid_in(
        serve: ServeFactory, upstream: tuple[UpstreamSpec, Upstream]) -> None:
    served = await serve(upstreams=[upstream[0]], server={"nsid": "646e73746c73"})
    client = await served.connect()
    try:
        for name in ("www.example.test", "fwd.example.net", "fwd.example.net"):
            query = dns.message.make_query(name, "A", use_edns=0, pad=128, options=[
                dns.edns.GenericOption(edns.NSID, b""),
                dns.edns.GenericOption(edns.KEEPALIVE, b"")])
            await client.send(query)
            wire = await client.recv_wire()
            response = dns.message.from_wire(wire)
            assert len(wire) % 468 == 0 and nsid_of(response) == b"dnstls", name
            assert response.answer and edns.has_option(response, edns.KEEPALIVE)
    finally:
        await client.aclose()


async def test_access_controls_refused_carries_no_nsid(serve: ServeFactory) -> None:
    served = await serve(server={"nsid": "ascii_dot-1",
                                 "access_control": ["127.0.0.0/8 refuse"]})
    query = dns.message.make_query("www.example.test", "A", use_edns=0,
                                   options=[dns.edns.GenericOption(edns.NSID, b"")])
    for transport in ("udp", "tcp", "dot"):
        response = await served.ask(transport, query)
        assert response.rcode() == dns.rcode.REFUSED and nsid_of(response) is None


async def test_an_nsid_answer_past_the_udp_size_is_truncated(
        serve: ServeFactory) -> None:
    # the zone's big TXT set over UDP with a 512-byte payload: TC, the NSID still in
    served = await serve(server={"nsid": "ascii_" + "n" * 255})
    query = dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=512,
                                   options=[dns.edns.GenericOption(edns.NSID, b"")])
    for _ in range(2):  # built, then kept
        full = await served.ask("tcp", query)
        assert full.answer and nsid_of(full) == b"n" * 255
        udp = await served.ask("udp", query)
        assert udp.flags & dns.flags.TC and not udp.answer and nsid_of(udp) == b"n" * 255


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_a_forwarded_nsid_answer_past_the_udp_size_is_truncated(
        serve: ServeFactory, upstream: tuple[UpstreamSpec, Upstream],
        log_queries: bool) -> None:
    served = await serve(upstreams=[upstream[0]],
                         server={"nsid": "ascii_dot-1", "log_queries": log_queries})
    query = dns.message.make_query("big.example.net", "TXT", use_edns=0, payload=512,
                                   options=[dns.edns.GenericOption(edns.NSID, b"")])
    for _ in range(2):  # forwarded, then from the cache
        udp = await served.ask("udp", query)
        assert udp.flags & dns.flags.TC and not udp.answer and nsid_of(udp) == NSID
        full = await served.ask("tcp", query)
        assert len(full.answer[0]) == 5 and nsid_of(full) == NSID
