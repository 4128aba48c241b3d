"""Validator behaviour without a server: clock and skew, caching, sharing, failures,
hostile input, strip_dnssec. Responses come from the signed hierarchy held in memory
(tests/fakes/signed_zones.py ``answer``); the negative-answer paths run against nsd in
tests/integration/test_dnssec_nsd.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.edns
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from dnstls.errors import QueryTimeout
from dnstls.resolver.base import ResolveFailure
from dnstls.resolver.dnssec import (
    Security,
    TrustAnchors,
    Validator,
    Verdict,
    strip_dnssec,
)
from fakes import dnssec_fixtures
from fakes.signed_zones import DAY, T0, answer

zones = dnssec_fixtures.zones  # the shared fixtures, registered here
anchors = dnssec_fixtures.anchors


class Upstream:
    """A Fetch over the in-memory zones that records what it was asked; ``fail`` maps
    (name, type) to an exception to raise, ``gate`` holds every fetch until set."""

    def __init__(self, zones: dict[str, dns.zone.Zone]) -> None:
        self.zones = zones
        self.asked: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], Exception] = {}
        self.gate: asyncio.Event | None = None

    async def __call__(self, name: dns.name.Name, rdtype: int) -> dns.message.Message:
        key = (name.to_text(), dns.rdatatype.to_text(rdtype))
        self.asked.append(key)
        if self.gate is not None:
            await self.gate.wait()
        if key in self.fail:
            raise self.fail[key]
        return answer(self.zones, name, rdtype)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(anchors: TrustAnchors, zones: dict[str, dns.zone.Zone], *,
         clock: Callable[[], float] | None = None, max_zones: int = 10_000,
         ) -> tuple[Validator, Upstream]:
    upstream = Upstream(zones)
    return Validator(anchors, upstream, now=clock or Clock(), max_zones=max_zones), upstream


def verdict_tuple(verdict: Verdict) -> tuple[Security, int | None]:
    return verdict.security, verdict.ede


async def test_secure_answer_and_the_fetches_it_takes(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone]) -> None:
    validator, upstream = make(anchors, zones)
    verdict = await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert verdict == Verdict(Security.SECURE)
    assert upstream.asked == [(".", "DNSKEY"), ("test.", "DS"), ("test.", "DNSKEY"),
                              ("secure.test.", "DS"), ("secure.test.", "DNSKEY")]


async def test_keys_are_cached_until_flush(anchors: TrustAnchors,
                                           zones: dict[str, dns.zone.Zone]) -> None:
    validator, upstream = make(anchors, zones)
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    first = len(upstream.asked)
    assert verdict_tuple(await validator.validate(answer(zones, "www.secure.test.", "TXT"))) \
        == (Security.SECURE, None)
    assert len(upstream.asked) == first
    stats = validator.statistics()
    assert stats["secure"] == 2 and stats["fetches"] == first and stats["key_cache"] == 3
    validator.flush()
    assert validator.statistics()["key_cache"] == 0
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert len(upstream.asked) == 2 * first


async def test_cached_keys_expire_with_their_ttl(anchors: TrustAnchors,
                                                 zones: dict[str, dns.zone.Zone]) -> None:
    clock = Clock()
    validator, upstream = make(anchors, zones, clock=clock)
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    first = len(upstream.asked)
    clock.now += 299  # DS TTL 300, DNSKEY TTL 3600
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert len(upstream.asked) == first
    clock.now += 3600
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert len(upstream.asked) == 2 * first


async def test_the_key_cache_is_bounded(anchors: TrustAnchors,
                                        zones: dict[str, dns.zone.Zone]) -> None:
    validator, upstream = make(anchors, zones, max_zones=2)
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert validator.statistics()["key_cache"] == 2
    first = len(upstream.asked)
    # the same signer again: its walk is remembered (bounded as the key cache)
    assert (await validator.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
    assert len(upstream.asked) == first
    # another zone needs the root's and test.'s keys, which were evicted
    assert (await validator.validate(answer(zones, "www.nsec3.test.", "A"))).security \
        is Security.SECURE
    assert (".", "DNSKEY") in upstream.asked[first:]
    assert validator.statistics()["key_cache"] == 2
    assert len(validator._zone_memo) <= 2


async def test_a_remembered_walk_ends_when_its_keys_expire(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone]) -> None:
    clock = Clock()
    validator, upstream = make(anchors, zones, clock=clock)
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    first = len(upstream.asked)
    # each zone's keys hold for their DNSKEY TTL (3600 s, as Unbound's key cache)
    clock.now += 3599
    await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert len(upstream.asked) == first
    clock.now += 2  # they expired: the walk is made again
    assert (await validator.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE
    assert ("secure.test.", "DNSKEY") in upstream.asked[first:]


def test_closest_anchor_by_labels() -> None:
    anchors = TrustAnchors.from_text(". IN DS 20326 8 2 "
                                     "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n"
                                     "Corp.Example. IN DS 1 13 2 " + "00" * 32 + "\n")
    assert anchors.closest(dns.name.from_text("www.CORP.example.")) == \
        dns.name.from_text("corp.example.")
    assert anchors.closest(dns.name.from_text("example.")) == dns.name.root
    assert anchors.closest(dns.name.root) == dns.name.root
    assert anchors.closest(dns.name.from_text("www", origin=None)) is None


async def test_bogus_zone_cut_is_remembered_for_60_seconds(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone]) -> None:
    clock = Clock()
    validator, upstream = make(anchors, zones, clock=clock)
    verdict = await validator.validate(answer(zones, "www.nokey.test.", "A"))
    assert verdict_tuple(verdict) == (Security.BOGUS, 9)
    assert verdict.text == "no DNSKEY of nokey.test. matches its DS"
    first = len(upstream.asked)
    clock.now += 59
    assert verdict_tuple(await validator.validate(answer(zones, "www.nokey.test.", "A"))) \
        == (Security.BOGUS, 9)
    assert len(upstream.asked) == first
    clock.now += 2
    await validator.validate(answer(zones, "www.nokey.test.", "A"))
    assert ("nokey.test.", "DNSKEY") in upstream.asked[first:]


async def test_concurrent_validations_share_fetches(anchors: TrustAnchors,
                                                    zones: dict[str, dns.zone.Zone]) -> None:
    validator, upstream = make(anchors, zones)
    upstream.gate = asyncio.Event()
    tasks = [asyncio.ensure_future(validator.validate(answer(zones, "www.secure.test.", t)))
             for t in ("A", "AAAA", "TXT")]
    for _ in range(20):
        await asyncio.sleep(0)
    upstream.gate.set()
    verdicts = await asyncio.gather(*tasks)
    assert all(v.security is Security.SECURE for v in verdicts)
    assert len(upstream.asked) == len(set(upstream.asked)) == 5
    assert validator.statistics()["fetches_shared"] >= 2


@pytest.mark.parametrize(("offset", "expected"), [
    (30 * DAY + 23 * 3600, (Security.SECURE, None)),   # expired, within the 1-day skew
    (30 * DAY + 25 * 3600, (Security.BOGUS, 7)),       # beyond it
    (-DAY - 23 * 3600, (Security.SECURE, None)),       # not yet valid, within the skew
    (-DAY - 25 * 3600, (Security.BOGUS, 8)),
])
async def test_signature_times_get_unbounds_skew(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone], offset: float,
        expected: tuple[Security, int | None]) -> None:
    validator, _ = make(anchors, zones, clock=Clock(T0 + offset))
    verdict = await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert verdict_tuple(verdict) == expected
    if expected[1] == 7:
        assert verdict.text is not None and verdict.text.startswith("signature expired for")


@pytest.mark.parametrize(("failing", "exc", "ede", "text"), [
    (("secure.test.", "DNSKEY"), QueryTimeout("timed out"), 9,
     "could not fetch DNSKEY for secure.test."),
    (("secure.test.", "DS"), ResolveFailure(dns.rcode.SERVFAIL), 6,
     "could not fetch DS for secure.test."),
    ((".", "DNSKEY"), TimeoutError(), 9, "could not fetch DNSKEY for ."),
    (("test.", "DS"), OSError("unreachable"), 6, "could not fetch DS for test."),
])
async def test_fetch_failures_are_bogus_not_raised_nor_cached(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone], failing: tuple[str, str],
        exc: Exception, ede: int, text: str) -> None:
    validator, upstream = make(anchors, zones)
    upstream.fail[failing] = exc
    verdict = await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert verdict_tuple(verdict) == (Security.BOGUS, ede)
    assert verdict.text is not None and verdict.text.startswith(text)
    del upstream.fail[failing]
    assert (await validator.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.SECURE


async def test_an_unexpected_error_in_fetch_is_bogus(anchors: TrustAnchors,
                                                     zones: dict[str, dns.zone.Zone]) -> None:
    validator, upstream = make(anchors, zones)
    upstream.fail[("test.", "DS")] = ValueError("a bug")
    verdict = await validator.validate(answer(zones, "www.secure.test.", "A"))
    assert verdict_tuple(verdict) == (Security.BOGUS, 6)


async def test_servfail_refused_and_no_anchor(anchors: TrustAnchors,
                                              zones: dict[str, dns.zone.Zone]) -> None:
    validator, upstream = make(anchors, zones)
    for rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
        response = answer(zones, "www.secure.test.", "A")
        response.set_rcode(rcode)
        assert (await validator.validate(response)).security is Security.INDETERMINATE
    elsewhere = Validator(TrustAnchors.from_text(
        f"other. IN DS 1 13 2 {'00' * 32}\n"), upstream)
    assert (await elsewhere.validate(answer(zones, "www.secure.test.", "A"))).security \
        is Security.INSECURE
    assert upstream.asked == []


def _tamper(response: dns.message.Message, rdtype: str, **changes: object) -> None:
    """Replace the RRSIGs over ``rdtype`` in the answer by modified copies."""
    for i, rrset in enumerate(response.answer):
        if rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == dns.rdatatype.from_text(
                rdtype):
            sigs = [sig.replace(**changes) for sig in rrset]
            response.answer[i] = dns.rrset.from_rdata_list(rrset.name, rrset.ttl, sigs)


@pytest.mark.parametrize(("changes", "ede"), [
    ({"labels": 200}, 6),               # more labels than the owner has
    ({"signer": dns.name.from_text("other.")}, 6),  # not an ancestor
    ({"key_tag": 1}, 9),                # no such key
    ({"algorithm": 1}, 1),              # RSAMD5: not validated
    ({"signature": b""}, 6),
    ({"type_covered": dns.rdatatype.AAAA}, 10),  # no RRSIG covers A any more
])
async def test_hostile_signatures_give_bogus_never_raise(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone], changes: dict[str, object],
        ede: int) -> None:
    validator, _ = make(anchors, zones)
    response = answer(zones, "www.secure.test.", "A")
    _tamper(response, "A", **changes)
    verdict = await validator.validate(response)
    assert verdict_tuple(verdict) == (Security.BOGUS, ede), verdict


async def test_many_rrsigs_are_capped(anchors: TrustAnchors,
                                      zones: dict[str, dns.zone.Zone]) -> None:
    validator, _ = make(anchors, zones)
    response = answer(zones, "www.secure.test.", "A")
    sigs = next(r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG)
    bad = next(iter(sigs))
    for i in range(500):
        sigs.add(bad.replace(signature=bytes([i % 256]) * 64, key_tag=i))
    sigs.discard(bad)
    verdict = await validator.validate(response)
    assert verdict.security is Security.BOGUS
    assert validator.statistics()["fetches"] <= 5


async def test_fetches_per_validation_are_bounded(anchors: TrustAnchors,
                                                  zones: dict[str, dns.zone.Zone]) -> None:
    """An unsigned answer 60 labels below secure.test.: finding whether it is below an
    insecure cut takes a DS question per label, more than the 64 allowed."""
    validator, upstream = make(anchors, zones)
    deep = dns.name.from_text(".".join(["x"] * 60) + ".secure.test.")
    response = dns.message.make_response(dns.message.make_query(deep, "A"))
    response.answer.append(dns.rrset.from_text(deep, 300, "IN", "A", "192.0.2.1"))
    verdict = await validator.validate(response)
    assert verdict == Verdict(Security.BOGUS, 6, "more than 64 fetches needed")
    assert len(upstream.asked) == 64
    # the running out is not remembered, the zone cuts examined so far are: the next
    # validation goes on from there and finds the answer unsigned in a signed zone
    again = await validator.validate(response)
    assert again == Verdict(Security.BOGUS, 10, f"no signatures over {deep} A")
    assert len(upstream.asked) < 2 * 64


async def test_a_cname_loop_ends_bogus(anchors: TrustAnchors,
                                       zones: dict[str, dns.zone.Zone]) -> None:
    validator, _ = make(anchors, zones)
    response = dns.message.make_response(dns.message.make_query("a.secure.test.", "A"))
    response.answer.append(dns.rrset.from_text("a.secure.test.", 300, "IN", "CNAME",
                                               "b.secure.test."))
    response.answer.append(dns.rrset.from_text("b.secure.test.", 300, "IN", "CNAME",
                                               "a.secure.test."))
    verdict = await validator.validate(response)
    assert verdict.security is Security.BOGUS


async def test_unsigned_answer_in_a_secure_zone(anchors: TrustAnchors,
                                                zones: dict[str, dns.zone.Zone]) -> None:
    validator, _ = make(anchors, zones)
    verdict = await validator.validate(answer(zones, "www.nosig.test.", "A"))
    assert verdict == Verdict(Security.BOGUS, 10, "no signatures over www.nosig.test. A")


@pytest.mark.parametrize("extra", ["www.secure.test. 300 IN MX 10 mail.example.",
                                   "other.example. 300 IN A 192.0.2.9"])
async def test_an_answer_rrset_off_the_chain_is_bogus(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone], extra: str) -> None:
    validator, _ = make(anchors, zones)
    response = answer(zones, "www.secure.test.", "A")
    owner, ttl, cls, rdtype, rdata = extra.split(maxsplit=4)
    response.answer.append(dns.rrset.from_text(owner, int(ttl), cls, rdtype, rdata))
    verdict = await validator.validate(response)
    assert verdict_tuple(verdict) == (Security.BOGUS, 6)
    assert verdict.text == (f"{owner} {rdtype} in the answer is not part of the answer "
                            "to www.secure.test. A")


async def test_signed_data_of_another_type_does_not_ride_along(
        anchors: TrustAnchors, zones: dict[str, dns.zone.Zone]) -> None:
    """The signed TXT of www.secure.test. in the answer to its A question (found by
    fuzzing: a changed question type with the original signed answer)."""
    validator, _ = make(anchors, zones)
    response = answer(zones, "www.secure.test.", "A")
    response.answer.extend(answer(zones, "www.secure.test.", "TXT").answer)
    assert verdict_tuple(await validator.validate(response)) == (Security.BOGUS, 6)


async def test_no_signatures_in_the_negative_answer(anchors: TrustAnchors,
                                                    zones: dict[str, dns.zone.Zone]) -> None:
    validator, _ = make(anchors, zones)
    response = answer(zones, "www.secure.test.", "MX")  # signed SOA, no NSEC
    verdict = await validator.validate(response)
    assert verdict_tuple(verdict) == (Security.BOGUS, 12)


# --------------------------------------------------------------------------- DO=0

def _full_response(qtype: str) -> dns.message.Message:
    response = dns.message.make_response(
        dns.message.make_query("www.example.", qtype, want_dnssec=True))
    for section, text in [
        (response.answer, "www.example. 300 IN A 192.0.2.1"),
        (response.answer, "www.example. 300 IN RRSIG A 13 2 300 20270101000000 "
                          "20260101000000 1 example. AAAA"),
        (response.answer, "www.example. 300 IN DNSKEY 256 3 13 AAAA"),
        (response.answer, "www.example. 300 IN NSEC z.example. A RRSIG NSEC"),
        (response.authority, "example. 300 IN SOA ns.example. h.example. 1 2 3 4 5"),
        (response.authority, "example. 300 IN NSEC3PARAM 1 0 0 -"),
        (response.authority, "sub.example. 300 IN DS 1 13 2 " + "00" * 32),
        (response.authority, "x.example. 300 IN NSEC3 1 0 0 - 00000000 A"),
        (response.additional, "ns.example. 300 IN A 192.0.2.53"),
        (response.additional, "example. 300 IN DNSKEY 257 3 13 AAAA"),
    ]:
        owner, ttl, cls, rdtype, *rdata = text.split(maxsplit=4)
        rrset = dns.rrset.from_text(owner, int(ttl), cls, rdtype, " ".join(rdata))
        response.find_rrset(section, rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers,
                            create=True).update(rrset)
    return response


def _types(section: list[dns.rrset.RRset]) -> list[str]:
    return [dns.rdatatype.to_text(r.rdtype) for r in section]


def test_strip_dnssec_for_a_client_without_do() -> None:
    response = _full_response("A")
    strip_dnssec(response, dns.rdatatype.A)
    assert _types(response.answer) == ["A"]
    assert _types(response.authority) == ["SOA"]
    assert _types(response.additional) == ["A"]
    # the message's index forgets the removed RRsets too
    with pytest.raises(KeyError):
        response.find_rrset(response.answer, dns.name.from_text("www.example."),
                            dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A)
    assert response.find_rrset(response.answer, dns.name.from_text("www.example."),
                               dns.rdataclass.IN, dns.rdatatype.A) is response.answer[0]


@pytest.mark.parametrize(("qtype", "answer_types"), [
    ("DNSKEY", ["A", "DNSKEY"]),
    ("RRSIG", ["A", "RRSIG"]),
    ("NSEC", ["A", "NSEC"]),
    ("ANY", ["A", "DNSKEY"]),
])
def test_strip_dnssec_keeps_what_was_asked_for(qtype: str, answer_types: list[str]) -> None:
    response = _full_response(qtype)
    strip_dnssec(response, dns.rdatatype.from_text(qtype))
    assert _types(response.answer) == answer_types
    assert _types(response.authority) == ["SOA"]
    assert _types(response.additional) == ["A"]
