"""NSEC and NSEC3 denial-of-existence proofs on hand-built records (no crypto here).

The zone ``example.`` holds: the apex, ``a`` (A), ``c.b`` (A; ``b`` is an empty
non-terminal), ``d`` (a delegation without DS), ``*.w`` (A; ``w`` is an empty
non-terminal) and ``z`` (A). Canonical order (RFC 4034 §6.1):
example. < *.example.(absent) < a < b < c.b < d < w < *.w < z.
"""

from __future__ import annotations

import base64
import hashlib

import dns.name
import dns.rdata
import dns.rdatatype
import pytest

from dnstls.resolver.dnssec_proofs import (
    Outcome,
    nsec3_proof,
    nsec3_wildcard_proof,
    nsec_covers,
    nsec_proof,
    nsec_wildcard_proof,
)

A, MX, DS, CNAME = dns.rdatatype.A, dns.rdatatype.MX, dns.rdatatype.DS, dns.rdatatype.CNAME
ZONE = dns.name.from_text("example.")


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ZONE)


def nsec(owner: str, nxt: str, types: str) -> tuple[dns.name.Name, dns.rdata.Rdata]:
    return n(owner), dns.rdata.from_text("IN", "NSEC", f"{n(nxt)} {types}")


CHAIN = [
    nsec("@", "a", "SOA NS RRSIG NSEC DNSKEY"),
    nsec("a", "c.b", "A RRSIG NSEC"),
    nsec("c.b", "d", "A RRSIG NSEC"),
    nsec("d", "*.w", "NS RRSIG NSEC"),
    nsec("*.w", "z", "A RRSIG NSEC"),
    nsec("z", "@", "A RRSIG NSEC"),
]


def pick(*owners: str) -> list[tuple[dns.name.Name, dns.rdata.Rdata]]:
    return [record for record in CHAIN if record[0] in {n(o) for o in owners}]


# --------------------------------------------------------------------------- NSEC

def test_covers_and_the_wrap_at_the_end_of_the_zone() -> None:
    owner, rdata = nsec("a", "c.b", "A")
    assert nsec_covers(owner, rdata, n("aa"))
    assert nsec_covers(owner, rdata, n("b"))
    assert not nsec_covers(owner, rdata, n("a"))
    assert not nsec_covers(owner, rdata, n("c.b"))
    assert not nsec_covers(owner, rdata, n("e"))
    last, wrap = nsec("z", "@", "A")
    assert nsec_covers(last, wrap, n("zz"))
    assert nsec_covers(last, wrap, n("x.z"))
    assert not nsec_covers(last, wrap, n("a"))
    assert not nsec_covers(last, wrap, dns.name.from_text("zz.other."))


def test_nxdomain_needs_the_name_and_the_wildcard_covered() -> None:
    assert nsec_proof(n("aa"), A, pick("a", "@"), nxdomain=True).outcome is Outcome.SECURE
    missing_wildcard = nsec_proof(n("aa"), A, pick("a"), nxdomain=True)
    assert missing_wildcard.outcome is Outcome.BOGUS
    assert missing_wildcard.ede == 12
    assert "*.example." in missing_wildcard.text
    assert nsec_proof(n("aa"), A, pick("@"), nxdomain=True).outcome is Outcome.BOGUS
    assert nsec_proof(n("zz"), A, pick("z", "@"), nxdomain=True).outcome is Outcome.SECURE


def test_nxdomain_for_a_name_that_exists_is_bogus() -> None:
    assert nsec_proof(n("a"), A, pick("a", "@"), nxdomain=True).outcome is Outcome.BOGUS
    # b is an empty non-terminal: it exists
    assert nsec_proof(n("b"), A, pick("a", "@"), nxdomain=True).outcome is Outcome.BOGUS


def test_nodata_at_the_name_and_at_an_empty_non_terminal() -> None:
    assert nsec_proof(n("a"), MX, pick("a"), nxdomain=False).outcome is Outcome.SECURE
    assert nsec_proof(n("a"), A, pick("a"), nxdomain=False).outcome is Outcome.BOGUS
    assert nsec_proof(n("b"), A, pick("a"), nxdomain=False).outcome is Outcome.SECURE
    cname = [nsec("a", "c.b", "CNAME RRSIG NSEC")]
    assert nsec_proof(n("a"), MX, cname, nxdomain=False).outcome is Outcome.BOGUS


def test_a_parent_side_delegation_nsec_proves_only_ds_absence() -> None:
    assert nsec_proof(n("d"), DS, pick("d"), nxdomain=False).outcome is Outcome.SECURE
    assert nsec_proof(n("d"), A, pick("d"), nxdomain=False).outcome is Outcome.BOGUS
    below = nsec_proof(n("x.d"), A, pick("d", "@"), nxdomain=True)
    assert below.outcome is Outcome.BOGUS
    assert "delegation" in below.text


def test_wildcard_nodata() -> None:
    # x.w is covered by *.w -> z, and the wildcard *.w has no MX
    assert nsec_proof(n("x.w"), MX, pick("*.w"), nxdomain=False).outcome is Outcome.SECURE
    assert nsec_proof(n("x.w"), A, pick("*.w"), nxdomain=False).outcome is Outcome.BOGUS
    assert nsec_proof(n("x.w"), MX, [], nxdomain=False).outcome is Outcome.BOGUS


def test_wildcard_answer_needs_the_name_covered() -> None:
    assert nsec_wildcard_proof(n("x.w"), n("w"), pick("*.w")).outcome is Outcome.SECURE
    assert nsec_wildcard_proof(n("x.w"), n("w"), pick("a")).outcome is Outcome.BOGUS


def test_wildcard_answer_needs_the_wildcards_parent_as_closest_encloser() -> None:
    # y.c.b is covered by c.b -> d, but c.b exists: *.b cannot have produced the answer
    wrong = nsec_wildcard_proof(n("y.c.b"), n("b"), pick("c.b"))
    assert wrong.outcome is Outcome.BOGUS
    assert "c.b.example., not b.example." in wrong.text
    assert nsec_wildcard_proof(n("y.c.b"), n("c.b"), pick("c.b")).outcome is Outcome.SECURE


# --------------------------------------------------------------------------- NSEC3

NAMES = {"@": "SOA NS RRSIG DNSKEY NSEC3PARAM", "a": "A RRSIG", "b": "", "c.b": "A RRSIG",
         "d": "NS", "w": "", "*.w": "A RRSIG", "z": "A RRSIG"}


def digest(name: dns.name.Name, iterations: int = 0) -> bytes:
    """RFC 5155 §5, SHA-1, no salt."""
    value = hashlib.sha1(name.canonicalize().to_wire()).digest()
    for _ in range(iterations):
        value = hashlib.sha1(value).digest()
    return value


def nsec3_chain(*, optout: bool = False, iterations: int = 0,
                ) -> dict[str, tuple[dns.name.Name, dns.rdata.Rdata]]:
    """NSEC3 records by the (relative) name they match; with ``optout`` the unsigned
    delegation ``d`` gets none and every record has the opt-out flag."""
    names = {k: v for k, v in NAMES.items() if not (optout and k == "d")}
    hashed = sorted((digest(n(k), iterations), k) for k in names)
    chain = {}
    for i, (value, key) in enumerate(hashed):
        nxt = base64.b32hexencode(hashed[(i + 1) % len(hashed)][0]).decode().lower()
        rdata = dns.rdata.from_text(
            "IN", "NSEC3", f"1 {1 if optout else 0} {iterations} - {nxt} {names[key]}")
        owner = dns.name.Name((base64.b32hexencode(value).lower(), *ZONE.labels))
        chain[key] = (owner, rdata)
    return chain


def covering(chain: dict[str, tuple[dns.name.Name, dns.rdata.Rdata]], name: dns.name.Name,
             iterations: int = 0) -> tuple[dns.name.Name, dns.rdata.Rdata]:
    target = digest(name, iterations)
    for owner, rdata in chain.values():
        start = base64.b32hexdecode(owner.labels[0].upper())
        end = rdata.next
        if (start < target < end) if start < end else (target > start or target < end):
            return owner, rdata
    raise AssertionError(f"nothing covers {name}")


def test_nsec3_nxdomain_closest_encloser_and_wildcard() -> None:
    chain = nsec3_chain()
    records = [chain["@"], covering(chain, n("nothere")), covering(chain, n("*"))]
    proof = nsec3_proof(n("nothere"), A, ZONE, records, nxdomain=True)
    assert proof.outcome is Outcome.SECURE
    no_wildcard = [r for r in chain.values() if r != covering(chain, n("*"))]
    proof = nsec3_proof(n("nothere"), A, ZONE, no_wildcard, nxdomain=True)
    assert proof.outcome is Outcome.BOGUS
    assert "wildcard *.example." in proof.text
    no_encloser = [r for r in chain.values() if r != chain["@"]]
    proof = nsec3_proof(n("nothere"), A, ZONE, no_encloser, nxdomain=True)
    assert proof.outcome is Outcome.BOGUS
    assert "closest encloser" in proof.text


def test_nsec3_nxdomain_below_an_existing_name_and_for_an_existing_name() -> None:
    chain = nsec3_chain()
    records = [chain["a"], covering(chain, n("x.a")), covering(chain, n("*.a"))]
    assert nsec3_proof(n("x.a"), A, ZONE, records, nxdomain=True).outcome is Outcome.SECURE
    assert nsec3_proof(n("y.x.a"), A, ZONE, records, nxdomain=True).outcome is Outcome.SECURE
    everything = list(chain.values())
    for existing in ("a", "b", "c.b"):  # matched, never covered
        assert nsec3_proof(n(existing), A, ZONE, everything,
                           nxdomain=True).outcome is Outcome.BOGUS


def test_nsec3_nodata_matching_and_empty_non_terminal() -> None:
    chain = nsec3_chain()
    assert nsec3_proof(n("a"), MX, ZONE, [chain["a"]], nxdomain=False).outcome \
        is Outcome.SECURE
    wrong = nsec3_proof(n("a"), A, ZONE, [chain["a"]], nxdomain=False)
    assert wrong.outcome is Outcome.BOGUS and wrong.ede == 12
    assert nsec3_proof(n("b"), A, ZONE, [chain["b"]], nxdomain=False).outcome \
        is Outcome.SECURE
    # the parent-side NSEC3 of a delegation proves DS absent, nothing else
    assert nsec3_proof(n("d"), DS, ZONE, [chain["d"]], nxdomain=False).outcome \
        is Outcome.SECURE
    assert nsec3_proof(n("d"), A, ZONE, [chain["d"]], nxdomain=False).outcome \
        is Outcome.BOGUS


def test_nsec3_wildcard_nodata_and_answer() -> None:
    chain = nsec3_chain()
    records = [chain["w"], covering(chain, n("x.w")), chain["*.w"]]
    assert nsec3_proof(n("x.w"), MX, ZONE, records, nxdomain=False).outcome is Outcome.SECURE
    assert nsec3_proof(n("x.w"), A, ZONE, records, nxdomain=False).outcome is Outcome.BOGUS
    assert nsec3_wildcard_proof(n("x.w"), n("w"), ZONE,
                                [covering(chain, n("x.w"))]).outcome is Outcome.SECURE
    others = [r for r in chain.values() if r != covering(chain, n("x.w"))]
    assert nsec3_wildcard_proof(n("x.w"), n("w"), ZONE, others).outcome is Outcome.BOGUS


def test_nsec3_opt_out_makes_only_an_unsigned_delegation_insecure() -> None:
    chain = nsec3_chain(optout=True)
    records = [chain["@"], covering(chain, n("d"))]
    ds = nsec3_proof(n("d"), DS, ZONE, records, nxdomain=False)
    assert ds.outcome is Outcome.INSECURE
    assert "opt-out" in ds.text
    # opt-out gives no NODATA for other types
    assert nsec3_proof(n("d"), A, ZONE, records, nxdomain=False).outcome is Outcome.BOGUS
    # the same span without the flag: no proof that d has no DS
    plain = nsec3_chain()
    without_d = [r for k, r in plain.items() if k != "d"]
    assert nsec3_proof(n("d"), DS, ZONE, without_d, nxdomain=False).outcome \
        is not Outcome.INSECURE


@pytest.mark.parametrize(("iterations", "outcome"), [(150, Outcome.SECURE),
                                                     (151, Outcome.INSECURE)])
def test_nsec3_iterations_above_150_are_insecure(iterations: int, outcome: Outcome) -> None:
    chain = nsec3_chain(iterations=iterations)
    proof = nsec3_proof(n("a"), MX, ZONE, [chain["a"]], nxdomain=False)
    assert proof.outcome is outcome
    if outcome is Outcome.INSECURE:
        assert proof.ede == 27


def test_nsec3_records_of_another_zone_or_hash_are_ignored() -> None:
    chain = nsec3_chain()
    owner, rdata = chain["a"]
    elsewhere = dns.name.Name((owner.labels[0], b"other", b""))
    assert nsec3_proof(n("a"), MX, ZONE, [(elsewhere, rdata)], nxdomain=False).outcome \
        is Outcome.BOGUS
    other_hash = rdata.replace(algorithm=2)
    assert nsec3_proof(n("a"), MX, ZONE, [(owner, other_hash)], nxdomain=False).outcome \
        is Outcome.BOGUS
