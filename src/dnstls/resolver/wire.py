"""The forwarding path on wire bytes: coalesce, forward, validate, cache, render.

The pipeline of :mod:`dnstls.resolver` stages works on dnspython messages, which costs
several parses and renders per forwarded query (client query, upstream query, upstream
response, cache insert, client response). For the common case -- a plain query the
listener could read with :func:`dnstls.proto.cachekey.read_query`, for a name outside
local data -- this module does the same work on bytes:

1. identical questions in flight share one upstream exchange (keyed by the cache key);
2. :meth:`Forwarder.resolve_wire` picks upstreams exactly as ``resolve`` does and
   returns a response whose header and question were checked by the transport and
   the rest by the cache's checked walk (:meth:`Cache.check_wire`): an answer that does
   not pass is a failed attempt of that upstream (the next one is asked), as on the
   message path;
3. :meth:`Cache.respond_wire` takes that walk, stores the answer if it may be cached,
   and renders it for *this* query -- its ID, RD, name case, EDNS, keepalive and
   padding -- exactly as a later cache hit would be rendered.

A NOERROR answer that ends in a CNAME without the data (an authoritative upstream of a
forward zone answers so for a target out of its zone) is completed first when a
:class:`~dnstls.resolver.chase.CnameChase` is set (:attr:`WireForwarder.chase`):
:func:`needs_chase` tells, from the answer section's types (the first record's in the
usual answer), and the flight waits for the completed answer, which is what its queries
get and the cache keeps.

Failures raise :class:`ResolveFailure`, like every stage; the listener turns them into
SERVFAIL with an Extended DNS Error (or a stale answer when serve-stale is on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.message

from dnstls.proto.cachekey import KEY_DO, WireQuery
from dnstls.resolver.base import ResolveFailure, servfail
from dnstls.resolver.cache import name_end

_RD = 0x0100
_A = 1
_CNAME = 5
_AAAA = 28
_ANY = 255


def needs_chase(wire: bytes, key: bytes) -> bool:
    """True if the response ``wire`` to the question of cache key ``key`` (checked
    already: header, question, records) may be a CNAME chain the upstream left
    incomplete: NOERROR, a QTYPE other than CNAME and ANY, a CNAME in the answer
    section and no record of the QTYPE there (:mod:`dnstls.resolver.chase` decides).
    The usual positive answer is ruled out by its first record's type."""
    end = len(wire)
    if end < 12 or wire[3] & 0xF or not (wire[6] or wire[7]):
        return False
    name_len = len(key) - 5
    qtype = (key[name_len] << 8) | key[name_len + 1]
    if qtype in (_CNAME, _ANY):
        return False
    pos = 12 + name_len + 4
    cname = False
    for _ in range((wire[6] << 8) | wire[7]):
        if pos + 1 < end and wire[pos] == 0xC0 and wire[pos + 1] == 12:
            pos += 2
        else:
            pos = name_end(wire, pos, end)
            if pos < 0:
                return False
        if pos + 10 > end:
            return False
        rrtype = (wire[pos] << 8) | wire[pos + 1]
        if rrtype == qtype:
            return False
        if rrtype == _CNAME:
            cname = True
        pos += 10 + ((wire[pos + 8] << 8) | wire[pos + 9])
    return cname


def matches(value: int, nets: Sequence[tuple[int, int]]) -> bool:
    """True if the address ``value`` is in one of ``nets`` ((network, mask) integers)."""
    for network, mask in nets:  # noqa: SIM110 - a loop mypyc compiles, not a generator
        if value & mask == network:
            return True
    return False


def has_private(wire: bytes, v4: Sequence[tuple[int, int]],
                v6: Sequence[tuple[int, int]]) -> bool:
    """True if an A or AAAA record of the response ``wire`` (checked already: it
    parses) holds an address of ``v4``/``v6``, whatever its owner and section: the
    DNS rebinding filter's walk of every forwarded answer (:mod:`dnstls.resolver.
    rebind`), here to be compiled with the rest of the miss path."""
    end = len(wire)
    if end < 12:
        return False
    pos = 12
    for _ in range((wire[4] << 8) | wire[5]):  # the question
        pos = name_end(wire, pos, end)
        if pos < 0:
            return False
        pos += 4
    records = (((wire[6] << 8) | wire[7]) + ((wire[8] << 8) | wire[9])
               + ((wire[10] << 8) | wire[11]))
    for _ in range(records):
        pos = name_end(wire, pos, end)
        if pos < 0 or pos + 10 > end:
            return False
        rrtype = (wire[pos] << 8) | wire[pos + 1]
        size = (wire[pos + 8] << 8) | wire[pos + 9]
        pos += 10
        if rrtype == _A and size == 4 and pos + 4 <= end and matches(
                int.from_bytes(wire[pos:pos + 4], "big"), v4):
            return True
        if rrtype == _AAAA and size == 16 and pos + 16 <= end and matches(
                int.from_bytes(wire[pos:pos + 16], "big"), v6):
            return True
        pos += size
    return False


def without_private(rebind: Any, upstream: bytes) -> bytes:
    """``upstream`` through ``rebind`` (a :class:`~dnstls.resolver.rebind.
    PrivateAddresses`); an answer it cannot read where an address matched is SERVFAIL,
    never relayed with the address."""
    try:
        out: bytes = rebind.filter_wire(upstream)
    except Exception as exc:  # dnspython raises many types for what it cannot read
        raise servfail(dns.edns.EDECode.INVALID_DATA,
                       f"answer with a private address not readable: {exc}") from None
    return out


@dataclass(slots=True)
class WireStatistics:
    forwarded: int = 0
    coalesced: int = 0
    invalid: int = 0


class WireFlight:
    """One upstream exchange in flight for a cache key. ``shared`` is made only when a
    second query for the key arrives (the leader then publishes its outcome there).

    On the task-free path (:meth:`WireForwarder.start`) it is also the query itself,
    carried from the caller down to the forwarder and back up: one object per query
    for the layers above the forwarder, where there were a closure per layer and a
    flight. The caller subclasses it with slots for what its own part needs and
    implements :meth:`answered`; the forwarder's callback is the bound :meth:`landed`,
    which does this layer's part (the flight ends, its followers get the outcome), then
    calls :meth:`answered` -- each layer's bookkeeping in its own method, in order."""

    __slots__ = ("chase", "checker", "deadline", "flights", "key", "query", "rebind",
                 "shared")

    flights: dict[bytes, WireFlight]
    key: bytes
    query: WireQuery
    shared: asyncio.Future[bytes] | None
    checker: Callable[[bytes, bytes], bool]  # the cache's check_wire
    chase: Any  # a CnameChase, or None
    rebind: Any  # a PrivateAddresses, or None
    deadline: float

    def valid(self, upstream: bytes) -> bool:
        """The forwarder's check of an answer's body (:meth:`Cache.check_wire`)."""
        return self.checker(self.key, upstream)

    def landed(self, upstream: bytes | None, exc: BaseException | None) -> None:
        """The forwarder's outcome (once): :meth:`settle` it, or first complete a CNAME
        chain the upstream left incomplete (the chase settles it). Private addresses
        are removed first when configured (:mod:`dnstls.resolver.rebind`)."""
        rebind = self.rebind
        if rebind is not None and upstream is not None:
            try:
                upstream = without_private(rebind, upstream)
            except ResolveFailure as failure:
                self.settle(None, failure)
                return
        chase = self.chase
        if chase is not None and upstream is not None and needs_chase(upstream, self.key):
            chase.begin(self, upstream, self.deadline)
            return
        self.settle(upstream, exc)

    def settle(self, upstream: bytes | None, exc: BaseException | None) -> None:
        """End the flight, then :meth:`answered`."""
        flights = self.flights
        if flights.get(self.key) is self:
            del flights[self.key]
        shared = self.shared
        if shared is not None and not shared.done():
            if upstream is None:
                shared.set_exception(exc or RuntimeError("no answer"))
                shared.exception()  # retrieved: the followers re-raise it
            else:
                shared.set_result(upstream)
        self.answered(upstream, exc)

    def answered(self, upstream: bytes | None, exc: BaseException | None) -> None:
        """The caller's part: ``upstream`` to validate and render (:meth:`WireForwarder.
        render`), or the failure ``exc``."""
        raise NotImplementedError


def _flight() -> WireFlight:
    """A flight of the coroutine path (:meth:`WireForwarder._lead`): ``shared`` only."""
    flight = WireFlight()
    flight.shared = None
    return flight


class WireForwarder:
    def __init__(self, forwarder: Any, cache: Any, clock: Callable[[], float], *,
                 is_local: Callable[[bytes], bool] = lambda _key: False) -> None:
        self.forwarder = forwarder
        self.cache = cache  # a Cache; with caching off, one that stores nothing
        self.clock = clock
        self.is_local = is_local
        self.stats = WireStatistics()
        # looked up per query (the stub's follows its current generation)
        self._task_free = hasattr(forwarder, "start_wire")
        #: Completes incomplete CNAME chains (:mod:`dnstls.resolver.chase`); None: off.
        self.chase: Any = None
        #: Removes private addresses (:mod:`dnstls.resolver.rebind`); None: off.
        self.rebind: Any = None
        self._flights: dict[bytes, WireFlight] = {}
        # the cache's check of an answer's body, handed to the forwarder (a test's
        # stand-in cache may have none: answers are then checked when rendered only)
        self._check: Callable[[bytes, bytes], bool] | None = getattr(cache, "check_wire",
                                                                     None)

    def eligible(self, query: WireQuery) -> bool:
        """True if this path may answer ``query`` (``is_local(key)`` is False: not a
        question local data answers, :meth:`LocalData.covers_key`)."""
        return not self.is_local(query.key)

    async def answer(self, query: WireQuery, *, deadline: float, options: bytes = b"",
                     pad_block: int = 0) -> bytes:
        """The response bytes for ``query``; raises ResolveFailure."""
        key = query.key
        flight = self._flights.get(key)
        if flight is None:
            upstream = await self._lead(key, query, deadline)
        else:
            self.stats.coalesced += 1
            if flight.shared is None:
                flight.shared = asyncio.get_running_loop().create_future()
            # shield: a follower that goes away must not cancel the leader's outcome
            upstream = await asyncio.shield(flight.shared)
        return self.render(query, upstream, options, pad_block)

    def render(self, query: WireQuery, upstream: bytes, options: bytes = b"",
               pad_block: int = 0) -> bytes:
        """Validate, cache and render ``upstream`` for ``query``; raises ResolveFailure."""
        # positional arguments and the RD bit read here (WireQuery.rd is a property):
        # once per forwarded query
        out: bytes | None = self.cache.respond_wire(
            query.key, upstream, self.clock(), query.id, query.flags & _RD != 0,
            query.qname, query.edns, options, pad_block)
        if out is None:
            self.stats.invalid += 1
            raise servfail(dns.edns.EDECode.INVALID_DATA, "malformed answer from upstream")
        return out

    def start(self, flight: WireFlight, deadline: float) -> bool:
        """Start the upstream exchange for ``flight.query`` without a coroutine when the
        forwarder can (:meth:`Forwarder.start_wire`) and no identical question is in
        flight; ``flight.answered(upstream_response, None)`` or ``flight.answered(None,
        failure)`` follows once (:meth:`WireFlight.landed`). Queries for the same key
        arriving meanwhile follow it as they follow a leader in :meth:`answer`. False:
        nothing started, use :meth:`answer`."""
        query = flight.query
        key = query.key
        flights = self._flights
        if not self._task_free or key in flights:
            return False
        flight.flights = flights
        flight.key = key
        flight.shared = None
        flight.chase = self.chase
        flight.rebind = self.rebind
        flight.deadline = deadline
        check = self._check
        valid: Callable[[bytes], bool] | None = None
        if check is not None:
            flight.checker = check
            valid = flight.valid
        if not self.forwarder.start_wire(key[:-1], flags=query.flags, payload=query.payload,
                                         do=key[-1] & KEY_DO != 0, deadline=deadline,
                                         callback=flight.landed, check=valid):
            return False
        self.stats.forwarded += 1
        flights[key] = flight
        return True

    async def _lead(self, key: bytes, query: WireQuery, deadline: float) -> bytes:
        """Ask upstream in this task (no task of its own: a task and ``shield`` per
        forwarded query cost ~9 µs, measured); publish the outcome to followers."""
        self.stats.forwarded += 1
        flight = self._flights[key] = _flight()
        try:
            upstream: bytes = await self._resolve(key, query, deadline)
        except asyncio.CancelledError:
            # This client went away. Followers still deserve the answer: hand the
            # exchange over to a task of its own (rare: a coalesced query whose first
            # asker disconnects), as a shared task would have continued.
            if flight.shared is not None and not flight.shared.done():
                task = asyncio.ensure_future(self._resolve(key, query, deadline))
                task.add_done_callback(lambda t: self._land(key, flight, t))
            else:
                self._flights.pop(key, None)
            raise
        except BaseException as exc:
            self._flights.pop(key, None)
            if flight.shared is not None and not flight.shared.done():
                flight.shared.set_exception(exc)
                flight.shared.exception()  # retrieved: the followers re-raise it
            raise
        self._flights.pop(key, None)
        if flight.shared is not None and not flight.shared.done():
            flight.shared.set_result(upstream)
        return upstream

    async def _resolve(self, key: bytes, query: WireQuery, deadline: float) -> bytes:
        check = self._check
        result: bytes = await self.forwarder.resolve_wire(
            key[:-1], flags=query.flags, payload=query.payload, do=bool(key[-1] & KEY_DO),
            deadline=deadline,
            check=None if check is None else lambda answer: check(key, answer))
        rebind = self.rebind
        if rebind is not None:
            result = without_private(rebind, result)
        chase = self.chase
        if chase is not None and needs_chase(result, key):
            result = await chase.complete_wire(key, result, flags=query.flags,
                                               payload=query.payload, deadline=deadline)
        return result

    def _land(self, key: bytes, flight: WireFlight, task: asyncio.Future[bytes]) -> None:
        """The handed-over exchange finished: pass its outcome to the followers."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        shared = flight.shared
        if task.cancelled():
            if shared is not None and not shared.done():
                shared.cancel()
            return
        exc = task.exception()
        if shared is None or shared.done():
            return
        if exc is not None:
            shared.set_exception(exc)
            shared.exception()
        else:
            shared.set_result(task.result())

    def stale_answer(self, query: WireQuery, *, options: bytes = b"", pad_block: int = 0,
                     ) -> bytes | None:
        """After a failure: the stale answer serve-stale keeps for ``query`` (RFC 8767),
        rendered for it, or None."""
        hit = self.cache.stale_after_failure(query.key, query.id, self.clock(), rd=query.rd,
                                             qname=query.qname, edns=query.edns,
                                             options=options, pad_block=pad_block)
        return None if hit is None else bytes(hit.wire)

    def remember_failure(self, query: WireQuery, message: dns.message.Message,
                         failure: ResolveFailure) -> None:
        """Keep a SERVFAIL briefly (``servfail_ttl``), as the cache stage does."""
        self.cache.insert_failure(query.key, message, failure, self.clock())

    def statistics(self) -> dict[str, int]:
        return {"forwarded": self.stats.forwarded, "coalesced": self.stats.coalesced,
                "invalid": self.stats.invalid, "in_flight": len(self._flights)}
