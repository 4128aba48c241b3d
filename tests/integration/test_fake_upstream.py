"""The test helpers' fake upstream itself (tests/fakes/upstream.py)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import dns.message
import dns.query
import pytest

from fakes import FakeUpstream

pytestmark = pytest.mark.timeout(60)


async def test_udp_and_tcp_on_one_port_survives_a_taken_tcp_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``also_tcp=True`` binds UDP on a free port, then TCP on the same number, which
    another program may hold: the fake used to fail its test with EADDRINUSE. It now
    takes a new port pair. The collision is forced: its first UDP bind lands on a port
    whose TCP side this test holds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        loop = asyncio.get_running_loop()
        real = loop.create_datagram_endpoint
        binds: list[int] = []

        async def first_on_the_taken_port(*args: Any, local_addr: tuple[str, int],
                                          **kw: Any) -> Any:
            if not binds:
                local_addr = (local_addr[0], port)
            transport, protocol = await real(*args, local_addr=local_addr, **kw)
            binds.append(transport.get_extra_info("sockname")[1])
            return transport, protocol

        monkeypatch.setattr(loop, "create_datagram_endpoint", first_on_the_taken_port)
        async with FakeUpstream("udp", also_tcp=True) as fake:
            assert binds[0] == port and fake.port == binds[-1] != port
            query = dns.message.make_query("example.com.", "A")
            for ask in (dns.query.udp, dns.query.tcp):
                answer = await asyncio.to_thread(ask, query, "127.0.0.1", port=fake.port,
                                                 timeout=5)
                assert answer.answer[0][0].to_text() == "192.0.2.1"
            assert len(fake.received) == 2


async def test_a_udp_and_tcp_fake_on_a_taken_port_it_was_given_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A port the test chose is not swapped for another: its bind error stands."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await FakeUpstream("udp", also_tcp=True, port=port).start()
