"""The interface every resolver stage shares, and the request it receives.

A stage is an object with ``async def resolve(request) -> dns.message.Message``. It
answers (returns a response built with :func:`dnstls.proto.answers.make_response`),
passes the request to the next stage it was constructed with, or fails by raising
:class:`ResolveFailure` with the RCODE and Extended DNS Error to send. Transport
concerns (padding, keepalive, truncation) are not a stage's business: the listener
applies them with :func:`dnstls.proto.answers.finalize`.

Every request carries one absolute ``deadline`` (in the event loop's clock) for the
whole client query; stages derive their own timeouts from it and never exceed it.

Upstream transports are handed to the forwarder as :class:`Upstream` objects, so
``resolver/`` never imports ``net/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import dns.edns
import dns.message
import dns.rcode

from dnstls.proto.answers import Transport


@dataclass(slots=True)
class Request:
    message: dns.message.Message
    transport: Transport
    client: tuple[str, int] | None
    deadline: float
    wire: bytes = b""
    tags: dict[str, object] = field(default_factory=dict)


class ResolveFailure(Exception):
    """A stage cannot answer: send ``rcode`` with an optional EDE code and text."""

    def __init__(self, rcode: int, ede: int | None = None, text: str | None = None) -> None:
        self.rcode = rcode
        self.ede = ede
        self.text = text
        super().__init__(f"{dns.rcode.to_text(dns.rcode.Rcode.make(rcode))}"
                         + (f" (EDE {ede}{': ' + text if text else ''})" if ede is not None
                            else ""))


def servfail(ede: dns.edns.EDECode | int, text: str | None = None) -> ResolveFailure:
    return ResolveFailure(dns.rcode.SERVFAIL, int(ede), text)


class Resolver(Protocol):
    async def resolve(self, request: Request) -> dns.message.Message: ...


class Upstream(Protocol):
    """What the forwarder needs of an upstream: send one query, get its response.

    Implementations raise :class:`dnstls.errors.QueryTimeout`,
    :class:`dnstls.errors.NetworkError`, :class:`dnstls.errors.TLSAuthenticationError`
    or :class:`dnstls.errors.ProtocolError`; ``deadline`` is in the loop's clock.
    """

    name: str

    async def exchange(self, query: dns.message.Message, *, deadline: float,
                       ) -> dns.message.Message: ...


class Refuse:
    """The terminal stage when nothing else answers: REFUSED (EDE 20 Not Authoritative)."""

    async def resolve(self, request: Request) -> dns.message.Message:
        raise ResolveFailure(dns.rcode.REFUSED, int(dns.edns.EDECode.NOT_AUTHORITATIVE),
                             "no local data and no upstream configured")
