"""In-flight coalescing, driven by a fake next stage the test releases by hand."""

from __future__ import annotations

import asyncio

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnstls.proto.answers import Transport, make_response
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.coalesce import Coalescer


def query(name: str = "www.example.com.", rdtype: str = "A", *, qid: int = 1,
          **kwargs: object) -> dns.message.QueryMessage:
    return dns.message.make_query(name, rdtype, id=qid, **kwargs)  # type: ignore[arg-type]


def request(q: dns.message.Message) -> Request:
    return Request(message=q, transport=Transport.TLS, client=None, deadline=0.0)


def answer(q: dns.message.Message) -> dns.message.Message:
    r = make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
    return r


class Gate:
    """A fake next stage: each call waits until the test releases it with an outcome."""

    def __init__(self) -> None:
        self.calls: list[Request] = []
        self.cancelled = 0
        self._outcome: asyncio.Future[dns.message.Message] | None = None

    async def resolve(self, request: Request) -> dns.message.Message:
        self.calls.append(request)
        self._outcome = asyncio.get_running_loop().create_future()
        try:
            return await self._outcome
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def answer(self) -> None:
        assert self._outcome is not None
        self._outcome.set_result(answer(self.calls[-1].message))

    def fail(self, exc: Exception) -> None:
        assert self._outcome is not None
        self._outcome.set_exception(exc)


async def wait_all_tasks_blocked() -> None:
    """Let every runnable task run until it waits (a few loop turns, no sleeping)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def start(coalescer: Coalescer, *queries: dns.message.Message,
                ) -> list[asyncio.Task[dns.message.Message]]:
    tasks = [asyncio.create_task(coalescer.resolve(request(q))) for q in queries]
    await wait_all_tasks_blocked()
    return tasks


async def test_identical_queries_go_upstream_once_and_get_their_own_copies() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    queries = [query("www.example.com.", qid=1, use_edns=0),
               query("WWW.Example.COM.", qid=2, use_edns=0),
               query("wWw.eXample.com.", qid=3, flags=0)]  # no EDNS, RD clear
    tasks = await start(coalescer, *queries)
    assert len(gate.calls) == 1
    assert coalescer.statistics().in_flight == 1 and coalescer.statistics().coalesced == 2
    gate.answer()
    responses = await asyncio.gather(*tasks)
    assert [r.id for r in responses] == [1, 2, 3]
    assert [r.question[0].name.to_wire() for r in responses] == [
        q.question[0].name.to_wire() for q in queries]
    assert len({id(r) for r in responses}) == 3
    assert [r.answer for r in responses[1:]] == [responses[0].answer] * 2
    assert responses[1].edns == 0 and responses[2].edns < 0
    assert responses[0].flags & dns.flags.RD and not responses[2].flags & dns.flags.RD
    assert coalescer.statistics().in_flight == 0


async def test_different_keys_are_not_coalesced() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    tasks = await start(coalescer, query(), query(rdtype="AAAA"), query(want_dnssec=True))
    assert len(gate.calls) == 3 and coalescer.statistics().in_flight == 3
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert coalescer.statistics().in_flight == 0


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    leader, follower = await start(coalescer, query(qid=1), query(qid=2))
    leader.cancel()
    await wait_all_tasks_blocked()
    assert leader.cancelled() and gate.cancelled == 0
    gate.answer()
    response = await follower
    assert response.id == 2 and response.answer
    assert coalescer.statistics().in_flight == 0


async def test_when_every_waiter_is_cancelled_the_upstream_query_is_too() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    tasks = await start(coalescer, query(qid=1), query(qid=2))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await wait_all_tasks_blocked()
    assert gate.cancelled == 1
    assert coalescer.statistics().in_flight == 0
    # A new query starts a new flight.
    (task,) = await start(coalescer, query(qid=3))
    assert len(gate.calls) == 2
    gate.answer()
    assert (await task).id == 3


async def test_a_failure_reaches_every_waiter() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    tasks = await start(coalescer, query(qid=1), query(qid=2), query(qid=3))
    failure = ResolveFailure(dns.rcode.SERVFAIL, 22)
    gate.fail(failure)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results == [failure, failure, failure]
    assert coalescer.statistics().in_flight == 0


async def test_a_failure_after_the_leader_left_reaches_the_rest() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    leader, follower = await start(coalescer, query(qid=1), query(qid=2))
    leader.cancel()
    await wait_all_tasks_blocked()
    gate.fail(ResolveFailure(dns.rcode.SERVFAIL))
    with pytest.raises(ResolveFailure):
        await follower
    assert coalescer.statistics().in_flight == 0


async def test_a_query_after_completion_starts_a_new_flight() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)
    (first,) = await start(coalescer, query(qid=1))
    gate.answer()
    assert (await first).id == 1
    assert coalescer.statistics().in_flight == 0
    (second,) = await start(coalescer, query(qid=2))
    assert len(gate.calls) == 2 and coalescer.statistics().coalesced == 0
    gate.answer()
    assert (await second).id == 2


async def test_messages_without_one_question_pass_through() -> None:
    class Echo:
        async def resolve(self, request: Request) -> dns.message.Message:
            return request.message

    message = dns.message.Message(id=9)
    assert await Coalescer(Echo()).resolve(request(message)) is message


async def test_the_first_waiter_changing_its_answer_does_not_change_the_copies() -> None:
    gate = Gate()
    coalescer = Coalescer(gate)

    async def leader() -> dns.message.Message:
        response = await coalescer.resolve(request(query(qid=1, use_edns=0)))
        response.answer.clear()  # e.g. the listener re-rendering for its transport
        response.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(12, bytes(40))])
        return response

    first = asyncio.create_task(leader())
    await wait_all_tasks_blocked()
    (second,) = await start(coalescer, query(qid=2, use_edns=0))
    gate.answer()
    mutated, copy = await asyncio.gather(first, second)
    assert not mutated.answer
    assert copy.answer and not copy.options and copy.id == 2
