"""Upstream error answers through both forwarding paths of the real service.

The wire path (what the DoT listener takes for a plain query) and the message path
(``log_queries`` on, or queries the fast path does not read) must give a client the
same answer for the same upstream behaviour: the RCODE, the Extended DNS Error and
which of the upstream's EDNS options reach the client. The upstream here is a scripted
UDP server that answers by the query's first label.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
import pytest
from conftest import ServeFactory

from dnstls.proto import edns
from dnstls.upstreams import UpstreamSpec

NSID = 3
_BEHAVIOURS = {
    # label: (rcode, EDE (code, text) or None, extra options)
    "refused": (dns.rcode.REFUSED, None, []),
    "refusedede": (dns.rcode.REFUSED, (18, "prohibited here"), []),
    "servfailede": (dns.rcode.SERVFAIL, (9, "no DNSKEY"), []),
    "servfail": (dns.rcode.SERVFAIL, None, []),
    "notimp": (dns.rcode.NOTIMP, None, []),
    "formerr": (dns.rcode.FORMERR, None, []),
    "nxdomainede": (dns.rcode.NXDOMAIN, (15, "blocked"), []),
    "nsid": (dns.rcode.NOERROR, None, [dns.edns.GenericOption(NSID, b"upstream-1")]),
}


class ScriptedUdp(asyncio.DatagramProtocol):
    """Answers by the first label (see ``_BEHAVIOURS``); ``timeout`` is never answered."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        label = query.question[0].name.labels[0].decode().lower()
        self.received.append(label)
        if label not in _BEHAVIOURS:
            return  # "timeout": silence
        rcode, ede, extra = _BEHAVIOURS[label]
        response = dns.message.make_response(query, pad=0)
        response.set_rcode(rcode)
        if rcode == dns.rcode.NOERROR:
            response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN",
                                                       "A", "192.0.2.9"))
        options: list[dns.edns.Option] = list(extra)
        if ede is not None:
            options.append(dns.edns.EDEOption(ede[0], ede[1]))
        response.use_edns(0, 0, 1232, options=options)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


def _summary(wire: bytes) -> tuple[Any, ...]:
    """RCODE, EDEs (code, text), and the option types other than padding and keepalive."""
    response = dns.message.from_wire(wire)
    edes = tuple((int(o.code), o.text) for o in response.options
                 if isinstance(o, dns.edns.EDEOption))
    others = tuple(sorted(int(o.otype) for o in response.options
                          if o.otype not in (edns.PADDING, edns.KEEPALIVE, edns.EDE)))
    return dns.rcode.to_text(response.rcode()), edes, others


async def _answers(serve: ServeFactory, upstream: UpstreamSpec, log_queries: bool,
                   labels: list[str]) -> dict[str, tuple[Any, ...]]:
    served = await serve(upstreams=[upstream],
                         server={"log_queries": log_queries, "query_timeout": 0.6})
    client = await served.connect()
    out = {}
    try:
        for i, label in enumerate(labels):
            query = dns.message.make_query(f"{label}.example.net", "A", id=100 + i,
                                           use_edns=0, pad=128)
            await client.send(query)
            out[label] = _summary(await client.recv_wire(5))
    finally:
        await client.aclose()
    return out


LABELS = [*_BEHAVIOURS, "timeout"]


@pytest.fixture
async def scripted() -> Any:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        ScriptedUdp, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_both_paths_give_the_same_error_answers(serve: ServeFactory,
                                                      scripted: Any) -> None:
    # Before: NOTIMP and FORMERR were relayed as such on the message path but became
    # SERVFAIL EDE 24 "malformed answer" on the wire path, and the wire path relayed
    # an upstream's NSID (any option but padding, keepalive, cookie, ECS).
    protocol, port = scripted
    spec = UpstreamSpec(address="127.0.0.1", port=port, transport="udp")
    wire = await _answers(serve, spec, False, LABELS)
    message = await _answers(serve, spec, True, LABELS)
    assert {k: (v, message[k]) for k, v in wire.items() if message[k] != v} == {}
    name = spec.name
    # Unbound and Knot Resolver: SERVFAIL for a forwarder's REFUSED (Unbound; Knot
    # Resolver relays REFUSED), NOTIMP and FORMERR, and none of its options relayed
    assert wire == {
        "refused": ("SERVFAIL", ((22, f"refused by {name}"),), ()),
        "refusedede": ("SERVFAIL", ((22, f"refused by {name}"),), ()),
        "servfailede": ("SERVFAIL", ((9, "no DNSKEY"),), ()),  # relayed with its EDE
        "servfail": ("SERVFAIL", (), ()),
        "notimp": ("SERVFAIL", ((22, f"NOTIMP from {name}"),), ()),
        "formerr": ("SERVFAIL", ((22, f"FORMERR from {name}"),), ()),
        "nxdomainede": ("NXDOMAIN", ((15, "blocked"),), ()),
        "nsid": ("NOERROR", (), ()),  # options are hop-by-hop (RFC 6891 §6.1.1)
        "timeout": ("SERVFAIL", ((22, f"timed out: {name}"),), ()),
    }
    assert protocol.received.count("refused") == 2  # both paths did ask upstream


async def test_both_paths_give_the_same_answer_for_an_unreachable_upstream(
        serve: ServeFactory) -> None:
    # a UDP port with nothing behind it: ICMP port unreachable on loopback
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    spec = UpstreamSpec(address="127.0.0.1", port=port, transport="udp")
    wire = await _answers(serve, spec, False, ["gone"])
    message = await _answers(serve, spec, True, ["gone"])
    assert wire == message
    assert wire["gone"][:1] == ("SERVFAIL",) and wire["gone"][1][0][0] == 23
