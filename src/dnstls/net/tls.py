"""Server-side TLS: contexts, certificate selection by SNI, and reload.

Policy (RFC 7858 §3.2, RFC 8310, BCP 195): TLS 1.2 and 1.3 only; TLS 1.2 restricted to
ECDHE with AEAD suites (AES-GCM, ChaCha20-Poly1305); no compression, no renegotiation;
ALPN ``dot`` (RFC 7858bis) offered, while clients without ALPN still connect. Session
tickets stay on (resumption saves a full handshake); a full TLS 1.3 handshake issues one
ticket (:data:`TLS13_TICKETS`) instead of OpenSSL's two (resumed ones get one either
way): a DoT client resumes its next connection with it and every resumed connection
gets a fresh one, and each ticket costs the server a session encoding, an encryption and
a record (about 6 % of the OpenSSL instructions of a full TLS 1.3 handshake, callgrind).

Several certificates may be configured; the first is the default and the others are
chosen by the client's SNI when it matches one of their names. :meth:`ServerTLS.reload`
builds fresh contexts and swaps them in: handshakes that start afterwards use the new
certificate, established connections are untouched. A reload that fails keeps the old
contexts and reports why.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from dnstls.certs import certificate_names, load_certificates
from dnstls.errors import ConfigError

log = logging.getLogger("dnstls.net.tls")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1:!SHA256:!SHA384"
ALPN = ["dot"]
#: Session tickets per full TLS 1.3 handshake (OpenSSL's default is 2).
TLS13_TICKETS = 1


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path
    field: str = "tls.certificates"


def server_context(pair: CertPair) -> ssl.SSLContext:
    """A hardened server context for one certificate chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                    | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE)
    ctx.set_alpn_protocols(ALPN)
    ctx.num_tickets = TLS13_TICKETS
    for path, what in ((pair.cert, "certificate"), (pair.key, "key")):
        if not path.is_file():
            raise ConfigError(pair.field, f"{what} file {path} does not exist")
        if not os.access(path, os.R_OK):
            raise ConfigError(pair.field, f"{what} file {path} is not readable")
    try:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(reason).upper():
            raise ConfigError(pair.field, f"key {pair.key} does not match certificate "
                              f"{pair.cert}") from None
        raise ConfigError(pair.field, f"cannot load {pair.cert} / {pair.key}: {reason}"
                          ) from None
    return ctx


class ServerTLS:
    """The server's TLS contexts; :meth:`reload` updates them in place.

    ``context`` is one long-lived object (listeners are created with it). A reload first
    builds scratch contexts from the files -- so a bad file changes nothing -- then loads
    the new chain into ``context`` (new handshakes get it; session ticket keys survive)
    and swaps the SNI table that ``context``'s callback reads.
    """

    def __init__(self, pairs: Sequence[CertPair]) -> None:
        if not pairs:
            raise ConfigError("tls.certificates", "at least one certificate is required")
        self._pairs = list(pairs)
        self._mtimes = self._stat()
        self._by_name: dict[str, ssl.SSLContext] = {}
        self.context = server_context(self._pairs[0])
        self.context.sni_callback = self._select
        self._by_name, self.leaf = self._build()
        self.reloads = 0

    def _stat(self) -> list[float]:
        out = []
        for pair in self._pairs:
            for path in (pair.cert, pair.key):
                try:
                    out.append(path.stat().st_mtime)
                except OSError:
                    out.append(-1.0)
        return out

    def _build(self) -> tuple[dict[str, ssl.SSLContext], x509.Certificate]:
        """Validate every pair (raises ConfigError) and build the SNI table."""
        contexts = [server_context(p) for p in self._pairs]
        by_name: dict[str, ssl.SSLContext] = {}
        for pair, ctx in zip(self._pairs[1:], contexts[1:], strict=True):
            for name in certificate_names(load_certificates(pair.cert)[0]):
                by_name.setdefault(name.lower(), ctx)
        return by_name, load_certificates(self._pairs[0].cert)[0]

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None,
                _ctx: ssl.SSLContext) -> None:
        if server_name and self._by_name:
            chosen = _match(self._by_name, server_name.lower())
            if chosen is not None:
                sslobj.context = chosen

    def files_changed(self) -> bool:
        return self._stat() != self._mtimes

    def reload(self) -> bool:
        """Re-read the files. False (and a log line) if that failed; nothing changes then."""
        mtimes = self._stat()
        try:
            by_name, leaf = self._build()
            first = self._pairs[0]
            self.context.load_cert_chain(str(first.cert), str(first.key))
        except (ConfigError, OSError, ValueError, ssl.SSLError) as exc:
            log.error("certificate reload failed, keeping the current one: %s", exc)
            self._mtimes = mtimes  # don't retry until the files change again
            return False
        self._by_name, self.leaf = by_name, leaf
        self._mtimes = mtimes
        self.reloads += 1
        log.info("certificate reloaded (serial %x)", leaf.serial_number)
        return True


def _match(by_name: dict[str, ssl.SSLContext], name: str) -> ssl.SSLContext | None:
    if name in by_name:
        return by_name[name]
    _, _, rest = name.partition(".")
    return by_name.get("*." + rest) if rest else None

