"""Stopping the service while forwarded queries wait for a stalled upstream.

Every socket the service opened is closed when ``aclose`` returns -- also the UDP
sockets of queries still in flight (only the idle ones were, and the others leaked
until their deadline fired, or for good when the loop stopped first)."""

from __future__ import annotations

import asyncio
import os

import dns.message
import pytest
from conftest import Fakes, ServeFactory, udp_spec

from fakes.upstream import Behavior


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_aclose_closes_the_sockets_of_queries_in_flight(
        serve: ServeFactory, fakes: Fakes, log_queries: bool) -> None:
    fake = await fakes("udp", behavior=Behavior.STALL)
    before = open_fds()
    served = await serve(upstreams=[udp_spec(fake)],
                         server={"log_queries": log_queries})
    reader, writer = await asyncio.open_connection(*served.plain_addr)
    queries = [dns.message.make_query(f"n{i}.stall.example.", "A") for i in range(3)]
    for query in queries:
        wire = query.to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
    await writer.drain()
    for _ in range(200):
        if len(fake.received) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(fake.received) == 3
    await asyncio.wait_for(served.service.aclose(), 2)
    # the connection was closed by the server, not left waiting for answers
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    await writer.wait_closed()
    assert open_fds() == before
