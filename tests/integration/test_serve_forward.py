"""``dnstls serve`` forwarding to a fake upstream: cache, fast path, coalescing, failures.

Each test asserts both sides: what the fake upstream received and what the client got.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest
from conftest import Served, ServeFactory

from dnstls.proto import edns
from fakes import Behavior, FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)


def q(name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


async def test_cache_hit_served_from_stored_bytes(serve: ServeFactory) -> None:
    async with FakeUpstream("udp") as up:
        s: Served = await serve(upstreams=[up.spec()])
        client = await s.connect()
        first = q("host.example.net", use_edns=0, pad=128, options=[edns.keepalive_option(None)])
        await client.send(first)
        r1 = await client.recv_wire()
        second = q("HoSt.Example.NET", use_edns=0, pad=128, options=[edns.keepalive_option(None)])
        await client.send(second)
        r2 = await client.recv_wire()
        assert len(up.received) == 1  # the second came from the cache
        sent = up.received[0].message
        assert not edns.has_option(sent, edns.KEEPALIVE)  # client options not forwarded
        for wire, query in ((r1, first), (r2, second)):
            response = dns.message.from_wire(wire)
            assert response.id == query.id and len(wire) % 468 == 0
            assert response.question[0].name.to_text() == query.question[0].name.to_text()
            assert response.answer[0][0].to_text() == "192.0.2.1"
            ka = edns.find_option(response, edns.KEEPALIVE)
            assert ka is not None and edns.keepalive_timeout(ka) == 10.0
        assert s.service.statistics()["cache"]["hits"] == 1
        await client.aclose()


async def test_cache_hit_over_udp_and_plain_tcp_unpadded(serve: ServeFactory) -> None:
    async with FakeUpstream("udp") as up:
        s: Served = await serve(upstreams=[up.spec()])
        host, port = s.plain_addr
        for fn in (dns.query.udp, dns.query.tcp, dns.query.udp):
            response = await asyncio.to_thread(fn, q("x.example.net", use_edns=0, pad=128),
                                               host, port=port, timeout=3)
            assert response.answer[0][0].to_text() == "192.0.2.1"
            assert not edns.has_option(response, edns.PADDING)
        assert len(up.received) == 1


async def test_identical_queries_coalesced(serve: ServeFactory) -> None:
    async with FakeUpstream("udp", behavior=Behavior.STALL) as up:
        s: Served = await serve(upstreams=[up.spec()], server={"query_timeout": 1.0})
        clients = [await s.connect() for _ in range(5)]
        queries = [q("same.example.net") for _ in clients]
        for client, query in zip(clients, queries, strict=True):
            await client.send(query)
        for client, query in zip(clients, queries, strict=True):
            response = await client.recv(5)
            assert response.id == query.id and response.rcode() == dns.rcode.SERVFAIL
        assert len(up.received) == 1  # five clients, one upstream query
        assert s.service.statistics()["wire"]["coalesced"] == 4
        for client in clients:
            await client.aclose()


async def test_unreachable_upstream_servfail_with_ede_in_bounded_time(
        serve: ServeFactory) -> None:
    async with FakeUpstream("udp", behavior=Behavior.STALL) as up:
        s: Served = await serve(upstreams=[up.spec()], server={"query_timeout": 1.0})
        client = await s.connect()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.send(q("slow.example.net", use_edns=0))
        response = await client.recv(5)
        assert loop.time() - start < 2.0
        assert response.rcode() == dns.rcode.SERVFAIL
        ede = edns.find_option(response, edns.EDE)
        assert isinstance(ede, dns.edns.EDEOption) and ede.code in (22, 23)
        await client.send(q("www.example.test"))  # connection still open and serving
        assert (await client.recv()).rcode() == dns.rcode.NOERROR
        assert up.received  # the query did go upstream
        await client.aclose()


async def test_tls_upstream_with_wrong_pin_never_gets_a_query(serve: ServeFactory,
                                                              tmp_path: Path) -> None:
    (tmp_path / "up").mkdir()
    upstream_pki = TestPKI.create(tmp_path / "up")
    async with FakeUpstream("tls", ssl_context=upstream_pki.server_context()) as up:
        wrong = base64.b64encode(b"\x07" * 32).decode()
        s: Served = await serve(upstreams=[up.spec(tls_pubkey_pinset=(wrong,))],
                                server={"query_timeout": 1.5})
        client = await s.connect()
        await client.send(q("pinned.example.net", use_edns=0))
        response = await client.recv(5)
        assert response.rcode() == dns.rcode.SERVFAIL
        ede = edns.find_option(response, edns.EDE)
        assert isinstance(ede, dns.edns.EDEOption) and "pin" in (ede.text or "").lower()
        assert up.received == []
        await client.aclose()



@pytest.mark.parametrize("behavior", [Behavior.WRONG_QUESTION, Behavior.QR0, Behavior.GARBAGE,
                                      Behavior.WRONG_ID])
async def test_bad_upstream_answers_are_never_relayed(serve: ServeFactory,
                                                      behavior: Behavior) -> None:
    async with FakeUpstream("tcp", behavior=behavior) as up:
        s: Served = await serve(upstreams=[up.spec()], server={"query_timeout": 1.0})
        client = await s.connect()
        await client.send(q("victim.example.net", use_edns=0))
        response = await client.recv(5)
        assert response.rcode() == dns.rcode.SERVFAIL and not response.answer
        assert up.received  # it was asked
        await client.aclose()


async def test_forwarded_answer_truncated_for_small_udp_clients(serve: ServeFactory) -> None:
    def big(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        response.answer.append(dns.rrset.from_text(
            query.question[0].name, 300, "IN", "TXT", *[f'"{"x" * 200}{i}"' for i in range(5)]))
        return response

    async with FakeUpstream("udp", answer=big, also_tcp=True) as up:
        s: Served = await serve(upstreams=[up.spec()], cache={"enabled": False})
        host, port = s.plain_addr
        udp = await asyncio.to_thread(dns.query.udp, q("big.example.net", "TXT"), host,
                                      port=port, timeout=3)
        assert udp.flags & dns.flags.TC and not udp.answer
        assert udp.question[0].name.to_text() == "big.example.net."
        tcp = await asyncio.to_thread(dns.query.tcp, q("big.example.net", "TXT"), host,
                                      port=port, timeout=3)
        assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 5
        assert len(up.received) >= 2  # cache off: both went upstream


async def test_local_zone_names_never_forwarded(serve: ServeFactory) -> None:
    async with FakeUpstream("udp") as up:
        s: Served = await serve(upstreams=[up.spec()])
        client = await s.connect()
        for name in ("www.example.test", "nothere.example.test", "_dns.resolver.arpa"):
            await client.send(q(name))
            await client.recv()
        assert up.received == []
        await client.aclose()


async def test_serve_stale_on_the_wire_path(serve: ServeFactory) -> None:
    def short_ttl(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        response.answer.append(dns.rrset.from_text(query.question[0].name, 1, "IN", "A",
                                                   "192.0.2.9"))
        return response

    async with FakeUpstream("udp", answer=short_ttl) as up:
        s: Served = await serve(upstreams=[up.spec()], server={"query_timeout": 0.8},
                                cache={"serve_stale": True})
        client = await s.connect()
        await client.send(q("stale.example.net", use_edns=0))
        assert (await client.recv()).answer[0][0].to_text() == "192.0.2.9"
        up.behavior = Behavior.STALL
        await asyncio.sleep(1.2)  # the one-second TTL runs out (real time: the cache's clock)
        await client.send(q("stale.example.net", use_edns=0))
        stale = await client.recv(5)
        assert stale.rcode() == dns.rcode.NOERROR and stale.answer[0].ttl == 30
        ede = edns.find_option(stale, edns.EDE)
        assert isinstance(ede, dns.edns.EDEOption) and ede.code == 3
        await client.aclose()


def _with_glue(query: dns.message.Message) -> dns.message.Message:
    """An upstream that relays its authority NS and additional glue (the default of
    most authoritative-style answers)."""
    response = dns.message.make_response(query, pad=0)
    name = query.question[0].name
    response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.1"))
    response.authority.append(dns.rrset.from_text("example.net.", 300, "IN", "NS",
                                                  "ns1.example.net."))
    response.additional.append(dns.rrset.from_text("ns1.example.net.", 300, "IN", "A",
                                                   "192.0.2.53"))
    return response


@pytest.mark.parametrize(("cache", "minimal"), [({}, True), ({"enabled": False}, True),
                                                ({"minimal_responses": False}, False)])
async def test_minimal_responses_on_the_wire(serve: ServeFactory, cache: dict[str, object],
                                             minimal: bool) -> None:
    """Positive answers lose the NS and glue (cache on and off, miss and hit, UDP and TLS),
    for a DO query too (as Unbound: no NSEC/NSEC3 in the authority section here);
    minimal_responses = false relays them."""
    async with FakeUpstream("udp", answer=_with_glue) as up:
        s: Served = await serve(upstreams=[up.spec()], cache=cache)
        host, port = s.plain_addr
        client = await s.connect()
        for do in (False, True):
            for _ in range(2):  # miss, then hit (or a second miss with the cache off)
                query = q("glue.example.net", use_edns=0, want_dnssec=do)
                udp = await asyncio.to_thread(dns.query.udp, query, host, port=port, timeout=3)
                await client.send(query)
                tls = await client.recv()
                for response in (udp, tls):
                    assert response.answer[0][0].to_text() == "192.0.2.1"
                    kept = not minimal
                    assert (len(response.authority), len(response.additional)) == (
                        (1, 1) if kept else (0, 0)), (do, cache)
        await client.aclose()
