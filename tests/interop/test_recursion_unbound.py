"""Full recursion (``dnstls serve`` with ``[recursion] enabled = true``) next to a
recursive Unbound 1.17, both iterating from the same root hints through the loopback
hierarchy of tests/fakes/recursion_zones.py: several nsd (one per loopback address, port
53), a dead ``test.`` server, a lame and a glueless delegation, a glueless NS loop, a
TXT answer that needs TCP, and a server that poisons its answers; and through the signed
hierarchy of tests/fakes/signed_zones.py (one nsd) for DNSSEC.

The fixture checks prove the hierarchy: Unbound answers every question of
``recursion_zones.EXPECTED`` (RCODE and answer RRsets) and validates every question of
``signed_zones.EXPECTED`` as that table says. The comparisons ask ``dnstls serve`` the
same questions over plain UDP (``--plain``; a truncated answer asked again over TCP, as
a stub would) and over DoT, twice (the second round from the caches), and compare with
Unbound: the RCODE and the answer's records (owner, type, rdata; TTLs at most the
zone's), no poison, SERVFAIL for the loop within the client's timeout; with validation
the AD bit and the EDE of a SERVFAIL, as tests/interop/test_dnssec_serve_unbound.py does
for forwarding (the same cache-related exceptions: Unbound's later answers for bogus
data say EDE 6, and ANY is left out).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from fakes import recursion_zones as rz
from fakes import signed_zones

from . import peers
from .clients import kdig, record_texts
from .peers import LOOPBACK, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

#: One client query's bound, in seconds: the loop's SERVFAIL must come before it.
CLIENT_TIMEOUT = 10.0


# --------------------------------------------------------------------------- fixtures

class Authorities:
    """The running hierarchies: recursion_zones' and the signed one at base + 20."""

    def __init__(self, zones: rz.Hierarchy, signed: signed_zones.Hierarchy,
                 signed_hints: Path, poison: rz.PoisonServer, started_in: float) -> None:
        self.zones, self.signed, self.signed_hints = zones, signed, signed_hints
        self.poison, self.started_in = poison, started_in


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authorities]:
    directory = tmp_path_factory.mktemp("recursion")
    started = time.monotonic()
    zones = rz.write_hierarchy(directory / "zones")
    signed_address = zones.address(rz.SIGNED)
    signed = signed_zones.write_hierarchy(directory / "signed", address=signed_address)
    signed_hints = rz.write_root_hints(directory / "signed.hints",
                                       [("ns.test.", signed_address)])
    with peers.peer_group_at(directory / "peers") as group, \
            rz.responders(zones) as poison:
        try:
            peers.start_authorities(group, rz.servers_of(zones))
            peers.start_authorities(group, {signed_address: signed.zone_files})
        except peers.PeerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield Authorities(zones, signed, signed_hints, poison, time.monotonic() - started)


def ask(port: int, qname: str, qtype: str, *, dnssec: bool = False,
        host: str = LOOPBACK) -> dns.message.Message:
    """A stub's question over UDP (EDNS, 1232 bytes), asked once more after half of
    :data:`CLIENT_TIMEOUT` without an answer, and again over TCP if the answer is
    truncated. The retry is needed: Unbound drops an answer that took longer than its
    ``discard-timeout`` (1.9 s), expecting the client to have asked again, and a first
    question that meets the dead ``test.`` server twice (four tries, 376 + 376 + 752 +
    752 ms) takes longer; the retry is answered from its cache."""
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232,
                                   want_dnssec=dnssec)
    try:
        answer = dns.query.udp(query, host, port=port, timeout=CLIENT_TIMEOUT / 2)
    except dns.exception.Timeout:
        answer = dns.query.udp(query, host, port=port, timeout=CLIENT_TIMEOUT / 2)
    if answer.flags & dns.flags.TC:
        answer = dns.query.tcp(query, host, port=port, timeout=CLIENT_TIMEOUT)
    return answer


def ask_dot(port: int, pki: TestPKI, qname: str, qtype: str) -> dns.message.Message:
    """The same question over DoT (TLS 1.3, our CA, the server's name checked)."""
    context = ssl.create_default_context(cafile=str(pki.ca_pem))
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    with socket.create_connection((LOOPBACK, port), timeout=CLIENT_TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=pki.hostname) as sock:
        return dns.query.tls(query, LOOPBACK, port=port, timeout=CLIENT_TIMEOUT, sock=sock)


def outcome(message: dns.message.Message) -> tuple[str, rz.Answer]:
    return dns.rcode.to_text(message.rcode()), rz.answer_of(message)


def recursion_config(directory: Path, root_hints: Path, *, anchor: Path | None = None,
                     log_queries: bool = False) -> Path:
    """serve's config for recursion from ``root_hints`` (authorities on loopback);
    ``log_queries`` puts every miss on the message path (the iterator's wire path,
    ``Iterator.resolve_wire``, answers them otherwise)."""
    text = f"""\
[recursion]
enabled = true
root_hints = "{root_hints}"
qname_minimisation = true
do_not_query_localhost = false
do_ip4 = true
do_ip6 = false

[local]
nodefault = ["test."]
"""
    if log_queries:
        text += "\n[server]\nlog_queries = true\n"
    if anchor is not None:
        text += f"""
[dnssec]
validation = true
trust_anchor_file = "{anchor}"
"""
    path = directory / "recursion.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- fixture checks

def test_hierarchy_scenarios_at_the_authorities(authorities: Authorities) -> None:
    """The servers themselves: the cases are there (a referral without glue, REFUSED
    from the lame server, TC for the big TXT, nothing at the dead address, poison)."""
    zones = authorities.zones

    def direct(host: int, qname: str, qtype: str) -> dns.message.Message:
        query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
        return dns.query.udp(query, zones.address(host), port=53, timeout=5)

    root = direct(rz.ROOT_B, "www.example.test.", "A")
    assert not root.answer and {r.name.to_text() for r in root.authority} == {"test."}
    loop = direct(rz.TEST_A, "www.loopa.test.", "A")
    assert record_texts(loop.authority) == {"loopa.test. IN NS ns.loopb.test."}
    assert not loop.additional or all(r.rdtype == dns.rdatatype.OPT
                                      for r in loop.additional), loop
    glueless = direct(rz.TEST_A, "www.other.test.", "A")
    assert record_texts(glueless.authority) == {"other.test. IN NS ns.other.example.test."}
    assert not any(r.rdtype == dns.rdatatype.A for r in glueless.additional), glueless
    assert direct(rz.OTHER, "www.lame.test.", "A").rcode() == dns.rcode.REFUSED
    big = direct(rz.EXAMPLE, "big.example.test.", "TXT")
    assert big.flags & dns.flags.TC and not big.answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            pytest.raises(ConnectionRefusedError):  # ICMP port unreachable, at once
        sock.settimeout(5)
        sock.connect((zones.dead, 53))
        sock.send(dns.message.make_query("test.", "SOA").to_wire())
        sock.recv(512)
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("slow.test.", "SOA"), zones.hole, port=53,
                      timeout=0.5)
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(dns.message.make_query("slow.test.", "SOA"), zones.hole, port=53,
                      timeout=0.5)
    poisoned = direct(rz.POISON, "www.poison.test.", "A")
    assert "www.example.test. IN A 192.0.2.66" in record_texts(poisoned.answer)
    assert "test. IN NS ns.poison.test." in record_texts(poisoned.authority)
    signed = dns.query.udp(dns.message.make_query("www.secure.test.", "A"),
                           zones.address(rz.SIGNED), port=53, timeout=5)
    assert record_texts(signed.answer) == {"www.secure.test. IN A 192.0.2.1"}
    print(f"hierarchy up in {authorities.started_in:.2f}s")


def test_unbound_resolves_the_hierarchy(authorities: Authorities,
                                        peer_group: PeerGroup) -> None:
    """Unbound iterating from the hints answers every question as EXPECTED says, twice;
    the poison is never believed; the loop ends in SERVFAIL before the client gives up."""
    zones = authorities.zones
    unbound = peers.start_unbound_recursive(peer_group, root_hints=zones.root_hints)
    wrong = {}
    for round_ in (1, 2):
        for question in [*rz.EXPECTED, *rz.POISON_CHECKS]:
            got = ask(unbound.port, *question)
            want = rz.expected(question, zones.base)
            if outcome(got) != want:
                wrong[f"{question} round {round_}"] = (want, outcome(got))
            assert all(rrset.ttl <= rz.TTL for rrset in got.answer), got
    assert not wrong, "\n".join(f"{q}: want {w}\n  got {g}" for q, (w, g) in wrong.items())
    assert authorities.poison.queries > 0
    assert authorities.poison.victim_queries == 0


def _dnssec_shape(message: dns.message.Message) -> tuple[str, bool, list[int]]:
    edes = [int(o.code) for o in message.options if isinstance(o, dns.edns.EDEOption)]
    return (dns.rcode.to_text(message.rcode()), bool(message.flags & dns.flags.AD),
            edes[:1] if message.rcode() == dns.rcode.SERVFAIL else [])


def test_unbound_validates_through_recursion(authorities: Authorities,
                                             peer_group: PeerGroup) -> None:
    """Unbound recursing through the signed hierarchy with its root DS as the trust
    anchor says what signed_zones.EXPECTED says of each question (first answers)."""
    unbound = peers.start_unbound_recursive(peer_group, root_hints=authorities.signed_hints,
                                            anchor_file=authorities.signed.root_ds)
    wrong = {}
    for (qname, qtype), (security, ede) in sorted(signed_zones.EXPECTED.items()):
        if qtype == "ANY":
            continue
        rcode, ad, edes = _dnssec_shape(ask(unbound.port, qname, qtype, dnssec=True))
        if security == "bogus":
            ok = (rcode, ad, edes) == ("SERVFAIL", False, [ede])
        else:
            ok = rcode in ("NOERROR", "NXDOMAIN") and ad == (security == "secure")
        if not ok:
            wrong[(qname, qtype)] = ((security, ede), (rcode, ad, edes))
    assert not wrong, "\n".join(f"{q}: want {w} got {g}" for q, (w, g) in wrong.items())


# --------------------------------------------------------------------------- comparisons

@pytest.mark.parametrize("path", ["wire", "message"])
def test_recursion_answers_as_unbound(authorities: Authorities, peer_group: PeerGroup,
                                      dnstls_serve: object, pki: TestPKI,
                                      tmp_path: Path, path: str) -> None:
    """The wire path (the default) and the message path (``server.log_queries``)."""
    zones = authorities.zones
    unbound = peers.start_unbound_recursive(peer_group, root_hints=zones.root_hints)
    plain = peers.free_port()
    config = recursion_config(tmp_path, zones.root_hints, log_queries=path == "message")
    dot = dnstls_serve("--plain", f"{LOOPBACK}:{plain}",  # type: ignore[operator]
                       "--config", str(config))
    differ = {}
    for round_ in (1, 2):
        for question in [*rz.EXPECTED, *rz.POISON_CHECKS]:
            theirs = outcome(ask(unbound.port, *question))
            for transport in ("udp", "dot"):
                got = (ask(plain, *question) if transport == "udp"
                       else ask_dot(dot.port, pki, *question))
                assert all(rrset.ttl <= rz.TTL for rrset in got.answer), got
                ours = outcome(got)
                if ours != theirs or ours != rz.expected(question, zones.base):
                    differ[f"{question} {transport} round {round_}"] = (theirs, ours)
                assert rz.POISON_ADDRESS not in str(got), got
    assert not differ, "\n".join(f"{q}:\n  unbound {t}\n  dnstls  {o}"
                                 for q, (t, o) in differ.items())
    assert authorities.poison.victim_queries == 0  # nobody believed the poison
    # kdig over DoT: the big TXT (no truncation over TCP) and the loop's SERVFAIL
    big = kdig(LOOPBACK, dot.port, "big.example.test.", "TXT", tls=True, ca=pki.ca_pem,
               hostname=pki.hostname)
    assert big.status == "NOERROR" and rz.BIG_TXT[7] in big.stdout, big.describe()
    loop = kdig(LOOPBACK, dot.port, "www.loopa.test.", tls=True, ca=pki.ca_pem,
                hostname=pki.hostname)
    assert loop.status == "SERVFAIL", loop.describe()


def test_recursion_validates_as_unbound(authorities: Authorities, peer_group: PeerGroup,
                                        dnstls_serve: object, tmp_path: Path) -> None:
    from .test_dnssec_serve_unbound import MODES, query, shape

    signed = authorities.signed
    unbound = peers.start_unbound_recursive(peer_group, root_hints=authorities.signed_hints,
                                            anchor_file=signed.root_ds)
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}",  # type: ignore[operator]
                 "--config", str(recursion_config(tmp_path, authorities.signed_hints,
                                                  anchor=signed.root_ds)))
    differ = {}
    for round_ in (1, 2):
        for (qname, qtype), (_security, ede) in sorted(signed_zones.EXPECTED.items()):
            if qtype == "ANY":
                continue
            for mode in MODES:
                wire = query(qname, qtype, mode)
                theirs = shape(_tcp(wire, unbound.port), mode)
                ours = shape(_tcp(wire, plain), mode)
                if ours["rcode"] == "SERVFAIL":
                    if ours["ede"] != ([ede] if MODES[mode][0] else []):
                        differ[f"{qname} {qtype} {mode} (round {round_}): EDE"] = (
                            {"expected": ede}, ours)
                    if (round_, mode) != (1, "do"):  # Unbound's cached bogus: EDE 6
                        theirs["ede"] = ours["ede"]
                if theirs != ours:
                    differ[f"{qname} {qtype} {mode} (round {round_})"] = (theirs, ours)
    assert not differ, "\n".join(f"{q}:\n  unbound {t}\n  dnstls  {o}"
                                 for q, (t, o) in differ.items())


def _tcp(wire: bytes, port: int) -> dns.message.Message:
    from .clients import raw_exchange

    return raw_exchange(wire, port, "tcp")


def test_stub_zone_as_unbound(authorities: Authorities, peer_group: PeerGroup,
                              dnstls_serve: object, tmp_path: Path) -> None:
    """``[[stub_zone]]`` as Unbound's ``stub-zone``: with root hints naming only the dead
    address, other.test. (glueless from the root side) is answered from its stub address
    and the rest of the tree is SERVFAIL, by both."""
    zones = authorities.zones
    dead_hints = rz.write_root_hints(tmp_path / "dead.hints", [("a.root-servers.test.",
                                                                 zones.dead)])
    stub = ("other.test.", [zones.address(rz.OTHER)])
    unbound = peers.start_unbound_recursive(peer_group, root_hints=dead_hints,
                                            stub_zones=[stub])
    config = recursion_config(tmp_path, dead_hints)
    config.write_text(config.read_text() + '\n[[stub_zone]]\nname = "other.test."\n'
                      f'addresses = ["{stub[1][0]}"]\n')
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}",  # type: ignore[operator]
                 "--config", str(config))
    questions = [("www.other.test.", "A"), ("nothere.other.test.", "A"),
                 ("www.other.test.", "MX")]
    for question in questions:
        theirs, ours = outcome(ask(unbound.port, *question)), outcome(ask(plain, *question))
        assert ours == theirs, (question, theirs, ours)
    assert outcome(ask(plain, "www.other.test.", "A")) == (
        "NOERROR", {("www.other.test.", "A"): ["192.0.2.2"]})
    # outside the stub zone only the dead root is there: SERVFAIL (EDE 23, the root's
    # address refuses at once) within the client's timeout. Unbound gives no answer in
    # 10 s (it waits out its timeouts on the dead root, dropping what comes after its
    # discard-timeout), so it is not asked.
    failed = ask(plain, "www.example.test.", "A")
    assert failed.rcode() == dns.rcode.SERVFAIL
    assert [int(o.code) for o in failed.options if isinstance(o, dns.edns.EDEOption)] == [23]
