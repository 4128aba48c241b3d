"""Incomplete CNAME chains (resolver/chase.py) against Unbound 1.17: the same setup --
two nsd, authoritative for ``a.test.`` and ``b.test.`` (one zone each, so neither can
follow a CNAME into the other), each a forward zone -- behind unbound and behind
``dnstls serve``; kdig asks both the same questions and the answers are compared:
RCODE, AA/RA, the answer section in order with its TTLs, the authority section.
The table of docs/upstreams.md, "CNAME chains an upstream left incomplete".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from . import clients, peers
from .peers import LOOPBACK, Peer, PeerGroup, TestPKI

pytestmark = pytest.mark.interop

SOA = "@ SOA ns.{z}.test. h.{z}.test. 1 3600 600 86400 {m}\n@ NS ns\nns A 127.0.0.1\n"
A_ZONE = "$TTL 300\n" + SOA.format(z="a", m=120) + """\
inzone 300 CNAME www
www 60 A 10.0.0.1
out 300 CNAME www.b.test.
nx 300 CNAME missing.b.test.
nodata 300 CNAME onlytxt.b.test.
multi 300 CNAME step.b.test.
step2 200 CNAME final.b.test.
mixed 300 CNAME mix2
mix2 300 CNAME www.b.test.
loop 300 CNAME loop.b.test.
self 300 CNAME self
loc 300 CNAME host.loc.test.
d 300 DNAME b.test.
""" + "".join(f"long{i} 300 CNAME long{i + 1}.b.test.\n" for i in range(0, 30, 2)) + \
    "long30 300 A 10.0.0.30\n"
B_ZONE = "$TTL 300\n" + SOA.format(z="b", m=90) + """\
www 30 A 10.0.0.2
www 30 AAAA ::2
onlytxt 300 TXT hello
step 250 CNAME step2.a.test.
final 40 A 10.0.0.3
loop 300 CNAME loop.a.test.
""" + "".join(f"long{i} 300 CNAME long{i + 1}.a.test.\n" for i in range(1, 30, 2))

#: Asked of both, in this order (a chain of 12 before the one of 11 inside it: a chain's
#: cached part shortens a later chain, in Unbound as here).
QUESTIONS = [
    ("inzone.a.test.", "A"), ("out.a.test.", "A"), ("nx.a.test.", "A"),
    ("nodata.a.test.", "A"), ("multi.a.test.", "A"), ("mixed.a.test.", "A"),
    ("www.d.a.test.", "A"), ("out.a.test.", "AAAA"), ("out.a.test.", "TXT"),
    ("out.a.test.", "CNAME"), ("loop.a.test.", "A"), ("self.a.test.", "A"),
    ("long18.a.test.", "A"),  # 12 CNAMEs, one per upstream answer: SERVFAIL
    ("long19.b.test.", "A"),  # 11: answered
]


def start_unbound(group: PeerGroup, a: Peer, b: Peer) -> Peer:
    binary = peers.require("unbound")
    work = group.workdir("unbound-chase")
    port = peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{port}", extra=f"""\
    port: {port}
    local-data: "host.loc.test. 100 A 10.9.9.9"
""") + f"""\
forward-zone:
    name: "a.test."
    forward-addr: {a.host}@{a.port}
forward-zone:
    name: "b.test."
    forward-addr: {b.host}@{b.port}
""")
    peer = group.start(Peer("unbound-chase", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    return peer.wait_tcp()


def shape(result: clients.DigResult) -> tuple[object, ...]:
    """What is compared: RCODE, AA and RA, the answer records in order, and the
    authority section's owners and types (TTLs: :func:`ttls`)."""
    answer = []
    for line in result.section("ANSWER"):
        owner, _ttl, _cls, rtype, rdata = line.split(None, 4)
        answer.append((owner.lower(), rtype, rdata.strip().lower()))
    authority = [tuple(line.split(None, 4)[i].lower() for i in (0, 3))
                 for line in result.section("AUTHORITY")]
    return (result.status, "aa" in result.flags, "ra" in result.flags, answer, authority)


def ttls(result: clients.DigResult) -> list[int]:
    return [int(line.split(None, 2)[1]) for line in result.section("ANSWER")]


def test_chains_answered_as_unbound_answers(dnstls_serve: Callable[..., Peer],
                                            peer_group: PeerGroup, pki: TestPKI,
                                            tmp_path: Path) -> None:
    a = peers.start_nsd(peer_group, zone_text=A_ZONE, origin="a.test.")
    b = peers.start_nsd(peer_group, zone_text=B_ZONE, origin="b.test.")
    unbound = start_unbound(peer_group, a, b)
    config = tmp_path / "chase.toml"
    config.write_text(
        '[local]\ndata = ["host.loc.test. 100 A 10.9.9.9"]\n'
        f'[[forward_zone]]\nname = "a.test."\n[[forward_zone.upstream]]\n'
        f'uri = "udp://{a.host}:{a.port}"\n'
        f'[[forward_zone]]\nname = "b.test."\n[[forward_zone.upstream]]\n'
        f'uri = "udp://{b.host}:{b.port}"\n')
    server = dnstls_serve("--upstream", f"udp://{a.host}:{a.port}", "--config", str(config))
    for name, rtype in QUESTIONS:
        theirs = clients.kdig(unbound.host, unbound.port, name, rtype)
        ours = clients.kdig(server.host, server.port, name, rtype, tls=True, ca=pki.ca_pem,
                            hostname=pki.hostname)
        assert theirs.ok, theirs.describe()
        assert ours.ok, ours.describe()
        both = f"{name} {rtype}\n--- unbound ---\n{theirs.stdout}\n--- dnstls ---\n{ours.stdout}"
        assert shape(ours) == shape(theirs), both
        # each record its own TTL, as fetched (a second may tick between the steps);
        # deviation: in a negative answer (an SOA in authority) every TTL is capped at
        # the negative TTL, as the cache does for every negative answer (RFC 2308 §5)
        expected = ttls(theirs)
        soa = [int(line.split(None, 2)[1]) for line in theirs.section("AUTHORITY")
               if line.split(None, 4)[3] == "SOA"]
        if soa:
            expected = [min(ttl, soa[0]) for ttl in expected]
        assert all(abs(x - y) <= 1 for x, y in zip(ttls(ours), expected, strict=True)), both
    # the incomplete chains were completed (not only relayed as nsd gave them)
    out = clients.kdig(server.host, server.port, "out.a.test.", "A", tls=True,
                       ca=pki.ca_pem, hostname=pki.hostname)
    assert out.rdata("A") == ["10.0.0.2"], out.describe()
    # deviation: a target in local data is answered from it (Unbound: SERVFAIL)
    theirs = clients.kdig(unbound.host, unbound.port, "loc.a.test.", "A")
    assert theirs.status == "SERVFAIL", theirs.describe()
    ours = clients.kdig(server.host, server.port, "loc.a.test.", "A", tls=True,
                        ca=pki.ca_pem, hostname=pki.hostname)
    assert ours.status == "NOERROR", ours.describe()
    assert ours.records() == [("loc.a.test.", "CNAME", "host.loc.test."),
                              ("host.loc.test.", "A", "10.9.9.9")], ours.describe()
