"""DNS rebinding protection next to Unbound 1.17: ``private-address`` and
``private-domain`` on both, forwarding to the same nsd, the same questions over UDP and
TCP (docs/serve.md, "DNS rebinding protection").

RCODE, header flags and the records of every section (TTLs aside) must be the same,
twice (the second answer from each cache).
"""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from . import peers
from .clients import raw_exchange, record_texts
from .peers import LOOPBACK, ZONE_ORIGIN, ZONE_TEXT, Peer, PeerGroup

pytestmark = pytest.mark.interop

ZONE = ZONE_TEXT + "\n".join([
    "a       IN A     10.1.2.3",
    "mixed   IN A     10.1.2.3",
    "mixed   IN A     192.0.2.1",
    "v6      IN AAAA  fd00::1",
    "mapped  IN AAAA  ::ffff:10.0.0.1",
    "lo      IN A     127.0.0.1",
    "pub     IN A     192.0.2.1",
    "cn      IN CNAME a",
    "cnpub   IN CNAME pub",
    "x.lan   IN A     10.0.0.5",
    "cnlan   IN CNAME x.lan",
    "txt     IN TXT   \"10.1.2.3\"",
    "mx      IN MX    10 a",
    "",
])
PRIVATE = ["10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "::ffff:0:0/96"]
LAN = f"lan.{ZONE_ORIGIN}"
QUESTIONS = [("a", "A"), ("mixed", "A"), ("v6", "AAAA"), ("mapped", "AAAA"), ("lo", "A"),
             ("pub", "A"), ("cn", "A"), ("cnpub", "A"), ("x.lan", "A"), ("cnlan", "A"),
             ("txt", "TXT"), ("mx", "MX"), ("a", "ANY"), ("mixed", "ANY")]


def start_unbound(group: PeerGroup, nsd: Peer) -> Peer:
    binary = peers.require("unbound")
    work = group.workdir("unbound-private")
    port = peers.free_port()
    lines = "\n".join([*(f"    private-address: {net}" for net in PRIVATE),
                       f"    private-domain: \"{LAN}\""])
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{port}", extra=lines)
                    + f"""\
forward-zone:
    name: "."
    forward-addr: {nsd.host}@{nsd.port}
""")
    peer = group.start(Peer("unbound-private", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    return peer.wait_ready(lambda: peers.udp_dns_answers(LOOPBACK, port, f"pub.{ZONE_ORIGIN}"))


def shape(m: dns.message.Message) -> dict[str, object]:
    return {"rcode": dns.rcode.to_text(m.rcode()), "flags": m.flags,
            "answer": record_texts(m.answer), "authority": record_texts(m.authority),
            "additional": record_texts(m.additional)}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_private_addresses_as_unbound(peer_group: PeerGroup,
                                      dnstls_serve: Callable[..., Peer], transport: str) -> None:
    try:
        nsd = peers.start_nsd(peer_group, zone_text=ZONE)
        unbound = start_unbound(peer_group, nsd)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}", "--upstream", f"udp://{nsd.host}:{nsd.port}",
                 *(f"--private-address={net}" for net in PRIVATE), "--private-domain", LAN)
    differ = {}
    removed = 0
    for label, rdtype in QUESTIONS * 2:
        query = dns.message.make_query(f"{label}.{ZONE_ORIGIN}", rdtype)
        theirs = raw_exchange(query.to_wire(), unbound.port, transport)
        ours = raw_exchange(query.to_wire(), plain, transport)
        if shape(theirs) != shape(ours):
            differ[f"{label} {rdtype}"] = {"unbound": shape(theirs), "dnstls": shape(ours)}
        direct = record_texts(raw_exchange(query.to_wire(), nsd.port).answer)  # nsd, unfiltered
        removed += len(direct - record_texts(ours.answer))
    assert not differ, "\n".join(f"{k}: {v}" for k, v in differ.items())
    assert removed > 0  # the comparison covered removals, not only answers kept whole
