"""Prefetch: refresh a popular cached answer before it expires (Unbound's ``prefetch``).

The cache decides when (:mod:`dnstls.resolver.cache`, "Prefetch": the first hit once
less than a tenth of the entry's TTL is left, once per entry) and calls
:meth:`Prefetcher.__call__` with the entry's key from inside that hit, which is
answered from the cache as usual. The prefetcher asks the stage below the cache (the
coalescer, so a client's miss for the same key in flight is joined, and through it the
forward-zone router: a forward zone's name goes to that zone's upstreams) for the key's
question in a background task, and stores the answer in the cache the way a miss does
(:meth:`Cache.respond_wire`): the entry is replaced and starts again with its full TTL.
A failed refresh -- an exception, a SERVFAIL, an answer the cache does not keep --
changes nothing: the old entry serves on until it expires.

Bounded: one refresh per key in flight (a flood of hits starts one), and at most
``max_in_flight`` in all (``server.max_in_flight``, the limit a connection's or the UDP
listener's client queries have); beyond it a due prefetch is not started and the next
hit on the entry asks again. Each refresh has the deadline a client query has
(``server.query_timeout``). :meth:`aclose` cancels those in flight at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from dnstls.proto.answers import EDNS_PAYLOAD, Transport
from dnstls.proto.cachekey import KEY_AD, KEY_CD, KEY_DO, CacheKey
from dnstls.resolver.base import Request
from dnstls.resolver.cache import PREFETCH_NO_ROOM, PREFETCH_RUNNING, PREFETCH_STARTED, Cache

log = logging.getLogger("dnstls.resolver.prefetch")

_MAX_MESSAGE = 65535


def query_for_key(key: CacheKey) -> dns.message.Message:
    """A query (ID 0, RD) that has cache key ``key``: its name, type and class, DO as
    an EDNS flag, CD and AD (:mod:`dnstls.proto.cachekey`) as header flags."""
    name = dns.name.from_wire(key, 0)[0]
    end = len(key) - 5
    qtype = (key[end] << 8) | key[end + 1]
    qclass = (key[end + 2] << 8) | key[end + 3]
    bits = key[-1]
    query = dns.message.make_query(name, dns.rdatatype.RdataType.make(qtype),
                                   dns.rdataclass.RdataClass.make(qclass), use_edns=0,
                                   want_dnssec=bool(bits & KEY_DO), payload=EDNS_PAYLOAD)
    query.id = 0
    query.flags = dns.flags.RD
    if bits & KEY_CD:
        query.flags |= dns.flags.CD
    if bits & KEY_AD:
        query.flags |= dns.flags.AD
    return query


def prefetch_statistics(prefetcher: Prefetcher | None) -> dict[str, int]:
    """The prefetcher's counters as keys of the cache's statistics (``prefetches_failed``,
    ``prefetches_dropped``: ``dnstls_cache_prefetches_failed_total`` and
    ``..._dropped_total`` beside ``dnstls_cache_prefetches_total``), 0 without one."""
    stats = prefetcher.statistics() if prefetcher is not None else {}
    return {"prefetches_failed": stats.get("failed", 0),
            "prefetches_dropped": stats.get("dropped", 0)}


class Prefetcher:
    """Background refreshes for one :class:`Cache`: set it as ``cache.on_prefetch``.

    ``resolve`` is the stage below the cache (its ``resolve`` method); ``clock`` the
    event loop's clock (the cache's and the deadlines')."""

    def __init__(self, resolve: Callable[[Request], Awaitable[dns.message.Message]],
                 cache: Cache, clock: Callable[[], float], *, max_in_flight: int = 100,
                 timeout: float = 4.0) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be positive")
        self._resolve = resolve
        self._cache = cache
        self._clock = clock
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self._flights: dict[CacheKey, asyncio.Task[None]] = {}
        #: refreshes that failed (the old entry kept), and due ones not started for
        #: want of room
        self.failed = 0
        self.dropped = 0

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def __call__(self, key: CacheKey) -> int:
        """Start refreshing ``key`` unless one is running or there is no room."""
        if key in self._flights:
            return PREFETCH_RUNNING
        if len(self._flights) >= self.max_in_flight:
            self.dropped += 1
            return PREFETCH_NO_ROOM
        try:
            query = query_for_key(key)
        except Exception:  # a key the cache holds always parses; never fail a hit
            log.debug("prefetch: cannot build a query for key %r", key)
            return PREFETCH_RUNNING  # nothing to retry
        task = asyncio.get_running_loop().create_task(self._refresh(key, query))
        self._flights[key] = task

        def finished(_task: asyncio.Task[None]) -> None:
            if self._flights.get(key) is task:
                del self._flights[key]

        task.add_done_callback(finished)
        return PREFETCH_STARTED

    async def _refresh(self, key: CacheKey, query: dns.message.Message) -> None:
        request = Request(query, Transport.UDP, None, self._clock() + self.timeout)
        try:
            response = await self._resolve(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ResolveFailure, a timeout, a bug: keep the old entry
            self.failed += 1
            log.debug("prefetch of %s failed (%s): the cached answer stays",
                      query.question[0].name, exc)
            return
        if response.rcode() == dns.rcode.SERVFAIL:
            # a failure must not replace a good answer that is still fresh
            self.failed += 1
            log.debug("prefetch of %s: SERVFAIL, the cached answer stays",
                      query.question[0].name)
            return
        try:
            wire = response.to_wire(max_size=_MAX_MESSAGE)
        except Exception as exc:  # dnspython raises many types; nothing is stored
            self.failed += 1
            log.debug("prefetch of %s: cannot render (%s)", query.question[0].name,
                      type(exc).__name__)
            return
        # stored as a miss's answer is (header, minimal sections, TTL bounds)
        if self._cache.respond_wire(key, wire, self._clock(), 0) is None:
            self.failed += 1  # an answer the cache refuses (malformed): nothing stored
            log.debug("prefetch of %s: the answer is not valid for the question",
                      query.question[0].name)

    def statistics(self) -> dict[str, int]:
        """``failed``: refreshes that kept the old entry (an exception, a SERVFAIL, an
        answer the cache refused); ``dropped``: due refreshes not started, ``max_in_flight``
        being reached; ``in_flight``. Exported with the cache's counters
        (:func:`prefetch_statistics`)."""
        return {"failed": self.failed, "dropped": self.dropped, "in_flight": self.in_flight}

    async def aclose(self) -> None:
        """Cancel the refreshes in flight (shutdown)."""
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
