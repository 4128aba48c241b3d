"""In-flight coalescing: identical queries in flight share one upstream resolution.

When a popular name expires, many clients ask for it at once; without coalescing each
of them becomes an upstream query (a thundering herd, and a larger window for cache
poisoning by response races). :class:`Coalescer` keys requests with the cache key
(:mod:`dnstls.proto.cachekey`: name case-insensitively, QTYPE, QCLASS, DO, CD). The
first request for a key starts a *flight*: one task that awaits the next stage. Later
requests with the same key wait for that task instead of starting their own.

Rules, and why:

* **Each waiter gets its own message.** The first request's waiter gets the message the
  next stage returned; every other waiter gets a copy (rendered once when the flight
  lands, before any waiter can modify the original, and parsed per waiter) with its own
  ID, its own RD bit and its own letter case in the question
  (0x20 echo). Nobody sees another client's ID, and mutating one answer (the listener
  re-renders OPT options) cannot touch another. A waiter whose query had no EDNS gets
  the copy without OPT (RFC 6891 §7).
* **A cancelled waiter cancels only itself.** Waiters await the flight through
  :func:`asyncio.shield`; the flight is cancelled only when its *last* waiter goes
  away, since then nobody wants its answer.
* **A failure is shared.** If the next stage raises, every waiter gets that exception.
* **Nothing leaks.** The flight's entry is removed when its task completes (done
  callback, which runs before any waiter resumes) or at once when its last waiter
  leaves, so a later request never joins a finished or cancelled flight.

The flight runs with the first request (and its deadline): a later waiter with a longer
deadline cannot extend it, one with a shorter deadline stops waiting on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import dns.flags
import dns.message

from dnstls.proto.cachekey import CacheKey, key_from_message
from dnstls.resolver.base import Request, Resolver


@dataclass(frozen=True, slots=True)
class CoalescerStatistics:
    in_flight: int
    coalesced: int


class _Flight:
    __slots__ = ("followers", "request", "task", "waiters", "wire")

    def __init__(self, request: Request, task: asyncio.Task[dns.message.Message]) -> None:
        self.request = request
        self.task = task
        self.waiters = 0
        self.followers = 0
        self.wire: bytes | None = None


class Coalescer:
    """Resolver stage that sends identical in-flight queries to ``next`` once."""

    def __init__(self, next: Resolver) -> None:
        self._next = next
        self._flights: dict[CacheKey, _Flight] = {}
        self._coalesced = 0

    def statistics(self) -> CoalescerStatistics:
        return CoalescerStatistics(in_flight=len(self._flights), coalesced=self._coalesced)

    async def resolve(self, request: Request) -> dns.message.Message:
        if len(request.message.question) != 1:
            return await self._next.resolve(request)
        key = key_from_message(request.message)
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key, request)
        else:
            self._coalesced += 1
            flight.followers += 1
        flight.waiters += 1
        try:
            response = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # The last waiter left (cancelled): nobody wants this answer any more.
                flight.task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]
        if request is flight.request:
            return response
        return _copy_for(flight, response, request.message)

    def _start(self, key: CacheKey, request: Request) -> _Flight:
        task = asyncio.ensure_future(self._next.resolve(request))
        flight = _Flight(request, task)
        self._flights[key] = flight

        def finished(done: asyncio.Task[dns.message.Message]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if flight.followers and not done.cancelled() and done.exception() is None:
                # Render the copies' source now, before any waiter (the first request's
                # may re-render its message for its transport) runs again.
                with contextlib.suppress(Exception):
                    flight.wire = done.result().to_wire()

        task.add_done_callback(finished)
        return flight


def _copy_for(flight: _Flight, response: dns.message.Message,
              query: dns.message.Message) -> dns.message.Message:
    """A private copy of ``response`` for ``query``: its ID, RD bit and name case."""
    if flight.wire is None:
        flight.wire = response.to_wire()
    buf = bytearray(flight.wire)
    buf[0:2] = query.id.to_bytes(2, "big")
    if query.flags & dns.flags.RD:
        buf[2] |= 0x01
    else:
        buf[2] &= 0xFE
    qname = query.question[0].name.to_wire()
    # The response's question is uncompressed at offset 12 and, having the same key,
    # as long as the query's name: overwrite it to echo the query's case.
    if (qname is not None and len(response.question) == 1 and buf[4:6] == b"\x00\x01"
            and buf[12:12 + len(qname)].lower() == qname.lower()):
        buf[12:12 + len(qname)] = qname
    copy = dns.message.from_wire(bytes(buf))
    if query.edns < 0 and copy.edns >= 0:
        copy.use_edns(False)
    return copy
