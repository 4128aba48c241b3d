"""Minimal responses (cache.minimal_responses): forwarded answers without the sections
they do not need, the same cut on every path (miss, hit, caching off, message path)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnstls import config
from dnstls.errors import ConfigError
from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import Request
from dnstls.resolver.cache import Cache, CacheStage, MinimalStage, minimise

NAME = "www.example.com."


def rrset(name: str, ttl: int, rdtype: str, *rdatas: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas)


def query(rdtype: str = "A", *, do: bool = False, edns: bool = True,
          name: str = NAME) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, id=7, use_edns=0 if edns or do else None,
                                  want_dnssec=do)


def soa(ttl: int = 3600) -> dns.rrset.RRset:
    return rrset("example.com.", ttl, "SOA",
                 "ns.example.com. host.example.com. 1 7200 900 1209600 300")


def full(q: dns.message.Message, rcode: int = dns.rcode.NOERROR, *, answer: bool = True,
         authority: list[dns.rrset.RRset] | None = None, ns_ttl: int = 86400,
         glue_ttl: int = 86400) -> dns.message.Message:
    """An upstream answer with every section: data (or not), NS or SOA, glue."""
    r = make_response(q)
    r.set_rcode(rcode)
    if answer:
        r.answer.append(rrset(q.question[0].name.to_text(), 300, "A", "192.0.2.1"))
    r.authority.extend(authority if authority is not None
                       else [rrset("example.com.", ns_ttl, "NS", "ns1.example.com.",
                                   "ns2.example.com.")])
    r.additional.append(rrset("ns1.example.com.", glue_ttl, "A", "192.0.2.53"))
    r.additional.append(rrset("ns2.example.com.", glue_ttl, "AAAA", "2001:db8::53"))
    return r


def served(q: dns.message.Message, upstream: dns.message.Message, *, minimal: bool = True,
           stores: bool = True, now: float = 0.0) -> dns.message.Message:
    cache = Cache(minimal_responses=minimal) if stores else Cache.storing_nothing(
        minimal_responses=minimal)
    wire = cache.respond_wire(key_from_message(q), upstream.to_wire(), now, q.id, True,
                              None, q.edns >= 0)
    assert wire is not None
    return dns.message.from_wire(wire)


def counts(m: dns.message.Message) -> tuple[int, int, int]:
    return (sum(len(s) for s in m.answer), sum(len(s) for s in m.authority),
            sum(len(s) for s in m.additional))


@pytest.mark.parametrize("stores", [True, False])
@pytest.mark.parametrize("edns", [True, False])
def test_positive_answer_keeps_the_answer_section_only(stores: bool, edns: bool) -> None:
    q = query(edns=edns)
    got = served(q, full(q), stores=stores)
    assert counts(got) == (1, 0, 0)
    assert got.answer == full(q).answer
    assert (got.edns >= 0) == edns  # the client's own OPT, as before
    wire = got.to_wire()
    assert wire[6:12] == b"\x00\x01\x00\x00" + (b"\x00\x01" if edns else b"\x00\x00")


@pytest.mark.parametrize("stores", [True, False])
def test_nxdomain_keeps_the_soa_and_drops_additional(stores: bool) -> None:
    q = query()
    got = served(q, full(q, dns.rcode.NXDOMAIN, answer=False, authority=[soa()]),
                 stores=stores)
    assert got.rcode() == dns.rcode.NXDOMAIN
    assert counts(got) == (0, 1, 0) and got.authority == [soa()]


@pytest.mark.parametrize("stores", [True, False])
def test_nodata_keeps_authority_and_drops_additional(stores: bool) -> None:
    q = query("AAAA")
    nodata = served(q, full(q, answer=False, authority=[soa()]), stores=stores)
    assert nodata.rcode() == dns.rcode.NOERROR
    assert counts(nodata) == (0, 1, 0) and nodata.authority == [soa()]


@pytest.mark.parametrize("stores", [True, False])
def test_a_referral_keeps_its_ns_and_glue(stores: bool) -> None:
    """An upstream's delegation (NS in authority, no SOA) is relayed whole, glue
    included, as Unbound relays it (docs/serve.md, "Odd queries and answer shapes")."""
    q = query("AAAA")
    referral = served(q, full(q, answer=False), stores=stores)
    assert counts(referral) == (0, 2, 2)
    assert referral.authority[0].rdtype == dns.rdatatype.NS
    assert referral.additional == full(q).additional


@pytest.mark.parametrize("stores", [True, False])
def test_an_ns_answer_keeps_the_addresses(stores: bool) -> None:
    """QTYPE NS: the answer and the servers' addresses (Unbound keeps them too)."""
    q = query("NS", name="example.com.")
    r = full(q, answer=False, authority=[])
    r.answer.append(rrset("example.com.", 300, "NS", "ns1.example.com.", "ns2.example.com."))
    got = served(q, r, stores=stores)
    assert counts(got) == (2, 0, 2) and got.additional == r.additional


def test_cname_chain_without_the_data_keeps_authority() -> None:
    """A CNAME to a name without the QTYPE: NODATA at the chain's end, as Unbound judges
    it (positive_answer: an RRset of the QTYPE); the SOA stays for negative caching."""
    q = query("AAAA")
    r = full(q, answer=False, authority=[soa()])
    r.answer.append(rrset(NAME, 1000, "CNAME", "target.example.com."))
    got = served(q, r)
    assert counts(got) == (1, 1, 0) and got.authority == [soa()]
    # and it is cached as the negative answer it is (capped by the SOA's MINIMUM)
    cache = Cache(minimal_responses=True)
    assert cache.insert_wire(key_from_message(q), r.to_wire(), 0.0)
    assert cache._entries[key_from_message(q)].expires == 300


@pytest.mark.parametrize("stores", [True, False])
def test_a_positive_answer_to_do_keeps_the_answer_section_only(stores: bool) -> None:
    """With DO too, as Unbound: the NS RRset (and its RRSIG) and glue go, unless the
    authority section holds a wildcard's proof (next test)."""
    q = query(do=True)
    got = served(q, full(q), stores=stores)
    assert counts(got) == (1, 0, 0) and got.ednsflags & dns.flags.DO


@pytest.mark.parametrize("stores", [True, False])
def test_a_negative_answer_to_do_keeps_every_section(stores: bool) -> None:
    q = query(do=True)
    r = full(q, dns.rcode.NXDOMAIN, answer=False, authority=[soa()])
    r.authority.append(rrset("example.com.", 300, "NSEC", "zz.example.com. A NS SOA"))
    got = served(q, r, stores=stores)
    assert counts(got) == counts(r) == (0, 2, 2)


@pytest.mark.parametrize("stores", [True, False])
def test_a_wildcard_proof_keeps_every_section_for_do(stores: bool) -> None:
    q = query(do=True)
    r = full(q)
    r.authority.append(rrset("example.com.", 300, "NSEC", "zz.example.com. A NS SOA"))
    got = served(q, r, stores=stores)
    assert counts(got) == counts(r) == (1, 3, 2)
    assert got.authority == r.authority and got.additional == r.additional


def test_do_and_no_do_never_share_an_entry() -> None:
    """DO is part of the cache key: a minimal entry never answers a DO query."""
    plain, dnssec = query(), query(do=True)
    assert key_from_message(plain) != key_from_message(dnssec)
    cache = Cache(minimal_responses=True)
    cache.insert_wire(key_from_message(plain), full(plain).to_wire(), 0.0)
    assert cache.lookup_wire(key_from_message(dnssec), 1, 0.0) is None
    signed = full(dnssec)  # a wildcard's answer: its proof keeps every section
    signed.authority.append(rrset("example.com.", 300, "NSEC", "zz.example.com. A NS SOA"))
    cache.insert_wire(key_from_message(dnssec), signed.to_wire(), 0.0)
    for q, want in ((plain, (1, 0, 0)), (dnssec, (1, 3, 2))):
        hit = cache.lookup_wire(key_from_message(q), 1, 1.0)
        assert hit is not None and counts(dns.message.from_wire(hit)) == want


def test_servfail_and_other_rcodes_are_unchanged() -> None:
    q = query()
    r = full(q, dns.rcode.SERVFAIL, answer=False)
    r.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(22)])
    assert counts(served(q, r)) == counts(r) == (0, 2, 2)


def test_ttls_come_from_the_kept_records_only() -> None:
    """The entry lives for the answer's TTL, not the dropped NS's or glue's; without
    minimal responses the shortest relayed TTL still rules (as before)."""
    q = query()
    r = full(q, ns_ttl=20, glue_ttl=5)
    key = key_from_message(q)
    for minimal, lifetime in ((True, 300), (False, 5)):
        cache = Cache(minimal_responses=minimal)
        assert cache.insert_wire(key, r.to_wire(), 0.0)
        assert cache.lookup_wire(key, 1, lifetime - 0.5) is not None
        assert cache.lookup_wire(key, 1, lifetime) is None
    # negative: the SOA kept, the (short) glue TTL no longer caps it
    n = full(q, dns.rcode.NXDOMAIN, answer=False, authority=[soa(3600)], glue_ttl=5)
    cache = Cache(minimal_responses=True)
    assert cache.insert_wire(key, n.to_wire(), 0.0)
    assert cache._entries[key].expires == 300  # min(SOA TTL, MINIMUM)
    assert cache._entries[key].ttls == (300,)


def test_setting_off_relays_todays_bytes_exactly() -> None:
    """minimal_responses=False (and Cache's own default, used by local data): the
    upstream's answer as it came (same ID, RD, no EDNS: nothing to re-render)."""
    q = query(edns=False)
    wire = full(q).to_wire()
    key = key_from_message(q)
    for cache in (Cache(), Cache(minimal_responses=False), Cache.storing_nothing()):
        assert cache.respond_wire(key, wire, 0.0, q.id, True, None, False) == wire
    assert Cache().minimal_responses is False
    minimal = Cache(minimal_responses=True).respond_wire(key, wire, 0.0, q.id, True, None,
                                                         False)
    assert minimal is not None and len(minimal) < len(wire)
    assert wire.startswith(minimal[:6]) and minimal[6:12] == b"\x00\x01\x00\x00\x00\x00"


def test_the_cut_bytes_are_a_prefix_and_compression_survives() -> None:
    """Whole trailing sections are cut: the kept bytes are the upstream's own (less
    counts and OPT), so every compression pointer still points into them."""
    q = query("MX", edns=False)
    r = make_response(q)
    r.answer.append(rrset(NAME, 300, "MX", "10 mail.example.com."))
    r.authority.append(rrset("example.com.", 300, "NS", "ns1.example.com."))
    r.additional.append(rrset("mail.example.com.", 300, "A", "192.0.2.25"))
    wire = r.to_wire()
    got = Cache(minimal_responses=True).respond_wire(key_from_message(q), wire, 0.0, q.id,
                                                      True, None, False)
    assert got is not None
    assert got[12:] == wire[12:len(got)] and got[:6] == wire[:6]
    m = dns.message.from_wire(got)
    assert m.answer == r.answer and counts(m) == (1, 0, 0)


# -- the message path -----------------------------------------------------------------------


class Upstream:
    def __init__(self, response: dns.message.Message) -> None:
        self.response = response

    async def resolve(self, request: Request) -> dns.message.Message:
        self.response.id = request.message.id
        return self.response


def request(q: dns.message.Message) -> Request:
    return Request(message=q, transport=Transport.TLS, client=None, deadline=0.0)


@pytest.mark.parametrize("minimal", [True, False])
async def test_cache_stage_miss_and_hit_agree(minimal: bool) -> None:
    q = query()
    stage = CacheStage(Upstream(full(q)), Cache(minimal_responses=minimal), lambda: 0.0)
    miss = await stage.resolve(request(q))
    hit = await stage.resolve(request(q))
    assert counts(miss) == counts(hit) == ((1, 0, 0) if minimal else (1, 2, 2))


async def test_minimal_stage_for_caching_off() -> None:
    for q, want in ((query(), (1, 0, 0)), (query(do=True), (1, 0, 0)),
                    (query("AAAA"), (0, 1, 0))):
        answer = q.question[0].rdtype == dns.rdatatype.A
        r = full(q, answer=answer, authority=None if answer else [soa()])
        got = await MinimalStage(Upstream(r)).resolve(request(q))
        assert counts(got) == want


def test_minimise_matches_the_wire_cut() -> None:
    """The message path's rule and the wire path's give the same sections."""
    q = query()
    ns = make_response(query("NS"))
    ns.answer.append(rrset(NAME, 300, "NS", "ns1.example.com."))
    ns.additional.append(rrset("ns1.example.com.", 300, "A", "192.0.2.53"))
    cases = [(q, full(q)), (q, full(q, dns.rcode.NXDOMAIN, answer=False, authority=[soa()])),
             (q, full(q, answer=False, authority=[soa()])), (q, full(q, answer=False)),
             (q, full(q, dns.rcode.SERVFAIL, answer=False)), (query("NS"), ns),
             (query(do=True), full(query(do=True))),
             (query(do=True), full(query(do=True), answer=False, authority=[soa()]))]
    for asked, r in cases:
        wire_cut = served(asked, r)
        message = dns.message.from_wire(r.to_wire())
        minimise(asked, message)
        assert counts(wire_cut) == counts(message), r.rcode()
        assert (wire_cut.answer, wire_cut.authority, wire_cut.additional) == (
            message.answer, message.authority, message.additional)


# -- the setting ------------------------------------------------------------------------------


def test_setting_default_and_errors() -> None:
    from dnstls.stub_config import stub_config_from_data
    from dnstls.wiring import make_cache

    assert config.load().cache.minimal_responses is True
    assert make_cache(config.load().cache).minimal_responses is True
    off = config.load(overrides={"cache": {"minimal_responses": False}})
    assert make_cache(off.cache).minimal_responses is False
    with pytest.raises(ConfigError, match=r"^cache\.minimal_responses: expected true or false"):
        config.load(overrides={"cache": {"minimal_responses": "no"}})
    assert stub_config_from_data({}).cache.minimal_responses is True
    assert stub_config_from_data({"cache": {"minimal_responses": False}}
                                 ).cache.minimal_responses is False
    with pytest.raises(ConfigError, match=r"^cache\.minimal_responses"):
        stub_config_from_data({"cache": {"minimal_responses": 1}})
