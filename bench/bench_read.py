"""Microseconds of CPU per read on a stream connection: the per-read Python of conns500.

Usage: ``.venv/bin/python bench/bench_read.py [--rounds 7] [--conns 500] [--per-read 1]
[--lifecycle]``

500 :class:`StreamConnection` objects on fake transports (no TLS, no sockets); each round
feeds every connection one read of ``--per-read`` framed queries that are cache hits,
then lets the loop run the callbacks those reads scheduled (the write flush). Reports CPU
time of the thread per read and per query, best round. What is left out is the same for
every variant: TLS record decryption/encryption, the read/write syscalls, libuv.
To compare two source trees, run it alternately with ``PYTHONPATH=TREE/src``.
``--lifecycle`` instead times the Python of a whole connection (``connection_made``,
one query answered and written, the peer's close, ``connection_lost``): the
per-connection part of a handshake's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fast

from dnstls.net.handler import QueryHandler
from dnstls.net.server import StreamConnection, StreamListener
from dnstls.proto import framing
from dnstls.proto.admission import Admission, AdmissionLimits
from dnstls.proto.answers import Transport
from dnstls.proto.stream import StreamLimits
from dnstls.resolver.base import Refuse


class FakeTransport:
    def __init__(self, port: int) -> None:
        self.peer = ("127.0.0.1", port)
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def run(conns: int, per_read: int, rounds: int) -> tuple[float, int]:
    cache, shapes = bench_fast.build(1000)
    handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, clock=lambda: 10.0)
    listener = StreamListener(handler, transport=Transport.TCP, tls=None,
                              limits=StreamLimits(),
                              admission=Admission(AdmissionLimits(
                                  max_connections=conns * 2,
                                  max_connections_per_client=conns * 2)))
    connections = []
    for i in range(conns):
        conn = StreamConnection(listener)
        conn.connection_made(FakeTransport(10000 + i))  # type: ignore[arg-type]
        connections.append(conn)
    wires = shapes["keepalive"]
    reads = [b"".join(framing.encode(wires[(i * per_read + j) % len(wires)])
                      for j in range(per_read)) for i in range(conns)]
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(10):
            for conn, data in zip(connections, reads, strict=True):
                conn.data_received(data)
            await asyncio.sleep(0)
        best = min(best, time.thread_time() - start)
    written = sum(c.transport.written for c in connections)  # type: ignore[attr-defined]
    return best / (10 * conns) * 1e6, written


async def lifecycle(conns: int, rounds: int) -> float:
    """µs of Python per connection: made, one query answered, closed by the peer."""
    cache, shapes = bench_fast.build(1000)
    handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, clock=lambda: 10.0)
    listener = StreamListener(handler, transport=Transport.TCP, tls=None,
                              limits=StreamLimits(),
                              admission=Admission(AdmissionLimits(
                                  max_connections=conns * 2,
                                  max_connections_per_client=conns * 2)))
    data = framing.encode(shapes["keepalive"][0])
    transports = [FakeTransport(10000 + i) for i in range(conns)]
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for transport in transports:
            conn = StreamConnection(listener)
            conn.connection_made(transport)  # type: ignore[arg-type]
            conn.data_received(data)
            await asyncio.sleep(0)  # the write
            conn.eof_received()
            conn.connection_lost(None)
        best = min(best, time.thread_time() - start)
    assert not listener.connections
    return best / conns * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--per-read", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--lifecycle", action="store_true",
                        help="µs per connection: made, one query, closed by the peer")
    args = parser.parse_args()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if args.lifecycle:
        us = uvloop.run(lifecycle(args.conns, args.rounds))
        print(f"per connection (made, one query, closed): {us:6.2f} µs")
        return
    us, written = uvloop.run(run(args.conns, args.per_read, args.rounds))
    print(f"per read ({args.per_read} quer{'y' if args.per_read == 1 else 'ies'}): "
          f"{us:6.2f} µs, {us / args.per_read:6.2f} µs/query ({written} writes)")


if __name__ == "__main__":
    main()
