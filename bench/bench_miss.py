"""Microseconds of CPU per forwarded query on the wire-level miss path, no TLS, no dnsperf.

Usage: ``.venv/bin/python bench/bench_miss.py [--rounds 7] [--queries 4000] [--part all]``

Parts (CPU time of the main thread, best round; other load on the machine does not count):

* ``respond``: :meth:`Cache.respond_wire` for an nsd-like answer (A, NS, glue, OPT);
* ``fake``: :meth:`QueryHandler.route` + :meth:`QueryHandler.answer_wire` per query,
  256 in flight, through WireForwarder, Forwarder and the cache, with an upstream whose
  ``exchange_wire`` answers from a loop callback (the asyncio bookkeeping of the path);
* ``udp``: the same with the real :class:`UdpUpstream` against a responder process on
  loopback (its CPU is not counted), i.e. plus the socket work;
* ``fakecb``, ``udpcb``: as ``fake`` and ``udp``, through
  :meth:`QueryHandler.forward_wire` (no task, no coroutines: what the DoT listener
  does) instead of ``answer_wire`` in a task.
* ``respond0``: ``respond`` with caching off (:meth:`Cache.storing_nothing`, the
  no-cache stub and ``serve`` without a cache);
* ``stub``: what ``dnstls stub --no-cache`` does per query, minus the sockets: a
  :class:`UdpListener` (fake datagram transport) → handler → WireForwarder →
  Forwarder → a real :class:`StreamUpstream` connection whose fake transport answers
  every write from a loop callback (one TCP read of all the answers), 256 in flight.
  Whatever path the tree takes (task or callbacks) is what is measured.

``--zones corp.example.,home.arpa.`` puts the forwarder behind a
:class:`~dnstls.resolver.forward_zones.ZoneRouter` with those forward zones (for the
``fake``/``udp`` parts; every query is for a name under none of them, ``*.bench.test.``):
the cost of ``[[forward_zone]]`` for the other names.

``--no-chase`` leaves the wire path without its :class:`~dnstls.resolver.chase.CnameChase`
(the service always sets one; every answer is checked for an incomplete CNAME chain):
that check's cost, on the same build. ``--minimal`` keeps and renders minimal responses
(the default of ``serve`` and ``stub`` since session 4). Every query is for a new name (a
cache miss). To compare two source trees, run it alternately with ``PYTHONPATH=TREE/src``.
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import socket
import time
from dataclasses import replace
from typing import Any

import dns.message
import dns.name
import dns.rrset
import uvloop

from dnstls.net.handler import QueryHandler
from dnstls.net.udp_upstream import UdpUpstream
from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import read_query
from dnstls.resolver.base import Refuse
from dnstls.resolver.cache import Cache
from dnstls.resolver.forward import Forwarder
from dnstls.resolver.wire import WireForwarder
from dnstls.upstreams import parse_upstream_uri

try:  # as the service wires it (session 11); an older tree has no chase
    from dnstls.resolver.chase import CnameChase
except ImportError:
    CnameChase = None
#: False with ``--no-chase``: the wire path without a CnameChase (its cost, same build)
CHASE = True

#: ``--zones``: forward zone names (none: the forwarder alone, as the service without zones)
ZONES: list[str] = []

#: ``--minimal``: the caches keep and render minimal responses (cache.minimal_responses,
#: the service's default since session 4); without it, every section as before.
MINIMAL = False


def _cache() -> Cache:
    cache = Cache(max_entries=200_000, max_bytes=256 << 20)
    cache.minimal_responses = MINIMAL  # an attribute: older trees ignore it
    return cache


def _nothing() -> Cache:
    cache = Cache.storing_nothing()
    cache.minimal_responses = MINIMAL
    return cache


def answer_for(query_wire: bytes) -> bytes:
    """An nsd-like response: A in the answer, NS in authority, glue, OPT (as dnspython)."""
    q = dns.message.from_wire(query_wire)
    r = make_response(q)
    name = q.question[0].name
    r.answer.append(dns.rrset.from_text(name, 86400, "IN", "A", "10.1.2.3"))
    r.authority.append(dns.rrset.from_text("bench.test.", 86400, "IN", "NS", "ns1.bench.test."))
    r.additional.append(dns.rrset.from_text("ns1.bench.test.", 86400, "IN", "A", "127.0.0.1"))
    return r.to_wire()


def queries(start: int, n: int) -> list[bytes]:
    return [dns.message.make_query(f"n{i}.bench.test.", "A", use_edns=False).to_wire()
            for i in range(start, start + n)]


def best(rounds: list[float]) -> float:
    return min(rounds)


def bench_respond(n: int, rounds: int) -> float:
    wires = queries(0, n)
    keys = []
    answers = []
    for w in wires:
        query = read_query(w)
        assert query is not None
        keys.append(query)
        answers.append(answer_for(w))
    results = []
    for _ in range(rounds):
        cache = _cache()
        start = time.thread_time()
        for q, a in zip(keys, answers, strict=True):
            if cache.respond_wire(q.key, a, 10.0, query_id=q.id, rd=q.rd, qname=q.qname,
                                  edns=q.edns) is None:
                raise SystemExit("rejected")
        results.append((time.thread_time() - start) / n * 1e6)
    return best(results)


def bench_respond_nothing(n: int, rounds: int) -> float:
    """respond_wire with caching off (Cache.storing_nothing)."""
    wires = queries(0, n)
    pairs = []
    for w in wires:
        query = read_query(w)
        assert query is not None
        pairs.append((query, answer_for(w)))
    results = []
    for _ in range(rounds):
        cache = _nothing()
        start = time.thread_time()
        for q, a in pairs:
            if cache.respond_wire(q.key, a, 10.0, query_id=q.id, rd=q.rd, qname=q.qname,
                                  edns=q.edns) is None:
                raise SystemExit("rejected")
        results.append((time.thread_time() - start) / n * 1e6)
    return best(results)


class _AnsweringTransport:
    """A stream upstream's transport: each write is answered (ID patched, framed) by one
    ``data_received`` from a loop callback, like one TCP read of the answers."""

    def __init__(self, conn: Any, answers: dict[bytes, bytes]) -> None:
        self.conn = conn
        self.answers = answers
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        out = []
        pos = 0
        while pos < len(data):
            size = int.from_bytes(data[pos:pos + 2], "big")
            frame = data[pos + 2:pos + 2 + size]
            pos += 2 + size
            answer = frame[:2] + self.answers[question_of(frame)][2:]
            out.append(len(answer).to_bytes(2, "big") + answer)
        self.loop.call_soon(self.conn.data_received, b"".join(out))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Datagrams:
    """The UDP listener's transport: counts answers, wakes the bench after the last."""

    def __init__(self) -> None:
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    def sendto(self, data: bytes, addr: Any) -> None:
        if data[3] & 0xF:
            raise SystemExit(f"rcode {data[3] & 0xF}")
        self.left -= 1
        if not self.left and self.done is not None:
            self.done.set_result(None)

    def is_closing(self) -> bool:
        return False


async def bench_stub(n: int, rounds: int, profiler: Any = None) -> float:
    """``profiler`` (a cProfile.Profile) is enabled around the timed part only."""
    from dnstls.net.pool import StreamUpstream, UpstreamConnection
    from dnstls.net.udp import UdpListener

    loop = asyncio.get_running_loop()
    results = []
    for r in range(rounds):
        wires = [dns.message.make_query(f"n{i}.bench.test.", "A", use_edns=0,
                                        payload=1232).to_wire()
                 for i in range((r + 1) * n, (r + 2) * n)]
        answers = {question_of(w): answer_for(w) for w in wires}
        # one connection takes all 256 in flight (a second one would really connect)
        upstream = StreamUpstream(replace(parse_upstream_uri("tcp://127.0.0.1:53"),
                                          max_queries_per_connection=1000))
        conn = UpstreamConnection(upstream)
        conn.connection_made(_AnsweringTransport(conn, answers))  # type: ignore[arg-type]
        conn.state.connected(upstream.clock())
        upstream.state.connections.append(conn)
        forwarder = Forwarder([upstream], clock=loop.time)
        wire = WireForwarder(forwarder, _nothing(), loop.time)
        handler = QueryHandler(Refuse(), cache=None, wire=wire, clock=loop.time)
        listener = UdpListener(handler)
        datagrams = _Datagrams()
        listener.connection_made(datagrams)  # type: ignore[arg-type]
        addr = ("127.0.0.1", 5353)
        if profiler is not None:
            profiler.enable()
        start = time.thread_time()
        for i in range(0, n, 256):
            batch = wires[i:i + 256]
            datagrams.left = len(batch)
            datagrams.done = loop.create_future()
            for w in batch:
                listener.datagram_received(w, addr)
            await datagrams.done
        results.append((time.thread_time() - start) / n * 1e6)
        if profiler is not None:
            profiler.disable()
        conn.state.closed("bench over")
    return best(results)


class FakeUpstream:
    name = "fake"
    timeout = 2.0

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.answers: dict[bytes, bytes] = {}

    async def exchange_wire(self, question: bytes, *, deadline: float, flags: int,
                            payload: int, do: bool) -> bytes:
        future: asyncio.Future[bytes] = self.loop.create_future()
        self.loop.call_soon(future.set_result, self.answers[question])
        return await future

    def start_wire(self, question: bytes, *, deadline: float, flags: int, payload: int,
                   do: bool, callback: Any) -> None:
        self.loop.call_soon(callback, self.answers[question], None)


def question_of(wire: bytes) -> bytes:
    """The question section's name, type and class (lower case): the responder's key."""
    end = 12
    while wire[end]:
        end += 1 + wire[end]
    return wire[12:end + 5].lower()


def prebuilt_answers(start: int, n: int) -> dict[bytes, bytes]:
    """nsd-like answers (with an OPT, as nsd answers an EDNS query) by question, built
    before the responder forks: building one with dnspython takes ~100 µs, which made
    the responder the bottleneck and the server idle-wake once per datagram."""
    out = {}
    for i in range(start, start + n):
        w = dns.message.make_query(f"n{i}.bench.test.", "A", use_edns=0,
                                   payload=1232).to_wire()
        out[question_of(w)] = answer_for(w)
    return out


def responder(sock: socket.socket, answers: dict[bytes, bytes]) -> None:
    """The loopback upstream, in a child process (its CPU is not the server's): the
    prebuilt answer with the query's ID, a few µs per query, like nsd."""
    while True:
        data, addr = sock.recvfrom(4096)
        if data == b"stop":
            return
        sock.sendto(data[:2] + answers[question_of(data)][2:], addr)


async def bench_path(n: int, rounds: int, kind: str, profiler: Any = None) -> float:
    """``profiler`` (a cProfile.Profile) is enabled around the timed part only."""
    loop = asyncio.get_running_loop()
    results = []
    child = None
    answers: dict[bytes, bytes] = {}
    if kind in ("udp", "udpcb"):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        upstream: object = UdpUpstream(parse_upstream_uri(f"udp://127.0.0.1:{port}"))
        prebuilt: dict[bytes, bytes] = {}
        for r in range(rounds):
            prebuilt.update(prebuilt_answers((r + 1) * n, n))
        child = multiprocessing.get_context("fork").Process(target=responder,
                                                            args=(server, prebuilt))
        child.start()
    else:
        upstream = FakeUpstream()
        answers = upstream.answers  # type: ignore[attr-defined]
    try:
        for r in range(rounds):
            wires = queries((r + 1) * n, n)
            if kind in ("fake", "fakecb"):
                for w in wires:
                    answers[question_of(w)] = answer_for(w)
            cache = _cache()
            forwarder: Any = Forwarder([upstream], clock=loop.time)  # type: ignore[list-item]
            if ZONES:
                from dnstls.resolver.forward_zones import ZoneRouter

                forwarder = ZoneRouter(forwarder, [
                    (dns.name.from_text(z), Forwarder([FakeUpstream()],  # type: ignore[list-item]
                                                      clock=loop.time)) for z in ZONES])
            wire = WireForwarder(forwarder, cache, loop.time)
            if CnameChase is not None and CHASE:  # the service's wire path checks answers
                wire.chase = CnameChase(forwarder)
            handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, wire=wire,
                                   clock=loop.time)
            tls = Transport.TLS

            async def one(w: bytes, handler: QueryHandler = handler,
                          tls: Transport = tls) -> None:
                routed = handler.route(w, tls)
                assert routed is not None and not isinstance(routed, bytes)
                out = await handler.answer_wire(routed, w, tls)
                assert out[3] & 0xF == 0

            def one_cb(w: bytes, done: asyncio.Future[None], left: list[int],
                       handler: QueryHandler = handler, tls: Transport = tls) -> None:
                def deliver(out: bytes) -> None:
                    assert out[3] & 0xF == 0
                    left[0] -= 1
                    if not left[0]:
                        done.set_result(None)

                routed = handler.route(w, tls)
                assert routed is not None and not isinstance(routed, bytes)
                if not handler.forward_wire(routed, w, tls, deliver):
                    raise SystemExit("forward_wire did not take the query")

            if profiler is not None:
                profiler.enable()
            start = time.thread_time()
            for i in range(0, n, 256):
                if kind.endswith("cb"):
                    done: asyncio.Future[None] = loop.create_future()
                    batch = wires[i:i + 256]
                    left = [len(batch)]
                    for w in batch:
                        one_cb(w, done, left)
                    await done
                else:
                    await asyncio.gather(*(one(w) for w in wires[i:i + 256]))
            if profiler is not None:
                profiler.disable()
            results.append((time.thread_time() - start) / n * 1e6)
    finally:
        if child is not None:
            server.sendto(b"stop", ("127.0.0.1", port))
            child.join(5)
    return best(results)


def main() -> None:
    gc.freeze()  # as dnstls.net.loop does for a serving process
    gc.set_threshold(20_000, 20, 20)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--part", choices=["all", "respond", "respond0", "fake", "fakecb",
                                           "udp", "udpcb", "stub"],
                        default="all")
    parser.add_argument("--minimal", action="store_true",
                        help="minimal responses (drop the NS and glue of the answers)")
    parser.add_argument("--zones", default="",
                        help="forward zones, comma-separated (queries are under none)")
    parser.add_argument("--no-chase", action="store_true",
                        help="no CNAME chase on the wire path (the service always has one)")
    args = parser.parse_args()
    global MINIMAL, CHASE
    MINIMAL = args.minimal
    CHASE = not args.no_chase
    ZONES[:] = [z for z in args.zones.split(",") if z]
    if args.part in ("all", "respond"):
        print(f"respond_wire   {bench_respond(args.queries, args.rounds):7.2f} µs/query")
    if args.part in ("all", "respond0"):
        us = bench_respond_nothing(args.queries, args.rounds)
        print(f"respond (none) {us:7.2f} µs/query")
    if args.part in ("all", "stub"):
        print(f"stub (no cache) {uvloop.run(bench_stub(args.queries, args.rounds)):6.2f} µs/query")
    for kind in ("fake", "fakecb", "udp", "udpcb"):
        if args.part in ("all", kind):
            us = uvloop.run(bench_path(args.queries, args.rounds, kind))
            print(f"path ({kind:4})    {us:7.2f} µs/query")


if __name__ == "__main__":
    main()
