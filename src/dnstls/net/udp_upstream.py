"""Plain DNS over UDP to an upstream, with the RFC 5452 defences and TCP fallback.

Every query uses a fresh *connected* UDP socket, so each gets its own source port and
the kernel itself drops datagrams from any other address or port (RFC 5452 §4.5/§9.1:
accept only from the address and port queried). The port is the one the OS picks on
connect: Linux (since 2.6.24, RFC 6056 §3.3.1-style), the BSDs and Windows choose
ephemeral UDP ports at random across their ephemeral range, which is the port
randomisation RFC 5452 §4.5 asks for -- choosing ports in user space would add
bind-retry loops without adding entropy. The message ID comes from :mod:`secrets`.

A datagram is accepted only if it comes from the queried address/port, parses, has
QR=1, our ID and our question (name case-insensitive, type, class). Anything else is
counted as ``forged_responses`` and ignored: we keep listening until the deadline,
because a forger's packet must not make us give up on the real answer.

TC=1 (RFC 7766 §5 / RFC 1035 §4.2.1): the query is repeated over TCP to the same
address and port, through a pooled TCP upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import dns.exception
import dns.flags
import dns.message

from dnstls.errors import NetworkError, QueryTimeout
from dnstls.net.pool import ConnectionDetails, Reply, StreamUpstream
from dnstls.proto.upstream import (
    check_response,
    check_response_wire,
    prepare_query,
    prepare_query_wire,
    question_key,
)
from dnstls.upstreams import UpstreamSpec

Clock = Callable[[], float]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue(maxsize=64)
        self.error: asyncio.Future[tuple[bytes, Any]] = loop.create_future()
        self.error.add_done_callback(lambda f: f.cancelled() or f.exception())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a flood: drop, keep the deadline
            self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        if not self.error.done():
            self.error.set_exception(exc)


class UdpUpstream:
    """A ``udp://`` upstream: one socket per query, TCP on truncation."""

    def __init__(self, spec: UpstreamSpec, *, clock: Clock | None = None) -> None:
        if spec.transport != "udp":
            raise ValueError(f"{spec.name} is not a UDP upstream")
        self.spec = spec
        self.name = spec.name
        self.timeout = spec.query_timeout
        self.loop = asyncio.get_running_loop()
        self.clock: Clock = clock or self.loop.time
        self._tcp: StreamUpstream | None = None
        self.counters: dict[str, int] = {"queries_sent": 0, "responses": 0,
                                         "forged_responses": 0, "timeouts": 0,
                                         "truncated": 0, "connection_errors": 0}

    def __repr__(self) -> str:
        return f"<UdpUpstream {self.name}>"

    @property
    def tcp(self) -> StreamUpstream:
        """The TCP upstream used after TC=1 (same address and port), made on first use."""
        if self._tcp is None:
            self._tcp = StreamUpstream(replace(self.spec, transport="tcp", name=""),
                                       clock=self.clock)
        return self._tcp

    async def exchange(self, query: dns.message.Message, *, deadline: float,
                       ) -> dns.message.Message:
        response, _, _ = await self._exchange_udp(query, deadline)
        if response.flags & dns.flags.TC:
            self.counters["truncated"] += 1
            return await self.tcp.exchange(query, deadline=deadline)
        return response

    async def exchange_detailed(self, query: dns.message.Message, *, deadline: float,
                                ) -> Reply:
        """Like :meth:`exchange`, with size, RTT and the transport that answered."""
        response, size, rtt = await self._exchange_udp(query, deadline)
        if response.flags & dns.flags.TC:
            self.counters["truncated"] += 1
            return await self.tcp.exchange_detailed(query, deadline=deadline)
        return Reply(response, size, rtt,
                     ConnectionDetails("udp", self.spec.address, self.spec.port))

    async def exchange_wire(self, question: bytes, *, deadline: float, flags: int,
                            payload: int, do: bool) -> bytes:
        """The wire-level path: a checked response (header and question) as bytes."""
        qid = secrets.randbelow(65536)
        wire = prepare_query_wire(question, qid=qid, flags=flags, payload=payload, do=do)
        remote = (self.spec.address, self.spec.port)
        try:
            transport, protocol = await self.loop.create_datagram_endpoint(
                lambda: _Datagrams(self.loop), remote_addr=remote)
        except OSError as exc:
            self.counters["connection_errors"] += 1
            raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
        try:
            peer = transport.get_extra_info("peername")
            transport.sendto(wire)
            self.counters["queries_sent"] += 1
            async with asyncio.timeout_at(deadline):
                while True:
                    data, addr = await self._next(protocol)
                    if (addr is None or peer is None or tuple(addr[:2]) == tuple(peer[:2])) \
                            and len(data) >= 12 and (data[0] << 8 | data[1]) == qid \
                            and check_response_wire(data, question) is None:
                        break
                    self.counters["forged_responses"] += 1
        except TimeoutError:
            self.counters["timeouts"] += 1
            raise QueryTimeout(f"no answer from {self.name} before the deadline") from None
        finally:
            transport.close()
        self.counters["responses"] += 1
        if data[2] & 0x02:  # TC=1: ask again over TCP (RFC 7766 §5)
            self.counters["truncated"] += 1
            return await self.tcp.exchange_wire(question, deadline=deadline, flags=flags,
                                                payload=payload, do=do)
        return data

    async def _exchange_udp(self, query: dns.message.Message, deadline: float,
                            ) -> tuple[dns.message.Message, int, float]:
        qid = secrets.randbelow(65536)
        wire = prepare_query(query, qid=qid)
        expected = question_key(query)
        remote = (self.spec.address, self.spec.port)
        try:
            transport, protocol = await self.loop.create_datagram_endpoint(
                lambda: _Datagrams(self.loop), remote_addr=remote)
        except OSError as exc:
            self.counters["connection_errors"] += 1
            raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
        try:
            peer = transport.get_extra_info("peername")
            transport.sendto(wire)
            sent = self.clock()
            self.counters["queries_sent"] += 1
            async with asyncio.timeout_at(deadline):
                while True:
                    data, addr = await self._next(protocol)
                    response = self._accept(data, addr, peer, qid, expected)
                    if response is not None:
                        self.counters["responses"] += 1
                        return response, len(data), self.clock() - sent
                    self.counters["forged_responses"] += 1
        except TimeoutError:
            self.counters["timeouts"] += 1
            raise QueryTimeout(f"no answer from {self.name} before the deadline") from None
        finally:
            transport.close()

    async def _next(self, protocol: _Datagrams) -> tuple[bytes, Any]:
        """The next datagram; an ICMP error (port unreachable...) is a NetworkError."""
        if not protocol.queue.empty():
            return protocol.queue.get_nowait()
        get: asyncio.Future[tuple[bytes, Any]] = asyncio.ensure_future(protocol.queue.get())
        try:
            await asyncio.wait((get, protocol.error), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        self.counters["connection_errors"] += 1
        error = protocol.error.exception()
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise NetworkError(f"{self.name}: {reason}")

    @staticmethod
    def _accept(data: bytes, addr: Any, peer: Any, qid: int,
                expected: Any) -> dns.message.Message | None:
        if addr is not None and peer is not None and tuple(addr[:2]) != tuple(peer[:2]):
            return None
        if len(data) < 12 or int.from_bytes(data[:2], "big") != qid:
            return None
        try:
            message = dns.message.from_wire(data, ignore_trailing=False)
        except (dns.exception.DNSException, ValueError, IndexError):
            if data[2] & 0x02:  # TC=1 and cut short: the header alone is enough
                try:
                    message = dns.message.from_wire(data, question_only=True)
                except (dns.exception.DNSException, ValueError, IndexError):
                    return None
            else:
                return None
        if check_response(message, expected) is not None:
            return None
        return message

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"name": self.name, "transport": "udp", **self.counters}
        if self._tcp is not None:
            stats["tcp_fallback"] = self._tcp.statistics()
        return stats

    async def aclose(self) -> None:
        if self._tcp is not None:
            await self._tcp.aclose()
