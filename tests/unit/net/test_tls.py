"""The server context's policy (net/tls.py): versions, ciphers, ALPN, tickets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dnstls.errors import ConfigError
from dnstls.net.tls import (
    TLS13_SUITES,
    TLS13_TICKETS,
    CertPair,
    ServerTLS,
    prefer_tls13_suites,
    server_context,
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


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A TLS 1.3 handshake over memory BIOs; the negotiated suite."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="dns.test")
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


def test_one_tls13_ticket_per_connection(pair: CertPair) -> None:
    assert TLS13_TICKETS == 1
    assert server_context(pair).num_tickets == 1
    tls = ServerTLS([pair])
    assert tls.context.num_tickets == 1
    assert tls.reload() and tls.context.num_tickets == 1  # reload keeps the context


def test_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        server_context(CertPair(tmp_path / "nope.pem", tmp_path / "nope.key"))
