"""Removing cache entries on an operator's request (``dnstls control flush*``): what
goes, what stays, and the byte/entry accounting kept exact."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset

from dnstls.proto.answers import make_response
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import ResolveFailure
from dnstls.resolver.cache import Cache


def _wire(name: str) -> bytes:
    out = dns.name.from_text(name).to_wire()
    assert out is not None
    return out


def _store(cache: Cache, name: str, rdtype: str = "A", *, rcode: int = dns.rcode.NOERROR,
           do: bool = False, cd: bool = False) -> bytes:
    query = dns.message.make_query(name, rdtype, want_dnssec=do)
    if cd:
        query.flags |= dns.flags.CD
    response = make_response(query)
    if rcode == dns.rcode.NOERROR:
        rdata = {"A": "192.0.2.1", "AAAA": "2001:db8::1", "TXT": '"x"',
                 "MX": "10 mx.example.", "HTTPS": "1 . alpn=h2"}[rdtype]
        response.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, rdata))
    else:
        response.set_rcode(rcode)
        response.authority.append(dns.rrset.from_text(
            "example.", 300, "IN", "SOA", "ns.example. h.example. 1 7200 900 1209600 300"))
    key = key_from_message(query)
    assert cache.insert(key, response, 0.0)
    return key


def _exact(cache: Cache) -> None:
    stats = cache.statistics()
    assert stats.bytes == cache.accounted_bytes()
    assert stats.entries == len(cache)


def test_remove_types_drops_every_flag_variant_of_the_name_only() -> None:
    cache = Cache()
    plain = _store(cache, "www.example.", "A")
    do = _store(cache, "www.example.", "A", do=True)
    cd = _store(cache, "WWW.Example.", "A", cd=True)
    aaaa = _store(cache, "www.example.", "AAAA")
    txt = _store(cache, "www.example.", "TXT")
    other = _store(cache, "a.www.example.", "A")
    before = cache.statistics().bytes
    assert cache.remove_types(_wire("WWW.EXAMPLE."), (1, 28)) == 4
    assert not any(cache.holds(k, 1.0) for k in (plain, do, cd, aaaa))
    assert cache.holds(txt, 1.0) and cache.holds(other, 1.0)
    assert cache.statistics().bytes < before
    _exact(cache)
    assert cache.remove_types(_wire("www.example."), (1,)) == 0
    _exact(cache)


def test_remove_under_drops_the_zone_and_below_at_label_boundaries() -> None:
    cache = Cache()
    inside = [_store(cache, n) for n in ("example.", "a.example.", "b.a.example.")]
    outside = [_store(cache, n) for n in ("notexample.", "example.org.", "xa.example.org.")]
    assert cache.remove_under(_wire("Example.")) == 3
    assert not any(cache.holds(k, 1.0) for k in inside)
    assert all(cache.holds(k, 1.0) for k in outside)
    _exact(cache)
    assert cache.remove_under(_wire(".")) == 3
    assert len(cache) == 0 and cache.statistics().bytes == 0


def test_remove_negative_drops_nxdomain_nodata_and_failures() -> None:
    cache = Cache()
    positive = _store(cache, "ok.example.")
    nxdomain = _store(cache, "gone.example.", rcode=dns.rcode.NXDOMAIN)
    query = dns.message.make_query("nodata.example.", "A")
    nodata = make_response(query)
    nodata.authority.append(dns.rrset.from_text(
        "example.", 300, "IN", "SOA", "ns.example. h.example. 1 7200 900 1209600 300"))
    nodata_key = key_from_message(query)
    assert cache.insert(nodata_key, nodata, 0.0)
    failed = dns.message.make_query("fail.example.", "A")
    failed_key = key_from_message(failed)
    assert cache.insert_failure(failed_key, failed, ResolveFailure(dns.rcode.SERVFAIL),
                                0.0)
    assert cache.remove_negative() == 3
    assert cache.holds(positive, 1.0)
    assert not any(cache.holds(k, 0.5) for k in (nxdomain, nodata_key, failed_key))
    _exact(cache)


def test_dump_renders_each_entry_with_its_time_left() -> None:
    cache = Cache()
    key = _store(cache, "www.example.", "MX")
    ((dumped_key, kind, left, wire),) = cache.dump(100.0)
    assert dumped_key == key and kind == "positive" and left == 200.0
    message = dns.message.from_wire(wire)
    assert message.answer[0].ttl == 200
    assert message.answer[0].name == dns.name.from_text("www.example.")
    assert cache.statistics().hits == 0
