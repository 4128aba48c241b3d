"""The validator's cache of verified signatures and its own signed-data builder
(resolver/dnssec.py ``SignatureCache``, ``signed_data``): a signature is checked with
the key once, then remembered until its TTL or its expiration, whichever comes first;
bounded; only successes are kept, and the key of an entry is the key, the signature and
the whole signed data, so a changed RRset never meets a cached verdict."""

from __future__ import annotations

import warnings

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from dnstls.resolver.dnssec import (
    Security,
    SignatureCache,
    TrustAnchors,
    Validator,
    signature_expiry,
    signed_data,
)
from fakes import dnssec_fixtures
from fakes.signed_zones import DAY, T0, answer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import dns.dnssec

zones = dnssec_fixtures.zones  # the shared fixtures, registered here
anchors = dnssec_fixtures.anchors


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def validator(anchors: TrustAnchors, zones: dict[str, dns.zone.Zone], clock: Clock,
              **kwargs: int) -> Validator:
    async def fetch(name: dns.name.Name, rdtype: int) -> dns.message.Message:
        return answer(zones, name, rdtype)

    return Validator(anchors, fetch, now=clock, **kwargs)


def _rrset_and_sig(zones: dict[str, dns.zone.Zone], origin: str, owner: str,
                   rdtype: str) -> tuple[dns.rrset.RRset, dns.rdata.Rdata]:
    zone = zones[origin]
    node = zone.nodes[dns.name.from_text(owner)]
    rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    sigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG,
                             dns.rdatatype.from_text(rdtype))
    assert rdataset is not None and sigs is not None
    return dns.rrset.from_rdata_list(dns.name.from_text(owner), rdataset.ttl,
                                     list(rdataset)), next(iter(sigs))


@pytest.mark.parametrize(("origin", "owner", "rdtype", "as_name"), [
    ("secure.test.", "www.secure.test.", "A", "www.secure.test."),
    ("secure.test.", "www.secure.test.", "A", "WWW.Secure.TEST."),  # case folded
    ("secure.test.", "secure.test.", "DNSKEY", "secure.test."),
    ("secure.test.", "*.wild.secure.test.", "A", "q1.wild.secure.test."),  # expansion
    ("secure.test.", "*.wild.secure.test.", "A", "a.b.wild.secure.test."),
    ("secure.test.", "*.wild.secure.test.", "NSEC", "*.wild.secure.test."),
    ("nsec3.test.", "nsec3.test.", "SOA", "nsec3.test."),
])
def test_signed_data_is_dnspythons(zones: dict[str, dns.zone.Zone], origin: str,
                                   owner: str, rdtype: str, as_name: str) -> None:
    rrset, sig = _rrset_and_sig(zones, origin, owner, rdtype)
    name = dns.name.from_text(as_name)
    ours = signed_data(name, rrset, sig)  # type: ignore[arg-type]
    theirs = dns.dnssec._make_rrsig_signature_data((name, rrset), sig)  # type: ignore[arg-type]
    assert ours == theirs


def test_signed_data_refuses_what_dnspython_refuses(zones: dict[str, dns.zone.Zone]) -> None:
    rrset, sig = _rrset_and_sig(zones, "secure.test.", "www.secure.test.", "A")
    with pytest.raises(dns.dnssec.ValidationFailure):  # more labels than the owner
        signed_data(rrset.name, rrset, sig.replace(labels=4))  # type: ignore[arg-type]
    wild, wsig = _rrset_and_sig(zones, "secure.test.", "*.wild.secure.test.", "A")
    with pytest.raises(dns.dnssec.ValidationFailure):  # a wild owner, labels not its own
        signed_data(wild.name, wild, wsig.replace(labels=2))  # type: ignore[arg-type]


def test_signature_expiry_is_the_ttl_or_the_expiration(
        zones: dict[str, dns.zone.Zone]) -> None:
    _, sig = _rrset_and_sig(zones, "secure.test.", "www.secure.test.", "A")
    assert signature_expiry(T0, 300, sig) == T0 + 300  # type: ignore[arg-type]
    assert signature_expiry(T0, 10, sig) == T0 + 10  # type: ignore[arg-type]
    # the RRSIG's original TTL caps a larger RRset TTL
    assert signature_expiry(T0, 99_999, sig) == T0 + sig.original_ttl  # type: ignore[attr-defined,arg-type]
    late = T0 + 30 * DAY - 5  # 5 s before the signature expires
    assert signature_expiry(late, 300, sig) == T0 + 30 * DAY  # type: ignore[arg-type]


def test_the_cache_expires_and_is_bounded() -> None:
    cache = SignatureCache(2)
    a, b, c = ((bytes([i]), b"sig", b"data") for i in range(3))
    cache.add(a, T0 + 10, T0)
    assert cache.hit(a, T0 + 9)
    assert not cache.hit(a, T0 + 10)  # expired: gone
    assert len(cache) == 0
    cache.add(a, T0 + 100, T0)
    cache.add(b, T0 + 100, T0)
    assert cache.hit(a, T0)  # a is now the most recently used
    cache.add(c, T0 + 100, T0)
    assert len(cache) == 2
    assert not cache.hit(b, T0) and cache.hit(a, T0) and cache.hit(c, T0)
    cache.add(b, T0 - 1, T0)  # expired already: not kept
    assert not cache.hit(b, T0)
    cache.clear()
    assert len(cache) == 0


async def test_a_signature_is_checked_once(anchors: TrustAnchors,
                                           zones: dict[str, dns.zone.Zone]) -> None:
    v = validator(anchors, zones, Clock())
    assert (await v.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
    first = v.statistics()
    # . DNSKEY, test. DS and DNSKEY, secure.test. DS and DNSKEY, www A
    assert first["signatures_verified"] == 6 and first["signature_cache_hits"] == 0
    assert first["signature_cache"] == 6
    assert (await v.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
    second = v.statistics()
    assert second["signatures_verified"] == 6 and second["signature_cache_hits"] == 1


async def test_an_entry_ends_with_the_rrset_ttl(anchors: TrustAnchors,
                                                zones: dict[str, dns.zone.Zone]) -> None:
    clock = Clock()
    v = validator(anchors, zones, clock)

    def short() -> dns.message.Message:
        response = answer(zones, "www.secure.test.", "A")
        for rrset in response.answer:
            rrset.ttl = 10
        return response

    await v.validate(short())
    clock.now += 9
    await v.validate(short())
    assert v.statistics()["signatures_verified"] == 6
    clock.now += 2  # the keys hold (DS 300 s, DNSKEY 3600 s); www A's entry is gone
    assert (await v.validate(short())).security is Security.SECURE
    assert v.statistics()["signatures_verified"] == 7


async def test_an_entry_ends_with_the_signature(anchors: TrustAnchors,
                                                zones: dict[str, dns.zone.Zone]) -> None:
    clock = Clock(T0 + 30 * DAY - 5)
    v = validator(anchors, zones, clock)
    await v.validate(answer(zones, "www.secure.test.", "A"))
    assert v._signatures.expiries() and max(v._signatures.expiries()) <= T0 + 30 * DAY
    clock.now += 6  # expired, but within the skew: checked again, still secure
    verified = v.statistics()["signatures_verified"]
    assert (await v.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
    assert v.statistics()["signatures_verified"] > verified
    clock.now += 2 * DAY  # beyond the skew: bogus, whatever was verified before
    assert (await v.validate(answer(zones, "www.secure.test.", "A"))).ede == 7


async def test_the_validators_cache_is_bounded(anchors: TrustAnchors,
                                               zones: dict[str, dns.zone.Zone]) -> None:
    v = validator(anchors, zones, Clock(), max_signatures=2)
    for rdtype in ("A", "AAAA", "TXT"):
        assert (await v.validate(answer(zones, "www.secure.test.", rdtype))).security \
            is Security.SECURE
        assert v.statistics()["signature_cache"] <= 2


async def test_a_changed_rrset_never_hits(anchors: TrustAnchors,
                                          zones: dict[str, dns.zone.Zone]) -> None:
    v = validator(anchors, zones, Clock())
    assert (await v.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
    changed = answer(zones, "www.secure.test.", "A")
    rrset = next(r for r in changed.answer if r.rdtype == dns.rdatatype.A)
    rrset.add(dns.rdata.from_text("IN", "A", "192.0.2.99"))
    verdict = await v.validate(changed)
    assert (verdict.security, verdict.ede) == (Security.BOGUS, 6)
    assert v.statistics()["signature_cache_hits"] == 0


async def test_a_bogus_signature_is_never_cached(anchors: TrustAnchors,
                                                 zones: dict[str, dns.zone.Zone]) -> None:
    v = validator(anchors, zones, Clock())

    def corrupted() -> dns.message.Message:
        response = answer(zones, "www.secure.test.", "A")
        for i, rrset in enumerate(response.answer):
            if rrset.rdtype == dns.rdatatype.RRSIG:
                sigs = [s.replace(signature=bytes([s.signature[0] ^ 1]) + s.signature[1:])
                        for s in rrset]
                response.answer[i] = dns.rrset.from_rdata_list(rrset.name, rrset.ttl, sigs)
        return response

    for _ in range(2):
        verdict = await v.validate(corrupted())
        assert (verdict.security, verdict.ede) == (Security.BOGUS, 6)
    stats = v.statistics()
    assert stats["signature_cache"] == 5  # the keys' signatures, not www A's
    assert stats["signature_cache_hits"] == 0
    assert (await v.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
