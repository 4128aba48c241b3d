"""TLS client side of DNS over TLS to upstreams (RFC 7858 §3.1, RFC 8310 profiles).

Contexts are built once per upstream (loading a CA store is not free) and hold:

* TLS 1.2 or later, ALPN ``dot`` (RFC 7858 §3.1 / IANA), SNI = the authentication name
  (none for a bare address without one);
* **strict** verification (RFC 8310 §5): with ``tls_auth_name`` the chain is verified
  against the CA store (``ca_file`` or the system store) and the name is checked; with a
  pinset the presented chain must carry a pinned key (leaf or CA, RFC 7858 §4.2); with
  both, both must hold. A pin-only upstream skips the CA and name checks -- the pin *is*
  the authentication;
* **opportunistic** mode (RFC 8310 §4): encryption without authentication, logged once
  per upstream and counted.

**Report-only pins** (``tls_pubkey_pinset_mode = "report"``, for rolling a pinset out):
a mismatch is returned by :func:`authenticate` instead of raised, for the caller to log
and count -- but only when :func:`pins_report_only` says the connection is otherwise
authenticated by name against a CA. Without a checked name (pin-only, verification off,
opportunistic) the pins are enforced whatever the mode: report mode never weakens
strict authentication.

**SNI apart from the checked name** (kdig's ``+tls-sni``): OpenSSL checks the name it
is given as SNI. When the SNI differs from the authentication name, the context verifies
the chain only and :func:`authenticate` checks the name on the leaf certificate itself
(RFC 6125 §6.4: subjectAltName DNS names, a wildcard only as the whole leftmost label;
IP addresses against iPAddress entries; the subject CN is not used).

:func:`session_details` reports what the handshake agreed on and what was checked, for
``dnstls query`` and :class:`dnstls.Client` users, including the key exchange group and
the server's signature scheme that Python's ``ssl`` does not expose (asked of OpenSSL
through ctypes where that is safe, see :func:`dnstls.net.tls.handshake_nids`; else None).

Pins are checked on the presented chain right after the handshake, before any query is
written. Python 3.11/3.12 reach the chain through the private
``SSLObject._sslobj.get_unverified_chain()``; 3.13 made it public.

**Session resumption** (RFC 7858 §3.4, RFC 8446 §2.2): asyncio (and uvloop) build the
``SSLObject`` themselves and give no way to pass ``session=``; but both do it by calling
``SSLContext.wrap_bio()``. :class:`ResumingContext` overrides that call to offer the
last session it was handed for this upstream. A resumed handshake does not carry the
server's chain, so the pin check is skipped for it: resumption proves the server holds
the secret of a session that passed the full check on this very context (sessions are
only stored after a successful check, and a new configuration builds new contexts).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from dnstls.errors import (
    CertificateError,
    ConfigError,
    NetworkError,
    PinMismatch,
    TLSAuthenticationError,
)
from dnstls.net import probe
from dnstls.net.tls import handshake_names
from dnstls.proto.pins import PinSet
from dnstls.upstreams import UpstreamSpec

log = logging.getLogger("dnstls.net.tls_client")

ALPN_DOT = "dot"


class ResumingContext(ssl.SSLContext):
    """An SSLContext whose client connections offer the last stored session."""

    session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        if session is None and not server_side:
            session = self.session
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=server_hostname, session=session)


@dataclass(frozen=True, slots=True)
class TlsDetails:
    """What one TLS connection agreed on and how its peer was authenticated.

    ``chain`` is the DER chain the server presented, leaf first (empty when the session
    was resumed: no certificates are sent then). ``verified`` says the chain was
    verified against ``anchor`` (a CA file or ``"system CA store"``) and, when
    ``verified_name`` is set, that it carries that name; ``pinned`` that a certificate
    of the chain matched the pinset. ``opportunistic``: neither was checked.
    """

    version: str | None
    cipher: str | None
    alpn: str | None
    server_name: str | None
    chain: tuple[bytes, ...]
    resumed: bool
    verified: bool
    verified_name: str | None
    anchor: str | None
    pinned: bool
    opportunistic: bool
    #: the key exchange group and the peer's signature scheme in GnuTLS's (kdig's) names,
    #: ``"X25519"``, ``"ECDSA-SECP256R1-SHA256"``; None where OpenSSL cannot be asked
    #: (see :func:`dnstls.net.tls.handshake_nids`) and the signature on a resumed session
    group: str | None = None
    signature: str | None = None


def _sni(spec: UpstreamSpec, sni: str | None) -> str | None:
    return sni or spec.tls_auth_name or None


def client_context(spec: UpstreamSpec, *, sni: str | None = None,
                   verify: bool | None = None) -> ResumingContext:
    """The TLS context for one DoT upstream, per the module docstring.

    ``sni`` overrides the server name sent (default: the authentication name); when it
    differs from ``tls_auth_name`` the name is checked by :func:`authenticate` instead.
    ``verify`` forces the CA check on (e.g. pins *and* the chain, without a name) or off;
    by default it follows the spec (off when opportunistic or pinned without a name).
    """
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ALPN_DOT])
    if verify is None:
        verify = not (spec.opportunistic or (spec.tls_pubkey_pinset and not spec.tls_auth_name))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No name: the chain alone is verified (kdig's +tls-ca with an IP address).
    ctx.check_hostname = bool(spec.tls_auth_name) and _sni(spec, sni) == spec.tls_auth_name
    if spec.ca_file:
        try:
            ctx.load_verify_locations(cafile=spec.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"{spec.name}: cannot load ca_file {spec.ca_file}: {exc}",
                                   ) from exc
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


def check_ca_file(path: str, field: str = "ca_file") -> None:
    """Raise :class:`ConfigError` naming ``field`` unless ``path`` holds CA certificates
    that OpenSSL can load (a missing file is a setting to fix, not an untrusted server)."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(field, f"{path}: cannot load CA certificates: "
                                 f"{probe.failure_reason(exc)}") from None


def server_hostname(spec: UpstreamSpec, sni: str | None = None) -> str | None:
    """The SNI to send: ``sni`` if given, else the authentication name, else none."""
    return _sni(spec, sni)


def certificate_matches_name(der: bytes, name: str) -> bool:
    """Does the DER certificate carry ``name`` (RFC 6125 §6.4, subjectAltName only)?"""
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return address in san.get_values_for_type(x509.IPAddress)
    wanted = name.rstrip(".").lower().split(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        labels = pattern.rstrip(".").lower().split(".")
        if len(labels) != len(wanted):
            continue
        if labels[1:] == wanted[1:] and (labels[0] == wanted[0]
                                         or (labels[0] == "*" and len(labels) > 2)):
            return True
    return False


def presented_chain(ssl_object: Any) -> list[bytes]:
    """DER certificates the server presented, leaf first; just the leaf when the chain
    API has nothing (a resumed session keeps the peer certificate, not the chain)."""
    chain = probe.presented_chain(ssl_object)
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            chain = [leaf]
    return chain


def name_left_to_check(ctx: ssl.SSLContext, spec: UpstreamSpec) -> str | None:
    """The name :func:`authenticate` must check because OpenSSL did not (SNI apart)."""
    if ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname:
        return spec.tls_auth_name or None
    return None


def pins_report_only(ctx: ssl.SSLContext, spec: UpstreamSpec) -> bool:
    """Are ``spec``'s pins only reported on connections made with ``ctx``?

    Only in report mode *and* when the chain is verified against a CA and the
    authentication name is checked (by OpenSSL, or by :func:`authenticate` when the SNI
    differs): otherwise the pins are the only authentication and are enforced.
    """
    return (spec.tls_pubkey_pinset_mode == "report" and bool(spec.tls_auth_name)
            and not spec.opportunistic and ctx.verify_mode == ssl.CERT_REQUIRED)


def authenticate(ssl_object: Any, spec: UpstreamSpec, pinset: PinSet, *,
                 check_name: str | None = None, report_only: bool = False,
                 ) -> PinMismatch | None:
    """Enforce the pinset (and ``check_name``, see :func:`name_left_to_check`) after a
    handshake; raises PinMismatch or CertificateError (see module docstring).

    With ``report_only`` (decide it with :func:`pins_report_only`) a pin mismatch is
    returned instead of raised; the name is enforced all the same.
    """
    if ssl_object.session_reused:
        return None
    name = check_name
    if name:
        leaf = ssl_object.getpeercert(binary_form=True)
        if not leaf or not certificate_matches_name(leaf, name):
            raise CertificateError(f"Hostname mismatch, certificate is not valid for "
                                   f"'{name}'. for {spec.name}")
    if pinset:
        try:
            pinset.check(presented_chain(ssl_object))
        except PinMismatch as exc:
            if not report_only:
                raise
            return exc
    return None


def session_details(ssl_object: Any, spec: UpstreamSpec, pinset: PinSet, *,
                    verified: bool, sni: str | None = None) -> TlsDetails:
    """:class:`TlsDetails` of an authenticated connection (call after :func:`authenticate`)."""
    cipher = ssl_object.cipher()
    resumed = bool(ssl_object.session_reused)
    chain = () if resumed else tuple(presented_chain(ssl_object))
    group, signature = handshake_names(ssl_object, chain[0] if chain else None)
    return TlsDetails(
        version=ssl_object.version(), cipher=cipher[0] if cipher else None,
        alpn=ssl_object.selected_alpn_protocol(), server_name=_sni(spec, sni),
        chain=chain, resumed=resumed,
        verified=verified, verified_name=spec.tls_auth_name if verified else None,
        anchor=(spec.ca_file or "system CA store") if verified else None,
        pinned=bool(pinset), opportunistic=spec.opportunistic,
        group=group, signature=signature)


def translate_error(exc: BaseException, spec: UpstreamSpec) -> Exception:
    """Map an OSError/SSLError from connecting to a dnstls error naming the reason."""
    if isinstance(exc, TLSAuthenticationError | NetworkError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return CertificateError(f"{reason} for {spec.name}")
    if isinstance(exc, ssl.CertificateError):
        return CertificateError(f"{exc} for {spec.name}")
    if isinstance(exc, ssl.SSLError):
        return NetworkError(f"TLS handshake with {spec.name} failed: "
                            f"{probe.failure_reason(exc)}")
    if isinstance(exc, TimeoutError):
        return NetworkError(f"connecting to {spec.name} timed out")
    if isinstance(exc, OSError):
        if spec.transport == "tls" and probe.lost_in_handshake(exc):
            return NetworkError(f"TLS handshake with {spec.name} failed: "
                                f"{probe.failure_reason(exc)}")
        return NetworkError(f"connecting to {spec.name} failed: {probe.failure_reason(exc)}")
    return NetworkError(f"connecting to {spec.name} failed: {exc!r}")
