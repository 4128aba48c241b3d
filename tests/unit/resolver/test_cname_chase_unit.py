"""resolver/chase.py and wire.needs_chase: detecting an incomplete CNAME chain, asking
its target, joining the answers, the loop and length limits; the wire path's flight
waits for the completed answer."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from dnstls.compiled import is_compiled
from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import key_from_message, read_query
from dnstls.resolver.base import Request, ResolveFailure, servfail
from dnstls.resolver.cache import Cache
from dnstls.resolver.chase import CHAIN_TAG, CnameChase, chain_end, incomplete
from dnstls.resolver.wire import WireFlight, WireForwarder, needs_chase

N = dns.name.from_text


def response(qname: str, rdtype: str, *records: tuple[str, str, str],
             rcode: int = 0, ttl: int = 300, soa: str | None = None) -> dns.message.Message:
    query = dns.message.make_query(qname, rdtype, use_edns=False)
    out = make_response(query)
    for owner, rtype, data in records:
        out.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, data))
    if soa is not None:
        out.authority.append(dns.rrset.from_text(
            soa, 60, "IN", "SOA", f"ns.{soa} h.{soa} 1 3600 600 86400 60"))
    out.set_rcode(dns.rcode.Rcode.make(rcode))
    return out


def key_of(qname: str, rdtype: str) -> bytes:
    return key_from_message(dns.message.make_query(qname, rdtype, use_edns=False))


# -- detection ------------------------------------------------------------------------

@pytest.mark.parametrize(("records", "rdtype", "rcode", "expected"), [
    ([("a.x.", "A", "192.0.2.1")], "A", 0, False),  # the usual answer
    ([("a.x.", "CNAME", "b.y.")], "A", 0, True),
    ([("a.x.", "CNAME", "b.y."), ("b.y.", "A", "192.0.2.1")], "A", 0, False),
    ([("a.x.", "CNAME", "b.y."), ("b.y.", "CNAME", "c.z.")], "AAAA", 0, True),
    ([("a.x.", "CNAME", "b.y.")], "CNAME", 0, False),  # the question is the CNAME
    ([("a.x.", "CNAME", "b.y.")], "ANY", 0, False),
    ([("a.x.", "CNAME", "b.y.")], "A", 3, False),  # NXDOMAIN: the chain ends there
    ([], "A", 0, False),  # NODATA
    ([("a.x.", "DNAME", "y."), ("b.a.x.", "CNAME", "b.y.")], "A", 0, True),
    ([("a.x.", "TXT", "hi")], "A", 0, False),  # odd, but no CNAME: relayed
])
def test_needs_chase_and_incomplete_agree(records: list[tuple[str, str, str]], rdtype: str,
                                          rcode: int, expected: bool) -> None:
    qname = "b.a.x." if records and records[0][1] == "DNAME" else "a.x."
    message = response(qname, rdtype, *records, rcode=rcode)
    query = dns.message.make_query(qname, rdtype, use_edns=False)
    wire = message.to_wire()
    assert needs_chase(wire, key_of(qname, rdtype)) is expected
    assert incomplete(query, message) is expected


def test_needs_chase_stops_at_a_broken_record() -> None:
    wire = response("a.x.", "A", ("a.x.", "CNAME", "b.y.")).to_wire()
    key = key_of("a.x.", "A")
    for cut in range(12, len(wire)):
        assert needs_chase(wire[:cut], key) in (False, True)  # never raises
    assert not needs_chase(wire[:len(wire) - 12], key)


def test_chain_end() -> None:
    chain = response("a.x.", "A", ("a.x.", "CNAME", "b.y."), ("b.y.", "CNAME", "c.z.")).answer
    assert chain_end(N("a.x."), dns.rdatatype.A, chain) == N("c.z.")
    assert chain_end(N("A.X."), dns.rdatatype.A, chain) == N("c.z.")  # any case
    done = response("a.x.", "A", ("a.x.", "CNAME", "b.y."), ("b.y.", "A", "192.0.2.1"))
    assert chain_end(N("a.x."), dns.rdatatype.A, done.answer) is None
    other = response("q.x.", "A", ("a.x.", "CNAME", "b.y."))  # not at the question
    assert chain_end(N("q.x."), dns.rdatatype.A, other.answer) is None
    loop = response("a.x.", "A", ("a.x.", "CNAME", "b.y."), ("b.y.", "CNAME", "a.x."))
    with pytest.raises(ResolveFailure, match=r"CNAME loop at a\.x\."):
        chain_end(N("a.x."), dns.rdatatype.A, loop.answer)


# -- the chase (message path) ---------------------------------------------------------

class Table:
    """A stage answering from a dict name -> message (a failure raised), recording."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int, dict[str, object]]] = []

    async def resolve(self, request: Request) -> dns.message.Message:
        question = request.message.question[0]
        name = question.name.to_text().lower()
        self.asked.append((name, int(request.message.flags), dict(request.tags)))
        found = self.answers[name]
        if isinstance(found, BaseException):
            raise found
        reply = make_response(request.message)
        reply.answer = list(found.answer)
        reply.authority = list(found.authority)
        reply.set_rcode(found.rcode())
        if found.flags & dns.flags.AD:
            reply.flags |= dns.flags.AD
        return reply


def request_for(name: str, rdtype: str = "A", *, flags: int = dns.flags.RD,
                tags: dict[str, object] | None = None) -> Request:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    query.flags = flags
    return Request(query, Transport.TLS, None, 1e9, tags=tags or {})


def chained(answers: dict[str, Any]) -> tuple[CnameChase, Table]:
    """A chase over a forwarder answering ``answers``, its front the same forwarder
    chased (so each step is completed in turn, as the service's pipeline does)."""
    table = Table(answers)
    chase = CnameChase(table)
    chase.front = chase
    return chase, table


async def test_target_asked_and_answers_joined() -> None:
    chase, table = chained({
        "p.corp.": response("p.corp.", "A", ("p.corp.", "CNAME", "p.vendor.")),
        "p.vendor.": response("p.vendor.", "A", ("p.vendor.", "A", "192.0.2.7"), ttl=30),
    })
    got = await chase.resolve(request_for("p.corp.", flags=dns.flags.RD | dns.flags.CD))
    assert [(r.name.to_text(), r.rdtype, r.ttl) for r in got.answer] == [
        ("p.corp.", dns.rdatatype.CNAME, 300), ("p.vendor.", dns.rdatatype.A, 30)]
    assert got.rcode() == dns.rcode.NOERROR and got.question[0].name == N("p.corp.")
    assert [name for name, _, _ in table.asked] == ["p.corp.", "p.vendor."]
    _, flags, tags = table.asked[1]
    assert flags & dns.flags.CD and flags & dns.flags.RD  # the client's CD kept
    assert tags == {CHAIN_TAG: (N("p.corp."), N("p.vendor."))}
    assert chase.statistics() == {"chased": 1, "chase_failures": 0}


async def test_negative_target_gives_its_rcode_and_soa_and_ad_needs_both() -> None:
    target = response("m.vendor.", "A", rcode=3, soa="vendor.")
    target.flags |= dns.flags.AD
    chase, _ = chained({
        "n.corp.": response("n.corp.", "A", ("n.corp.", "CNAME", "m.vendor.")),
        "m.vendor.": target})
    got = await chase.resolve(request_for("n.corp."))
    assert got.rcode() == dns.rcode.NXDOMAIN
    assert [r.name.to_text() for r in got.authority] == ["vendor."]
    assert not got.flags & dns.flags.AD  # the first part had no AD


async def test_limit_counts_steps_and_loop_is_servfail() -> None:
    answers: dict[str, Any] = {}
    for i in range(20):
        answers[f"n{i}."] = response(f"n{i}.", "A", (f"n{i}.", "CNAME", f"n{i + 1}."))
    answers["n20."] = response("n20.", "A", ("n20.", "A", "192.0.2.1"))
    chase, table = chained(answers)
    chase.max_steps = 5
    ok = await chase.resolve(request_for("n15."))  # 5 targets: n16..n20
    assert len(ok.answer) == 6
    table.asked.clear()
    with pytest.raises(ResolveFailure) as failed:
        await chase.resolve(request_for("n14."))  # 6 targets
    assert failed.value.rcode == dns.rcode.SERVFAIL
    assert failed.value.ede == dns.edns.EDECode.OTHER
    assert failed.value.text == "CNAME chain longer than 5 steps at n20."
    assert len(table.asked) == 6  # n14 and 5 targets; the sixth never asked
    loop, _ = chained({"a.": response("a.", "A", ("a.", "CNAME", "b.")),
                       "b.": response("b.", "A", ("b.", "CNAME", "a."))})
    with pytest.raises(ResolveFailure, match=r"CNAME loop at a\."):
        await loop.resolve(request_for("a."))


async def test_failed_target_is_servfail_naming_it() -> None:
    chase, _ = chained({
        "p.corp.": response("p.corp.", "A", ("p.corp.", "CNAME", "p.vendor.")),
        "p.vendor.": servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY, "timed out: up1")})
    with pytest.raises(ResolveFailure) as failed:
        await chase.resolve(request_for("p.corp."))
    assert failed.value.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    assert failed.value.text == "CNAME target p.vendor.: timed out: up1"
    refused, _ = chained({
        "p.corp.": response("p.corp.", "A", ("p.corp.", "CNAME", "p.vendor.")),
        "p.vendor.": response("p.vendor.", "A", rcode=5)})
    with pytest.raises(ResolveFailure, match=r"CNAME target p\.vendor\.: REFUSED") as failed:
        await refused.resolve(request_for("p.corp."))
    assert failed.value.rcode == dns.rcode.SERVFAIL


async def test_without_a_front_the_answer_is_relayed() -> None:
    table = Table({"p.corp.": response("p.corp.", "A", ("p.corp.", "CNAME", "p.vendor."))})
    got = await CnameChase(table).resolve(request_for("p.corp."))
    assert len(got.answer) == 1 and len(table.asked) == 1


# -- the wire path ----------------------------------------------------------------------

class OneAnswer:
    """A forwarder with both wire APIs whose answer is one fixed response."""

    def __init__(self, answer: dns.message.Message) -> None:
        self.answer = answer
        self.callbacks: list[Any] = []

    def _bytes(self, question: bytes) -> bytes:
        reply = dns.message.from_wire(self.answer.to_wire())
        reply.id = 0
        return reply.to_wire()

    async def resolve_wire(self, question: bytes, **kw: Any) -> bytes:
        return self._bytes(question)

    def start_wire(self, question: bytes, *, callback: Any, **kw: Any) -> bool:
        asyncio.get_running_loop().call_soon(callback, self._bytes(question), None)
        return True


#: Python may not subclass a compiled class (as in test_wire_start.py): the pure-Python
#: pass runs these; the integration tests cover the compiled task-free path
needs_subclass = pytest.mark.skipif(
    is_compiled("dnstls.resolver.wire"),
    reason="subclasses WireFlight, which a compiled wire module forbids from Python")


class Landing(WireFlight):
    __slots__ = ("outcome",)

    def answered(self, upstream: bytes | None, exc: BaseException | None) -> None:
        self.outcome.set_result((upstream, exc))


@pytest.mark.parametrize("task_free", [True, False])
async def test_wire_path_waits_for_the_completed_answer(task_free: bool) -> None:
    first = response("p.corp.", "A", ("p.corp.", "CNAME", "p.vendor."))
    chase, table = chained({
        "p.vendor.": response("p.vendor.", "A", ("p.vendor.", "A", "192.0.2.7"))})
    cache = Cache()
    loop = asyncio.get_running_loop()
    wire = WireForwarder(OneAnswer(first), cache, loop.time)
    wire.chase = chase
    query = read_query(dns.message.make_query("p.corp.", "A", id=7, use_edns=0).to_wire())
    assert query is not None
    if task_free:
        if is_compiled("dnstls.resolver.wire"):
            pytest.skip("subclasses WireFlight (compiled): the pure-Python pass runs it")
        flight = Landing()
        flight.outcome = loop.create_future()
        flight.query = query
        assert wire.start(flight, loop.time() + 5)
        upstream, exc = await flight.outcome
        assert exc is None and upstream is not None
        out = wire.render(query, upstream)
    else:
        out = await wire.answer(query, deadline=loop.time() + 5)
    got = dns.message.from_wire(out)
    assert got.id == 7 and not got.flags & dns.flags.AA and got.flags & dns.flags.RA
    assert [rr.to_text() for rrset in got.answer for rr in rrset] == [
        "p.vendor.", "192.0.2.7"]
    assert [name for name, _, _ in table.asked] == ["p.vendor."]
    # the completed answer is what the cache keeps for the question
    hit = cache.lookup_wire(query.key, 9, loop.time())
    assert hit is not None and len(dns.message.from_wire(hit).answer) == 2


@needs_subclass
async def test_wire_path_failure_of_the_chase_lands_as_the_failure() -> None:
    first = response("p.corp.", "A", ("p.corp.", "CNAME", "p.corp."))  # itself
    chase, _ = chained({})
    loop = asyncio.get_running_loop()
    wire = WireForwarder(OneAnswer(first), Cache(), loop.time)
    wire.chase = chase
    query = read_query(dns.message.make_query("p.corp.", "A", use_edns=0).to_wire())
    assert query is not None
    flight = Landing()
    flight.outcome = loop.create_future()
    flight.query = query
    assert wire.start(flight, loop.time() + 5)
    upstream, exc = await flight.outcome
    assert upstream is None and isinstance(exc, ResolveFailure)
    assert "CNAME loop at p.corp." in str(exc)
    assert wire.statistics()["in_flight"] == 0


async def test_a_step_that_joins_a_longer_wait_ends_at_the_deadline() -> None:
    class Stuck:
        """A front whose answer never comes (a query in flight with a later deadline)."""

        async def resolve(self, request: Request) -> dns.message.Message:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    table = Table({"p.corp.": response("p.corp.", "A", ("p.corp.", "CNAME", "p.vendor."))})
    chase = CnameChase(table, front=Stuck())
    request = request_for("p.corp.")
    request.deadline = asyncio.get_running_loop().time() + 0.05
    with pytest.raises(ResolveFailure) as failed:
        await chase.resolve(request)
    assert failed.value.text == "CNAME target p.vendor.: query deadline passed"
    assert failed.value.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    assert chase.statistics() == {"chased": 1, "chase_failures": 1}
