"""The iterator against an in-process network of fake authoritative servers
(tests/fakes/auth_network.py): answers, scrubbing, DS from the parent, DO, QNAME
minimisation, misbehaving servers, bounds and the deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnstls.errors import ConfigError, QueryTimeout
from dnstls.proto.answers import Transport
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.iterate import (
    BUILTIN_ROOT_HINTS,
    MAX_SENT_COUNT,
    MAX_TOTAL_SENDS,
    Iterator,
    RootHints,
    load_root_hints,
)
from fakes.auth_network import AuthNetwork, FakeClock, FakeServer, zone

ROOT_IP, COM_IP, NET_IP, EXAMPLE_IP, EXAMPLE2_IP, EXNET_IP = (
    "10.0.0.1", "10.0.1.1", "10.0.2.1", "10.0.3.1", "10.0.3.2", "10.0.4.1")
SIG = "A 8 2 300 20300101000000 20200101000000 1 {zone} AAAA"
HINTS = RootHints(((dns.name.from_text("ns.root."), (ROOT_IP,)),), "test")

ROOT = f"""
@ 86400 SOA ns.root. hostmaster.root. 1 1800 900 604800 86400
@ 518400 NS ns.root.
ns.root. 518400 A {ROOT_IP}
com. 172800 NS ns1.com.
ns1.com. 172800 A {COM_IP}
com. 86400 DS 1 8 2 {"AB" * 32}
net. 172800 NS ns1.net.
ns1.net. 172800 A {NET_IP}
"""
COM = f"""
@ 900 SOA ns1.com. hostmaster.com. 1 1800 900 604800 86400
@ 172800 NS ns1.com.
ns1 172800 A {COM_IP}
example 172800 NS ns1.example.com.
example 172800 NS ns2.example.com.
ns1.example 172800 A {EXAMPLE_IP}
ns2.example 172800 A {EXAMPLE2_IP}
example 86400 DS 2 13 2 {"CD" * 32}
glueless 172800 NS ns.example.net.
loop 172800 NS ns.loop.net.
"""
NET = f"""
@ 900 SOA ns1.net. hostmaster.net. 1 1800 900 604800 86400
@ 172800 NS ns1.net.
ns1 172800 A {NET_IP}
example 172800 NS ns1.example.net.
ns1.example 172800 A {EXNET_IP}
loop 172800 NS ns.loop.com.
"""
EXAMPLE = f"""
@ 3600 SOA ns1.example.com. hostmaster.example.com. 1 1800 900 604800 300
@ 3600 NS ns1.example.com.
@ 3600 NS ns2.example.com.
@ 300 RRSIG SOA 13 2 300 20300101000000 20200101000000 1 example.com. AAAA
ns1 3600 A {EXAMPLE_IP}
ns2 3600 A {EXAMPLE2_IP}
www 300 A 192.0.2.1
www 300 RRSIG A 13 3 300 20300101000000 20200101000000 1 example.com. AAAA
www 300 AAAA 2001:db8::1
alias 300 CNAME www
out 300 CNAME www.example.net.
nx 300 CNAME nothere.example.net.
*.wild 300 A 192.0.2.7
*.wild 300 RRSIG A 13 3 300 20300101000000 20200101000000 1 example.com. AAAA
wild 300 NSEC x.wild A RRSIG NSEC
dn 300 DNAME example.net.
a.b.c 300 A 192.0.2.9
"""
EXNET = f"""
@ 3600 SOA ns1.example.net. hostmaster.example.net. 1 1800 900 604800 300
@ 3600 NS ns1.example.net.
ns1 3600 A {EXNET_IP}
www 300 A 192.0.2.2
www.dn 300 A 192.0.2.3
ns 300 A 10.0.5.1
"""


GLUELESS_IP = "10.0.5.1"
GLUELESS = """
@ 300 SOA ns.example.net. h. 1 1 1 1 1
@ 300 NS ns.example.net.
www 300 A 192.0.2.44
"""


def world() -> tuple[FakeClock, AuthNetwork, dict[str, FakeServer]]:
    clock = FakeClock()
    net = AuthNetwork(clock)
    servers = {
        ROOT_IP: FakeServer([zone(".", ROOT)]),
        COM_IP: FakeServer([zone("com.", COM)]),
        NET_IP: FakeServer([zone("net.", NET)]),
        EXAMPLE_IP: FakeServer([zone("example.com.", EXAMPLE)]),
        EXAMPLE2_IP: FakeServer([zone("example.com.", EXAMPLE)]),
        EXNET_IP: FakeServer([zone("example.net.", EXNET)]),
    }
    servers[GLUELESS_IP] = FakeServer([zone("glueless.com.", GLUELESS)])
    for address, server in servers.items():
        net.add(address, server)
    return clock, net, servers


def make_iterator(net: AuthNetwork, clock: FakeClock, **kwargs: object) -> Iterator:
    it = Iterator(net, HINTS, clock, **kwargs)  # type: ignore[arg-type]
    it._random.seed(1)
    return it


def request(name: str, rdtype: str = "A", *, do: bool = False, clock: FakeClock,
            timeout: float = 10.0, edns: bool = True) -> Request:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else False,
                                   want_dnssec=do)
    if do:
        query.flags |= dns.flags.CD
    return Request(query, Transport.UDP, None, clock() + timeout)


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return [r.to_text() for r in section]


async def resolve(it: Iterator, clock: FakeClock, name: str, rdtype: str = "A",
                  **kwargs: object) -> dns.message.Message:
    return await it.resolve(request(name, rdtype, clock=clock, **kwargs))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- answers


async def test_cold_resolution_primes_then_walks_down_with_minimised_queries() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    req = request("www.example.com.", clock=clock)
    response = await it.resolve(req)
    assert response.id == req.message.id
    assert response.question == req.message.question
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.RA and response.flags & dns.flags.RD
    assert not response.flags & dns.flags.AA
    assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert response.authority == [] and response.additional == []
    assert response.edns == 0
    assert net.questions() == [
        (ROOT_IP, ".", "NS"),                         # priming
        (ROOT_IP, "com.", "A"),                       # minimised: referral to com.
        (COM_IP, "example.com.", "A"),                # referral to example.com.
        (net.log[3].address[0], "www.example.com.", "A"),
    ]
    assert net.log[3].address[0] in (EXAMPLE_IP, EXAMPLE2_IP)
    # RD clear, EDNS on, no DO, no CD towards authorities
    assert all(s.flags & (dns.flags.RD | dns.flags.CD) == 0 and s.edns and not s.do
               for s in net.log)
    # warm: straight to the zone's servers
    net.log.clear()
    await resolve(it, clock, "www.example.com.", "AAAA")
    assert [q[1:] for q in net.questions()] == [("www.example.com.", "AAAA")]
    stats = it.statistics()
    assert stats["resolutions"] == 2 and stats["primings"] == 1 and stats["referrals"] == 2


async def test_minimisation_one_label_at_a_time_through_empty_non_terminals() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "a.b.c.example.com.", "TXT")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    assert [q[1:] for q in net.questions()] == [
        (".", "NS"), ("com.", "A"), ("example.com.", "A"), ("c.example.com.", "A"),
        ("b.c.example.com.", "A"), ("a.b.c.example.com.", "TXT")]


async def test_without_minimisation_the_full_question_goes_to_each_zone() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock, qname_minimisation=False)
    response = await resolve(it, clock, "a.b.c.example.com.", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert [q[1:] for q in net.questions()] == [
        (".", "NS"), ("a.b.c.example.com.", "TXT"), ("a.b.c.example.com.", "TXT"),
        ("a.b.c.example.com.", "TXT")]


async def test_nxdomain_to_a_minimised_query_is_checked_with_the_full_name() -> None:
    clock, net, servers = world()

    def broken_ent(query: dns.message.Message, response: dns.message.Message,
                   ) -> dns.message.Message:
        if query.question[0].name == dns.name.from_text("c.example.com."):
            response.set_rcode(dns.rcode.NXDOMAIN)  # a server that denies ENTs
        return response

    servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = broken_ent
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "a.b.c.example.com.")
    assert texts(response.answer) == ["a.b.c.example.com. 300 IN A 192.0.2.9"]
    assert [q[1:] for q in net.questions()][-2:] == [("c.example.com.", "A"),
                                                    ("a.b.c.example.com.", "A")]


async def test_cname_inside_the_zone_and_across_zones() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "alias.example.com.")
    assert texts(response.answer) == ["alias.example.com. 300 IN CNAME www.example.com.",
                                      "www.example.com. 300 IN A 192.0.2.1"]
    response = await resolve(it, clock, "out.example.com.")
    assert texts(response.answer) == ["out.example.com. 300 IN CNAME www.example.net.",
                                      "www.example.net. 300 IN A 192.0.2.2"]
    assert (NET_IP, "example.net.", "A") in net.questions()
    response = await resolve(it, clock, "nx.example.com.")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert texts(response.answer) == ["nx.example.com. 300 IN CNAME nothere.example.net."]
    assert [r.name.to_text() for r in response.authority] == ["example.net."]
    assert response.authority[0].rdtype == dns.rdatatype.SOA


async def test_dname_keeps_the_dname_and_the_matching_cname() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "www.dn.example.com.")
    assert texts(response.answer) == [
        "dn.example.com. 300 IN DNAME example.net.",
        "www.dn.example.com. 300 IN CNAME www.example.net.",
        "www.example.net. 300 IN A 192.0.2.2"]


async def test_a_cname_that_does_not_match_its_dname_is_replaced() -> None:
    clock, net, servers = world()

    def lie(query: dns.message.Message, response: dns.message.Message) -> dns.message.Message:
        response.answer = [r for r in response.answer if r.rdtype != dns.rdatatype.CNAME]
        if response.answer:
            response.answer.append(dns.rrset.from_text(
                "www.dn.example.com.", 300, "IN", "CNAME", "evil.example.org."))
        return response

    servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = lie
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "www.dn.example.com.")
    assert "evil" not in str(texts(response.answer))
    assert texts(response.answer)[-1] == "www.example.net. 300 IN A 192.0.2.2"


async def test_nxdomain_and_nodata_keep_the_soa() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "nothere.example.com.")
    assert response.rcode() == dns.rcode.NXDOMAIN and response.answer == []
    assert texts(response.authority) == [
        "example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 1 1800 900 "
        "604800 300"]
    response = await resolve(it, clock, "www.example.com.", "MX")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]


async def test_do_keeps_rrsigs_and_nsec_proofs_of_negative_and_wildcard_answers() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "www.example.com.", do=True)
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.A, dns.rdatatype.RRSIG]
    assert response.ednsflags & dns.flags.DO and response.flags & dns.flags.CD
    assert all(s.do for s in net.log[1:])
    response = await resolve(it, clock, "x.wild.example.com.", do=True)
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.A, dns.rdatatype.RRSIG]
    assert dns.rdatatype.NSEC in [r.rdtype for r in response.authority]
    response = await resolve(it, clock, "nothere.example.com.", do=True)
    kinds = [(r.rdtype, r.covers) for r in response.authority]
    assert (dns.rdatatype.SOA, dns.rdatatype.NONE) in kinds
    assert (dns.rdatatype.RRSIG, dns.rdatatype.SOA) in kinds
    assert (dns.rdatatype.NSEC, dns.rdatatype.NONE) in kinds
    # without DO: no proofs
    response = await resolve(it, clock, "x.wild.example.com.")
    assert response.authority == [] and len(response.answer) == 1


async def test_ds_is_asked_of_the_parent_never_of_the_child() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    await resolve(it, clock, "www.example.com.")  # the child's delegation is cached now
    net.log.clear()
    response = await resolve(it, clock, "example.com.", "DS", do=True)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer[0].rdtype == dns.rdatatype.DS
    assert net.questions() == [(COM_IP, "example.com.", "DS")]
    for cold in (True, False):  # cold: from the root, minimised or not
        clock, net, _ = world()
        it = make_iterator(net, clock, qname_minimisation=cold)
        response = await resolve(it, clock, "example.com.", "DS")
        assert texts(response.answer) == [f"example.com. 86400 IN DS 2 13 2 {'cd' * 32}"]
        assert not any(a in (EXAMPLE_IP, EXAMPLE2_IP) for a, _, _ in net.questions())


async def test_dnskey_is_asked_of_the_zone_itself() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    await resolve(it, clock, "example.com.", "DNSKEY")
    assert net.log[-1].address[0] in (EXAMPLE_IP, EXAMPLE2_IP)


async def test_other_classes_are_refused() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    query = dns.message.make_query("version.bind.", "TXT", "CH")
    with pytest.raises(ResolveFailure) as failure:
        await it.resolve(Request(query, Transport.UDP, None, clock() + 5))
    assert failure.value.rcode == dns.rcode.REFUSED
    assert net.log == []


# ---------------------------------------------------------------------- scrubbing


async def test_poison_in_answer_authority_and_additional_is_dropped_and_never_used() -> None:
    clock, net, servers = world()

    def poison(query: dns.message.Message, response: dns.message.Message,
               ) -> dns.message.Message:
        response.answer.append(dns.rrset.from_text("www.victim.org.", 300, "IN", "A",
                                                   "6.6.6.6"))
        response.answer.append(dns.rrset.from_text("www.example.net.", 300, "IN", "A",
                                                   "6.6.6.6"))
        response.authority.append(dns.rrset.from_text("example.net.", 300, "IN", "NS",
                                                      "ns.evil.org."))
        response.additional.append(dns.rrset.from_text("ns1.example.net.", 300, "IN",
                                                       "A", "6.6.6.6"))
        response.additional.append(dns.rrset.from_text("ns1.com.", 300, "IN", "A",
                                                       "6.6.6.6"))
        return response

    def referral_poison(query: dns.message.Message, response: dns.message.Message,
                        ) -> dns.message.Message:
        if response.authority and response.authority[0].rdtype == dns.rdatatype.NS:
            # out-of-bailiwick glue for a name the referral does not even use
            response.additional.append(dns.rrset.from_text("ns1.example.net.", 300, "IN",
                                                           "A", "6.6.6.6"))
            response.additional.append(dns.rrset.from_text("ns.example.net.", 300, "IN",
                                                           "A", "6.6.6.6"))
        return response

    servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = poison
    servers[COM_IP].hook = referral_poison
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "out.example.com.")
    assert "6.6.6.6" not in str(texts(response.answer))
    assert "victim" not in str(texts(response.answer)) and response.additional == []
    assert texts(response.answer)[-1] == "www.example.net. 300 IN A 192.0.2.2"
    await resolve(it, clock, "www.example.net.", "AAAA")
    # glueless.com's NS ns.example.net: resolved, not taken from com.'s glue
    await resolve(it, clock, "www.glueless.com.")
    assert all(s.address[0] != "6.6.6.6" for s in net.log)
    assert (EXNET_IP, "ns.example.net.", "A") in net.questions()


async def test_glueless_delegation_is_resolved_lazily() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "www.glueless.com.")
    assert texts(response.answer) == ["www.glueless.com. 300 IN A 192.0.2.44"]
    assert it.statistics()["subresolutions"] == 1


# ---------------------------------------------------------------------- misbehaviour


async def test_lame_and_refusing_servers_are_skipped() -> None:
    for mode in ("refused", "servfail", "noaa", "upward"):
        clock, net, servers = world()
        servers[EXAMPLE_IP].mode = mode
        it = make_iterator(net, clock)
        for _ in range(3):
            response = await resolve(it, clock, "www.example.com.")
            assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"], mode
        # marked lame: asked once, then left alone while another answers
        assert servers[EXAMPLE_IP].queries <= 1, mode
        assert it.statistics()["lame"] == servers[EXAMPLE_IP].queries


async def test_every_server_lame_is_servfail_no_reachable_authority() -> None:
    clock, net, servers = world()
    servers[EXAMPLE_IP].mode = servers[EXAMPLE2_IP].mode = "refused"
    it = make_iterator(net, clock)
    with pytest.raises(ResolveFailure) as failure:
        await resolve(it, clock, "www.example.com.")
    assert failure.value.rcode == dns.rcode.SERVFAIL
    assert failure.value.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    assert "2 lame" in (failure.value.text or "")


async def test_formerr_to_edns_is_retried_without_edns() -> None:
    clock, net, servers = world()
    servers[EXAMPLE_IP].mode = servers[EXAMPLE2_IP].mode = "formerr_edns"
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "www.example.com.")
    assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert [s.edns for s in net.log[-2:]] == [True, False]
    assert net.log[-1].address == net.log[-2].address
    assert it.statistics()["edns_fallbacks"] == 1


async def test_truncated_answer_is_asked_again_over_tcp() -> None:
    clock, net, servers = world()
    servers[EXAMPLE_IP].mode = servers[EXAMPLE2_IP].mode = "tc"
    it = make_iterator(net, clock)
    response = await resolve(it, clock, "www.example.com.")
    assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert [s.tcp for s in net.log[-2:]] == [False, True]
    assert net.log[-1].address == net.log[-2].address
    assert it.statistics()["tcp_fallbacks"] == 1


async def test_timeout_moves_to_the_next_server_and_slows_the_dead_one() -> None:
    clock, net, servers = world()
    servers[EXAMPLE_IP].mode = "timeout"
    it = make_iterator(net, clock)
    for _ in range(4):
        response = await resolve(it, clock, "www.example.com.")
        assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    # after its first timeout its RTO (752 ms) is beyond the band of the live one
    assert sum(1 for s in net.log if s.address[0] == EXAMPLE_IP) <= 1
    assert it._host((EXAMPLE_IP, 53)).rto >= 0.752 or not any(
        s.address[0] == EXAMPLE_IP for s in net.log)


async def test_all_servers_dead_fails_within_the_deadline_with_bounded_sends() -> None:
    clock, net, servers = world()
    servers[EXAMPLE_IP].mode = servers[EXAMPLE2_IP].mode = "timeout"
    it = make_iterator(net, clock)
    start = clock()
    with pytest.raises(ResolveFailure) as failure:
        await resolve(it, clock, "www.example.com.", timeout=3.0)
    assert failure.value.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    assert clock() <= start + 3.0
    assert len(net.log) <= MAX_SENT_COUNT
    # a blackholed root: priming falls back to the hints, then the deadline ends it
    clock, net, servers = world()
    servers[ROOT_IP].mode = "timeout"
    it = make_iterator(net, clock)
    start = clock()
    with pytest.raises(ResolveFailure):
        await resolve(it, clock, "www.example.com.", timeout=2.0)
    assert clock() <= start + 2.0
    assert it.statistics()["priming_failures"] == 1


async def test_referral_loop_and_glueless_ns_loop_end_in_servfail() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock)
    with pytest.raises(ResolveFailure) as failure:
        await resolve(it, clock, "www.loop.com.", timeout=30.0)
    assert failure.value.rcode == dns.rcode.SERVFAIL
    assert len(net.log) <= MAX_TOTAL_SENDS
    # a server that refers to itself forever (sideways referral): lame, bounded
    clock, net, servers = world()

    def self_referral(query: dns.message.Message, response: dns.message.Message,
                      ) -> dns.message.Message:
        response.answer, response.flags = [], response.flags & ~dns.flags.AA
        response.authority = [dns.rrset.from_text("example.com.", 300, "IN", "NS",
                                                  "ns1.example.com.")]
        return response

    servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = self_referral
    it = make_iterator(net, clock)
    with pytest.raises(ResolveFailure):
        await resolve(it, clock, "www.example.com.")
    assert servers[EXAMPLE_IP].queries == servers[EXAMPLE2_IP].queries == 1


async def test_cname_loop_is_bounded() -> None:
    clock, net, _ = world()
    net.add("10.0.5.1", FakeServer([zone("glueless.com.", """
@ 300 SOA ns.example.net. h. 1 1 1 1 1
@ 300 NS ns.example.net.
a 300 CNAME b.example.org.
""")]))
    net.servers[(ROOT_IP, 53)].zones.append(zone("example.org.", """
@ 300 SOA ns.root. h. 1 1 1 1 1
@ 300 NS ns.root.
b 300 CNAME a.glueless.com.
"""))
    it = make_iterator(net, clock)
    with pytest.raises(ResolveFailure) as failure:
        await resolve(it, clock, "a.glueless.com.")
    assert "chain longer than 11" in (failure.value.text or "")


async def test_stubs_and_do_not_query_localhost() -> None:
    clock, net, _ = world()
    net.add("127.0.0.9", FakeServer([zone("example.com.", EXAMPLE)], port=5353))
    stubs = {dns.name.from_text("example.com."): [("127.0.0.9", 5353)]}
    it = make_iterator(net, clock, stubs=stubs, do_not_query_localhost=False)
    response = await resolve(it, clock, "www.example.com.")
    assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert net.questions() == [("127.0.0.9", "www.example.com.", "A")]
    # as Unbound: do-not-query-localhost applies to stub addresses too
    clock, net, _ = world()
    it = make_iterator(net, clock, stubs=stubs)
    with pytest.raises(ResolveFailure):
        await resolve(it, clock, "www.example.com.")
    assert net.log == []


async def test_ip6_off_and_link_local_never_queried() -> None:
    clock, net, _ = world()
    hints = RootHints(((dns.name.from_text("ns.root."), ("fe80::1", "2001:db8::53",
                                                          ROOT_IP)),), "test")
    it = Iterator(net, hints, clock, ip6=False)
    await resolve(it, clock, "www.example.com.")
    assert all(":" not in s.address[0] for s in net.log)


async def test_delegation_cache_is_bounded() -> None:
    clock, net, _ = world()
    it = make_iterator(net, clock, max_entries=2)
    await resolve(it, clock, "www.example.com.")
    await resolve(it, clock, "www.example.net.")
    assert it.statistics()["delegation_entries"] <= 2


# ---------------------------------------------------------------------- fuzz


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1,
                max_size=8), st.sampled_from(["www.example.com.", "out.example.com.",
                                              "x.wild.example.com.", "example.com."]),
       st.booleans())
async def test_mutated_answers_never_crash_the_iterator(
        mutations: list[tuple[int, int]], name: str, do: bool) -> None:
    clock, net, servers = world()

    def mutate(wire: bytes) -> bytes:
        data = bytearray(wire)
        for offset, value in mutations:
            if offset < len(data):
                data[offset] = value
            elif value % 3 == 0:
                del data[offset % max(1, len(data)):]
        return bytes(data)

    for server in servers.values():
        server.garbage = mutate
    it = make_iterator(net, clock)
    try:
        response = await resolve(it, clock, name, "DS" if name == "example.com." else "A",
                                 do=do)
    except ResolveFailure as failure:
        assert failure.rcode == dns.rcode.SERVFAIL
    else:
        assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
        response.to_wire()
    assert len(net.log) <= MAX_TOTAL_SENDS


# ---------------------------------------------------------------------- root hints


def test_builtin_hints_match_the_debian_root_hints_file() -> None:
    path = Path("/usr/share/dns/root.hints")
    if not path.exists():
        pytest.skip("no /usr/share/dns/root.hints (dns-root-data)")
    loaded = load_root_hints(str(path))
    assert loaded.source == str(path)
    assert {(n, frozenset(a)) for n, a in loaded.servers} == {
        (n, frozenset(a)) for n, a in BUILTIN_ROOT_HINTS.servers}
    assert len(BUILTIN_ROOT_HINTS.servers) == 13


def test_root_hints_file_errors_name_the_field(tmp_path: Path) -> None:
    good = tmp_path / "hints"
    good.write_text(". 3600000 NS a.example.\na.example. 3600000 A 192.0.2.53\n"
                    "b.example. 3600000 AAAA 2001:db8::53\n")
    hints = load_root_hints(str(good))
    assert hints.servers == ((dns.name.from_text("a.example."), ("192.0.2.53",)),)
    cases = {
        "missing": None,
        "garbage": "this is not a zone file ((\n",
        "no-address": ". 3600000 NS a.example.\n",
        "not-root": "com. 3600000 NS a.example.\na.example. 1 A 192.0.2.1\n",
    }
    for label, text in cases.items():
        path = tmp_path / label
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as error:
            load_root_hints(str(path), "recursion.root_hints")
        assert error.value.field == "recursion.root_hints", label
        assert str(path) in error.value.message, label


def test_cpu_per_cold_resolution_is_reported() -> None:
    """Not a pass/fail on time: prints the µs of CPU a cold resolution takes."""
    import asyncio

    async def run(n: int) -> float:
        clock, net, _ = world()
        start = time.process_time()
        for _ in range(n):
            it = make_iterator(net, clock)  # cold: no primed root, no delegations
            await resolve(it, clock, "www.example.com.")
        return (time.process_time() - start) / n * 1e6

    per = asyncio.run(run(200))
    print(f"cold resolution (fake network, 4 sends incl. zone answering): {per:.0f} µs CPU")
    assert per > 0


async def test_a_lost_datagram_is_asked_again_not_servfail() -> None:
    clock, net, servers = world()
    it = make_iterator(net, clock)
    await resolve(it, clock, "www.example.com.")
    servers[EXAMPLE2_IP].mode = "timeout"  # one server down, the other loses one answer
    lost = [True]
    original = net.exchange

    async def lossy(query: dns.message.Message, address: tuple[str, int], *, tcp: bool,
                    deadline: float) -> dns.message.Message:
        if address[0] == EXAMPLE_IP and lost:
            lost.pop()
            clock.now = deadline
            raise QueryTimeout("lost")
        return await original(query, address, tcp=tcp, deadline=deadline)

    net.exchange = lossy  # type: ignore[method-assign]
    response = await resolve(it, clock, "www.example.com.", "AAAA")
    assert texts(response.answer) == ["www.example.com. 300 IN AAAA 2001:db8::1"]
    assert it.statistics()["timeouts"] >= 2


async def test_delegation_lives_min_of_ns_and_glue_ttl_and_root_is_primed_again() -> None:
    clock, net, servers = world()

    def short_glue(query: dns.message.Message, response: dns.message.Message,
                   ) -> dns.message.Message:
        for rrset in response.additional:
            rrset.ttl = 50
        return response

    servers[COM_IP].hook = short_glue
    it = make_iterator(net, clock)
    await resolve(it, clock, "www.example.com.")
    clock.now += 40
    net.log.clear()
    await resolve(it, clock, "www.example.com.", "AAAA")
    assert [a for a, _, _ in net.questions()] != [COM_IP]  # still cached: no walk
    assert COM_IP not in [a for a, _, _ in net.questions()]
    clock.now += 11  # past the glue's 50 s: the delegation from com. is asked again
    net.log.clear()
    await resolve(it, clock, "www.example.com.", "AAAA")
    assert net.questions()[0] == (COM_IP, "example.com.", "A")
    assert it.statistics()["primings"] == 1
    clock.now += 86400  # past every TTL (capped at a day): priming again
    net.log.clear()
    await resolve(it, clock, "www.example.com.")
    assert net.questions()[0] == (ROOT_IP, ".", "NS")
    assert it.statistics()["primings"] == 2


async def test_link_local_and_loopback_addresses_are_never_queried() -> None:
    clock, net, _ = world()
    hints = RootHints(((dns.name.from_text("ns.root."), ("fe80::1", "127.0.0.1", "::1",
                                                          ROOT_IP)),), "test")
    it = Iterator(net, hints, clock)
    response = await resolve(it, clock, "www.example.com.")
    assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert {s.address[0] for s in net.log}.isdisjoint({"fe80::1", "127.0.0.1", "::1"})


async def test_concurrent_cold_queries_share_one_priming() -> None:
    clock, net, _ = world()
    net.interleave = True
    it = make_iterator(net, clock)
    names = ["www.example.com.", "www.example.net.", "alias.example.com."]
    responses = await asyncio.gather(*(resolve(it, clock, n) for n in names))
    assert all(r.answer for r in responses)
    assert net.questions().count((ROOT_IP, ".", "NS")) == 1
    assert it.statistics()["primings"] == 1


async def test_a_short_deadline_does_not_wait_for_a_shared_priming() -> None:
    clock, net, servers = world()
    net.interleave = True
    servers[ROOT_IP].mode = "timeout"
    it = make_iterator(net, clock)
    first = asyncio.ensure_future(resolve(it, clock, "www.example.com.", timeout=30))
    await asyncio.sleep(0)
    with pytest.raises(ResolveFailure) as failure:  # its deadline has passed meanwhile
        await resolve(it, clock, "www.example.net.", timeout=0.0)
    assert failure.value.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    with pytest.raises(ResolveFailure):
        await first


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(0, 65535))
async def test_garbage_after_the_question_never_crashes_the_iterator(
        tail: bytes, flags: int, counts: int) -> None:
    """Each answer keeps its ID and question; flags, section counts and the rest are
    random bytes."""
    clock, net, servers = world()

    def garbage(wire: bytes) -> bytes:
        question_end = 12
        while wire[question_end]:
            question_end += wire[question_end] + 1
        question_end += 5
        header = wire[:2] + flags.to_bytes(2, "big") + b"\x00\x01" \
            + counts.to_bytes(2, "big") * 3
        return header + wire[12:question_end] + tail

    for server in servers.values():
        server.garbage = garbage
    it = make_iterator(net, clock)
    try:
        response = await resolve(it, clock, "www.example.com.", do=True)
    except ResolveFailure as failure:
        assert failure.rcode == dns.rcode.SERVFAIL
    else:
        response.to_wire()
    assert len(net.log) <= MAX_TOTAL_SENDS
