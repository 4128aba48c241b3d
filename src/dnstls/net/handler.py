"""The query path shared by every listener: parse, resolve, render.

Listeners hand raw client messages to :class:`QueryHandler` and write back what it
returns. Parsing and validation are :func:`dnstls.proto.answers.parse_query`; answers
come from the resolver pipeline; transport-specific EDNS (padding, keepalive,
truncation) is applied by :func:`dnstls.proto.answers.finalize`. Failures of the
pipeline become SERVFAIL with an Extended DNS Error -- never silence, never a crash.

Statistics are plain counters (cheap on the hot path); :mod:`dnstls.metrics` turns them
into Prometheus metrics when scraped.

The fast path (:meth:`QueryHandler.fast`) answers cache hits without dnspython and
without a task: :func:`dnstls.proto.cachekey.read_query` reads the key straight from the
question bytes and the cache returns its stored wire bytes with the ID, TTLs, question
case, keepalive and padding patched in. Anything it cannot read confidently, any miss,
and any UDP answer that would need truncation takes the ordinary path.

NSID (RFC 5001, ``server.nsid``): a query that asks for it gets the configured NSID
option in every answer, on every path -- on the wire paths as one more rendered option
beside keepalive (so padding is computed with it, and the exact-repeat memo, keyed by
the query's bytes, keeps queries with and without it apart), on the message path and
in error answers through :func:`~dnstls.proto.answers.finalize` -- as Unbound answers,
checked on loopback (1.17): FORMERR, NOTIMP, REFUSED and SERVFAIL carry it, BADVERS
does not, and neither does access control's REFUSED (Unbound's is a bare header).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from dnstls.errors import QueryDropped
from dnstls.proto import edns, framing
from dnstls.proto.answers import (
    MIN_UDP,
    NOREC_TEXT,
    Rejection,
    Transport,
    asked_as_in,
    error_response,
    finalize,
    header_error,
    parse_query,
    refused_query,
    truncate_wire,
    with_question_class,
)
from dnstls.proto.cachekey import (
    KEY_DO,
    WireQuery,
    asking_in,
    carries_cookie,
    key_from_message,
    read_query,
)
from dnstls.resolver.base import Request, ResolveFailure, Resolver, servfail
from dnstls.resolver.cache import ExactMemo
from dnstls.resolver.wire import WireFlight, WireForwarder

log = logging.getLogger("dnstls.net.handler")
qlog = logging.getLogger("dnstls.queries")


_RCODE_TEXT = [dns.rcode.to_text(dns.rcode.Rcode.make(i)) for i in range(16)]
_MAX_MESSAGE = framing.MAX_MESSAGE
_RD = int(dns.flags.RD)
_TLS = Transport.TLS
_ANY_CLASS = int(dns.rdataclass.ANY)


#: The EDE text of the SERVFAIL for an RD=0 query the cache cannot answer.
NOREC_MISS_TEXT = "RD=0 and not in the cache: not forwarded"


class WireCache(Protocol):
    def lookup_wire(self, key: bytes, query_id: int, now: float, rd: bool = True,
                    qname: bytes | None = None, edns: bool = True, options: bytes = b"",
                    pad_block: int = 0, memo: ExactMemo | None = None,
                    exact: bytes = b"") -> bytes | None: ...

    def lookup_exact(self, memo: ExactMemo, exact: bytes, wire: bytes, now: float,
                     ) -> bytes | None: ...

    def answer_exact(self, memo: ExactMemo, messages: list[bytes], start: int,
                     out: list[bytes], now: float) -> tuple[int, int]: ...

    def holds(self, key: bytes, now: float) -> bool: ...


class LocalAnswers(Protocol):
    """Local data's side of the fast path (:class:`dnstls.resolver.local.LocalData`)."""

    def covers_key(self, key: bytes) -> bool: ...

    def lookup_wire(self, key: bytes, query_id: int, rd: bool = True,
                    qname: bytes | None = None, edns: bool = True, options: bytes = b"",
                    pad_block: int = 0) -> bytes | None: ...


class _Forwarded(WireFlight):
    """A query of :meth:`QueryHandler.forward_wire` (one object for it down to the
    forwarder and back, :class:`WireFlight`): what its answer needs, and the handler's
    part when it lands (:meth:`answered`, after the wire path's flight bookkeeping)."""

    __slots__ = ("deliver", "forwarder", "handler", "keys", "options", "pad", "stream",
                 "transport", "wire")

    handler: QueryHandler
    forwarder: WireForwarder
    wire: bytes
    transport: Transport
    options: bytes
    pad: int
    deliver: Callable[[bytes], None]
    stream: bool
    keys: list[tuple[str, str]]

    def answered(self, upstream: bytes | None, exc: BaseException | None) -> None:
        handler = self.handler
        handler.in_flight -= 1
        query = self.query
        try:
            if exc is not None or upstream is None:
                raise exc or RuntimeError("no answer")
            out = self.forwarder.render(query, upstream, self.options, self.pad)
        except asyncio.CancelledError:  # the TCP fallback's task (shutdown)
            out = handler._failed_wire(query, self.wire, self.transport, servfail(
                dns.edns.EDECode.OTHER, "query cancelled"), self.options, self.pad)
        except Exception as error:
            out = handler._error_wire(query, self.wire, self.transport, error, self.options,
                                      self.pad)
        if self.stream and len(out) <= _MAX_MESSAGE:  # _finish_wire's stream case inline
            handler._responses[self.keys[out[3] & 0xF]] += 1
            self.deliver(out)
        else:
            self.deliver(handler._finish_wire(query, out, self.stream, self.keys))


def _never(_query: WireQuery) -> bool:
    return False


class QueryHandler:
    def __init__(self, pipeline: Resolver, *, query_timeout: float = 4.0,
                 keepalive: float | None = None, log_queries: bool = False,
                 cache: WireCache | None = None, clock: Callable[[], float] | None = None,
                 wire: WireForwarder | None = None,
                 local: LocalAnswers | None = None, exact_memo: bool = True,
                 nsid: bytes | None = None) -> None:
        self.pipeline = pipeline
        self.local = local
        self.query_timeout = query_timeout
        self.keepalive = keepalive
        self.log_queries = log_queries
        self.cache = cache
        self.wire = wire
        self.clock = clock or time.monotonic
        self._keepalive_wire = (edns.keepalive_option(keepalive).to_wire() or b""
                                if keepalive is not None else b"")
        if self._keepalive_wire:
            self._keepalive_wire = struct.pack("!HH", edns.KEEPALIVE,
                                               len(self._keepalive_wire)) + self._keepalive_wire
        self.nsid = nsid
        # The options of an answer to a query with NSID (it asked: RFC 5001 §2.1), by
        # "keepalive too" (stream and asked for): b"" and keepalive without an NSID.
        nsid_wire = edns.nsid_option_wire(nsid) if nsid is not None else b""
        self._nsid_options = (nsid_wire, self._keepalive_wire + nsid_wire)
        self._responses: Counter[tuple[str, str]] = Counter()  # (transport, rcode)
        # The fast path's per-transport settings and counter keys, built once: enum
        # attribute access, tuple building and Flag arithmetic cost ~1 µs a query.
        self._fast_plans = {
            t: (t is not Transport.UDP,
                edns.SERVER_BLOCK if t is Transport.TLS else 0,
                [(t.value, text) for text in _RCODE_TEXT])
            for t in Transport}
        self._tls_plan = self._fast_plans[Transport.TLS]
        self._eligible: Callable[[WireQuery], bool] | None = None
        #: False: forwarded queries take the message path even with a wire path (the
        #: stub while it validates DNSSEC, :meth:`use_wire_path`)
        self.wire_path = True
        self._choose_eligible()
        # Answers to exact repeats of a query (its bytes after the ID), per stream
        # transport (UDP answers may need truncation: not memoised); see ExactMemo.
        # (exact_memo=False: the reference the tests compare it with)
        self._memos: dict[Transport, ExactMemo] = {
            t: ExactMemo() for t in Transport if t is not Transport.UDP and exact_memo}
        self._tls_memo = self._memos.get(Transport.TLS)
        self.rejected: Counter[str] = Counter()  # by reason class
        self.in_flight = 0
        self.internal_errors = 0

    def _choose_eligible(self) -> None:
        # The service hands the wire path local data's own covers_key as is_local:
        # route has asked it already, so the path's eligible() would walk the name again.
        wire, local = self.wire, self.local
        if wire is not None and not self.wire_path:
            self._eligible = _never
            return
        self._eligible = (None if wire is None
                          or (local is not None
                              and getattr(wire, "is_local", None) == local.covers_key)
                          else wire.eligible)

    def use_wire_path(self, on: bool) -> None:
        """Forward on the wire path (when there is one) or, ``on`` False, take the
        message path for every forwarded query from now on: ``dnstls stub`` switches
        it off while it validates DNSSEC (a reload may switch validation on or off).
        Queries already routed to the wire path finish there."""
        self.wire_path = on
        self._choose_eligible()

    def replace_local(self, local: LocalAnswers, pipeline: Resolver) -> None:
        """Answer from ``local`` (and resolve through ``pipeline``, the stage chain it
        heads) from now on: a reload's new local data. The wire path's ``is_local`` is
        the caller's to set first."""
        self.local = local
        self.pipeline = pipeline
        self._choose_eligible()

    @property
    def responses(self) -> Counter[tuple[str, str]]:
        """Answers given, by (transport, RCODE) (the memo's own counts added first)."""
        responses = self._responses
        for transport, memo in self._memos.items():
            counts = memo.counts
            if not any(counts):
                continue
            keys = self._fast_plans[transport][2]
            for rcode, n in enumerate(counts):
                if n:
                    responses[keys[rcode]] += n
                    counts[rcode] = 0
        return responses

    def answer_exact(self, messages: list[bytes], start: int, transport: Transport,
                     out: list[bytes]) -> tuple[int, int]:
        """Answer exact repeats among ``messages[start:]`` from the memo, in order, up to
        the first that is not one (:meth:`Cache.answer_exact`: framed answers appended
        to ``out``); returns that message's index and the size of the answers. What
        :meth:`route` would answer for each of them, without a call per message."""
        memo = self._tls_memo if transport is _TLS else self._memos.get(transport)
        cache = self.cache
        if memo is None or cache is None or self.log_queries or memo.resting:
            return start, 0
        return cache.answer_exact(memo, messages, start, out, self.clock())

    def fast(self, wire: bytes, transport: Transport) -> bytes | None:
        """The answer from the cache's stored bytes, or None to take another path."""
        routed = self.route(wire, transport)
        return routed if isinstance(routed, bytes) else None

    def route(self, wire: bytes, transport: Transport) -> bytes | WireQuery | None:
        """Where a raw query goes: its answer from the cache or from local data's built
        answers (bytes), the wire-level forwarding path (the WireQuery to hand to
        :meth:`answer_wire`), or None for the message pipeline (:meth:`parse` then
        :meth:`answer`)."""
        cache = self.cache
        local = self.local
        if (cache is None and self.wire is None and local is None) or self.log_queries:
            return None
        memo = self._tls_memo if transport is _TLS else self._memos.get(transport)
        exact = b""
        if memo is not None and cache is not None:
            # An exact repeat of a query answered from the cache in this second: the
            # saved answer under this query's ID, without reading the query again.
            # (TLS by identity: hashing an Enum member calls Enum.__hash__, Python.)
            if memo.resting:  # exact repeats have been rare: the full path only, for now
                memo.resting -= 1
                memo = None
            else:
                exact = wire[2:]
                out = cache.lookup_exact(memo, exact, wire, self.clock())
                if out is not None:
                    self._responses[self._fast_plans[transport][2][out[3] & 0xF]] += 1
                    return out
                # COOKIE options differ per client (and change): not worth an item;
                # and nothing is saved once the memo has decided to rest
                if memo.resting or (b"\x00\x0a\x00" in exact and carries_cookie(wire)):
                    memo = None
        query = read_query(wire)
        if query is None:
            return None
        key, qid, flags, qname, with_edns, payload, padding, keepalive, nsid = query
        stream, pad_block, keys = (self._tls_plan if transport is _TLS
                                   else self._fast_plans[transport])
        options = (self._nsid_options[1 if stream and keepalive else 0] if nsid
                   else self._keepalive_wire if stream and keepalive else b"")
        out = None
        if cache is not None:
            # positional arguments: keywords cost ~0.1 µs each on this path. An RD=0
            # query's answer is not memoised: the memo is shared by every connection of
            # the transport, and RD=0 from a client of "allow" must be refused
            # (refuse_norec), not answered from what an "allow_snoop" client's got.
            out = cache.lookup_wire(key, qid, self.clock(), flags & _RD != 0, qname,
                                    with_edns, options, pad_block if padding else 0,
                                    memo if flags & _RD else None, exact)
        if out is None:
            if local is None or not local.covers_key(key):
                if self.wire is None or not flags & _RD:
                    return None  # (RD=0, not cached: answer() says SERVFAIL)
                eligible = self._eligible
                return query if eligible is None or eligible(query) else None
            # Local data, default zones and refused classes included (never in the
            # cache, never forwarded): its built answer, or None the first time -- the
            # message path builds and keeps it.
            out = local.lookup_wire(key, qid, flags & _RD != 0, qname, with_edns, options,
                                    pad_block if padding else 0)
            if out is None:
                return None
        if len(out) > (_MAX_MESSAGE if stream
                       else max(MIN_UDP, payload) if with_edns else MIN_UDP):
            return None  # needs truncation: the ordinary path does it
        self._responses[keys[out[3] & 0xF]] += 1
        return out

    async def answer_wire(self, query: WireQuery, wire: bytes, transport: Transport) -> bytes:
        """Forward ``query`` on the wire-level path; the rendered response (never raises
        but cancel). ``wire`` is the raw query, parsed only if an error must be built."""
        assert self.wire is not None
        # One deadline timer per query, the transport's: the UDP exchange and the
        # stream pool both end at ``deadline`` (QueryTimeout), and nothing else on this
        # path waits. The message path's extra asyncio.timeout_at safety net cost ~6 µs
        # per forwarded query here (measured), so this path does without it.
        deadline = asyncio.get_running_loop().time() + self.query_timeout
        stream, pad_block, keys = self._fast_plans[transport]
        options = self._options(query, stream)
        pad = pad_block if query.padding else 0
        self.in_flight += 1
        try:
            out = await self.wire.answer(query, deadline=deadline, options=options,
                                         pad_block=pad)
        except Exception as exc:  # not CancelledError: the task's owner cancelled it
            out = self._error_wire(query, wire, transport, exc, options, pad)
        finally:
            self.in_flight -= 1
        return self._finish_wire(query, out, stream, keys)

    def forward_wire(self, query: WireQuery, wire: bytes, transport: Transport,
                     deliver: Callable[[bytes], None]) -> bool:
        """:meth:`answer_wire` without a task where the path allows it (one upstream, UDP
        or TCP/TLS through the pool; no identical question in flight:
        :meth:`WireForwarder.start`; the DoT/TCP and UDP listeners): ``deliver(out)``
        follows once, from the loop, with the same answer answer_wire would return.
        False: nothing started, run answer_wire in a task.

        Measured (bench/bench_miss.py, fake upstream): the task and the coroutine
        layers cost ~20 µs of a forwarded query's ~40 µs of Python."""
        assert self.wire is not None
        deadline = asyncio.get_running_loop().time() + self.query_timeout
        # TLS's plan by identity (route does the same: Enum.__hash__ is Python)
        stream, pad_block, keys = (self._tls_plan if transport is _TLS
                                   else self._fast_plans[transport])
        options = self._options(query, stream)
        pad = pad_block if query.padding else 0
        forwarded = _Forwarded()
        forwarded.query = query
        forwarded.handler = self
        forwarded.forwarder = self.wire
        forwarded.wire = wire
        forwarded.transport = transport
        forwarded.options = options
        forwarded.pad = pad
        forwarded.deliver = deliver
        forwarded.stream = stream
        forwarded.keys = keys
        if not self.wire.start(forwarded, deadline):
            return False
        self.in_flight += 1
        return True

    def _options(self, query: WireQuery, stream: bool) -> bytes:
        """The rendered EDNS options the wire paths add to ``query``'s answer:
        keepalive (asked for, on a stream) and the NSID (asked for, one configured)."""
        keepalive = stream and query.keepalive
        if query.nsid:
            return self._nsid_options[1 if keepalive else 0]
        return self._keepalive_wire if keepalive else b""

    def _error_wire(self, query: WireQuery, wire: bytes, transport: Transport,
                    exc: Exception, options: bytes, pad: int) -> bytes:
        """The answer when the wire path's exchange raised ``exc``: the failure it names,
        SERVFAIL EDE 22 at the deadline, SERVFAIL EDE 0 and a log line for a bug."""
        if isinstance(exc, ResolveFailure):
            failure = exc
        elif isinstance(exc, TimeoutError):
            failure = servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                               "query deadline passed")
        else:
            self.internal_errors += 1
            log.error("internal error while forwarding a query", exc_info=exc)
            failure = servfail(dns.edns.EDECode.OTHER, "internal error")
        return self._failed_wire(query, wire, transport, failure, options, pad)

    def _finish_wire(self, query: WireQuery, out: bytes, stream: bool,
                     keys: list[tuple[str, str]]) -> bytes:
        """Truncate an answer to the client's UDP size, or to the 65,535 bytes a stream
        can frame (an upstream's answer of about that size with our OPT added; TC=1,
        as Unbound and Knot Resolver answer then), and count its RCODE."""
        limit = (_MAX_MESSAGE if stream
                 else max(MIN_UDP, query.payload) if query.edns else MIN_UDP)
        if len(out) > limit:
            out = truncate_wire(out, len(query.qname) + 4, edns=query.edns,
                                do=bool(query.key[-1] & KEY_DO),
                                options=self._options(query, stream))
        self._responses[keys[out[3] & 0xF]] += 1
        return out

    def _failed_wire(self, query: WireQuery, wire: bytes, transport: Transport,
                     failure: ResolveFailure, options: bytes, pad: int) -> bytes:
        """A stale answer if serve-stale has one, else the error answer (the wire path
        decides both, as the cache stage does on the message path)."""
        assert self.wire is not None
        stale = self.wire.stale_answer(query, options=options, pad_block=pad)
        if stale is not None:
            return stale
        message = parse_query(wire)
        if isinstance(message, Rejection):  # read_query accepted it; be safe anyway
            return message.wire or header_error(wire, dns.rcode.SERVFAIL) or b""
        self.wire.remember_failure(query, message, failure)
        response = error_response(message, failure.rcode, ede=failure.ede, text=failure.text)
        return finalize(response, message, transport,
                        keepalive=self.keepalive if transport.is_stream else None,
                        nsid=self.nsid)

    def parse(self, wire: bytes, transport: Transport) -> dns.message.Message | Rejection:
        parsed = parse_query(wire)
        if isinstance(parsed, Rejection):
            rcode = ("none" if parsed.rcode is None
                     else dns.rcode.to_text(dns.rcode.Rcode.make(parsed.rcode)))
            self.rejected[rcode] += 1
            if parsed.rcode is not None:
                self.responses[(transport.value, rcode)] += 1
            log.debug("rejected message (%s): %s", rcode, parsed.reason)
            # BADVERS without NSID: the query's options are of a version we do not read
            # (and Unbound 1.17 sends none there either)
            return self._rendered(parsed, transport,
                                  nsid=parsed.rcode != dns.rcode.BADVERS)
        return parsed

    def _rendered(self, rejection: Rejection, transport: Transport, *, nsid: bool,
                  ) -> Rejection:
        """``rejection`` rendered for ``transport``: on a stream padded (RFC 7830 §4: a
        padded query gets a padded response) and with keepalive, as every other answer
        there; with ``nsid``, the server's NSID when the query asks for it (any
        transport); as it is otherwise, or when it has no message to render."""
        query = rejection.query
        if rejection.response is None or query is None:
            return rejection
        with_nsid = (nsid and self.nsid is not None and query.edns >= 0
                     and edns.has_option(query, edns.NSID))
        if not (transport.is_stream or with_nsid):
            return rejection
        try:
            out = finalize(rejection.response, query, transport,
                           keepalive=self.keepalive if transport.is_stream else None,
                           nsid=self.nsid if with_nsid else None)
        except dns.exception.TooBig:  # questions echoed up to the frame's size
            return rejection
        return Rejection(out, rejection.rcode, rejection.reason)

    def refuse(self, wire: bytes, transport: Transport) -> Rejection:
        """The answer to a query from a client that access control refuses
        (:func:`dnstls.proto.answers.refused_query`: REFUSED, EDE 18), rendered for
        ``transport`` (on a stream: padded for a padded query on DoT, keepalive), and
        counted with the other responses. ``wire`` None: nothing to send (``fatal``: no
        readable header, the stream is closed)."""
        rejection = refused_query(wire)
        if rejection.wire is None:
            return rejection
        self._responses[(transport.value, "REFUSED")] += 1
        # no NSID: an answer hardly larger than the query (and Unbound's has no OPT)
        return self._rendered(rejection, transport, nsid=False)

    def refuse_norec(self, wire: bytes, transport: Transport) -> bytes | None:
        """The answer to a query with RD=0 (the caller has read the bit) from a client
        whose access-control action is ``allow``, not ``allow_snoop`` (proto/acl.py):
        REFUSED with EDE 18 (Prohibited) and :data:`NOREC_TEXT`, rendered as access
        control's refusal (:meth:`refuse`) and counted with the responses -- unless local
        data answers it (a local or default zone, a refused class): None, take the
        ordinary path, which answers it there (local data is never in the cache and
        never forwarded). None too for a query the ordinary path rejects anyway
        (FORMERR, NOTIMP, ...: nothing of it is resolved). Cache snooping: the cache
        would tell what other clients asked; Unbound refuses these queries too."""
        local = self.local
        query = read_query(wire)
        if query is not None:
            key = asking_in(query[0])
        else:
            parsed = parse_query(wire)
            if isinstance(parsed, Rejection):
                return None
            key = asking_in(key_from_message(parsed))  # parse_query: one question
        if local is not None and local.covers_key(key):
            return None
        rejection = refused_query(wire, NOREC_TEXT)
        if rejection.wire is None:  # read_query or parse_query accepted it: be safe
            return None
        self._responses[(transport.value, "REFUSED")] += 1
        return self._rendered(rejection, transport, nsid=True).wire

    async def answer(self, query: dns.message.Message, transport: Transport,
                     client: tuple[str, int] | None) -> bytes:
        """Resolve ``query`` and return the rendered response (never raises but cancel).
        A question of QCLASS ANY is resolved as class IN (:func:`asked_as_in`) and
        answered with its own class in the question, as Unbound answers it."""
        asked = query
        any_class = query.question[0].rdclass == _ANY_CLASS
        if any_class:
            query = asked_as_in(asked)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.query_timeout
        request = Request(query, transport, client, deadline)
        self.in_flight += 1
        try:
            try:
                if not query.flags & dns.flags.RD and self._norec_miss(query):
                    raise ResolveFailure(dns.rcode.SERVFAIL, dns.edns.EDECode.OTHER,
                                         NOREC_MISS_TEXT)
                async with asyncio.timeout_at(deadline + 0.25):
                    response = await self.pipeline.resolve(request)
            except QueryDropped:
                # a "deny" zone, over UDP (local data raises it for no other transport):
                # no response to count; local data counts it by zone type
                if self.log_queries:
                    q = query.question[0]
                    qlog.info("%s %s %s %s %s -> dropped", transport.value,
                              client[0] if client else "-", q.name,
                              dns.rdatatype.to_text(q.rdtype),
                              dns.rdataclass.to_text(q.rdclass))
                return b""
            except ResolveFailure as failure:
                response = error_response(query, failure.rcode, ede=failure.ede,
                                          text=failure.text)
            except TimeoutError:
                response = error_response(query, dns.rcode.SERVFAIL,
                                          ede=dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                                          text="query deadline passed")
            except Exception:
                self.internal_errors += 1
                log.exception("internal error while resolving a query")
                response = error_response(query, dns.rcode.SERVFAIL,
                                          ede=dns.edns.EDECode.OTHER, text="internal error")
            response.id = query.id
            wire = finalize(response, query, transport,
                            keepalive=self.keepalive if transport.is_stream else None,
                            nsid=self.nsid)
            if any_class:
                wire = with_question_class(wire, _ANY_CLASS)
        finally:
            self.in_flight -= 1
        rcode = dns.rcode.to_text(response.rcode())
        self.responses[(transport.value, rcode)] += 1
        if self.log_queries:
            q = asked.question[0]
            qlog.info("%s %s %s %s %s -> %s", transport.value,
                      client[0] if client else "-", q.name,
                      dns.rdatatype.to_text(q.rdtype), dns.rdataclass.to_text(q.rdclass),
                      rcode)
        return wire

    def _norec_miss(self, query: dns.message.Message) -> bool:
        """True if ``query`` (RD=0) is neither local data's nor answered by the cache:
        it is not forwarded. Asking an upstream without recursion gets its cache's
        content, a referral or a refusal, which the cache would then give to clients
        that asked with RD=1; Unbound does not forward these queries either (SERVFAIL,
        "cannot forward RD=0 query, to stop query loops")."""
        key = key_from_message(query)
        local, cache = self.local, self.cache
        if local is not None and local.covers_key(key):
            return False
        return cache is None or not cache.holds(key, self.clock())

    def statistics(self) -> dict[str, object]:
        return {"responses": dict(self.responses), "rejected": dict(self.rejected),
                "in_flight": self.in_flight, "internal_errors": self.internal_errors}

