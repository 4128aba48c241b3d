"""Queries with RD=0 under access control's ``allow`` and ``allow_snoop``: ``dnstls serve``
answers with the RCODEs unbound 1.17 answers, asked the same questions over UDP.

Both forward ``example.test.`` to the same nsd and serve a local zone ``lan.example.``.
Each is asked a name with RD=1 first (now in its cache), then with RD=0: that name, a
name neither has asked (not cached), a local-zone name and a default-zone name.

With ``allow`` both answer local data and REFUSED for the rest, cached or not. With
``allow_snoop`` both answer a cached name from the cache and neither forwards an RD=0
query for an uncached one ("cannot forward RD=0 query, to stop query loops": SERVFAIL).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from . import peers
from .peers import LOOPBACK, ZONE_ORIGIN, Peer, PeerGroup

pytestmark = pytest.mark.interop

LAN_ZONE = """$ORIGIN lan.example.
$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 300
@ IN NS ns
ns IN A 10.0.0.53
host IN A 10.0.0.1
"""

CACHED, UNCACHED = f"www.{ZONE_ORIGIN}", f"mail.{ZONE_ORIGIN}"
ASKED = [CACHED, UNCACHED, "host.lan.example.", "localhost."]


def start_unbound(group: PeerGroup, nsd: Peer, action: str) -> Peer:
    """unbound forwarding example.test. to ``nsd`` (plain DNS), loopback ``action``."""
    binary = peers.require("unbound")
    work = group.workdir(f"unbound-{action}")
    port = peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{port}", access=action,
                                        extra="""\
    local-zone: "lan.example." static
    local-data: "lan.example. 300 IN SOA ns.lan.example. host.lan.example. 1 3600 600 86400 300"
    local-data: "host.lan.example. 300 IN A 10.0.0.1"
""") + f"""\
forward-zone:
    name: "{ZONE_ORIGIN}"
    forward-addr: {nsd.host}@{nsd.port}
""")
    peer = group.start(Peer(f"unbound-{action}", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    return peer.wait_ready(lambda: peers.udp_dns_answers(LOOPBACK, port, "localhost."))


def rcodes(port: int) -> dict[str, str]:
    """The RCODE of each RD=0 question in :data:`ASKED`, after one RD=1 for CACHED."""
    primed = dns.query.udp(dns.message.make_query(CACHED, "A", use_edns=0), LOOPBACK,
                           port=port, timeout=5)
    assert primed.rcode() == dns.rcode.NOERROR and primed.answer
    out = {}
    for name in ASKED:
        query = dns.message.make_query(name, "A", use_edns=0)
        query.flags &= ~dns.flags.RD
        response = dns.query.udp(query, LOOPBACK, port=port, timeout=5)
        assert response.question == query.question  # echoed by both
        out[name] = dns.rcode.to_text(response.rcode())
    return out


@pytest.mark.parametrize("action", ["allow", "allow_snoop"])
def test_rd0_rcodes_as_unbound(peer_group: PeerGroup, nsd: Peer, tmp_path: Path,
                               dnstls_serve: Callable[..., Peer], action: str) -> None:
    try:
        unbound = start_unbound(peer_group, nsd, action)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    zone = tmp_path / "lan.example.zone"
    zone.write_text(LAN_ZONE)
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}", "--upstream",
                 f"udp://{nsd.host}:{nsd.port}", "--access-control",
                 f"127.0.0.0/8 {action}", zone=zone)
    theirs, ours = rcodes(unbound.port), rcodes(plain)
    if action == "allow":
        assert theirs == ours == {CACHED: "REFUSED", UNCACHED: "REFUSED",
                                  "host.lan.example.": "NOERROR", "localhost.": "NOERROR"}
    else:
        assert theirs == ours == {CACHED: "NOERROR", UNCACHED: "SERVFAIL",
                                  "host.lan.example.": "NOERROR", "localhost.": "NOERROR"}
