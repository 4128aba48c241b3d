"""Odd queries and answer shapes: ``dnstls serve`` and unbound 1.17, both forwarding to
the same nsd, asked the same raw messages over UDP and TCP (docs/serve.md, "Odd queries
and answer shapes, compared with Unbound").

Where the table says "the same", RCODE, header flags, question, the records of each
section (TTLs aside: both must be in (0, zone TTL]) and the presence of an OPT must
match. The differences the table keeps are asserted as they are on both sides, so that
the table stays true when either side changes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rrset
import pytest

from . import peers
from .clients import raw_exchange as exchange
from .clients import record_texts as records
from .peers import LOOPBACK, ZONE_ORIGIN, ZONE_TEXT, Peer, PeerGroup

pytestmark = pytest.mark.interop

#: The interop zone with a delegation (and its glue) and a wildcard added.
ZONE = ZONE_TEXT + "\n".join([
    "sub    IN NS  ns.sub",
    "sub    IN NS  ns.elsewhere.example.",
    "ns.sub IN A   127.0.0.9",
    "ns.sub IN AAAA ::9",
    "*.wild IN A   192.0.2.9",
    "",
])

TC = 0x0200


def make(name: str, rdtype: str | int = "A", rdclass: str | int = "IN", *,
         edns: bool = False, do: bool = False, rd: bool = True) -> bytes:
    q = dns.message.make_query(name, rdtype, rdclass, id=0x5A5A,
                               use_edns=0 if edns or do else None, want_dnssec=do)
    if not rd:
        q.flags &= ~dns.flags.RD
    return q.to_wire()


def with_flags(wire: bytes, set_bits: int = 0, opcode: int | None = None) -> bytes:
    flags = struct.unpack_from("!H", wire, 2)[0] | set_bits
    if opcode is not None:
        flags = (flags & ~0x7800) | (opcode << 11)
    return wire[:2] + struct.pack("!H", flags) + wire[4:]


W = f"www.{ZONE_ORIGIN}"
#: Asked of both; the answers must be the same.
SAME: dict[str, bytes] = {
    "A": make(W),
    "A with EDNS": make(W, edns=True),
    "QCLASS ANY": make(W, rdclass="ANY"),
    "QCLASS ANY with EDNS": make(W, rdclass="ANY", edns=True),
    "QCLASS ANY, MX": make(ZONE_ORIGIN, "MX", "ANY"),
    "QCLASS NONE": make(W, rdclass="NONE"),
    "QCLASS 42": make(W, rdclass=42),
    "TC set": with_flags(make(W), TC),
    "TC set with EDNS": with_flags(make(W, edns=True), TC),
    "MAILA": make(ZONE_ORIGIN, "MAILA"),
    "MAILB with EDNS": make(ZONE_ORIGIN, "MAILB", edns=True),
    "TYPE128": make(ZONE_ORIGIN, 128),
    "TYPE248": make(ZONE_ORIGIN, 248),
    "OPT as QTYPE": make(ZONE_ORIGIN, "OPT"),
    "QTYPE ANY": make(W, "ANY"),
    "referral": make(f"host.sub.{ZONE_ORIGIN}"),
    "referral with EDNS": make(f"host.sub.{ZONE_ORIGIN}", edns=True),
    "referral with DO": make(f"host.sub.{ZONE_ORIGIN}", do=True),
    "NS at the delegation": make(f"sub.{ZONE_ORIGIN}", "NS"),
    "NS at the apex": make(ZONE_ORIGIN, "NS"),
    "NS at the apex with DO": make(ZONE_ORIGIN, "NS", do=True),
    "MX (its glue dropped)": make(ZONE_ORIGIN, "MX"),
    "A with DO (authority and glue dropped)": make(W, do=True),
    "MX with DO": make(ZONE_ORIGIN, "MX", do=True),
    "NXDOMAIN with DO": make(f"nope.{ZONE_ORIGIN}", do=True),
    "CNAME": make(f"alias.{ZONE_ORIGIN}"),
    "wildcard": make(f"x.wild.{ZONE_ORIGIN}"),
    "NXDOMAIN": make(f"nope.{ZONE_ORIGIN}"),
    "NODATA": make(W, "MX"),
    "0x20 case": make(W.upper()),
    "EDNS version 1": dns.message.make_query(W, "A", id=7, use_edns=1).to_wire(),
    "RD=0 (allow: REFUSED)": make(W, rd=False),
    "big TXT without EDNS (TC=1 over UDP)": make(f"big.{ZONE_ORIGIN}", "TXT"),
}


def start_unbound(group: PeerGroup, nsd: Peer) -> Peer:
    """unbound forwarding every name to ``nsd`` (plain DNS), as dnstls does."""
    binary = peers.require("unbound")
    work = group.workdir("unbound-odd")
    port = peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{port}") + f"""\
forward-zone:
    name: "."
    forward-addr: {nsd.host}@{nsd.port}
""")
    peer = group.start(Peer("unbound-odd", [binary, "-d", "-c", str(conf)], work, port=port))
    return peer.wait_ready(lambda: peers.udp_dns_answers(LOOPBACK, port, W))


def shape(m: dns.message.Message) -> dict[str, object]:
    """What must be equal; RA aside on FORMERR (Unbound sends the query's header back
    there: RA clear, a kept difference asserted on its own below)."""
    flags = m.flags & ~dns.flags.RA if m.rcode() == dns.rcode.FORMERR else m.flags
    return {
        "rcode": dns.rcode.to_text(m.rcode()),
        "flags": dns.flags.to_text(flags),
        "question": [(q.name.to_text(), int(q.rdtype), int(q.rdclass)) for q in m.question],
        "answer": records(m.answer), "authority": records(m.authority),
        "additional": records(m.additional), "edns": m.edns,
        "do": bool(m.ednsflags & dns.flags.DO),
    }


def ttls(m: dns.message.Message) -> list[int]:
    return [r.ttl for s in (m.answer, m.authority, m.additional) for r in s]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_odd_queries_as_unbound(peer_group: PeerGroup,
                                dnstls_serve: Callable[..., Peer], transport: str) -> None:
    try:
        nsd = peers.start_nsd(peer_group, zone_text=ZONE)
        unbound = start_unbound(peer_group, nsd)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}", "--upstream",
                 f"udp://{nsd.host}:{nsd.port}")
    differ = {}
    for name, wire in SAME.items():
        theirs = exchange(wire, unbound.port, transport)
        ours = exchange(wire, plain, transport)
        if shape(theirs) != shape(ours):
            differ[name] = {"unbound": shape(theirs), "dnstls": shape(ours)}
        assert all(0 < t <= 300 for t in ttls(ours)), (name, ttls(ours))  # referrals too
        assert ours.id == theirs.id == 0x5A5A or name == "EDNS version 1"
    assert not differ, "\n".join(f"{k}: {v}" for k, v in differ.items())

    # The differences docs/serve.md keeps, as each side answers them.
    trailing = make(W) + b"\x00junk"
    assert exchange(trailing, unbound.port, transport).rcode() == dns.rcode.NOERROR
    assert exchange(trailing, plain, transport).rcode() == dns.rcode.FORMERR
    malformed = make(W, edns=True)[:-11] + b"\x01a\x00" + make(W, edns=True)[-10:]
    for port in (unbound.port, plain):  # an OPT not owned by the root
        got = exchange(malformed, port, transport)
        assert got.rcode() == dns.rcode.FORMERR
        assert [q.name.to_text() for q in got.question] == [W]
    notify = with_flags(make(ZONE_ORIGIN, "SOA", rd=False), opcode=4)
    assert exchange(notify, unbound.port, transport).rcode() == dns.rcode.REFUSED
    assert exchange(notify, plain, transport).rcode() == dns.rcode.NOTIMP
    for wire in (with_flags(make(W), TC), make(ZONE_ORIGIN, "MAILA"),
                 with_flags(make(W), opcode=2)):  # FORMERR, FORMERR, NOTIMP
        theirs = exchange(wire, unbound.port, transport)
        ours = exchange(wire, plain, transport)
        assert theirs.rcode() == ours.rcode() != dns.rcode.NOERROR
        assert not theirs.flags & dns.flags.RA and ours.flags & dns.flags.RA
    ede = exchange(make(W, rdclass="CH", edns=True), plain, transport)
    assert [o.code for o in ede.options if isinstance(o, dns.edns.EDEOption)] == [21]
