"""The validator against a signed hierarchy served by one real nsd on loopback.

tests/fakes/signed_zones.py signs ``.``, ``test.`` and the zones below it (good and
broken ones) with fresh keys; nsd serves them all, so every DS/DNSKEY fetch goes over
UDP to a real server, as through a recursive upstream. :data:`EXPECTED` lists each
question with the verdict (security, EDE) a validator must reach; the same questions were
put to Unbound 1.17 validating against the same nsd (docs/dnssec.md, "Compared with
Unbound").
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest

from dnstls.resolver.dnssec import Fetch, TrustAnchors, Validator
from fakes.signed_zones import EXPECTED, Hierarchy, write_hierarchy
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


@pytest.mark.parametrize(("qname", "qtype"), sorted(EXPECTED))
async def test_verdict(nsd: peers.Peer, hierarchy: Hierarchy, qname: str, qtype: str,
                       ) -> None:
    anchors = TrustAnchors.from_file(hierarchy.root_ds)
    validator = Validator(anchors, udp_fetch(nsd))
    verdict = await validator.validate(await ask(nsd, qname, qtype))
    assert (verdict.security.value, verdict.ede) == EXPECTED[(qname, qtype)], verdict


async def test_dnskey_anchor_same_verdicts(nsd: peers.Peer, hierarchy: Hierarchy) -> None:
    """A DNSKEY trust anchor (root.key) gives the verdicts a DS anchor gives."""
    validator = Validator(TrustAnchors.from_file(hierarchy.root_key), udp_fetch(nsd))
    for qname, qtype in [("www.secure.test.", "A"), ("www.bogus.test.", "A"),
                         ("www.insecure.test.", "A")]:
        verdict = await validator.validate(await ask(nsd, qname, qtype))
        assert (verdict.security.value, verdict.ede) == EXPECTED[(qname, qtype)]
