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

import logging
import ssl
from typing import Any

from dnstls.errors import CertificateError, NetworkError, TLSAuthenticationError
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


def client_context(spec: UpstreamSpec) -> ResumingContext:
    """The TLS context for one DoT upstream, per the module docstring."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ALPN_DOT])
    if spec.opportunistic or (spec.tls_pubkey_pinset and not spec.tls_auth_name):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    if spec.ca_file:
        try:
            ctx.load_verify_locations(cafile=spec.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"{spec.name}: cannot load ca_file {spec.ca_file}: {exc}",
                                   ) from exc
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


def server_hostname(spec: UpstreamSpec) -> str | None:
    """SNI and name to verify: the authentication name, else none."""
    return spec.tls_auth_name or None


def presented_chain(ssl_object: Any) -> list[bytes]:
    """DER certificates the server presented, leaf first (empty after resumption)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python >= 3.13
    if getter is None:
        getter = ssl_object._sslobj.get_unverified_chain
    chain = getter() or []
    out = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
           for c in chain]
    if not out:
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            out = [leaf]
    return out


def authenticate(ssl_object: Any, spec: UpstreamSpec, pinset: PinSet) -> None:
    """Enforce the pinset after a handshake; raises PinMismatch (see module docstring)."""
    if not pinset or ssl_object.session_reused:
        return
    pinset.check(presented_chain(ssl_object))


def translate_error(exc: BaseException, spec: UpstreamSpec) -> Exception:
    """Map an OSError/SSLError from connecting to a dnstls error naming the reason."""
    if isinstance(exc, TLSAuthenticationError | NetworkError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return CertificateError(f"{reason} for {spec.name}")
    if isinstance(exc, ssl.CertificateError):
        return CertificateError(f"{exc} for {spec.name}")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return NetworkError(f"TLS handshake with {spec.name} failed: {reason}")
    if isinstance(exc, TimeoutError):
        return NetworkError(f"connecting to {spec.name} timed out")
    if isinstance(exc, OSError):
        return NetworkError(f"connecting to {spec.name} failed: "
                            f"{exc.strerror or exc.__class__.__name__}")
    return NetworkError(f"connecting to {spec.name} failed: {exc!r}")
