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


def _malformed(query: dns.message.Message, how: str, address: str = "192.0.2.9") -> bytes:
    """A response with the query's ID and question whose body does not parse."""
    response = dns.message.make_response(query, pad=0)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                               address))
    wire = bytearray(response.to_wire())
    if how == "cut":  # the A record's RDATA cut short (RDLENGTH still 4)
        return bytes(wire[:-2])
    # "pointer": the answer's owner name a compression pointer past the message's end
    end = 12 + len(query.question[0].name.to_wire() or b"") + 4
    assert wire[end:end + 2] == b"\xc0\x0c"
    wire[end:end + 2] = b"\xc0\xff"
    return bytes(wire)


class BrokenUdp(asyncio.DatagramProtocol):
    """A scripted upstream for the malformed-answer cases, by the first label:

    * ``cut`` / ``pointer``: an answer with the right ID and question whose body does
      not parse (RDATA cut short / a compression pointer past the end);
    * ``cutonce``: as ``cut`` from the ``first`` upstream, a good answer from others;
    * ``forgedfirst``: the ``first`` upstream sends a malformed answer under another ID,
      and one with the right ID for another question, then the good answer 0.1 s later;
    * anything else: a good answer (A 192.0.2.1 from the first, .2 from others).
    """

    def __init__(self, first: bool) -> None:
        self.first = first
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        label = query.question[0].name.labels[0].decode().lower()
        self.received.append(label)
        assert self.transport is not None
        send = self.transport.sendto
        address = "192.0.2.1" if self.first else "192.0.2.2"
        if label in ("cut", "pointer") or (label == "cutonce" and self.first):
            send(_malformed(query, "cut" if label != "pointer" else "pointer"), addr)
            return
        good = dns.message.make_response(query, pad=0)
        good.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                               address))
        if label == "forgedfirst" and self.first:
            forged = dns.message.make_query(query.question[0].name, "A")
            forged.id = query.id ^ 0x5A5A
            send(_malformed(forged, "cut", "203.0.113.66"), addr)
            other = dns.message.make_query("other.example.net", "A")
            other.id = query.id
            send(_malformed(other, "cut", "203.0.113.66"), addr)
            asyncio.get_running_loop().call_later(0.1, send, good.to_wire(), addr)
            return
        send(good.to_wire(), addr)


def _verdict(wire: bytes) -> tuple[Any, ...]:
    """RCODE, EDE codes, and the A addresses of the answer."""
    response = dns.message.from_wire(wire)
    edes = tuple(int(o.code) for o in response.options if isinstance(o, dns.edns.EDEOption))
    addresses = tuple(rd.address for rrset in response.answer for rd in rrset)
    return dns.rcode.to_text(response.rcode()), edes, addresses


@pytest.fixture
async def broken_pair() -> Any:
    loop = asyncio.get_running_loop()
    out = []
    for first in (True, False):
        transport, protocol = await loop.create_datagram_endpoint(
            lambda first=first: BrokenUdp(first), local_addr=("127.0.0.1", 0))
        out.append((transport, protocol))
    try:
        yield [(p, t.get_extra_info("sockname")[1]) for t, p in out]
    finally:
        for transport, _ in out:
            transport.close()


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_a_malformed_answer_fails_that_attempt_and_the_next_upstream_is_asked(
        serve: ServeFactory, broken_pair: Any, log_queries: bool) -> None:
    # Before: the wire path answered SERVFAIL EDE 24 without asking the second
    # upstream; the message path ignored the datagram as it ignores forgeries, asked
    # the second upstream only after the first one's timeout, and answered EDE 22.
    # The per-upstream timeout (5 s) outlasts the query's deadline (1.5 s): only an
    # attempt that ends at once leaves time for the second upstream.
    (first, first_port), (second, second_port) = broken_pair
    specs = [UpstreamSpec(address="127.0.0.1", port=port, transport="udp",
                          query_timeout=5.0) for port in (first_port, second_port)]
    verdicts = {}
    for i, label in enumerate(["cut", "pointer", "cutonce", "forgedfirst", "good"]):
        # a service per case: a failed attempt backs the first upstream off, and the
        # next case would ask the second one first
        served = await serve(upstreams=specs, forward={"strategy": "ordered"},
                             server={"log_queries": log_queries, "query_timeout": 1.5})
        client = await served.connect()
        try:
            query = dns.message.make_query(f"{label}.example.net", "A", id=100 + i,
                                           use_edns=0)
            await client.send(query)
            verdicts[label] = _verdict(await client.recv_wire(5))
        finally:
            await client.aclose()
    assert verdicts == {
        "cut": ("SERVFAIL", (24,), ()),       # both upstreams malformed
        "pointer": ("SERVFAIL", (24,), ()),
        "cutonce": ("NOERROR", (), ("192.0.2.2",)),  # the second upstream's answer
        # a malformed datagram under another ID or question is ignored as a forgery:
        # the first upstream's real answer still counts
        "forgedfirst": ("NOERROR", (), ("192.0.2.1",)),
        "good": ("NOERROR", (), ("192.0.2.1",)),
    }
    assert first.received == ["cut", "pointer", "cutonce", "forgedfirst", "good"]
    assert second.received == ["cut", "pointer", "cutonce"]


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_a_malformed_answer_from_the_only_upstream_counts_as_its_failure(
        serve: ServeFactory, broken_pair: Any, log_queries: bool) -> None:
    # One upstream: the wire path's task-free forward (Forwarder.start_wire). Before,
    # the wire path counted the malformed answer as a success of the upstream; the
    # message path waited for the deadline (EDE 22).
    (first, port), _ = broken_pair
    spec = UpstreamSpec(address="127.0.0.1", port=port, transport="udp", query_timeout=5.0)
    served = await serve(upstreams=[spec],
                         server={"log_queries": log_queries, "query_timeout": 1.5})
    client = await served.connect()
    try:
        query = dns.message.make_query("cut.example.net", "A", id=7, use_edns=0)
        await client.send(query)
        wire = await client.recv_wire(5)
    finally:
        await client.aclose()
    assert _verdict(wire) == ("SERVFAIL", (24,), ())
    assert [o.text for o in dns.message.from_wire(wire).options
            if isinstance(o, dns.edns.EDEOption)] == [f"malformed answer from {spec.name}"]
    stats = served.service.statistics()["upstreams"][spec.name]
    assert stats["errors"] == {"protocol": 1} and stats["failures"] == 1
    assert first.received == ["cut"]
