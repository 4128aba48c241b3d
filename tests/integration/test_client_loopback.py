"""``dnstls.Client`` against the fake upstream on loopback (DoT, TCP, UDP).

(Named ``test_client_loopback.py``: ``test_client.py`` collides with
``tests/unit/test_client.py`` under pytest's default import mode.)

Each test asserts both sides: what the fake received (connections, IDs, padding) and
what the caller got (answers matched to their questions, IDs, typed errors).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rdatatype
import pytest

import dnstls
from dnstls import Client, SyncClient, query_sync
from dnstls.errors import (
    CertificateError,
    NetworkError,
    PinMismatch,
    ProtocolError,
    QueryTimeout,
)
from dnstls.proto import edns
from fakes import Behavior, FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI.create(tmp_path)


@pytest.fixture
async def dot(pki: TestPKI) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("tls", ssl_context=pki.server_context()) as fake:
        yield fake


def answer_of(message: dns.message.Message) -> str:
    return message.answer[0][0].to_text()


def echo_name(query: dns.message.Message) -> dns.message.Message:
    """Answers every query with a TXT record naming the question (to check matching)."""
    response = dns.message.make_response(query, pad=0)
    question = query.question[0]
    response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT",
                                               f'"{question.name.to_text()}"'))
    return response


# ---------------------------------------------------------------- pipelining


async def test_thousand_concurrent_queries_one_connection_reverse_order(
        pki: TestPKI) -> None:
    count = 1000
    names = [f"q{i}.example." for i in range(count)]
    async with (
        FakeUpstream("tls", ssl_context=pki.server_context(), behavior=Behavior.REVERSE,
                     reverse_batch=count, answer=echo_name) as fake,
        Client(fake.uri("dns.test"), ca_file=pki.ca_file, timeout=30,
               max_in_flight=count) as client,
    ):
        answers = await asyncio.gather(*(client.query(name, "TXT") for name in names))
        stats = client.statistics()
    # the caller's side: every answer is the answer to its own question
    for name, answer in zip(names, answers, strict=True):
        assert answer.question[0].name.to_text() == name
        assert answer_of(answer) == f'"{name}"'
    # the fake's side: one connection, 1,000 queries with 1,000 distinct IDs, answered
    # last-first (the batch was held until all 1,000 had arrived)
    assert fake.connections_accepted == 1
    assert len(fake.received) == count
    assert {r.connection for r in fake.received} == {0}
    assert len({r.message.id for r in fake.received}) == count
    assert {r.message.question[0].name.to_text() for r in fake.received} == set(names)
    assert stats["connections_opened"] == 1
    assert stats["responses"] == count


async def test_queries_are_padded_and_ids_are_the_callers(dot: FakeUpstream,
                                                          pki: TestPKI) -> None:
    async with Client(dot.uri("dns.test"), ca_file=pki.ca_file) as client:
        query = dns.message.make_query("www.example.", "A", use_edns=0, id=4242)
        answer = await client.query_message(query)
        assert answer.id == 4242
        assert answer_of(answer) == "192.0.2.1"
        aaaa = await client.query("www.example", "AAAA", dnssec=True)
        assert answer_of(aaaa) == "2001:db8::1"
    wires = [r.wire for r in dot.received]
    assert all(len(w) % 128 == 0 for w in wires), [len(w) for w in wires]
    assert dot.received[1].message.ednsflags & dns.flags.DO
    assert all(edns.has_option(r.message, edns.KEEPALIVE) for r in dot.received)
    assert dot.connections_accepted == 1


async def test_padding_off_and_exact_length(dot: FakeUpstream, pki: TestPKI) -> None:
    async with Client(dot.uri("dns.test"), ca_file=pki.ca_file, padding=False,
                      keepalive=False) as client:
        await client.query("a.example")
    async with Client(dot.uri("dns.test"), ca_file=pki.ca_file, padding_length=64) as client:
        await client.query("b.example")
    plain, exact = dot.received
    assert not edns.has_option(plain.message, edns.PADDING)
    assert not edns.has_option(plain.message, edns.KEEPALIVE)
    option = edns.find_option(exact.message, edns.PADDING)
    assert option is not None and len(option.to_wire() or b"") == 64


async def test_exchange_reports_the_tls_session_and_chain(dot: FakeUpstream,
                                                          pki: TestPKI) -> None:
    pin = TestPKI.leaf_pin(pki.leaf)
    async with Client(dot.uri("dns.test"), ca_file=pki.ca_file, pins=[pin]) as client:
        reply = await client.exchange(dns.message.make_query("x.example", "A", use_edns=0))
    tls = reply.connection.tls
    assert tls is not None
    assert reply.connection.transport == "tls" and reply.connection.port == dot.port
    assert tls.version in ("TLSv1.2", "TLSv1.3") and tls.cipher
    assert tls.alpn == "dot" and tls.server_name == "dns.test"
    assert tls.verified and tls.verified_name == "dns.test" and tls.anchor == pki.ca_file
    assert tls.pinned and not tls.opportunistic and not tls.resumed
    assert dnstls.client.TlsDetails is type(tls)
    from dnstls.proto.pins import spki_pin
    assert spki_pin(tls.chain[0]) == pin
    assert reply.size % 468 == 0  # the fake pads answers to padded queries
    assert 0 <= reply.rtt < 5


# ---------------------------------------------------------------- authentication


async def test_pin_only_and_chain_only(dot: FakeUpstream, pki: TestPKI) -> None:
    async with Client(dot.uri(), pins=[TestPKI.leaf_pin(pki.leaf)]) as client:
        reply = await client.exchange(dns.message.make_query("p.example", "A"))
        assert reply.connection.tls is not None and not reply.connection.tls.verified
    async with Client(dot.uri(), ca_file=pki.ca_file, verify=True) as client:
        reply = await client.exchange(dns.message.make_query("c.example", "A"))
        tls = reply.connection.tls
        assert tls is not None and tls.verified and tls.verified_name is None
    assert len(dot.received) == 2


async def test_wrong_pin_raises_pin_mismatch_before_any_query(dot: FakeUpstream,
                                                              pki: TestPKI) -> None:
    wrong = base64.b64encode(b"\x01" * 32).decode()
    async with Client(dot.uri("dns.test"), ca_file=pki.ca_file, pins=[wrong]) as client:
        with pytest.raises(PinMismatch) as info:
            await client.query("example.com")
    assert info.value.expected == (wrong,)
    assert info.value.seen == (TestPKI.leaf_pin(pki.leaf),)
    assert dot.received == []


async def test_untrusted_and_wrong_name_raise_certificate_error(dot: FakeUpstream,
                                                                pki: TestPKI) -> None:
    async with Client(dot.uri("dns.test")) as client:  # system store: not our test CA
        with pytest.raises(CertificateError, match="unable to get local issuer"):
            await client.query("example.com")
    async with Client(dot.uri("other.test"), ca_file=pki.ca_file) as client:
        with pytest.raises(CertificateError, match="Hostname mismatch"):
            await client.query("example.com")
    async with Client(dot.uri("other.test"), ca_file=pki.ca_file, sni="dns.test") as client:
        with pytest.raises(CertificateError, match=r"not valid for 'other\.test'"):
            await client.query("example.com")
    assert dot.received == []


async def test_sni_apart_from_the_checked_name(pki: TestPKI) -> None:
    seen: list[str | None] = []
    ctx = pki.server_context()
    ctx.sni_callback = lambda _obj, name, _ctx: seen.append(name)  # type: ignore[assignment,misc,func-returns-value]
    async with FakeUpstream("tls", ssl_context=ctx) as fake, \
            Client(fake.uri("dns.test"), ca_file=pki.ca_file, sni="front.example") as client:
        assert answer_of(await client.query("s.example")) == "192.0.2.1"
    assert seen == ["front.example"]


async def test_opportunistic_accepts_any_certificate(pki: TestPKI) -> None:
    ctx = pki.server_context(TestPKI.untrusted_leaf("whatever.test"))
    async with FakeUpstream("tls", ssl_context=ctx) as fake, \
            Client(fake.uri(), opportunistic=True) as client:
        reply = await client.exchange(dns.message.make_query("o.example", "A"))
    assert reply.connection.tls is not None and reply.connection.tls.opportunistic
    assert len(fake.received) == 1


# ---------------------------------------------------------------- failures


async def test_timeout_is_query_timeout(pki: TestPKI) -> None:
    async with (
        FakeUpstream("tls", ssl_context=pki.server_context(), behavior=Behavior.STALL) as fake,
        Client(fake.uri("dns.test"), ca_file=pki.ca_file, timeout=0.3) as client,
    ):
        with pytest.raises(QueryTimeout):
            await client.query("slow.example")
        with pytest.raises(QueryTimeout):  # a per-query budget
            await client.query("slower.example", timeout=0.1)
    assert len(fake.received) == 2


async def test_a_query_after_a_connect_timed_out_waits_for_its_own_connect() -> None:
    """A server that accepts TCP and never answers the TLS handshake: each query gets
    a connect of its own and its own timeout. (Before, the query sent right after one
    that timed out joined that one's connect, still under way, and failed at once with
    "connecting ... timed out".)"""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # until the client goes away

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        async with Client(f"tls://127.0.0.1:{port}", opportunistic=True,
                          timeout=0.3) as client:
            for _ in range(3):
                started = loop.time()
                with pytest.raises(QueryTimeout):
                    await client.query("example.com")
                assert 0.25 < loop.time() - started < 2
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert len(accepted) == 3


async def test_refused_connection_is_network_error(pki: TestPKI) -> None:
    fake = await FakeUpstream("tcp").start()
    uri = fake.uri()
    await fake.aclose()  # nothing listens there any more
    async with Client(uri, timeout=2) as client:
        with pytest.raises(NetworkError, match="Connection refused"):
            await client.query("example.com")


async def test_wrong_question_is_protocol_error(pki: TestPKI) -> None:
    async with FakeUpstream("tcp", behavior=Behavior.WRONG_QUESTION) as fake, \
            Client(fake.uri(), timeout=2) as client:
        with pytest.raises(ProtocolError):
            await client.query("example.com")


async def test_closed_client_refuses(dot: FakeUpstream, pki: TestPKI) -> None:
    client = Client(dot.uri("dns.test"), ca_file=pki.ca_file)
    async with client:
        await client.query("a.example")
    with pytest.raises(NetworkError, match="closed"):
        await client.query("b.example")


async def test_aclose_fails_queries_in_flight_at_once(pki: TestPKI) -> None:
    """Closing the client ends its pending queries with NetworkError, without waiting
    for their timeout and without a new connection to retry them on."""
    async with FakeUpstream("tls", ssl_context=pki.server_context(),
                            behavior=Behavior.STALL) as fake:
        client = Client(fake.uri("dns.test"), ca_file=pki.ca_file, timeout=30)
        loop = asyncio.get_running_loop()
        pending = [asyncio.create_task(client.query(f"q{i}.example")) for i in range(3)]
        async with asyncio.timeout(10):  # the fake has no event for "received"
            while len(fake.received) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        started = loop.time()
        await client.aclose()
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert loop.time() - started < 5  # not the 30 s timeout
        assert all(isinstance(r, NetworkError) for r in results), results
        assert fake.connections_accepted == 1
        await client.aclose()  # idempotent


# ---------------------------------------------------------------- UDP and TCP


async def test_udp_and_tcp(pki: TestPKI) -> None:
    async with FakeUpstream("udp") as udp, Client(udp.uri()) as client:
        reply = await client.exchange(dns.message.make_query("u.example", "A", use_edns=0))
        assert answer_of(reply.message) == "192.0.2.1"
        assert reply.connection.transport == "udp" and reply.connection.tls is None
        assert not edns.has_option(udp.received[0].message, edns.PADDING)
    async with FakeUpstream("tcp") as tcp, Client(tcp.uri()) as client:
        answers = await asyncio.gather(*(client.query(f"t{i}.example") for i in range(10)))
        assert all(answer_of(a) == "192.0.2.1" for a in answers)
        assert tcp.connections_accepted == 1
        assert not any(edns.has_option(r.message, edns.PADDING) for r in tcp.received)


async def test_udp_truncation_falls_back_to_tcp() -> None:
    async with FakeUpstream("udp", also_tcp=True) as fake, Client(fake.uri()) as client:
        fake.script.append(Behavior.TRUNCATED)
        reply = await client.exchange(dns.message.make_query("tc.example", "A"))
    assert reply.connection.transport == "tcp"
    assert answer_of(reply.message) == "192.0.2.1"
    assert [r.connection for r in fake.received] == [-1, 0]


# ---------------------------------------------------------------- the synchronous wrapper


@pytest.fixture
def threaded_dot(pki: TestPKI) -> Iterator[FakeUpstream]:
    """A DoT fake served by its own loop in a thread (sync tests have no loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeUpstream("tls", ssl_context=pki.server_context())
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_sync_client_and_query_sync(threaded_dot: FakeUpstream, pki: TestPKI) -> None:
    uri = threaded_dot.uri("dns.test")
    with SyncClient(uri, ca_file=pki.ca_file) as client:
        assert answer_of(client.query("a.example")) == "192.0.2.1"
        query = dns.message.make_query("b.example", "AAAA", id=7)
        assert client.query_message(query).id == 7
        assert client.exchange(query).connection.tls is not None
        results: list[str] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            answer_of(client.query(f"t{i}.example")))) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == ["192.0.2.1"] * 8
        assert client.statistics()["connections_opened"] == 1
    with pytest.raises(NetworkError, match="closed"):
        client.query("c.example")
    client.close()  # idempotent
    answer = query_sync(uri, "d.example", "AAAA", ca_file=pki.ca_file, dnssec=True)
    assert answer_of(answer) == "2001:db8::1"
    assert threaded_dot.connections_accepted == 2
    assert threaded_dot.received[-1].message.ednsflags & dns.flags.DO
    assert threaded_dot.received[-1].message.question[0].rdtype == dns.rdatatype.AAAA


def test_sync_client_raises_typed_errors(threaded_dot: FakeUpstream) -> None:
    with SyncClient(threaded_dot.uri("dns.test"), timeout=2) as client, \
            pytest.raises(CertificateError):
        client.query("example.com")
