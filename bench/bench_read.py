"""Microseconds of CPU (or instructions) per read on a stream connection: the per-read
Python of conns500.

Usage: ``.venv/bin/python bench/bench_read.py [--rounds 7] [--conns 500] [--per-read 1]
[--shape keepalive] [--transport tls] [--lifecycle | --ir | --opcodes]``

500 :class:`StreamConnection` objects on fake transports (no TLS, no sockets); each round
feeds every connection one read of ``--per-read`` framed queries that are cache hits,
then lets the loop run the callbacks those reads scheduled (the write flush, if any).
Reports CPU time of the thread per read and per query, best round. What is left out is
the same for every variant: TLS record decryption/encryption, the read/write syscalls,
libuv. The fake transport's methods are C callables (``list.append``, ``int``, ...), as
uvloop's are, so a call the server makes or saves costs about what it costs for real.
The handler sees ``--transport tls`` by default (what a DoT listener passes it).
To compare two source trees, run it alternately with ``PYTHONPATH=TREE/src``.
``DNSTLS_BENCH_TYPED=100000`` gives the handler local data with a 100,000-name
blocklist (the reads stay cache hits); with ``DNSTLS_BENCH_BLOCKED=1`` too the reads ask
blocked names instead (local data's kept answers: :func:`typed_local`).

``--ir`` runs the same rounds under callgrind (``valgrind`` needed; ~1 minute) and
prints **instructions per read**, counted only inside the measured rounds
(``--toggle-collect=deque_extend*``: the rounds run from ``deque.extend``), so the figure
does not depend on the machine's other load; ``--trees A B`` compares source trees.
``--opcodes`` counts Python bytecodes per read by function (``sys.settrace``) to see
where a read's Python goes. ``--lifecycle`` instead times the Python of a whole
connection (``connection_made``, one query answered and written, the peer's close,
``connection_lost``): the per-connection part of a handshake's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from types import FrameType
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
    """Just enough of a transport; every method the server calls per read is C."""

    def __init__(self, port: int) -> None:
        self.peer = ("127.0.0.1", port)
        self.sink: list[bytes] = []  # one item per write: a TLS record each over TLS
        self.write = self.sink.append
        self.writelines = self.sink.extend
        self.get_write_buffer_size = int  # () -> 0
        self.is_closing = bool  # () -> False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def setup(conns: int, per_read: int, shape: str, transport: str, names: int = 1000,
                ) -> tuple[list[StreamConnection], list[bytes]]:
    cache, shapes = bench_fast.build(names)
    local, blocked = await typed_local(names)
    handler = QueryHandler(local or Refuse(), keepalive=10.0, cache=cache,
                           clock=lambda: 10.5, local=local)
    listener = StreamListener(handler, transport=Transport.TCP, tls=None,
                              limits=StreamLimits(),
                              admission=Admission(AdmissionLimits(
                                  max_connections=conns * 2,
                                  max_connections_per_client=conns * 2)))
    if transport == "tls":
        listener.transport = Transport.TLS  # what the handler sees; no TLS objects here
    connections = []
    for i in range(conns):
        conn = StreamConnection(listener)
        conn.connection_made(FakeTransport(10000 + i))  # type: ignore[arg-type]
        connections.append(conn)
    wires = (blocked or shapes)[shape]
    reads = [b"".join(framing.encode(wires[(i * per_read + j) % len(wires)])
                      for j in range(per_read)) for i in range(conns)]
    return connections, reads


async def typed_local(names: int) -> tuple[Any, dict[str, list[bytes]] | None]:
    """``DNSTLS_BENCH_TYPED=N``: the handler's local data has N blocked names
    (always_nxdomain, ``b<i>.block.test.``); the reads are still cache hits, unless
    ``DNSTLS_BENCH_BLOCKED=1``: then they ask blocked names, whose answers local data
    has kept (the blocked-name fast path). Unset: no local data, as before."""
    n = int(os.environ.get("DNSTLS_BENCH_TYPED", "0"))
    if not n:
        return None, None
    import dns.edns
    import dns.message

    from dnstls.resolver.base import Request
    from dnstls.resolver.local import LocalData

    labels = (b"b%d" % i for i in range(n))
    local = LocalData(Refuse(), typed={
        bytes((len(label),)) + label + b"\x05block\x04test\x00": "always_nxdomain"
        for label in labels})
    if not os.environ.get("DNSTLS_BENCH_BLOCKED"):
        return local, None
    shapes: dict[str, list[bytes]] = {"plain": [], "keepalive": [], "padded": []}
    for i in range(names):
        name = f"b{i}.block.test."
        shapes["plain"].append(dns.message.make_query(name, "A", use_edns=False).to_wire())
        shapes["keepalive"].append(dns.message.make_query(
            name, "A", use_edns=0, options=[dns.edns.GenericOption(11, b"")]).to_wire())
        shapes["padded"].append(dns.message.make_query(name, "A", use_edns=0,
                                                       pad=128).to_wire())
        await local.resolve(Request(dns.message.from_wire(shapes["plain"][-1]),
                                    Transport.TLS, None, 1e9))
    return local, shapes


def drain(connections: list[StreamConnection]) -> int:
    written = 0
    for conn in connections:
        sink = conn.transport.sink  # type: ignore[union-attr]
        written += len(sink)
        sink.clear()
    return written


async def rounds_of(connections: list[StreamConnection], reads: list[bytes],
                    rounds: int) -> None:
    for _ in range(rounds):
        for conn, data in zip(connections, reads, strict=True):
            conn.data_received(data)
        await asyncio.sleep(0)


async def run(conns: int, per_read: int, rounds: int, shape: str, transport: str,
              ) -> tuple[float, int]:
    connections, reads = await setup(conns, per_read, shape, transport)
    best = float("inf")
    written = 0
    for _ in range(rounds):
        start = time.thread_time()
        await rounds_of(connections, reads, 10)
        best = min(best, time.thread_time() - start)
        written += drain(connections)
    return best / (10 * conns) * 1e6, written


def ir_child(conns: int, per_read: int, rounds: int, shape: str, transport: str) -> None:
    """The process callgrind counts: one warm-up round, then ``rounds`` in deque.extend
    (200 names: building the cache with dnspython is slow under valgrind)."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    connections, reads = loop.run_until_complete(
        setup(conns, per_read, shape, transport, 200))
    loop.run_until_complete(rounds_of(connections, reads, 1))
    warm = drain(connections)
    sink: deque[object] = deque(maxlen=0)
    sink.extend(map(loop.run_until_complete, [rounds_of(connections, reads, rounds)]))
    written = drain(connections)
    if warm != conns * per_read or written != rounds * conns * per_read:
        raise SystemExit(f"expected one write per answer: {warm}, {written}")
    print(f"reads {rounds * conns}")


def ir(tree: str, conns: int, per_read: int, rounds: int, shape: str,
       transport: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve() / "src"))
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=deque_extend*", f"--callgrind-out-file={tmp}/cg.out",
             sys.executable, __file__, "--ir-child", "--conns", str(conns),
             "--per-read", str(per_read), "--rounds", str(rounds), "--shape", shape,
             "--transport", transport],
            env=env, capture_output=True, text=True, timeout=900, check=False)
    refs = re.search(r"refs:\s+([\d,]+)", done.stderr)
    reads = re.search(r"reads (\d+)", done.stdout)
    if refs is None or reads is None:
        return f"{tree} failed: {(done.stdout + done.stderr).strip()[-300:]}"
    per = int(refs.group(1).replace(",", "")) / int(reads.group(1))
    return (f"{tree:30} {per_read:3} quer{'y' if per_read == 1 else 'ies'}/read "
            f"{per:9.0f} instructions/read {per / per_read:8.0f} /query")


def opcodes(conns: int, per_read: int, shape: str, transport: str) -> None:
    """Bytecodes executed per read, by function (sys.settrace opcode events)."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    connections, reads = loop.run_until_complete(setup(conns, per_read, shape, transport))
    loop.run_until_complete(rounds_of(connections, reads, 1))
    counts: Counter[str] = Counter()

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return tracer

    coro = rounds_of(connections, reads, 1)
    sys.settrace(tracer)
    try:
        loop.run_until_complete(coro)
    finally:
        sys.settrace(None)
    total = sum(counts.values())
    print(f"{total / conns:.0f} bytecodes per read ({per_read} per read)")
    for name, n in counts.most_common(30):
        print(f"{n / conns:8.1f}  {name}")


async def lifecycle(conns: int, rounds: int) -> float:
    """µs of Python per connection: made, one query answered, closed by the peer."""
    cache, shapes = bench_fast.build(1000)
    handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, clock=lambda: 10.5)
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
        for transport in transports:
            transport.sink.clear()
    assert not listener.connections
    return best / conns * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--per-read", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shape", choices=("plain", "keepalive", "padded"),
                        default="keepalive")
    parser.add_argument("--transport", choices=("tls", "tcp"), default="tls")
    parser.add_argument("--lifecycle", action="store_true",
                        help="µs per connection: made, one query, closed by the peer")
    parser.add_argument("--ir", action="store_true",
                        help="instructions per read under callgrind (load-independent)")
    parser.add_argument("--trees", nargs="+", default=[str(Path(__file__).resolve().parents[1])],
                        help="with --ir: source trees to compare (TREE/src)")
    parser.add_argument("--opcodes", action="store_true",
                        help="Python bytecodes per read, by function")
    parser.add_argument("--ir-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if args.ir_child:
        ir_child(args.conns, args.per_read, args.rounds, args.shape, args.transport)
        return
    if args.ir:
        for tree in args.trees:
            print(ir(tree, args.conns, args.per_read, args.rounds, args.shape,
                     args.transport), flush=True)
        return
    if args.opcodes:
        opcodes(args.conns, args.per_read, args.shape, args.transport)
        return
    if args.lifecycle:
        us = uvloop.run(lifecycle(args.conns, args.rounds))
        print(f"per connection (made, one query, closed): {us:6.2f} µs")
        return
    us, written = uvloop.run(run(args.conns, args.per_read, args.rounds, args.shape,
                                 args.transport))
    print(f"per read ({args.per_read} quer{'y' if args.per_read == 1 else 'ies'}): "
          f"{us:6.2f} µs, {us / args.per_read:6.2f} µs/query ({written} writes)")


if __name__ == "__main__":
    main()
