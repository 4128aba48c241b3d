"""Default zones: ``dnstls serve`` answers special-use and locally served names as
unbound 1.17 does with its default configuration (``--no-upstream``: nothing could be
forwarded anyway, and a name outside the default zones would be REFUSED).

The truth table comes from the real peer on loopback, asked the same questions over UDP:
RCODE, AA and the answer section must be equal, and the SOA owner in the authority
section too. unbound runs with ``hide-version``/``hide-identity`` (dnstls never reveals
its version: every class but IN is refused, as unbound then refuses CHAOS questions).

One documented difference is left out: unbound's ``localhost.`` zone is of type
"redirect", so it answers the apex's NS and SOA for names *under* localhost too; dnstls
gives NODATA there, as RFC 6761 §6.3 asks ("negative responses for all other query
types") and as Knot Resolver does.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from . import peers
from .peers import LOOPBACK, Peer, PeerGroup

pytestmark = pytest.mark.interop

V6 = "1." + "0." * 31 + "ip6.arpa."
QUERIES = [
    ("localhost.", "A", "IN"), ("localhost.", "AAAA", "IN"), ("localhost.", "MX", "IN"),
    ("localhost.", "NS", "IN"), ("localhost.", "SOA", "IN"), ("LocalHost.", "A", "IN"),
    ("foo.localhost.", "A", "IN"), ("foo.localhost.", "AAAA", "IN"),
    ("a.b.localhost.", "A", "IN"), ("foo.localhost.", "MX", "IN"),
    ("1.0.0.127.in-addr.arpa.", "PTR", "IN"), ("1.0.0.127.in-addr.arpa.", "A", "IN"),
    ("2.0.0.127.in-addr.arpa.", "PTR", "IN"), ("127.in-addr.arpa.", "SOA", "IN"),
    (V6, "PTR", "IN"), (V6, "A", "IN"), ("0." * 32 + "ip6.arpa.", "PTR", "IN"),
    ("foo.onion.", "A", "IN"), ("onion.", "SOA", "IN"), ("foo.test.", "A", "IN"),
    ("test.", "NS", "IN"), ("foo.invalid.", "A", "IN"), ("home.arpa.", "SOA", "IN"),
    ("home.arpa.", "A", "IN"), ("router.home.arpa.", "A", "IN"),
    ("10.in-addr.arpa.", "SOA", "IN"), ("1.0.0.10.in-addr.arpa.", "PTR", "IN"),
    *((f"1.0.{n}.172.in-addr.arpa.", "PTR", "IN") for n in (16, 20, 31)),
    ("168.192.in-addr.arpa.", "NS", "IN"), ("1.0.168.192.in-addr.arpa.", "PTR", "IN"),
    ("1.0.254.169.in-addr.arpa.", "PTR", "IN"), ("0.in-addr.arpa.", "SOA", "IN"),
    ("1.0.0.0.in-addr.arpa.", "PTR", "IN"), ("1.2.0.192.in-addr.arpa.", "PTR", "IN"),
    ("1.100.51.198.in-addr.arpa.", "PTR", "IN"), ("1.113.0.203.in-addr.arpa.", "PTR", "IN"),
    ("255.255.255.255.in-addr.arpa.", "PTR", "IN"),
    ("1.0.64.100.in-addr.arpa.", "PTR", "IN"), ("1.0.127.100.in-addr.arpa.", "PTR", "IN"),
    ("d.f.ip6.arpa.", "SOA", "IN"), ("1.d.f.ip6.arpa.", "PTR", "IN"),
    ("8.e.f.ip6.arpa.", "SOA", "IN"), ("1.9.e.f.ip6.arpa.", "PTR", "IN"),
    ("1.a.e.f.ip6.arpa.", "PTR", "IN"), ("1.b.e.f.ip6.arpa.", "PTR", "IN"),
    ("8.b.d.0.1.0.0.2.ip6.arpa.", "SOA", "IN"), ("1.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", "IN"),
    ("version.bind.", "TXT", "CH"), ("id.server.", "TXT", "CH"),
    ("hostname.bind.", "TXT", "CH"), ("version.server.", "TXT", "CH"),
    ("example.com.", "A", "CH"), ("localhost.", "A", "CH"), ("example.com.", "A", "HS"),
]


def start_unbound_defaults(group: PeerGroup) -> Peer:
    """unbound 1.17 on a free UDP+TCP port with its default local zones (no forwarders:
    these names never leave the resolver)."""
    binary = peers.require("unbound")
    work = group.workdir("unbound-defaults")
    port = peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(f"""\
server:
    interface: {LOOPBACK}@{port}
    so-reuseport: no
    do-ip6: no
    num-threads: 1
    username: ""
    chroot: ""
    directory: "{work}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    hide-version: yes
    hide-identity: yes
remote-control:
    control-enable: no
""")
    peer = group.start(Peer("unbound-defaults", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    return peer.wait_ready(lambda: peers.udp_dns_answers(LOOPBACK, port, "localhost."))


def summary(response: dns.message.Message) -> tuple[str, bool, list[str], list[str]]:
    """RCODE, AA, the answer (lower-cased lines, sorted) and the authority's SOA owners."""
    answer = sorted(line.lower() for rrset in response.answer
                    for line in rrset.to_text().splitlines())
    authority = [rrset.name.to_text().lower() for rrset in response.authority]
    return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
            answer, authority)


def test_default_zones_answer_as_unbound_does(peer_group: PeerGroup,
                                               dnstls_serve: Callable[..., Peer]) -> None:
    try:
        unbound = start_unbound_defaults(peer_group)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}")
    differences = []
    for name, rdtype, rdclass in QUERIES:
        query = dns.message.make_query(name, rdtype, rdclass)
        theirs = dns.query.udp(query, LOOPBACK, port=unbound.port, timeout=5)
        ours = dns.query.udp(query, LOOPBACK, port=plain, timeout=5)
        if summary(ours) != summary(theirs):
            differences.append(f"{name} {rdtype} {rdclass}: unbound {summary(theirs)}, "
                               f"dnstls {summary(ours)}")
    assert differences == [], "\n".join(differences)
