"""Local-zone types: ``dnstls serve`` with ``[local] zone_types`` and ``data`` answers
as unbound 1.17 with the same ``local-zone`` and ``local-data`` lines.

Both forward ``example.test.`` to one nsd (unbound as a stub zone, dnstls as its
upstream), so names a type lets through are resolved, and each type's zone holds names
nsd knows (``a``, ``d``) and local data (``d ... A 10.0.0.1``; at the apex for
redirect; an SOA for static). The same questions go to both over UDP: RCODE, AA, the
answer section and the authority section must be equal where unbound answers from
local data (AA); where it resolves, RCODE, answer and authority owners (dnstls relays
nsd's AA bit, unbound clears it as a recursive resolver).

``deny`` and ``always_deny``: unbound sends nothing (UDP) and closes a TCP connection;
dnstls drops UDP queries too but answers REFUSED over TCP -- the documented deviation,
asserted here over TCP on both sides. A query with RD=0 (both allow loopback) gets the
same: the local answers, blocked names included, and REFUSED for names a type lets
through.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from . import peers
from .peers import LOOPBACK, Peer, PeerGroup

pytestmark = pytest.mark.interop

TYPES = ["always_nxdomain", "always_refuse", "always_null", "always_nodata", "always_deny",
         "refuse", "static", "deny", "transparent", "typetransparent",
         "always_transparent", "redirect", "nodefault"]
DROPPED = {"deny", "always_deny"}
QUESTIONS = [("@", "A"), ("@", "AAAA"), ("a", "A"), ("a", "AAAA"), ("d", "A"),
             ("d", "AAAA"), ("d", "ANY"), ("x.d", "A"), ("nx", "A"), ("nx", "TXT"),
             ("NX.Deep", "AAAA"), ("q", "A"), ("p.q", "A")]


def zone_of(kind: str) -> str:
    return f"{kind.replace('_', '-')}.example.test."


def zone_text() -> str:
    lines = ["$ORIGIN example.test.", "$TTL 300",
             "@ SOA ns1 hostmaster 1 3600 600 86400 300", "@ NS ns1", "ns1 A 127.0.0.1"]
    for kind in TYPES:
        label = zone_of(kind).split(".")[0]
        lines += [f"{label} A 192.0.2.1", f"a.{label} A 192.0.2.2", f"d.{label} A 192.0.2.3",
                  f"d.{label} MX 10 mx"]
    return "\n".join(lines) + "\n"


def local_lines() -> tuple[list[str], list[str]]:
    """(local-zone lines, local-data lines), in dnstls's spelling."""
    zones, data = [], []
    for kind in TYPES:
        zone = zone_of(kind)
        zones.append(f"{zone} {kind}")
        if kind == "redirect":
            data.append(f"{zone} 120 A 10.9.9.9")  # unbound: only at the apex
        else:  # and q: an empty non-terminal
            data += [f"d.{zone} 60 A 10.0.0.1", f"p.q.{zone} 60 A 10.0.0.2"]
        if kind == "static":
            data.append(f"{zone} SOA ns hm 1 2 3 4 77")
    return zones, data


def start_unbound(group: PeerGroup, nsd: Peer) -> Peer:
    binary = peers.require("unbound")
    work = group.workdir("unbound-zone-types")
    port = peers.free_port()
    zones, data = local_lines()
    extra = "\n".join([*(f'    local-zone: "{z.split()[0]}" {z.split()[1]}' for z in zones),
                       *(f'    local-data: "{d}"' for d in data)])
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{port}", extra=extra)
                    + f"""stub-zone:
    name: "example.test."
    stub-addr: {LOOPBACK}@{nsd.port}
""")
    peer = group.start(Peer("unbound-zone-types", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    return peer.wait_ready(lambda: peers.udp_dns_answers(LOOPBACK, port, "example.test."))


def summary(response: dns.message.Message, *, local: bool) -> tuple[object, ...]:
    """What must be equal: everything for a local answer (``local``: unbound's has AA),
    RCODE, answer and authority owners for a resolved one."""
    answer = sorted(line.lower() for rrset in response.answer
                    for line in rrset.to_text().splitlines())
    if local:
        authority = sorted(line.lower() for rrset in response.authority
                           for line in rrset.to_text().splitlines())
        return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
                answer, authority)
    owners = [rrset.name.to_text().lower() for rrset in response.authority]
    return (dns.rcode.to_text(response.rcode()), answer, owners)


def tcp_exchange(query: dns.message.Message, port: int) -> dns.message.Message | None:
    """The answer over TCP, or None if the server closed the connection instead."""
    wire = query.to_wire()
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        head = sock.recv(2)
        if len(head) < 2:
            return None
        size = struct.unpack("!H", head)[0]
        body = b""
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                return None
            body += chunk
    return dns.message.from_wire(body)


def test_zone_types_answer_as_unbound_does(peer_group: PeerGroup,
                                           dnstls_serve: Callable[..., Peer]) -> None:
    try:
        nsd = peers.start_nsd(peer_group, zone_text=zone_text())
        unbound = start_unbound(peer_group, nsd)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    zones, data = local_lines()
    config = peer_group.workdir("dnstls-zone-types") / "zone-types.toml"
    config.write_text("[local]\nnodefault = [\"test.\"]\n"
                      f"zone_types = {zones!r}\ndata = {data!r}\n".replace("'", '"'))
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}", "--config", str(config),
                 "--upstream", f"udp://{LOOPBACK}:{nsd.port}")
    differences = []
    for kind in TYPES:
        zone = zone_of(kind)
        for rel, rdtype in QUESTIONS:
            name = zone if rel == "@" else f"{rel}.{zone}"
            query = dns.message.make_query(name, rdtype)
            if kind in DROPPED:
                theirs_tcp = tcp_exchange(query, unbound.port)
                ours_tcp = tcp_exchange(query, plain)
                if theirs_tcp is None:  # dropped: we answer REFUSED on a stream
                    if ours_tcp is None or ours_tcp.rcode() != dns.rcode.REFUSED:
                        differences.append(f"{name} {rdtype}: unbound drops, dnstls "
                                           f"{ours_tcp and summary(ours_tcp, local=True)}")
                    continue
                theirs, ours = theirs_tcp, ours_tcp
                if ours is None:
                    differences.append(f"{name} {rdtype}: dnstls closed, unbound answered")
                    continue
            else:
                theirs = dns.query.udp(query, LOOPBACK, port=unbound.port, timeout=5)
                ours = dns.query.udp(query, LOOPBACK, port=plain, timeout=5)
            local = bool(theirs.flags & dns.flags.AA)
            if summary(ours, local=local) != summary(theirs, local=local):
                differences.append(f"{name} {rdtype}: unbound {summary(theirs, local=local)}"
                                   f", dnstls {summary(ours, local=local)}")
    # RD=0 from a client of "allow" (both: loopback): local answers, blocked names
    # included; a name a type lets through is refused (never resolved nor cached)
    for name, rdtype in (("x.always-nxdomain.example.test.", "A"),
                         ("x.always-null.example.test.", "A"),
                         ("d.transparent.example.test.", "A"),
                         ("x.static.example.test.", "A"),
                         ("a.transparent.example.test.", "A"),
                         ("a.always-transparent.example.test.", "A")):
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD
        theirs = dns.query.udp(query, LOOPBACK, port=unbound.port, timeout=5)
        ours = dns.query.udp(query, LOOPBACK, port=plain, timeout=5)
        if summary(ours, local=True) != summary(theirs, local=True):
            differences.append(f"RD=0 {name} {rdtype}: unbound {summary(theirs, local=True)}, "
                               f"dnstls {summary(ours, local=True)}")
    assert differences == [], "\n".join(differences)
