"""Plain DNS over UDP (RFC 1035 §4.2.1): the ``--plain`` listener and the stub's front.

Each datagram is one query. Answers larger than the client's EDNS buffer (512 bytes
without EDNS) are truncated with TC=1 by :func:`dnstls.proto.answers.finalize`, so the
client retries over TCP. Messages with QR set or without a readable header are dropped
silently (answering them could reflect traffic at a spoofed source).
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import dns.message

from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Rejection, Transport
from dnstls.proto.cachekey import WireQuery

log = logging.getLogger("dnstls.net.udp")


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, handler: QueryHandler, *, max_in_flight: int = 10000) -> None:
        self.handler = handler
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_in_flight = max_in_flight
        self.closing = False
        self.received = 0
        self.dropped: Counter[str] = Counter()

    @classmethod
    async def listen(cls, handler: QueryHandler, host: str, port: int, *,
                     reuse_port: bool = False) -> tuple[UdpListener, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(handler), local_addr=(host, port), reuse_port=reuse_port or None)
        sockname = transport.get_extra_info("sockname")
        return protocol, (sockname[0], sockname[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        routed = self.handler.route(data, Transport.UDP)
        if isinstance(routed, bytes):
            if self.transport is not None:
                self.transport.sendto(routed, addr)
            return
        if self.closing or len(self.tasks) >= self.max_in_flight:
            self.dropped["closing" if self.closing else "overload"] += 1
            return
        if routed is not None:
            self._start(self._answer_wire(routed, data, addr))
            return
        parsed = self.handler.parse(data, Transport.UDP)
        if isinstance(parsed, Rejection):
            if parsed.wire is not None and self.transport is not None:
                self.transport.sendto(parsed.wire, addr)
            else:
                self.dropped["unanswerable"] += 1
            return
        self._start(self._answer(parsed, addr))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer_wire(self, query: WireQuery, data: bytes, addr: tuple[str, int],
                           ) -> None:
        wire = await self.handler.answer_wire(query, data, Transport.UDP)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    async def _answer(self, query: dns.message.Message, addr: tuple[str, int]) -> None:
        wire = await self.handler.answer(query, Transport.UDP, (addr[0], addr[1]))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def drain(self, grace: float) -> int:
        """Finish in-flight answers within ``grace``; returns how many were cancelled."""
        self.closing = True
        if self.tasks:
            _done, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
            self.close()
            return len(pending)
        self.close()
        return 0

    def statistics(self) -> dict[str, object]:
        return {"received": self.received, "dropped": dict(self.dropped),
                "in_flight": len(self.tasks)}
