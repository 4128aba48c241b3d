"""The peer fixtures work on their own: real clients through real servers, no dnstls code.

kdig → {unbound, kresd, dnsdist} over DoT → nsd; kdig over UDP → stubby (strict, pinned)
→ unbound DoT → nsd; unbound forwarding over TLS → unbound DoT; dnsperf -m dot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from . import clients
from .peers import ZONE_DATA, Peer, TestPKI

pytestmark = pytest.mark.interop

DOT_SERVERS = ["unbound_dot", "kresd_dot", "dnsdist_dot"]


def test_nsd_serves_the_zone_over_udp_and_tcp(nsd: Peer) -> None:
    udp = clients.kdig(nsd.host, nsd.port, "www.example.test", "A")
    assert udp.status == "NOERROR", udp.describe()
    assert udp.rdata("A") == ZONE_DATA[("www.example.test.", "A")]
    # The ~2 KB TXT set is truncated over UDP (1232-byte EDNS buffer) and whole over TCP.
    tcp = clients.kdig(nsd.host, nsd.port, "big.example.test", "TXT", tcp=True)
    assert tcp.status == "NOERROR", tcp.describe()
    assert sorted(tcp.rdata("TXT")) == sorted(ZONE_DATA[("big.example.test.", "TXT")])
    assert tcp.received_bytes is not None and tcp.received_bytes > 2000


@pytest.mark.parametrize("server", DOT_SERVERS)
@pytest.mark.parametrize(("name", "rtype"), [
    ("www.example.test.", "A"),
    ("www.example.test.", "AAAA"),
    ("txt.example.test.", "TXT"),
    ("example.test.", "MX"),
    ("big.example.test.", "TXT"),
])
def test_kdig_over_tls_through_dot_server(request: pytest.FixtureRequest, pki: TestPKI,
                                          server: str, name: str, rtype: str) -> None:
    peer: Peer = request.getfixturevalue(server)
    result = clients.kdig(peer.host, peer.port, name, rtype, tls=True, ca=pki.ca_pem,
                        hostname=pki.hostname)
    assert result.status == "NOERROR", result.describe()
    assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)]), result.describe()


@pytest.mark.parametrize("server", DOT_SERVERS)
def test_kdig_cname_through_dot_server(request: pytest.FixtureRequest, pki: TestPKI,
                                       server: str) -> None:
    peer: Peer = request.getfixturevalue(server)
    result = clients.kdig(peer.host, peer.port, "alias.example.test", "A", tls=True,
                        ca=pki.ca_pem, hostname=pki.hostname)
    assert result.status == "NOERROR", result.describe()
    assert result.rdata("CNAME") == ZONE_DATA[("alias.example.test.", "CNAME")]
    assert result.rdata("A") == ZONE_DATA[("www.example.test.", "A")]


@pytest.mark.parametrize("server", DOT_SERVERS)
def test_kdig_pins_against_dot_server(request: pytest.FixtureRequest, pki: TestPKI,
                                      server: str) -> None:
    peer: Peer = request.getfixturevalue(server)
    right = clients.kdig(peer.host, peer.port, "www.example.test", "A", tls=True, pin=pki.pin)
    assert right.status == "NOERROR", right.describe()
    wrong = clients.kdig(peer.host, peer.port, "www.example.test", "A", tls=True,
                       pin=pki.wrong_pin)
    assert wrong.returncode != 0 and wrong.status is None, wrong.describe()


def test_kdig_wrong_hostname_is_rejected(unbound_dot: Peer, pki: TestPKI) -> None:
    result = clients.kdig(unbound_dot.host, unbound_dot.port, "www.example.test", "A",
                        tls=True, ca=pki.ca_pem, hostname="other.test")
    assert result.returncode != 0 and result.status is None, result.describe()


def test_unbound_dot_pads_and_advertises_keepalive(unbound_dot: Peer, pki: TestPKI) -> None:
    result = clients.kdig(unbound_dot.host, unbound_dot.port, "www.example.test", "A",
                        tls=True, ca=pki.ca_pem, hostname=pki.hostname, padding=True,
                        keepalive=True)
    assert result.status == "NOERROR", result.describe()
    assert result.received_bytes is not None and result.received_bytes % 468 == 0
    assert any(line.startswith(";; PADDING:") for line in result.edns_lines), result.describe()
    assert ";; Option (11): 00C8" in result.edns_lines, result.describe()  # 20.0 s


def test_dig_over_tls_through_unbound(unbound_dot: Peer, pki: TestPKI) -> None:
    result = clients.dig(unbound_dot.host, unbound_dot.port, "www.example.test", "A", tls=True,
                       ca=pki.ca_pem, hostname=pki.hostname, keepalive=True)
    assert result.status == "NOERROR", result.describe()
    assert result.rdata("A") == ZONE_DATA[("www.example.test.", "A")]
    assert "TCP KEEPALIVE: 20.0 secs" in result.stdout, result.describe()


def test_stubby_strict_with_pin_in_front_of_unbound(
        unbound_dot: Peer, pki: TestPKI, stubby: Callable[..., Peer]) -> None:
    stub = stubby(unbound_dot, pins=[pki.pin], ca_file=pki.ca_pem)
    for name, rtype in [("www.example.test.", "A"), ("big.example.test.", "TXT")]:
        result = clients.kdig(stub.host, stub.port, name, rtype)
        assert result.status == "NOERROR", result.describe()
        assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)])


def test_stubby_strict_with_wrong_pin_gives_no_answer(
        unbound_dot: Peer, pki: TestPKI, stubby: Callable[..., Peer]) -> None:
    stub = stubby(unbound_dot, pins=[pki.wrong_pin], auth_name=None)
    result = clients.kdig(stub.host, stub.port, "www.example.test", "A")
    assert result.status != "NOERROR", result.describe()
    assert result.rdata("A") == []


def test_getdns_query_over_tls_to_unbound(unbound_dot: Peer, pki: TestPKI) -> None:
    by_name = clients.getdns_query(unbound_dot.host, unbound_dot.port, "www.example.test",
                                 auth_name=pki.hostname, ca=pki.ca_pem)
    assert by_name.good and by_name.addresses == ["192.0.2.1"], by_name.describe()
    by_pin = clients.getdns_query(unbound_dot.host, unbound_dot.port, "www.example.test",
                                pins=[pki.pin])
    assert by_pin.good and by_pin.addresses == ["192.0.2.1"], by_pin.describe()
    wrong = clients.getdns_query(unbound_dot.host, unbound_dot.port, "www.example.test",
                               pins=[pki.wrong_pin])
    assert not wrong.good, wrong.describe()


def test_unbound_forwards_over_tls(unbound_dot: Peer,
                                   unbound_tls_forwarder: Callable[[Peer], Peer]) -> None:
    forwarder = unbound_tls_forwarder(unbound_dot)
    result = clients.kdig(forwarder.host, forwarder.port, "www.example.test", "A")
    assert result.status == "NOERROR", result.describe()
    assert result.rdata("A") == ZONE_DATA[("www.example.test.", "A")]


def test_dnsperf_dot_against_unbound(unbound_dot: Peer, tmp_path: Path) -> None:
    queries = clients.write_query_file(tmp_path / "queries.txt", [
        ("www.example.test", "A"), ("www.example.test", "AAAA"),
        ("txt.example.test", "TXT"), ("example.test", "MX")])
    result = clients.dnsperf_dot(unbound_dot.host, unbound_dot.port, queries, seconds=2)
    assert result.sent > 0 and result.lost == 0, result.output
    assert result.completed == result.sent
    assert result.rcodes == {"NOERROR": result.completed}, result.output
