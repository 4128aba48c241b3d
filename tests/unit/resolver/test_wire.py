"""The wire-level forwarding path's coalescing, with a forwarder the test releases by hand."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rrset
import pytest

from dnstls.proto.answers import make_response
from dnstls.proto.cachekey import WireQuery, read_query
from dnstls.resolver.base import ResolveFailure, servfail
from dnstls.resolver.cache import Cache
from dnstls.resolver.wire import WireForwarder


def wire_query(name: str = "www.example.com.", qid: int = 1) -> tuple[WireQuery, bytes]:
    wire = dns.message.make_query(name, "A", id=qid, use_edns=False).to_wire()
    query = read_query(wire)
    assert query is not None
    return query, wire


def upstream_answer(wire: bytes) -> bytes:
    q = dns.message.from_wire(wire)
    r = make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
    return r.to_wire()


class HeldForwarder:
    """``resolve_wire`` waits until the test sets ``release`` (a result or an error)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def resolve_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                           deadline: float, check: Any = None) -> bytes:
        self.calls += 1
        return await asyncio.shield(self.release)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_followers_share_the_leaders_exchange() -> None:
    fwd = HeldForwarder()
    wf = WireForwarder(fwd, Cache(), lambda: 0.0)
    q1, wire = wire_query(qid=1)
    q2, _ = wire_query("WWW.example.com.", qid=2)
    t1 = asyncio.ensure_future(wf.answer(q1, deadline=10.0))
    await settle()
    t2 = asyncio.ensure_future(wf.answer(q2, deadline=10.0))
    await settle()
    fwd.release.set_result(upstream_answer(wire))
    a1, a2 = await asyncio.gather(t1, t2)
    assert fwd.calls == 1
    assert wf.stats.forwarded == 1 and wf.stats.coalesced == 1
    assert dns.message.from_wire(a1).id == 1 and dns.message.from_wire(a2).id == 2
    assert wf.statistics()["in_flight"] == 0


async def test_a_cancelled_leader_hands_the_exchange_to_its_followers() -> None:
    fwd = HeldForwarder()
    wf = WireForwarder(fwd, Cache(), lambda: 0.0)
    q1, wire = wire_query(qid=1)
    q2, _ = wire_query(qid=2)
    leader = asyncio.ensure_future(wf.answer(q1, deadline=10.0))
    await settle()
    follower = asyncio.ensure_future(wf.answer(q2, deadline=10.0))
    await settle()
    leader.cancel()
    await settle()
    assert leader.cancelled()
    assert not follower.done()
    assert wf.statistics()["in_flight"] == 1  # still one exchange for the key
    fwd.release.set_result(upstream_answer(wire))
    out = await follower
    assert dns.message.from_wire(out).id == 2
    assert wf.statistics()["in_flight"] == 0


async def test_a_cancelled_leader_without_followers_leaves_nothing_behind() -> None:
    fwd = HeldForwarder()
    wf = WireForwarder(fwd, Cache(), lambda: 0.0)
    q1, _ = wire_query(qid=1)
    leader = asyncio.ensure_future(wf.answer(q1, deadline=10.0))
    await settle()
    leader.cancel()
    await settle()
    assert leader.cancelled()
    assert wf.statistics()["in_flight"] == 0
    assert fwd.calls == 1


async def test_a_failure_reaches_every_waiter() -> None:
    fwd = HeldForwarder()
    wf = WireForwarder(fwd, Cache(), lambda: 0.0)
    q1, _ = wire_query(qid=1)
    q2, _ = wire_query(qid=2)
    t1 = asyncio.ensure_future(wf.answer(q1, deadline=10.0))
    await settle()
    t2 = asyncio.ensure_future(wf.answer(q2, deadline=10.0))
    await settle()
    fwd.release.set_exception(servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY, "down"))
    for task in (t1, t2):
        with pytest.raises(ResolveFailure):
            await task
    assert wf.statistics()["in_flight"] == 0


async def test_a_cancelled_follower_does_not_disturb_the_leader() -> None:
    fwd = HeldForwarder()
    wf = WireForwarder(fwd, Cache(), lambda: 0.0)
    q1, wire = wire_query(qid=1)
    q2, _ = wire_query(qid=2)
    leader = asyncio.ensure_future(wf.answer(q1, deadline=10.0))
    await settle()
    follower = asyncio.ensure_future(wf.answer(q2, deadline=10.0))
    await settle()
    follower.cancel()
    await settle()
    fwd.release.set_result(upstream_answer(wire))
    assert dns.message.from_wire(await leader).id == 1
    assert follower.cancelled()


class ValidatingForwarder:
    """An upstream that validates: AD in its answer only when the query had AD or DO
    (RFC 6840 §5.8); records the flags it was asked with."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, bool]] = []

    async def resolve_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                           deadline: float, check: Any = None) -> bytes:
        self.asked.append((flags, do))
        query = dns.message.Message(id=7)
        query.question.append(dns.rrset.RRset(*_question_parts(question)))
        if payload:
            query.use_edns(0, dns.flags.DO if do else 0, payload)
        response = make_response(query)
        response.answer.append(dns.rrset.from_text(
            query.question[0].name, 60, "IN", "A", "192.0.2.1"))
        if flags & dns.flags.AD or do:
            response.flags |= dns.flags.AD
        return response.to_wire()


def _question_parts(question: bytes) -> tuple[dns.name.Name, int, int]:
    name, used = dns.name.from_wire(question, 0)
    rdtype, rdclass = struct.unpack_from("!HH", question, used)
    return name, rdclass, rdtype


@pytest.mark.parametrize("first_ad", [False, True])
async def test_the_ad_bit_follows_each_query_not_the_cached_first_one(first_ad: bool) -> None:
    """RFC 6840 §5.8: AD only for a query with AD or DO. A query with AD and one
    without (no DO) are answered from separate entries, each as its upstream said."""
    fwd = ValidatingForwarder()
    cache = Cache()
    wf = WireForwarder(fwd, cache, lambda: 0.0)

    async def ask(ad: bool, do: bool, qid: int) -> dns.message.Message:
        message = dns.message.make_query("www.example.com.", "A", id=qid, use_edns=do,
                                         want_dnssec=do)
        if ad:
            message.flags |= dns.flags.AD
        query = read_query(message.to_wire())
        assert query is not None
        # as the listener does: the cache first, then the forwarding path
        hit = cache.lookup_wire(query.key, query.id, 0.0, query.rd, query.qname, query.edns)
        if hit is None:
            hit = await wf.answer(query, deadline=10.0)
        return dns.message.from_wire(hit)

    order = [first_ad, not first_ad]
    for round_ in range(2):  # the second round comes from the cache
        for i, ad in enumerate(order):
            answer = await ask(ad, False, 10 * round_ + i)
            assert bool(answer.flags & dns.flags.AD) == ad
    assert len(fwd.asked) == 2  # one upstream exchange per kind, then cache hits
    for ad in (False, True):  # with DO, AD does not matter: one entry
        assert (await ask(ad, True, 99)).flags & dns.flags.AD
    assert len(fwd.asked) == 3
