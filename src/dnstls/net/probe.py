"""Probe a DNS-over-TLS server: handshake, fetch the presented chain, report the session.

``dnstls pin --server`` and ``dnstls query -d`` need what a DoT client sees during the
handshake (RFC 7858 §3.2, RFC 8310 §8): the certificate chain *as presented* (so every
certificate's SPKI pin can be printed, leaf and CA alike, as ``kdig -d`` does), the TLS
version, cipher and ALPN, and whether the chain would have been accepted by a strict
client (RFC 8310 §8.1 authentication by name against the system or a given CA).

Python's ``ssl`` cannot verify a chain after the fact and aborts the handshake when
verification fails, so :func:`fetch_chain` answers the trust question the way the real
client would: it first handshakes *with* verification (the system CA store, or
``cafile``; hostname checking when a name is known); only when that fails on the
certificate does it reconnect without verification to fetch the chain, and reports the
OpenSSL reason. ``verify=False`` does a single unverified handshake.

The presented chain is ``SSLObject.get_unverified_chain()`` from Python 3.13 (a list of
DER bytes); on 3.11/3.12 the same method exists privately on the underlying
``_ssl._SSLSocket`` and returns certificate objects with ``public_bytes()``.

``OSError``, ``ssl.SSLError`` and timeouts are translated into :mod:`dnstls.errors`
types here, at the adapter boundary; the whole probe runs under one deadline.
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnstls.errors import ConfigError, NetworkError, QueryTimeout
from dnstls.net.tls import handshake_names

__all__ = [
    "DEFAULT_PORT",
    "DOT_ALPN",
    "ProbeResult",
    "Verification",
    "failure_reason",
    "fetch_chain",
    "format_address",
    "lost_in_handshake",
    "parse_address",
    "presented_chain",
]

log = logging.getLogger("dnstls.net.probe")

DEFAULT_PORT = 853  # RFC 7858 §3.1
DOT_ALPN = "dot"  # RFC 7858 ALPN ID (IANA TLS ALPN registry)
_CLOSE_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Verification:
    """Whether the presented chain was trusted, and against what.

    ``checked`` is False when no verification was attempted. ``anchor`` is
    ``"system CA store"`` or the CA file name; ``name`` is the name checked against the
    certificate (None: only the chain was checked); ``reason`` is OpenSSL's message when
    the chain was not trusted.
    """

    checked: bool
    trusted: bool = False
    anchor: str | None = None
    name: str | None = None
    reason: str | None = None


NOT_CHECKED = Verification(checked=False)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one TLS handshake with a server showed."""

    host: str
    port: int
    server_name: str | None
    chain: tuple[bytes, ...]
    tls_version: str | None
    cipher: str | None
    alpn: str | None
    verification: Verification
    #: the key exchange group and the server's signature scheme, as kdig names them
    #: (:func:`dnstls.net.tls.handshake_names`; None where OpenSSL cannot be asked)
    group: str | None = None
    signature: str | None = None

    @property
    def verified(self) -> bool:
        return self.verification.checked and self.verification.trusted


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Split ``ADDR[:PORT]``: ``192.0.2.1``, ``192.0.2.1:853``, ``[2001:db8::1]:853``,
    ``2001:db8::1`` (a bare IPv6 literal has no port), ``dns.example:8853``.

    Raises ValueError naming the problem.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty server address")
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after IPv6 address")
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    if not host:
        raise ValueError(f"{text!r}: missing host")
    if port_text == "" and value.endswith(":"):
        raise ValueError(f"{text!r}: missing port after ':'")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals in brackets (the inverse of :func:`parse_address`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def presented_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The peer's chain as sent (leaf first), DER-encoded, on any Python >= 3.11."""
    public = getattr(ssl_object, "get_unverified_chain", None)
    items: Sequence[Any] | None
    if public is not None:  # Python >= 3.13: list of DER bytes
        items = public()
    else:
        inner: Any = getattr(ssl_object, "_sslobj", None)
        method = getattr(inner, "get_unverified_chain", None)
        if method is None:  # no chain API: at least the leaf
            leaf = ssl_object.getpeercert(binary_form=True)
            return [leaf] if leaf else []
        items = method()
    chain: list[bytes] = []
    for item in items or ():
        chain.append(item if isinstance(item, bytes) else item.public_bytes(_ssl.ENCODING_DER))
    return chain


def _context(*, verify: bool, cafile: str | None, check_name: bool,
             alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8310 §9 / RFC 7525
    if verify:
        if cafile is not None:
            ctx.load_verify_locations(cafile=cafile)
        else:
            ctx.load_default_certs()
        ctx.check_hostname = check_name
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@dataclass(frozen=True, slots=True)
class _Session:
    chain: list[bytes]
    version: str | None
    cipher: str | None
    alpn: str | None
    group: str | None
    signature: str | None

    def result(self, host: str, port: int, name: str | None,
               verification: Verification) -> ProbeResult:
        return ProbeResult(host, port, name, tuple(self.chain), self.version, self.cipher,
                           self.alpn, verification, self.group, self.signature)


async def _handshake(host: str, port: int, ctx: ssl.SSLContext, sni: str | None) -> _Session:
    # No ssl_handshake_timeout: the caller's single deadline bounds the whole probe.
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=sni or "")
    del reader
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        chain = presented_chain(ssl_object)
        cipher = ssl_object.cipher()
        group, signature = handshake_names(ssl_object, chain[0] if chain else None)
        return _Session(chain, ssl_object.version(), cipher[0] if cipher else None,
                        ssl_object.selected_alpn_protocol(), group, signature)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
        writer.transport.abort()  # no-op once closed; else (no close_notify back) no leak


async def fetch_chain(host: str, port: int = DEFAULT_PORT, *, server_name: str | None,
                      timeout: float,  # noqa: ASYNC109 - a CLI-facing budget, one deadline
                      cafile: str | None = None, verify: bool = True,
                      alpn: Sequence[str] = (DOT_ALPN,)) -> ProbeResult:
    """Handshake with ``host:port`` and report the presented chain and the session.

    ``server_name`` is sent as SNI and checked against the certificate when verifying;
    without it a host name (not an IP literal) is used instead, and for an IP literal no
    SNI is sent and only the chain is verified. Never fails because the chain is not
    trusted: that is reported in :attr:`ProbeResult.verification`.

    Raises :class:`~dnstls.errors.QueryTimeout` when the whole probe takes longer than
    ``timeout`` seconds and :class:`~dnstls.errors.NetworkError` when the connection or
    handshake fails for another reason.
    """
    name = server_name or (None if _is_ip_literal(host) else host)
    where = format_address(host, port)
    anchor = cafile if cafile is not None else "system CA store"
    verifying = None
    if verify:
        try:
            verifying = _context(verify=True, cafile=cafile, check_name=name is not None,
                                 alpn=alpn)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(cafile or "system CA store",
                              f"cannot load CA certificates: {failure_reason(exc)}") from None
    try:
        async with asyncio.timeout(timeout):
            verification = NOT_CHECKED
            if verifying is not None:
                ctx = verifying
                try:
                    session = await _handshake(host, port, ctx, name)
                except ssl.SSLCertVerificationError as exc:
                    reason = exc.verify_message or exc.reason or str(exc)
                    log.debug("%s: chain not trusted (%s); reconnecting unverified",
                              where, reason)
                    verification = Verification(True, False, anchor, name, reason)
                else:
                    return session.result(host, port, name,
                                          Verification(True, True, anchor, name))
            ctx = _context(verify=False, cafile=None, check_name=False, alpn=alpn)
            session = await _handshake(host, port, ctx, name)
            return session.result(host, port, name, verification)
    except TimeoutError:
        raise QueryTimeout(f"TLS handshake with {where} timed out after {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise NetworkError(f"TLS handshake with {where} failed: {failure_reason(exc)}") from None
    except OSError as exc:
        if lost_in_handshake(exc):
            raise NetworkError(f"TLS handshake with {where} failed: "
                               f"{failure_reason(exc)}") from None
        raise NetworkError(f"cannot connect to {where}: {failure_reason(exc)}") from None


#: OpenSSL reason codes of failed handshakes whose cause an operator can act on, with
#: that cause (RFC 7858 §3.1 and RFC 8310 §9 ask for TLS 1.2 or later).
_HANDSHAKE_CAUSES = {
    "WRONG_VERSION_NUMBER": "the server answered with something that is not TLS "
                            "(plain DNS or another service on this port?)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the server does not accept TLS 1.2 or 1.3 "
                                    "(DNS over TLS needs TLS 1.2 or later)",
    "UNSUPPORTED_PROTOCOL": "the server offered a TLS version older than 1.2 "
                            "(DNS over TLS needs TLS 1.2 or later)",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "the server refused ALPN 'dot'",
}


def lost_in_handshake(exc: OSError) -> bool:
    """Was the connection made and then lost before the TLS handshake completed? (A
    reset or broken pipe cannot happen before TCP is connected; asyncio reports a
    close during its handshake as an errno-less ``ConnectionResetError``.)"""
    return isinstance(exc, ConnectionResetError | BrokenPipeError)


_SSL_ERROR_TEXT = re.compile(r"\[SSL(?:: (?P<code>\w+))?\] (?P<words>[a-z0-9 ]+?)"
                             r"(?: \(_ssl\.c:\d+\))?$")


def _reason_in_text(text: str) -> str | None:
    """The reason code of an ``SSLError`` whose ``reason`` is None because this Python's
    table of OpenSSL codes lacks it (Python 3.11 on OpenSSL 3.0: "[SSL] tlsv1 alert no
    application protocol (_ssl.c:1006)" is TLSV1_ALERT_NO_APPLICATION_PROTOCOL)."""
    found = _SSL_ERROR_TEXT.match(text)
    if found is None:
        return None
    return found["code"] or found["words"].upper().replace(" ", "_")


def failure_reason(exc: OSError) -> str:
    """A one-line reason for a failed connection or handshake: OpenSSL's reason code in
    words, followed by the likely cause where the code tells it (``wrong version
    number: the server answered with something that is not TLS ...``); else the OS
    error text."""
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or _reason_in_text(str(exc))
        if not reason:
            return str(exc)
        words = str(reason).replace("_", " ").lower()
        cause = _HANDSHAKE_CAUSES.get(str(reason))
        return f"{words}: {cause}" if cause else words
    if isinstance(exc.errno, int) and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)  # asyncio wraps ECONNREFUSED as "Connect call failed"
    if lost_in_handshake(exc):
        return "the server closed the connection during the handshake"
    return exc.strerror or str(exc) or type(exc).__name__
