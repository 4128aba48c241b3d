"""UdpUpstream's port pool (RFC 5452): one query per socket at a time, a random idle
socket per query, sockets retired after a few queries, an age, or anything unexpected.

A responder on loopback records the source port of every query it gets."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import dns.message
import dns.name
import dns.rrset
import pytest

from dnstls.errors import NetworkError, QueryTimeout
from dnstls.net.udp_upstream import UdpUpstream
from dnstls.upstreams import parse_upstream_uri


class Responder(asyncio.DatagramProtocol):
    """Answers every query after ``delay``; optionally a forgery (wrong ID) first, a
    duplicate answer ``late`` seconds later, or nothing at all."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.forge_first = False
        self.late: float | None = None
        self.silent = False
        self.ports: list[int] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.ports.append(addr[1])
        if self.silent:
            return
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                                   "192.0.2.1"))
        wire = response.to_wire()
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        if self.forge_first:
            forged = bytearray(wire)
            forged[0] ^= 0xFF  # wrong ID, from the right address and port
            self.transport.sendto(bytes(forged), addr)
        loop.call_later(self.delay, self.transport.sendto, wire, addr)
        if self.late is not None:
            loop.call_later(self.delay + self.late, self.transport.sendto, wire, addr)


@pytest.fixture
async def responder() -> AsyncIterator[tuple[Responder, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Responder, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def question(name: str) -> bytes:
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire + b"\x00\x01\x00\x01"


async def ask(up: UdpUpstream, name: str, within: float = 2.0) -> bytes:
    deadline = asyncio.get_running_loop().time() + within
    return await up.exchange_wire(question(name), deadline=deadline, flags=0x0100,
                                  payload=1232, do=False)


def upstream(port: int, **kwargs: Any) -> UdpUpstream:
    return UdpUpstream(parse_upstream_uri(f"udp://127.0.0.1:{port}"), **kwargs)


async def test_queries_in_flight_never_share_a_port(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.delay = 0.05
    up = upstream(port)
    for round_ in range(3):  # the second and third rounds take sockets from the pool
        proto.ports.clear()
        answers = await asyncio.gather(*(ask(up, f"n{i}.r{round_}.example.") for i in range(40)))
        assert all(a[3] & 0xF == 0 for a in answers)
        assert len(set(proto.ports)) == 40, round_
    assert up.statistics()["sockets_opened"] == 40
    await up.aclose()
    assert up.statistics()["sockets_idle"] == 0


async def test_a_socket_serves_a_bounded_number_of_queries(
        responder: tuple[Responder, int]) -> None:
    proto, port = responder
    up = upstream(port, port_uses=4)
    for i in range(12):
        await ask(up, f"s{i}.example.")
    uses = Counter(proto.ports)
    assert sorted(uses.values()) == [4, 4, 4]
    assert up.statistics()["sockets_opened"] == 3
    await up.aclose()


async def test_sockets_are_retired_by_age_also_when_idle(
        responder: tuple[Responder, int]) -> None:
    proto, port = responder
    up = upstream(port, port_age=0.1)
    await ask(up, "a1.example.")
    await ask(up, "a2.example.")
    assert proto.ports[0] == proto.ports[1]
    assert up.statistics()["sockets_idle"] == 1
    await asyncio.sleep(0.25)  # the sweep closes the idle socket past its age
    assert up.statistics()["sockets_idle"] == 0
    await ask(up, "a3.example.")
    assert proto.ports[2] != proto.ports[0]
    await up.aclose()


async def test_idle_sockets_are_chosen_at_random(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.delay = 0.02
    up = upstream(port, port_uses=1000)
    await asyncio.gather(*(ask(up, f"w{i}.example.") for i in range(8)))  # 8 idle now
    proto.ports.clear()
    for i in range(40):
        await ask(up, f"r{i}.example.")
    assert up.statistics()["sockets_opened"] == 8
    # a fixed order (LIFO or FIFO) would use one or cycle all 8 in turn
    assert len(set(proto.ports)) >= 4
    assert proto.ports[:8] != proto.ports[8:16]
    await up.aclose()


async def test_a_mismatched_datagram_retires_the_socket(
        responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.forge_first = True
    up = upstream(port)
    for i in range(3):
        answer = await ask(up, f"f{i}.example.")
        assert answer[3] & 0xF == 0
    stats = up.statistics()
    assert stats["forged_responses"] == 3
    assert len(set(proto.ports)) == 3 and stats["sockets_opened"] == 3
    assert stats["sockets_idle"] == 0
    await up.aclose()


async def test_a_datagram_to_an_idle_socket_retires_it(
        responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.late = 0.05  # the same answer again, after the query has finished
    up = upstream(port)
    await ask(up, "d1.example.")
    assert up.statistics()["sockets_idle"] == 1
    await asyncio.sleep(0.15)
    stats = up.statistics()
    assert stats["stray_datagrams"] == 1 and stats["sockets_idle"] == 0
    proto.late = None
    await ask(up, "d2.example.")
    assert proto.ports[0] != proto.ports[1]
    await up.aclose()


async def test_a_timed_out_socket_is_not_reused(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.silent = True
    up = upstream(port)
    with pytest.raises(QueryTimeout):
        await ask(up, "t1.example.", within=0.1)
    assert up.statistics()["sockets_idle"] == 0
    proto.silent = False
    await ask(up, "t2.example.")
    assert proto.ports[0] != proto.ports[1]
    assert up.statistics()["timeouts"] == 1
    await up.aclose()


async def test_a_cancelled_query_does_not_return_its_socket(
        responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.delay = 0.2
    up = upstream(port)
    task = asyncio.ensure_future(ask(up, "c1.example."))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert up.statistics()["sockets_idle"] == 0
    await up.aclose()


async def start(up: UdpUpstream, name: str, within: float = 2.0) -> Any:
    """start_wire's outcome: the answer bytes or the exception passed to the callback."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    up.start_wire(question(name), deadline=loop.time() + within, flags=0x0100, payload=1232,
                  do=False, callback=lambda data, exc: future.set_result(exc or data))
    assert not future.done()  # never called back from start_wire itself
    return await future


async def test_start_wire_answers_and_shares_the_pool(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.forge_first = True
    up = upstream(port)
    answer = await start(up, "cb1.example.")
    assert isinstance(answer, bytes) and answer[3] & 0xF == 0
    assert up.statistics()["forged_responses"] == 1
    assert up.statistics()["sockets_idle"] == 0  # the forgery retired its socket
    proto.forge_first = False
    await start(up, "cb2.example.")
    answer = await ask(up, "cb3.example.")  # the coroutine path takes the same socket
    assert answer[3] & 0xF == 0
    assert proto.ports[1] == proto.ports[2] != proto.ports[0]
    await up.aclose()


async def test_start_wire_times_out_and_retires_the_socket(
        responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.silent = True
    up = upstream(port)
    outcome = await start(up, "cbt.example.", within=0.1)
    assert isinstance(outcome, QueryTimeout)
    stats = up.statistics()
    assert stats["timeouts"] == 1 and stats["sockets_idle"] == 0
    await up.aclose()


def open_fds() -> int:
    import os
    return len(os.listdir("/proc/self/fd"))


async def test_aclose_fails_queries_in_flight_and_closes_their_sockets(
        responder: tuple[Responder, int]) -> None:
    """Closing the upstream (the service stopping) while queries wait for a silent
    upstream: both paths get an error at once (not at their deadline, 30 s away), and
    every socket is closed -- those in use too, not only the idle ones."""
    proto, port = responder
    proto.silent = True
    up = upstream(port)
    before = open_fds()
    wire = asyncio.ensure_future(start(up, "wire-inflight.example.", within=30))
    coro = asyncio.ensure_future(ask(up, "coro-inflight.example.", within=30))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(proto.ports) == 2:
            break
    assert up.statistics()["sockets_busy"] == 2
    assert open_fds() == before + 2
    await up.aclose()
    assert open_fds() == before
    assert up.statistics()["sockets_busy"] == 0
    outcome = await asyncio.wait_for(wire, 1)
    assert isinstance(outcome, NetworkError) and "closed" in str(outcome)
    with pytest.raises(NetworkError, match="closed"):
        await asyncio.wait_for(coro, 1)
    assert open_fds() == before
