"""StreamConnection, the asyncio adapter, on a fake transport: what the answers of a read
become on the transport (one item, so one TLS record, per answer; when they leave), the
in-flight bound across one read, and the output limit."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnstls.compiled import is_compiled
from dnstls.net.handler import QueryHandler
from dnstls.net.server import StreamConnection, StreamListener, handshake_failure_reason
from dnstls.proto import framing
from dnstls.proto.acl import AccessControl, parse_rules
from dnstls.proto.admission import Admission, AdmissionLimits
from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import key_from_message
from dnstls.proto.stream import CloseReason, StreamLimits, StreamState
from dnstls.resolver.base import Refuse
from dnstls.resolver.cache import Cache

NAMES = [f"n{i}.example.test." for i in range(4)]
BIG_TXT = " ".join('"' + c * 250 + '"' for c in "abcdefgh")  # ~2 KB answer


class FakeTransport:
    """Records every write call; can hold what is written (a client that never reads)
    and then calls pause_writing() past the high-water mark, as asyncio's and uvloop's
    transports do from the write itself."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls: list[list[bytes]] = []  # per write call, its items
        self.hold = hold
        self.buffered = 0
        self.high = 64 << 10
        self.paused = False
        self.protocol: StreamConnection | None = None
        self.closed = self.aborted = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5353) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is not None:
            self.high = high

    def write(self, data: bytes) -> None:
        self._add([data])

    def writelines(self, items: list[bytes]) -> None:
        self._add(list(items))

    def _add(self, items: list[bytes]) -> None:
        self.calls.append(items)
        if self.hold:
            self.buffered += sum(map(len, items))
            if self.buffered > self.high and not self.paused:
                self.paused = True
                assert self.protocol is not None
                self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def query(name: str, qid: int, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype, id=qid, use_edns=False).to_wire()


NOW = [10.5]  # the handler's clock (the cache's entries are 10 s old)


@pytest.fixture(autouse=True, params=[10.5, 10.0])
def clock(request: pytest.FixtureRequest) -> None:
    """Every test twice: mid-second (exact repeats answered from the handler's memo,
    see test_exact_memo.py) and on the second's boundary (the memo keeps a millisecond
    off both ends of a second: the full path every time)."""
    NOW[0] = request.param


def connect(limits: StreamLimits | None = None, *, hold: bool = False,
            exact_memo: bool = True, acl: AccessControl | None = None,
            ) -> tuple[StreamConnection, FakeTransport]:
    cache = Cache()
    for name in NAMES:
        for rdtype, text in (("A", "192.0.2.1"), ("TXT", BIG_TXT)):
            q = dns.message.make_query(name, rdtype, use_edns=False)
            r = make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 3600, "IN", rdtype,
                                                text))
            cache.insert(key_from_message(q), r, 0.0)
    handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, clock=lambda: NOW[0],
                           exact_memo=exact_memo)
    listener = StreamListener(handler, transport=Transport.TCP, tls=None,
                              limits=limits or StreamLimits(),
                              admission=Admission(AdmissionLimits()), acl=acl)
    conn = StreamConnection(listener)
    transport = FakeTransport(hold=hold)
    transport.protocol = conn
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def answers(items: list[bytes]) -> list[dns.message.Message]:
    out = []
    for item in items:
        assert int.from_bytes(item[:2], "big") == len(item) - 2  # one framed message
        out.append(dns.message.from_wire(item[2:]))
    return out


async def test_a_read_of_cached_queries_is_written_before_data_received_returns() -> None:
    conn, transport = connect()
    conn.data_received(b"".join(framing.encode(query(n, 100 + i))
                                for i, n in enumerate(NAMES)))
    assert len(transport.calls) == 1  # one write call, one item (TLS record) per answer
    got = answers(transport.calls[0])
    assert [m.id for m in got] == [100, 101, 102, 103]
    assert all(m.rcode() == dns.rcode.NOERROR and m.answer for m in got)
    conn.data_received(framing.encode(query(NAMES[0], 7)))
    assert [m.id for m in answers(transport.calls[1])] == [7]
    await asyncio.sleep(0)
    assert len(transport.calls) == 2  # nothing was left for a later flush
    assert conn.state is not None and conn.state.in_flight == 0 and not conn.closed


async def test_answers_of_a_read_join_a_flush_already_scheduled() -> None:
    conn, transport = connect()
    formerr = b"\x00\x09\x00\x00" + b"\x00" * 8  # a header asking no question
    conn.data_received(framing.encode(formerr) + framing.encode(query(NAMES[1], 8)))
    assert transport.calls == []  # the rejection scheduled the flush: both go with it
    await asyncio.sleep(0)
    assert len(transport.calls) == 1
    got = answers(transport.calls[0])
    assert [(m.id, m.rcode()) for m in got] == [(9, dns.rcode.FORMERR),
                                                 (8, dns.rcode.NOERROR)]


async def test_a_read_beyond_the_in_flight_bound_is_answered_whole() -> None:
    conn, transport = connect(StreamLimits(max_in_flight=2))
    conn.data_received(b"".join(framing.encode(query(NAMES[i % 4], i)) for i in range(7)))
    await asyncio.sleep(0)
    items = [item for call in transport.calls for item in call]
    assert [m.id for m in answers(items)] == list(range(7))
    assert conn.state is not None and conn.state.pending == 0
    assert transport.reading and not conn.closed


async def test_the_output_limit_closes_a_client_that_does_not_read() -> None:
    limits = StreamLimits(max_pending_output=8192)  # high-water mark 4096
    conn, transport = connect(limits, hold=True)
    conn.data_received(framing.encode(query(NAMES[0], 1, "TXT")))
    await asyncio.sleep(0)
    assert len(transport.calls) == 1
    assert not conn.closed and not transport.paused  # ~2 KB held: below the mark
    for qid in range(2, 40):  # bounded: closed after ~5 answers of ~2 KB
        conn.data_received(framing.encode(query(NAMES[qid % 4], qid, "TXT")))
        await asyncio.sleep(0)
        if conn.closed:
            break
    assert conn.closed and transport.aborted
    assert conn.reason is CloseReason.OUTPUT_LIMIT
    assert 8192 < transport.buffered < 8192 + 4096


@pytest.mark.parametrize("in_flight", [1, 5, 100])
async def test_a_pipelined_read_of_big_answers_is_judged_by_the_output_limit(
        in_flight: int) -> None:
    """One read of many cached queries: the answers are handed to the transport past the
    high-water mark, so the limit closes the connection within that read."""
    limits = StreamLimits(max_pending_output=8192, max_in_flight=in_flight)
    conn, transport = connect(limits, hold=True)
    conn.data_received(b"".join(framing.encode(query(NAMES[i % 4], i, "TXT"))
                                for i in range(200)))
    assert conn.closed and conn.reason is CloseReason.OUTPUT_LIMIT
    # at most one flush past the limit: what was under it, the high-water mark's worth
    # and the answers of one pass over the in-flight bound
    assert transport.buffered < 8192 + 4096 + in_flight * 2200


async def test_a_message_without_a_header_ends_the_stream_after_the_ones_before_it() -> None:
    conn, transport = connect()
    first = framing.encode(query(NAMES[0], 1))
    conn.data_received(first + framing.encode(b"\x00\x02\x00") + framing.encode(
        query(NAMES[1], 2)) + first)
    await asyncio.sleep(0)
    items = [item for call in transport.calls for item in call]
    assert [m.id for m in answers(items)] == [1]  # the one before; nothing after
    assert conn.closed and conn.reason is CloseReason.BAD_MESSAGE and transport.closed
    assert conn.listener.stats.dropped["no_header"] == 1


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop_name", _loops())
def test_event_loop_sets_nodelay_on_accepted_sockets(loop_name: str) -> None:
    """StreamConnection does not set TCP_NODELAY itself (one system call per connection
    saved): both event loops it runs on set it on every accepted TCP transport."""
    import socket

    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Probe, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    if loop_name == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    assert seen and all(seen)


FORMERR_QUERY = b"\x00\x09\x00\x00" + b"\x00" * 8  # a header asking no question
# Each scenario: reads (bytes) and "tick" (one loop iteration) in order, with limits.
_ONE_QUERY_SCENARIOS: dict[str, tuple[dict[str, int], bool, list[bytes | str]]] = {
    "hits, one per read": ({}, False, [framing.encode(query(NAMES[i % 4], i))
                                       for i in range(6)]),
    "hits in one iteration": ({}, False, [framing.encode(query(NAMES[i % 4], i))
                                          for i in range(3)] + ["tick"]),
    "hits between ticks": ({}, False, [x for i in range(3) for x in (
        framing.encode(query(NAMES[i], i)), "tick")]),
    "rejection then a hit": ({}, False, [framing.encode(FORMERR_QUERY),
                                         framing.encode(query(NAMES[1], 8)), "tick"]),
    "a message without a header": ({}, False, [framing.encode(query(NAMES[0], 1)),
                                               framing.encode(b"\x00\x02\x00"), "tick",
                                               framing.encode(query(NAMES[1], 2))]),
    "refused by the pipeline": ({}, False, [framing.encode(query("other.test.", 5)),
                                            framing.encode(query(NAMES[0], 6)), "tick",
                                            "tick", framing.encode(query(NAMES[1], 7)),
                                            "tick", "tick"]),
    "bound reached by the pipeline": ({"max_in_flight": 2}, False, [
        framing.encode(query("other.test.", 1)), framing.encode(query("more.test.", 2)),
        framing.encode(query(NAMES[0], 3)), framing.encode(query(NAMES[1], 4)), "tick",
        framing.encode(query(NAMES[2], 5)), "tick", "tick", "tick"]),
    "query limit": ({"max_queries": 2}, False, [framing.encode(query(NAMES[0], 1)),
                                                framing.encode(query(NAMES[1], 2)),
                                                framing.encode(query(NAMES[2], 3)), "tick"]),
    "output limit": ({"max_pending_output": 8192}, True,
                     [x for i in range(12) for x in (
                         framing.encode(query(NAMES[i % 4], i, "TXT")), "tick")]),
    "pipelined then one": ({}, False, [framing.encode(query(NAMES[0], 1))
                                       + framing.encode(query(NAMES[1], 2)),
                                       framing.encode(query(NAMES[2], 3)), "tick"]),
}


async def _play(limits: dict[str, int], hold: bool, steps: list[bytes | str],
                monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    loop = asyncio.get_running_loop()
    clock = [1000.0]  # a clock the test moves: deadlines comparable between runs
    monkeypatch.setattr(loop, "time", lambda: clock[0])
    conn, transport = connect(StreamLimits(**limits), hold=hold)  # type: ignore[arg-type]
    for step in steps:
        clock[0] += 0.25
        if step == "tick":
            await asyncio.sleep(0)
        else:
            assert isinstance(step, bytes)
            conn.data_received(step)
    await asyncio.sleep(0)
    state = conn.state
    assert state is not None
    return (transport.calls, transport.closed, transport.aborted, transport.reading,
            conn.closed, conn.reason, state.queries, state.in_flight, state.pending,
            state.deadline(), conn._timer_at, dict(conn.listener.stats.dropped),
            dict(conn.listener.handler.responses))


@pytest.mark.skipif(is_compiled("dnstls.net.server") or is_compiled("dnstls.proto.stream"),
                    reason="patches StreamState.take_one, which compiled callers bypass "
                           "(the pure-Python run covers it)")
@pytest.mark.parametrize("scenario", list(_ONE_QUERY_SCENARIOS))
async def test_one_query_reads_are_handled_as_by_the_general_path(
        scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """data_received's shortcut for a read of one whole query (StreamState.take_one)
    writes the same bytes, in the same write calls, and leaves the same state, counters
    and timer as feed + _dispatch + _flush + _settle."""
    limits, hold, steps = _ONE_QUERY_SCENARIOS[scenario]
    taken: list[bytes] = []
    original = StreamState.take_one

    def counting(self: StreamState, data: bytes, now: float) -> bytes | None:
        out = original(self, data, now)
        if out is not None:
            taken.append(out)
        return out

    monkeypatch.setattr(StreamState, "take_one", counting)
    fast = await _play(limits, hold, steps, monkeypatch)
    monkeypatch.setattr(StreamState, "take_one", lambda self, data, now: None)
    general = await _play(limits, hold, steps, monkeypatch)
    assert fast == general
    assert bool(taken) == (scenario != "query limit")  # the shortcut was exercised
    if scenario == "output limit":
        assert fast[5] is CloseReason.OUTPUT_LIMIT
    if scenario == "a message without a header":
        assert fast[5] is CloseReason.BAD_MESSAGE


@pytest.mark.parametrize("in_flight", [3, 100])
async def test_reads_are_answered_alike_with_and_without_the_memo(in_flight: int) -> None:
    """Runs of exact repeats (answered by one call), first-time hits, other letter case,
    uncached names (the message path: a task), a rejected message, frames split across
    reads: what is written, in which write calls, and the counters are the same."""
    import random

    rng = random.Random(7)
    pair = [connect(StreamLimits(max_in_flight=in_flight), exact_memo=memo)
            for memo in (True, False)]
    cache = pair[0][0].listener.handler.cache
    assert cache is not None
    by_memo = [0]
    answer_exact = cache.answer_exact

    def counted(memo: Any, messages: list[bytes], start: int, out: list[bytes],
                now: float) -> tuple[int, int]:
        stop, size = answer_exact(memo, messages, start, out, now)
        by_memo[0] += stop - start
        return stop, size

    # a compiled Cache's methods cannot be replaced on an instance: count only when pure
    counting = not is_compiled("dnstls.resolver.cache")
    if counting:
        cache.answer_exact = counted  # type: ignore[method-assign]
    formerr = b"\x00\x09\x00\x00" + b"\x00" * 8
    pool = [query(n, 0, t) for n in NAMES for t in ("A", "TXT")]
    pool += [query(NAMES[0].upper(), 0), query("nocache.example.test.", 0), formerr]
    stream = b"".join(framing.encode(rng.getrandbits(16).to_bytes(2, "big") + wire[2:])
                      for wire in rng.choices(pool, k=600))
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 7, 40, 300, 2000, 9000])
        for conn, _ in pair:
            conn.data_received(stream[pos:pos + step])
        pos += step
        for _ in range(3):
            await asyncio.sleep(0)
        assert pair[0][1].calls == pair[1][1].calls
    for _ in range(100):  # the message path's tasks
        if all(conn.state is not None and not conn.state.pending for conn, _ in pair):
            break
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the last answer's flush
    assert pair[0][1].calls == pair[1][1].calls
    (a, ta), (b, _) = pair
    items = [item for call in ta.calls for item in call]
    assert len(items) == 600 and not a.closed
    handler_a, handler_b = a.listener.handler, b.listener.handler
    assert not counting or (by_memo[0] > 100) == (NOW[0] == 10.5)
    assert handler_a.responses == handler_b.responses
    assert handler_a.statistics() == handler_b.statistics()
    assert handler_a.cache is not None and handler_b.cache is not None
    assert handler_a.cache.statistics() == handler_b.cache.statistics()


async def _answer_forwarded(inline: bool, max_in_flight: int, answers_given: list[bytes],
                            monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    """Queries read and in flight (the first uncached, as forwarded ones are; cached ones
    behind the in-flight bound), then answered as forward_wire delivers answers:
    ``_wire_answered`` or, the reference, ``_write`` + ``_answered``."""
    loop = asyncio.get_running_loop()
    clock = [1000.0]
    monkeypatch.setattr(loop, "time", lambda: clock[0])
    conn, transport = connect(StreamLimits(max_in_flight=max_in_flight))
    state = conn.state
    assert state is not None
    read = b"".join(framing.encode(query(f"fwd{i}.example.test.", i)) for i in range(2))
    read += b"".join(framing.encode(query(NAMES[i % 4], 10 + i)) for i in range(3))
    state.feed(read, clock[0])  # in flight (and backlog), nothing dispatched
    conn._settle(state)
    for out in answers_given:
        clock[0] += 0.25
        if inline:
            conn._wire_answered(out)
        else:
            conn._write(out)
            conn._answered()
    outcome = (list(conn._out), conn._flush_scheduled, transport.reading, state.in_flight,
               state.pending, state.deadline(), conn._timer_at)
    await asyncio.sleep(0)
    return (*outcome, transport.calls, conn.closed, dict(conn.listener.handler.responses))


@pytest.mark.parametrize("max_in_flight", [2, 100])
async def test_a_forwarded_answer_is_written_as_write_and_answered_do(
        max_in_flight: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """_wire_answered (the write inline) queues the same framed bytes, schedules the same
    flush and leaves the same state, timer and writes as _write + _answered, whether the
    answer frees room for backlog or ends the last query in flight."""
    given = [dns.message.make_response(dns.message.from_wire(
        query(f"fwd{i}.example.test.", i))).to_wire() for i in range(2)]
    inline = await _answer_forwarded(True, max_in_flight, given, monkeypatch)
    reference = await _answer_forwarded(False, max_in_flight, given, monkeypatch)
    assert inline == reference
    assert inline[0] and inline[1] and len(inline[7]) == 1  # type: ignore[arg-type]
    for inline_way in (True, False):  # an empty answer is refused either way
        with pytest.raises(ValueError):
            await _answer_forwarded(inline_way, max_in_flight, [b""], monkeypatch)


@pytest.mark.parametrize(("exc", "label"), [
    # kdig sends close_notify mid-handshake when the server's pin does not match: an
    # SSLZeroReturnError whose reason is None (compiled code raised TypeError on it and
    # left the client's admission slot taken)
    (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)"), "peer_closed"),
    (ssl.SSLError(1, "made by hand: no reason attribute"), "tls_error"),
    (ConnectionAbortedError(), "timeout"),
    (ConnectionResetError(), "peer_closed"),
    (None, "peer_closed"),
])
def test_handshake_failure_reason_labels_every_failure(exc: BaseException | None,
                                                        label: str) -> None:
    assert handshake_failure_reason(exc) == label


def test_handshake_failure_reason_is_openssls_reason_in_lower_case() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client, server = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(client, server, server_side=True)
    client.write(b"\x16\x03\x01\x00\x05hello")  # not a ClientHello
    with pytest.raises(ssl.SSLError) as info:
        obj.do_handshake()
    assert info.value.reason is not None
    assert handshake_failure_reason(info.value) == info.value.reason.lower()


def norec_query(name: str, qid: int) -> bytes:
    message = dns.message.make_query(name, "A", id=qid, use_edns=False)
    message.flags &= ~dns.flags.RD
    return message.to_wire()


@pytest.mark.parametrize(("rules", "refused"), [
    (None, False),  # no access control: RD=0 answered from the cache, as before
    (["127.0.0.0/8 allow"], True),
    (["127.0.0.0/8 allow_snoop"], False),
])
async def test_rd0_reads_are_refused_on_connections_of_allow_only(
        rules: list[str] | None, refused: bool) -> None:
    """The verdict is taken at accept (conn.snoop); both read paths check the RD bit:
    one query per read, and a pipelined read whose RD=1 repeats the memo answers."""
    acl = None if rules is None else AccessControl(parse_rules(rules, "access_control"))
    conn, transport = connect(acl=acl)
    assert conn.snoop is not refused
    conn.data_received(framing.encode(norec_query(NAMES[0], 1)))
    rd1 = query(NAMES[1], 2)
    conn.data_received(b"".join(framing.encode(w) for w in (
        rd1, rd1, rd1, norec_query(NAMES[1], 3), norec_query(NAMES[1], 3), rd1)))
    await asyncio.sleep(0)
    got = answers([item for call in transport.calls for item in call])
    expected = dns.rcode.REFUSED if refused else dns.rcode.NOERROR
    assert [r.rcode() for r in got] == [expected] + [dns.rcode.NOERROR] * 3 + [
        expected] * 2 + [dns.rcode.NOERROR]
    assert [r.id for r in got] == [1, 2, 2, 2, 3, 3, 2]
    if acl is not None:
        assert acl.norec_refused == ({"tcp": 3} if refused else {})


async def test_the_memo_never_answers_rd0_for_a_connection_of_allow() -> None:
    """The exact-repeat memo is the listener's, shared by its connections: what an
    ``allow_snoop`` connection's RD=0 repeats got from the cache must not answer the
    same bytes, pipelined, on a connection of ``allow`` (answer_exact answers whole runs
    of them before route() is asked)."""
    acl = AccessControl(parse_rules(["127.0.0.0/8 allow_snoop"], "access_control"))
    snooper, snooper_transport = connect(acl=acl)
    rd0 = norec_query(NAMES[0], 7)
    for _ in range(3):
        snooper.data_received(b"".join(framing.encode(rd0) for _ in range(4)))
    got = answers([item for call in snooper_transport.calls for item in call])
    assert [r.rcode() for r in got] == [dns.rcode.NOERROR] * 12
    acl.replace(parse_rules(["127.0.0.0/8 allow"], "access_control"))
    conn = StreamConnection(snooper.listener)
    transport = FakeTransport()
    transport.protocol = conn
    conn.connection_made(transport)  # type: ignore[arg-type]
    assert not conn.snoop
    for _ in range(2):
        conn.data_received(b"".join(framing.encode(rd0) for _ in range(4)))
    got = answers([item for call in transport.calls for item in call])
    assert [r.rcode() for r in got] == [dns.rcode.REFUSED] * 8
    assert acl.norec_refused == {"tcp": 8}
