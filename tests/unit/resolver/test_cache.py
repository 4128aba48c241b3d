"""The answer cache and its stage: TTLs, negative and SERVFAIL caching, bounds, fast path."""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import key_from_message, key_from_wire, read_query
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.cache import STALE_TTL, Cache, CacheStage

NAME = "www.example.com."


def query(name: str = NAME, rdtype: str = "A", *, qid: int = 1, **kwargs: object,
          ) -> dns.message.QueryMessage:
    return dns.message.make_query(name, rdtype, id=qid, **kwargs)  # type: ignore[arg-type]


def rrset(name: str, ttl: int, rdtype: str, *rdatas: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas)


def positive(q: dns.message.Message, ttl: int = 300, *extra: dns.rrset.RRset,
             ) -> dns.message.Message:
    r = make_response(q)
    r.answer.append(rrset(q.question[0].name.to_text(), ttl, "A", "192.0.2.1", "192.0.2.2"))
    r.answer.extend(extra)
    return r


def soa(ttl: int = 3600, minimum: int = 300) -> dns.rrset.RRset:
    return rrset("example.com.", ttl, "SOA",
                 f"ns.example.com. host.example.com. 1 7200 900 1209600 {minimum}")


def negative(q: dns.message.Message, rcode: int = dns.rcode.NXDOMAIN, *, ttl: int = 3600,
             minimum: int = 300) -> dns.message.Message:
    r = make_response(q)
    r.set_rcode(rcode)
    r.authority.append(soa(ttl, minimum))
    return r


def ttls(m: dns.message.Message) -> list[int]:
    return [rr.ttl for section in (m.answer, m.authority, m.additional) for rr in section]


def hit(cache: Cache, q: dns.message.Message, now: float) -> dns.message.Message | None:
    wire = cache.lookup_wire(key_from_message(q), q.id, now, rd=bool(q.flags & dns.flags.RD),
                             qname=q.question[0].name.to_wire(), edns=q.edns >= 0)
    return None if wire is None else dns.message.from_wire(wire)


def describe(m: dns.message.Message) -> tuple[object, ...]:
    """Everything a client sees, with owner names lower-cased except the question's."""
    sections = [[(rr.name.to_text().lower(), rr.rdtype, rr.rdclass, rr.ttl,
                  sorted(rd.to_text() for rd in rr)) for rr in section]
                for section in (m.answer, m.authority, m.additional)]
    edns = (m.edns, m.ednsflags, m.payload, [(int(o.otype), o.to_wire()) for o in m.options]
            ) if m.edns >= 0 else None
    return (m.id, m.flags, m.rcode(), m.question[0].name.to_wire(), m.question[0].rdtype,
            m.question[0].rdclass, sections, edns)


def expected(response: dns.message.Message, q: dns.message.Message, age: int,
             *, options: Iterable[dns.edns.Option] = ()) -> dns.message.Message:
    """What the slow way would serve: the response with q's ID/case/RD, TTLs aged."""
    e = dns.message.from_wire(response.to_wire())
    e.id = q.id
    e.flags = (e.flags & ~dns.flags.RD) | (q.flags & dns.flags.RD)
    e.question = [dns.rrset.RRset(q.question[0].name, q.question[0].rdclass,
                                  q.question[0].rdtype)]
    for section in (e.answer, e.authority, e.additional):
        for rr in section:
            rr.ttl = max(0, rr.ttl - age)
    if q.edns >= 0:
        e.use_edns(0, q.ednsflags & dns.flags.DO, 1232, options=list(options))
    else:
        e.use_edns(False)
    return e


# -- TTLs ---------------------------------------------------------------------------------


def test_ttls_count_down_and_entry_expires() -> None:
    cache = Cache()
    q = query()
    assert cache.insert(key_from_message(q), positive(q, 300), 100.0)
    first = hit(cache, q, 100.0)
    assert first is not None and ttls(first) == [300]
    later = hit(cache, q, 150.7)
    assert later is not None and ttls(later) == [250]
    last = hit(cache, q, 399.9)
    assert last is not None and ttls(last) == [1]
    assert hit(cache, q, 400.0) is None
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (3, 1, 0, 0)


def test_each_record_counts_down_and_lifetime_is_the_smallest_ttl() -> None:
    cache = Cache()
    q = query()
    r = positive(q, 600)
    r.additional.append(rrset("ns.example.com.", 60, "A", "192.0.2.53"))
    cache.insert(key_from_message(q), r, 0.0)
    served = hit(cache, q, 59.0)
    assert served is not None and ttls(served) == [541, 1]
    assert hit(cache, q, 60.0) is None


def test_min_and_max_ttl_clamp_positive_answers() -> None:
    cache = Cache(min_ttl=60, max_ttl=3600)
    short, long_ = query("short.example."), query("long.example.")
    cache.insert(key_from_message(short), positive(short, 5), 0.0)
    cache.insert(key_from_message(long_), positive(long_, 10**6), 0.0)
    s, lg = hit(cache, short, 0.0), hit(cache, long_, 0.0)
    assert s is not None and ttls(s) == [60]
    assert lg is not None and ttls(lg) == [3600]
    assert hit(cache, short, 59.0) is not None and hit(cache, short, 60.0) is None
    assert hit(cache, long_, 3600.0) is None


def test_zero_ttl_is_not_cached() -> None:
    cache = Cache()
    q = query()
    assert not cache.insert(key_from_message(q), positive(q, 0), 0.0)
    assert len(cache) == 0


def test_settings_are_validated() -> None:
    for bad in ({"max_entries": 0}, {"min_ttl": 10, "max_ttl": 5}, {"servfail_ttl": 0.5},
                {"servfail_ttl": 6}, {"max_negative_ttl": -1}):
        with pytest.raises(ValueError):
            Cache(**bad)  # type: ignore[arg-type]


# -- negative answers and SERVFAIL ---------------------------------------------------------------


def test_nxdomain_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    cache = Cache()
    q = query("nope.example.com.")
    assert cache.insert(key_from_message(q), negative(q, ttl=3600, minimum=300), 0.0)
    served = hit(cache, q, 100.0)
    assert served is not None and served.rcode() == dns.rcode.NXDOMAIN
    assert ttls(served) == [200]  # the SOA's TTL is the negative TTL, counting down
    assert hit(cache, q, 300.0) is None
    cache.insert(key_from_message(q), negative(q, ttl=120, minimum=300), 0.0)
    assert hit(cache, q, 119.0) is not None and hit(cache, q, 120.0) is None


def test_nodata_is_cached_negatively_and_capped() -> None:
    cache = Cache(max_negative_ttl=60)
    q = query(rdtype="AAAA")
    r = negative(q, dns.rcode.NOERROR, ttl=86400, minimum=86400)
    assert cache.insert(key_from_message(q), r, 0.0)
    served = hit(cache, q, 0.0)
    assert served is not None and served.rcode() == dns.rcode.NOERROR
    assert not served.answer and ttls(served) == [60]
    assert hit(cache, q, 60.0) is None


def test_nodata_after_cname_uses_the_negative_ttl() -> None:
    cache = Cache()
    q = query(rdtype="AAAA")
    r = negative(q, dns.rcode.NOERROR, ttl=3600, minimum=30)
    r.answer.append(rrset(NAME, 3600, "CNAME", "target.example.com."))
    cache.insert(key_from_message(q), r, 0.0)
    served = hit(cache, q, 0.0)
    assert served is not None and ttls(served) == [30, 30]


def test_negative_answer_without_soa_is_not_cached() -> None:
    cache = Cache()
    q = query()
    r = make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    assert not cache.insert(key_from_message(q), r, 0.0)
    assert not cache.insert(key_from_message(q), make_response(q), 0.0)  # bare NODATA


def test_cname_chain_without_soa_is_positive() -> None:
    cache = Cache(max_ttl=100)
    q = query(rdtype="AAAA")
    r = make_response(q)
    r.answer.append(rrset(NAME, 3600, "CNAME", "target.example.com."))
    assert cache.insert(key_from_message(q), r, 0.0)
    served = hit(cache, q, 0.0)
    assert served is not None and ttls(served) == [100]


@pytest.mark.parametrize("minimal", [False, True])
def test_a_referral_is_cached_with_its_ttls(minimal: bool) -> None:
    """An upstream's delegation (NOERROR, NS in authority, no SOA) keeps its records'
    TTLs and is cached for the smallest, as Unbound relays it (it was relayed with every
    TTL 0 and asked upstream again for every query)."""
    cache = Cache(minimal_responses=minimal)
    q = query(name="host.sub.example.com.")
    r = make_response(q)
    r.authority.append(rrset("sub.example.com.", 300, "NS", "ns.sub.example.com."))
    r.additional.append(rrset("ns.sub.example.com.", 600, "A", "192.0.2.53"))
    assert cache.insert(key_from_message(q), r, 0.0)
    served = hit(cache, q, 10.0)
    assert served is not None and served.rcode() == dns.rcode.NOERROR
    assert [s.ttl for s in served.authority] == [290]
    assert [s.ttl for s in served.additional] == [590]  # the glue stays
    assert hit(cache, q, 300.0) is None


def test_servfail_response_is_cached_briefly() -> None:
    cache = Cache()
    q = query()
    r = make_response(q)
    r.set_rcode(dns.rcode.SERVFAIL)
    assert cache.insert(key_from_message(q), r, 10.0)
    served = hit(cache, q, 11.9)
    assert served is not None and served.rcode() == dns.rcode.SERVFAIL
    assert hit(cache, q, 12.0) is None


@pytest.mark.parametrize("why", ["tc", "ede3", "ede19", "mismatch", "refused", "qtype",
                                 "no-question", "tsig-like"])
def test_uncacheable_responses(why: str) -> None:
    cache = Cache()
    q = query(use_edns=0)
    r = positive(q)
    key = key_from_message(q)
    if why == "tc":
        r.flags |= dns.flags.TC
    elif why in ("ede3", "ede19"):
        r.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(3 if why == "ede3" else 19)])
    elif why == "mismatch":
        r = positive(query("other.example.com."))
    elif why == "qtype":
        r = positive(query(rdtype="AAAA"))
    elif why == "refused":
        r.set_rcode(dns.rcode.REFUSED)
    elif why == "no-question":
        r.question = []
    else:
        wire = r.to_wire()
        tsig = b"\x00" + struct.pack("!HHIH", 250, 255, 0, 0)
        ar = struct.unpack_from("!H", wire, 10)[0]
        bad = wire[:10] + struct.pack("!H", ar + 1) + wire[12:] + tsig
        assert not cache.insert_wire(key, bad, 0.0)
        return
    assert not cache.insert(key, r, 0.0)
    assert len(cache) == 0


def test_malformed_wire_is_refused() -> None:
    cache = Cache()
    q = query(use_edns=0)
    key = key_from_message(q)
    r = positive(q)
    r.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(18)])
    wire = r.to_wire()
    for cut in range(len(wire)):
        assert not cache.insert_wire(key, wire[:cut], 0.0), cut
    assert not cache.insert_wire(key, wire + b"\x00", 0.0)
    assert not cache.insert_wire(key, q.to_wire(), 0.0)  # a query, not a response
    assert cache.insert_wire(key, wire, 0.0)


def test_ede_other_than_stale_is_kept_and_per_transport_options_are_not() -> None:
    cache = Cache()
    q = query(use_edns=0, pad=128)
    r = positive(q)
    r.use_edns(0, 0, 4096, options=[
        dns.edns.EDEOption(18, "prohibited"),
        dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"\x00\x64"),
        dns.edns.CookieOption(b"\x01" * 8, b"\x02" * 8),
        dns.edns.ECSOption("192.0.2.0", 24, 24)], pad=468)
    cache.insert(key_from_message(q), r, 0.0)
    served = hit(cache, q, 0.0)
    assert served is not None
    assert [(o.otype, o.to_wire()) for o in served.options] == [
        (dns.edns.OptionType.EDE, dns.edns.EDEOption(18, "prohibited").to_wire())]
    assert served.payload == 1232


# -- the fast path equals the slow path ----------------------------------------------------------


def test_fast_path_echoes_id_case_rd_and_omits_opt_without_edns() -> None:
    cache = Cache()
    first = query("www.example.com.", use_edns=0, want_dnssec=False)
    response = positive(first, 300, rrset("www.example.com.", 300, "RRSIG",
                                          "A 8 3 300 20300101000000 20200101000000 1 "
                                          "example.com. AAAA"))
    cache.insert(key_from_message(first), response, 0.0)
    again = query("WwW.ExAmPlE.cOm.", qid=0xBEEF, flags=0)  # no EDNS, RD clear
    served = hit(cache, again, 42.0)
    assert served is not None
    assert describe(served) == describe(expected(response, again, 42))
    assert served.question[0].name.to_wire() == b"\x03WwW\x07ExAmPlE\x03cOm\x00"
    assert served.edns < 0 and not served.flags & dns.flags.RD and served.id == 0xBEEF
    # The RRSIG's original TTL (in its RDATA) is not touched.
    assert served.answer[1][0].original_ttl == 300


def test_fast_path_with_keepalive_and_padding() -> None:
    cache = Cache()
    q = query(use_edns=0, want_dnssec=True, pad=128)
    response = positive(q)
    cache.insert(key_from_message(q), response, 0.0)
    keepalive = dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"\x00\x64")
    wire = cache.lookup_wire(key_from_message(q), 7, 3.0,
                             options=struct.pack("!HH", 11, 2) + b"\x00\x64", pad_block=468)
    assert wire is not None and len(wire) % 468 == 0
    served = dns.message.from_wire(wire)
    assert served.ednsflags & dns.flags.DO
    assert [o.otype for o in served.options] == [dns.edns.OptionType.KEEPALIVE,
                                                 dns.edns.OptionType.PADDING]
    # Apart from padding, the same as the slow way.
    served.use_edns(0, served.ednsflags, served.payload, options=served.options[:1])
    q.id = 7
    assert describe(served) == describe(expected(response, q, 3, options=[keepalive]))


def test_memoised_rendering_follows_each_query_shape_and_second() -> None:
    """lookup_wire keeps one rendering per entry; every hit must still answer its own
    query (EDNS or not, keepalive, padding, RD, letter case) with TTLs of its second."""
    cache = Cache()
    first = query(use_edns=0)
    key = key_from_message(first)
    cache.insert(key, positive(first, 300), 0.0)
    keepalive = struct.pack("!HH", 11, 2) + b"\x00\x64"
    shapes = [(False, b"", 0), (True, b"", 0), (True, keepalive, 0), (True, b"", 468),
              (True, keepalive, 468), (False, b"", 468), (True, b"", 128)]
    names = (b"\x03www\x07example\x03com\x00", b"\x03WwW\x07EXAMPLE\x03cOm\x00")
    for now in (0.0, 0.5, 1.0, 1.2, 7.9, 7.95, 299.5):
        for edns, options, pad in shapes + shapes[::-1]:
            for qid, rd, qname in ((0x1234, True, names[0]), (7, False, names[1])):
                got = cache.lookup_wire(key, qid, now, rd=rd, qname=qname, edns=edns,
                                        options=options, pad_block=pad)
                plain = cache.lookup(key, qid, now, rd=rd, qname=qname, edns=edns,
                                     options=options, pad_block=pad)
                assert plain is not None and got == plain.wire  # the unmemoised render
                served = dns.message.from_wire(got)
                assert served.id == qid and bool(served.flags & dns.flags.RD) == rd
                assert served.question[0].name.to_wire() == qname
                assert ttls(served) == [300 - int(now)]
                assert (served.edns >= 0) == edns
                if edns:
                    assert len(got) % pad == 0 if pad else len(got) < 128
                    assert (dns.edns.OptionType.KEEPALIVE in
                            [o.otype for o in served.options]) == bool(options)


def test_fast_path_from_raw_query_bytes() -> None:
    """The listener's use: key and facts from the raw query, answer from the cache."""
    cache = Cache()
    first = query(use_edns=0)
    response = positive(first)
    cache.insert(key_from_message(first), response, 0.0)
    raw = query("WWW.example.COM.", qid=99, use_edns=0, pad=128).to_wire()
    facts = read_query(raw)
    assert facts is not None and key_from_wire(raw) == facts.key
    wire = cache.lookup_wire(facts.key, facts.id, 10.0, rd=facts.rd, qname=facts.qname,
                             edns=facts.edns)
    assert wire is not None
    assert describe(dns.message.from_wire(wire)) == describe(
        expected(response, dns.message.from_wire(raw), 10))


names = st.lists(st.text("abcdefghijXYZ-", min_size=1, max_size=12), min_size=1, max_size=4)


@settings(max_examples=150)
@given(names, st.lists(st.integers(1, 10**6), min_size=1, max_size=3), st.integers(0, 10**6),
       st.booleans(), st.booleans(), st.booleans(), st.integers(0, 0xFFFF), st.data())
def test_fast_path_equals_slow_path(labels: list[str], answer_ttls: list[int], age: int,
                                    use_edns: bool, do: bool, rd: bool, qid: int,
                                    data: st.DataObject) -> None:
    name = ".".join(labels) + "."
    first = query(name.lower(), use_edns=0 if use_edns or do else None, want_dnssec=do)
    response = make_response(first)
    for i, ttl in enumerate(answer_ttls):
        response.answer.append(rrset(name.lower(), ttl, "A", f"192.0.2.{i}"))
    response.authority.append(rrset("example.", 3600, "NS", "ns.example."))
    cache = Cache(max_ttl=10**6)
    assert cache.insert(key_from_message(first), response, 1000.0)
    cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
    again = query(cased, qid=qid, use_edns=0 if use_edns or do else None, want_dnssec=do,
                  flags=dns.flags.RD if rd else 0)
    served = hit(cache, again, 1000.0 + age)
    if age >= min([*answer_ttls, 3600]):
        assert served is None
        return
    assert served is not None
    assert describe(served) == describe(expected(response, again, age))


# -- bounds and LRU ---------------------------------------------------------------------------


def response_wire(i: int, template: bytes, name_len: int) -> tuple[bytes, bytes]:
    """A cheap unique response and its key: the template with a same-length name."""
    name = b"\x07" + b"%07d" % i + template[12 + 8:12 + name_len]
    wire = template[:12] + name + template[12 + name_len:]
    return name + template[12 + name_len:12 + name_len + 4] + b"\x00", wire


def test_response_wire_helper_makes_real_keys() -> None:
    q = query("0000000.flood.example.")
    template = positive(q).to_wire()
    key, wire = response_wire(1234, template, len(q.question[0].name.to_wire()))
    assert key == key_from_message(query("1234.flood.example.".zfill(22)))
    assert dns.message.from_wire(wire).question[0].name.to_text() == "0001234.flood.example."


def test_bounds_hold_under_a_flood_of_unique_names() -> None:
    q = query("0000000.flood.example.")
    template = positive(q).to_wire()
    name_len = len(q.question[0].name.to_wire())
    by_count = Cache(max_entries=100)
    by_bytes = Cache(max_bytes=10_000)
    for i in range(100_000):
        key, wire = response_wire(i, template, name_len)
        assert by_count.insert_wire(key, wire, float(i) / 1000)
        assert by_bytes.insert_wire(key, wire, float(i) / 1000)
        if i % 1000 == 0:
            assert len(by_count) <= 100 and by_bytes.statistics().bytes <= 10_000
    count_stats, bytes_stats = by_count.statistics(), by_bytes.statistics()
    assert count_stats.entries == 100 and count_stats.evictions == 100_000 - 100
    assert bytes_stats.bytes <= 10_000
    entry_size = bytes_stats.bytes // bytes_stats.entries  # every entry has the same size
    assert bytes_stats.entries == 10_000 // entry_size
    assert bytes_stats.evictions == 100_000 - bytes_stats.entries
    # The newest names survive.
    key, _ = response_wire(99_999, template, name_len)
    assert by_count.lookup_wire(key, 1, 100.0) is not None


def test_lru_keeps_a_hot_name() -> None:
    cache = Cache(max_entries=10)
    hot = query("hot.example.")
    cache.insert(key_from_message(hot), positive(hot), 0.0)
    for i in range(1000):
        cold = query(f"cold{i}.example.")
        cache.insert(key_from_message(cold), positive(cold), 0.0)
        assert hit(cache, hot, 0.0) is not None, i
    assert hit(cache, query("cold0.example."), 0.0) is None
    assert cache.statistics().evictions == 1000 - 9


def test_an_answer_bigger_than_the_byte_bound_is_not_stored() -> None:
    cache = Cache(max_bytes=100)
    q = query()
    r = make_response(q)
    r.answer.append(rrset(NAME, 60, "TXT", *[f'"{"x" * 50}{i}"' for i in range(5)]))
    assert not cache.insert(key_from_message(q), r, 0.0)
    assert cache.statistics().bytes == 0


def test_replacing_an_entry_keeps_byte_count_exact() -> None:
    cache = Cache()
    q = query()
    cache.insert(key_from_message(q), positive(q), 0.0)
    size = cache.statistics().bytes
    cache.insert(key_from_message(q), positive(q), 1.0)
    assert cache.statistics().bytes == size and len(cache) == 1


def test_purge_drops_expired_entries() -> None:
    cache = Cache()
    for i, ttl in enumerate((10, 20, 30)):
        q = query(f"n{i}.example.")
        cache.insert(key_from_message(q), positive(q, ttl), 0.0)
    assert cache.purge(20.0) == 2
    assert len(cache) == 1 and cache.statistics().bytes > 0
    assert cache.purge(30.0) == 1 and cache.statistics().bytes == 0


# -- the stage -----------------------------------------------------------------------------------


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Scripted:
    """A fake next stage: answers from a script of responses or failures, records calls."""

    script: list[dns.message.Message | Exception] = field(default_factory=list)
    calls: list[dns.message.Message] = field(default_factory=list)

    async def resolve(self, request: Request) -> dns.message.Message:
        self.calls.append(request.message)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        step.id = request.message.id
        return step


def request(q: dns.message.Message) -> Request:
    return Request(message=q, transport=Transport.TLS, client=None, deadline=0.0)


async def test_stage_miss_then_hit_with_own_id_and_case() -> None:
    clock = Clock(10.0)
    q = query(use_edns=0)
    upstream = Scripted([positive(q, 300)])
    stage = CacheStage(upstream, Cache(), clock)
    first = await stage.resolve(request(q))
    assert ttls(first) == [300] and len(upstream.calls) == 1
    clock.now = 70.0
    again = query("WWW.Example.com.", qid=4242, use_edns=0)
    served = await stage.resolve(request(again))
    assert len(upstream.calls) == 1
    assert served.id == 4242 and ttls(served) == [240]
    assert served.question[0].name.to_wire() == again.question[0].name.to_wire()


async def test_stage_answers_a_miss_as_its_hits_will() -> None:
    """The first answer carries the TTLs the cache keeps (RFC 2308 §5's negative cap,
    max_ttl) and its minimal sections, as the wire path's does: it used to be the
    upstream's, so a client saw an NXDOMAIN for 3600 s and then, from the cache, for
    300 s (fuzz/fuzz_upstream_path.py)."""
    clock = Clock(10.0)
    q = query(use_edns=0)
    aaaa = query(rdtype="AAAA", qid=5, use_edns=0)
    capped = rrset(NAME, 2**31 - 1, "AAAA", "2001:db8::1")
    upstream = Scripted([negative(q, ttl=3600, minimum=300),
                         positive(aaaa, 2**31 - 1, capped)])
    stage = CacheStage(upstream, Cache(minimal_responses=True), clock)
    first = await stage.resolve(request(q))
    assert ttls(first) == [300] and first.rcode() == dns.rcode.NXDOMAIN
    clock.now += 7
    assert ttls(await stage.resolve(request(q))) == [293]
    first = await stage.resolve(request(aaaa))
    assert ttls(first) == [86400, 86400] and first.id == 5
    clock.now += 1
    assert ttls(await stage.resolve(request(aaaa))) == [86399, 86399]
    assert len(upstream.calls) == 2


async def test_stage_caches_a_servfail_failure_and_reraises_it() -> None:
    clock = Clock()
    q = query(use_edns=0)
    failure = ResolveFailure(dns.rcode.SERVFAIL, 22, "no reachable authority")
    upstream = Scripted([failure, positive(q)])
    stage = CacheStage(upstream, Cache(), clock)
    with pytest.raises(ResolveFailure):
        await stage.resolve(request(q))
    clock.now = 1.9
    with pytest.raises(ResolveFailure) as cached:
        await stage.resolve(request(q))
    assert (cached.value.rcode, cached.value.ede, cached.value.text) == (
        dns.rcode.SERVFAIL, 22, "no reachable authority")
    assert len(upstream.calls) == 1
    clock.now = 2.0
    assert (await stage.resolve(request(q))).rcode() == dns.rcode.NOERROR
    assert len(upstream.calls) == 2
    # The fast path answers the cached failure with SERVFAIL bytes too.
    cache = Cache()
    cache.insert_failure(key_from_message(q), q, failure, 0.0)
    served = hit(cache, q, 1.0)
    assert served is not None and served.rcode() == dns.rcode.SERVFAIL
    assert [o.to_wire() for o in served.options] == [
        dns.edns.EDEOption(22, "no reachable authority").to_wire()]


async def test_stage_does_not_cache_other_failures() -> None:
    q = query()
    refused = ResolveFailure(dns.rcode.REFUSED, 20)
    upstream = Scripted([refused, refused])
    stage = CacheStage(upstream, Cache(), Clock())
    for _ in range(2):
        with pytest.raises(ResolveFailure):
            await stage.resolve(request(q))
    assert len(upstream.calls) == 2


async def test_stage_passes_messages_without_one_question() -> None:
    q = dns.message.Message(id=5)
    r = dns.message.Message(id=5)
    upstream = Scripted([r])
    assert await CacheStage(upstream, Cache(), Clock()).resolve(request(q)) is r


# -- serve-stale -----------------------------------------------------------------------------


async def test_no_stale_answers_by_default() -> None:
    clock = Clock()
    q = query(use_edns=0)
    upstream = Scripted([positive(q, 60), ResolveFailure(dns.rcode.SERVFAIL)])
    stage = CacheStage(upstream, Cache(), clock)
    await stage.resolve(request(q))
    clock.now = 61.0
    with pytest.raises(ResolveFailure):
        await stage.resolve(request(q))


async def test_stale_answer_only_when_next_fails() -> None:
    clock = Clock()
    cache = Cache(serve_stale=True, stale_ttl=3600)
    q = query(use_edns=0)
    fresh = positive(q, 60)
    upstream = Scripted([positive(q, 60), fresh, ResolveFailure(dns.rcode.SERVFAIL, 22)])
    stage = CacheStage(upstream, cache, clock)
    await stage.resolve(request(q))
    clock.now = 61.0
    # Expired, next works: the new answer, not the stale one.
    assert ttls(await stage.resolve(request(q))) == [60] and len(upstream.calls) == 2
    clock.now = 200.0
    stale = await stage.resolve(request(q))
    assert len(upstream.calls) == 3
    assert ttls(stale) == [STALE_TTL]
    assert [(o.otype, o.to_wire()) for o in stale.options] == [
        (dns.edns.OptionType.EDE, dns.edns.EDEOption(3).to_wire())]
    # For servfail_ttl after the failure, stale answers come without asking next.
    clock.now = 201.9
    again = await stage.resolve(request(q))
    assert ttls(again) == [STALE_TTL] and len(upstream.calls) == 3
    assert cache.statistics().stale_served == 2
    # Then next is asked again (and the script is empty: it would raise IndexError).
    clock.now = 202.0
    with pytest.raises(IndexError):
        await stage.resolve(request(q))


async def test_stale_answer_when_next_returns_servfail() -> None:
    clock = Clock()
    q = query(use_edns=0)
    servfail = make_response(q)
    servfail.set_rcode(dns.rcode.SERVFAIL)
    upstream = Scripted([positive(q, 60), servfail])
    stage = CacheStage(upstream, Cache(serve_stale=True), clock)
    await stage.resolve(request(q))
    clock.now = 100.0
    stale = await stage.resolve(request(q))
    assert stale.rcode() == dns.rcode.NOERROR and ttls(stale) == [STALE_TTL]


async def test_failure_without_stale_entry_or_beyond_window_is_a_failure() -> None:
    clock = Clock()
    cache = Cache(serve_stale=True, stale_ttl=100)
    q = query(use_edns=0)
    upstream = Scripted([positive(q, 60), ResolveFailure(dns.rcode.SERVFAIL)])
    stage = CacheStage(upstream, cache, clock)
    await stage.resolve(request(q))
    clock.now = 160.0  # expired 100 s ago: outside the stale window
    with pytest.raises(ResolveFailure):
        await stage.resolve(request(q))
    assert cache.statistics().stale_served == 0


def test_servfail_does_not_replace_an_entry_kept_for_serve_stale() -> None:
    cache = Cache(serve_stale=True)
    q = query()
    key = key_from_message(q)
    cache.insert(key, positive(q, 60), 0.0)
    assert not cache.insert_failure(key, q, ResolveFailure(dns.rcode.SERVFAIL), 70.0)
    assert cache.stale_after_failure(key, 1, 70.0) is not None
    assert cache.purge(70.0) == 0
    assert cache.purge(60.0 + 86400) == 1


def test_stale_window_is_a_miss_until_a_failure() -> None:
    cache = Cache(serve_stale=True)
    q = query()
    cache.insert(key_from_message(q), positive(q, 60), 0.0)
    assert hit(cache, q, 61.0) is None and len(cache) == 1
    assert cache.stale_after_failure(key_from_message(query("x.")), 1, 61.0) is None


def with_records(wire: bytes, *records: bytes) -> bytes:
    ar = struct.unpack_from("!H", wire, 10)[0]
    return wire[:10] + struct.pack("!H", ar + len(records)) + wire[12:] + b"".join(records)


def opt_rr(rdata: bytes = b"", ttl: int = 0) -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, 1232, ttl, len(rdata)) + rdata


def test_odd_response_wire_is_refused() -> None:
    cache = Cache()
    q = query()
    key = key_from_message(q)
    wire = positive(q).to_wire()
    a_rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)
    assert not cache.insert_wire(key, with_records(wire, opt_rr(), a_rr), 0.0)  # OPT not last
    assert not cache.insert_wire(key, with_records(wire, opt_rr(ttl=1 << 24)), 0.0)  # ext rcode
    assert not cache.insert_wire(key, with_records(wire, opt_rr(b"\x00\x0f")), 0.0)
    assert not cache.insert_wire(key, with_records(wire, opt_rr(b"\x00\x0f\x00\x09ab")), 0.0)
    extended_label = b"\x41" + struct.pack("!HHIH", 1, 1, 60, 0)
    tsig = b"\x00" + struct.pack("!HHIH", 250, 255, 0, 0)
    assert not cache.insert_wire(key, with_records(wire, tsig), 0.0)
    assert not cache.insert_wire(key, with_records(wire, extended_label), 0.0)
    assert cache.insert_wire(key, with_records(wire, opt_rr(b"\x00\x0f\x00\x02\x00\x12")), 0.0)
    assert len(cache) == 1


A_RDATA = struct.pack("!HHIH", 1, 1, 60, 4) + bytes((192, 0, 2, 1))


def _answer_with(q: dns.message.Message, *records: bytes, ancount: int | None = None,
                 tail: bytes = b"") -> bytes:
    """``q``'s response with ``records`` as its answer section (ANCOUNT ``ancount``,
    default their number), then ``tail`` (records counted in ARCOUNT by the caller)."""
    head = bytearray(make_response(q).to_wire())
    head[6:8] = struct.pack("!H", len(records) if ancount is None else ancount)
    return bytes(head) + b"".join(records) + tail


# Found by fuzz/fuzz_upstream_path.py: records the cache's walk passed (it skipped names
# and RDATA by their lengths) but a client's parser rejects -- relayed on the wire path,
# cached and served for their TTL.
_UNREADABLE = {
    "owner pointer forwards": b"\xc0\x40" + A_RDATA,
    "owner pointer to itself": b"\xc0\x21" + A_RDATA,
    "owner pointer loop": b"\x01a\xc0\x21" + A_RDATA,
    "owner pointer into the header": b"\xc0\x02" + A_RDATA,
    "owner label type 0x40": b"\x41" + A_RDATA,
    "owner over 255 bytes": (b"\x3f" + b"n" * 63) * 4 + b"\x00" + A_RDATA,
    "A RDATA of 3 bytes": b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 3) + bytes(3),
    "AAAA RDATA of 15 bytes": b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 15) + bytes(15),
    "CNAME name forwards": b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x40",
    "CNAME name past its RDATA": b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + b"\x03ab",
    "CNAME with a byte after the name": b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 3)
    + b"\xc0\x0c\x00",
    "MX without its name": b"\xc0\x0c" + struct.pack("!HHIH", 15, 1, 60, 2) + b"\x00\x0a",
    "SOA one field short": b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, 60, 20) + b"\x00\x00"
    + bytes(18),
    "DNAME name compressed": b"\xc0\x0c" + struct.pack("!HHIH", 39, 1, 60, 2) + b"\xc0\x0c",
    "TXT empty": b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, 0),
    "TXT string past its RDATA": b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, 3) + b"\x05ab",
}


@pytest.mark.parametrize("why", sorted(_UNREADABLE))
def test_records_a_client_cannot_read_are_not_relayed(why: str) -> None:
    q = query()
    key = key_from_message(q)
    wire = _answer_with(q, _UNREADABLE[why])
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(wire)  # what a client (here dnspython) makes of it
    assert Cache().respond_wire(key, wire, 0.0, 1, True, None, True) is None
    assert not Cache().insert_wire(key, wire, 0.0)


def test_what_the_walk_checks_still_reads_good_records() -> None:
    """Compressed names in RDATA pointing back, a chain of pointers, SOA, MX, TXT, and
    types it does not read (opaque): accepted, and the answer parses."""
    q = query()
    key = key_from_message(q)
    owner = b"\x05alias\xc0\x10"  # alias.example.com, pointing at "example.com"
    records = [
        b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, len(owner)) + owner,
        b"\xc0\x21" + struct.pack("!HHIH", 15, 1, 60, 4) + b"\x00\x0a\xc0\x0c",
        b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, 6) + b"\x02hi\x02yo",
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 3, 60, 3) + b"\x00\x00\x01",  # CH A
        b"\xc0\x0c" + struct.pack("!HHIH", 39, 1, 60, 4) + b"\x02dn\x00",
        b"\xc0\x0c" + struct.pack("!HHIH", 99, 1, 60, 1) + b"\x00",
        b"\xc0\x0c" + struct.pack("!HHIH", 65280, 1, 60, 3) + b"\xff\xff\xff",
        b"\xc0\x0c" + A_RDATA,
    ]
    wire = _answer_with(q, *records)
    out = Cache().respond_wire(key, wire, 0.0, 7, True, None, True)
    assert out is not None
    assert len(dns.message.from_wire(out).answer) == len(records)


def test_opt_outside_the_additional_section_is_refused() -> None:
    """An OPT as the last record of the answer section (ARCOUNT 0): refused like an OPT
    that is not last -- it was cut off as the message's OPT and ARCOUNT - 1 (-1) raised
    OverflowError out of the wire path (an internal error)."""
    q = query()
    key = key_from_message(q)
    wire = _answer_with(q, b"\xc0\x0c" + A_RDATA, opt_rr())
    assert Cache().respond_wire(key, wire, 0.0, 1, True, None, True) is None
    assert not Cache().insert_wire(key, wire, 0.0)


@pytest.mark.parametrize("option", [
    b"\x00\x0f\x00\x04\x00\x12\xc3\x28",  # EDE text not UTF-8
    b"\x00\x0f\x00\x01\x00",  # EDE shorter than its code
    b"\x00\x17\x00\x02\xff\xfe",  # filtering contact (RFC 8914 §2.5 text) not UTF-8
])
def test_options_a_client_cannot_read_are_not_relayed(option: bytes) -> None:
    q = query(use_edns=0)
    key = key_from_message(q)
    wire = with_records(positive(query()).to_wire(), opt_rr(option))
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(wire)
    assert Cache().respond_wire(key, wire, 0.0, 1, True, None, True) is None


def test_ede_text_and_report_channel_are_relayed_as_clients_read_them() -> None:
    """EDE with UTF-8 text (NUL-terminated too) is kept; Report-Channel (RFC 9567, for
    the resolver that asked the authority, its name possibly compressed) is not."""
    q = query(use_edns=0)
    key = key_from_message(q)
    ede = b"\x00\x0f\x00\x07\x00\x06caf\xc3\xa9"
    report = b"\x00\x12\x00\x02\xc0\x0c"
    wire = with_records(positive(query()).to_wire(), opt_rr(ede + report))
    out = Cache().respond_wire(key, wire, 0.0, 1, True, None, True)
    assert out is not None
    message = dns.message.from_wire(out)
    assert [(int(o.otype), o.to_wire()) for o in message.options] == [(15, ede[4:])]


def test_only_extended_dns_errors_are_relayed() -> None:
    """An upstream's NSID (which names its server) and other options are hop-by-hop
    (RFC 6891 §6.1.1): only its EDEs reach the client, as on the message path
    (forward.client_response); they were all relayed but the per-transport ones."""
    q = query(use_edns=0)
    key = key_from_message(q)
    ede = b"\x00\x0f\x00\x06\x00\x0fnope"
    nsid = b"\x00\x03\x00\x03ns1"
    private = b"\xfd\xe9\x00\x02\x01\x02"  # 65001, local/experimental use
    wire = with_records(positive(query()).to_wire(), opt_rr(nsid + ede + private))
    cache = Cache()
    for out in (cache.respond_wire(key, wire, 0.0, 1, True, None, True),
                cache.lookup_wire(key, 2, 1.0)):
        assert out is not None
        options = dns.message.from_wire(out).options
        assert [(int(o.otype), o.to_wire()) for o in options] == [(15, ede[4:])]


def test_a_ttl_with_the_high_bit_set_is_read_as_zero() -> None:
    """RFC 2181 §8 (as Unbound does): such a TTL counts as 0 -- never served as sent
    (over 2^31 - 1: a SERVFAIL kept its records' TTLs as they came) and never clamped
    up to max_ttl (a positive answer was cached for a day)."""
    q = query()
    key = key_from_message(q)
    for rcode, high in ((dns.rcode.NOERROR, 0x80000000), (dns.rcode.SERVFAIL, 0xFFFFFFFF)):
        r = positive(q, 300, rrset(NAME, 300, "AAAA", "2001:db8::1"))
        r.set_rcode(rcode)
        wire = bytearray(r.to_wire())
        first_ttl = 12 + len(q.question[0].name.to_wire()) + 4 + 2 + 4
        struct.pack_into("!I", wire, first_ttl, high)
        cache = Cache()
        out = cache.respond_wire(key, bytes(wire), 0.0, 1, True, None, False)
        assert out is not None
        assert ttls(dns.message.from_wire(out)) == [0, 300], rcode
        assert len(cache) == (rcode == dns.rcode.SERVFAIL)  # lifetime 0: not kept


def test_unrenderable_message_is_not_cached() -> None:
    cache = Cache()
    q = query()
    r = make_response(q)
    r.answer.append(dns.rrset.from_text(dns.name.from_text("relative", None), 60, "IN", "A",
                                        "192.0.2.1"))
    assert not cache.insert(key_from_message(q), r, 0.0)


def test_only_servfail_failures_are_cached_and_servfail_records_keep_their_ttls() -> None:
    cache = Cache()
    q = query()
    key = key_from_message(q)
    assert not cache.insert_failure(key, q, ResolveFailure(dns.rcode.REFUSED), 0.0)
    r = positive(q, 7)
    r.set_rcode(dns.rcode.SERVFAIL)
    assert cache.insert(key, r, 0.0)
    served = hit(cache, q, 1.0)
    assert served is not None and ttls(served) == [6]
    assert hit(cache, q, 2.0) is None  # servfail_ttl, not the records' TTL


async def test_stage_caches_a_servfail_message_without_serve_stale() -> None:
    clock = Clock()
    q = query()
    servfail = make_response(q)
    servfail.set_rcode(dns.rcode.SERVFAIL)
    upstream = Scripted([servfail])
    stage = CacheStage(upstream, Cache(), clock)
    assert (await stage.resolve(request(q))).rcode() == dns.rcode.SERVFAIL
    clock.now = 1.0
    assert (await stage.resolve(request(q))).rcode() == dns.rcode.SERVFAIL
    assert len(upstream.calls) == 1


def test_a_stale_nxdomain_carries_ede_19() -> None:
    cache = Cache(serve_stale=True)
    q = query("gone.example.com.", use_edns=0)
    key = key_from_message(q)
    cache.insert(key, negative(q, minimum=60), 0.0)
    stale = cache.stale_after_failure(key, 3, 100.0, qname=q.question[0].name.to_wire())
    assert stale is not None and stale.stale
    served = dns.message.from_wire(stale.wire)
    assert served.rcode() == dns.rcode.NXDOMAIN and ttls(served) == [STALE_TTL]
    assert [o.to_wire() for o in served.options] == [dns.edns.EDEOption(19).to_wire()]


# -- respond_wire with caching off renders what an entry would ---------------------------------


def _reference(wire: bytes, key: bytes, minimal: bool = False, **kw: object) -> bytes | None:
    """The entry path of respond_wire (build a transient entry, try to store, render)."""
    cache = Cache.storing_nothing(minimal_responses=minimal)
    cache.stores = True  # as before: an entry is built, not stored (1 byte bound), rendered
    out = cache.respond_wire(key, wire, 500.0, **kw)  # type: ignore[arg-type]
    assert len(cache) == 0
    return out


def _upstream_answers(q: dns.message.Message) -> list[bytes]:
    """Responses of many shapes to ``q`` (as an upstream would send them)."""
    name = q.question[0].name.to_text()
    out = []
    r = positive(q, 300, rrset(name, 10**7, "A", "192.0.2.9"))  # a TTL above max_ttl
    r.authority.append(rrset("example.com.", 86400, "NS", "ns.example.com."))
    r.additional.append(rrset("ns.example.com.", 0, "A", "192.0.2.53"))
    out.append(r.to_wire())
    r.use_edns(0, dns.flags.DO, 1232, options=[
        dns.edns.EDEOption(18, "prohibited"),
        dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"\x00\x64"),
        dns.edns.CookieOption(b"\x01" * 8, b"\x02" * 8)], pad=468)
    out.append(r.to_wire())
    out.append(negative(q, ttl=7200, minimum=10**6).to_wire())  # capped at 3600
    out.append(negative(q, dns.rcode.NOERROR, ttl=60, minimum=300).to_wire())  # NODATA
    nosoa = make_response(q)
    nosoa.set_rcode(dns.rcode.NXDOMAIN)
    out.append(nosoa.to_wire())  # uncacheable, relayed once
    cname = make_response(q)
    cname.answer.append(rrset(name, 10**8, "CNAME", "target.example."))
    out.append(cname.to_wire())
    servfail = make_response(q)
    servfail.set_rcode(dns.rcode.SERVFAIL)
    servfail.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(22)])
    out.append(servfail.to_wire())
    for bad in ("tc", "refused", "stale", "mismatch"):
        b = positive(q) if bad != "mismatch" else positive(query("other.example.com."))
        if bad == "tc":
            b.flags |= dns.flags.TC
        elif bad == "refused":
            b.set_rcode(dns.rcode.REFUSED)
        elif bad == "stale":
            b.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(3)])
        out.append(b.to_wire())
    return out


@pytest.mark.parametrize("minimal", [False, True])
@pytest.mark.parametrize("use_edns", [False, True])
def test_respond_wire_storing_nothing_equals_the_entry_path(use_edns: bool,
                                                            minimal: bool) -> None:
    first = query(use_edns=0 if use_edns else None)
    key = key_from_message(first)
    compared = accepted = 0
    for wire in _upstream_answers(first):
        cuts = [len(wire), len(wire) - 1, len(wire) // 2, 11]
        for n in cuts:
            for qid, rd, qname, options, pad in [
                    (0, True, None, b"", 0),
                    (0xBEEF, False, b"\x03WwW\x07ExAmPlE\x03cOm\x00", b"", 0),
                    (0x1234, True, b"\x03www\x07example\x03com\x00",
                     b"\x00\x0b\x00\x02\x00\x64", 468),
                    (7, True, b"\x03wWw\x07example\x03COM\x00", b"", 128),
                    (8, False, b"\x01x\x00", b"", 0)]:  # wrong length: stored name kept
                kw = {"query_id": qid, "rd": rd, "qname": qname, "edns": use_edns,
                      "options": options, "pad_block": pad}
                fresh = Cache.storing_nothing(minimal_responses=minimal)
                got = fresh.respond_wire(key, wire[:n], 500.0, **kw)  # type: ignore[arg-type]
                assert got == _reference(wire[:n], key, minimal, **kw), (n, kw)
                assert len(fresh) == 0
                compared += 1
                accepted += got is not None
    assert accepted >= 7 * 5 and compared > accepted  # both outcomes were exercised


@settings(max_examples=100)
@given(names, st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=3), st.booleans(),
       st.booleans(), st.booleans(), st.integers(0, 0xFFFF), st.sampled_from([0, 128, 468]),
       st.sampled_from(["NOERROR", "NXDOMAIN", "SERVFAIL"]), st.data(), st.booleans())
def test_respond_wire_storing_nothing_equals_the_entry_path_generated(
        labels: list[str], answer_ttls: list[int], use_edns: bool, do: bool, rd: bool,
        qid: int, pad: int, rcode: str, data: st.DataObject, minimal: bool) -> None:
    name = ".".join(labels) + "."
    first = query(name.lower(), use_edns=0 if use_edns or do else None, want_dnssec=do)
    response = make_response(first)
    response.set_rcode(dns.rcode.from_text(rcode))
    for i, ttl in enumerate(answer_ttls):
        response.answer.append(rrset(name.lower(), ttl, "A", f"192.0.2.{i}"))
    if data.draw(st.booleans()):
        response.authority.append(soa(data.draw(st.integers(0, 10**6)),
                                      data.draw(st.integers(0, 10**6))))
    if data.draw(st.booleans()):  # glue: what minimal responses drop
        response.additional.append(rrset("ns.example.com.", data.draw(st.integers(0, 10**6)),
                                         "A", "192.0.2.53"))
    cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
    qname = dns.name.from_text(cased).to_wire()
    key = key_from_message(first)
    kw = {"query_id": qid, "rd": rd, "qname": qname, "edns": use_edns or do,
          "options": b"", "pad_block": pad}
    wire = response.to_wire()
    got = Cache.storing_nothing(minimal_responses=minimal).respond_wire(
        key, wire, 500.0, **kw)  # type: ignore[arg-type]
    assert got == _reference(wire, key, minimal, **kw)
    if got is not None:
        served = dns.message.from_wire(got)
        assert served.id == qid and bool(served.flags & dns.flags.RD) == rd
        assert served.question[0].name.to_wire() == qname


def test_entry_from_respond_wire_serves_every_hit_shape() -> None:
    """An entry kept by the miss path (respond_wire: its memo fields unset until the
    first fresh hit renders one) answers hits of every shape as the unmemoised render,
    from its first hit on, including a shape change before any other."""
    first = query(use_edns=0)
    key = key_from_message(first)
    wire = positive(first, 300).to_wire()
    keepalive = struct.pack("!HH", 11, 2) + b"\x00\x64"
    shapes = [(True, keepalive, 468), (False, b"", 0), (True, b"", 0), (True, b"", 128)]
    for order in (shapes, shapes[::-1]):
        cache = Cache()
        assert cache.respond_wire(key, wire, 0.0, 9, True, None, True) is not None
        entry = cache._entries[key]
        assert entry.memo_tail is None and entry.failed_until == float("-inf")
        # the question name is kept as bytes: not a GC-tracked memoryview
        assert type(entry.name_view) is bytes and not gc.is_tracked(entry.name_view)
        for now in (0.0, 1.5):
            for edns, options, pad in order:
                got = cache.lookup_wire(key, 5, now, rd=False, qname=None, edns=edns,
                                        options=options, pad_block=pad)
                plain = cache.lookup(key, 5, now, rd=False, qname=None, edns=edns,
                                     options=options, pad_block=pad)
                assert plain is not None and got == plain.wire
                assert ttls(dns.message.from_wire(got)) == [300 - int(now)]


def test_uncompressed_owner_names_are_read_and_checked() -> None:
    """An answer's owner written out (skip_name's branch, not a bare pointer) is read;
    one that runs past the message is rejected (skip_name's -1, checked in that branch)."""
    q = query()
    key = key_from_message(q)
    header = bytearray(make_response(q).to_wire())
    header[6:8] = b"\x00\x01"  # ANCOUNT 1, the record appended by hand
    name = q.question[0].name.to_wire()
    record = name + struct.pack("!HHIH", 1, 1, 60, 4) + bytes((192, 0, 2, 1))
    good = bytes(header) + record
    got = Cache().respond_wire(key, good, 0.0, 1, True, None, False)
    assert got is not None
    assert ttls(dns.message.from_wire(got)) == [60]
    for bad in (bytes(header) + b"\x05ab", bytes(header) + name[:-1],
                bytes(header) + b"\xc0"):
        assert Cache().respond_wire(key, bad, 0.0, 1, True, None, False) is None


def test_the_byte_bound_holds_with_every_entry_hit() -> None:
    """The rendering a fresh hit keeps per entry counts against max_bytes too."""
    q = query("0000000.flood.example.")
    template = positive(q).to_wire()
    name_len = len(q.question[0].name.to_wire())
    cache = Cache(max_bytes=20_000)
    for i in range(1_000):
        key, wire = response_wire(i, template, name_len)
        assert cache.insert_wire(key, wire, 0.0)
        for edns in (False, True):  # every entry hit (its rendering kept)
            assert cache.lookup_wire(key, 1, 0.5, True, None, edns) is not None
    held = sum(len(e.body) + len(e.opt_head) + 2 + len(e.opt_rdata) + len(e.memo_tail or b"")
               for e in cache._entries.values())
    assert 0 < held <= cache.statistics().bytes <= 20_000


# -- the response's question: one compare when it echoes the key's bytes ----------------


def _question_mismatch_reference(wire: bytes, key: bytes) -> bool:
    """The check _parse_response made before its one-compare shortcut (QDCOUNT 1, the
    name case-insensitively, type and class exactly)."""
    name_len = len(key) - 5
    qend = 12 + name_len + 4
    qdcount = wire[4] << 8 | wire[5]
    return (qdcount != 1 or wire[12:12 + name_len].lower() != key[:name_len]
            or wire[12 + name_len:qend] != key[name_len:name_len + 4])


@pytest.mark.parametrize("name", ["www.example.com.", "WwW.ExAmPlE.cOm.", "x."])
def test_the_response_question_check_is_the_case_insensitive_one(name: str) -> None:
    """Every byte of the question section (and QDCOUNT) mutated: _parse_response
    reports a question mismatch exactly when the full case-insensitive check does, and
    what it accepts parses as the unmutated response does (but for the name's case)."""
    from dnstls.resolver.cache import _parse_response

    q = query(name, use_edns=False)
    wire = positive(q).to_wire()
    key = key_from_wire(q.to_wire())
    name_len = len(key) - 5
    base = _parse_response(wire, key)
    assert not isinstance(base, str)
    checked = mismatches = 0
    for pos in [4, 5, *range(12, 12 + name_len + 4)]:
        for value in {0, 1, 0x20, 0x41, 0x5A, 0x61, 0x7A, wire[pos] ^ 0x20, 0xFF}:
            data = wire[:pos] + bytes((value,)) + wire[pos + 1:]
            parsed = _parse_response(data, key)
            expected = _question_mismatch_reference(data, key)
            checked += 1
            if expected:
                mismatches += 1
                assert parsed == "question mismatch", (pos, value)
            elif not isinstance(parsed, str):
                assert parsed.body[12 + name_len:] == base.body[12 + name_len:]
                assert parsed.ttls == base.ttls and parsed.offsets == base.offsets
                assert parsed.qname.lower() == key[:name_len]
            else:  # e.g. a length byte changed: the records no longer line up
                assert parsed != "question mismatch", (pos, value)
    assert checked > 60 and mismatches > 20


def test_an_entry_is_its_only_object_the_cyclic_gc_tracks() -> None:
    """Nothing an entry holds is tracked by the cyclic GC once a collection has seen it:
    offsets and TTLs are tuples of ints (lists are always tracked), no memoryview of the
    body is kept (a view and its managed buffer are). Every full collection traverses
    what a cache of up to max_entries answers keeps tracked."""
    cache = Cache()
    q = query(use_edns=False)
    key = key_from_wire(q.to_wire())
    assert cache.respond_wire(key, positive(q).to_wire(), 500.0, 7) is not None
    entry = cache._entries[key]
    gc.collect()
    assert entry.offsets and entry.ttls == (300, 300)
    assert not gc.is_tracked(entry.offsets) and not gc.is_tracked(entry.ttls)
    # only its class (a compiled class's traverse does not visit even that)
    assert [o for o in gc.get_referents(entry) if gc.is_tracked(o)] in ([type(entry)], [])
    # and it still renders from its body: a hit after the first (memo) and re-aged
    hit = cache.lookup_wire(key, 9, 501.0)
    assert hit is not None and dns.message.from_wire(hit).answer[0].ttl == 299
