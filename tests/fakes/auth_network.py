"""An in-process network of fake authoritative servers, for the iterator's unit tests.

:class:`AuthNetwork` implements the iterator's ``Authority`` (``exchange(query,
address, *, tcp, deadline)``): each address maps to a :class:`FakeServer` that answers
from ``dns.zone`` objects the way an authoritative server does -- referrals with glue at
zone cuts (DS from the parent side), AA answers, CNAMEs followed inside the zone, DNAME
with a synthesized CNAME, wildcards, NXDOMAIN/NODATA with the SOA, RRSIG/NSEC records
when the query has DO -- or misbehaves (``mode``: timeout, refused, servfail, noaa,
formerr_edns, tc, upward, garbage) or lets ``hook`` rewrite its answer (poison).
``exchange_wire`` is the same on bytes (the iterator's wire path): the query is read,
answered as above, and the answer returned as bytes (``garbage`` applied) after the
transport's checks (ID, QR, question: a mismatch is a ProtocolError); ``wire_hook``
may rewrite those bytes (e.g. compression) before the checks.
Time is a :class:`FakeClock`: an answer takes 1 ms, a timeout moves the clock to the
attempt's deadline, so nothing sleeps. Every query is logged in :attr:`AuthNetwork.log`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from dnstls.errors import ProtocolError, QueryTimeout
from dnstls.net.authority import _matches, _question_bytes

IN = dns.rdataclass.IN


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Sent:
    address: tuple[str, int]
    qname: str
    qtype: str
    tcp: bool
    edns: bool
    do: bool
    flags: int


def zone(origin: str, text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)


@dataclass
class FakeServer:
    zones: list[dns.zone.Zone]
    mode: str = "ok"
    hook: Callable[[dns.message.Message, dns.message.Message], dns.message.Message] | None = None
    port: int = 53
    queries: int = 0
    garbage: Callable[[bytes], bytes] | None = None
    wire_hook: Callable[[bytes], bytes] | None = None

    def handle(self, query: dns.message.Message, tcp: bool) -> dns.message.Message:
        self.queries += 1
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        mode = self.mode
        if mode == "refused":
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if mode == "formerr_edns" and query.edns >= 0:
            plain = dns.message.Message(id=query.id)
            plain.flags = dns.flags.QR
            plain.question = list(query.question)
            plain.set_rcode(dns.rcode.FORMERR)
            return plain
        if mode == "tc" and not tcp:
            response.flags |= dns.flags.TC
            return response
        self.answer(query, response)
        if mode == "noaa":
            response.flags &= ~dns.flags.AA
        if mode == "upward":
            response.answer, response.additional = [], []
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.NOERROR)
            response.authority = [dns.rrset.from_text(".", 3600, IN, "NS", "ns.root.")]
        if self.hook is not None:
            response = self.hook(query, response)
        return response

    def _zone_for(self, qname: dns.name.Name, qtype: int) -> dns.zone.Zone | None:
        holders = [z for z in self.zones if qname.is_subdomain(z.origin)]
        if qtype == dns.rdatatype.DS:
            parents = [z for z in holders if z.origin != qname]
            holders = parents or holders
        return max(holders, key=lambda z: len(z.origin), default=None)

    def answer(self, query: dns.message.Message, response: dns.message.Message) -> None:
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        do = query.edns >= 0 and bool(query.ednsflags & dns.flags.DO)
        z = self._zone_for(qname, qtype)
        if z is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        origin = z.origin
        assert origin is not None
        current = qname
        for _ in range(8):
            moved = False
            # a zone cut or a DNAME between the origin and current
            for depth in range(len(origin) + 1, len(current) + 1):
                name = current.split(depth)[1]
                node = z.get_node(name)
                if node is None:
                    continue
                ns = node.get_rdataset(IN, dns.rdatatype.NS)
                if ns is not None and name != origin:
                    if qtype == dns.rdatatype.DS and name == current:
                        break
                    if response.answer:
                        response.flags |= dns.flags.AA
                        return
                    self._referral(z, name, ns, response, do)
                    return
                dname = node.get_rdataset(IN, dns.rdatatype.DNAME)
                if dname is not None and name != current:
                    self._add(response.answer, name, dname)
                    self._sigs(z, response.answer, name, dns.rdatatype.DNAME, do)
                    target = current.relativize(name).concatenate(dname[0].target)
                    response.answer.append(dns.rrset.from_text(
                        current, dname.ttl, IN, "CNAME", target.to_text()))
                    response.flags |= dns.flags.AA
                    if not target.is_subdomain(origin):
                        return
                    current, moved = target, True
                    break
            if not moved:
                self._data(z, current, qtype, response, do)
                return
        response.flags |= dns.flags.AA

    def _data(self, z: dns.zone.Zone, current: dns.name.Name, qtype: int,
              response: dns.message.Message, do: bool) -> bool:
        """Answer ``current`` from ``z``; False when a CNAME moved it inside the zone."""
        response.flags |= dns.flags.AA
        origin = z.origin
        assert origin is not None
        node = z.get_node(current)
        owner = current
        if node is None:
            wild = self._wildcard(z, current)
            if wild is not None:
                node, owner = z.get_node(wild), wild
        if node is None:
            self._negative(z, response, do)
            if not any(n.is_subdomain(current) for n in z.nodes):  # not an empty non-terminal
                response.set_rcode(dns.rcode.NXDOMAIN)
            return True
        rds = node.get_rdataset(IN, qtype)
        if rds is not None:
            self._add(response.answer, current, rds)
            sigs = node.get_rdataset(IN, dns.rdatatype.RRSIG, qtype)
            if do and sigs is not None:
                self._add(response.answer, current, sigs)
            if do and owner != current:  # wildcard: the proof that current does not exist
                self._nsec(z, response, do)
            return True
        cname = node.get_rdataset(IN, dns.rdatatype.CNAME)
        if cname is not None and qtype != dns.rdatatype.CNAME:
            self._add(response.answer, current, cname)
            sigs = node.get_rdataset(IN, dns.rdatatype.RRSIG, dns.rdatatype.CNAME)
            if do and sigs is not None:
                self._add(response.answer, current, sigs)
            target = cname[0].target
            if target.is_subdomain(origin) and target != current:
                return self._data_or_more(z, target, qtype, response, do)
            return True
        self._negative(z, response, do)
        return True

    def _data_or_more(self, z: dns.zone.Zone, target: dns.name.Name, qtype: int,
                      response: dns.message.Message, do: bool) -> bool:
        if len(response.answer) > 16:
            return True
        return self._data(z, target, qtype, response, do)

    @staticmethod
    def _wildcard(z: dns.zone.Zone, name: dns.name.Name) -> dns.name.Name | None:
        origin = z.origin
        assert origin is not None
        encloser = name.parent()
        while encloser.is_subdomain(origin):
            if any(n.is_subdomain(encloser) for n in z.nodes):
                wild = dns.name.Name((b"*", *encloser.labels))
                return wild if z.get_node(wild) is not None else None
            encloser = encloser.parent()
        return None

    @staticmethod
    def _add(section: list[dns.rrset.RRset], owner: dns.name.Name, rds: object) -> None:
        rrset = dns.rrset.RRset(owner, IN, rds.rdtype, rds.covers)  # type: ignore[attr-defined]
        rrset.update(rds)  # type: ignore[arg-type]
        section.append(rrset)

    def _sigs(self, z: dns.zone.Zone, section: list[dns.rrset.RRset], name: dns.name.Name,
              covers: int, do: bool) -> None:
        node = z.get_node(name)
        sigs = node.get_rdataset(IN, dns.rdatatype.RRSIG, covers) if node else None
        if do and sigs is not None:
            self._add(section, name, sigs)

    def _nsec(self, z: dns.zone.Zone, response: dns.message.Message, do: bool) -> None:
        origin = z.origin
        assert origin is not None
        for name, node in z.nodes.items():
            nsec = node.get_rdataset(IN, dns.rdatatype.NSEC)
            if nsec is not None:
                self._add(response.authority, name, nsec)
                self._sigs(z, response.authority, name, dns.rdatatype.NSEC, do)

    def _negative(self, z: dns.zone.Zone, response: dns.message.Message, do: bool) -> None:
        origin = z.origin
        assert origin is not None
        soa = z.nodes[origin].get_rdataset(IN, dns.rdatatype.SOA)
        self._add(response.authority, origin, soa)
        self._sigs(z, response.authority, origin, dns.rdatatype.SOA, do)
        if do:
            self._nsec(z, response, do)

    def _referral(self, z: dns.zone.Zone, cut: dns.name.Name, ns: object,
                  response: dns.message.Message, do: bool) -> None:
        self._add(response.authority, cut, ns)
        node = z.get_node(cut)
        assert node is not None
        ds = node.get_rdataset(IN, dns.rdatatype.DS)
        if do and ds is not None:
            self._add(response.authority, cut, ds)
            self._sigs(z, response.authority, cut, dns.rdatatype.DS, do)
        for rdata in ns:  # type: ignore[attr-defined]
            glue = z.get_node(rdata.target)
            if glue is None:
                continue
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                rds = glue.get_rdataset(IN, rdtype)
                if rds is not None:
                    self._add(response.additional, rdata.target, rds)


@dataclass
class AuthNetwork:
    """The iterator's Authority over :class:`FakeServer` objects (module docstring)."""

    clock: FakeClock
    servers: dict[tuple[str, int], FakeServer] = field(default_factory=dict)
    log: list[Sent] = field(default_factory=list)
    #: let other tasks run during each exchange (concurrent resolutions interleave)
    interleave: bool = False
    #: exchanges asked through exchange (the message path) and exchange_wire
    message_queries: int = 0
    wire_queries: int = 0

    def add(self, address: str, server: FakeServer) -> FakeServer:
        self.servers[(address, server.port)] = server
        return server

    def sent_to(self, address: str) -> list[tuple[str, str]]:
        return [(s.qname, s.qtype) for s in self.log if s.address[0] == address]

    def questions(self) -> list[tuple[str, str, str]]:
        return [(s.address[0], s.qname, s.qtype) for s in self.log]

    async def exchange(self, query: dns.message.Message, address: tuple[str, int], *,
                       tcp: bool, deadline: float) -> dns.message.Message:
        self.message_queries += 1
        wire = await self._answer(query, address, tcp, deadline)
        try:
            return dns.message.from_wire(wire)
        except Exception as exc:  # what the transport turns a bad datagram into
            raise ProtocolError(f"malformed answer: {exc}") from None

    async def exchange_wire(self, wire: bytes, address: tuple[str, int], *, tcp: bool,
                            deadline: float) -> bytes:
        self.wire_queries += 1
        query = dns.message.from_wire(wire)
        answer = await self._answer(query, address, tcp, deadline)
        if not _matches(answer, query.id, _question_bytes(wire)):
            raise ProtocolError(f"{address[0]}: answer does not match the query")
        return answer

    async def _answer(self, query: dns.message.Message, address: tuple[str, int],
                      tcp: bool, deadline: float) -> bytes:
        question = query.question[0]
        self.log.append(Sent(address, question.name.to_text(),
                             dns.rdatatype.to_text(question.rdtype), tcp, query.edns >= 0,
                             query.edns >= 0 and bool(query.ednsflags & dns.flags.DO),
                             query.flags))
        if self.interleave:
            await asyncio.sleep(0)
        server = self.servers.get(address)
        if server is None or server.mode == "timeout" or self.clock.now + 0.001 > deadline:
            self.clock.now = max(self.clock.now, deadline)
            raise QueryTimeout(f"no answer from {address[0]}")
        self.clock.now += 0.001
        response = server.handle(query, tcp)
        wire = response.to_wire()
        if server.wire_hook is not None:
            wire = server.wire_hook(wire)
        if server.garbage is not None:
            wire = server.garbage(wire)
        return wire
