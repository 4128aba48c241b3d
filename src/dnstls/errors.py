"""The exception hierarchy, grouped by what the caller does next.

``DnsTlsError`` is the single base. Below it:

* :class:`ConfigError` -- fix the configuration; names the dotted field path.
* :class:`TimeoutError_` (exported as ``QueryTimeout``) -- retry later or elsewhere.
* :class:`NetworkError` -- the peer could not be reached or dropped the connection.
* :class:`TLSAuthenticationError` -- the peer is not who it claims to be; never retry in
  cleartext. :class:`PinMismatch` names the expected and the seen pins.
* :class:`ProtocolError` -- the peer spoke malformed DNS or broke framing.

``OSError`` and ``ssl.SSLError`` are translated into these at the ``net/`` boundary.
"""

from __future__ import annotations

from collections.abc import Iterable


class DnsTlsError(Exception):
    """Base of every error dnstls raises on purpose."""


class ConfigError(DnsTlsError):
    """Invalid configuration. ``field`` is the dotted path of the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class QueryDropped(DnsTlsError):
    """Local data asks that a query get no answer (a ``deny`` zone, over UDP): send
    nothing. ``str()`` is the zone type."""


class QueryTimeout(DnsTlsError):
    """No answer arrived before the query's deadline."""


class NetworkError(DnsTlsError):
    """Connecting, sending or receiving failed (refused, reset, unreachable)."""


class TLSAuthenticationError(DnsTlsError):
    """The TLS peer could not be authenticated (name, CA or pin)."""


class CertificateError(TLSAuthenticationError):
    """The certificate chain is untrusted, expired, or does not match the name."""


class PinMismatch(TLSAuthenticationError):
    """No certificate in the presented chain matches the configured pinset."""

    def __init__(self, expected: Iterable[str], seen: Iterable[str]) -> None:
        self.expected = tuple(expected)
        self.seen = tuple(seen)
        super().__init__(
            "SPKI pin mismatch: expected one of "
            + ", ".join(self.expected)
            + "; server presented "
            + (", ".join(self.seen) if self.seen else "no certificate")
        )


class ProtocolError(DnsTlsError):
    """The peer broke DNS framing or sent a message we cannot use."""


class MalformedAnswer(ProtocolError):
    """An answer with our ID and question whose body cannot be read (a record cut
    short, a bad compression pointer, RDATA that does not fit its type): that attempt
    failed, the next upstream is asked (SERVFAIL with EDE 24 *Invalid Data* when none
    is left). Unlike a forgery (another ID or question), it is not waited past."""
