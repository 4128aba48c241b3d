"""``dnstls serve`` forwarding to real peers: kdig → dnstls (DoT) → upstream → nsd.

Upstreams: nsd itself over UDP and TCP; unbound, Knot Resolver and dnsdist over TLS,
authenticated by name (``#dns.test`` + ``--ca-file``) or by SPKI pin (``--pin``). A wrong
pin must never fall back to plaintext (RFC 8310 strict profile): the client gets an error
answer, not the data. Also: both address families, plain DNS (``--plain``), metrics.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from . import clients, peers
from .peers import ZONE_DATA, Peer, TestPKI

pytestmark = pytest.mark.interop

DOT_SERVERS = ["unbound_dot", "kresd_dot", "dnsdist_dot"]
QUERIES = [("www.example.test.", "A"), ("example.test.", "MX"), ("big.example.test.", "TXT")]


def _ask_all(server: Peer, pki: TestPKI, queries: list[tuple[str, str]] = QUERIES) -> None:
    for name, rtype in queries:
        result = clients.kdig(server.host, server.port, name, rtype, tls=True, ca=pki.ca_pem,
                              hostname=pki.hostname)
        assert result.status == "NOERROR", result.describe()
        assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)]), \
            result.describe()


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_forward_to_nsd(dnstls_serve: Callable[..., Peer], nsd: Peer, pki: TestPKI,
                        scheme: str) -> None:
    server = dnstls_serve("--upstream", f"{scheme}://{nsd.host}:{nsd.port}")
    _ask_all(server, pki)


@pytest.mark.parametrize("upstream", DOT_SERVERS)
def test_forward_over_tls_by_name(request: pytest.FixtureRequest,
                                  dnstls_serve: Callable[..., Peer], pki: TestPKI,
                                  upstream: str) -> None:
    peer: Peer = request.getfixturevalue(upstream)
    server = dnstls_serve("--upstream", f"tls://{peer.host}:{peer.port}#{pki.hostname}",
                          "--ca-file", str(pki.ca_pem))
    _ask_all(server, pki)


@pytest.mark.parametrize("upstream", DOT_SERVERS)
def test_forward_over_tls_by_pin(request: pytest.FixtureRequest,
                                 dnstls_serve: Callable[..., Peer], pki: TestPKI,
                                 upstream: str) -> None:
    peer: Peer = request.getfixturevalue(upstream)
    server = dnstls_serve("--upstream", f"tls://{peer.host}:{peer.port}", "--pin", pki.pin)
    _ask_all(server, pki)


def test_forward_over_tls_wrong_pin_gives_no_data(dnstls_serve: Callable[..., Peer],
                                                  unbound_dot: Peer, pki: TestPKI) -> None:
    server = dnstls_serve("--upstream", f"tls://{unbound_dot.host}:{unbound_dot.port}",
                          "--pin", pki.wrong_pin)
    result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                          ca=pki.ca_pem, hostname=pki.hostname,
                          extra=["+time=8"])
    assert result.status == "SERVFAIL", result.describe()
    assert result.rdata("A") == []


def test_forward_over_tls_wrong_name_gives_no_data(dnstls_serve: Callable[..., Peer],
                                                   unbound_dot: Peer, pki: TestPKI) -> None:
    server = dnstls_serve("--upstream", f"tls://{unbound_dot.host}:{unbound_dot.port}#other.test",
                          "--ca-file", str(pki.ca_pem))
    result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                          ca=pki.ca_pem, hostname=pki.hostname, extra=["+time=8"])
    assert result.status == "SERVFAIL", result.describe()
    assert result.rdata("A") == []


def test_both_address_families(dnstls_serve: Callable[..., Peer], zone_file: Path,
                               pki: TestPKI) -> None:
    port4, port6 = peers.free_port(), peers.free_port("::1")
    dnstls_serve("--listen", f"127.0.0.1:{port4}", "--listen", f"[::1]:{port6}",
                 zone=zone_file)
    for host, port in [("127.0.0.1", port4), ("::1", port6)]:
        assert peers.tcp_accepts(host, port)
        result = clients.kdig(host, port, "www.example.test", "AAAA", tls=True, ca=pki.ca_pem,
                              hostname=pki.hostname)
        assert result.status == "NOERROR", result.describe()
        assert result.rdata("AAAA") == ZONE_DATA[("www.example.test.", "AAAA")]


def test_plain_listener_and_metrics(dnstls_serve: Callable[..., Peer], zone_file: Path,
                                    pki: TestPKI) -> None:
    plain, metrics = peers.free_port(), peers.free_port()
    server = dnstls_serve("--plain", f"127.0.0.1:{plain}", "--metrics",
                          f"127.0.0.1:{metrics}", zone=zone_file)
    for tcp in (False, True):
        result = clients.kdig("127.0.0.1", plain, "www.example.test", "A", tcp=tcp)
        assert result.status == "NOERROR", result.describe()
        assert result.rdata("A") == ZONE_DATA[("www.example.test.", "A")]
    _ask_all(server, pki, [("www.example.test.", "A")])
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as reply:
        assert reply.status == 200
        body = reply.read().decode()
    assert "# TYPE" in body, body[:2000]
