"""UdpUpstream.start_wire's deadlines: one timer for every exchange in flight (a queue in
deadline order) instead of a ``call_at`` per query. Each exchange still ends at its own
deadline; an exchange whose deadline is earlier than the last one queued gets a timer of
its own; answered exchanges leave the queue within ``DEADLINE_SWEEP``. And the query
datagram start_wire builds is byte for byte what :func:`prepare_query_wire` builds."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from dnstls.compiled import is_compiled
from dnstls.errors import QueryTimeout
from dnstls.net import udp_upstream
from dnstls.net.udp_upstream import UdpUpstream
from dnstls.proto.upstream import prepare_query_wire
from dnstls.upstreams import parse_upstream_uri


class Recorder(asyncio.DatagramProtocol):
    """Keeps every datagram; answers it unless ``silent`` (or its name starts with
    ``quiet``)."""

    def __init__(self) -> None:
        self.silent = False
        self.datagrams: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)
        query = dns.message.from_wire(data)
        if self.silent or query.question[0].name.labels[0].startswith(b"quiet"):
            return
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                                   "192.0.2.1"))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Recorder, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def question(name: str) -> bytes:
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire + b"\x00\x01\x00\x01"


def upstream(port: int) -> UdpUpstream:
    return UdpUpstream(parse_upstream_uri(f"udp://127.0.0.1:{port}"))


def begin(up: UdpUpstream, name: str, deadline: float, *, flags: int = 0x0100,
          payload: int = 1232, do: bool = False) -> asyncio.Future[tuple[float, Any]]:
    """start_wire; the future gets (loop time of the callback, answer or exception)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[float, Any]] = loop.create_future()
    up.start_wire(question(name), deadline=deadline, flags=flags, payload=payload, do=do,
                  callback=lambda data, exc: future.set_result((loop.time(), exc or data)))
    return future


@pytest.fixture
def slow_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep period far longer than the test: a deadline kept late by a bug would show
    as seconds late, not as tens of milliseconds a loaded machine can also add."""
    monkeypatch.setattr(udp_upstream, "DEADLINE_SWEEP", 10.0)


@pytest.mark.usefixtures("slow_sweep")
async def test_each_exchange_times_out_at_its_own_deadline_with_one_timer(
        recorder: tuple[Recorder, int]) -> None:
    proto, port = recorder
    proto.silent = True
    up = upstream(port)
    loop = asyncio.get_running_loop()
    now = loop.time()
    deadlines = [now + 0.05, now + 0.12, now + 0.12, now + 0.2]
    futures = [begin(up, f"t{i}.example.", d) for i, d in enumerate(deadlines)]
    assert up._due_timer is not None and len(up._due) == 4
    assert all(e.timer is None for e in up._due)  # no call_at of their own
    for deadline, future in zip(deadlines, futures, strict=True):
        at, outcome = await future
        assert isinstance(outcome, QueryTimeout)
        # not before its deadline (within the loop clock's resolution), not much after
        assert deadline - 0.002 <= at < deadline + 0.5
    assert up.statistics()["timeouts"] == 4 and up.statistics()["sockets_idle"] == 0
    assert not up._due and up._due_timer is None  # nothing left: no timer armed
    await up.aclose()


@pytest.mark.usefixtures("slow_sweep")
async def test_an_earlier_deadline_than_the_queued_ones_gets_its_own_timer(
        recorder: tuple[Recorder, int]) -> None:
    proto, port = recorder
    proto.silent = True
    up = upstream(port)
    now = asyncio.get_running_loop().time()
    late = begin(up, "late.example.", now + 1.0)
    early = begin(up, "early.example.", now + 0.05)
    assert len(up._due) == 1  # only the first is queued
    at, outcome = await early
    assert isinstance(outcome, QueryTimeout)
    assert now + 0.048 <= at < now + 0.6
    assert not late.done()
    at, outcome = await late
    assert isinstance(outcome, QueryTimeout) and at >= now + 0.998
    await up.aclose()


async def test_answered_exchanges_leave_the_queue_and_let_go_of_their_callbacks(
        recorder: tuple[Recorder, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp_upstream, "DEADLINE_SWEEP", 10.0)  # the test sweeps itself
    _, port = recorder
    up = upstream(port)
    loop = asyncio.get_running_loop()
    head = begin(up, "quiet0.example.", loop.time() + 0.4)  # never answered
    futures = [begin(up, f"a{i}.example.", loop.time() + 30) for i in range(5)]
    queued = list(up._due)
    assert len(queued) == 6
    for future in futures:
        _, outcome = await future
        assert isinstance(outcome, bytes) and outcome[3] & 0xF == 0
    # answered, but queued behind the silent head until a sweep: holding nothing of
    # the query's path meanwhile
    assert all(e.finished and e.callback is None and e.port is None for e in queued[1:])
    assert len(up._due) == 6
    assert up._due_timer is not None
    up._due_timer.cancel()
    up._expire_due()  # what the timer runs (at least every DEADLINE_SWEEP)
    assert list(up._due) == queued[:1] and up._due_timer is not None
    _, outcome = await head  # the re-armed timer still comes at the head's deadline
    assert isinstance(outcome, QueryTimeout)
    assert not up._due
    # in order, an answer takes its own entry off the queue's head at once
    for i in range(3):
        _, outcome = await begin(up, f"b{i}.example.", loop.time() + 30)
        assert isinstance(outcome, bytes) and not up._due
    await up.aclose()


async def test_a_failing_callback_is_logged_and_the_socket_reader_goes_on(
        recorder: tuple[Recorder, int], caplog: pytest.LogCaptureFixture) -> None:
    _, port = recorder
    up = upstream(port)
    loop = asyncio.get_running_loop()
    called = loop.create_future()

    def broken(data: bytes | None, exc: BaseException | None) -> None:
        called.set_result(data)
        raise RuntimeError("bug in the answer path")

    with caplog.at_level(logging.ERROR):
        up.start_wire(question("bug.example."), deadline=loop.time() + 5, flags=0x0100,
                      payload=1232, do=False, callback=broken)
        assert isinstance(await called, bytes)
        await asyncio.sleep(0)
    assert "internal error while answering a forwarded query" in caplog.text
    _, outcome = await begin(up, "after.example.", loop.time() + 5)  # still works
    assert isinstance(outcome, bytes)
    await up.aclose()


@pytest.mark.parametrize(("flags", "payload", "do"), [
    (0x0100, 1232, False), (0x0100, 4096, True), (0x0130, 512, True),  # RD, AD, CD
    (0xFFFF, 1400, False), (0x0000, 1232, True)])
async def test_start_wire_sends_what_prepare_query_wire_builds(
        recorder: tuple[Recorder, int], flags: int, payload: int, do: bool) -> None:
    proto, port = recorder
    up = upstream(port)
    loop = asyncio.get_running_loop()
    for name in ("q1.example.", "a.longer.name.example.", "q1.example."):  # tail kept
        _, outcome = await begin(up, name, loop.time() + 5, flags=flags, payload=payload,
                                 do=do)
        assert isinstance(outcome, bytes)
        sent = proto.datagrams[-1]
        qid = sent[0] << 8 | sent[1]
        assert sent == prepare_query_wire(question(name), qid=qid, flags=flags,
                                          payload=payload, do=do)
    await up.aclose()


@pytest.mark.skipif(is_compiled("dnstls.net.udp_upstream"),
                    reason="builds _Exchange without an upstream and a port (None), which "
                           "compiled code rejects (the pure-Python run covers it)")
def test_exchange_accept_matches_the_reference_check() -> None:
    """_Exchange.accept (inline) accepts exactly what exchange_wire's check does: our ID,
    then check_response_wire. Every byte of real answers mutated, every truncation."""
    import random

    from dnstls.net.udp_upstream import _Exchange
    from dnstls.proto.upstream import check_response_wire

    rng = random.Random(5452)
    tried = accepted = 0
    for name, rdtype in (("a.example.", "A"), ("svc.example.", "HTTPS"), ("x.", "TXT")):
        qid = rng.randrange(1 << 16)
        query = dns.message.make_query(name, rdtype)
        query.id = qid
        response = dns.message.make_response(query)
        if rdtype == "A":
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.1"))
        wire = response.to_wire()
        q = question(name)[:-4] + dns.rdatatype.from_text(rdtype).to_bytes(2, "big") + b"\0\1"
        exchange = _Exchange()  # accept reads these two only
        exchange.qid = qid
        exchange.question = q

        def reference(data: bytes, qid: int = qid, q: bytes = q) -> bytes | None:
            if len(data) < 12 or (data[0] << 8 | data[1]) != qid:
                return None
            return data if check_response_wire(data, q) is None else None

        candidates = [wire[:n] for n in range(len(wire) + 1)]
        for pos in range(len(wire)):
            for value in {0, 1, 0x20, 0x41, 0x61, 0x80, 0xFF, wire[pos] ^ 0x20,
                          rng.randrange(256)}:
                candidates.append(wire[:pos] + bytes((value,)) + wire[pos + 1:])
        upper = bytearray(wire)
        upper[12:12 + len(q) - 4] = bytes(upper[12:12 + len(q) - 4]).upper()  # 0x20 case
        candidates.append(bytes(upper))
        for data in candidates:
            tried += 1
            assert exchange.accept(data) == reference(data), data.hex()
            accepted += exchange.accept(data) is not None
    assert tried > 800 and accepted > 10


@pytest.mark.usefixtures("slow_sweep")
async def test_a_query_started_by_an_expiry_does_not_delay_the_next_deadline(
        recorder: tuple[Recorder, int]) -> None:
    """The sweep runs callbacks; one that starts a query arms the timer while older
    exchanges are still queued: the timer must still come at the oldest deadline."""
    proto, port = recorder
    proto.silent = True
    up = upstream(port)
    loop = asyncio.get_running_loop()
    now = loop.time()
    later: list[asyncio.Future[tuple[float, Any]]] = []

    def expired(data: bytes | None, exc: BaseException | None) -> None:
        later.append(begin(up, "c.example.", loop.time() + 1.2))

    up.start_wire(question("a.example."), deadline=now + 0.05, flags=0x0100, payload=1232,
                  do=False, callback=expired)
    b = begin(up, "b.example.", now + 0.15)
    at, outcome = await b
    assert isinstance(outcome, QueryTimeout)
    assert now + 0.148 <= at < now + 0.8  # not at the new query's deadline (~1.25 s)
    assert len(later) == 1 and not later[0].done()
    _, outcome = await later[0]
    assert isinstance(outcome, QueryTimeout)
    await up.aclose()


async def test_an_icmp_error_fails_the_exchange_at_once_and_retires_the_socket() -> None:
    """Nothing listens on the port: the connected socket's recv reports the ICMP port
    unreachable, start_wire's callback gets a NetworkError long before the deadline."""
    from dnstls.errors import NetworkError

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # the port is free now: a datagram to it draws an ICMP error
    up = upstream(port)
    loop = asyncio.get_running_loop()
    now = loop.time()
    at, outcome = await begin(up, "refused.example.", now + 5)
    assert isinstance(outcome, NetworkError) and at < now + 2
    stats = up.statistics()
    assert stats["connection_errors"] == 1 and stats["sockets_idle"] == 0
    assert not up._due
    await up.aclose()


def _cut_answer(query: dns.message.Message) -> bytes:
    """An answer to ``query`` whose A record's RDATA is cut short: it does not parse."""
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                               "192.0.2.1"))
    return response.to_wire()[:-2]


def test_message_path_accept_fails_a_malformed_answer_and_ignores_forgeries() -> None:
    """UdpUpstream._accept (the message path): a datagram with our ID, QR=1 and our
    question whose body does not parse is a MalformedAnswer (the attempt ends); under
    another ID or question it is ignored like any forgery (None). Before: None for all."""
    from dnstls.errors import MalformedAnswer
    from dnstls.proto.upstream import question_key

    query = dns.message.make_query("a.example.", "A")
    query.id = 0x1234
    expected = question_key(query)
    with pytest.raises(MalformedAnswer):
        UdpUpstream._accept(_cut_answer(query), 0x1234, expected)
    assert UdpUpstream._accept(_cut_answer(query), 0x4321, expected) is None
    other = dns.message.make_query("b.example.", "A")
    other.id = 0x1234
    assert UdpUpstream._accept(_cut_answer(other), 0x1234, expected) is None
    aaaa = dns.message.make_query("a.example.", "AAAA")
    aaaa.id = 0x1234
    assert UdpUpstream._accept(_cut_answer(aaaa), 0x1234, expected) is None
    # a TC=1 answer cut short is still a truncated answer (asked again over TCP)
    cut = bytearray(_cut_answer(query))
    cut[2] |= 0x02
    accepted = UdpUpstream._accept(bytes(cut), 0x1234, expected)
    assert accepted is not None and accepted.flags & dns.flags.TC


async def test_message_path_exchange_ends_at_once_on_a_malformed_answer() -> None:
    """exchange() over UDP: the malformed answer ends the attempt (MalformedAnswer,
    counted, the socket not reused) instead of waiting for the deadline."""
    from dnstls.errors import MalformedAnswer

    loop = asyncio.get_running_loop()

    class Broken(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(_cut_answer(dns.message.from_wire(data)), addr)

    transport, _ = await loop.create_datagram_endpoint(Broken, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    up = UdpUpstream(parse_upstream_uri(f"udp://127.0.0.1:{port}"))
    try:
        query = dns.message.make_query("a.example.", "A")
        with pytest.raises(MalformedAnswer, match=f"malformed answer from {up.name}"):
            await up.exchange(query, deadline=loop.time() + 30)
        stats = up.statistics()
        assert stats["malformed_responses"] == 1 and stats["forged_responses"] == 0
        assert stats["sockets_idle"] == 0
    finally:
        await up.aclose()
        transport.close()
