"""Fuzz target: what upstreams send back -> transport matching -> forwarder -> cache ->
the client's answer, on both forwarding paths.

One input is ``choice + mode + response``: ``choice`` picks one of :data:`QUERIES` (the
client's query: plain, EDNS, DO, padded with keepalive, CD/AD, mixed case, several
QTYPEs); ``mode``'s bits 0-1 the client's transport (UDP, TCP, TLS, TLS), 0x10 the
exact-answer memo, 0x20 minimal responses off, 0x40 a UDP upstream (else TCP/TLS),
0x80 serve-stale, ``mode >> 2`` where the upstream's byte stream is split and
``mode >> 4`` how far the fake clock moves before the second query (:data:`STEPS`);
``response`` is the upstream's answer to the query the forwarder sends (the fake
transports draw the message ID :data:`UPSTREAM_ID` for every upstream query, so a seed
can match it and a mutation can break it).

The real code runs from the listener's handler down to the transports' sans-IO
matching; the only fakes are the sockets (:class:`FakeUpstream`: the bytes of one
datagram or of one TCP/TLS stream) and the clock:

* the wire path: :meth:`QueryHandler.route` -> :meth:`QueryHandler.forward_wire` ->
  :class:`WireForwarder` -> :meth:`Forwarder.start_wire` -> the UDP transport's check
  (:class:`dnstls.net.udp_upstream._Exchange`, TC=1 retried over the stream) or a
  :class:`ConnectionState` (:meth:`start_query_wire`, :meth:`receive`) -> the cache's
  :meth:`respond_wire` -> the handler's truncation and error answers;
* the message path (what the listener does with a query the fast path cannot read, the
  stub's and ``dnstls.Client``'s parse): :meth:`QueryHandler.answer` ->
  :class:`CacheStage` -> :meth:`Forwarder.resolve` -> :meth:`UdpUpstream._accept` or a
  :class:`ConnectionState` (:meth:`start_query`, :meth:`receive`) -> :func:`finalize`.

Each path answers the query, then answers it again after the clock moved (a cache hit,
or a new exchange once the entry expired). The invariants are the product's promises:

* nothing raises out of either path (no internal error either: a response the code did
  not foresee is an error answer, not a crash);
* the client always gets a response that parses, with its own ID, QR=1 and its own
  question (name bytes as sent, 0x20), never another one;
* a response whose ID, QR bit or question does not match the query is not accepted as
  the answer: the client then gets SERVFAIL, with an Extended DNS Error when it sent EDNS;
* every TTL served is within [0, 2^31-1] (RFC 2181 §8), and a cached answer's TTLs
  decrease with the time it spent in the cache (RFC 1035 §3.2.1);
* a UDP answer fits the client's UDP size (RFC 6891 §7; truncated with TC=1 when the
  answer does not); a stream answer fits the 2-byte length prefix (RFC 7766); a TLS
  answer to a padded query is a multiple of 468 bytes (RFC 8467 §4.1).

Run with atheris (coverage-guided)::

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_upstream_path.py fuzz/corpus/upstream_path -max_total_time=600

or, where atheris is not available (and on the compiled build), with random mutations
of the corpus::

    .venv/bin/python fuzz/fuzz_upstream_path.py --random 200000 --seed 1

The seeds are written by ``fuzz/make_upstream_corpus.py``. Failures are written as
``crash-*`` files; add minimized ones to ``fuzz/corpus/upstream_path/`` (replayed by
tests/robustness/test_fuzz_corpus.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import campaign  # this folder: also when the tests load the harness by its path

# coverage instrumentation only when run as the atheris fuzzer, never when imported
with campaign.instrumented(__name__):
    import dns.edns
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode

    from dnstls.errors import MalformedAnswer, NetworkError, ProtocolError, QueryTimeout
    from dnstls.net.handler import QueryHandler
    from dnstls.net.udp_upstream import UdpUpstream, _Exchange
    from dnstls.proto import edns
    from dnstls.proto.answers import MIN_UDP, Transport, parse_query
    from dnstls.proto.cachekey import read_query
    from dnstls.proto.framing import MAX_MESSAGE
    from dnstls.proto.upstream import (
        ConnectionState,
        QueryRejected,
        ResponseIgnored,
        ResponseMalformed,
        ResponseMatched,
        StreamBroken,
        WireMatched,
        question_key,
    )
    from dnstls.resolver.cache import Cache, CacheStage
    from dnstls.resolver.forward import Forwarder
    from dnstls.resolver.wire import WireForwarder

#: The message ID the fake transports give every upstream query.
UPSTREAM_ID = 0xBEEF
CLIENT_ID = 0x1234
KEEPALIVE = dns.edns.GenericOption(edns.KEEPALIVE, b"")
#: Seconds the clock moves before the second query, chosen by the mode byte.
STEPS = (1, 7, 299, 3601, 86401, 0)
MAX_TTL = 0x7FFFFFFF


def _query(name: str, rdtype: str = "A", *, flags: int = dns.flags.RD, **kw: Any) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kw)
    msg.id = CLIENT_ID
    msg.flags = flags
    return msg.to_wire()


#: The client queries an input chooses from (its first byte, modulo their number).
QUERIES: list[bytes] = [
    _query("www.example.com"),
    _query("www.example.com", use_edns=0, payload=1232),
    _query("www.example.com", "AAAA", use_edns=0, payload=4096, want_dnssec=True),
    _query("www.example.com", "TXT", use_edns=0, payload=1232, pad=128,
           options=[KEEPALIVE]),
    _query("example.com", "MX", flags=dns.flags.RD | dns.flags.CD | dns.flags.AD),
    _query("WwW.ExAmPlE.CoM", "NS", use_edns=0, payload=512),
    _query("alias.example.com", "A", use_edns=0, payload=1400),
    _query("example.com", "SOA", use_edns=0, payload=1232, want_dnssec=True, pad=128),
    _query("big.example.com", "TXT"),
    _query("1.2.0.192.in-addr.arpa", "PTR", use_edns=0, payload=1232),
]


class Clock:
    """The fake clock of the handler, the cache and the forwarder."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeUpstream:
    """An upstream transport without a socket: the real matching code (the UDP
    transport's checks, :class:`ConnectionState`) fed with ``response`` as the one
    datagram or byte stream that comes back. No matching answer: QueryTimeout (the real
    transports wait for the deadline, which comes to the same)."""

    name = "fuzz"
    timeout = 2.0

    def __init__(self, response: bytes, *, udp: bool, cut: int, clock: Clock) -> None:
        self.response = response
        self.udp = udp
        self.cut = cut
        self.clock = clock
        self.asked = 0

    # -- the stream transports (TCP and TLS, and UDP's TC=1 retry) -----------------------
    def _connection(self) -> ConnectionState:
        conn = ConnectionState("fuzz", max_in_flight=4, randbelow=lambda _n: UPSTREAM_ID)
        conn.connected(self.clock())
        conn.reserve()
        return conn

    def _stream_events(self, conn: ConnectionState, response: bytes) -> list[Any]:
        data = struct.pack("!H", len(response) & 0xFFFF) + response
        cut = self.cut % (len(data) + 1)
        events = conn.receive(data[:cut], self.clock())
        events += conn.receive(data[cut:], self.clock())
        return events

    @staticmethod
    def _outcome(events: list[Any]) -> Any:
        for event in events:
            if isinstance(event, WireMatched | ResponseMatched):
                assert event.qid == UPSTREAM_ID, event
                return event
            if isinstance(event, QueryRejected):
                return ProtocolError(f"fuzz: {event.reason}")
            if isinstance(event, ResponseMalformed):
                return MalformedAnswer(f"fuzz: {event.reason}")
            if isinstance(event, StreamBroken):
                return NetworkError(f"fuzz: {event.reason}")
            assert isinstance(event, ResponseIgnored), event
        return QueryTimeout("fuzz: no answer")

    # -- the message path ----------------------------------------------------------------
    async def exchange(self, query: dns.message.Message, *, deadline: float,
                       ) -> dns.message.Message:
        self.asked += 1
        response = self.response
        if self.udp:
            accepted = UdpUpstream._accept(response, UPSTREAM_ID, question_key(query))
            if accepted is None:
                raise QueryTimeout("fuzz: no matching datagram")
            if not accepted.flags & dns.flags.TC:
                return accepted
            response = _without_tc(response)  # TC=1: asked again over TCP
        conn = self._connection()
        qid, _ = conn.start_query(query, self.clock(), pad=0 if self.udp else 128,
                                  keepalive=True)
        assert qid == UPSTREAM_ID
        outcome = self._outcome(self._stream_events(conn, response))
        if isinstance(outcome, Exception):
            raise outcome
        message: dns.message.Message = outcome.message
        return message

    # -- the wire path -------------------------------------------------------------------
    def start_wire(self, question: bytes, *, deadline: float, flags: int, payload: int,
                   do: bool, callback: Callable[[bytes | None, BaseException | None], None],
                   ) -> None:
        self.asked += 1
        response = self.response
        outcome: Any
        if self.udp:
            exchange = _Exchange()
            exchange.qid = UPSTREAM_ID
            exchange.question = question
            if exchange.accept(response) is None:
                outcome = QueryTimeout("fuzz: no matching datagram")
            elif response[2] & 0x02:  # TC=1: asked again over TCP (as _Exchange._finish)
                outcome = self._wire_stream(question, _without_tc(response), flags,
                                            payload, do)
            else:
                outcome = response
        else:
            outcome = self._wire_stream(question, response, flags, payload, do)
        loop = asyncio.get_running_loop()
        if isinstance(outcome, Exception):
            loop.call_soon(callback, None, outcome)
        else:
            loop.call_soon(callback, outcome, None)

    def _wire_stream(self, question: bytes, response: bytes, flags: int, payload: int,
                     do: bool) -> bytes | Exception:
        conn = self._connection()
        qid, _ = conn.start_query_wire(question, self.clock(), flags=flags, payload=payload,
                                       do=do, pad=0 if self.udp else 128, keepalive=True)
        assert qid == UPSTREAM_ID
        outcome = self._outcome(self._stream_events(conn, response))
        return outcome if isinstance(outcome, Exception) else outcome.wire


def _without_tc(response: bytes) -> bytes:
    return response[:2] + bytes((response[2] & ~0x02,)) + response[3:]


# ------------------------------------------------------------------------- the oracle


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length >= 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def answers_question(response: bytes, query: dns.message.Message) -> bool:
    """The oracle of matching, written apart from the product's checks: ``response``
    carries the upstream ID, QR=1 and exactly the query's question (name compared
    case-insensitively)."""
    if len(response) < 12 or struct.unpack_from("!H", response)[0] != UPSTREAM_ID:
        return False
    if not response[2] & 0x80 or struct.unpack_from("!H", response, 4)[0] != 1:
        return False
    qname = query.question[0].name.to_wire()
    assert qname is not None
    end = 12 + len(qname) + 4
    rdtype, rdclass = query.question[0].rdtype, query.question[0].rdclass
    return (len(response) >= end and response[12:end - 4].lower() == qname.lower()
            and response[end - 4:end] == struct.pack("!HH", rdtype, rdclass))


def records(wire: bytes, start: int = 0) -> list[tuple[int, int, int, int, int]]:
    """(offset of the fixed part, TYPE, CLASS, TTL, RDLENGTH) of each record of the
    message at ``wire[start:]`` after its question, as far as they can be read."""
    qd, an, ns, ar = struct.unpack_from("!HHHH", wire, start + 4)
    pos = start + 12
    out = []
    try:
        for _ in range(qd):
            pos = _skip_name(wire, pos) + 4
        for _ in range(an + ns + ar):
            pos = _skip_name(wire, pos)
            rrtype, rrclass, ttl, rdlength = struct.unpack_from("!HHIH", wire, pos)
            out.append((pos, rrtype, rrclass, ttl, rdlength))
            pos += 10 + rdlength
    except (IndexError, struct.error):
        pass
    return out


def ttls_of(wire: bytes) -> list[int]:
    """The TTL field of every record but OPT, in order, as raw 32-bit values."""
    return [ttl for _, rrtype, _, ttl, _ in records(wire) if rrtype != 41]


#: Record types whose RDATA the cache's walk checks (class-independent ones; A, AAAA,
#: SRV and KX in class IN only), as dnspython reads them.
CHECKED_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15, 16, 17, 18, 21, 28, 33, 36,
                           39, 41, 99})
_IN_ONLY = frozenset({1, 28, 33, 36})
OPAQUE_TYPE = 65280  # private use: dnspython reads its RDATA as opaque bytes


def opaque(wire: bytes) -> bytes:
    """``wire`` with every record of a type outside CHECKED_TYPES retyped as opaque."""
    out = bytearray(wire)
    for pos, rrtype, rrclass, _, _ in records(wire):
        if rrtype not in CHECKED_TYPES or (rrtype in _IN_ONLY and rrclass != 1):
            struct.pack_into("!H", out, pos, OPAQUE_TYPE)
    return bytes(out)


def check_answer(out: bytes, query_wire: bytes, query: dns.message.Message,
                 transport: Transport, *, accepted: bool) -> dns.message.Message:
    """The promises about one answer to the client (module docstring)."""
    assert isinstance(out, bytes), type(out)
    try:
        response = dns.message.from_wire(out)
    except dns.exception.DNSException:
        # RDATA of types the cache's walk does not read is relayed as the upstream sent
        # it (RFC 3597: opaque); everything else must parse
        response = dns.message.from_wire(opaque(out))
    assert response.id == query.id, (response.id, query.id)
    assert response.flags & dns.flags.QR
    qname = query.question[0].name.to_wire()
    assert out[12:12 + len(qname) + 4] == query_wire[12:12 + len(qname) + 4], \
        "the answer's question is not the query's"
    assert len(response.question) == 1
    ttls = ttls_of(out)
    assert all(0 <= ttl <= MAX_TTL for ttl in ttls), ttls
    if not accepted:
        assert response.rcode() == dns.rcode.SERVFAIL, \
            f"{dns.rcode.to_text(response.rcode())} relayed from a non-matching response"
    if (response.rcode() == dns.rcode.SERVFAIL and query.edns >= 0 and not accepted):
        assert edns.find_option(response, edns.EDE) is not None, "SERVFAIL without EDE"
    if transport is Transport.UDP:
        limit = max(MIN_UDP, query.payload) if query.edns >= 0 else MIN_UDP
        assert len(out) <= limit, f"UDP answer of {len(out)} bytes, limit {limit}"
    else:
        assert len(out) <= MAX_MESSAGE, f"stream answer of {len(out)} bytes"
        if (transport is Transport.TLS and query.edns >= 0
                and edns.has_option(query, edns.PADDING) and not out[2] & 0x02):
            # padded to the block, or to the most a stream frames when the next block
            # would pass it (a truncated answer, TC=1, is the bare header and question)
            assert len(out) % edns.SERVER_BLOCK == 0 or len(out) == MAX_MESSAGE, \
                f"TLS answer of {len(out)} bytes"
    return response


def check_aged(first: bytes, second: bytes, step: int, hit: bool) -> None:
    """A cache hit ``step`` seconds later: every TTL aged by ``step`` (floored at 0)."""
    if not hit or first[2] & 0x02 or second[2] & 0x02:
        return
    before, after = ttls_of(first), ttls_of(second)
    assert len(before) == len(after), (before, after)
    for old, new in zip(before, after, strict=True):
        assert new == max(0, old - step), (old, new, step)


# ------------------------------------------------------------------------- the driver

class _Setup:
    def __init__(self, response: bytes, transport: Transport, mode: int) -> None:
        self.clock = Clock()
        self.upstream = FakeUpstream(response, udp=bool(mode & 0x40), cut=mode >> 2,
                                     clock=self.clock)
        self.cache = Cache(minimal_responses=not mode & 0x20, serve_stale=bool(mode & 0x80),
                           stale_ttl=3600)
        self.forwarder = Forwarder([self.upstream], clock=self.clock)
        self.wire = WireForwarder(self.forwarder, self.cache, self.clock)
        self.handler = QueryHandler(CacheStage(self.forwarder, self.cache, self.clock),
                                    cache=self.cache, wire=self.wire, clock=self.clock,
                                    keepalive=10.0, exact_memo=bool(mode & 0x10))
        self.transport = transport


async def _wire_path(setup: _Setup, query_wire: bytes) -> bytes | None:
    """The listener's wire path for ``query_wire``: the answer, or None when the fast
    path does not take the query (then only the message path runs)."""
    handler = setup.handler
    routed = handler.route(query_wire, setup.transport)
    if routed is None:
        return None
    if isinstance(routed, bytes):
        return routed  # a cache hit
    delivered: list[bytes] = []
    if not handler.forward_wire(routed, query_wire, setup.transport, delivered.append):
        return await handler.answer_wire(routed, query_wire, setup.transport)
    for _ in range(10):
        if delivered:
            break
        await asyncio.sleep(0)
    assert len(delivered) == 1, "the wire path delivered no answer"
    return delivered[0]


async def _message_path(setup: _Setup, query: dns.message.Message) -> bytes:
    return await setup.handler.answer(query, setup.transport, None)


async def _drive(query_wire: bytes, response: bytes, mode: int) -> None:
    query = parse_query(query_wire)
    assert isinstance(query, dns.message.Message)
    accepted = answers_question(response, query)
    if mode & 0x40 and accepted and response[2] & 0x02:
        accepted = answers_question(_without_tc(response), query)
    step = STEPS[(mode >> 4) % len(STEPS)]
    transport = (Transport.UDP, Transport.TCP, Transport.TLS, Transport.TLS)[mode & 3]
    for path in ("wire", "message"):
        setup = _Setup(response, transport, mode)
        answers = []
        for round in range(2):
            hits = setup.cache.statistics().hits
            if path == "wire":
                out = await _wire_path(setup, query_wire)
                if out is None:
                    break
            else:
                out = await _message_path(setup, query)
            try:
                check_answer(out, query_wire, query, transport, accepted=accepted)
            except Exception as exc:
                exc.add_note(f"{path} path, {transport.value}, answer {round + 1}")
                raise
            answers.append((out, setup.cache.statistics().hits > hits))
            setup.clock.now += step
        assert setup.handler.internal_errors == 0, f"internal error answered ({path} path)"
        if len(answers) == 2:
            try:
                check_aged(answers[0][0], answers[1][0], step, answers[1][1])
            except AssertionError as exc:
                exc.add_note(f"{path} path, {transport.value}")
                raise


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    query_wire = QUERIES[data[0] % len(QUERIES)]
    assert read_query(query_wire) is not None
    loop = asyncio.new_event_loop()  # one per input: nothing carries over
    try:
        loop.run_until_complete(_drive(query_wire, data[2:], data[1]))
    finally:
        loop.close()


# ------------------------------------------------------------------------- fallback


def _rr_offsets(data: bytes) -> list[int]:
    """Offsets of the fixed part of each record of an input's response, as far as they
    can be read; for mutations that know the layout."""
    if len(data) < 14:
        return []
    return [pos for pos, *_ in records(data, 2) if pos + 10 <= len(data)]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """Mutate a corpus entry (two mode bytes + response): generic byte mutations plus
    DNS-aware ones -- count fields, TTLs (high bit set), records duplicated, OPT
    copied elsewhere, compression pointers aimed anywhere (loops)."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(13)
        pos = rng.randrange(len(data)) if data else 0
        fixed = _rr_offsets(bytes(data)) if op >= 7 else []
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.choice([0x00, 0x01, 0x02, 0x0C, 0x29, 0x3F, 0x40, 0x80, 0xC0,
                                    0xFF])
        elif op == 2 and len(data) > 2:
            del data[rng.randrange(2, len(data)):]
        elif op == 3:
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and data:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 5 and len(data) >= 14:  # a count field (QD, AN, NS, AR)
            at = 2 + 4 + 2 * rng.randrange(4)
            data[at:at + 2] = struct.pack("!H", rng.choice([0, 1, 2, 3, 0xFFFF])
                                          if rng.random() < 0.5
                                          else max(0, data[at] << 8 | data[at + 1])
                                          + rng.choice([-1, 1]) & 0xFFFF)
        elif op == 6 and len(data) >= 2:  # the mode byte or the query choice
            data[rng.randrange(2)] = rng.randrange(256)
        elif op == 7 and fixed:  # a TTL: high bit, max, zero, small
            at = rng.choice(fixed) + 4
            data[at:at + 4] = struct.pack("!I", rng.choice(
                [0x80000000, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF + 2, 0, 1, 86401]))
        elif op == 8 and fixed:  # a record duplicated (OPT twice, a second SOA, ...)
            start = rng.choice(fixed)
            end = start + 10 + struct.unpack_from("!H", data, start + 8)[0]
            chunk = data[max(14, start - 2):end]
            at = rng.choice([*fixed, len(data)])
            data[at:at] = chunk
            section = 2 + 6 + 2 * rng.randrange(3)
            count = (data[section] << 8 | data[section + 1]) + 1
            data[section:section + 2] = struct.pack("!H", count & 0xFFFF)
        elif op == 9 and fixed:  # a record's type turned into OPT / SOA / RRSIG
            at = rng.choice(fixed)
            data[at:at + 2] = struct.pack("!H", rng.choice([41, 6, 46, 5, 250, 255]))
        elif op == 10 and len(data) > 16:  # a compression pointer to anywhere
            target = rng.randrange(len(data) - 2)
            data[pos:pos + 2] = struct.pack("!H", 0xC000 | target)
        elif op == 11 and len(seed) > 4:  # splice in part of itself
            a = rng.randrange(len(seed))
            data[pos:pos] = seed[a:a + rng.randint(1, 40)]
        elif op == 12 and fixed:  # an rdlength
            at = rng.choice(fixed) + 8
            length = data[at] << 8 | data[at + 1]
            data[at:at + 2] = struct.pack("!H", max(0, length + rng.choice([-2, -1, 1, 7]))
                                          & 0xFFFF)
    return bytes(data)


def load_corpus(directory: Path) -> list[bytes]:
    return campaign.load_corpus(directory)


def random_campaign(corpus: list[bytes], iterations: int, seed: int, *,
                    seconds: float = float("inf"),
                    target: Callable[[bytes], None] = one_input) -> int:
    """Run mutated corpus entries (:func:`campaign.random_campaign`)."""
    return campaign.random_campaign(corpus, iterations, seed, seconds=seconds,
                                    target=target, mutate=mutate)


def main(argv: list[str]) -> int:
    # internal errors are checked by count; their log lines would only slow the run
    logging.disable(logging.CRITICAL)
    return campaign.main(argv, doc=__doc__ or "", target=one_input, mutate=mutate,
                         corpus=Path(__file__).resolve().parent / "corpus" / "upstream_path")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
