"""The DO bit of a query is copied into the response (RFC 3225 §3), on every path.

Unbound 1.17 copies it into every response with EDNS (checked on loopback). dnstls's answers come
from many places: the local zone (a first answer rendered by dnspython, then the kept
rendering), the cache, both forwarding paths (the wire path, and the message path that
``log_queries`` takes), and the error answers (SERVFAIL, REFUSED, NOTIMP, FORMERR).
Each is asked with DO and without, over UDP, TCP and DoT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rrset
import pytest
from conftest import ServeFactory

from dnstls.upstreams import UpstreamSpec


class Upstream(asyncio.DatagramProtocol):
    """``refused.*`` gets REFUSED; every other name an A record (no DO in the answer)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query, pad=0)
        name = query.question[0].name
        if name.labels[0] == b"refused":
            response.set_rcode(dns.rcode.REFUSED)
        else:
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.9"))
        response.use_edns(0, 0, 1232)
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[UpstreamSpec]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        yield UpstreamSpec(address="127.0.0.1", port=port, transport="udp")
    finally:
        transport.close()


def _queries(do: bool, tag: str) -> list[tuple[str, dns.message.Message]]:
    """(what, query) for every kind of answer; ``tag`` keeps names apart between runs."""
    def query(name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        return dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do, **kw)

    notify = query("example.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    two = query("www.example.test")
    two.question.append(two.question[0])
    return [
        ("local", query("www.example.test")),
        ("local again", query("www.example.test")),
        ("local NXDOMAIN", query(f"nx{tag}.example.test")),
        ("forwarded", query(f"fwd{tag}.example.net")),
        ("forwarded again", query(f"fwd{tag}.example.net")),
        ("upstream REFUSED", query(f"refused.{tag}.example.net")),
        ("zone transfer", query("example.test", "AXFR")),
        ("NOTIFY", notify),
        ("QDCOUNT 2", two),
    ]


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_the_do_bit_is_copied_into_every_answer(serve: ServeFactory,
                                                      upstream: UpstreamSpec,
                                                      log_queries: bool) -> None:
    served = await serve(upstreams=[upstream], server={"log_queries": log_queries})
    wrong = []
    for transport in ("udp", "tcp", "dot"):
        for do in (True, False, True):  # DO first: a DO-less rendering must not be kept
            for what, query in _queries(do, f"{transport}{int(do)}"):
                response = await served.ask(transport, query)
                if response.edns < 0 or bool(response.ednsflags & dns.flags.DO) != do:
                    wrong.append(f"{transport} {what} DO={do}: "
                                 f"{dns.rcode.to_text(response.rcode())}, "
                                 f"edns {response.edns}, flags {response.ednsflags:#x}")
    assert wrong == [], "\n".join(wrong)
