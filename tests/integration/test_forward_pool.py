"""Forwarder + upstream pool against the fake upstream on loopback (UDP, TCP, DoT).

(Named ``test_forward_pool.py``: ``test_forward.py`` collides with
``tests/unit/resolver/test_forward.py`` under pytest's default import mode.)
Each test asserts both sides: what the fake upstream received and what the client got.
Deadlines are short (a fraction of a second) where a fault must end in SERVFAIL.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trustme

from dnstls.net.pool import Pool, StreamUpstream, build_forwarder
from dnstls.proto import edns
from dnstls.proto.answers import Transport
from dnstls.proto.framing import FrameDecoder, encode
from dnstls.proto.pins import spki_pin
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.forward import Forwarder
from dnstls.upstreams import UpstreamSpec
from fakes import Behavior, FakeUpstream, TestPKI, der
from fakes.records import RecordStream

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI.create(tmp_path)


class Harness:
    def __init__(self) -> None:
        self.fakes: list[FakeUpstream] = []
        self.pools: list[Pool] = []

    async def fake(self, transport: str = "tls", **kw: Any) -> FakeUpstream:
        fake = await FakeUpstream(transport, **kw).start()
        self.fakes.append(fake)
        return fake

    def forwarder(self, *specs: UpstreamSpec, strategy: str = "ordered",
                  ) -> tuple[Forwarder, Pool]:
        forwarder, pool = build_forwarder(list(specs), strategy=strategy)
        self.pools.append(pool)
        return forwarder, pool

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
        for fake in self.fakes:
            await fake.aclose()


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.aclose()


def client_query(name: str = "example.com.", rdtype: str = "A", **kw: Any,
                 ) -> dns.message.Message:
    kw.setdefault("use_edns", 0)
    return dns.message.make_query(name, rdtype, **kw)


async def ask(forwarder: Forwarder, name: str = "example.com.", rdtype: str = "A", *,
              budget: float = 2.0, **kw: Any) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    query = client_query(name, rdtype, **kw)
    response = await forwarder.resolve(Request(query, Transport.TLS, None, loop.time() + budget))
    assert response.id == query.id
    assert response.question == query.question  # never an answer to another question
    return response


def a_record(response: dns.message.Message) -> str:
    assert response.rcode() == dns.rcode.NOERROR
    return response.answer[0][0].to_text()


async def failure(coro: Any) -> ResolveFailure:
    with pytest.raises(ResolveFailure) as info:
        await coro
    return info.value


def tls_spec(fake: FakeUpstream, pki: TestPKI, **kw: Any) -> UpstreamSpec:
    kw.setdefault("tls_auth_name", "dns.test")
    kw.setdefault("ca_file", pki.ca_file)
    return fake.spec(**kw)


def stream_upstream(pool: Pool) -> StreamUpstream:
    upstream = pool.upstreams[0]
    assert isinstance(upstream, StreamUpstream)
    return upstream


# ---------------------------------------------------------------- the happy path


async def test_dot_queries_are_padded_random_ids_and_no_leak(h: Harness, pki: TestPKI) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(), keepalive=30.0)
    forwarder, _ = h.forwarder(tls_spec(fake, pki))
    client = [dns.edns.GenericOption(edns.PADDING, b"\x00" * 20),
              dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"abcdefgh")]
    responses = [await ask(forwarder, f"n{i}.example.", options=client, want_dnssec=True)
                 for i in range(20)]
    assert all(a_record(r) == "192.0.2.1" for r in responses)
    for response in responses:  # the upstream's padding and keepalive never leak
        assert not edns.has_option(response, edns.PADDING)
        assert not edns.has_option(response, edns.KEEPALIVE)
        assert response.ednsflags & dns.flags.DO
    for received in fake.received:
        assert len(received.wire) % 128 == 0
        otypes = {o.otype for o in received.message.options}
        assert otypes == {edns.PADDING, edns.KEEPALIVE}  # not the client's cookie
        assert received.message.ednsflags & dns.flags.DO
    ids = [r.message.id for r in fake.received]
    assert len(set(ids)) == len(ids) and ids != sorted(ids)
    assert fake.connections_accepted == 1


async def test_one_tls_connection_for_500_sequential_and_concurrent_queries(
        h: Harness, pki: TestPKI) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context())
    forwarder, pool = h.forwarder(tls_spec(fake, pki, max_queries_per_connection=100))
    for i in range(200):
        assert a_record(await ask(forwarder, f"s{i}.example.")) == "192.0.2.1"
    for batch in range(6):
        answers = await asyncio.gather(*(ask(forwarder, f"c{batch}-{i}.example.")
                                         for i in range(50)))
        assert all(a_record(r) == "192.0.2.1" for r in answers)
    assert len(fake.received) == 500
    assert {r.connection for r in fake.received} == {0}
    assert fake.connections_accepted == 1
    stats = stream_upstream(pool).statistics()
    assert stats["connections_opened"] == 1 and stats["handshakes"] == 1
    assert stats["queries_sent"] == stats["responses"] == 500
    assert stats["in_flight"] == 0 and stats["waiting"] == 0
    assert repr(stream_upstream(pool).state.connections[0]).startswith(
        f"<UpstreamConnection {stream_upstream(pool).name} [IDLE, in_flight=0, queries=500, ")


async def test_reverse_order_answers_are_matched(h: Harness, pki: TestPKI) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(), behavior=Behavior.REVERSE,
                        reverse_batch=8)
    forwarder, _ = h.forwarder(tls_spec(fake, pki))
    names = [f"r{i}.example." for i in range(8)]
    answers = await asyncio.gather(*(ask(forwarder, n) for n in names))
    assert [str(r.question[0].name) for r in answers] == names
    assert fake.connections_accepted == 1


async def test_tcp_upstream_reuses_connection_with_keepalive(h: Harness) -> None:
    fake = await h.fake("tcp")
    forwarder, _ = h.forwarder(fake.spec())
    for i in range(5):
        assert a_record(await ask(forwarder, f"t{i}.example.")) == "192.0.2.1"
    assert fake.connections_accepted == 1
    for received in fake.received:
        assert {o.otype for o in received.message.options} == {edns.KEEPALIVE}


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", [Behavior.CLOSE_MID_ANSWER, Behavior.RESET,
                                   Behavior.GARBAGE, Behavior.CLOSE_AFTER_ANSWER,
                                   Behavior.DUPLICATE, Behavior.FORGED_FIRST])
async def test_one_fault_is_survived(h: Harness, pki: TestPKI, fault: Behavior) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context())
    forwarder, pool = h.forwarder(tls_spec(fake, pki))
    fake.script.append(fault)
    assert a_record(await ask(forwarder, "first.example.")) == "192.0.2.1"
    assert a_record(await ask(forwarder, "second.example.")) == "192.0.2.1"
    stats = stream_upstream(pool).statistics()
    if fault in (Behavior.CLOSE_MID_ANSWER, Behavior.RESET, Behavior.GARBAGE):
        # retried once on a new connection
        assert [r.connection for r in fake.received] == [0, 1, 1]
        assert stats["retries"] == 1
    elif fault is Behavior.CLOSE_AFTER_ANSWER:
        assert [r.connection for r in fake.received] == [0, 1]
    else:
        assert [r.connection for r in fake.received] == [0, 0]
        assert stats["ignored_responses"] == 1


@pytest.mark.parametrize("fault", [Behavior.WRONG_ID, Behavior.WRONG_QUESTION, Behavior.QR0,
                                   Behavior.GARBAGE, Behavior.TRUNCATED_FRAME,
                                   Behavior.CLOSE_MID_ANSWER, Behavior.STALL, Behavior.RESET])
async def test_persistent_fault_is_never_relayed_and_fails_in_time(
        h: Harness, pki: TestPKI, fault: Behavior) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(), behavior=fault)
    forwarder, _ = h.forwarder(tls_spec(fake, pki))
    loop = asyncio.get_running_loop()
    start = loop.time()
    error = await failure(ask(forwarder, "victim.example.", budget=0.4))
    elapsed = loop.time() - start
    assert error.rcode == dns.rcode.SERVFAIL
    assert elapsed < 0.4 + 0.25
    if fault in (Behavior.WRONG_ID, Behavior.TRUNCATED_FRAME, Behavior.STALL):
        assert error.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    else:
        assert error.ede == dns.edns.EDECode.NETWORK_ERROR
    assert fake.received  # the query did reach the upstream


async def test_deadline_gives_servfail_with_ede_22(h: Harness, pki: TestPKI) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(), behavior=Behavior.STALL)
    forwarder, pool = h.forwarder(tls_spec(fake, pki))
    error = await failure(ask(forwarder, budget=0.2))
    assert (error.rcode, error.ede) == (dns.rcode.SERVFAIL, 22)
    assert "timed out" in (error.text or "")
    # nothing was received after the query was sent: the half-open connection is gone
    assert stream_upstream(pool).statistics()["connections"] == 0


async def test_server_refused_and_servfail_move_on(h: Harness) -> None:
    refusing = await h.fake("tcp", behavior=Behavior.REFUSED)
    failing = await h.fake("tcp", behavior=Behavior.SERVFAIL)
    good = await h.fake("tcp")
    forwarder, _ = h.forwarder(refusing.spec(), failing.spec(), good.spec())
    assert a_record(await ask(forwarder)) == "192.0.2.1"
    only_bad, _ = h.forwarder(refusing.spec(), failing.spec())
    assert (await ask(only_bad)).rcode() == dns.rcode.SERVFAIL  # relayed SERVFAIL
    only_refusing, _ = h.forwarder(refusing.spec())
    error = await failure(ask(only_refusing))
    assert (error.ede, error.text) == (22, f"refused by {refusing.spec().name}")


# ---------------------------------------------------------------- TLS authentication


@pytest.mark.parametrize("case", ["wrong_pin", "wrong_name", "unknown_ca", "expired"])
async def test_tls_authentication_failure_sends_nothing(h: Harness, pki: TestPKI,
                                                        case: str) -> None:
    leaf = {"wrong_pin": pki.leaf, "wrong_name": pki.other_name_leaf(),
            "unknown_ca": pki.untrusted_leaf(), "expired": pki.expired_leaf()}[case]
    fake = await h.fake("tls", ssl_context=pki.server_context(leaf))
    if case == "wrong_pin":
        spec = fake.spec(tls_pubkey_pinset=(TestPKI.leaf_pin(pki.untrusted_leaf()),))
    else:
        spec = tls_spec(fake, pki)
    forwarder, pool = h.forwarder(spec)
    error = await failure(ask(forwarder))
    assert (error.rcode, error.ede) == (dns.rcode.SERVFAIL, 23)
    expected = {"wrong_pin": f"pin mismatch for {spec.name}",
                "wrong_name": "Hostname mismatch",
                "unknown_ca": "unable to get local issuer certificate",
                "expired": "certificate has expired"}[case]
    assert expected in (error.text or "")
    assert fake.received == []
    stats = stream_upstream(pool).statistics()
    assert stats["tls_auth_failures"] == 1 and stats["queries_sent"] == 0
    assert stats["pin_failures"] == (1 if case == "wrong_pin" else 0)


async def test_pins_match_leaf_or_ca_and_combine_with_name(h: Harness, pki: TestPKI,
                                                           tmp_path: Path) -> None:
    intermediate = pki.ca.create_child_ca()
    leaf = intermediate.issue_cert("dns.test")  # the server presents leaf + intermediate
    fake = await h.fake("tls", ssl_context=pki.server_context(leaf))
    inter_pin = spki_pin(der(intermediate.cert_pem))
    other = TestPKI.leaf_pin(trustme.CA().issue_cert("x.test"))
    specs = [fake.spec(tls_pubkey_pinset=(TestPKI.leaf_pin(leaf),)),  # pin only, leaf
             fake.spec(tls_pubkey_pinset=(other, inter_pin)),  # CA key, rollover set
             tls_spec(fake, pki, tls_pubkey_pinset=(inter_pin,))]  # name and pin
    for spec in specs:
        forwarder, _ = h.forwarder(spec)
        assert a_record(await ask(forwarder)) == "192.0.2.1"
    name_ok_pin_bad, _ = h.forwarder(tls_spec(fake, pki, tls_pubkey_pinset=(other,)))
    error = await failure(ask(name_ok_pin_bad))
    assert error.text == f"pin mismatch for {tls_spec(fake, pki).name}"
    assert len(fake.received) == 3


async def test_opportunistic_counts_and_warns_once(h: Harness, pki: TestPKI,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(pki.untrusted_leaf()),
                        behavior=Behavior.CLOSE_AFTER_ANSWER)
    forwarder, pool = h.forwarder(fake.spec(opportunistic=True))
    with caplog.at_level(logging.WARNING, logger="dnstls.net.pool"):
        for _ in range(3):
            assert a_record(await ask(forwarder)) == "192.0.2.1"
    warnings = [r for r in caplog.records if "opportunistic" in r.getMessage()]
    assert len(warnings) == 1
    assert stream_upstream(pool).statistics()["opportunistic_connections"] == 3


async def test_tls_session_is_resumed_on_reconnect(h: Harness, pki: TestPKI) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(),
                        behavior=Behavior.CLOSE_AFTER_ANSWER)
    forwarder, pool = h.forwarder(tls_spec(fake, pki, tls_pubkey_pinset=(
        TestPKI.leaf_pin(pki.leaf),)))
    for i in range(3):
        assert a_record(await ask(forwarder, f"x{i}.example.")) == "192.0.2.1"
        await _wait_for(lambda: stream_upstream(pool).statistics()["connections"] == 0)
    stats = stream_upstream(pool).statistics()
    assert stats["handshakes"] == 3
    assert stats["handshakes_resumed"] == 2
    assert fake.connections_accepted == 3


class RecordUpstream:
    """A DoT upstream that sees TLS record boundaries (memory BIOs fed one record at a
    time) and answers every query; ``records`` is the plaintext of each record read."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.records: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RecordUpstream:
        self.tasks.append(asyncio.create_task(self._accept()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.sock.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            self.tasks.append(asyncio.create_task(self._serve(conn)))

    async def _serve(self, conn: socket.socket) -> None:
        stream = RecordStream(conn, self.ctx, server_side=True, within=30.0)
        tls = stream.tls
        try:
            if not await stream.handshake():
                return
            while await stream.next_record():
                try:
                    plain = tls.read(65536)
                except ssl.SSLWantReadError:
                    continue
                self.records.append(plain)
                for frame in FrameDecoder().feed(plain):
                    answer = dns.message.make_response(dns.message.from_wire(frame))
                    answer.answer.append(dns.rrset.from_text(
                        answer.question[0].name, 60, "IN", "A", "192.0.2.1"))
                    tls.write(encode(answer.to_wire()))
                await stream.send_pending()
        finally:
            conn.close()


async def test_pipelined_queries_to_a_tls_upstream_are_one_record_each(
        h: Harness, pki: TestPKI) -> None:
    """Queries started together leave in one send, but each in its own TLS record (as
    the server writes its answers): an upstream that reads one DNS message per record
    -- getdns does -- would otherwise leave the rest of a record unread."""
    async with RecordUpstream(pki.server_context()) as up:
        forwarder, pool = h.forwarder(UpstreamSpec(
            "127.0.0.1", up.port, "tls", tls_auth_name="dns.test", ca_file=pki.ca_file))
        assert a_record(await ask(forwarder, "first.example.")) == "192.0.2.1"
        for batch in range(3):
            answers = await asyncio.gather(*(ask(forwarder, f"b{batch}-{i}.example.")
                                             for i in range(20)))
            assert all(a_record(r) == "192.0.2.1" for r in answers)
        assert stream_upstream(pool).statistics()["connections_opened"] == 1
        assert len(up.records) == 61
        for plain in up.records:
            assert struct.unpack_from("!H", plain)[0] == len(plain) - 2  # one message


# ---------------------------------------------------------------- UDP


async def test_udp_forged_responses_are_ignored(h: Harness) -> None:
    fake = await h.fake("udp", behavior=Behavior.FORGED_FIRST)
    forwarder, pool = h.forwarder(fake.spec())
    for i in range(5):
        assert a_record(await ask(forwarder, f"u{i}.example.")) == "192.0.2.1"
    stats = pool.upstreams[0].statistics()
    assert stats["forged_responses"] == 15  # wrong ID, wrong question, QR=0; per query
    ports = {r.peer[1] for r in fake.received}
    assert len(ports) == 5  # a fresh source port per query
    assert all(r.message.edns >= 0 and not r.message.options for r in fake.received)


async def test_udp_truncated_retries_over_tcp(h: Harness) -> None:
    fake = await h.fake("udp", behavior=Behavior.TRUNCATED, also_tcp=True)
    forwarder, pool = h.forwarder(fake.spec())
    assert a_record(await ask(forwarder)) == "192.0.2.1"
    assert [r.connection for r in fake.received] == [-1, 0]
    stats = pool.upstreams[0].statistics()
    assert stats["truncated"] == 1 and stats["tcp_fallback"]["responses"] == 1


async def test_udp_silence_times_out(h: Harness) -> None:
    fake = await h.fake("udp", behavior=Behavior.STALL)
    forwarder, _ = h.forwarder(fake.spec())
    error = await failure(ask(forwarder, budget=0.2))
    assert error.ede == 22


# ---------------------------------------------------------------- several upstreams


async def test_failover_and_backoff(h: Harness, pki: TestPKI) -> None:
    dead = await h.fake("tcp")
    dead_spec = dead.spec()
    await dead.aclose()  # its port now refuses connections
    h.fakes.remove(dead)
    good = await h.fake("tcp")
    forwarder, _ = h.forwarder(dead_spec, good.spec(), strategy="ordered")
    assert a_record(await ask(forwarder)) == "192.0.2.1"
    health = forwarder.statistics()["upstreams"][dead_spec.name]
    assert health["errors"] == {"network": 1} and health["backed_off"]
    assert 0.5 < health["retry_in"] <= 1.0
    assert a_record(await ask(forwarder)) == "192.0.2.1"
    assert forwarder.statistics()["upstreams"][dead_spec.name]["queries"] == 1  # skipped
    assert len(good.received) == 2


async def test_all_upstreams_down_gives_network_error(h: Harness) -> None:
    dead = await h.fake("tcp")
    spec = dead.spec()
    await dead.aclose()
    h.fakes.remove(dead)
    forwarder, _ = h.forwarder(spec)
    error = await failure(ask(forwarder))
    assert error.ede == 23 and spec.name in (error.text or "")


async def test_idle_connection_closed_after_upstream_keepalive(h: Harness) -> None:
    fake = await h.fake("tcp", keepalive=0.1)
    forwarder, pool = h.forwarder(fake.spec())
    assert a_record(await ask(forwarder)) == "192.0.2.1"
    upstream = stream_upstream(pool)
    assert upstream.state.connections[0].state.idle_timeout == 0.1
    await _wait_for(lambda: not upstream.state.connections)
    assert a_record(await ask(forwarder)) == "192.0.2.1"
    assert fake.connections_accepted == 2


async def test_cancelled_query_leaves_no_slot(h: Harness, pki: TestPKI) -> None:
    fake = await h.fake("tls", ssl_context=pki.server_context(), behavior=Behavior.STALL)
    forwarder, pool = h.forwarder(tls_spec(fake, pki, max_connections=1,
                                           max_queries_per_connection=1))
    tasks = [asyncio.create_task(ask(forwarder, f"w{i}.example.", budget=5)) for i in range(3)]
    await _wait_for(lambda: len(fake.received) == 1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    upstream = stream_upstream(pool)
    assert upstream.statistics()["waiting"] == 0
    assert all(c.state.reserved == 0 for c in upstream.state.connections)
    fake.behavior = Behavior.NORMAL
    assert a_record(await ask(forwarder)) == "192.0.2.1"


async def _wait_for(condition: Callable[[], bool], *, within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not condition():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)
