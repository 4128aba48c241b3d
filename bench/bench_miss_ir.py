"""Instructions of Python per forwarded query on the wire-level miss path (callgrind).

Usage::

    .venv/bin/python bench/bench_miss_ir.py [--trees TREE ...] [--kinds udp fake]
                                            [--queries 2048] [--rounds 3] [--opcodes]

What ``dnstls serve`` runs for a DoT cache miss forwarded to one UDP upstream, from the
handler down and back up, with the same objects the service wires together
(:class:`LocalData` without zones, :class:`Cache`, :class:`Forwarder`,
:class:`WireForwarder`, :class:`QueryHandler`):
``QueryHandler.route`` → ``forward_wire`` → ``WireForwarder.start`` →
``Forwarder.start_wire`` → the upstream, then the answer from the upstream's reader
callback → validation, cache insert, render → ``deliver``. No TLS, no listener (the
stream's read and write side is ``bench_read.py``'s).

* ``udp``: the real :class:`UdpUpstream` (port pool, IDs, deadline timer, reader
  callback) on fake sockets: ``send`` is ``list.append``, ``recv`` hands back the
  prepared answer; the reader callback is called as uvloop would (ports live forever
  here so that the wall clock under valgrind does not decide when sockets are opened;
  one in 16 queries opens one, as in the service);
* ``fake``: an upstream whose ``start_wire`` keeps the callback, called later with the
  answer (the layers above the transport only);
* ``stream``: ``udp`` with the DoT listener's side added: the queries arrive as reads
  of ``PER_READ`` framed queries on :class:`StreamConnection` objects (fake transports
  whose ``write``/``writelines`` are ``list`` methods, no TLS), the answers go through
  ``_wire_answered`` and each connection's ``_flush`` (counted in the answer phase).
  That is the whole Python of a DoT miss but uvloop's SSL protocol.
* ``stub``: ``dnstls stub --no-cache`` (``Cache.storing_nothing``): the queries arrive
  as datagrams at a :class:`UdpListener` (a fake transport whose ``sendto`` is a list
  method), go through the handler, :class:`WireForwarder`, :class:`StubForwarding`
  (one generation) and :class:`Forwarder` to a real :class:`StreamUpstream` with one
  connected :class:`UpstreamConnection` on a fake transport (TCP, no TLS); the answer
  phase runs the connection's batched write, then one ``data_received`` with all the
  answers framed (one read), up to the listener's ``sendto``.

Each round sends 256 queries (new names, nsd-like answers: A, NS, glue, OPT echo when
asked), then delivers their answers, both from ``deque.extend`` so callgrind
(``--toggle-collect=deque_extend*``) counts only that. Unlike CPU time, the count does
not move with the machine's load. ``--opcodes`` prints Python bytecodes per query by
function instead (``sys.settrace``; no valgrind). ``DNSTLS_BENCH_TYPED=100000`` in the
environment gives local data a 100,000-name blocklist (:func:`typed_zones`). Not a
test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import operator
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import starmap
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

BATCH = 256
PER_READ = 8  # queries per read and answers per write (a live miss run: ~6.6)
#: How a phase runs its calls: ``list`` while warming up (not counted), then
#: :func:`_counted` (``deque.extend``, the one C function callgrind collects in).
consume: list[Callable[[Any], Any]] = [list]


def _counted(calls: Any) -> Any:
    out: deque[Any] = deque()
    out.extend(calls)
    return out


def _answer_for(query_wire: bytes) -> bytes:
    import dns.message
    import dns.rrset

    from dnstls.proto.answers import make_response

    q = dns.message.from_wire(query_wire)
    r = make_response(q)
    name = q.question[0].name
    r.answer.append(dns.rrset.from_text(name, 86400, "IN", "A", "10.1.2.3"))
    r.authority.append(dns.rrset.from_text("bench.test.", 86400, "IN", "NS",
                                           "ns1.bench.test."))
    r.additional.append(dns.rrset.from_text("ns1.bench.test.", 86400, "IN", "A",
                                            "127.0.0.1"))
    return r.to_wire()


def _question_of(wire: bytes) -> bytes:
    end = 12
    while wire[end]:
        end += 1 + wire[end]
    return wire[12:end + 5].lower()


class _FakeSock:
    """A connected UDP socket: ``send`` keeps the datagram, ``recv`` returns ``inbox``."""

    made: ClassVar[list[_FakeSock]] = []

    def __init__(self, family: int, kind: int) -> None:
        self.real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a pollable fd
        self.sent: list[bytes] = []
        self.send = self.sent.append
        self.inbox: bytes | None = None
        _FakeSock.made.append(self)

    def fileno(self) -> int:
        return self.real.fileno()

    def connect(self, address: Any) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def recv(self, size: int) -> bytes:
        data = self.inbox
        if data is None:
            raise BlockingIOError
        self.inbox = None
        return data

    def close(self) -> None:
        self.real.close()


class _FakeSocketModule:
    socket = _FakeSock


def build(kind: str, n: int) -> tuple[Callable[[], None], Callable[[], None], list[Any]]:
    """(send phase, answer phase, delivered answers) for ``n`` queries of one round."""
    import dns.message

    from dnstls.net import udp_upstream
    from dnstls.net.handler import QueryHandler
    from dnstls.proto.answers import Transport
    from dnstls.resolver.base import Refuse
    from dnstls.resolver.cache import Cache
    from dnstls.resolver.forward import Forwarder
    from dnstls.resolver.local import LocalData
    from dnstls.resolver.wire import WireForwarder
    from dnstls.upstreams import parse_upstream_uri

    loop = asyncio.get_running_loop()
    if kind == "respond":
        return _build_respond(n)
    if kind == "stub":
        return _build_stub(n)
    readers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
    answers: dict[bytes, bytes] = {}
    pending: list[tuple[Callable[..., Any], bytes, None]] = []
    upstream: Any
    if kind in ("udp", "stream"):
        udp_upstream._socket = _FakeSocketModule  # type: ignore[assignment]
        # compiled (mypyc) code keeps its own reference to the _socket module and looks
        # up only ``socket`` on it: replace that too, by a subclass whose direct calls
        # make fake sockets (socket.socket's __init__ looks _socket.socket up as well)
        import _socket

        real = _socket.socket

        class _SocketType(real):  # type: ignore[valid-type, misc]
            def __new__(cls, *args: Any) -> Any:
                return _FakeSock(*args) if cls is _SocketType else real.__new__(cls, *args)

        _socket.socket = _SocketType  # type: ignore[misc]
        real_add = loop.add_reader

        def add_reader(fd: int, callback: Callable[..., Any], *args: Any) -> None:
            readers[fd] = (callback, args)
            real_add(fd, callback, *args)

        loop.add_reader = add_reader  # type: ignore[method-assign]
        upstream = udp_upstream.UdpUpstream(parse_upstream_uri("udp://127.0.0.1:53"),
                                            port_age=1e9)
    else:
        class FakeUpstream:
            name = "fake"
            timeout = 2.0

            def start_wire(self, question: bytes, *, deadline: float, flags: int,
                           payload: int, do: bool, callback: Any) -> None:
                pending.append((callback, answers[question], None))

        upstream = FakeUpstream()
    cache = Cache(max_entries=1_000_000, max_bytes=1 << 30)
    local = LocalData(Refuse(), **typed_zones())
    forwarder = Forwarder([upstream], clock=loop.time)
    wire = WireForwarder(forwarder, cache, loop.time, is_local=local.covers_key)
    try:  # as the service wires it (session 11): every answer is checked for a chase
        from dnstls.resolver.chase import CnameChase
    except ImportError:  # an older tree
        pass
    else:
        wire.chase = CnameChase(forwarder)
    handler = QueryHandler(local, keepalive=10.0, cache=cache, wire=wire, clock=loop.time,
                           local=local, query_timeout=1e6)
    delivered: list[bytes] = []
    deliver = delivered.append
    tls = Transport.TLS
    counter = [0]

    def one(w: bytes) -> None:
        routed = handler.route(w, tls)
        if not handler.forward_wire(routed, w, tls, deliver):  # type: ignore[arg-type]
            raise SystemExit("forward_wire did not take the query")

    connections: list[Any] = []
    if kind == "stream":
        from bench_read import FakeTransport

        from dnstls.net.server import StreamConnection, StreamListener
        from dnstls.proto import framing
        from dnstls.proto.admission import Admission, AdmissionLimits
        from dnstls.proto.stream import StreamLimits

        listener = StreamListener(handler, transport=Transport.TCP, tls=None,
                                  limits=StreamLimits(),
                                  admission=Admission(AdmissionLimits()))
        listener.transport = tls  # what a DoT listener passes the handler; no TLS here
        for i in range(BATCH // PER_READ):
            conn = StreamConnection(listener)
            conn.connection_made(FakeTransport(10000 + i))  # type: ignore[arg-type]
            connections.append(conn)

    batches: list[list[bytes]] = []
    for start in range(0, n, BATCH):
        wires = []
        for i in range(start, min(n, start + BATCH)):
            w = dns.message.make_query(f"n{i}.bench.test.", "A", use_edns=False).to_wire()
            wires.append(w)
            answers[_question_of(w)] = _answer_for(w)
        batches.append(wires)
    calls: list[tuple[Callable[..., Any], Any]] = []
    if kind == "stream":  # one read of PER_READ framed queries per connection
        reads = [[(conn.data_received, b"".join(map(framing.encode,
                                                     wires[i * PER_READ:(i + 1) * PER_READ])))
                  for i, conn in enumerate(connections)] for wires in batches]

        def send_phase() -> None:
            consume[0](starmap(operator.call, reads[counter[0]]))
    else:
        def send_phase() -> None:
            consume[0](map(one, batches[counter[0]]))

    def answer_phase() -> None:
        calls.clear()
        if kind in ("udp", "stream"):
            for sock in _FakeSock.made:
                if sock.sent:
                    data = sock.sent.pop()
                    sock.inbox = data[:2] + answers[_question_of(data)][2:]
                    callback, args = readers[sock.fileno()]
                    calls.append((callback, *args))
        else:
            calls.extend(pending)
            pending.clear()
        # the stream's writes, which the loop runs from call_soon after the answers
        calls.extend((conn._flush,) for conn in connections)
        consume[0](starmap(operator.call, calls))
        for conn in connections:  # what the connections wrote, as answers
            sink = conn.transport.sink
            delivered.extend(item[2:] for item in sink)
            sink.clear()
        counter[0] += 1

    return send_phase, answer_phase, delivered


def _build_respond(n: int) -> tuple[Callable[[], None], Callable[[], None], list[Any]]:
    """``Cache.respond_wire`` alone (validate, store, render), as the wire path calls it."""
    import dns.message

    from dnstls.proto.cachekey import read_query
    from dnstls.resolver.cache import Cache

    cache = Cache(max_entries=1_000_000, max_bytes=1 << 30)
    batches: list[list[tuple[Any, ...]]] = []
    for start in range(0, n, BATCH):
        batch = []
        for i in range(start, min(n, start + BATCH)):
            w = dns.message.make_query(f"n{i}.bench.test.", "A", use_edns=False).to_wire()
            q = read_query(w)
            assert q is not None
            batch.append((q.key, _answer_for(w), 10.0, q.id, True, q.qname, q.edns, b"", 0))
        batches.append(batch)
    delivered: list[Any] = []
    counter = [0]

    def send_phase() -> None:
        pass

    respond = cache.respond_wire

    def one(a: tuple[Any, ...]) -> Any:  # keywords: main's respond_wire takes no more
        return respond(a[0], a[1], a[2], query_id=a[3], rd=a[4], qname=a[5], edns=a[6],
                       options=a[7], pad_block=a[8])

    def answer_phase() -> None:
        delivered.extend(consume[0](map(one, batches[counter[0]])))
        counter[0] += 1

    return send_phase, answer_phase, delivered


class _StubGeneration:
    """What :class:`StubForwarding` needs of its current generation."""

    def __init__(self, forwarder: Any) -> None:
        self.forwarder = forwarder
        self.in_flight = 0
        self.retired = False
        self.closing: Any = None


class _Datagrams:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False


def _build_stub(n: int) -> tuple[Callable[[], None], Callable[[], None], list[Any]]:
    """``dnstls stub --no-cache``'s forwarded query (module docstring: ``stub``)."""
    from dataclasses import replace

    import dns.message
    from bench_read import FakeTransport

    from dnstls.net.handler import QueryHandler
    from dnstls.net.pool import StreamUpstream, UpstreamConnection
    from dnstls.net.udp import UdpListener
    from dnstls.proto import framing
    from dnstls.resolver.base import Refuse
    from dnstls.resolver.cache import Cache
    from dnstls.resolver.forward import Forwarder
    from dnstls.resolver.local import LocalData
    from dnstls.resolver.wire import WireForwarder
    from dnstls.stub import StubForwarding
    from dnstls.upstreams import parse_upstream_uri

    loop = asyncio.get_running_loop()
    upstream = StreamUpstream(replace(parse_upstream_uri("tcp://127.0.0.1:53"),
                                      max_queries_per_connection=1000,
                                      idle_timeout=1e9))
    conn = UpstreamConnection(upstream)
    transport = FakeTransport(53)
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.state.connected(upstream.clock())
    upstream.state.connections.append(conn)
    forwarding = StubForwarding.__new__(StubForwarding)
    forwarding.loop = loop
    forwarding.clock = loop.time
    forwarding.cache = None
    generation = _StubGeneration(Forwarder([upstream], clock=loop.time))
    if hasattr(forwarding, "_adopt"):  # since session 5 (flat)
        forwarding._adopt(generation)  # type: ignore[arg-type]
    else:
        forwarding.current = generation  # type: ignore[assignment]
    forwarding.old = []
    local = LocalData(Refuse())
    wire = WireForwarder(forwarding, Cache.storing_nothing(), loop.time,
                         is_local=local.covers_key)
    handler = QueryHandler(local, cache=None, wire=wire, clock=loop.time, local=local,
                           query_timeout=1e6)
    listener = UdpListener(handler)
    datagrams = _Datagrams()
    listener.connection_made(datagrams)  # type: ignore[arg-type]
    addr = ("127.0.0.1", 5353)
    answers: dict[bytes, bytes] = {}
    batches: list[list[tuple[bytes, tuple[str, int]]]] = []
    for start in range(0, n, BATCH):
        batch = []
        for i in range(start, min(n, start + BATCH)):
            w = dns.message.make_query(f"n{i}.bench.test.", "A", use_edns=0,
                                       payload=1232).to_wire()
            answers[_question_of(w)] = _answer_for(w)
            batch.append((w, addr))
        batches.append(batch)
    counter = [0]
    delivered = datagrams.sent

    def send_phase() -> None:
        consume[0](starmap(listener.datagram_received, batches[counter[0]]))

    def answer_phase() -> None:
        consume[0](starmap(operator.call, [(conn._flush,)]))  # the batched write
        out = []
        for data in transport.sink:
            pos = 0
            while pos < len(data):
                size = int.from_bytes(data[pos:pos + 2], "big")
                frame = data[pos + 2:pos + 2 + size]
                pos += 2 + size
                out.append(framing.encode(frame[:2] + answers[_question_of(frame)][2:]))
        transport.sink.clear()
        consume[0](starmap(operator.call, [(conn.data_received, b"".join(out))]))
        counter[0] += 1

    return send_phase, answer_phase, delivered


def typed_zones() -> dict[str, Any]:
    """``DNSTLS_BENCH_TYPED=N``: LocalData with N blocked names (always_nxdomain,
    ``b<i>.block.test.``; the queries are under none of them), as a 100,000-name
    blocklist: what every forwarded query's covers_key then costs. Unset: none (and
    the ``typed`` argument is not passed: older trees have none)."""
    n = int(os.environ.get("DNSTLS_BENCH_TYPED", "0"))
    if not n:
        return {}
    labels = (b"b%d" % i for i in range(n))
    return {"typed": {bytes((len(label),)) + label + b"\x05block\x04test\x00":
                      "always_nxdomain" for label in labels}}


def child(kind: str, n: int, rounds: int, opcodes: bool) -> None:
    import uvloop

    async def main() -> None:
        send_phase, answer_phase, delivered = build(kind, n * (rounds + 1))
        per_round = n // BATCH
        for _ in range(per_round):  # warm up: the port pool grows, code paths run once
            send_phase()
            answer_phase()
        consume[0] = _counted
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        delivered.clear()
        counts: Counter[str] = Counter()

        def tracer(frame: FrameType, event: str, arg: object) -> Any:
            frame.f_trace_opcodes = True
            if event == "opcode":
                code = frame.f_code
                counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
            return tracer

        if opcodes:
            sys.settrace(tracer)
        for _ in range(per_round * rounds):
            send_phase()
            answer_phase()
        sys.settrace(None)
        bad = [d for d in delivered if d[3] & 0xF]
        if len(delivered) != per_round * rounds * BATCH or bad:
            raise SystemExit(f"{len(delivered)} answers, {len(bad)} not NOERROR")
        total = len(delivered)
        print(f"queries {total}")
        if opcodes:
            print(f"{sum(counts.values()) / total:.0f} bytecodes per query")
            for name, count in counts.most_common(40):
                print(f"{count / total:8.1f}  {name}")

    uvloop.run(main())


def measure(tree: str, kind: str, n: int, rounds: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve() / "src"))
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=deque_extend*", f"--callgrind-out-file={tmp}/cg.out",
             sys.executable, __file__, "--child", kind, str(n), str(rounds)],
            env=env, capture_output=True, text=True, timeout=1800, check=False)
    refs = re.search(r"refs:\s+([\d,]+)", done.stderr)
    queries = re.search(r"queries (\d+)", done.stdout)
    if refs is None or queries is None:
        return f"{tree} {kind}: failed ({done.stdout.strip()[-200:]} {done.stderr.strip()[-300:]})"
    per = int(refs.group(1).replace(",", "")) / int(queries.group(1))
    return f"{tree:30} {kind:5} {per:8.0f} instructions/query"


def main() -> None:
    if len(sys.argv) >= 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), len(sys.argv) > 5)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[str(Path(__file__).resolve().parents[1])])
    parser.add_argument("--kinds", nargs="+", default=["udp", "fake"],
                        choices=["udp", "fake", "respond", "stream", "stub"])
    parser.add_argument("--queries", type=int, default=2048, help="per round (x256)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--opcodes", action="store_true")
    args = parser.parse_args()
    if args.opcodes:
        for tree in args.trees:
            for kind in args.kinds:
                print(f"== {tree} {kind}", flush=True)
                subprocess.run([sys.executable, __file__, "--child", kind, str(args.queries),
                                str(args.rounds), "opcodes"], check=True,
                               env=dict(os.environ, PYTHONPATH=str(Path(tree).resolve() / "src")))
        return
    jobs = [(tree, kind) for kind in args.kinds for tree in args.trees]
    with ThreadPoolExecutor(2) as pool:
        for line in pool.map(lambda job: measure(job[0], job[1], args.queries, args.rounds),
                             jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
