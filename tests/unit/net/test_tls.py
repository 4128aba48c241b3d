"""The server context's policy (net/tls.py): versions, ciphers, ALPN, tickets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dnstls.errors import ConfigError
from dnstls.net.tls import TLS13_TICKETS, CertPair, ServerTLS, server_context
from fakes import TestPKI


@pytest.fixture
def pair(tmp_path: Path) -> CertPair:
    pki = TestPKI.create(tmp_path)
    pem = tmp_path / "server.pem"
    pki.leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return CertPair(pem, pem)


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
