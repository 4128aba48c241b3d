"""Queries with RD=0 (recursion not desired) and cache snooping: access control's
``allow`` and ``allow_snoop`` (Unbound's actions), end to end.

A client whose action is ``allow`` gets local data for an RD=0 query (local zones,
default zones, the refusal of other classes) and REFUSED with EDE 18 for anything else:
never an answer from the cache, never a forwarded query. ``allow_snoop`` answers RD=0
queries from the cache and SERVFAIL (EDE 0) on a miss: an RD=0 query is never forwarded
(Unbound neither).

Clients bind 127.0.0.1 (``allow``) or 127.0.0.2 (``allow_snoop``) as their source. A
scripted upstream on loopback records every query it receives (both sides asserted),
over UDP, TCP and DoT, on both answer paths (the wire path, and the message path that
``log_queries`` takes), with the cache on and off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from conftest import Fakes, Served, ServeFactory
from conftest import udp_spec as spec

from dnstls.metrics import ServiceCollector
from dnstls.proto import edns
from dnstls.stub import StubRuntime, stub_config_from_data
from fakes import FakeUpstream, TestPKI
from fakes.upstream import Behavior

pytestmark = pytest.mark.timeout(60)

ALLOW, SNOOP = "127.0.0.1", "127.0.0.2"
RULES = ["127.0.0.0/8 allow", f"{SNOOP} allow_snoop"]
TEXT = "recursion not desired (RD=0) is not allowed for this client"





def received(fake: FakeUpstream) -> list[str]:
    """What reached the upstream: name and RD bit of each query."""
    return [f"{r.message.question[0].name} rd={int(bool(r.message.flags & dns.flags.RD))}"
            for r in fake.received]


def query(name: str, rdtype: str = "A", rdclass: str = "IN", *, rd: bool = False,
          **kw: Any) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, rdclass, **kw)
    if not rd:
        message.flags &= ~dns.flags.RD
    return message


def ede(response: dns.message.Message) -> list[tuple[int, str | None]]:
    return [(int(o.code), o.text) for o in response.options
            if isinstance(o, dns.edns.EDEOption)]


async def stream_exchange(served: Served, tls: bool, source: str,
                          *wires: bytes) -> list[bytes]:
    """``wires`` written in one go on one connection from ``source``; the answers."""
    addr = served.tls_addr if tls else served.plain_addr
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        *addr, ssl=served.client_context() if tls else None,
        server_hostname="dns.test" if tls else None, local_addr=(source, 0)), 5)
    try:
        writer.write(b"".join(struct.pack("!H", len(w)) + w for w in wires))
        await writer.drain()
        out = []
        for _ in wires:
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
            out.append(await asyncio.wait_for(reader.readexactly(size), 5))
        return out
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def udp_exchange(addr: tuple[str, int], wire: bytes, source: str) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setblocking(False)
        await loop.sock_sendto(sock, wire, addr)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)


async def ask(served: Served, transport: str, message: dns.message.Message,
              source: str) -> dns.message.Message:
    wire = message.to_wire()
    if transport == "udp":
        out = await udp_exchange(served.plain_addr, wire, source)
    else:
        (out,) = await stream_exchange(served, transport == "dot", source, wire)
    response = dns.message.from_wire(out)
    assert response.id == message.id
    return response


def assert_norec_refused(response: dns.message.Message,
                         message: dns.message.Message) -> None:
    """REFUSED, the question echoed, RD echoed (clear), nothing else; EDE 18 with its
    text and the DO bit copied when the query had EDNS (none without)."""
    assert dns.rcode.to_text(response.rcode()) == "REFUSED"
    assert response.question == message.question
    assert not response.answer and not response.authority
    assert not response.flags & dns.flags.RD and not response.flags & dns.flags.AA
    if message.edns >= 0:
        assert ede(response) == [(int(dns.edns.EDECode.PROHIBITED), TEXT)]
        assert (response.ednsflags & dns.flags.DO) == (message.ednsflags & dns.flags.DO)
    else:
        assert response.edns < 0


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no cache"])
@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
@pytest.mark.parametrize("transport", ["udp", "tcp", "dot"])
async def test_allow_answers_rd0_from_local_data_only(
        serve: ServeFactory, fakes: Fakes, transport: str, log_queries: bool,
        cache: bool) -> None:
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], cache={"enabled": cache},
                         server={"access_control": RULES, "log_queries": log_queries})
    # a name the cache holds (RD=1 from the same client: forwarded once)
    primed = await ask(served, transport, query("cached.example.", rd=True), ALLOW)
    assert primed.rcode() == dns.rcode.NOERROR and primed.answer
    assert received(fake) == ["cached.example. rd=1"]
    for _round in range(2):  # the second: any kept rendering or memo
        for message in (query("cached.example."), query("cached.example.", use_edns=0),
                        query("cached.example.", want_dnssec=True),
                        query("uncached.example.", use_edns=0), query("uncached.example.")):
            assert_norec_refused(await ask(served, transport, message, ALLOW), message)
        # local data: a configured zone, a default zone, another class (refused there)
        local = await ask(served, transport, query("www.example.test.", use_edns=0), ALLOW)
        assert local.rcode() == dns.rcode.NOERROR and local.flags & dns.flags.AA
        assert [rr.to_text() for rr in local.answer] == ["www.example.test. 300 IN A 192.0.2.1"]
        default = await ask(served, transport, query("localhost.", use_edns=0), ALLOW)
        assert [rr.to_text() for rr in default.answer] == ["localhost. 10800 IN A 127.0.0.1"]
        onion = await ask(served, transport, query("foo.onion."), ALLOW)
        assert onion.rcode() == dns.rcode.NXDOMAIN and onion.authority
        chaos = await ask(served, transport, query("version.bind.", "TXT", "CH", use_edns=0),
                          ALLOW)
        assert chaos.rcode() == dns.rcode.REFUSED
        assert ede(chaos) == [(int(dns.edns.EDECode.NOT_SUPPORTED), "class CH is not served")]
    assert received(fake) == ["cached.example. rd=1"]  # nothing more reached it
    acl = served.service.acl.statistics()
    wire_transport = "tls" if transport == "dot" else transport
    assert acl["norec_refused"] == {wire_transport: 10}
    assert acl["refused"] == {}


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no cache"])
@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
@pytest.mark.parametrize("transport", ["udp", "tcp", "dot"])
async def test_allow_snoop_answers_rd0_from_the_cache_and_never_forwards_it(
        serve: ServeFactory, fakes: Fakes, transport: str, log_queries: bool,
        cache: bool) -> None:
    """A miss gets SERVFAIL, as from Unbound: asked without recursion, an upstream
    answers from its cache, with a referral or a refusal -- which the cache (keyed
    without RD) would then give to clients asking with RD=1."""
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], cache={"enabled": cache},
                         server={"access_control": RULES, "log_queries": log_queries})
    await ask(served, transport, query("cached.example.", rd=True), ALLOW)
    hit = await ask(served, transport, query("cached.example.", use_edns=0), SNOOP)
    if cache:
        assert hit.rcode() == dns.rcode.NOERROR
        assert [rr[0].to_text() for rr in hit.answer] == ["192.0.2.1"]
    else:
        assert_not_forwarded(hit)
    miss = await ask(served, transport, query("uncached.example.", use_edns=0), SNOOP)
    assert_not_forwarded(miss)
    local = await ask(served, transport, query("www.example.test."), SNOOP)
    assert local.rcode() == dns.rcode.NOERROR and local.flags & dns.flags.AA
    assert received(fake) == ["cached.example. rd=1"]
    assert served.service.acl.statistics()["norec_refused"] == {}
    # and an RD=1 query for that name afterwards is forwarded and answered
    after = await ask(served, transport, query("uncached.example.", rd=True), SNOOP)
    assert after.rcode() == dns.rcode.NOERROR and after.answer
    assert received(fake) == ["cached.example. rd=1", "uncached.example. rd=1"]


def assert_not_forwarded(response: dns.message.Message) -> None:
    assert response.rcode() == dns.rcode.SERVFAIL and not response.answer
    ede = [o for o in response.options if isinstance(o, dns.edns.EDEOption)]
    assert [(int(o.code), o.text) for o in ede] == [
        (0, "RD=0 and not in the cache: not forwarded")]


@pytest.mark.parametrize("tls", [True, False], ids=["dot", "tcp"])
async def test_pipelined_rd0_repeats_are_not_answered_from_the_exact_memo(
        serve: ServeFactory, fakes: Fakes, tls: bool) -> None:
    """The exact-repeat memo is shared by every connection of a listener: the answers
    an ``allow_snoop`` client's RD=0 repeats got from the cache must not answer the
    same bytes from an ``allow`` client, nor may an RD=1 repeat's answer an RD=0 one
    (whole runs of pipelined queries are answered from the memo in one call)."""
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], server={"access_control": RULES})
    await ask(served, "udp", query("cached.example.", rd=True), ALLOW)
    rd0 = query("cached.example.", use_edns=0)
    rd1 = query("cached.example.", rd=True, use_edns=0)
    rd1.id = rd0.id
    snooped = await stream_exchange(served, tls, SNOOP, *[rd0.to_wire()] * 6)
    assert all(dns.message.from_wire(w).answer for w in snooped)
    answers = await stream_exchange(served, tls, ALLOW, *[rd1.to_wire()] * 4,
                                    *[rd0.to_wire()] * 6, rd1.to_wire())
    responses = [dns.message.from_wire(w) for w in answers]
    assert [r.rcode() for r in responses] == [dns.rcode.NOERROR] * 4 + [
        dns.rcode.REFUSED] * 6 + [dns.rcode.NOERROR]
    for response in responses[4:10]:
        assert_norec_refused(response, rd0)
    assert received(fake) == ["cached.example. rd=1"]


async def test_an_rd0_query_is_never_in_flight(serve: ServeFactory, fakes: Fakes) -> None:
    """UDP: an ``allow_snoop`` client's RD=0 miss is answered at once (SERVFAIL), never
    forwarded, so no RD=0 query is ever in flight for another to join; an ``allow``
    client's RD=0 query for a name being forwarded (RD=1) is refused, not joined."""
    fake = await fakes()
    fake.script.append(Behavior.STALL)  # the first query is never answered
    served = await serve(upstreams=[spec(fake)], server={"access_control": RULES,
                                                         "query_timeout": 2.0})
    message = query("slow.example.", use_edns=0)
    wire = message.to_wire()
    snooped = dns.message.from_wire(await udp_exchange(served.plain_addr, wire, SNOOP))
    assert_not_forwarded(snooped)
    assert received(fake) == [] and not served.service.udp[0].flights
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as snoop:
        snoop.bind((SNOOP, 0))
        snoop.setblocking(False)
        await loop.sock_sendto(snoop, query("slow.example.", rd=True, use_edns=0).to_wire(),
                               served.plain_addr)
        for _ in range(200):  # until it is in flight (no sleeping on a clock: polled)
            if fake.received:
                break
            await asyncio.sleep(0.01)
        assert received(fake) == ["slow.example. rd=1"]
        assert served.service.udp[0].flights
        refused = dns.message.from_wire(await udp_exchange(served.plain_addr, wire, ALLOW))
        assert_norec_refused(refused, message)
        assert served.service.udp[0].coalesced == 0
        # the stalled query's own answer at its deadline (its exchange ends with it)
        late = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(snoop, 65535), 5))
        assert late.rcode() == dns.rcode.SERVFAIL


async def test_dot_refusal_is_padded_with_keepalive(serve: ServeFactory,
                                                    fakes: Fakes) -> None:
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], server={"access_control": RULES})
    message = query("uncached.example.", use_edns=0, pad=128,
                    options=[edns.keepalive_option(None)])
    (wire,) = await stream_exchange(served, True, ALLOW, message.to_wire())
    response = dns.message.from_wire(wire)
    assert_norec_refused(response, message)
    assert len(wire) % 468 == 0
    assert edns.has_option(response, edns.KEEPALIVE)
    assert fake.received == []


async def test_default_rules_give_loopback_allow(serve: ServeFactory, fakes: Fakes) -> None:
    """No ``access_control``: loopback is ``allow`` (as Unbound's default for localhost)."""
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)])
    message = query("uncached.example.", use_edns=0)
    assert_norec_refused(await ask(served, "udp", message, ALLOW), message)
    assert fake.received == []


async def test_metrics_count_norec_refusals(serve: ServeFactory, fakes: Fakes) -> None:
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], server={"access_control": RULES})
    await ask(served, "udp", query("a.example."), ALLOW)
    await ask(served, "dot", query("a.example."), ALLOW)
    await ask(served, "dot", query("b.example."), ALLOW)
    samples = {(m.name, sample.labels.get("transport")): sample.value
               for m in ServiceCollector(served.service.statistics).collect()
               for sample in m.samples}
    assert samples[("dnstls_access_control_norec_refused", "udp")] == 1
    assert samples[("dnstls_access_control_norec_refused", "tls")] == 2
    assert ("dnstls_access_control_refused", "udp") not in samples
    assert samples[("dnstls_queries", "tls")] == 2  # the REFUSED answers


@pytest.mark.parametrize("rules", [None, RULES], ids=["default", "rules"])
async def test_the_stub_too(fakes: Fakes, pki: TestPKI, rules: list[str] | None) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    data: dict[str, Any] = {
        "listen_addresses": ["127.0.0.1@0"], "timeout": 1500,
        "upstream_recursive_servers": [{"address_data": fake.address, "tls_port": fake.port,
                                        "tls_auth_name": "dns.test",
                                        "tls_ca_file": pki.ca_file}]}
    if rules is not None:
        data["access_control"] = rules
    service = StubRuntime(stub_config_from_data(data)).service()
    await service.start()
    try:
        addr = service.endpoints.plain[0]

        async def stub_ask(message: dns.message.Message, source: str) -> dns.message.Message:
            return dns.message.from_wire(await udp_exchange(addr, message.to_wire(), source))

        primed = await stub_ask(query("cached.example.", rd=True), ALLOW)
        assert primed.rcode() == dns.rcode.NOERROR
        for name in ("cached.example.", "uncached.example."):
            message = query(name, use_edns=0)
            assert_norec_refused(await stub_ask(message, ALLOW), message)
        local = await stub_ask(query("localhost."), ALLOW)
        assert local.rcode() == dns.rcode.NOERROR and local.answer
        assert received(fake) == ["cached.example. rd=1"]
        if rules is not None:
            hit = await stub_ask(query("cached.example."), SNOOP)
            assert hit.rcode() == dns.rcode.NOERROR and hit.answer
            miss = await stub_ask(query("fresh.example.", use_edns=0), SNOOP)
            assert_not_forwarded(miss)
            assert received(fake) == ["cached.example. rd=1"]
        assert service.acl.statistics()["norec_refused"] == {"udp": 2}
    finally:
        await service.aclose()
