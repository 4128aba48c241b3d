"""The validator against a signed hierarchy served by one real nsd on loopback.

tests/fakes/signed_zones.py signs ``.``, ``test.`` and the zones below it (good and
broken ones) with fresh keys; nsd serves them all, so every DS/DNSKEY fetch goes over
UDP to a real server, as through a recursive upstream. :data:`EXPECTED` lists each
question with the verdict (security, EDE) a validator must reach; the same questions were
put to Unbound 1.17 validating against the same nsd (docs/dnssec.md, "Compared with
Unbound").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnstls.resolver.dnssec import Fetch, TrustAnchors, Validator
from fakes.signed_zones import EXPECTED, ODD_QUESTIONS, Hierarchy, write_hierarchy
from interop import peers

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return write_hierarchy(tmp_path_factory.mktemp("signed") / "zones")


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory, hierarchy: Hierarchy,
        ) -> Iterator[peers.Peer]:
    with peers.peer_group_at(tmp_path_factory.mktemp("nsd") / "peers") as group:
        try:
            yield peers.start_nsd_zones(group, hierarchy.zone_files)
        except peers.PeerError as exc:
            pytest.fail(str(exc), pytrace=False)


def make_query(name: dns.name.Name | str, rdtype: int | str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    query.flags |= dns.flags.CD
    return query


def udp_fetch(server: peers.Peer, log: list[tuple[str, str]] | None = None) -> Fetch:
    """A test-only Fetch: the question over UDP to ``server`` (TCP if truncated)."""

    async def fetch(name: dns.name.Name, rdtype: int) -> dns.message.Message:
        if log is not None:
            log.append((name.to_text(), dns.rdatatype.to_text(rdtype)))
        query = make_query(name, rdtype)
        response = await dns.asyncquery.udp(query, server.host, port=server.port, timeout=3)
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(query, server.host, port=server.port,
                                                timeout=3)
        return response

    return fetch


async def ask(server: peers.Peer, qname: str, qtype: str) -> dns.message.Message:
    return await udp_fetch(server)(dns.name.from_text(qname),
                                   dns.rdatatype.from_text(qtype))


QUESTIONS = {**EXPECTED, **ODD_QUESTIONS}


@pytest.mark.parametrize(("qname", "qtype"), sorted(QUESTIONS))
async def test_verdict(nsd: peers.Peer, hierarchy: Hierarchy, qname: str, qtype: str,
                       ) -> None:
    anchors = TrustAnchors.from_file(hierarchy.root_ds)
    validator = Validator(anchors, udp_fetch(nsd))
    verdict = await validator.validate(await ask(nsd, qname, qtype))
    assert (verdict.security.value, verdict.ede) == QUESTIONS[(qname, qtype)], verdict


async def test_dnskey_anchor_same_verdicts(nsd: peers.Peer, hierarchy: Hierarchy) -> None:
    """A DNSKEY trust anchor (root.key) gives the verdicts a DS anchor gives."""
    validator = Validator(TrustAnchors.from_file(hierarchy.root_key), udp_fetch(nsd))
    for qname, qtype in [("www.secure.test.", "A"), ("www.bogus.test.", "A"),
                         ("www.insecure.test.", "A")]:
        verdict = await validator.validate(await ask(nsd, qname, qtype))
        assert (verdict.security.value, verdict.ede) == EXPECTED[(qname, qtype)]


def _without(response: dns.message.Message, *rdtypes: str) -> dns.message.Message:
    """``response`` without the authority RRsets (and their RRSIGs) of ``rdtypes``."""
    drop = {dns.rdatatype.from_text(t) for t in rdtypes}
    response.authority = [r for r in response.authority
                          if r.rdtype not in drop and r.covers not in drop]
    return response


@pytest.mark.parametrize(("qname", "qtype", "drop", "ede"), [
    ("x.wild.secure.test.", "A", "NSEC", 12),     # wildcard answer without its proof
    ("x.wild.nsec3.test.", "A", "NSEC3", 12),
    ("nothere.secure.test.", "A", "NSEC", 12),    # NXDOMAIN without proof
    ("nothere.nsec3.test.", "A", "NSEC3", 12),
    ("www.secure.test.", "MX", "NSEC", 12),       # NODATA without proof
    ("sub.nsec3.test.", "A", "NSEC3", 12),
    ("nothere.secure.test.", "A", "RRSIG", 10),   # the proof unsigned
])
async def test_stripped_proofs_are_bogus(nsd: peers.Peer, hierarchy: Hierarchy, qname: str,
                                         qtype: str, drop: str, ede: int) -> None:
    validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), udp_fetch(nsd))
    response = await ask(nsd, qname, qtype)
    verdict = await validator.validate(_without(response, drop))
    assert (verdict.security.value, verdict.ede) == ("bogus", ede), verdict


async def test_a_replayed_denial_does_not_deny_another_name(
        nsd: peers.Peer, hierarchy: Hierarchy) -> None:
    """The signed NSEC proof that nothere.secure.test. does not exist, presented as an
    NXDOMAIN for www.secure.test. (which exists) or as NODATA for its A."""
    validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), udp_fetch(nsd))
    proof = await ask(nsd, "nothere.secure.test.", "A")
    for rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):
        forged = dns.message.make_response(make_query("www.secure.test.", "A"))
        forged.set_rcode(rcode)
        forged.authority = list(proof.authority)
        verdict = await validator.validate(forged)
        assert (verdict.security.value, verdict.ede) == ("bogus", 12), verdict


async def test_an_insecure_claim_needs_a_signed_proof(nsd: peers.Peer,
                                                      hierarchy: Hierarchy) -> None:
    """A forged unsigned answer for www.secure.test. is BOGUS (EDE 10), not INSECURE:
    the walk finds secure.test. signed, whatever the answer says."""
    validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), udp_fetch(nsd))
    forged = dns.message.make_response(make_query("www.secure.test.", "A"))
    forged.answer.append(dns.rrset.from_text("www.secure.test.", 300, "IN", "A",
                                             "203.0.113.66"))
    verdict = await validator.validate(forged)
    assert (verdict.security.value, verdict.ede) == ("bogus", 10)


async def test_second_validation_fetches_nothing_new(nsd: peers.Peer,
                                                     hierarchy: Hierarchy) -> None:
    asked: list[tuple[str, str]] = []
    validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), udp_fetch(nsd, asked))
    response = await ask(nsd, "x.wild.nsec3.test.", "A")
    assert (await validator.validate(response)).security.value == "secure"
    assert asked == [(".", "DNSKEY"), ("test.", "DS"), ("test.", "DNSKEY"),
                     ("nsec3.test.", "DS"), ("nsec3.test.", "DNSKEY")]
    assert (await validator.validate(response)).security.value == "secure"
    assert len(asked) == 5


#: DNSTLS_PROPERTY_SCALE=50 multiplies the examples (random, not derandomized) for a
#: longer local campaign, as tests/unit/proto/test_properties.py.
SCALE = float(os.environ.get("DNSTLS_PROPERTY_SCALE", "1"))

FUZZED = [("www.secure.test.", "A"), ("x.wild.secure.test.", "A"),
          ("nothere.secure.test.", "A"), ("www.secure.test.", "MX"),
          ("x.wild.nsec3.test.", "A"), ("nothere.nsec3.test.", "A"),
          ("cname-out.secure.test.", "A"), ("www.dname.secure.test.", "A"),
          ("cname-nx.secure.test.", "A")]


@pytest.fixture(scope="module")
def originals(nsd: peers.Peer) -> list[bytes]:
    """The wire form of nsd's answers to :data:`FUZZED`."""
    import dns.query

    return [dns.query.udp(make_query(qname, qtype), nsd.host, port=nsd.port,
                          timeout=3).to_wire() for qname, qtype in FUZZED]


def _data(message: dns.message.Message) -> frozenset[tuple[object, ...]]:
    """The answer section's data (what a SECURE verdict vouches for), without TTLs."""
    return frozenset((r.name, r.rdtype, rd.to_digestable()) for r in message.answer
                     if r.rdtype != dns.rdatatype.RRSIG for rd in r)


@settings(max_examples=int(150 * SCALE), deadline=None, derandomize=SCALE == 1,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(min_value=0, max_value=len(FUZZED) - 1),
       flips=st.lists(st.tuples(st.integers(min_value=12, max_value=2000),
                                st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=3))
def test_flipped_bytes_never_raise_nor_pass_changed_data(
        nsd: peers.Peer, hierarchy: Hierarchy, originals: list[bytes], which: int,
        flips: list[tuple[int, int]]) -> None:
    """Flip bytes of a signed answer (past the header): the validator never raises, and
    a SECURE verdict is the truth: nsd, asked the (possibly changed) question, gives the
    same RCODE and at least the answer data. (A changed name can be proven not to exist
    by the very same NSEC records: lothere.secure.test. sits in the span that proves
    nothere.secure.test. absent.)"""
    wire = bytearray(originals[which])
    for offset, mask in flips:
        wire[offset % len(wire)] ^= mask
    try:
        mutated = dns.message.from_wire(bytes(wire))
    except Exception:  # not a message any more: nothing to validate
        return

    async def check() -> None:
        validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), udp_fetch(nsd))
        verdict = await validator.validate(mutated)
        if verdict.security.value == "secure":
            question = mutated.question[0]
            truth = await udp_fetch(nsd)(question.name, question.rdtype)
            assert truth.rcode() == mutated.rcode()
            assert _data(mutated) <= _data(truth)

    asyncio.run(check())


NAMES = ["www.secure.test.", "nothere.secure.test.", "x.wild.secure.test.",
         "sub.secure.test.", "www.nsec3.test.", "nothere.nsec3.test.", "secure.test.",
         "www.insecure.test.", "cname-out.secure.test.", "www.optout.test."]
TYPES = ["A", "AAAA", "TXT", "MX", "CNAME", "DS", "NS"]


@settings(max_examples=int(150 * SCALE), deadline=None, derandomize=SCALE == 1,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(min_value=0, max_value=len(FUZZED) - 1),
       edits=st.lists(st.tuples(st.sampled_from(["drop", "move", "question", "rcode",
                                                 "merge"]),
                                st.integers(min_value=0, max_value=50),
                                st.integers(min_value=0, max_value=50)),
                      min_size=1, max_size=3))
def test_rearranged_answers_never_pass_as_secure_unless_true(
        nsd: peers.Peer, hierarchy: Hierarchy, originals: list[bytes], which: int,
        edits: list[tuple[str, int, int]]) -> None:
    """Drop RRsets, move them between sections, ask another question with the same
    records, change the RCODE, or graft another signed answer's records in: never an
    exception, and SECURE only when nsd agrees (same RCODE, at least the answer data)."""
    message = dns.message.from_wire(originals[which])
    for kind, a, b in edits:
        sections = [message.answer, message.authority, message.additional]
        if kind == "drop":
            section = sections[a % 3]
            if section:
                del section[b % len(section)]
        elif kind == "move":
            source, target = sections[a % 3], sections[b % 3]
            if source:
                target.append(source.pop(b % len(source)))
        elif kind == "question":
            message.question = [dns.rrset.RRset(dns.name.from_text(NAMES[a % len(NAMES)]),
                                                 dns.rdataclass.IN,
                                                 dns.rdatatype.from_text(TYPES[b % len(TYPES)]))]
        elif kind == "rcode":
            message.set_rcode(dns.rcode.NXDOMAIN if a % 2 else dns.rcode.NOERROR)
        else:
            other = dns.message.from_wire(originals[a % len(originals)])
            message.answer.extend(other.answer)
            message.authority.extend(other.authority)

    async def check() -> None:
        validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), udp_fetch(nsd))
        verdict = await validator.validate(message)
        if verdict.security.value == "secure":
            question = message.question[0]
            truth = await udp_fetch(nsd)(question.name, question.rdtype)
            assert truth.rcode() == message.rcode(), verdict
            assert _data(message) <= _data(truth), verdict

    asyncio.run(check())
