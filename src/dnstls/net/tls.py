"""Server-side TLS: contexts, certificate selection by SNI, and reload.

Policy (RFC 7858 §3.2, RFC 8310, BCP 195): TLS 1.2 and 1.3 only; TLS 1.2 restricted to
ECDHE with AEAD suites (AES-GCM, ChaCha20-Poly1305); no compression, no renegotiation;
ALPN ``dot`` (RFC 7858bis) offered, while clients without ALPN still connect.

Resumption (it saves a full handshake), TLS 1.3 and 1.2 alike:

* **One process** (``serve``, ``stub``): OpenSSL's stateful session cache
  (``OP_NO_TICKET``; ``tls.session_cache`` = :data:`SESSION_CACHE_SIZE` sessions by
  default, the least recently used evicted first, each valid for OpenSSL's 2 hours, as
  tickets were; ``tls.session_cache = 0`` keeps session tickets instead). A
  TLS 1.3 "ticket" is then only the session's name, and a TLS 1.2 full handshake sends
  none: no session encoding and encryption per connection (-3 to -9 % of a new
  connection's instructions, docs/performance.md), no long-lived ticket key. OpenSSL
  drops a cached session whose connection is freed before the server sent close_notify
  (a client that closes first without one: Python's blocking sockets, the bench client),
  so the listener records it as sent then (``StreamConnection.connection_lost`` calls
  :attr:`ServerTLS.keep_session`: ``SSL_set_shutdown`` through ctypes, see
  :func:`session_keeper`).
* **Several processes** (``serve --workers N``): a cache is per process and the kernel
  hands a client's next connection to any worker, so session tickets, with one key for
  every worker: the supervisor makes it and each worker sets it (:func:`set_ticket_key`,
  ``SSL_CTX_set_tlsext_ticket_keys``); with OpenSSL's key per context only 1/N of the
  resumptions succeeded. The key lives as long as the supervisor (a restarted worker gets
  it again), in memory only.

A full TLS 1.3 handshake issues one ticket (:data:`TLS13_TICKETS`) instead of OpenSSL's
two (resumed ones get one either way): a DoT client resumes its next connection with it
and every resumed connection gets a fresh one.

TLS 1.3 suites: the server's preference is ``TLS_AES_128_GCM_SHA256``, then
ChaCha20-Poly1305, then ``TLS_AES_256_GCM_SHA384`` (:data:`TLS13_SUITES`: RFC 8446's
mandatory-to-implement suite first; all three are AEAD suites BCP 195 accepts). Clients
built on OpenSSL or GnuTLS offer the AES-256/SHA-384 suite first, and its SHA-384 key
schedule costs a full handshake about 8 % more server CPU in OpenSSL than SHA-256's.
Python's ``ssl`` has no call for TLS 1.3 suites, so :func:`prefer_tls13_suites` calls
``SSL_CTX_set_ciphersuites`` through ctypes, only after checking that it reaches the very
OpenSSL and ``SSL_CTX`` of the context; where it cannot (another Python, a statically
linked OpenSSL), OpenSSL's default order stays -- the same three AEAD suites; the same
guards hold for the cache's bound (else OpenSSL's 20,480) and the shared ticket key (else
each worker has its own).

Several certificates may be configured; the first is the default and the others are
chosen by the client's SNI when it matches one of their names. :meth:`ServerTLS.reload`
builds fresh contexts and swaps them in: handshakes that start afterwards use the new
certificate, established connections are untouched. A reload that fails keeps the old
contexts and reports why.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import ssl
import sys
from collections.abc import Callable, Sequence
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
#: Bytes of a session ticket key: a 16-byte name, then 32-byte HMAC and AES keys.
TICKET_KEY_SIZE = 80
_SSL_CTRL_GET_TLSEXT_TICKET_KEYS = 58
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_SSL_CTRL_SET_SESS_CACHE_SIZE = 42
_SSL_CTRL_GET_SESS_CACHE_SIZE = 43
_SSL_SHUTDOWN_BOTH = 1 | 2  # SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN
_SSL_CTRL_GET_PEER_SIGNATURE_NID = 108
_SSL_CTRL_GET_NEGOTIATED_GROUP = 134
_TLSEXT_NID_UNKNOWN = 0x1000000  # a group OpenSSL has no NID for
#: Where CPython's ``_ssl._SSLSocket`` keeps its ``SSL *``: after PyObject_HEAD and a
#: weak reference (checked before use, see :func:`ssl_pointer`)
_SSL_POINTER_OFFSET = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)
#: Sessions kept by the server's session cache (one process; ``tls.session_cache``'s
#: default): about 1.1 KB each once their connection has closed, so ~11 MB at most; the
#: least recently used one goes first. OpenSSL's default is 20,480.
SESSION_CACHE_SIZE = 10_000
#: TLS 1.3 suites in the server's order of preference (OpenSSL's default set).
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
_TLS13_DEFAULT = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                  "TLS_AES_128_GCM_SHA256"}


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path
    field: str = "tls.certificates"


def server_context(pair: CertPair, *, session_cache: bool = False) -> ssl.SSLContext:
    """A hardened server context for one certificate chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                    | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE)
    ctx.set_alpn_protocols(ALPN)
    ctx.num_tickets = TLS13_TICKETS
    if session_cache:
        ctx.options |= ssl.OP_NO_TICKET
    prefer_tls13_suites(ctx)
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


class _LibSSL:
    """Calls of the OpenSSL that ``ssl`` itself uses (``SSL_CTX_set_ciphersuites``,
    ``SSL_CTX_get_options``, ``SSL_CTX_ctrl``), or None where they cannot be reached."""

    _fn: Callable[..., int] | None = None
    _get_options: Callable[..., int] | None = None
    _ctrl: Callable[..., int] | None = None
    #: SSL_set_shutdown, SSL_get_shutdown, SSL_get_SSL_CTX
    _ssl_calls: tuple[Callable[..., None], Callable[..., int], Callable[..., int]] | None = None
    #: SSL_ctrl, SSL_get_peer_signature_type_nid, OBJ_nid2sn (see :func:`handshake_nids`)
    _nid_calls: (tuple[Callable[..., int], Callable[..., int], Callable[..., bytes | None]]
                 | None) = None
    _tried = False

    @classmethod
    def load(cls) -> bool:
        if not cls._tried:
            cls._tried = True
            try:
                cls._fn, cls._get_options, cls._ctrl, cls._ssl_calls = _load_libssl()
            except (OSError, AttributeError, ImportError) as exc:
                log.debug("OpenSSL calls beyond ssl's not available: %s", exc)
        return cls._fn is not None


def _load_libssl() -> tuple[Callable[..., int], Callable[..., int], Callable[..., int],
                            tuple[Callable[..., None], Callable[..., int], Callable[..., int]]]:
    import _ssl

    if sys.implementation.name != "cpython":
        raise ImportError("not CPython")
    # dlsym on _ssl's own handle: the OpenSSL it is linked against, never another one
    lib = ctypes.CDLL(_ssl.__file__)
    version = lib.OpenSSL_version_num
    version.restype = ctypes.c_ulong
    version.argtypes = []
    if version() != ssl.OPENSSL_VERSION_NUMBER:
        raise ImportError("OpenSSL seen through _ssl is not the one ssl reports")
    fn = lib.SSL_CTX_set_ciphersuites
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    get_options = lib.SSL_CTX_get_options
    get_options.restype = ctypes.c_uint64
    get_options.argtypes = [ctypes.c_void_p]
    ctrl = lib.SSL_CTX_ctrl
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    set_shutdown = lib.SSL_set_shutdown
    set_shutdown.restype = None
    set_shutdown.argtypes = [ctypes.c_void_p, ctypes.c_int]
    get_shutdown = lib.SSL_get_shutdown
    get_shutdown.restype = ctypes.c_int
    get_shutdown.argtypes = [ctypes.c_void_p]
    get_ctx = lib.SSL_get_SSL_CTX
    get_ctx.restype = ctypes.c_void_p
    get_ctx.argtypes = [ctypes.c_void_p]
    with contextlib.suppress(AttributeError):  # optional: only for handshake_nids
        ssl_ctrl = lib.SSL_ctrl
        ssl_ctrl.restype = ctypes.c_long
        ssl_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        sig_type = lib.SSL_get_peer_signature_type_nid
        sig_type.restype = ctypes.c_int
        sig_type.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        nid2sn = lib.OBJ_nid2sn
        nid2sn.restype = ctypes.c_char_p
        nid2sn.argtypes = [ctypes.c_int]
        _LibSSL._nid_calls = (ssl_ctrl, sig_type, nid2sn)
    return fn, get_options, ctrl, (set_shutdown, get_shutdown, get_ctx)


def _ssl_ctx(ctx: ssl.SSLContext) -> int | None:
    """The ``SSL_CTX *`` of ``ctx``, or None when it cannot be reached safely."""
    if not _LibSSL.load():
        return None
    assert _LibSSL._get_options is not None
    # CPython's SSLContext object is PyObject_HEAD followed by its SSL_CTX pointer; the
    # options read through that pointer must be the context's own before anything is set
    raw = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not raw or _LibSSL._get_options(raw) != int(ctx.options):
        log.debug("OpenSSL calls beyond ssl's not available: unexpected SSLContext layout")
        return None
    return raw


def prefer_tls13_suites(ctx: ssl.SSLContext, suites: str = TLS13_SUITES) -> bool:
    """Set the TLS 1.3 suite order of ``ctx`` (see the module docstring); False when
    this Python cannot, and then nothing is changed."""
    before = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    if set(before) != _TLS13_DEFAULT:
        return False
    raw = _ssl_ctx(ctx)
    if raw is None:
        return False
    assert _LibSSL._fn is not None
    if _LibSSL._fn(raw, suites.encode()) != 1:
        return False
    after = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    return after == suites.split(":")


def set_session_cache_size(ctx: ssl.SSLContext, size: int) -> bool:
    """Bound ``ctx``'s server session cache (``SSL_CTX_sess_set_cache_size``); False
    when this Python cannot (OpenSSL's 20,480 stays)."""
    raw = _ssl_ctx(ctx)
    if raw is None:
        return False
    assert _LibSSL._ctrl is not None
    _LibSSL._ctrl(raw, _SSL_CTRL_SET_SESS_CACHE_SIZE, size, None)
    return bool(_LibSSL._ctrl(raw, _SSL_CTRL_GET_SESS_CACHE_SIZE, 0, None) == size)


def _unwrap(sslobj: ssl.SSLObject) -> None:
    with contextlib.suppress(ssl.SSLError, ValueError, OSError):
        sslobj.unwrap()  # SSL_shutdown: close_notify "sent" (the alert goes nowhere)


def ssl_pointer(sslobj: ssl.SSLObject) -> int | None:
    """The ``SSL *`` under ``sslobj``, or None where it cannot be reached safely: it must
    sit where CPython 3.11-3.13 keep it (see :func:`session_keeper`) and belong to the
    ``SSL_CTX`` of ``sslobj.context``."""
    raw = _ssl_ctx(sslobj.context)
    if raw is None or _LibSSL._ssl_calls is None:
        return None
    inner = getattr(sslobj, "_sslobj", None)
    if type(inner).__name__ != "_SSLSocket":
        return None
    ptr = ctypes.c_void_p.from_address(id(inner) + _SSL_POINTER_OFFSET).value
    if not ptr or _LibSSL._ssl_calls[2](ptr) != raw:
        return None
    return ptr


def handshake_nids(sslobj: ssl.SSLObject) -> tuple[str | None, int | None, str | None]:
    """What Python's ``ssl`` does not report about a finished handshake, from OpenSSL:
    the key exchange group's short name (``"X25519"``, ``"prime256v1"``), the NID of the
    key type that signed the peer's handshake (``EVP_PKEY_EC`` = 408, ``EVP_PKEY_RSA_PSS``
    = 912, ...; none on a resumed session) and its digest's short name (``"SHA256"``).
    Each is None where it is not known or cannot be reached."""
    if sslobj.version() is None:  # not finished: OpenSSL 3.0 reads its NULL session
        return None, None, None
    ptr = ssl_pointer(sslobj)
    if ptr is None or _LibSSL._nid_calls is None:
        return None, None, None
    ssl_ctrl, sig_type, nid2sn = _LibSSL._nid_calls

    def short_name(nid: int) -> str | None:
        if nid <= 0 or nid & _TLSEXT_NID_UNKNOWN:
            return None
        name = nid2sn(nid)
        return name.decode() if name else None

    group = short_name(ssl_ctrl(ptr, _SSL_CTRL_GET_NEGOTIATED_GROUP, 0, None))
    nid = ctypes.c_int(0)
    key_type = nid.value if sig_type(ptr, ctypes.byref(nid)) == 1 and nid.value > 0 else None
    digest = None
    if key_type is not None and ssl_ctrl(ptr, _SSL_CTRL_GET_PEER_SIGNATURE_NID, 0,
                                         ctypes.addressof(nid)) == 1:
        digest = short_name(nid.value)
    return group, key_type, digest


def handshake_names(sslobj: ssl.SSLObject, leaf: bytes | None = None,
                    ) -> tuple[str | None, str | None]:
    """The key exchange group and the peer's signature scheme of a finished handshake,
    as GnuTLS (and kdig's ``;; TLS session`` line) names them: ``("X25519",
    "ECDSA-SECP256R1-SHA256")``; ``leaf`` is the peer's DER certificate, which tells an
    RSASSA-PSS key from an rsaEncryption one. None for what is not known."""
    group, key_type, digest = handshake_nids(sslobj)
    return gnutls_group(group), gnutls_signature(key_type, digest, sslobj.version(), leaf)


#: OpenSSL's short names of key exchange groups that GnuTLS names otherwise
_GROUP_NAMES = {"prime256v1": "SECP256R1", "secp384r1": "SECP384R1",
                "secp521r1": "SECP521R1"}
#: TLS 1.3 binds an ECDSA signature's curve to its digest (RFC 8446 §4.2.3)
_TLS13_ECDSA_CURVES = {"SHA256": "SECP256R1", "SHA384": "SECP384R1", "SHA512": "SECP521R1"}
_EVP_PKEY_RSA, _EVP_PKEY_EC, _EVP_PKEY_RSA_PSS = 6, 408, 912
_EVP_PKEY_ED25519, _EVP_PKEY_ED448 = 1087, 1088


def gnutls_group(short_name: str | None) -> str | None:
    """A key exchange group's OpenSSL short name as GnuTLS names it (``prime256v1`` →
    ``SECP256R1``, ``X25519``, ``ffdhe2048`` → ``FFDHE2048``)."""
    if not short_name:
        return None
    return _GROUP_NAMES.get(short_name, short_name.upper())


def gnutls_signature(key_type: int | None, digest: str | None, version: str | None,
                     leaf: bytes | None = None) -> str | None:
    """The peer's signature scheme as GnuTLS (and kdig's ``;; TLS session`` line) names
    it: ``ECDSA-SECP256R1-SHA256`` (TLS 1.3) or ``ECDSA-SHA256`` (TLS 1.2),
    ``RSA-PSS-RSAE-SHA256`` (``RSA-PSS-SHA256`` for an RSASSA-PSS key, told by ``leaf``,
    the DER leaf certificate), ``RSA-SHA256``, ``EdDSA-Ed25519``; None when unknown."""
    if key_type == _EVP_PKEY_ED25519:
        return "EdDSA-Ed25519"
    if key_type == _EVP_PKEY_ED448:
        return "EdDSA-Ed448"
    if key_type is None or not digest:
        return None
    if key_type == _EVP_PKEY_EC:
        curve = _TLS13_ECDSA_CURVES.get(digest) if version == "TLSv1.3" else None
        return f"ECDSA-{curve}-{digest}" if curve else f"ECDSA-{digest}"
    if key_type == _EVP_PKEY_RSA_PSS:
        return f"RSA-PSS-{digest}" if leaf and _pss_key(leaf) else f"RSA-PSS-RSAE-{digest}"
    if key_type == _EVP_PKEY_RSA:
        return f"RSA-{digest}"
    return None


def _pss_key(der: bytes) -> bool:
    """Is the certificate's key an RSASSA-PSS key (id-RSASSA-PSS, not rsaEncryption)?"""
    try:
        cert = x509.load_der_x509_certificate(der)
        return bool(cert.public_key_algorithm_oid == x509.oid.PublicKeyAlgorithmOID.RSASSA_PSS)
    except (ValueError, AttributeError):
        return False


def session_keeper(ctx: ssl.SSLContext) -> Callable[[ssl.SSLObject], None]:
    """A function that makes OpenSSL keep the cached session of an ``SSLObject`` of
    ``ctx`` whose connection ended without the server's close_notify (OpenSSL removes a
    session whose ``SSL`` is freed before close_notify was sent).

    ``SSL_set_shutdown(ssl, SENT | RECEIVED)`` through ctypes when the ``SSL *`` can be
    found and checked on a scratch ``SSLObject`` of ``ctx`` (CPython's ``_ssl._SSLSocket``
    is PyObject_HEAD, a weak reference, then the ``SSL *``; it must belong to ``ctx`` and
    take the flags), else ``unwrap()``: the same flags, but an encrypted alert into a
    buffer nobody reads and an ``SSLWantReadError`` (~40,000 instructions)."""
    scratch = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    ptr = ssl_pointer(scratch)  # also loads _LibSSL's calls
    calls = _LibSSL._ssl_calls
    if ptr is None or calls is None or calls[1](ptr) != 0:
        log.debug("TLS sessions kept with unwrap(): unexpected SSLObject layout")
        return _unwrap
    set_shutdown, get_shutdown, _ = calls
    offset = _SSL_POINTER_OFFSET
    set_shutdown(ptr, _SSL_SHUTDOWN_BOTH)
    if get_shutdown(ptr) != _SSL_SHUTDOWN_BOTH:
        return _unwrap
    from_address = ctypes.c_void_p.from_address

    def keep(sslobj: ssl.SSLObject) -> None:
        set_shutdown(from_address(id(sslobj._sslobj) + offset).value,  # type: ignore[attr-defined]
                     _SSL_SHUTDOWN_BOTH)

    return keep


def new_ticket_key() -> bytes:
    """A fresh session ticket key for :func:`set_ticket_key` (name, HMAC and AES keys)."""
    return os.urandom(TICKET_KEY_SIZE)


def set_ticket_key(ctx: ssl.SSLContext, key: bytes) -> bool:
    """Make ``ctx`` encrypt and decrypt session tickets with ``key`` instead of the key
    OpenSSL made for this context alone (``SSL_CTX_set_tlsext_ticket_keys``): contexts in
    several processes given one key resume each other's tickets (``serve --workers``).
    False when this Python cannot (see the module docstring); nothing is changed then."""
    if len(key) != TICKET_KEY_SIZE:
        raise ValueError(f"a ticket key is {TICKET_KEY_SIZE} bytes, got {len(key)}")
    raw = _ssl_ctx(ctx)
    if raw is None:
        return False
    assert _LibSSL._ctrl is not None
    if _LibSSL._ctrl(raw, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, 0, None) != TICKET_KEY_SIZE:
        return False  # another layout of the keys: leave OpenSSL's
    buf = ctypes.create_string_buffer(key, TICKET_KEY_SIZE)
    try:
        if _LibSSL._ctrl(raw, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEY_SIZE, buf) != 1:
            return False
        check = ctypes.create_string_buffer(TICKET_KEY_SIZE)
        got = _LibSSL._ctrl(raw, _SSL_CTRL_GET_TLSEXT_TICKET_KEYS, TICKET_KEY_SIZE, check)
        return got == 1 and check.raw == key
    finally:
        ctypes.memset(buf, 0, TICKET_KEY_SIZE)


class ServerTLS:
    """The server's TLS contexts; :meth:`reload` updates them in place.

    ``context`` is one long-lived object (listeners are created with it). A reload first
    builds scratch contexts from the files -- so a bad file changes nothing -- then loads
    the new chain into ``context`` (new handshakes get it; session ticket keys survive)
    and swaps the SNI table that ``context``'s callback reads.
    """

    def __init__(self, pairs: Sequence[CertPair], *, ticket_key: bytes | None = None,
                 session_cache: int = 0) -> None:
        if not pairs:
            raise ConfigError("tls.certificates", "at least one certificate is required")
        self._pairs = list(pairs)
        self._mtimes = self._stat()
        self._by_name: dict[str, ssl.SSLContext] = {}
        self.session_cache = session_cache > 0
        self.context = server_context(self._pairs[0], session_cache=self.session_cache)
        #: for ``StreamConnection.connection_lost`` (session cache only)
        self.keep_session: Callable[[ssl.SSLObject], None] = _unwrap
        if session_cache > 0:
            set_session_cache_size(self.context, session_cache)
            self.keep_session = session_keeper(self.context)
        # Tickets are sealed and opened by the context the listener was made with (an
        # SNI switch keeps it as the session context), so only its key matters.
        self.shared_ticket_key = (ticket_key is not None
                                  and set_ticket_key(self.context, ticket_key))
        if ticket_key is not None and not self.shared_ticket_key:
            log.warning("cannot share the session ticket key between workers with this "
                        "Python/OpenSSL: a client resumes only on the worker that made "
                        "its ticket")
        if len(self._pairs) > 1:  # one certificate: nothing to choose, no Python call
            self.context.sni_callback = self._select
        self._by_name, self.leaf = self._build()
        self.reloads = 0
        #: Why the last failed reload failed (``dnstls control reload`` answers with it)
        self.last_error = ""

    def session_cache_statistics(self) -> dict[str, int]:
        """The session cache's counters (one process; metrics ``dnstls_tls_session_cache_*``):
        sessions held, resumptions from it (hits), session IDs or tickets not found
        (misses), sessions found expired (timeouts), sessions evicted to make room."""
        raw = self.context.session_stats()
        return {"sessions": raw["number"], "hits": raw["hits"], "misses": raw["misses"],
                "timeouts": raw["timeouts"], "evictions": raw["cache_full"]}

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
        contexts = [server_context(p, session_cache=self.session_cache)
                    for p in self._pairs]
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
            self.last_error = f"certificate reload failed, keeping the current one: {exc}"
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

