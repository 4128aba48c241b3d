"""``dnstls stub`` (a subprocess) between real clients and real DoT servers.

kdig and dig ask the stub over plain UDP and TCP on a free loopback port; the stub
forwards over TLS to Unbound, Knot Resolver or dnsdist (each backed by nsd serving
example.test.), or to ``dnstls serve`` answering the zone itself. The stub always gets
explicit loopback upstreams: its built-in public defaults are never reached from tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from . import clients, peers
from .peers import ZONE_DATA, Peer, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

DOT_SERVERS = ["unbound_dot", "kresd_dot", "dnsdist_dot"]
WWW_A = ZONE_DATA[("www.example.test.", "A")]
BIG_TXT = sorted(ZONE_DATA[("big.example.test.", "TXT")])


def start_stub(group: PeerGroup, upstreams: Sequence[Peer], args: Sequence[str] = (), *,
               name: str | None = peers.TLS_NAME) -> Peer:
    """``dnstls stub --listen 127.0.0.1:FREE --upstream tls://PEER#NAME ...``, ready when
    it answers a UDP query (any RCODE)."""
    assert upstreams, "never start a stub without explicit loopback upstreams"
    work = group.workdir("dnstls-stub")
    port = peers.free_port()
    # the zone example.test. is under the default zone test.: forward it
    argv = [*peers.dnstls_command(), "stub", "--listen", f"{peers.LOOPBACK}:{port}",
            "--config", str(peers.forward_test_config(work))]
    for upstream in upstreams:
        assert upstream.host == peers.LOOPBACK
        uri = f"tls://{upstream.host}:{upstream.port}" + (f"#{name}" if name else "")
        argv += ["--upstream", uri]
    argv += list(args)
    peer = group.start(Peer("dnstls-stub", argv, work, port=port,
                            env={"PYTHONUNBUFFERED": "1"}))
    return peer.wait_ready(lambda: peers.udp_dns_answers(peers.LOOPBACK, port))


@pytest.fixture
def stub_in_front(peer_group: PeerGroup, pki: TestPKI) -> Callable[..., Peer]:
    def start(*upstreams: Peer, args: Sequence[str] = ()) -> Peer:
        return start_stub(peer_group, upstreams, ["--ca-file", str(pki.ca_pem), *args])

    return start


def _check_zone_answers(stub: Peer) -> None:
    for tcp in (False, True):
        for name, rtype in [("www.example.test.", "A"), ("www.example.test.", "AAAA"),
                            ("txt.example.test.", "TXT"), ("example.test.", "MX")]:
            result = clients.kdig(stub.host, stub.port, name, rtype, tcp=tcp)
            assert result.status == "NOERROR", result.describe()
            assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)]), \
                result.describe()
            result = clients.dig(stub.host, stub.port, name, rtype, tcp=tcp)
            assert result.status == "NOERROR", result.describe()
            assert sorted(result.rdata(rtype)) == sorted(ZONE_DATA[(name, rtype)]), \
                result.describe()
    missing = clients.kdig(stub.host, stub.port, "nope.example.test", "A")
    assert missing.status == "NXDOMAIN", missing.describe()


def _check_truncation(stub: Peer) -> None:
    # kdig over UDP without EDNS: a 512-byte answer with TC=1 (+ignore: no TCP retry)
    udp = clients.kdig(stub.host, stub.port, "big.example.test", "TXT", extra=["+ignore"])
    assert udp.status == "NOERROR" and "tc" in udp.flags, udp.describe()
    assert udp.received_bytes is not None and udp.received_bytes <= 512, udp.describe()
    # dig (EDNS 1232) gets TC=1 too and retries over TCP by itself: the whole set
    auto = clients.dig(stub.host, stub.port, "big.example.test", "TXT")
    assert auto.status == "NOERROR", auto.describe()
    assert sorted(auto.rdata("TXT")) == BIG_TXT, auto.describe()
    for tool in (clients.kdig, clients.dig):
        tcp = tool(stub.host, stub.port, "big.example.test", "TXT", tcp=True)
        assert tcp.status == "NOERROR" and "tc" not in tcp.flags, tcp.describe()
        assert sorted(tcp.rdata("TXT")) == BIG_TXT, tcp.describe()


@pytest.mark.parametrize("server", DOT_SERVERS)
def test_stub_in_front_of_dot_server(request: pytest.FixtureRequest,
                                     stub_in_front: Callable[..., Peer], server: str) -> None:
    upstream: Peer = request.getfixturevalue(server)
    stub = stub_in_front(upstream, args=["--no-cache"])
    _check_zone_answers(stub)
    _check_truncation(stub)


@pytest.mark.parametrize("server", DOT_SERVERS)
def test_stub_pins_against_dot_server(request: pytest.FixtureRequest, peer_group: PeerGroup,
                                      pki: TestPKI, server: str) -> None:
    upstream: Peer = request.getfixturevalue(server)
    # pin only, no name (the leaf key, plus a next key not deployed yet): answered
    pinned = start_stub(peer_group, [upstream], ["--pin", pki.pin, "--pin", pki.wrong_pin],
                        name=None)
    result = clients.kdig(pinned.host, pinned.port, "www.example.test", "A")
    assert result.status == "NOERROR" and result.rdata("A") == WWW_A, result.describe()
    # a wrong pin: SERVFAIL with an Extended DNS Error, never an answer
    wrong = start_stub(peer_group, [upstream], ["--pin", pki.wrong_pin], name=None)
    result = clients.kdig(wrong.host, wrong.port, "www.example.test", "A", extra=["+edns"])
    assert result.status == "SERVFAIL" and not result.rdata("A"), result.describe()
    assert "pin mismatch" in result.stdout, result.describe()
    # the name checked against a CA that did not issue the certificate: SERVFAIL
    other_ca = peers.make_pki(peer_group.directory / "other-pki")
    untrusted = start_stub(peer_group, [upstream], ["--ca-file", str(other_ca.ca_pem)])
    result = clients.dig(untrusted.host, untrusted.port, "www.example.test", "A")
    assert result.status == "SERVFAIL", result.describe()


def test_stub_report_only_pin_still_answers(peer_group: PeerGroup, pki: TestPKI,
                                            unbound_dot: Peer) -> None:
    stub = start_stub(peer_group, [unbound_dot], ["--ca-file", str(pki.ca_pem), "--pin",
                                                  pki.wrong_pin, "--pin-mode", "report"])
    result = clients.kdig(stub.host, stub.port, "www.example.test", "A")
    assert result.status == "NOERROR" and result.rdata("A") == WWW_A, result.describe()
    log = stub.log_text()
    assert "report-only" in log and pki.wrong_pin in log and pki.pin in log, log


def test_stub_fails_over_between_dot_servers(peer_group: PeerGroup, pki: TestPKI,
                                             unbound_dot: Peer, kresd_dot: Peer) -> None:
    dead_port = peers.free_port()
    dead = Peer("nothing", [], peer_group.directory, port=dead_port)
    stub = start_stub(peer_group, [dead, unbound_dot, kresd_dot],
                      ["--ca-file", str(pki.ca_pem), "--strategy", "ordered", "--no-cache"])
    for i in range(5):
        result = clients.kdig(stub.host, stub.port, "www.example.test", "A", tcp=bool(i % 2))
        assert result.status == "NOERROR" and result.rdata("A") == WWW_A, result.describe()


def test_stub_in_front_of_dnstls_serve(peer_group: PeerGroup, pki: TestPKI,
                                       dnstls_serve: Callable[..., Peer],
                                       zone_file: Path) -> None:
    server = dnstls_serve("--no-upstream", zone=zone_file)
    stub = start_stub(peer_group, [server], ["--ca-file", str(pki.ca_pem), "--no-cache"])
    for tcp in (False, True):
        result = clients.kdig(stub.host, stub.port, "www.example.test", "A", tcp=tcp)
        assert result.status == "NOERROR" and result.rdata("A") == WWW_A, result.describe()
        result = clients.dig(stub.host, stub.port, "mail.example.test", "A", tcp=tcp)
        assert result.status == "NOERROR", result.describe()
        assert result.rdata("A") == ZONE_DATA[("mail.example.test.", "A")]
    _check_truncation(stub)
    # outside the zone dnstls serve says REFUSED: the stub tries elsewhere, then SERVFAIL
    refused = clients.kdig(stub.host, stub.port, "www.example.org", "A")
    assert refused.status == "SERVFAIL", refused.describe()
