"""The task-free wire path (Forwarder.start_wire, WireForwarder.start,
QueryHandler.forward_wire) gives what the coroutine path gives, outcome for outcome."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from dnstls.compiled import is_compiled
from dnstls.errors import NetworkError, QueryTimeout
from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import WireQuery, read_query
from dnstls.resolver.base import Refuse, ResolveFailure
from dnstls.resolver.cache import Cache, CacheStage
from dnstls.resolver.forward import Forwarder
from dnstls.resolver.wire import WireFlight, WireForwarder


def wire_query(name: str = "www.example.com.", qid: int = 1) -> tuple[WireQuery, bytes]:
    wire = dns.message.make_query(name, "A", id=qid, use_edns=False).to_wire()
    query = read_query(wire)
    assert query is not None
    return query, wire


def answer_to(question: bytes, rcode: int = 0) -> bytes:
    name = dns.name.from_wire(question, 0)[0]
    query = dns.message.make_query(name, "A", id=0, use_edns=False)
    response = make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    if rcode == 0:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.7"))
    return response.to_wire()


class ScriptedUpstream:
    """Both APIs, one script: each exchange pops an action (an rcode, an exception
    raised later, ``("now", exc)`` raised at once by start_wire, or 'answer')."""

    name = "scripted"
    timeout = 2.0

    def __init__(self) -> None:
        self.actions: deque[Any] = deque()
        self.sent = 0
        self.held: list[tuple[bytes, Any]] = []
        self.hold = False

    def _outcome(self, question: bytes) -> bytes:
        action = self.actions.popleft() if self.actions else "answer"
        if isinstance(action, BaseException):
            raise action
        return answer_to(question, 0 if action == "answer" else int(action))

    async def exchange_wire(self, question: bytes, *, deadline: float, flags: int,
                            payload: int, do: bool) -> bytes:
        self.sent += 1
        await asyncio.sleep(0)
        return self._outcome(question)

    def start_wire(self, question: bytes, *, deadline: float, flags: int, payload: int,
                   do: bool, callback: Any) -> None:
        if self.actions and isinstance(self.actions[0], tuple):
            raise self.actions.popleft()[1]
        self.sent += 1
        if self.hold:
            self.held.append((question, callback))
            return
        try:
            result = self._outcome(question)
        except BaseException as exc:  # handed to the callback
            asyncio.get_running_loop().call_soon(callback, None, exc)
        else:
            asyncio.get_running_loop().call_soon(callback, result, None)


def started(forwarder: Forwarder, question: bytes) -> asyncio.Future[bytes]:
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def callback(answer: bytes | None, exc: BaseException | None) -> None:
        if exc is not None:
            future.set_exception(exc)
        else:
            assert answer is not None
            future.set_result(answer)

    assert forwarder.start_wire(question, flags=0x100, payload=0, do=False, deadline=1e9,
                                callback=callback)
    return future


async def outcome(awaitable: Any) -> Any:
    try:
        return await awaitable
    except ResolveFailure as failure:
        return (failure.rcode, failure.ede, failure.text)


ACTIONS = ["answer", dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NXDOMAIN,
           dns.rcode.NOTIMP, dns.rcode.FORMERR, dns.rcode.YXDOMAIN,
           QueryTimeout("slow"), NetworkError("refused"), ("now", NetworkError("no socket"))]


@pytest.mark.parametrize("action", ACTIONS, ids=repr)
async def test_start_wire_matches_resolve_wire(action: Any) -> None:
    question = wire_query()[0].key[:-1]
    results = []
    for path in ("coroutine", "callback"):
        up = ScriptedUpstream()
        fwd = Forwarder([up], clock=asyncio.get_running_loop().time)  # type: ignore[list-item]
        up.actions.append(action if path == "callback" or not isinstance(action, tuple)
                          else action[1])
        if path == "coroutine":
            got = await outcome(fwd.resolve_wire(question, flags=0x100, payload=0, do=False,
                                                 deadline=1e9))
        else:
            got = await outcome(started(fwd, question))
        health = fwd.statistics()["upstreams"]["scripted"]
        results.append((got, health["queries"], health["responses"], health["errors"],
                        health["failures"]))
    assert results[0] == results[1]


async def test_start_wire_declines_what_it_does_not_handle() -> None:
    loop = asyncio.get_running_loop()
    question = wire_query()[0].key[:-1]
    two = Forwarder([ScriptedUpstream(), ScriptedUpstream()],  # type: ignore[list-item]
                    clock=loop.time)
    assert not two.start_wire(question, flags=0, payload=0, do=False, deadline=1e9,
                              callback=lambda a, e: None)
    one = Forwarder([ScriptedUpstream()], clock=loop.time)  # type: ignore[list-item]
    assert not one.start_wire(question, flags=0, payload=0, do=False, deadline=0.0,
                              callback=lambda a, e: None)  # deadline already passed


class Recorded(WireFlight):
    """A caller's flight that keeps what it was answered."""

    __slots__ = ("got",)

    got: list[Any]

    def answered(self, upstream: bytes | None, exc: BaseException | None) -> None:
        self.got.append((upstream, exc))


#: Python may not subclass a compiled class: the pure-Python pass of scripts/test runs these
needs_subclass = pytest.mark.skipif(
    is_compiled("dnstls.resolver.wire"),
    reason="subclasses WireFlight, which a compiled wire module forbids from Python "
           "(the pure-Python pass covers it)")


def flight(query: WireQuery, got: list[Any]) -> Recorded:
    recorded = Recorded()
    recorded.query = query
    recorded.got = got
    return recorded


@needs_subclass
async def test_followers_share_a_callback_leaders_exchange() -> None:
    loop = asyncio.get_running_loop()
    up = ScriptedUpstream()
    up.hold = True
    wf = WireForwarder(Forwarder([up], clock=loop.time), Cache(), loop.time)  # type: ignore[list-item]
    q1, _ = wire_query(qid=1)
    q2, _ = wire_query("WWW.example.COM.", qid=2)
    got: list[Any] = []
    assert wf.start(flight(q1, got), 1e9)
    assert not wf.start(flight(q2, []), 1e9)  # in flight: decline
    follower = asyncio.ensure_future(wf.answer(q2, deadline=1e9))
    await asyncio.sleep(0)
    question, callback = up.held.pop()
    callback(answer_to(question), None)
    answer = await follower
    assert dns.message.from_wire(answer).id == 2
    assert got and got[0][1] is None
    assert up.sent == 1 and wf.stats.forwarded == 1 and wf.stats.coalesced == 1
    assert wf.statistics()["in_flight"] == 0


@needs_subclass
async def test_a_callback_leaders_failure_reaches_its_followers() -> None:
    loop = asyncio.get_running_loop()
    up = ScriptedUpstream()
    up.hold = True
    wf = WireForwarder(Forwarder([up], clock=loop.time), Cache(), loop.time)  # type: ignore[list-item]
    q1, _ = wire_query(qid=1)
    got: list[Any] = []
    assert wf.start(flight(q1, got), 1e9)
    follower = asyncio.ensure_future(wf.answer(q1, deadline=1e9))
    await asyncio.sleep(0)
    up.held.pop()[1](None, QueryTimeout("slow"))
    with pytest.raises(ResolveFailure):
        await follower
    assert isinstance(got[0][1], ResolveFailure)
    assert wf.statistics()["in_flight"] == 0


@pytest.mark.parametrize("action", ["answer", dns.rcode.SERVFAIL, QueryTimeout("slow"),
                                    ("now", NetworkError("no socket"))], ids=repr)
async def test_forward_wire_delivers_what_answer_wire_returns(action: Any) -> None:
    loop = asyncio.get_running_loop()
    outs = []
    for path in ("task", "callback"):
        up = ScriptedUpstream()
        up.actions.append(action if path == "callback" or not isinstance(action, tuple)
                          else action[1])
        cache = Cache()
        wf = WireForwarder(Forwarder([up], clock=loop.time), cache, loop.time)  # type: ignore[list-item]
        handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, wire=wf, clock=loop.time)
        wire = dns.message.make_query("www.example.com.", "A", id=7, use_edns=0).to_wire()
        routed = handler.route(wire, Transport.TLS)
        assert isinstance(routed, WireQuery)
        if path == "task":
            outs.append(await handler.answer_wire(routed, wire, Transport.TLS))
        else:
            delivered: asyncio.Future[bytes] = loop.create_future()
            assert handler.forward_wire(routed, wire, Transport.TLS, delivered.set_result)
            assert handler.in_flight == 1
            outs.append(await delivered)
        assert handler.in_flight == 0
        assert sum(handler.responses.values()) == 1
    assert outs[0] == outs[1]
    response = dns.message.from_wire(outs[1])
    assert response.id == 7
    if action == "answer":
        assert response.rcode() == dns.rcode.NOERROR and response.answer
    else:
        assert response.rcode() == dns.rcode.SERVFAIL
        if not isinstance(action, int):
            assert any(o.otype == dns.edns.EDE for o in response.options)


class BigUpstream(ScriptedUpstream):
    """Answers with 60 A records (> 512 bytes): a UDP client without EDNS gets TC=1."""

    def _outcome(self, question: bytes) -> bytes:
        name = dns.name.from_wire(question, 0)[0]
        response = make_response(dns.message.make_query(name, "A", id=0, use_edns=False))
        response.answer.append(dns.rrset.from_text(
            name, 60, "IN", "A", *(f"192.0.2.{i}" for i in range(60))))
        return response.to_wire()


@pytest.mark.parametrize("cache", ["storing", "nothing"])
async def test_forward_wire_over_udp_truncates_as_answer_wire_does(cache: str) -> None:
    loop = asyncio.get_running_loop()
    outs = []
    for path in ("task", "callback"):
        store = Cache() if cache == "storing" else Cache.storing_nothing()
        wf = WireForwarder(Forwarder([BigUpstream()], clock=loop.time),  # type: ignore[list-item]
                           store, loop.time)
        handler = QueryHandler(Refuse(), cache=store if cache == "storing" else None,
                               wire=wf, clock=loop.time)
        wire = dns.message.make_query("www.example.com.", "A", id=9, use_edns=False).to_wire()
        routed = handler.route(wire, Transport.UDP)
        assert isinstance(routed, WireQuery)
        if path == "task":
            outs.append(await handler.answer_wire(routed, wire, Transport.UDP))
        else:
            delivered: asyncio.Future[bytes] = loop.create_future()
            assert handler.forward_wire(routed, wire, Transport.UDP, delivered.set_result)
            outs.append(await delivered)
    assert outs[0] == outs[1]
    response = dns.message.from_wire(outs[1])
    assert len(outs[1]) <= 512 and response.flags & dns.flags.TC and response.id == 9


class HugeUpstream(ScriptedUpstream):
    """Answers with ``size`` bytes, no OPT: TXT records (found by
    fuzz/fuzz_upstream_path.py: an answer about 65,535 bytes long grew past what a
    stream can frame once our OPT, keepalive and padding were added)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def _outcome(self, question: bytes) -> bytes:
        head = bytearray(answer_to(question, 3))  # header and question, no records
        head[3] &= 0xF0
        records = []
        left = self.size - len(head)
        while left > 0:
            text = min(255, left - 13)
            records.append(b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, text + 1)
                           + bytes((text,)) + b"%05d" % len(records) + b"t" * (text - 5))
            left -= 13 + text
        head[6:8] = struct.pack("!H", len(records))
        wire = bytes(head) + b"".join(records)
        assert len(wire) == self.size
        return wire


@pytest.mark.parametrize("size,fits", [(65500, True), (65530, False)])
async def test_forward_wire_never_answers_a_stream_past_65535_bytes(size: int,
                                                                    fits: bool) -> None:
    """A padded TLS answer is padded at most to 65,535 bytes; one too long even without
    padding is truncated (TC=1, as Unbound and Knot Resolver do) -- both paths, hit
    and miss. It was 65,988 or 65,551 bytes: the listener could not frame it and the
    client's query went unanswered."""
    loop = asyncio.get_running_loop()
    wire = dns.message.make_query(
        "www.example.com.", "A", id=9, use_edns=0, pad=128,
        options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")]).to_wire()
    outs = []
    for path in ("task", "callback", "hit"):
        store = Cache()
        wf = WireForwarder(Forwarder([HugeUpstream(size)],  # type: ignore[list-item]
                                     clock=loop.time), store, loop.time)
        handler = QueryHandler(CacheStage(Refuse(), store, loop.time), cache=store, wire=wf,
                               clock=loop.time, keepalive=10.0)
        routed = handler.route(wire, Transport.TLS)
        assert isinstance(routed, WireQuery)
        if path == "task":
            outs.append(await handler.answer_wire(routed, wire, Transport.TLS))
            continue
        delivered: asyncio.Future[bytes] = loop.create_future()
        assert handler.forward_wire(routed, wire, Transport.TLS, delivered.set_result)
        outs.append(await delivered)
        if path == "hit":
            hit = handler.route(wire, Transport.TLS)
            if fits:
                assert hit == outs[-1]
            else:  # the message path truncates it (a stream hit is never cut here)
                assert hit is None
                parsed = handler.parse(wire, Transport.TLS)
                assert isinstance(parsed, dns.message.Message)
                outs.append(await handler.answer(parsed, Transport.TLS, None))
    for out in outs:
        response = dns.message.from_wire(out)
        assert response.id == 9 and len(out) <= 65535
        if fits:
            assert len(out) == 65535 and not response.flags & dns.flags.TC
        else:
            assert response.flags & dns.flags.TC and not response.answer


@pytest.mark.parametrize("action", ACTIONS, ids=repr)
async def test_start_wire_counts_its_queries_until_the_callback(action: Any) -> None:
    """in_flight_wire (what the stub's reloads wait for) is up from the start until the
    callback runs, whatever the outcome (a failure raised at once too); when_idle runs
    as it drops to 0, before the callback."""
    question = wire_query()[0].key[:-1]
    up = ScriptedUpstream()
    fwd = Forwarder([up], clock=asyncio.get_running_loop().time)  # type: ignore[list-item]
    seen: list[Any] = []
    fwd.when_idle = lambda: seen.append(("idle", fwd.in_flight_wire))
    up.actions.append(action)
    future = started(fwd, question)
    assert fwd.in_flight_wire == 1 and seen == []
    await outcome(future)
    assert fwd.in_flight_wire == 0 and seen == [("idle", 0)]


async def test_start_wire_uncounts_a_query_whose_start_raised_a_bug() -> None:
    question = wire_query()[0].key[:-1]
    up = ScriptedUpstream()
    fwd = Forwarder([up], clock=asyncio.get_running_loop().time)  # type: ignore[list-item]
    up.actions.append(("now", RuntimeError("bug")))
    with pytest.raises(RuntimeError):
        fwd.start_wire(question, flags=0x100, payload=0, do=False, deadline=1e9,
                       callback=lambda a, e: None)
    assert fwd.in_flight_wire == 0


async def test_start_wire_fails_at_once_while_its_upstream_is_down() -> None:
    """The task-free path holds a down upstream as _run does: after three failed
    attempts in a row, the next queries get SERVFAIL (EDE of the last error) from the
    loop without being sent, counted in in_flight_wire until their callback."""
    question = wire_query()[0].key[:-1]
    up = ScriptedUpstream()
    fwd = Forwarder([up], clock=asyncio.get_running_loop().time)  # type: ignore[list-item]
    up.actions.extend([QueryTimeout("slow")] * 3)
    for _ in range(3):
        assert (await outcome(started(fwd, question)))[:2] == (dns.rcode.SERVFAIL, 22)
    assert up.sent == 3
    seen: list[Any] = []
    fwd.when_idle = lambda: seen.append("idle")
    future = started(fwd, question)
    assert fwd.in_flight_wire == 1 and not future.done()
    rcode, ede, text = await outcome(future)
    assert (rcode, ede, up.sent, fwd.in_flight_wire, seen) == (
        dns.rcode.SERVFAIL, 22, 3, 0, ["idle"])
    assert text.startswith("timed out: scripted; down after 3 failed attempts in a row")
    fwd.health[up.name].probe_at = 0.0  # the second is over: the next query probes it
    assert await started(fwd, question) == answer_to(question)
    assert up.sent == 4 and not fwd.health[up.name].down()
