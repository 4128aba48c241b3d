"""``dnstls serve --prefetch`` next to unbound 1.17 with ``prefetch: yes``, both forwarding
example.test. to the same nsd, whose records all have TTL 10 s.

Each is asked ``www`` (A: a positive answer) and ``nx`` (NXDOMAIN; the SOA's TTL and
MINIMUM are 10 s too) at t=0, then again at t~9.3 s: both answer from the cache with
the TTL counting down (at most 1 s left) and refresh in the background, so that before
the original expiry (t=10) they answer with a fresh TTL (nsd's 10, less the whole
seconds since the refresh), and after it, at t~11, still from the cache (a TTL below
10: a new miss would relay nsd's 10). Unbound counts seconds as whole numbers, so its
TTLs may be one lower than ours; the bounds allow for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dns.message
import dns.query
import dns.rcode
import pytest

from . import peers
from .peers import LOOPBACK, ZONE_ORIGIN, Peer, PeerGroup

pytestmark = pytest.mark.interop

ZONE_TTL_10 = f"""$ORIGIN {ZONE_ORIGIN}
$TTL 10
@ IN SOA ns1 hostmaster 1 3600 600 86400 10
@ IN NS ns1
ns1 IN A 127.0.0.1
www IN A 192.0.2.1
"""
NAMES = (f"www.{ZONE_ORIGIN}", f"nx.{ZONE_ORIGIN}")


def start_unbound(group: PeerGroup, nsd: Peer) -> Peer:
    binary = peers.require("unbound")
    work = group.workdir("unbound-prefetch")
    port = peers.free_port()
    conf = work / "unbound.conf"
    conf.write_text(peers._unbound_base(work, interface=f"{LOOPBACK}@{port}", extra="""\
    prefetch: yes
""") + f"""\
forward-zone:
    name: "{ZONE_ORIGIN}"
    forward-addr: {nsd.host}@{nsd.port}
""")
    peer = group.start(Peer("unbound-prefetch", [binary, "-d", "-c", str(conf)], work,
                            port=port))
    return peer.wait_ready(lambda: peers.udp_dns_answers(LOOPBACK, port, "localhost."))


def ttl(port: int, name: str) -> int:
    """The TTL of the answer (or, for NXDOMAIN, the SOA) ``port`` gives for ``name``."""
    response = dns.query.udp(dns.message.make_query(name, "A", use_edns=0), LOOPBACK,
                             port=port, timeout=5)
    if name.startswith("nx."):
        assert response.rcode() == dns.rcode.NXDOMAIN and response.authority
        return int(response.authority[0].ttl)
    assert response.rcode() == dns.rcode.NOERROR and response.answer
    return int(response.answer[0].ttl)


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_prefetch_as_unbound(peer_group: PeerGroup, dnstls_serve: Callable[..., Peer],
                             ) -> None:
    try:
        nsd = peers.start_nsd(peer_group, zone_text=ZONE_TTL_10)
        unbound = start_unbound(peer_group, nsd)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    plain = peers.free_port()
    dnstls_serve("--plain", f"{LOOPBACK}:{plain}", "--upstream",
                 f"udp://{nsd.host}:{nsd.port}", "--prefetch")
    ports = {"unbound": unbound.port, "dnstls": plain}
    start = time.monotonic()
    for name in NAMES:
        assert {p: ttl(port, name) for p, port in ports.items()} == {
            "unbound": 10, "dnstls": 10}
    sleep_until(start + 9.3)  # less than a tenth of the TTL left: the prefetch is due
    for name in NAMES:
        for peer, port in ports.items():
            assert ttl(port, name) <= 1, (peer, name)  # the cached answer, counting down
    # The refresh (one loopback exchange with nsd) lands before the original expiry:
    # poll, bounded by it.
    refreshed: dict[tuple[str, str], int] = {}
    while len(refreshed) < len(ports) * len(NAMES) and time.monotonic() < start + 9.9:
        for name in NAMES:
            for peer, port in ports.items():
                seen = ttl(port, name)
                if seen >= 9:
                    refreshed[(peer, name)] = seen
        time.sleep(0.05)
    assert sorted(refreshed) == sorted((p, n) for p in ports for n in NAMES), refreshed
    sleep_until(start + 11.0)  # past the original expiry: still answered from the cache
    for name in NAMES:
        for peer, port in ports.items():
            assert 7 <= ttl(port, name) <= 9, (peer, name)
