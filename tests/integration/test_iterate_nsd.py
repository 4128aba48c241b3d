"""The Iterator and AuthorityTransport against real nsd on loopback, with DNSSEC.

tests/fakes/signed_zones.py's signed hierarchy is split over two nsd instances: the
*parent* serves ``.`` and ``test.``, the *child* every zone below ``test.``. Their glue
points at port 53, which a test cannot use, so the iterator is given ``stubs`` (Unbound's
``stub-zone``): ``.`` at the parent, each zone below ``test.`` at the child, and
``do_not_query_localhost=False`` (as Unbound needs ``do-not-query-localhost: no`` for
a stub on 127.0.0.1). Everything else is real: UDP (and TCP) exchanges, nsd's answers,
DS questions answered by the parent side, DNSKEY by the zone, and the ValidatingStage
in front (``validating()``, anchored at the hierarchy's root key) reaching the verdicts
that Unbound reaches through the same zones (:data:`EXPECTED`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator as Iter

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from dnstls.net.authority import AuthorityTransport
from dnstls.proto.answers import Transport
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.dnssec import TrustAnchors
from dnstls.resolver.iterate import BUILTIN_ROOT_HINTS, Address, Iterator
from dnstls.resolver.validating import validating
from fakes.signed_zones import EXPECTED, Hierarchy, write_hierarchy
from interop import peers

pytestmark = pytest.mark.interop
PARENT_ZONES = (".", "test.")


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return write_hierarchy(tmp_path_factory.mktemp("signed") / "zones")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, hierarchy: Hierarchy,
            ) -> Iter[tuple[peers.Peer, peers.Peer]]:
    files = hierarchy.zone_files
    with peers.peer_group_at(tmp_path_factory.mktemp("nsd") / "peers") as group:
        try:
            parent = peers.start_nsd_zones(group, {o: files[o] for o in PARENT_ZONES})
            child = peers.start_nsd_zones(
                group, {o: p for o, p in files.items() if o not in PARENT_ZONES})
        except peers.PeerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield parent, child


class Logged(AuthorityTransport):
    """The real transport, with every question logged: (port, qname, qtype, tcp)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[int, str, str, bool]] = []

    async def exchange(self, query: dns.message.Message, address: Address, *, tcp: bool,
                       deadline: float) -> dns.message.Message:
        question = query.question[0]
        self.log.append((address[1], question.name.to_text(),
                         dns.rdatatype.to_text(question.rdtype), tcp))
        return await super().exchange(query, address, tcp=tcp, deadline=deadline)


def iterator(servers: tuple[peers.Peer, peers.Peer], hierarchy: Hierarchy,
             **kwargs: object) -> tuple[Iterator, Logged]:
    parent, child = servers
    stubs: dict[dns.name.Name, list[Address]] = {dns.name.root: [(parent.host, parent.port)]}
    for origin in hierarchy.zone_files:
        if origin not in PARENT_ZONES:
            stubs[dns.name.from_text(origin)] = [(child.host, child.port)]
    transport = Logged()
    loop = asyncio.get_running_loop()
    return Iterator(transport, BUILTIN_ROOT_HINTS, loop.time, stubs=stubs,
                    do_not_query_localhost=False, **kwargs), transport  # type: ignore[arg-type]


def request(name: str, rdtype: str, *, do: bool = False, ad: bool = False) -> Request:
    query = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do)
    if ad:
        query.flags |= dns.flags.AD
    return Request(query, Transport.UDP, None, asyncio.get_running_loop().time() + 10)


async def test_answers_from_real_authorities(servers: tuple[peers.Peer, peers.Peer],
                                             hierarchy: Hierarchy) -> None:
    it, transport = iterator(servers, hierarchy)
    response = await it.resolve(request("www.secure.test.", "A"))
    assert [r.to_text() for r in response.answer] == ["www.secure.test. 300 IN A 192.0.2.1"]
    assert not response.flags & dns.flags.AA and response.flags & dns.flags.RA
    response = await it.resolve(request("cname-out.secure.test.", "A"))
    assert [r.to_text() for r in response.answer] == [
        "cname-out.secure.test. 300 IN CNAME www.nsec3.test.",
        "www.nsec3.test. 300 IN A 192.0.2.3"]
    response = await it.resolve(request("www.dname.secure.test.", "A"))
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.DNAME, dns.rdatatype.CNAME,
                                                  dns.rdatatype.A]
    response = await it.resolve(request("nothere.secure.test.", "A"))
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [(r.name.to_text(), r.rdtype) for r in response.authority] == [
        ("secure.test.", dns.rdatatype.SOA)]
    response = await it.resolve(request("x.wild.secure.test.", "A", do=True))
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.A, dns.rdatatype.RRSIG]
    assert dns.rdatatype.NSEC in [r.rdtype for r in response.authority]
    assert response.additional == []
    # DS from the parent's server, DNSKEY from the zone's
    parent, child = servers
    transport.log.clear()
    response = await it.resolve(request("secure.test.", "DS", do=True))
    assert response.answer and response.answer[0].rdtype == dns.rdatatype.DS
    assert {port for port, _, _, _ in transport.log} == {parent.port}
    transport.log.clear()
    response = await it.resolve(request("secure.test.", "DNSKEY", do=True))
    assert response.answer and response.answer[0].rdtype == dns.rdatatype.DNSKEY
    assert {port for port, _, _, _ in transport.log} == {child.port}
    assert it.statistics()["timeouts"] == 0


async def test_validation_through_the_iterator(servers: tuple[peers.Peer, peers.Peer],
                                               hierarchy: Hierarchy) -> None:
    """Every question of EXPECTED through validating(Iterator): secure answers have AD,
    insecure ones not, bogus ones are SERVFAIL with the EDE Unbound gives."""
    it, _ = iterator(servers, hierarchy)
    loop = asyncio.get_running_loop()
    stage = validating(it, TrustAnchors.from_file(hierarchy.root_key), loop.time)
    wrong = []
    for (qname, qtype), (security, ede) in sorted(EXPECTED.items()):
        try:
            response = await stage.resolve(request(qname, qtype, do=True))
        except ResolveFailure as failure:
            got: tuple[str, int | None] = ("bogus", failure.ede)
        else:
            assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
            got = ("secure" if response.flags & dns.flags.AD else "insecure", None)
        if got != (security, None if security == "insecure" else ede):
            wrong.append((qname, qtype, got, (security, ede)))
    assert wrong == []
    with pytest.raises(ResolveFailure) as failure:
        await stage.resolve(request("www.bogus.test.", "A"))
    assert failure.value.rcode == dns.rcode.SERVFAIL
    assert failure.value.ede == dns.edns.EDECode.DNSSEC_BOGUS
    response = await stage.resolve(request("www.secure.test.", "A", ad=True))
    assert response.flags & dns.flags.AD


async def test_query_counts_with_and_without_minimisation(
        servers: tuple[peers.Peer, peers.Peer], hierarchy: Hierarchy) -> None:
    """The stub for the zone is used at once; minimisation adds a query per empty
    non-terminal below it (a.sub.secure.test.)."""
    for minimise, expected in ((True, 2), (False, 1)):
        it, transport = iterator(servers, hierarchy, qname_minimisation=minimise)
        response = await it.resolve(request("a.sub.secure.test.", "A"))
        assert [r.to_text() for r in response.answer] == [
            "a.sub.secure.test. 300 IN A 192.0.2.9"]
        assert len(transport.log) == expected, transport.log


async def test_truncated_answers_are_asked_again_over_tcp(
        tmp_path_factory: pytest.TempPathFactory, hierarchy: Hierarchy) -> None:
    """An nsd that sends at most 512 bytes over UDP (``ipv4-edns-size: 512``): a signed
    DNSKEY answer (the root's RSA keys) is truncated, and the iterator gets it over TCP
    from the same server."""
    with peers.peer_group_at(tmp_path_factory.mktemp("nsd512") / "peers") as group:
        small = peers.start_nsd_zones(group, hierarchy.zone_files,
                                      server_extra="    ipv4-edns-size: 512\n")
        transport = Logged()
        it = Iterator(transport, BUILTIN_ROOT_HINTS, asyncio.get_running_loop().time,
                      stubs={dns.name.root: [(small.host, small.port)]},
                      do_not_query_localhost=False)
        response = await it.resolve(request(".", "DNSKEY", do=True))
        assert [r.rdtype for r in response.answer] == [dns.rdatatype.DNSKEY,
                                                      dns.rdatatype.RRSIG]
        assert len(response.to_wire()) > 512
        assert transport.log == [(small.port, ".", "DNSKEY", False),
                                 (small.port, ".", "DNSKEY", True)]
        assert it.statistics()["tcp_fallbacks"] == 1
        assert transport.statistics()["tcp"] == 1
