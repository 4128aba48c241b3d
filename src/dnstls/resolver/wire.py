"""The forwarding path on wire bytes: coalesce, forward, validate, cache, render.

The pipeline of :mod:`dnstls.resolver` stages works on dnspython messages, which costs
several parses and renders per forwarded query (client query, upstream query, upstream
response, cache insert, client response). For the common case -- a plain query the
listener could read with :func:`dnstls.proto.cachekey.read_query`, for a name outside
local data -- this module does the same work on bytes:

1. identical questions in flight share one upstream exchange (keyed by the cache key);
2. :meth:`Forwarder.resolve_wire` picks upstreams exactly as ``resolve`` does and
   returns a response whose header and question were checked by the transport;
3. :meth:`Cache.respond_wire` validates the rest with the cache's checked walk, stores
   the answer if it may be cached, and renders it for *this* query -- its ID, RD, name
   case, EDNS, keepalive and padding -- exactly as a later cache hit would be rendered.

Failures raise :class:`ResolveFailure`, like every stage; the listener turns them into
SERVFAIL with an Extended DNS Error (or a stale answer when serve-stale is on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.edns

from dnstls.proto.cachekey import KEY_DO, WireQuery
from dnstls.resolver.base import servfail


@dataclass(slots=True)
class WireStatistics:
    forwarded: int = 0
    coalesced: int = 0
    invalid: int = 0


class WireForwarder:
    def __init__(self, forwarder: Any, cache: Any, clock: Callable[[], float], *,
                 is_local: Callable[[bytes], bool] = lambda _name: False) -> None:
        self.forwarder = forwarder
        self.cache = cache  # a Cache; with caching off, one that stores nothing
        self.clock = clock
        self.is_local = is_local
        self.stats = WireStatistics()
        self._flights: dict[bytes, asyncio.Future[bytes]] = {}

    def eligible(self, query: WireQuery) -> bool:
        """True if this path may answer ``query`` (not a name of local data)."""
        return not self.is_local(query.key[:-5])

    async def answer(self, query: WireQuery, *, deadline: float, options: bytes = b"",
                     pad_block: int = 0) -> bytes:
        """The response bytes for ``query``; raises ResolveFailure."""
        key = query.key
        flight = self._flights.get(key)
        if flight is None:
            self.stats.forwarded += 1
            flight = asyncio.ensure_future(self.forwarder.resolve_wire(
                key[:-1], flags=query.flags, payload=query.payload,
                do=bool(key[-1] & KEY_DO), deadline=deadline))
            self._flights[key] = flight
            flight.add_done_callback(lambda f: self._landed(key, f))
        else:
            self.stats.coalesced += 1
        upstream = await asyncio.shield(flight)
        out: bytes | None = self.cache.respond_wire(key, upstream, self.clock(), query_id=query.id,
                                      rd=query.rd, qname=query.qname, edns=query.edns,
                                      options=options, pad_block=pad_block)
        if out is None:
            self.stats.invalid += 1
            raise servfail(dns.edns.EDECode.INVALID_DATA, "malformed answer from upstream")
        return out

    def _landed(self, key: bytes, flight: asyncio.Future[bytes]) -> None:
        self._flights.pop(key, None)
        if not flight.cancelled():
            flight.exception()  # retrieved: the waiters (if any are left) re-raise it

    def statistics(self) -> dict[str, int]:
        return {"forwarded": self.stats.forwarded, "coalesced": self.stats.coalesced,
                "invalid": self.stats.invalid, "in_flight": len(self._flights)}
