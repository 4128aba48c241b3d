"""Real DoT clients against ``dnstls serve`` (RFC 7858 server side).

The server answers the example.test. zone from ``--local-zone`` authoritatively and
REFUSED for other names. Clients: kdig (CA + hostname, SPKI pins, padding, keepalive),
dig, getdns_query, Stubby in strict mode in front of us, Unbound forwarding to us over
TLS, and a bounded ``dnsperf -m dot`` run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from . import clients
from .peers import ZONE_DATA, Peer, TestPKI

pytestmark = pytest.mark.interop

WWW_A = ZONE_DATA[("www.example.test.", "A")]


@pytest.fixture
def server(dnstls_serve: Callable[..., Peer], zone_file: Path) -> Peer:
    return dnstls_serve(zone=zone_file)


def _kdig_tls(server: Peer, pki: TestPKI, name: str, rtype: str = "A",
              **options: object) -> clients.DigResult:
    return clients.kdig(server.host, server.port, name, rtype, tls=True, ca=pki.ca_pem,
                      hostname=pki.hostname, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "rtype"), sorted(ZONE_DATA))
def test_kdig_tls_ca_and_hostname(server: Peer, pki: TestPKI, name: str, rtype: str) -> None:
    result = _kdig_tls(server, pki, name, rtype)
    assert result.status == "NOERROR", result.describe()
    assert "aa" in result.flags, result.describe()
    assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)]), result.describe()


def test_kdig_tls_name_outside_local_zone_is_refused(server: Peer, pki: TestPKI) -> None:
    result = _kdig_tls(server, pki, "www.example.org", "A")
    assert result.status == "REFUSED", result.describe()


def test_kdig_right_pin(server: Peer, pki: TestPKI) -> None:
    result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                        pin=pki.pin)
    assert result.status == "NOERROR", result.describe()
    assert result.rdata("A") == WWW_A


def test_kdig_wrong_pin_fails(server: Peer, pki: TestPKI) -> None:
    result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                        pin=pki.wrong_pin)
    assert result.returncode != 0, result.describe()
    assert result.status is None and result.rdata("A") == [], result.describe()


def test_kdig_wrong_pins_leave_the_per_client_limit_free(
        dnstls_serve: Callable[..., Peer], zone_file: Path, pki: TestPKI,
        tmp_path: Path) -> None:
    """kdig ends a handshake whose pin does not match with close_notify: the compiled
    server failed on that (SSLZeroReturnError without reason) and kept the client's
    admission slot, so after max_connections_per_client of them the address was shut
    out until a restart."""
    config = tmp_path / "serve.toml"
    config.write_text("[server]\nmax_connections_per_client = 2\n[forward]\nenabled = false\n")
    server = dnstls_serve("--config", str(config), zone=zone_file)
    for _ in range(3):  # each tries twice (+retry=1): 6 failed handshakes
        result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                              pin=pki.wrong_pin)
        assert result.returncode != 0 and result.status is None, result.describe()
    result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                          pin=pki.pin)
    assert result.status == "NOERROR", result.describe()


def test_kdig_wrong_hostname_fails(server: Peer, pki: TestPKI) -> None:
    result = clients.kdig(server.host, server.port, "www.example.test", "A", tls=True,
                        ca=pki.ca_pem, hostname="not-dns.test")
    assert result.returncode != 0 and result.status is None, result.describe()


def test_kdig_padding(server: Peer, pki: TestPKI) -> None:
    """RFC 8467 §4.1: a padded query over TLS gets a response padded to 468 octets."""
    for name, rtype in [("www.example.test", "A"), ("big.example.test", "TXT")]:
        result = _kdig_tls(server, pki, name, rtype, padding=True)
        assert result.status == "NOERROR", result.describe()
        assert result.received_bytes is not None, result.describe()
        assert result.received_bytes % 468 == 0, result.describe()
        assert any(line.startswith(";; PADDING:") for line in result.edns_lines), \
            result.describe()


def test_kdig_keepalive(server: Peer, pki: TestPKI) -> None:
    """RFC 7828 §3.3.2: the server answers edns-tcp-keepalive with its idle timeout."""
    result = _kdig_tls(server, pki, "www.example.test", "A", keepalive=True)
    assert result.status == "NOERROR", result.describe()
    options = [line for line in result.edns_lines if line.startswith(";; Option (11):")]
    assert len(options) == 1, result.describe()
    timeout_units = int(options[0].split(":", 1)[1].strip(), 16)  # units of 100 ms
    assert timeout_units > 0, result.describe()


def test_dig_tls_keepalive(server: Peer, pki: TestPKI) -> None:
    result = clients.dig(server.host, server.port, "www.example.test", "A", tls=True,
                       ca=pki.ca_pem, hostname=pki.hostname, keepalive=True)
    assert result.status == "NOERROR", result.describe()
    assert result.rdata("A") == WWW_A
    match = re.search(r"TCP KEEPALIVE: ([\d.]+) secs", result.stdout)
    assert match and float(match.group(1)) > 0, result.describe()


@pytest.mark.parametrize("auth", ["pin+name", "pin-only"])
def test_stubby_strict_with_our_pin(server: Peer, pki: TestPKI,
                                    stubby: Callable[..., Peer], auth: str) -> None:
    if auth == "pin+name":
        stub = stubby(server, pins=[pki.pin], auth_name=pki.hostname, ca_file=pki.ca_pem)
    else:
        stub = stubby(server, pins=[pki.pin], auth_name=None)
    for name, rtype in [("www.example.test.", "A"), ("big.example.test.", "TXT")]:
        result = clients.kdig(stub.host, stub.port, name, rtype)
        assert result.status == "NOERROR", result.describe()
        assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)])
    refused = clients.kdig(stub.host, stub.port, "www.example.org", "A")
    assert refused.status == "REFUSED", refused.describe()


def test_stubby_strict_with_wrong_pin_gets_nothing(server: Peer, pki: TestPKI,
                                                   stubby: Callable[..., Peer]) -> None:
    stub = stubby(server, pins=[pki.wrong_pin], auth_name=None)
    result = clients.kdig(stub.host, stub.port, "www.example.test", "A")
    assert result.status != "NOERROR" and result.rdata("A") == [], result.describe()


def test_stubby_bursts_get_every_answer(server: Peer, pki: TestPKI,
                                        stubby: Callable[..., Peer]) -> None:
    """Bursts of queries through Stubby: our answers to one read must reach it as one
    TLS record per message. getdns reads one message per record and does not look at
    what OpenSSL still buffers; with a read's answers batched into one record it lost
    30-50 % of the answers of 5- and 20-query bursts (they timed out after 3 s)."""
    stub = stubby(server, pins=[pki.pin], auth_name=pki.hostname, ca_file=pki.ca_pem)
    names = ["www.example.test", "mail.example.test", "example.test", "nope.example.test"]
    result = clients.udp_burst(stub.host, stub.port, names, bursts=10, size=20, timeout=2.0)
    assert result.missing == 0, result.describe()
    assert result.answered == 200, result.describe()


def test_getdns_query_over_tls(server: Peer, pki: TestPKI) -> None:
    by_name = clients.getdns_query(server.host, server.port, "www.example.test",
                                 auth_name=pki.hostname, ca=pki.ca_pem, padding=128)
    assert by_name.good and by_name.addresses == WWW_A, by_name.describe()
    by_pin = clients.getdns_query(server.host, server.port, "www.example.test", pins=[pki.pin])
    assert by_pin.good and by_pin.addresses == WWW_A, by_pin.describe()


def test_unbound_forwards_to_us_over_tls(server: Peer,
                                         unbound_tls_forwarder: Callable[[Peer], Peer]) -> None:
    forwarder = unbound_tls_forwarder(server)
    for name, rtype in [("www.example.test.", "A"), ("big.example.test.", "TXT"),
                        ("example.test.", "MX")]:
        result = clients.kdig(forwarder.host, forwarder.port, name, rtype, tcp=True)
        assert result.status == "NOERROR", result.describe()
        assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)])


def test_dnsperf_dot_no_lost_queries(server: Peer, tmp_path: Path) -> None:
    queries = clients.write_query_file(tmp_path / "queries.txt", [
        ("www.example.test", "A"), ("www.example.test", "AAAA"),
        ("txt.example.test", "TXT"), ("example.test", "MX"), ("mail.example.test", "A"),
        ("alias.example.test", "CNAME")])
    result = clients.dnsperf_dot(server.host, server.port, queries, seconds=3, clients=4,
                               outstanding=32)
    assert result.returncode == 0, result.output
    assert result.sent > 0 and result.lost == 0, result.output
    assert result.completed == result.sent, result.output
    assert result.rcodes == {"NOERROR": result.completed}, result.output


def test_kdig_from_a_refused_source_gets_refused_with_ede_18(
        dnstls_serve: Callable[..., Peer], zone_file: Path, pki: TestPKI) -> None:
    """Access control: kdig bound to 127.0.0.2 (``-b``) is refused over TLS -- the
    handshake completes, the answer is REFUSED with EDE 18 (Prohibited), padded like
    every DoT answer to a padded query -- while 127.0.0.1 is answered."""
    server = dnstls_serve("--access-control", "127.0.0.0/8 allow",
                          "--access-control", "127.0.0.2 refuse", zone=zone_file)
    refused = _kdig_tls(server, pki, "www.example.test", padding=True,
                        extra=["-b", "127.0.0.2"])
    assert refused.status == "REFUSED", refused.describe()
    assert "EDE: 18 (Prohibited)" in refused.stdout, refused.describe()
    assert refused.rdata("A") == [], refused.describe()
    assert refused.received_bytes == 468, refused.describe()
    allowed = _kdig_tls(server, pki, "www.example.test", extra=["-b", "127.0.0.1"])
    assert allowed.status == "NOERROR" and allowed.rdata("A") == WWW_A, allowed.describe()
