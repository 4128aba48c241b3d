"""Completing CNAME chains an upstream left incomplete (as Unbound does for forward zones).

An authoritative server does not follow a CNAME out of its zones (RFC 1034 §4.3.2 step
3a: it answers with the CNAME and stops; RFC 6604 §2). Forwarding ``home.arpa`` or a
company zone to such a server (``[[forward_zone]]``), a query for ``printer.home.arpa.``
gets only ``printer.home.arpa. CNAME printer.vendor.example.``: no address. A recursive
upstream returns the whole chain, so this only matters when the chain is incomplete.

**Incomplete.** A NOERROR answer to a question of any type but CNAME and ANY whose
answer section holds no RRset of the type, and a CNAME at the question's name (nsd
synthesises a CNAME under a DNAME: followed the same way). The wire path decides it
with :func:`dnstls.resolver.wire.needs_chase` (a look at the first answer record in
the usual case), the message path with :func:`incomplete`: a complete answer costs no
more than that, a cache hit nothing.

**Following.** The chain is followed through the answer to its last name, the target,
and the target is asked of this service's own pipeline (:attr:`CnameChase.front`, local
data first), so it is routed exactly as a client query for it would be -- local data,
the cache, a forward zone or the default upstreams -- with the client's CD and DO bits
and EDNS size, RD set and the client query's deadline. The target's answer is itself
completed the same way when it is incomplete, each step a query of its own, so each
name's cached answer is complete. At most :data:`MAX_STEPS` targets are asked for one
client query (Unbound's ``MAX_RESTART_COUNT``, 11: measured on loopback, a chain of 11
CNAMEs across two forward zones is answered, one of 12 gets SERVFAIL); the request's
``tags[CHAIN_TAG]`` carries the names followed so far from one step to the next.

**What the client gets**, as Unbound 1.17 answers (measured against nsd, see
docs/upstreams.md): the answer section of the first answer, then the target's answer
section (each record with its own TTL), RCODE, authority and EDNS errors of the
target's answer (NXDOMAIN or NODATA with the target zone's SOA), no additional section,
AD only if every part had it; the header is ours as for every forwarded answer (AA
clear, RA set). A loop (a name met twice), a chain longer than the limit, a target
that fails (SERVFAIL, timeouts, an upstream down) or an answer that declines it give
SERVFAIL with an Extended DNS Error -- the target's, its text saying which target --
within the client query's deadline, as Unbound answers SERVFAIL. Unlike Unbound, a
target in local data is answered from it (Unbound's iterator does not look at local
data for a target: measured, SERVFAIL).

**Cache.** The completed answer is what the cache keeps under the client's question
(its lifetime is the smallest TTL of its records, as for any answer); each target's
answer is kept under its own question by the step that asked it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnstls.proto import edns
from dnstls.proto.answers import EDNS_PAYLOAD, Transport
from dnstls.proto.cachekey import KEY_CD, KEY_DO
from dnstls.resolver.base import Request, ResolveFailure, Resolver, servfail

log = logging.getLogger("dnstls.resolver.chase")

#: Targets asked for one client query at most (Unbound's MAX_RESTART_COUNT).
MAX_STEPS = 11
#: Seconds past the client query's deadline after which a step is given up (its
#: stages end at the deadline themselves; the message path's listener waits 0.25 s more)
STEP_GRACE = 0.1
#: The request tag that carries the names of the chain followed so far.
CHAIN_TAG = "cname_chain"
_CNAME = dns.rdatatype.CNAME
_NO_CHASE = frozenset({dns.rdatatype.CNAME, dns.rdatatype.ANY})


def chain_end(qname: dns.name.Name, qtype: int,
              answer: list[dns.rrset.RRset]) -> dns.name.Name | None:
    """The name at which the CNAME chain from ``qname`` in ``answer`` stops without an
    RRset of ``qtype`` (the target to ask), or None when there is no chain to complete
    (the data is there, or ``qname`` has no CNAME). Raises :class:`ResolveFailure` for
    a loop inside the answer."""
    cnames: dict[dns.name.Name, dns.name.Name] = {}
    found: set[dns.name.Name] = set()
    for rrset in answer:
        if rrset.rdclass != dns.rdataclass.IN:
            continue
        if rrset.rdtype == _CNAME and len(rrset):
            cnames.setdefault(rrset.name, rrset[0].target)
        elif rrset.rdtype == qtype:
            found.add(rrset.name)
    if qname not in cnames:
        return None
    name = qname
    seen = {name}
    while name in cnames and name not in found:
        name = cnames[name]
        if name in seen:
            raise servfail(dns.edns.EDECode.OTHER, f"CNAME loop at {name}")
        seen.add(name)
    return None if name in found else name


def incomplete(query: dns.message.Message, answer: dns.message.Message) -> bool:
    """True if ``answer`` (to ``query``'s single question) may be an incomplete chain:
    NOERROR, a type that is chased, a CNAME in the answer and no RRset of the type."""
    if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
        return False
    qtype = query.question[0].rdtype
    if qtype in _NO_CHASE:
        return False
    has_cname = False
    for rrset in answer.answer:
        if rrset.rdtype == qtype:
            return False
        if rrset.rdtype == _CNAME:
            has_cname = True
    return has_cname


class CnameChase:
    """The chase: a resolver stage in front of the forwarder (the message path's) and
    the wire path's completer (:meth:`complete_wire`, :meth:`begin`)."""

    def __init__(self, next: Any, *, front: Resolver | None = None,
                 max_steps: int = MAX_STEPS) -> None:
        self.next = next  # the forwarder (or zone router)
        #: Where targets are asked: the service's pipeline (local data first). Set by
        #: the service once built (and on a reload that replaces local data).
        self.front = front
        self.max_steps = max_steps
        self.chased = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[bytes]] = set()  # begin's: kept until done

    def __repr__(self) -> str:
        return f"<CnameChase {self.next!r}>"

    def statistics(self) -> dict[str, int]:
        """``chased``: targets asked; ``chase_failures``: client queries whose chase
        failed (SERVFAIL)."""
        return {"chased": self.chased, "chase_failures": self.failed}

    # -- message path ------------------------------------------------------------------
    async def resolve(self, request: Request) -> dns.message.Message:
        answer: dns.message.Message = await self.next.resolve(request)
        query = request.message
        if len(query.question) == 1 and incomplete(query, answer):
            chain = request.tags.get(CHAIN_TAG)
            return await self.complete(query, answer, deadline=request.deadline,
                                       transport=request.transport,
                                       chain=chain if isinstance(chain, tuple) else ())
        return answer

    # -- wire path ---------------------------------------------------------------------
    async def complete_wire(self, key: bytes, upstream: bytes, *, flags: int, payload: int,
                            deadline: float) -> bytes:
        """``upstream`` (the response bytes for the question of cache key ``key``,
        :func:`~dnstls.resolver.wire.needs_chase` said so) completed: response bytes for
        the same question, or ResolveFailure."""
        answer = dns.message.from_wire(upstream)
        query = dns.message.Message(id=answer.id)
        query.flags = dns.flags.RD | (dns.flags.CD if key[-1] & KEY_CD else 0)
        query.question = list(answer.question)
        query.use_edns(0, dns.flags.DO if key[-1] & KEY_DO else 0,
                       max(512, min(4096, payload or EDNS_PAYLOAD)), options=[])
        if flags & dns.flags.AD:
            query.flags |= dns.flags.AD
        if not incomplete(query, answer):  # needs_chase looks at types only
            return upstream
        done = await self.complete(query, answer, deadline=deadline,
                                   transport=Transport.TLS, chain=())
        done.id = answer.id
        wire: bytes = done.to_wire()
        return wire

    def begin(self, flight: Any, upstream: bytes, deadline: float) -> None:
        """The task-free wire path's chase: :meth:`complete_wire` in a task of its own,
        then ``flight.settle(answer, None)`` or ``flight.settle(None, failure)``."""
        query = flight.query
        task = asyncio.ensure_future(self.complete_wire(
            flight.key, upstream, flags=query.flags, payload=query.payload,
            deadline=deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda done: _settle(flight, done))

    # -- the chase ---------------------------------------------------------------------
    async def complete(self, query: dns.message.Message, answer: dns.message.Message, *,
                       deadline: float, transport: Transport,
                       chain: tuple[dns.name.Name, ...]) -> dns.message.Message:
        """``answer`` (incomplete, to ``query``) completed with its target's answer.
        ``chain``: the names asked so far (empty for a client's query: then a failure
        is counted in ``chase_failures``, once per client query)."""
        try:
            return await self._complete(query, answer, deadline=deadline,
                                        transport=transport, chain=chain)
        except ResolveFailure:
            if not chain:
                self.failed += 1
            raise

    async def _complete(self, query: dns.message.Message, answer: dns.message.Message, *,
                        deadline: float, transport: Transport,
                        chain: tuple[dns.name.Name, ...]) -> dns.message.Message:
        question = query.question[0]
        target = chain_end(question.name, question.rdtype, answer.answer)
        if target is None:
            return answer
        chain = chain or (question.name,)
        if target in chain:
            raise servfail(dns.edns.EDECode.OTHER, f"CNAME loop at {target}")
        if len(chain) > self.max_steps:
            raise servfail(dns.edns.EDECode.OTHER,
                           f"CNAME chain longer than {self.max_steps} steps at {target}")
        front = self.front
        if front is None:  # not wired (a bare forwarder): relayed as it came
            return answer
        self.chased += 1
        step = _target_query(query, target, question.rdtype, question.rdclass)
        request = Request(step, transport, None, deadline, tags={CHAIN_TAG: (*chain, target)})
        try:
            # the deadline bounds the step even where it joins a query in flight for the
            # same name (the coalescer) that was given a later one; a moment after it,
            # so that the stages' own failures (naming the upstream) come first
            async with asyncio.timeout_at(deadline + STEP_GRACE):
                found = await front.resolve(request)
        except TimeoutError:
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                           f"CNAME target {target}: query deadline passed") from None
        except ResolveFailure as failure:
            if failure.rcode != dns.rcode.SERVFAIL:
                raise servfail(dns.edns.EDECode.OTHER if failure.ede is None else failure.ede,
                               f"CNAME target {target}: "
                               f"{dns.rcode.to_text(dns.rcode.Rcode.make(failure.rcode))}"
                               + (f" ({failure.text})" if failure.text else "")) from None
            text = failure.text or "SERVFAIL"
            if not text.startswith("CNAME "):  # the step nearest the failure says it
                text = f"CNAME target {target}: {text}"
            raise ResolveFailure(failure.rcode, failure.ede, text) from None
        rcode = found.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            ede, detail = _ede(found)
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY if ede is None else ede,
                           f"CNAME target {target}: {dns.rcode.to_text(rcode)}"
                           + (f" ({detail})" if detail else ""))
        return _joined(answer, found)


def _settle(flight: Any, done: asyncio.Future[bytes]) -> None:
    if done.cancelled():
        flight.settle(None, asyncio.CancelledError())
        return
    exc = done.exception()
    if exc is not None:
        flight.settle(None, exc)
    else:
        flight.settle(done.result(), None)


def _target_query(query: dns.message.Message, target: dns.name.Name,
                  rdtype: dns.rdatatype.RdataType, rdclass: dns.rdataclass.RdataClass,
                  ) -> dns.message.Message:
    """The query for ``target``: RD, the client's CD and AD, its DO and EDNS size."""
    step = dns.message.make_query(target, rdtype, rdclass, use_edns=False)
    step.flags = dns.flags.RD | (query.flags & (dns.flags.CD | dns.flags.AD))
    if query.edns >= 0:
        step.use_edns(0, query.ednsflags & dns.flags.DO, query.payload, options=[])
    return step


def _ede(message: dns.message.Message) -> tuple[int | None, str | None]:
    for option in message.options:
        if option.otype == edns.EDE:
            assert isinstance(option, dns.edns.EDEOption)
            return int(option.code), option.text
    return None, None


def _joined(first: dns.message.Message, target: dns.message.Message) -> dns.message.Message:
    """``first``'s answer section, then ``target``'s; the rest from ``target``."""
    joined = dns.message.Message(id=first.id)
    joined.flags = first.flags & ~dns.flags.AD
    if first.flags & target.flags & dns.flags.AD:
        joined.flags |= dns.flags.AD
    joined.question = list(first.question)
    joined.answer = list(first.answer)
    for rrset in target.answer:
        if not any(have.name == rrset.name and have.rdtype == rrset.rdtype
                   and have.covers == rrset.covers for have in joined.answer):
            joined.answer.append(rrset)
    joined.authority = list(target.authority)
    if first.edns >= 0:
        options = [o for o in first.options if o.otype == edns.EDE]
        options += [o for o in target.options if o.otype == edns.EDE]
        joined.use_edns(0, first.ednsflags, first.payload, options=options)
    joined.set_rcode(target.rcode())
    return joined


__all__ = ["CHAIN_TAG", "MAX_STEPS", "CnameChase", "chain_end", "incomplete"]

