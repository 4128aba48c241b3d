"""The header of a forwarded answer is ours, not the upstream's.

An authoritative upstream (nsd, the bench's backend) answers with AA set and RA clear.
dnstls is no authority for what it forwards and does offer recursion, so a client gets
AA clear and RA set -- as from Unbound and Knot Resolver -- on both forwarding paths,
the first time and from the cache. Before, the wire path relayed the upstream's AA, RA
and Z bits (and the cache kept them), while the message path built its own header.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rrset
import pytest
from conftest import ServeFactory

from dnstls.upstreams import UpstreamSpec

Z = 0x0040


class Authoritative(asyncio.DatagramProtocol):
    """Answers every A query as nsd would: AA set, RA clear (and the Z bit set, which
    no server may, to see that it is not relayed)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query, recursion_available=False, pad=0)
        response.flags |= dns.flags.AA | Z
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                                   "192.0.2.7"))
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamSpec]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Authoritative,
                                                       local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        yield UpstreamSpec(address="127.0.0.1", port=port, transport="udp")
    finally:
        transport.close()


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no cache"])
async def test_forwarded_answers_carry_our_header(serve: ServeFactory, upstream: UpstreamSpec,
                                                  log_queries: bool, cache: bool) -> None:
    served = await serve(upstreams=[upstream], server={"log_queries": log_queries},
                         cache={"enabled": cache})
    host, port = served.plain_addr
    seen = []
    for edns in (0, -1):
        for _ in range(2):  # forwarded, then (with the cache) a hit
            query = dns.message.make_query("host.example.net", "A", use_edns=edns)
            response = await asyncio.to_thread(dns.query.udp, query, host, port=port,
                                               timeout=5)
            assert [str(rrset) for rrset in response.answer] == [
                "host.example.net. 60 IN A 192.0.2.7"]
            seen.append(dns.flags.to_text(response.flags) + (" z" if response.flags & Z
                                                              else ""))
    assert seen == ["QR RD RA"] * 4
    local = await asyncio.to_thread(dns.query.udp, dns.message.make_query(
        "www.example.test", "A"), host, port=port, timeout=5)
    assert dns.flags.to_text(local.flags) == "QR AA RD RA"  # local data stays authoritative


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no cache"])
async def test_cd_is_copied_from_the_query(serve: ServeFactory, upstream: UpstreamSpec,
                                           log_queries: bool, cache: bool) -> None:
    """RFC 4035 §3.1.6: the CD bit is copied from the query, whatever the upstream's
    header says (nsd, like this one, does not copy it); Unbound 1.17 does (checked on
    loopback against nsd). The wire path relayed the upstream's clear CD."""
    served = await serve(upstreams=[upstream], server={"log_queries": log_queries},
                         cache={"enabled": cache})
    host, port = served.plain_addr
    seen = []
    for cd in (True, False, True):  # CD is part of the cache key: a hit for each
        for _ in range(2):
            query = dns.message.make_query("cd.example.net", "A", use_edns=0)
            if cd:
                query.flags |= dns.flags.CD
            response = await asyncio.to_thread(dns.query.udp, query, host, port=port,
                                               timeout=5)
            assert response.answer
            seen.append(bool(response.flags & dns.flags.CD))
    assert seen == [True, True, False, False, True, True]
