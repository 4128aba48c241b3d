"""The query path shared by every listener: parse, resolve, render.

Listeners hand raw client messages to :class:`QueryHandler` and write back what it
returns. Parsing and validation are :func:`dnstls.proto.answers.parse_query`; answers
come from the resolver pipeline; transport-specific EDNS (padding, keepalive,
truncation) is applied by :func:`dnstls.proto.answers.finalize`. Failures of the
pipeline become SERVFAIL with an Extended DNS Error -- never silence, never a crash.

Statistics are plain counters (cheap on the hot path); :mod:`dnstls.metrics` turns them
into Prometheus metrics when scraped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import dns.edns
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from dnstls.proto.answers import Rejection, Transport, error_response, finalize, parse_query
from dnstls.resolver.base import Request, ResolveFailure, Resolver

log = logging.getLogger("dnstls.net.handler")
qlog = logging.getLogger("dnstls.queries")


class QueryHandler:
    def __init__(self, pipeline: Resolver, *, query_timeout: float = 4.0,
                 keepalive: float | None = None, log_queries: bool = False) -> None:
        self.pipeline = pipeline
        self.query_timeout = query_timeout
        self.keepalive = keepalive
        self.log_queries = log_queries
        self.responses: Counter[tuple[str, str]] = Counter()  # (transport, rcode)
        self.rejected: Counter[str] = Counter()  # by reason class
        self.in_flight = 0
        self.internal_errors = 0

    def parse(self, wire: bytes, transport: Transport) -> dns.message.Message | Rejection:
        parsed = parse_query(wire)
        if isinstance(parsed, Rejection):
            rcode = ("none" if parsed.rcode is None
                     else dns.rcode.to_text(dns.rcode.Rcode.make(parsed.rcode)))
            self.rejected[rcode] += 1
            if parsed.rcode is not None:
                self.responses[(transport.value, rcode)] += 1
            log.debug("rejected message (%s): %s", rcode, parsed.reason)
        return parsed

    async def answer(self, query: dns.message.Message, transport: Transport,
                     client: tuple[str, int] | None) -> bytes:
        """Resolve ``query`` and return the rendered response (never raises but cancel)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.query_timeout
        request = Request(query, transport, client, deadline)
        self.in_flight += 1
        try:
            try:
                async with asyncio.timeout_at(deadline + 0.25):
                    response = await self.pipeline.resolve(request)
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
                            keepalive=self.keepalive if transport.is_stream else None)
        finally:
            self.in_flight -= 1
        rcode = dns.rcode.to_text(response.rcode())
        self.responses[(transport.value, rcode)] += 1
        if self.log_queries:
            q = query.question[0]
            qlog.info("%s %s %s %s %s -> %s", transport.value,
                      client[0] if client else "-", q.name,
                      dns.rdatatype.to_text(q.rdtype), dns.rdataclass.to_text(q.rdclass),
                      rcode)
        return wire

    def statistics(self) -> dict[str, object]:
        return {"responses": dict(self.responses), "rejected": dict(self.rejected),
                "in_flight": self.in_flight, "internal_errors": self.internal_errors}

