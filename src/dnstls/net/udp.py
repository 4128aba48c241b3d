"""Plain DNS over UDP (RFC 1035 §4.2.1): the ``--plain`` listener and the stub's front.

Each datagram is one query. Answers larger than the client's EDNS buffer (512 bytes
without EDNS) are truncated with TC=1 by :func:`dnstls.proto.answers.finalize`, so the
client retries over TCP. Messages with QR set or without a readable header are dropped
silently (answering them could reflect traffic at a spoofed source).

**Identical queries in flight share one answer.** A query that the wire-level path
forwards (:meth:`~dnstls.net.handler.QueryHandler.route` returned a ``WireQuery``)
and whose bytes after the ID equal those of a query already being forwarded from this
listener does not start an exchange (or a task) of its own: it waits for that query's
answer and gets the same bytes with its own ID. Equal bytes mean the same question,
name case, flags, EDNS payload, DO bit and options, so the rendered answer -- RCODE,
truncation to the client's UDP size, EDE of a failure, serve-stale -- is the one this
query would have got; only the two ID bytes differ. The joiner is answered no later
than the first query's deadline (bounded time: SERVFAIL with an EDE when the upstream
fails). Stub clients retrying over UDP, or many applications asking the same name at
once, are the common case; the upstream then sees one query (RFC 5452 randomness of
its ID and port is untouched).

**No task where the path allows it.** A forwarded query is handed to
:meth:`~dnstls.net.handler.QueryHandler.forward_wire` first (one upstream that can take
a callback, no identical question in flight), whose callback sends the answer -- the
same bytes, truncation and SERVFAIL+EDE as the task's :meth:`QueryHandler.answer_wire`
-- from the loop; only when it declines does the query get a task. Either way it counts
against ``max_in_flight`` until answered, and :meth:`UdpListener.drain` waits for both.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import typing
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import dns.message
import dns.rcode

from dnstls.proto.acl import ALLOW_SNOOP, DENY, AccessControl
from dnstls.proto.answers import Rejection, Transport
from dnstls.proto.cachekey import WireQuery
from dnstls.proto.dnstap import UDP, ClientTap, Endpoint

log = logging.getLogger("dnstls.net.udp")

#: A client's address as the loop hands it: (host, port) over IPv4, (host, port,
#: flowinfo, scope_id) over IPv6 -- compiled code checks the annotation, so it says so.
Address = tuple[Any, ...]


class DatagramHandler(Protocol):
    """What the listener asks of its handler: :class:`dnstls.net.handler.QueryHandler`
    (tests hand a fake)."""

    @property
    def responses(self) -> Counter[tuple[str, str]]: ...

    def route(self, wire: bytes, transport: Transport) -> bytes | WireQuery | None: ...

    def forward_wire(self, query: WireQuery, wire: bytes, transport: Transport,
                     deliver: Callable[[bytes], None]) -> bool: ...

    def parse(self, wire: bytes, transport: Transport) -> dns.message.Message | Rejection: ...

    def refuse(self, wire: bytes, transport: Transport) -> Rejection: ...

    def refuse_norec(self, wire: bytes, transport: Transport) -> bytes | None: ...

    async def answer_wire(self, query: WireQuery, wire: bytes, transport: Transport,
                          ) -> bytes: ...

    async def answer(self, query: dns.message.Message, transport: Transport,
                     client: tuple[str, int] | None) -> bytes: ...

_RCODE_KEYS = [(Transport.UDP.value, dns.rcode.to_text(dns.rcode.Rcode.make(i)))
               for i in range(16)]


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, handler: DatagramHandler, *, max_in_flight: int = 10000,
                 acl: AccessControl | None = None) -> None:
        self.handler = handler
        self.acl = acl  # None: every client allowed (allow_snoop: RD=0 from the cache too)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_in_flight = max_in_flight
        self.closing = False
        self.received = 0
        self.dropped: Counter[str] = Counter()
        #: Queries being forwarded, by their bytes after the ID: the (ID, address) of
        #: the identical queries that joined them (module docstring).
        self.flights: dict[bytes, list[tuple[bytes, Address]]] = {}
        self.joined = 0  # joiners waiting now
        self.coalesced = 0  # joiners ever
        self.forwarding = 0  # queries forwarded without a task, not yet answered
        self._quiet: asyncio.Future[None] | None = None  # drain() waits on it
        #: dnstap (net/dnstap.py), set by the service, and this socket's own address
        self.tap: ClientTap | None = None
        self.local: Endpoint | None = None

    @classmethod
    async def listen(cls, handler: DatagramHandler, host: str, port: int, *,
                     reuse_port: bool = False, acl: AccessControl | None = None,
                     ) -> tuple[UdpListener, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        # Bound here, not by create_datagram_endpoint(local_addr=): uvloop's failed bind
        # raises an OSError without errno ("could not bind to local_addr", so no "already
        # in use" for the operator) and leaks the transport it made.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # IPv6 only, as the TCP listener on the same address (asyncio's
                # create_server sets it) and as Unbound's: "[::]" with "0.0.0.0" on one
                # port is how both families are served (a dual-stack "[::]" took the
                # IPv4 port too, and answered IPv4 over UDP but not TCP).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(handler, acl=acl), sock=sock)
        sockname = transport.get_extra_info("sockname")
        return protocol, (sockname[0], sockname[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received += 1
        acl = self.acl
        # access control first, before anything is read or joined (a remembered
        # verdict per address: one dict lookup; proto/acl.py)
        if acl is not None:
            action = acl.check(addr[0])
            if action:  # not ALLOW
                if action != ALLOW_SNOOP:
                    self._refuse(data, addr, acl, action)
                    return
            elif len(data) > 2 and not data[2] & 1:
                # RD=0 from a client of "allow": local data or REFUSED, never the cache,
                # a forwarded query or one in flight (proto/acl.py)
                refusal = self.handler.refuse_norec(data, Transport.UDP)
                if refusal is not None:
                    acl.norec_refused["udp"] += 1
                    if self.transport is not None:
                        self.transport.sendto(refusal, addr)
                        if self.tap is not None:
                            self._tap(data, refusal, addr)
                    return
        if self.flights:
            # An identical query is being forwarded: join it before any parsing (it was
            # readable, so this one is; and its answer is at least as fresh as a cached
            # one could be).
            joiners = self.flights.get(data[2:])
            if joiners is not None:
                if (self.closing or len(self.tasks) + self.joined + self.forwarding
                        >= self.max_in_flight):
                    self.dropped["closing" if self.closing else "overload"] += 1
                    return
                joiners.append((data[:2], addr))
                self.joined += 1
                self.coalesced += 1
                return
        routed = self.handler.route(data, Transport.UDP)
        if isinstance(routed, bytes):
            if self.transport is not None:
                self.transport.sendto(routed, addr)
                if self.tap is not None:  # dnstap: the query and its answer
                    self._tap(data, routed, addr)
            return
        if (self.closing or len(self.tasks) + self.joined + self.forwarding
                >= self.max_in_flight):
            self.dropped["closing" if self.closing else "overload"] += 1
            return
        if routed is not None:
            tail = data[2:]
            self.flights[tail] = []
            if self.handler.forward_wire(routed, data, Transport.UDP,
                                         functools.partial(self._delivered, tail, addr)):
                self.forwarding += 1
                return
            self._start(self._answer_wire(routed, data, addr))
            return
        tap = self.tap
        if tap is not None and tap.log_client_query:
            tap.client_query(data, UDP, addr, self.local)
        parsed = self.handler.parse(data, Transport.UDP)
        if isinstance(parsed, Rejection):
            if parsed.wire is not None and self.transport is not None:
                self.transport.sendto(parsed.wire, addr)
                if tap is not None:
                    self._tap(None, parsed.wire, addr)
            else:
                self.dropped["unanswerable"] += 1
            return
        self._start(self._answer(parsed, addr))

    def _tap(self, query: bytes | None, response: bytes, addr: Address) -> None:
        """dnstap: ``query`` (unless None: logged already) and its ``response``."""
        tap = self.tap
        assert tap is not None
        if query is not None and tap.log_client_query:
            tap.client_query(query, UDP, addr, self.local)
        if tap.log_client_response:
            tap.client_response(response, UDP, addr, self.local)

    def _refuse(self, data: bytes, addr: Address, acl: AccessControl, action: int) -> None:
        """A datagram from a client that access control denies (dropped) or refuses
        (REFUSED with EDE 18 and nothing more: no amplification)."""
        if action == DENY:
            acl.denied["udp"] += 1
            return
        rejection = self.handler.refuse(data, Transport.UDP)
        if rejection.wire is None or self.transport is None:
            self.dropped["unanswerable"] += 1
            return
        acl.refused["udp"] += 1
        self.transport.sendto(rejection.wire, addr)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer_wire(self, query: WireQuery, data: bytes, addr: Address,
                           ) -> None:
        try:
            wire = await self.handler.answer_wire(query, data, Transport.UDP)
        finally:
            # Cancelled (shutdown past its grace): the joiners are cut off with it.
            joiners = self.flights.pop(data[2:], None)
            if joiners:
                self.joined -= len(joiners)
        self._send(wire, addr, joiners)

    def _send(self, wire: bytes, addr: Address,
              joiners: list[tuple[bytes, Address]] | None) -> None:
        """The answer to its asker, and under each joiner's own ID to the joiners."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.sendto(wire, addr)
        if joiners:
            tail = wire[2:]
            for qid, joiner in joiners:
                transport.sendto(qid + tail, joiner)
            self.handler.responses[_RCODE_KEYS[wire[3] & 0xF]] += len(joiners)

    def _delivered(self, tail: bytes, addr: Address, wire: bytes) -> None:
        """forward_wire's answer for the query whose bytes after the ID are ``tail``."""
        self.forwarding -= 1
        joiners = self.flights.pop(tail, None)
        if joiners:
            self.joined -= len(joiners)
        if self._quiet is not None and not self.forwarding and not self._quiet.done():
            self._quiet.set_result(None)
        self._send(wire, addr, joiners)

    async def _answer(self, query: dns.message.Message, addr: Address) -> None:
        wire = await self.handler.answer(query, Transport.UDP, (addr[0], addr[1]))
        if wire and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)
            if self.tap is not None:
                self._tap(None, wire, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def drain(self, grace: float) -> int:
        """Finish in-flight answers within ``grace``; returns how many were cancelled."""
        self.closing = True
        loop = self.loop
        end = loop.time() + grace
        pending: set[asyncio.Task[None]] = set()
        if self.tasks:
            _done, pending = await asyncio.wait(set(self.tasks), timeout=grace)
        if self.forwarding and not pending and loop.time() < end:
            self._quiet = loop.create_future()
            await asyncio.wait([self._quiet], timeout=end - loop.time())
            self._quiet = None
        # joiners wait on pending tasks or callbacks only
        cut = len(pending) + self.forwarding + self.joined
        for task in pending:
            task.cancel()
        self.close()  # answers still to come are dropped (the transport is closed)
        return cut

    def statistics(self) -> dict[str, object]:
        return {"received": self.received, "dropped": dict(self.dropped),
                "in_flight": len(self.tasks) + self.joined + self.forwarding,
                "coalesced": self.coalesced}
