"""The iterator's wire path (``Iterator.resolve_wire``, module docstring "The wire
path"): the same answers as the message path, asked with the same queries (an answer
the wire path does not take is read, never asked again), poison still dropped, and
:func:`wire_verdict` on compressed and hostile bytes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_iterate import (
    COM_IP,
    EXAMPLE2_IP,
    EXAMPLE_IP,
    EXNET_IP,
    make_iterator,
    resolve,
    texts,
    world,
)

from dnstls.proto.cachekey import KEY_DO
from dnstls.resolver.base import ResolveFailure
from dnstls.resolver.cache import Cache
from dnstls.resolver.iterate import (
    _NAME_FREE,
    _NAMED,
    MAX_TOTAL_SENDS,
    Iterator,
    _Delegation,
    _rdata_ok,
    wire_referral,
    wire_verdict,
)
from fakes.auth_network import AuthNetwork, FakeClock

CASES = [  # (name, type, taken by the wire path on its first full question)
    ("www.example.com.", "A", True),
    ("www.example.com.", "AAAA", True),
    ("WwW.Example.COM.", "A", True),
    ("nothere.example.com.", "A", True),  # NXDOMAIN
    ("www.example.com.", "TXT", True),  # NODATA
    ("example.com.", "SOA", True),
    ("example.com.", "NS", True),
    ("alias.example.com.", "A", False),  # CNAME inside the zone
    ("out.example.com.", "A", False),  # CNAME to another zone
    ("nx.example.com.", "A", False),  # CNAME to a name that does not exist
    ("x.dn.example.com.", "A", False),  # DNAME
    ("x.wild.example.com.", "A", True),  # a wildcard: without DO like any answer
    ("a.b.c.example.com.", "A", True),  # minimised first, then the full question
    ("example.com.", "DS", False),  # asked of the parent: message path
    ("www.example.net.", "A", True),
    ("www.example.com.", "ANY", False),
]


def question(name: str, rdtype: str) -> bytes:
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire.lower() + dns.rdatatype.from_text(rdtype).to_bytes(2, "big") + b"\x00\x01"


def key(name: str, rdtype: str, do: bool) -> bytes:
    return question(name, rdtype) + bytes([KEY_DO if do else 0])


async def by_wire(it: Iterator, clock: FakeClock, name: str, rdtype: str = "A", *,
                  do: bool = False, check: bool = True) -> dns.message.Message:
    cache = Cache()
    checked: list[bool] = []

    def check_wire(answer: bytes) -> bool:
        ok = cache.check_wire(key(name, rdtype, do), answer)
        checked.append(ok)
        return ok

    wire = await it.resolve_wire(question(name, rdtype), flags=0x0100, payload=1232, do=do,
                                 deadline=clock() + 10, check=check_wire if check else None)
    # what the cache and the WireForwarder take from it
    assert cache.respond_wire(key(name, rdtype, do), wire, clock(), 7, True) is not None
    assert all(checked)
    response = dns.message.from_wire(wire)
    assert response.id == 0 and response.flags & dns.flags.QR and response.flags & dns.flags.RA
    assert not response.flags & (dns.flags.AA | dns.flags.AD | dns.flags.TC)
    assert response.question[0].name == dns.name.from_text(name.lower())
    return response


def normal(questions: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The questions asked, example.com's two servers as one (the order of the NS
    records in a referral is random: so is the server asked first)."""
    return [(EXAMPLE_IP if a == EXAMPLE2_IP else a, q.lower(), t) for a, q, t in questions]


def lines(section: list[dns.rrset.RRset]) -> list[str]:
    """Every record of ``section`` as text, in lower case (the wire path asks with the
    cache key's name; the cache renders the client's case), sorted."""
    return sorted(line.lower() for rrset in section for line in rrset.to_text().splitlines())


def same(a: dns.message.Message, b: dns.message.Message) -> None:
    assert a.rcode() == b.rcode()
    assert lines(a.answer) == lines(b.answer)
    assert lines(a.authority) == lines(b.authority)
    assert b.additional == []


def as_nsd(query: dns.message.Message, response: dns.message.Message,
           ) -> dns.message.Message:
    """Authoritative answers as nsd gives them: the zone's NS RRset in the authority
    section (after the SOA of a negative answer) and the servers' addresses as
    additional records."""
    if response.flags & dns.flags.AA:
        response.authority.append(dns.rrset.from_text(
            "example.com.", 3600, "IN", "NS", "ns1.example.com.", "ns2.example.com."))
        response.additional.append(dns.rrset.from_text("ns1.example.com.", 3600, "IN",
                                                       "A", EXAMPLE_IP))
    return response


def world_as(nsd: bool) -> tuple[FakeClock, AuthNetwork]:
    clock, net, servers = world()
    if nsd:
        servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = as_nsd
    return clock, net


@pytest.mark.parametrize("nsd", [False, True])
@pytest.mark.parametrize("do", [False, True])
@pytest.mark.parametrize(("name", "rdtype", "taken"), CASES)
async def test_wire_path_answers_as_the_message_path_with_the_same_queries(
        name: str, rdtype: str, taken: bool, do: bool, nsd: bool) -> None:
    clock, net = world_as(nsd)
    it = make_iterator(net, clock)
    expected = await resolve(it, clock, name, rdtype, do=do)
    asked = net.questions()
    assert net.wire_queries == 0

    clock, net = world_as(nsd)
    it = make_iterator(net, clock)
    got = await by_wire(it, clock, name, rdtype, do=do)
    same(expected, got)
    assert normal(net.questions()) == normal(asked)  # nothing asked twice, nothing more
    fast = taken and not (do and "wild" in name)  # DO: the wildcard proof is read
    assert (it.counts["wire_answers"] == 1) == fast
    if taken:  # only the priming asked through exchange: referrals read on the wire too
        assert net.message_queries == 1
        assert it.counts["referrals"] >= 1
    assert (net.wire_queries >= 1) == (rdtype not in ("DS", "ANY"))
    if name.lower().endswith("example.com.") and rdtype != "DS":
        # a second question in the same zone: delegation cached, one exchange
        before = len(net.log)
        again = await by_wire(it, clock, "www.example.com.", "A", do=do)
        assert len(net.log) == before + 1 and again.answer


async def test_wire_path_without_exchange_wire_uses_the_message_path() -> None:
    clock, net, _ = world()

    class Plain:  # an Authority with exchange only (dnstap's TappedAuthority hides it)
        exchange_wire = None

        async def exchange(self, *args: object, **kwargs: object) -> dns.message.Message:
            return await net.exchange(*args, **kwargs)  # type: ignore[arg-type]

    it = Iterator(Plain(), make_iterator(net, clock).hints, clock)  # type: ignore[arg-type]
    response = await by_wire(it, clock, "www.example.com.")
    assert texts(response.answer) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert net.wire_queries == 0 and net.message_queries > 0


async def test_other_class_refused_and_failures_raise() -> None:
    clock, net, servers = world()
    it = make_iterator(net, clock)
    with pytest.raises(ResolveFailure) as refused:
        await it.resolve_wire(question("www.example.com.", "A")[:-2] + b"\x00\x03", flags=0,
                              payload=0, do=False, deadline=clock() + 5)
    assert refused.value.rcode == dns.rcode.REFUSED
    servers[EXAMPLE_IP].mode = servers[EXAMPLE2_IP].mode = "refused"
    with pytest.raises(ResolveFailure) as failed:
        await it.resolve_wire(question("www.example.com.", "A"), flags=0, payload=0,
                              do=False, deadline=clock() + 5)
    assert failed.value.rcode == dns.rcode.SERVFAIL
    assert it.statistics()["failures"] == 1 and it.statistics()["lame"] == 2


@pytest.mark.parametrize("mode", ["refused", "servfail", "noaa", "formerr_edns", "tc",
                                  "upward", "timeout"])
async def test_misbehaving_server_is_judged_as_on_the_message_path(mode: str) -> None:
    results = []
    for wire in (False, True):
        clock, net, servers = world()
        servers[EXAMPLE_IP].mode = servers[EXAMPLE2_IP].mode = mode
        it = make_iterator(net, clock)
        outcome: object
        try:
            if wire:
                outcome = lines((await by_wire(it, clock, "www.example.com.")).answer)
            else:
                outcome = lines((await resolve(it, clock, "www.example.com.")).answer)
        except ResolveFailure as failure:
            outcome = (failure.rcode, failure.ede)
        results.append((outcome, normal(net.questions()),
                        [(s.tcp, s.edns) for s in net.log], it.statistics()))
    assert results[0][:3] == results[1][:3]
    assert results[1][3]["wire_answers"] == (mode in ("tc", "formerr_edns"))
    for counter in ("lame", "tcp_fallbacks", "edns_fallbacks", "timeouts", "sends"):
        assert results[0][3][counter] == results[1][3][counter], counter


async def test_poison_never_reaches_the_answer_or_the_address_cache() -> None:
    clock, net, servers = world()

    def poison(query: dns.message.Message, response: dns.message.Message,
               ) -> dns.message.Message:
        response.answer.append(dns.rrset.from_text("www.victim.org.", 300, "IN", "A",
                                                   "6.6.6.6"))
        response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN",
                                                   "NS", "ns.evil.org."))
        response.authority.append(dns.rrset.from_text("example.net.", 300, "IN", "NS",
                                                      "ns.evil.org."))
        response.additional.append(dns.rrset.from_text("ns1.example.net.", 300, "IN",
                                                       "A", "6.6.6.6"))
        response.additional.append(dns.rrset.from_text("ns.evil.org.", 300, "IN",
                                                       "A", "6.6.6.6"))
        return response

    def additional_only(query: dns.message.Message, response: dns.message.Message,
                        ) -> dns.message.Message:
        response.additional.append(dns.rrset.from_text("ns1.example.net.", 300, "IN",
                                                       "A", "6.6.6.6"))
        # glue for glueless.com.'s NS name from com.'s servers: out of their bailiwick
        response.additional.append(dns.rrset.from_text("ns.example.net.", 300, "IN",
                                                       "A", "6.6.6.6"))
        response.authority.append(dns.rrset.from_text("example.net.", 300, "IN", "NS",
                                                      "ns.evil.org."))
        return response

    servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = poison
    servers[COM_IP].hook = additional_only
    it = make_iterator(net, clock)
    for name, rdtype in (("www.example.com.", "A"), ("out.example.com.", "A"),
                         ("nothere.example.com.", "A"), ("www.example.com.", "TXT")):
        response = await by_wire(it, clock, name, rdtype)
        assert "6.6.6.6" not in str(texts(response.answer) + texts(response.authority))
        assert "evil" not in str(texts(response.answer) + texts(response.authority))
    # the poisoned answers were read by the message path (owners, types): never taken
    assert it.counts["wire_answers"] == 0
    # example.com's own answers (one tidy, one poisoned in additional only)
    servers[EXAMPLE_IP].hook = servers[EXAMPLE2_IP].hook = additional_only
    response = await by_wire(it, clock, "www.example.com.", "AAAA")
    assert texts(response.answer) == ["www.example.com. 300 IN AAAA 2001:db8::1"]
    assert it.counts["wire_answers"] == 1
    await by_wire(it, clock, "www.example.net.", "A")
    glueless = await by_wire(it, clock, "www.glueless.com.", "A")
    assert texts(glueless.answer) == ["www.glueless.com. 300 IN A 192.0.2.44"]
    assert all(s.address[0] != "6.6.6.6" for s in net.log)
    assert (EXNET_IP, "www.example.net.", "A") in net.questions()
    assert (EXNET_IP, "ns.example.net.", "A") in net.questions()  # resolved, not glue
    assert {str(n): a for n, (a, _) in it._addresses.items()} == {
        "ns.example.net.": ["10.0.5.1"]}
    assert "6.6.6.6" not in str([dp.servers for dp in it._delegations.values()])


# ---------------------------------------------------------------------- wire_verdict

QNAME = b"\x03www\x07example\x03com\x00"
ZONE = b"\x07example\x03com\x00"


def reply(rdtype: str, answer: list[str], authority: list[str] = (),  # type: ignore[assignment]
          additional: list[str] = (), rcode: int = 0, aa: bool = True,  # type: ignore[assignment]
          do: bool = False) -> bytes:
    query = dns.message.make_query("www.example.com.", rdtype, use_edns=0, want_dnssec=do)
    response = dns.message.make_response(query)
    if aa:
        response.flags |= dns.flags.AA
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    for section, texts_ in ((response.answer, answer), (response.authority, authority),
                            (response.additional, additional)):
        for text in texts_:
            section.append(dns.rrset.from_text(*text.split(maxsplit=4)))
    return response.to_wire()


def test_compressed_answers_are_sliced_and_read_the_same() -> None:
    wire = reply("MX", ["www.example.com. 300 IN MX 10 mail.www.example.com.",
                        "www.example.com. 300 IN MX 20 mx.example.com."],
                 ["example.com. 300 IN NS ns1.example.com."],
                 ["mail.www.example.com. 300 IN A 192.0.2.1"])
    assert wire.count(b"\xc0\x0c") >= 3  # owners and the MX targets point back
    out = wire_verdict(wire, QNAME, dns.rdatatype.MX, ZONE, False)
    assert out is not None and len(out) < len(wire)
    parsed = dns.message.from_wire(out)
    assert sorted(texts(parsed.answer)[0].splitlines()) == [
        "www.example.com. 300 IN MX 10 mail.www.example.com.",
        "www.example.com. 300 IN MX 20 mx.example.com."]
    assert parsed.authority == [] and parsed.additional == [] and parsed.edns < 0
    # NXDOMAIN: the SOA's names compressed against the question
    wire = reply("A", [], ["example.com. 300 IN SOA ns1.example.com. h.example.com. 1 2 3 4 5",
                           "example.com. 300 IN NS ns1.example.com."], rcode=3)
    out = wire_verdict(wire, QNAME, dns.rdatatype.A, ZONE, False)
    assert out is not None
    parsed = dns.message.from_wire(out)
    assert parsed.rcode() == dns.rcode.NXDOMAIN
    assert texts(parsed.authority) == [
        "example.com. 300 IN SOA ns1.example.com. h.example.com. 1 2 3 4 5"]


def test_forward_pointers_and_odd_answers_are_left_to_the_message_path() -> None:
    good = reply("CNAME", ["www.example.com. 300 IN CNAME x.example.com."],
                 additional=["x.example.com. 300 IN A 192.0.2.1"])
    assert wire_verdict(good, QNAME, dns.rdatatype.CNAME, ZONE, False) is not None
    # the CNAME's target made a pointer forward, into the additional section
    target = good.index(b"\x01x")
    additional = good.rindex(b"\x01x")
    forward = bytearray(good)
    forward[target:target + 4] = b"\x01x" + (0xC000 | additional).to_bytes(2, "big")
    cases = {
        "forward pointer": bytes(forward),
        "not AA": reply("A", ["www.example.com. 300 IN A 192.0.2.1"], aa=False),
        "SERVFAIL": reply("A", [], rcode=2),
        "another owner": reply("A", ["www.example.com. 300 IN A 192.0.2.1",
                                     "x.example.com. 300 IN A 192.0.2.9"]),
        "another type": reply("A", ["www.example.com. 300 IN CNAME x.example.com.",
                                    "x.example.com. 300 IN A 192.0.2.1"]),
        "split TTLs": reply("A", ["www.example.com. 300 IN A 192.0.2.1",
                                  "www.example.com. 200 IN A 192.0.2.2"]),
        "twice the same": reply("A", ["www.example.com. 300 IN A 192.0.2.1"]),
        "SOA of another zone": reply("A", [], ["com. 300 IN SOA a. b. 1 2 3 4 5"], rcode=3),
        "no SOA": reply("A", [], ["example.com. 300 IN NS ns1.example.com."]),
        "RRSIG without DO": reply("A", [
            "www.example.com. 300 IN A 192.0.2.1",
            "www.example.com. 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 1 "
            "example.com. AAAA"]),
    }
    twice = bytearray(cases["twice the same"])
    record = twice[-(16 + 11):-11]  # the A record (before the OPT record)
    twice[-11:-11] = record
    twice[7] = 2
    cases["twice the same"] = bytes(twice)
    for why, wire in cases.items():
        qtype = dns.rdatatype.CNAME if why == "forward pointer" else dns.rdatatype.A
        assert wire_verdict(wire, QNAME, qtype, ZONE, False) is None, why
    # with DO, RRSIGs after their RRset are kept; a proof in authority is the message path's
    signed = reply("A", [
        "www.example.com. 300 IN A 192.0.2.1",
        "www.example.com. 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 1 "
        "example.com. AAAA"], do=True)
    assert wire_verdict(signed, QNAME, dns.rdatatype.A, ZONE, True) is not None
    proof = reply("A", ["www.example.com. 300 IN A 192.0.2.1"],
                  ["x.example.com. 300 IN NSEC z.example.com. A"], do=True)
    assert wire_verdict(proof, QNAME, dns.rdatatype.A, ZONE, True) is None


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1,
                max_size=6), st.booleans())
def test_mutated_bytes_taken_by_the_verdict_always_parse(
        mutations: list[tuple[int, int]], negative: bool) -> None:
    if negative:
        wire = reply("A", [], ["example.com. 300 IN SOA ns1.example.com. h.example.com. "
                               "1 2 3 4 5", "example.com. 300 IN NS ns1.example.com."],
                     ["ns1.example.com. 300 IN A 192.0.2.53"], rcode=3)
    else:
        wire = reply("A", ["www.example.com. 300 IN A 192.0.2.1",
                           "www.example.com. 300 IN A 192.0.2.2"],
                     ["example.com. 300 IN NS ns1.example.com."],
                     ["ns1.example.com. 300 IN A 192.0.2.53"])
    data = bytearray(wire)
    for offset, value in mutations:
        if offset < len(data):
            data[offset] = value
    out = wire_verdict(bytes(data), QNAME, dns.rdatatype.A, ZONE, False)
    if out is not None:
        parsed = dns.message.from_wire(out)  # never a broken message
        original = dns.message.from_wire(bytes(data))  # what the message path reads
        assert texts(parsed.answer) == texts(original.answer)
        assert Cache().check_wire(QNAME + b"\x00\x01\x00\x01\x00", out)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1,
                max_size=8), st.sampled_from(["www.example.com.", "out.example.com.",
                                              "nothere.example.com.", "example.com."]),
       st.booleans())
async def test_mutated_answers_never_crash_the_wire_path(
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
    rdtype = "DS" if name == "example.com." else "A"
    try:
        wire = await it.resolve_wire(question(name, rdtype), flags=0, payload=0, do=do,
                                     deadline=clock() + 10)
    except ResolveFailure as failure:
        assert failure.rcode == dns.rcode.SERVFAIL
    else:
        response = dns.message.from_wire(wire)
        assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    assert len(net.log) <= MAX_TOTAL_SENDS


async def test_network_is_the_fake() -> None:
    assert isinstance(world()[1], AuthNetwork)


def referral_wire() -> bytes:
    query = dns.message.make_query("example.com.", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.authority.append(dns.rrset.from_text(
        "example.com.", 172800, "IN", "NS", "ns1.example.com.", "ns2.example.com.",
        "ns.example.net."))
    for text in ("ns1.example.com. 3600 IN A 192.0.2.53",
                 "ns1.example.com. 3600 IN AAAA 2001:db8::53",
                 "ns2.example.com. 7200 IN A 192.0.2.54",
                 "ns.example.net. 60 IN A 6.6.6.6",  # out of com.'s bailiwick
                 "www.example.com. 60 IN A 6.6.6.6"):  # not an NS name
        response.additional.append(dns.rrset.from_text(*text.split(maxsplit=4)))
    return response.to_wire()


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 260), st.integers(0, 255)), max_size=4))
def test_a_referral_read_on_the_wire_is_the_delegation_the_message_path_makes(
        mutations: list[tuple[int, int]]) -> None:
    data = bytearray(referral_wire())
    for offset, value in mutations:
        if offset < len(data):
            data[offset] = value
    wire = bytes(data)
    sname = dns.name.from_text("example.com.")
    com = dns.name.from_text("com.")
    referral = wire_referral(wire, ZONE, dns.rdatatype.A, b"\x03com\x00")
    if not mutations:
        assert referral is not None
        assert referral.servers == {b"\x03ns1\x07example\x03com\x00": ["192.0.2.53",
                                                                       "2001:db8::53"],
                                    b"\x03ns2\x07example\x03com\x00": ["192.0.2.54"],
                                    b"\x02ns\x07example\x03net\x00": []}
        assert referral.ttl == 3600
    if referral is None:
        return
    message = dns.message.from_wire(wire)  # what the message path reads
    clock, net, _ = world()
    it = make_iterator(net, clock)
    assert it._classify(message, com, sname, dns.rdatatype.A, ds=False) == "referral"
    expected = it._referral(_Delegation(com, {}, float("inf")), message, sname)
    assert (expected.zone.to_wire() or b"").lower() == referral.child
    assert {(n.to_wire() or b"").lower(): a for n, a in expected.servers.items()} == \
        referral.servers
    assert expected.expires - clock() == referral.ttl


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(sorted({*_NAME_FREE, *_NAMED})), st.binary(max_size=60))
def test_rdata_the_wire_path_relays_is_rdata_dnspython_reads(rrtype: int,
                                                             rdata: bytes) -> None:
    """:func:`_rdata_ok` never takes what dnspython (the message path) would refuse:
    random RDATA after a question whose name compression pointers may reach."""
    prefix = b"\x00" * 12 + QNAME + b"\x00\x01\x00\x01"
    wire = prefix + rdata
    if _rdata_ok(wire, rrtype, len(prefix), len(wire)):
        dns.rdata.from_wire(dns.rdataclass.IN, rrtype, wire, len(prefix), len(rdata))


def test_rdata_dnspython_refuses_is_left_to_the_message_path() -> None:
    prefix = b"\x00" * 12 + QNAME + b"\x00\x01\x00\x01"
    start = len(prefix)
    for rrtype, rdata in ((47, b"\x00" + b"\x00\x02\x40\x00"),  # NSEC: trailing zero octet
                          (43, b"\x00\x01\x08\x03" + b"\xab" * 20),  # DS: GOST, 20 bytes
                          (1, b"\x01\x02\x03"), (28, b"\x00" * 4),
                          (5, b"\xc0\x40"),  # a CNAME pointing forward
                          (6, b"\x00\x00" + b"\x00" * 19)):  # SOA one byte short
        assert not _rdata_ok(prefix + rdata, rrtype, start, start + len(rdata)), rrtype
