"""The server context's policy (net/tls.py): versions, ciphers, ALPN, tickets."""

from __future__ import annotations

import gc
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from dnstls.errors import ConfigError
from dnstls.net import tls as tls_mod
from dnstls.net.tls import (
    SESSION_CACHE_SIZE,
    TLS13_SUITES,
    TLS13_TICKETS,
    CertPair,
    ServerTLS,
    new_ticket_key,
    prefer_tls13_suites,
    server_context,
    set_session_cache_size,
    set_ticket_key,
)
from fakes import TestPKI


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI.create(tmp_path)


@pytest.fixture
def pair(pki: TestPKI, tmp_path: Path) -> CertPair:
    pem = tmp_path / "server.pem"
    pki.leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return CertPair(pem, pem)


def _pump_handshake(cli: ssl.SSLObject, c_out: ssl.MemoryBIO, c_in: ssl.MemoryBIO,
                    srv: ssl.SSLObject, s_out: ssl.MemoryBIO, s_in: ssl.MemoryBIO,
                    ) -> list[bool]:
    """Move handshake bytes between two memory-BIO ends (bounded); which ends finished."""
    done = [False, False]
    for _ in range(10):
        for i, (obj, out, peer_in) in enumerate(((cli, c_out, s_in), (srv, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done):
            break
    return done


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A TLS 1.3 handshake over memory BIOs; the negotiated suite."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="dns.test")
    done = _pump_handshake(cli, c_out, c_in, srv, s_out, s_in)
    assert all(done) and srv.version() == "TLSv1.3"
    cipher = srv.cipher()
    assert cipher is not None and cli.cipher() == cipher
    return cipher[0]


_APPLIED = prefer_tls13_suites(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
needs_suite_order = pytest.mark.skipif(
    not _APPLIED, reason="this Python cannot set TLS 1.3 suites (OpenSSL's order stays)")


@needs_suite_order
def test_tls13_prefers_the_sha256_suite(pair: CertPair, pki: TestPKI) -> None:
    """The server picks TLS_AES_128_GCM_SHA256 even from a client that lists
    TLS_AES_256_GCM_SHA384 first (Python's, OpenSSL's and GnuTLS' default clients);
    a client offering only the SHA-384 suite still gets it."""
    tls = ServerTLS([pair])
    ctx = tls.context
    assert [c["name"] for c in ctx.get_ciphers()
            if c["protocol"] == "TLSv1.3"] == TLS13_SUITES.split(":")
    client = ssl.create_default_context(cafile=pki.ca_file)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    assert client.get_ciphers()[0]["name"] == "TLS_AES_256_GCM_SHA384"
    assert _handshake(ctx, client) == "TLS_AES_128_GCM_SHA256"
    only384 = ssl.create_default_context(cafile=pki.ca_file)
    only384.minimum_version = ssl.TLSVersion.TLSv1_3
    assert prefer_tls13_suites(only384, "TLS_AES_256_GCM_SHA384")
    assert _handshake(ctx, only384) == "TLS_AES_256_GCM_SHA384"
    assert tls.reload()  # the order survives a certificate reload
    assert _handshake(tls.context, client) == "TLS_AES_128_GCM_SHA256"


@needs_suite_order
def test_suite_order_changes_only_a_default_context() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert prefer_tls13_suites(ctx, "TLS_AES_256_GCM_SHA384")
    # not OpenSSL's default set any more: left alone
    assert not prefer_tls13_suites(ctx)
    assert [c["name"] for c in ctx.get_ciphers()
            if c["protocol"] == "TLSv1.3"] == ["TLS_AES_256_GCM_SHA384"]


def test_sni_callback_only_with_several_certificates(pair: CertPair, pki: TestPKI,
                                                      tmp_path: Path) -> None:
    """One certificate: no SNI callback (a Python call per handshake for nothing)."""
    assert ServerTLS([pair]).context.sni_callback is None
    other = pki.ca.issue_cert("other.test")
    pem = tmp_path / "other.pem"
    other.private_key_and_cert_chain_pem.write_to_path(str(pem))
    assert ServerTLS([pair, CertPair(pem, pem)]).context.sni_callback is not None


def test_policy(pair: CertPair) -> None:
    ctx = server_context(pair)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(("GCM" in c["name"] or "CHACHA20" in c["name"])
                         and c["kea"] == "kx-ecdhe" for c in tls12)


def _close_notify(srv: ssl.SSLObject) -> None:
    with pytest.raises(ssl.SSLWantReadError):
        srv.unwrap()  # close_notify sent, the client's not awaited


def _connect(server: ssl.SSLContext, client: ssl.SSLContext,
             session: ssl.SSLSession | None = None, *,
             end: Callable[[ssl.SSLObject], None] | None = _close_notify,
             ) -> tuple[ssl.SSLSession, bool]:
    """A handshake over memory BIOs and one byte each way (the client reads TLS 1.3's
    ticket with it), then ``end`` on the server's side (by default its close_notify, as
    the listener's close) before it is freed; the client's session afterwards and
    whether it was resumed."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="dns.test", session=session)
    done = _pump_handshake(cli, c_out, c_in, srv, s_out, s_in)
    assert all(done)
    cli.write(b"q")
    s_in.write(c_out.read())
    assert srv.read(1) == b"q"
    srv.write(b"a")
    c_in.write(s_out.read())
    assert cli.read(1) == b"a"
    assert cli.session is not None
    if end is not None:
        end(srv)
    return cli.session, cli.session_reused


_SHARED = set_ticket_key(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), new_ticket_key())
needs_shared_key = pytest.mark.skipif(
    not _SHARED, reason="this Python cannot set the ticket key (each worker keeps its own)")


@needs_shared_key
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_shared_ticket_key_resumes_across_contexts(pair: CertPair, pki: TestPKI,
                                                     version: ssl.TLSVersion) -> None:
    """serve --workers: every worker's context is built after the fork. Each made its
    own ticket key, so a ticket from one worker did not resume on another; with the
    supervisor's key they resume each other's tickets, before and after a reload."""
    client = ssl.create_default_context(cafile=pki.ca_file)
    client.minimum_version = client.maximum_version = version
    alone = [ServerTLS([pair]) for _ in range(2)]  # tickets, OpenSSL's key each
    session, reused = _connect(alone[0].context, client)
    assert not reused and session.has_ticket
    assert _connect(alone[0].context, client, session)[1]  # same context: resumes
    assert not _connect(alone[1].context, client, session)[1]  # another key: full
    key = new_ticket_key()
    shared = [ServerTLS([pair], ticket_key=key) for _ in range(2)]
    assert all(t.shared_ticket_key for t in shared) and not alone[0].shared_ticket_key
    session, reused = _connect(shared[0].context, client)
    assert not reused
    session, reused = _connect(shared[1].context, client, session)
    assert reused
    assert shared[1].reload()  # a reload keeps the key
    assert _connect(shared[0].context, client, session)[1]
    assert not _connect(alone[0].context, client, session)[1]


@needs_shared_key
def test_set_ticket_key_checks_the_key() -> None:
    with pytest.raises(ValueError, match="80 bytes"):
        set_ticket_key(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), b"short")
    assert set_ticket_key(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), bytes(80))


needs_ctypes = pytest.mark.skipif(
    not set_session_cache_size(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), 10),
    reason="this Python cannot bound the session cache (OpenSSL's 20,480 stays)")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_cache_resumes_without_tickets(pair: CertPair, pki: TestPKI,
                                               version: ssl.TLSVersion) -> None:
    """One process: sessions stay in the server (OP_NO_TICKET). A TLS 1.2 full
    handshake sends no ticket (no session encryption per connection), TLS 1.3's names
    the cached session; both resume, also after a certificate reload, and a context
    with another cache (another worker) cannot resume them."""
    client = ssl.create_default_context(cafile=pki.ca_file)
    client.minimum_version = client.maximum_version = version
    tls = ServerTLS([pair], session_cache=SESSION_CACHE_SIZE)
    assert tls.session_cache and tls.context.options & ssl.OP_NO_TICKET
    assert not ServerTLS([pair]).context.options & ssl.OP_NO_TICKET
    session, reused = _connect(tls.context, client)
    assert not reused
    assert session.has_ticket == (version is ssl.TLSVersion.TLSv1_3)
    assert tls.context.session_stats()["number"] == 1
    session, reused = _connect(tls.context, client, session)
    assert reused
    assert tls.reload()  # the same context: its cache survives a reload
    assert _connect(tls.context, client, session)[1]
    other = ServerTLS([pair], session_cache=SESSION_CACHE_SIZE)
    assert not _connect(other.context, client, session)[1]


@needs_ctypes
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_cache_is_bounded(pair: CertPair, pki: TestPKI,
                                  version: ssl.TLSVersion) -> None:
    assert SESSION_CACHE_SIZE == 10_000
    client = ssl.create_default_context(cafile=pki.ca_file)
    client.minimum_version = client.maximum_version = version
    tls = ServerTLS([pair], session_cache=3)
    first, *_, last = (_connect(tls.context, client)[0] for _ in range(4))
    stats = tls.context.session_stats()
    assert 1 <= stats["number"] <= 3 and stats["cache_full"] >= 1
    assert not _connect(tls.context, client, first)[1]  # the oldest was evicted
    assert _connect(tls.context, client, last)[1]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_keep_session_of_a_connection_the_client_ended(pair: CertPair, pki: TestPKI,
                                                       version: ssl.TLSVersion) -> None:
    """OpenSSL removes a cached session when its connection is freed before the
    server's close_notify; keep_session (ctypes SSL_set_shutdown, or unwrap()) marks
    it as sent so the session stays and resumes."""
    client = ssl.create_default_context(cafile=pki.ca_file)
    client.minimum_version = client.maximum_version = version
    for end, kept in ((None, 0), ("keep", 1), (tls_mod._unwrap, 1)):
        tls = ServerTLS([pair], session_cache=SESSION_CACHE_SIZE)
        session, _ = _connect(tls.context, client,
                              end=tls.keep_session if end == "keep" else end)
        gc.collect()
        assert tls.context.session_stats()["number"] == kept, end
        assert _connect(tls.context, client, session)[1] == bool(kept)


@needs_ctypes
def test_keep_session_uses_ssl_set_shutdown(pair: CertPair) -> None:
    assert ServerTLS([pair], session_cache=10).keep_session is not tls_mod._unwrap
    assert ServerTLS([pair]).keep_session is tls_mod._unwrap  # tickets: never called


def test_one_tls13_ticket_per_connection(pair: CertPair) -> None:
    assert TLS13_TICKETS == 1
    assert server_context(pair).num_tickets == 1
    tls = ServerTLS([pair])
    assert tls.context.num_tickets == 1
    assert tls.reload() and tls.context.num_tickets == 1  # reload keeps the context


def test_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        server_context(CertPair(tmp_path / "nope.pem", tmp_path / "nope.key"))


_NIDS = tls_mod.handshake_nids  # the OpenSSL calls are optional: see the skip below


def _client_handshake(server: ssl.SSLContext, version: ssl.TLSVersion, pki: TestPKI,
                      ) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pki.ca.configure_trust(client)
    client.maximum_version = version
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="dns.test")
    assert all(_pump_handshake(cli, c_out, c_in, srv, s_out, s_in))
    assert cli.version() == version.name.replace("v1_", "v1.")
    return cli, srv


@pytest.mark.skipif(not tls_mod._LibSSL.load() or tls_mod._LibSSL._nid_calls is None,
                    reason="this Python cannot ask OpenSSL for the group and signature")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_handshake_nids_name_the_group_and_the_peers_signature(
        pair: CertPair, pki: TestPKI, version: ssl.TLSVersion) -> None:
    """What ``dnstls query`` prints in place of kdig's "(ECDHE-X25519)-(ECDSA-...)": the
    group both ends agreed on, and on the client the server's signature (trustme's
    leaf is ECDSA P-256: EVP_PKEY_EC signing SHA-256); the server saw no signature."""
    server = server_context(pair)
    cli, srv = _client_handshake(server, version, pki)
    assert _NIDS(cli) == ("X25519", 408, "SHA256")
    assert _NIDS(srv) == ("X25519", None, None)
    server.set_ecdh_curve("secp384r1")  # a group the client offers but does not prefer
    cli, _ = _client_handshake(server, version, pki)
    assert _NIDS(cli) == ("secp384r1", 408, "SHA256")


def test_handshake_nids_of_an_unfinished_handshake_are_unknown(pair: CertPair) -> None:
    obj = server_context(pair).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert _NIDS(obj) == (None, None, None)


@pytest.mark.parametrize(("key_type", "digest", "version", "name"), [
    # every expected name is what kdig 3.2.6 (GnuTLS) printed for the same server
    (408, "SHA256", "TLSv1.3", "ECDSA-SECP256R1-SHA256"),
    (408, "SHA384", "TLSv1.3", "ECDSA-SECP384R1-SHA384"),
    (408, "SHA256", "TLSv1.2", "ECDSA-SHA256"),
    (912, "SHA256", "TLSv1.3", "RSA-PSS-RSAE-SHA256"),
    (912, "SHA256", "TLSv1.2", "RSA-PSS-RSAE-SHA256"),
    (6, "SHA256", "TLSv1.2", "RSA-SHA256"),
    (1087, None, "TLSv1.3", "EdDSA-Ed25519"),
    (1088, None, "TLSv1.2", "EdDSA-Ed448"),
    (None, None, "TLSv1.3", None),  # resumed: no signature in the handshake
    (408, None, "TLSv1.3", None),
    (116, "SHA256", "TLSv1.2", None),  # DSA: not a TLS 1.2/1.3 server key we name
])
def test_gnutls_signature_names(key_type: int | None, digest: str | None, version: str,
                                name: str | None) -> None:
    assert tls_mod.gnutls_signature(key_type, digest, version) == name


#: ``openssl req -x509 -newkey rsa-pss -pkeyopt rsa_keygen_bits:1024 -subj /CN=dns.test``
#: (its key is id-RSASSA-PSS; only its key type is read, so it may expire)
PSS_CERT = """\
-----BEGIN CERTIFICATE-----
MIICaDCCAZ2gAwIBAgIUKXxQMJTc+II/ncMkCaxbRFmXIr4wQQYJKoZIhvcNAQEK
MDSgDzANBglghkgBZQMEAgEFAKEcMBoGCSqGSIb3DQEBCDANBglghkgBZQMEAgEF
AKIDAgFeMBMxETAPBgNVBAMMCGRucy50ZXN0MB4XDTI2MTIwNzA4MjAwOVoXDTI2
MTIwODA4MjAwOVowEzERMA8GA1UEAwwIZG5zLnRlc3QwgZ0wCwYJKoZIhvcNAQEK
A4GNADCBiQKBgQDHHiBT1qnLjwGPKwFzjIDMVPXffFeqdyD2mPQNxPdffUtU8/qA
l7AYiZTJzYSBSaaC9aUGlix5JR4v4DGu7QnxkFI2d7ZstwoKEXo/1ayoyWy2qQMW
KcLPn3Mjauh7WShYaW39hdVEDdhSd24HIltdPZHIKh8JTVxEYcbb+LjipwIDAQAB
o1MwUTAdBgNVHQ4EFgQUkn73e8Y+4id97BpsAQI+Hm59VjswHwYDVR0jBBgwFoAU
kn73e8Y+4id97BpsAQI+Hm59VjswDwYDVR0TAQH/BAUwAwEB/zBBBgkqhkiG9w0B
AQowNKAPMA0GCWCGSAFlAwQCAQUAoRwwGgYJKoZIhvcNAQEIMA0GCWCGSAFlAwQC
AQUAogMCAV4DgYEATyPnAZkzWgaz0SwTiMLR2arQ1IaZn44x/7pnhgD/9cjig5mi
eeqUhwActSCYBaebocpubzD3gaIqizLADYLcKWIxcw3ssoM9KDCyQk68fRXGa8J+
ImfZISuV3V5ztnIOwd6wTKhIEY45hMQ+OPiwKAkjrycNtDYqKGKlbMpV1Nw=
-----END CERTIFICATE-----
"""


def test_gnutls_signature_of_an_rsassa_pss_key(pki: TestPKI) -> None:
    """An id-RSASSA-PSS certificate key signs rsa_pss_pss_*: kdig says "RSA-PSS-SHA256"
    where an rsaEncryption key's rsa_pss_rsae_* is "RSA-PSS-RSAE-SHA256"."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pss = x509.load_pem_x509_certificate(PSS_CERT.encode()).public_bytes(
        serialization.Encoding.DER)
    assert tls_mod.gnutls_signature(912, "SHA256", "TLSv1.3", pss) == "RSA-PSS-SHA256"
    assert tls_mod.gnutls_signature(912, "SHA384", "TLSv1.2", pss) == "RSA-PSS-SHA384"
    leaf_der = x509.load_pem_x509_certificate(pki.leaf.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER)
    assert tls_mod.gnutls_signature(912, "SHA256", "TLSv1.3", leaf_der) == (
        "RSA-PSS-RSAE-SHA256")
    assert tls_mod.gnutls_signature(912, "SHA256", "TLSv1.3", b"not DER") == (
        "RSA-PSS-RSAE-SHA256")


@pytest.mark.parametrize(("short", "name"), [
    ("X25519", "X25519"), ("prime256v1", "SECP256R1"), ("secp384r1", "SECP384R1"),
    ("secp521r1", "SECP521R1"), ("X448", "X448"), ("ffdhe2048", "FFDHE2048"), (None, None)])
def test_gnutls_group_names(short: str | None, name: str | None) -> None:
    assert tls_mod.gnutls_group(short) == name
