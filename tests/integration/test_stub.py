"""``dnstls stub`` end to end on loopback, against fake DoT upstreams with per-run PKI.

Both sides are asserted: what the client got (plain DNS over UDP/TCP) and what the fake
upstream received (or did not). Every stub here has explicit loopback upstreams: the
built-in defaults (Cloudflare) are never used in tests. Timeouts are short so that every
failure ends in a bounded SERVFAIL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import logging
import os
import random
import signal
import socket
import struct
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import Fakes
from cryptography import x509

from dnstls.proto import edns
from dnstls.proto.pins import spki_pin
from dnstls.service import Service
from dnstls.stub import (
    StubOverrides,
    StubRuntime,
    load_stub_config,
    stub_config_from_data,
)
from fakes import Behavior, FakeUpstream, TestPKI
from interop.peers import free_port

pytestmark = pytest.mark.timeout(60)

NAME = "dns.test"
# Each client query ends within timeout (1.5 s) + the handler's 0.25 s margin.
TIMEOUT_MS = 1500
BOUND = 3.0


# ------------------------------------------------------------------------ helpers

class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def udp_exchange(addr: tuple[str, int], wire: bytes, within: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_UdpClient, remote_addr=addr)
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(proto.answer, within)
    finally:
        transport.close()


class TcpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, addr: tuple[str, int]) -> TcpClient:
        return cls(*await asyncio.open_connection(*addr))

    async def send(self, wire: bytes) -> None:
        self.writer.write(struct.pack("!H", len(wire)) + wire)
        await self.writer.drain()

    async def recv(self, within: float = 5.0) -> bytes:
        head = await asyncio.wait_for(self.reader.readexactly(2), within)
        return await asyncio.wait_for(self.reader.readexactly(struct.unpack("!H", head)[0]),
                                      within)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def query(name: str = "www.example.", rdtype: str = "A", **kw: Any) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)


def ede_codes(response: dns.message.Message) -> list[int]:
    return [int(o.code) for o in response.options if isinstance(o, dns.edns.EDEOption)]


@dataclass
class Stub:
    service: Service
    runtime: StubRuntime

    @property
    def addr(self) -> tuple[str, int]:
        return self.service.endpoints.plain[0]

    async def ask(self, message: dns.message.Message, *, tcp: bool = False,
                  within: float = 5.0) -> dns.message.Message:
        wire = message.to_wire()
        if tcp:
            client = await TcpClient.connect(self.addr)
            try:
                await client.send(wire)
                answer = await client.recv(within)
            finally:
                await client.aclose()
        else:
            answer = await udp_exchange(self.addr, wire, within)
        response = dns.message.from_wire(answer)
        assert response.id == message.id and response.question == message.question
        return response

    def upstream_stats(self) -> dict[str, Any]:
        forwarding = self.runtime.forwarding
        assert forwarding is not None
        return forwarding.statistics()["upstreams"]  # type: ignore[no-any-return]


def tls_upstream(fake: FakeUpstream, pki: TestPKI | None = None, **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"address_data": fake.address, "tls_port": fake.port,
                            "tls_auth_name": NAME}
    if pki is not None:
        item["tls_ca_file"] = pki.ca_file
    item.update(kw)
    return {k: v for k, v in item.items() if v is not None}


StartStub = Callable[..., Coroutine[Any, Any, Stub]]


@pytest.fixture
async def stub() -> AsyncIterator[StartStub]:
    services: list[Service] = []

    async def start(data: dict[str, Any] | None = None, *, path: Path | None = None,
                    overrides: StubOverrides | None = None) -> Stub:
        if path is not None:
            cfg = load_stub_config(path, overrides)
        else:
            cfg = stub_config_from_data({"listen_addresses": ["127.0.0.1@0"],
                                         "timeout": TIMEOUT_MS, **(data or {})}, overrides)
        # never the built-in public upstreams in tests
        assert not cfg.upstreams_are_default
        assert all(ip_is_loopback(u.spec.address) for u in cfg.upstreams)
        runtime = StubRuntime(cfg, path=path, overrides=overrides)
        service = runtime.service()
        await service.start()
        services.append(service)
        return Stub(service, runtime)

    yield start
    for service in services:
        await service.aclose()


def ip_is_loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address).is_loopback




# ------------------------------------------------------------------------ happy path

async def test_udp_and_tcp_answers_and_what_the_upstream_receives(
        stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context(), keepalive=30.0)
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)],
                    "cache": {"enabled": False}})
    client_options = [dns.edns.GenericOption(edns.PADDING, b"\x00" * 30),
                      dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678"),
                      edns.keepalive_option(None)]
    for tcp in (False, True):
        response = await s.ask(query(f"{'tcp' if tcp else 'udp'}.example.", use_edns=0,
                                     options=client_options), tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.answer[0][0].to_text() == "192.0.2.1"
        assert not edns.has_option(response, edns.PADDING)  # cleartext: never padded
        if tcp:  # our own keepalive on TCP (the client asked), never the upstream's 30 s
            option = edns.find_option(response, edns.KEEPALIVE)
            assert option is not None and edns.keepalive_timeout(option) == 10.0
        else:
            assert not edns.has_option(response, edns.KEEPALIVE)
    assert len(fake.received) == 2 and fake.connections_accepted == 1
    for received in fake.received:  # a fresh query: padded to 128, no client cookie
        assert len(received.wire) % 128 == 0
        assert {o.otype for o in received.message.options} == {edns.PADDING, edns.KEEPALIVE}
        assert received.message.id not in {0}
    assert all(r.connection == 0 for r in fake.received)


async def test_nsid_when_asked_never_upstream(stub: StartStub, fakes: Fakes,
                                              pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)],
                    "nsid": "ascii_stub-1"})
    nsid = [dns.edns.GenericOption(edns.NSID, b"")]
    for tcp in (False, True, False):  # forwarded, then cached
        asked = await s.ask(query("nsid.example.", use_edns=0, options=nsid), tcp=tcp)
        option = edns.find_option(asked, edns.NSID)
        assert option is not None and option.to_wire() == b"stub-1"
        plain = await s.ask(query("nsid.example.", use_edns=0), tcp=tcp)
        assert not edns.has_option(plain, edns.NSID)
    assert fake.received
    assert not any(edns.has_option(r.message, edns.NSID) for r in fake.received)


async def test_cache_answers_repeated_questions(stub: StartStub, fakes: Fakes,
                                                pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)]})
    for _ in range(3):
        assert (await s.ask(query("cached.example."))).rcode() == dns.rcode.NOERROR
    assert len(fake.received) == 1


def answer_with_glue(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, pad=0)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                               "192.0.2.1"))
    response.authority.append(dns.rrset.from_text("example.", 300, "IN", "NS",
                                                  "ns1.example."))
    response.additional.append(dns.rrset.from_text("ns1.example.", 300, "IN", "A",
                                                   "192.0.2.53"))
    return response


@pytest.mark.parametrize(("cache", "minimal"), [({}, True), ({"enabled": False}, True),
                                                ({"minimal_responses": False}, False)])
async def test_minimal_responses(stub: StartStub, fakes: Fakes, pki: TestPKI,
                                 cache: dict[str, Any], minimal: bool) -> None:
    """As serve: no NS or glue in a positive answer unless the setting is off, with DO
    too (as Unbound: no NSEC/NSEC3 in the authority section here); cache on and off,
    miss and hit; the wire path, and the message path that a query with an option the
    fast path leaves to dnspython takes."""
    fake = await fakes("tls", ssl_context=pki.server_context(), answer=answer_with_glue)
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)], "cache": cache})
    for do, tcp, slow in itertools.product((False, True), repeat=3):
        options = [dns.edns.EDEOption(0)] if slow else []
        got = await s.ask(query("glue.example.", use_edns=0, want_dnssec=do,
                                options=options), tcp=tcp)
        assert got.answer[0][0].to_text() == "192.0.2.1"
        kept = not minimal
        assert (len(got.authority), len(got.additional)) == ((1, 1) if kept else (0, 0)), (
            do, tcp, slow)


class _StreamMessage(dns.message.Message):
    """The fake renders answers under the query's EDNS buffer (use_edns sets
    request_payload); over a stream an answer may be larger, so ignore that limit."""

    def to_wire(self, origin: Any = None, max_size: int = 0, **kw: Any) -> bytes:
        return super().to_wire(origin, 65535, **kw)


def big_answer(query: dns.message.Message) -> dns.message.Message:
    response = _StreamMessage(id=query.id)
    response.flags = dns.flags.QR | dns.flags.RD | dns.flags.RA
    response.question = list(query.question)
    response.answer.append(dns.rrset.from_text(
        query.question[0].name, 300, "IN", "TXT",
        *[f'"{chr(97 + i) * 200}"' for i in range(10)]))
    return response


async def test_udp_truncated_to_client_buffer_tcp_gets_everything(
        stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context(), answer=big_answer)
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)]})
    plain = await udp_exchange(s.addr, query("big.example.", "TXT").to_wire())
    assert len(plain) <= 512
    message = dns.message.from_wire(plain)
    assert message.flags & dns.flags.TC and not message.answer
    wire = await udp_exchange(s.addr, query("big.example.", "TXT", use_edns=0,
                                            payload=1232).to_wire())
    assert len(wire) <= 1232 and dns.message.from_wire(wire).flags & dns.flags.TC
    full = await s.ask(query("big.example.", "TXT"), tcp=True)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 10
    big = await s.ask(query("big.example.", "TXT", use_edns=0, payload=4096))
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 10


async def test_tcp_edns_client_gets_an_answer_larger_than_its_udp_buffer(
        stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context(), answer=big_answer)
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)]})
    # RFC 7766 §8: a stream answer is never capped at the client's UDP buffer size
    full = await s.ask(query("big.example.", "TXT", use_edns=0, payload=1232), tcp=True)
    assert full.rcode() == dns.rcode.NOERROR and len(full.answer[0]) == 10
    assert not full.flags & dns.flags.TC


# ------------------------------------------------------------------------ bad input

async def test_malformed_client_queries_never_stop_the_stub(stub: StartStub, fakes: Fakes,
                                                            pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)]})
    good = query("good.example.").to_wire()
    header = good[:12]
    # UDP: header + junk -> FORMERR; shorter than a header, or QR=1 -> dropped
    formerr = dns.message.from_wire(await udp_exchange(s.addr, header[:5] + b"\x00"
                                                       + header[6:] + b"\xff\xff\xff"))
    assert formerr.rcode() == dns.rcode.FORMERR
    for dropped in (b"\x00\x01\x02", bytes([header[0], header[1], 0x80]) + header[3:]):
        with pytest.raises(TimeoutError):
            await udp_exchange(s.addr, dropped, within=0.3)
    # several questions -> FORMERR
    two = bytearray(good)
    two[5] = 2
    assert dns.message.from_wire(await udp_exchange(s.addr, bytes(two))).rcode() == \
        dns.rcode.FORMERR
    # TCP: garbage with a header -> FORMERR on a connection that still works
    client = await TcpClient.connect(s.addr)
    await client.send(header + b"\xc0\xff")
    assert dns.message.from_wire(await client.recv()).rcode() == dns.rcode.FORMERR
    await client.send(good)
    assert dns.message.from_wire(await client.recv()).rcode() == dns.rcode.NOERROR
    await client.aclose()
    # TCP: a zero-length frame closes that connection only
    client = await TcpClient.connect(s.addr)
    client.writer.write(b"\x00\x00")
    assert await asyncio.wait_for(client.reader.read(100), 5) == b""
    await client.aclose()
    # random garbage from many clients, then another client is still served
    rng = random.Random(7)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(blob, s.addr)
    assert (await s.ask(query("after.example."))).rcode() == dns.rcode.NOERROR
    assert (await s.ask(query("after.example."), tcp=True)).rcode() == dns.rcode.NOERROR
    assert s.service.handler is not None and s.service.handler.internal_errors == 0
    assert [str(r.message.question[0].name) for r in fake.received] == \
        ["good.example.", "after.example."]


# ------------------------------------------------------------------------ authentication

async def test_right_pins_are_answered(stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    by_leaf = await fakes("tls", ssl_context=pki.server_context())
    # a chain with an intermediate CA, as real servers present: pin the CA's key
    intermediate = pki.ca.create_child_ca()
    by_ca = await fakes("tls", ssl_context=pki.server_context(intermediate.issue_cert(NAME)))
    ca_pin = spki_pin(x509.load_pem_x509_certificate(intermediate.cert_pem.bytes()))
    rollover = await fakes("tls", ssl_context=pki.server_context())
    wrong = "A" * 43 + "="
    s = await stub({"strategy": "ordered", "upstream_recursive_servers": [
        tls_upstream(by_leaf, tls_auth_name=None, tls_pubkey_pinset=[pki.leaf_pin(pki.leaf)])]})
    assert (await s.ask(query("leaf.example."))).rcode() == dns.rcode.NOERROR
    s = await stub({"upstream_recursive_servers": [
        tls_upstream(by_ca, pki, tls_pubkey_pinset=[{"digest": "sha256", "value": ca_pin}])]})
    assert (await s.ask(query("ca.example."))).rcode() == dns.rcode.NOERROR
    # rollover: the old (gone) key, the current key and the CA; any match suffices
    s = await stub({"upstream_recursive_servers": [
        tls_upstream(rollover, tls_auth_name=None,
                     tls_pubkey_pinset=[wrong, pki.leaf_pin(pki.leaf), ca_pin])]})
    assert (await s.ask(query("roll.example."))).rcode() == dns.rcode.NOERROR
    assert [len(f.received) for f in (by_leaf, by_ca, rollover)] == [1, 1, 1]


@pytest.mark.parametrize("fault", ["wrong_pin", "wrong_name", "unknown_ca", "expired"])
async def test_unauthenticated_upstream_gets_no_query(stub: StartStub, fakes: Fakes,
                                                      pki: TestPKI, fault: str) -> None:
    leaf = {"wrong_name": pki.other_name_leaf(), "unknown_ca": TestPKI.untrusted_leaf(),
            "expired": pki.expired_leaf()}.get(fault, pki.leaf)
    bad = await fakes("tls", ssl_context=pki.server_context(leaf))
    good = await fakes("tls", ssl_context=pki.server_context())
    extra = {"tls_pubkey_pinset": ["A" * 43 + "="]} if fault == "wrong_pin" else {}
    bad_item = tls_upstream(bad, pki, **extra)
    # alone: SERVFAIL with EDE 23 (Network Error) naming the reason, in bounded time
    s = await stub({"upstream_recursive_servers": [bad_item]})
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await s.ask(query("x.example.", use_edns=0))
    assert loop.time() - start < BOUND
    assert response.rcode() == dns.rcode.SERVFAIL
    assert ede_codes(response) == [int(dns.edns.EDECode.NETWORK_ERROR)]
    text = next(o.text for o in response.options if isinstance(o, dns.edns.EDEOption))
    assert text is not None
    assert ("pin mismatch" if fault == "wrong_pin" else "TLS authentication failed") in text
    # with a good one: failover, answered
    s2 = await stub({"strategy": "ordered",
                     "upstream_recursive_servers": [bad_item, tls_upstream(good, pki)]})
    assert (await s2.ask(query("y.example."))).rcode() == dns.rcode.NOERROR
    if fault == "wrong_pin":
        assert bad.connections_accepted >= 2  # the handshakes completed ...
    assert bad.received == []  # ... but no query was ever written to it
    assert len(good.received) == 1
    stats = s2.upstream_stats()[f"tls://127.0.0.1:{bad.port}#{NAME}"]
    assert stats["tls_auth_failures"] == 1 and stats["backed_off"]
    assert stats["pin_failures"] == (1 if fault == "wrong_pin" else 0)


async def test_report_only_pins_log_but_do_not_block(stub: StartStub, fakes: Fakes,
                                                     pki: TestPKI,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dnstls.net.pool")
    fake = await fakes("tls", ssl_context=pki.server_context())
    wrong = base64.b64encode(hashlib.sha256(b"next key").digest()).decode()
    s = await stub({"upstream_recursive_servers": [
        tls_upstream(fake, pki, tls_pubkey_pinset=[wrong], tls_pubkey_pinset_mode="report")]})
    assert (await s.ask(query("r.example."))).rcode() == dns.rcode.NOERROR
    assert len(fake.received) == 1
    upstream = s.runtime.forwarding.current.upstreams[0]  # type: ignore[union-attr]
    assert upstream.spec.tls_pubkey_pinset_mode == "report"
    stats = s.upstream_stats()[upstream.name]
    assert stats["pin_mismatches_reported"] == 1 and stats["pin_report_only"]
    assert stats["pin_failures"] == 0 and stats["tls_auth_failures"] == 0
    message = caplog.text
    assert "report-only" in message and wrong in message
    assert f"expected one of {wrong}; server presented {pki.leaf_pin(pki.leaf)}" in message
    # the right pin in report mode: counted as a match, no warning
    caplog.clear()
    fake2 = await fakes("tls", ssl_context=pki.server_context())
    s2 = await stub({"upstream_recursive_servers": [
        tls_upstream(fake2, pki, tls_pubkey_pinset=[pki.leaf_pin(pki.leaf)],
                     tls_pubkey_pinset_mode="report")]})
    assert (await s2.ask(query("r2.example."))).rcode() == dns.rcode.NOERROR
    stats = next(iter(s2.upstream_stats().values()))
    assert stats["pin_matches_reported"] == 1 and stats["pin_mismatches_reported"] == 0
    assert "report-only" not in caplog.text
    # report mode never weakens name authentication: an unknown CA still gets no query
    evil = await fakes("tls", ssl_context=pki.server_context(TestPKI.untrusted_leaf()))
    s3 = await stub({"upstream_recursive_servers": [
        tls_upstream(evil, pki, tls_pubkey_pinset=[pki.leaf_pin(pki.leaf)],
                     tls_pubkey_pinset_mode="report")]})
    assert (await s3.ask(query("r3.example."))).rcode() == dns.rcode.SERVFAIL
    assert evil.received == []


async def test_opportunistic_is_visible(stub: StartStub, fakes: Fakes, pki: TestPKI,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    fake = await fakes("tls", ssl_context=pki.server_context(TestPKI.untrusted_leaf()))
    s = await stub({"tls_authentication": "GETDNS_AUTHENTICATION_NONE",
                    "upstream_recursive_servers": [tls_upstream(fake, tls_auth_name=None)]})
    assert "OPPORTUNISTIC" in caplog.text
    assert (await s.ask(query("o.example."))).rcode() == dns.rcode.NOERROR
    stats = next(iter(s.upstream_stats().values()))
    assert stats["opportunistic"] and stats["opportunistic_connections"] == 1
    assert "NOT authenticated" in caplog.text


# ------------------------------------------------------------------------ faults

async def test_every_upstream_down_or_unauthenticatable_never_cleartext(
        stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    # a plain DNS server (UDP+TCP) on the port the stub is told to reach over TLS
    plain = await fakes("udp", also_tcp=True)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    untrusted = await fakes("tls", ssl_context=pki.server_context(TestPKI.untrusted_leaf()))
    s = await stub({"upstream_recursive_servers": [
        {"address_data": "127.0.0.1", "tls_port": plain.port, "tls_auth_name": NAME,
         "tls_ca_file": pki.ca_file},
        {"address_data": "127.0.0.1", "tls_port": closed_port, "tls_auth_name": NAME,
         "tls_ca_file": pki.ca_file},
        tls_upstream(untrusted, pki)]})
    loop = asyncio.get_running_loop()
    for tcp in (False, True, False):
        start = loop.time()
        response = await s.ask(query("down.example.", use_edns=0), tcp=tcp)
        assert loop.time() - start < BOUND
        assert response.rcode() == dns.rcode.SERVFAIL and ede_codes(response)
    assert plain.received == []  # never a cleartext query
    assert untrusted.received == []


async def test_stalled_upstreams(stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    # one that accepts TCP and never answers the handshake, one that never answers queries
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    mute_port = server.sockets[0].getsockname()[1]
    silent = await fakes("tls", ssl_context=pki.server_context(), behavior=Behavior.STALL)
    good = await fakes("tls", ssl_context=pki.server_context())
    try:
        stalled = [{"address_data": "127.0.0.1", "tls_port": mute_port, "tls_auth_name": NAME,
                    "tls_ca_file": pki.ca_file}, tls_upstream(silent, pki)]
        s = await stub({"strategy": "ordered", "upstream_recursive_servers": stalled})
        loop = asyncio.get_running_loop()
        start = loop.time()
        response = await s.ask(query("stall.example.", use_edns=0))
        assert loop.time() - start < BOUND
        assert response.rcode() == dns.rcode.SERVFAIL
        assert ede_codes(response) == [int(dns.edns.EDECode.NO_REACHABLE_AUTHORITY)]
        # with a good upstream last: failover within the deadline
        s2 = await stub({"strategy": "ordered",
                         "upstream_recursive_servers": [*stalled, tls_upstream(good, pki)]})
        start = loop.time()
        assert (await s2.ask(query("stall2.example."))).rcode() == dns.rcode.NOERROR
        assert loop.time() - start < BOUND
        # both stalled upstreams are now backed off: the next query goes straight to good
        start = loop.time()
        assert (await s2.ask(query("stall3.example."))).rcode() == dns.rcode.NOERROR
        assert loop.time() - start < 0.5
        assert [str(r.message.question[0].name) for r in good.received] == \
            ["stall2.example.", "stall3.example."]
    finally:
        server.close()
        await server.wait_closed()


async def test_lone_refusing_upstream_gets_no_connect_storm_and_is_probed_back(
        stub: StartStub, fakes: Fakes, pki: TestPKI, caplog: pytest.LogCaptureFixture) -> None:
    """One upstream, connections refused, bursts of queries: SERVFAIL + EDE 23 at once,
    one connect (not one per burst), one warning (not a line per query); when the
    upstream comes back it is found by the next probe, within the hold (1 s)."""
    caplog.set_level(logging.DEBUG, logger="dnstls")
    port = free_port()  # nothing listens there: connection refused
    s = await stub({"cache": {"enabled": False}, "upstream_recursive_servers": [
        {"address_data": "127.0.0.1", "tls_port": port, "tls_auth_name": NAME,
         "tls_ca_file": pki.ca_file}]})
    loop = asyncio.get_running_loop()
    start = loop.time()
    for burst in range(8):
        asked = loop.time()
        responses = await asyncio.gather(*(s.ask(query(f"b{burst}-{i}.example.", use_edns=0))
                                           for i in range(25)))
        assert loop.time() - asked < 0.5
        assert {(r.rcode(), tuple(ede_codes(r))) for r in responses} == {
            (dns.rcode.SERVFAIL, (int(dns.edns.EDECode.NETWORK_ERROR),))}
    elapsed = loop.time() - start
    stats = next(iter(s.upstream_stats().values()))
    assert stats["connections_opened"] <= 1 + int(elapsed)  # 1, and a probe per second
    # held back without a connect: by the pool's connect hold, or (after three failed
    # attempts in a row) by the forwarder, the upstream being down
    assert stats["connect_backoff_failures"] + stats["held"] >= (
        200 - 25 * stats["connections_opened"])
    assert stats["down"] and stats["held"] > 100
    loud = [r for r in caplog.records if r.levelno >= logging.INFO
            and r.name in ("dnstls.net.pool", "dnstls.resolver.forward")]
    assert [(r.name, r.levelname) for r in loud] == [  # failing, then down after three
        ("dnstls.net.pool", "WARNING"), ("dnstls.resolver.forward", "WARNING"),
        ("dnstls.resolver.forward", "WARNING")]
    assert "Connection refused" in loud[0].getMessage()
    assert " down after " in loud[2].getMessage()
    # the upstream comes back on its port
    fake = await fakes("tls", ssl_context=pki.server_context(), port=port)
    back = loop.time()
    while (await s.ask(query("back.example."))).rcode() != dns.rcode.NOERROR:
        assert loop.time() - back < 2.0  # the hold: 1 s
        await asyncio.sleep(0.05)
    assert [str(r.message.question[0].name) for r in fake.received] == ["back.example."]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO
            and "again" in r.getMessage()] == [
        f"upstream tls://127.0.0.1:{port}#{NAME} reachable again (after "
        f"{stats['connect_failures']} failed connects)",
        f"upstream tls://127.0.0.1:{port}#{NAME} answering again (after "
        f"{s.upstream_stats()[f'tls://127.0.0.1:{port}#{NAME}']['queries'] - 1} failed "
        "attempts)"]


async def test_lone_mute_upstream_the_probe_waits_alone(
        stub: StartStub, pki: TestPKI) -> None:
    """An upstream that accepts TCP and never completes the TLS handshake (as one
    behind a blackhole, the connect never completes): after the first failed
    connect, queries fail at once while the probe waits for connect_timeout."""
    accepted = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = await stub({"cache": {"enabled": False}, "timeout": 1000,
                        "upstream_recursive_servers": [
                            {"address_data": "127.0.0.1", "tls_port": port,
                             "tls_auth_name": NAME, "tls_ca_file": pki.ca_file}]})
        loop = asyncio.get_running_loop()
        first = await s.ask(query("first.example.", use_edns=0))  # waits: nothing known yet
        assert first.rcode() == dns.rcode.SERVFAIL and ede_codes(first)
        stats = next(iter(s.upstream_stats().values()))
        while not stats["connect_failures"]:  # the connect times out (connect_timeout 1 s)
            await asyncio.sleep(0.05)
            stats = next(iter(s.upstream_stats().values()))
        asked = loop.time()
        responses = await asyncio.gather(*(s.ask(query(f"m{i}.example.", use_edns=0))
                                           for i in range(30)))
        assert loop.time() - asked < 0.5  # none waited for a connect
        assert {(r.rcode(), tuple(ede_codes(r))) for r in responses} == {
            (dns.rcode.SERVFAIL, (int(dns.edns.EDECode.NETWORK_ERROR),))}
        assert len(accepted) == 1
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_upstream_closing_or_resetting_loses_no_query(stub: StartStub, fakes: Fakes,
                                                             pki: TestPKI) -> None:
    closer = await fakes("tls", ssl_context=pki.server_context(),
                         behavior=Behavior.CLOSE_AFTER_ANSWER)
    s = await stub({"upstream_recursive_servers": [tls_upstream(closer, pki)],
                    "cache": {"enabled": False}})
    for i in range(10):
        assert (await s.ask(query(f"c{i}.example."), tcp=bool(i % 2))).rcode() == \
            dns.rcode.NOERROR
    assert closer.connections_accepted == 10
    resetter = await fakes("tls", ssl_context=pki.server_context())
    for _ in range(10):
        resetter.script.extend([Behavior.RESET, Behavior.NORMAL])
    s2 = await stub({"upstream_recursive_servers": [tls_upstream(resetter, pki)],
                     "cache": {"enabled": False}})
    for i in range(10):
        assert (await s2.ask(query(f"r{i}.example."))).rcode() == dns.rcode.NOERROR
    stats = next(iter(s2.upstream_stats().values()))
    assert stats["retries"] == 10 and len(resetter.received) == 20


async def test_200_concurrent_queries_over_at_most_two_connections(
        stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    s = await stub({"upstream_recursive_servers": [tls_upstream(fake, pki)],
                    "timeout": 4000})
    responses = await asyncio.gather(*(s.ask(query(f"n{i}.example."), tcp=i % 4 == 0)
                                       for i in range(200)))
    assert all(r.rcode() == dns.rcode.NOERROR for r in responses)
    assert len(fake.received) == 200
    assert fake.connections_accepted <= 2
    assert {r.connection for r in fake.received} <= {0, 1}
    stats = next(iter(s.upstream_stats().values()))
    assert stats["connections_opened"] <= 2 and stats["handshakes"] <= 2
    assert stats["queries_sent"] == stats["transport_responses"] == 200


async def test_failing_upstream_backs_off_and_round_robin_spreads(
        stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    one = await fakes("tls", ssl_context=pki.server_context())
    two = await fakes("tls", ssl_context=pki.server_context())
    bad = await fakes("tls", ssl_context=pki.server_context(), behavior=Behavior.SERVFAIL)
    s = await stub({"round_robin_upstreams": 1, "cache": {"enabled": False},
                    "upstream_recursive_servers": [tls_upstream(one, pki),
                                                   tls_upstream(two, pki)]})
    for i in range(10):
        await s.ask(query(f"rr{i}.example."))
    assert len(one.received) == len(two.received) == 5
    refusing = await fakes("tls", ssl_context=pki.server_context(), behavior=Behavior.REFUSED)
    s2 = await stub({"strategy": "ordered", "cache": {"enabled": False},
                     "upstream_recursive_servers": [tls_upstream(refusing, pki),
                                                    tls_upstream(bad, pki)]})
    response = await s2.ask(query("sf.example."))
    assert response.rcode() == dns.rcode.SERVFAIL  # the upstream's SERVFAIL relayed


# ------------------------------------------------------------------------ reload

def write_config(path: Path, *upstreams: dict[str, Any], extra: str = "") -> None:
    lines = ['listen_addresses = ["127.0.0.1@0"]', f"timeout = {TIMEOUT_MS}", extra]
    for item in upstreams:
        lines.append("[[upstream_recursive_servers]]")
        for key, value in item.items():
            rendered = f'"{value}"' if isinstance(value, str) else (
                "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list)
                else str(value))
            lines.append(f"{key} = {rendered}")
    path.write_text("\n".join(lines) + "\n")


async def test_reload_switches_upstreams_without_dropping_clients(
        stub: StartStub, fakes: Fakes, pki: TestPKI, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    old = await fakes("tls", ssl_context=pki.server_context(), behavior=Behavior.REVERSE,
                      reverse_batch=2)
    new = await fakes("tls", ssl_context=pki.server_context())
    path = tmp_path / "stub.toml"
    write_config(path, tls_upstream(old, pki), extra="[cache]\nenabled = false")
    s = await stub(path=path)
    forwarding = s.runtime.forwarding
    assert forwarding is not None
    old_generation = forwarding.current
    # a client TCP connection, and a query in flight at the old upstream (held by it)
    client = await TcpClient.connect(s.addr)
    held = query("held.example.")
    await client.send(held.to_wire())
    for _ in range(100):
        if old.received:
            break
        await asyncio.sleep(0.01)
    assert [str(r.message.question[0].name) for r in old.received] == ["held.example."]
    # reload: the new file names another upstream with a pin
    write_config(path, tls_upstream(new, pki, tls_pubkey_pinset=[pki.leaf_pin(pki.leaf)]),
                 extra="[cache]\nenabled = false")
    assert s.service.reload()
    assert forwarding.current is not old_generation and old_generation.retired
    # the same client connection: a new query goes to the new upstream
    await client.send(query("after.example.").to_wire())
    answer = dns.message.from_wire(await client.recv())
    assert answer.question[0].name.to_text() == "after.example."
    assert [str(r.message.question[0].name) for r in new.received] == ["after.example."]
    # the in-flight query still completes through the old pool (the old upstream answers
    # once a second query reaches it on the same connection)
    loop = asyncio.get_running_loop()
    release = old_generation.upstreams[0].exchange(query("release.example.", use_edns=0),
                                                   deadline=loop.time() + 2)
    _, got = await asyncio.gather(release, client.recv())
    answer = dns.message.from_wire(got)
    assert answer.id == held.id and answer.rcode() == dns.rcode.NOERROR
    for _ in range(100):  # the empty old generation is closed
        if not forwarding.old:
            break
        await asyncio.sleep(0.01)
    assert forwarding.old == []
    # a broken file: the reload fails, says why, and the running config stays
    caplog.set_level(logging.ERROR, logger="dnstls.stub")
    path.write_text("timeout = -1\n")
    assert not s.service.reload()
    assert "reload failed" in caplog.text and "timeout" in caplog.text
    await client.send(query("still.example.").to_wire())
    assert dns.message.from_wire(await client.recv()).rcode() == dns.rcode.NOERROR
    assert [str(r.message.question[0].name) for r in new.received][-1] == "still.example."
    assert forwarding.statistics()["stub"]["reload_failures"] == 1
    assert forwarding.statistics()["stub"]["reloads"] == 1
    await client.aclose()


async def test_reload_reads_local_data_and_blocklists_again(
        stub: StartStub, fakes: Fakes, pki: TestPKI, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP reads ``[local]`` again, as serve's does: a name added to a blocklist is
    blocked at once (its cached upstream answer dropped), changed local data is answered,
    and a list that does not load keeps everything that runs."""
    fake = await fakes("tls", ssl_context=pki.server_context())
    ads = tmp_path / "ads.txt"
    ads.write_text("0.0.0.0 ads.example.com\n")
    path = tmp_path / "stub.toml"

    def config(address: str) -> None:
        write_config(path, tls_upstream(fake, pki), extra=(
            f'[local]\ndata = ["nas.home.arpa. A {address}"]\n'
            f'[[local.blocklist]]\nfile = "{ads}"'))

    config("192.168.1.10")
    s = await stub(path=path)
    assert (await s.ask(query("ads.example.com."))).rcode() == dns.rcode.NXDOMAIN
    assert (await s.ask(query("news.example.com."))).rcode() == dns.rcode.NOERROR  # cached
    assert str((await s.ask(query("nas.home.arpa."))).answer[0][0]) == "192.168.1.10"
    asked = len(fake.received)
    ads.write_text("0.0.0.0 ads.example.com\nnews.example.com\n")
    config("192.168.1.11")
    caplog.set_level(logging.INFO, logger="dnstls.service")
    assert s.service.reload()
    assert "local data changed" in caplog.text and "1 cached answers" in caplog.text
    assert (await s.ask(query("news.example.com."))).rcode() == dns.rcode.NXDOMAIN
    assert str((await s.ask(query("nas.home.arpa."))).answer[0][0]) == "192.168.1.11"
    assert len(fake.received) == asked  # neither was sent upstream
    # a list that does not load: one error naming it, and the running lists stay
    caplog.clear()
    caplog.set_level(logging.ERROR, logger="dnstls.stub")
    ads.write_text("news..example.com\n")
    assert not s.service.reload()
    assert "reload failed" in caplog.text and "local.blocklist[0].file" in caplog.text
    assert (await s.ask(query("news.example.com."))).rcode() == dns.rcode.NXDOMAIN
    assert (await s.ask(query("ads.example.com."))).rcode() == dns.rcode.NXDOMAIN


async def test_metrics(stub: StartStub, fakes: Fakes, pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    s = await stub({"metrics": "127.0.0.1:0",
                    "upstream_recursive_servers": [tls_upstream(fake, pki)]})
    await s.ask(query("m.example."))
    await s.ask(query("m.example."))
    await s.ask(query("m.example."), tcp=True)
    assert s.service.endpoints.metrics is not None
    host, port = s.service.endpoints.metrics
    text = (await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()
    )).decode()
    name = f"tls://127.0.0.1:{fake.port}#{NAME}"
    assert 'dnstls_queries_total{rcode="NOERROR",transport="udp"} 2.0' in text
    assert 'dnstls_queries_total{rcode="NOERROR",transport="tcp"} 1.0' in text
    assert f'dnstls_upstream_healthy{{upstream="{name}"}} 1.0' in text
    assert f'dnstls_upstream_backed_off{{upstream="{name}"}} 0.0' in text
    assert f'dnstls_upstream_opportunistic{{upstream="{name}"}} 0.0' in text
    assert f'dnstls_upstream_latency_count_total{{upstream="{name}"}} 1.0' in text
    assert f'dnstls_upstream_responses_total{{kind="NOERROR",upstream="{name}"}} 1.0' in text
    assert f'dnstls_upstream_handshakes_total{{upstream="{name}"}} 1.0' in text
    assert f'dnstls_upstream_queries_sent_total{{upstream="{name}"}} 1.0' in text
    # two cache hits: answered by the listeners' fast path from the stub's cache
    assert "dnstls_cache_hits_total 2.0" in text
    assert "# TYPE dnstls_cache_entries gauge" in text


async def test_default_ipv6_listen_is_skipped_when_unavailable(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import dnstls.stub as stub_mod

    monkeypatch.setattr(stub_mod, "ipv6_loopback_available", lambda: False)
    cfg = stub_config_from_data({"upstream_recursive_servers": [
        {"address_data": "127.0.0.1", "tls_auth_name": NAME}]})
    caplog.set_level(logging.WARNING)
    assert StubRuntime(cfg).listen_addresses() == ["127.0.0.1:53"]
    assert "not listening on [::1]:53" in caplog.text
    explicit = stub_config_from_data({"listen_addresses": ["[::1]:5353"],
                                      "upstream_recursive_servers": [
                                          {"address_data": "127.0.0.1", "tls_auth_name": NAME}]})
    assert StubRuntime(explicit).listen_addresses() == ["[::1]:5353"]


# ------------------------------------------------------------------------ the command

async def test_command_serves_reloads_on_sighup_and_stops_on_sigterm(
        fakes: Fakes, pki: TestPKI, tmp_path: Path) -> None:
    first = await fakes("tls", ssl_context=pki.server_context())
    second = await fakes("tls", ssl_context=pki.server_context())
    path = tmp_path / "stub.toml"
    # free for TCP *and* UDP (the stub binds both): a port free for UDP only could be a
    # client connection's TCP port of this busy process, and the stub would fail to start
    port = free_port()
    write_config(path, tls_upstream(first, pki))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dnstls", "stub", "--config", str(path),
        "--listen", f"127.0.0.1:{port}", "--no-cache",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        addr = ("127.0.0.1", port)
        response = None
        for _ in range(100):  # wait until it answers (bounded)
            try:
                response = dns.message.from_wire(
                    await udp_exchange(addr, query("one.example.").to_wire(), within=0.2))
                break
            except (TimeoutError, ConnectionRefusedError):
                if proc.returncode is not None:
                    break
                continue
        if response is None:  # say why: the stub's own words
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            assert proc.stderr is not None
            stderr = (await proc.stderr.read()).decode(errors="replace")
            pytest.fail(f"the stub never answered (exit {proc.returncode}):\n{stderr[-3000:]}")
        assert response.rcode() == dns.rcode.NOERROR
        write_config(path, tls_upstream(second, pki))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            await udp_exchange(addr, query(f"two{_}.example.").to_wire())
            if second.received:
                break
            await asyncio.sleep(0.02)
        assert second.received  # the reload took effect: every new query goes there
        before = (len(first.received), len(second.received))
        for i in range(3):
            await udp_exchange(addr, query(f"three{i}.example.").to_wire())
        assert (len(first.received), len(second.received)) == (before[0], before[1] + 3)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert f"DNS stub (UDP+TCP) on 127.0.0.1:{port}" in log
    assert f"upstream tls://127.0.0.1:{first.port}#{NAME} (name {NAME})" in log
    assert f"try: kdig @127.0.0.1 -p {port} example.com" in log
    assert "reloaded" in log and "stopped" in log


def test_banner_names_the_build_the_pins_and_how_to_query() -> None:
    from dnstls.service import Endpoints
    from dnstls.stub import banner

    pin = base64.b64encode(bytes(32)).decode()
    cfg = stub_config_from_data({"upstream_recursive_servers": [
        {"address_data": "127.0.0.1", "tls_auth_name": NAME, "tls_pubkey_pinset": [
            {"digest": "sha256", "value": pin}]},
        {"address_data": "127.0.0.2", "tls_pubkey_pinset": [pin]},
        {"address_data": "127.0.0.3", "tls_auth_name": NAME,
         "tls_pubkey_pinset_mode": "report", "tls_pubkey_pinset": [pin]}]})
    lines = banner(cfg, Endpoints(plain=[("127.0.0.1", 53), ("::1", 53)]))
    from dnstls.compiled import version_line

    assert lines[0] == version_line()
    assert lines[1:] == [
        "DNS stub (UDP+TCP) on 127.0.0.1:53",
        "DNS stub (UDP+TCP) on [::1]:53",
        f"upstream tls://127.0.0.1:853#{NAME} (name {NAME}; pins {pin})",
        f"upstream tls://127.0.0.2:853 (pins {pin})",
        f"upstream tls://127.0.0.3:853#{NAME} (name {NAME}; pins (report-only) {pin})",
        "try: kdig @127.0.0.1 example.com"]
    opportunistic = stub_config_from_data({
        "tls_authentication": "GETDNS_AUTHENTICATION_NONE",
        "upstream_recursive_servers": [{"address_data": "127.0.0.1"}]})
    assert banner(opportunistic, Endpoints(plain=[("127.0.0.1", 5353)]))[2:] == [
        "upstream tls://127.0.0.1:853 (opportunistic: NOT authenticated)",
        "try: kdig @127.0.0.1 -p 5353 example.com"]
