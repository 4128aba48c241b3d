"""Our validator and Unbound 1.17 on the same questions, through the same nsd.

nsd serves the signed hierarchy of tests/fakes/signed_zones.py; Unbound validates with
module-config "validator iterator", the generated root DS as trust-anchor-file and
forward-zone "." to that nsd. For every question of ``EXPECTED`` Unbound's answer
(AD bit: secure; SERVFAIL + EDE: bogus; neither: insecure) must equal our verdict --
security, and the EDE code when bogus -- and for ``ODD_QUESTIONS`` too, except where
``UNBOUND_DIFFERS`` records Unbound's other answer and why. Unbound sends no EDE with an
insecure answer, so ours (1, 2, 27: why the answer is insecure) is not compared there.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnstls.resolver.dnssec import TrustAnchors, Validator
from fakes.signed_zones import (
    EXPECTED,
    ODD_QUESTIONS,
    UNBOUND_DIFFERS,
    Hierarchy,
    write_hierarchy,
)

from . import peers

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[Hierarchy, peers.Peer, peers.Peer]]:
    hierarchy = write_hierarchy(tmp_path_factory.mktemp("signed-ub") / "zones")
    with peers.peer_group_at(tmp_path_factory.mktemp("ub") / "peers") as group:
        try:
            nsd = peers.start_nsd_zones(group, hierarchy.zone_files)
            unbound = peers.start_unbound_validator(group, anchor_file=hierarchy.root_ds,
                                                    upstream=nsd)
        except peers.PeerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield hierarchy, nsd, unbound


async def _query(server: peers.Peer, qname: str, qtype: str, *, cd: bool,
                 ) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, want_dnssec=True)
    if cd:
        query.flags |= dns.flags.CD
    response = await dns.asyncquery.udp(query, server.host, port=server.port, timeout=5)
    if response.flags & dns.flags.TC:
        response = await dns.asyncquery.tcp(query, server.host, port=server.port, timeout=5)
    return response


def unbound_verdict(response: dns.message.Message) -> tuple[str, int | None]:
    codes = [opt.code for opt in response.options if isinstance(opt, dns.edns.EDEOption)]
    if response.rcode() == dns.rcode.SERVFAIL:
        return "bogus", (int(codes[0]) if codes else None)
    return ("secure" if response.flags & dns.flags.AD else "insecure"), None


@pytest.mark.parametrize(("qname", "qtype"), sorted({**EXPECTED, **ODD_QUESTIONS}))
async def test_same_verdict_as_unbound(servers: tuple[Hierarchy, peers.Peer, peers.Peer],
                                       qname: str, qtype: str) -> None:
    hierarchy, nsd, unbound = servers

    async def fetch(name: object, rdtype: int) -> dns.message.Message:
        return await _query(nsd, str(name), dns.rdatatype.to_text(rdtype), cd=True)

    validator = Validator(TrustAnchors.from_file(hierarchy.root_ds), fetch)
    ours = await validator.validate(await _query(nsd, qname, qtype, cd=True))
    theirs = unbound_verdict(await _query(unbound, qname, qtype, cd=False))
    mine = (ours.security.value, ours.ede if ours.security.value == "bogus" else None)
    if (qname, qtype) in UNBOUND_DIFFERS:
        expected_theirs, why = UNBOUND_DIFFERS[(qname, qtype)]
        assert theirs == expected_theirs, f"Unbound changed: {theirs} ({why})"
        assert mine != theirs
        return
    assert mine == theirs, (ours, theirs)
