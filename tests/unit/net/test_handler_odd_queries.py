"""QueryHandler and odd queries, as Unbound 1.17 answers them (docs/serve.md, "Odd queries
and answer shapes"): QCLASS ANY is asked as IN and answered with its own class in the
question; a query with TC set, or a meta QTYPE (MAILA, MAILB, 128-248) gets FORMERR on
every path; none of them reaches the next stage otherwise."""

from __future__ import annotations

import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rrset
import pytest

from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Rejection, Transport, make_response
from dnstls.resolver.base import Request
from dnstls.resolver.local import LocalData, load_zone

ZONE = """$ORIGIN lan.test.
$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 60
@ IN NS ns
ns IN A 192.0.2.53
host IN A 192.0.2.7
"""


class Upstream:
    """The next stage: answers every question with one A record, and records it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int]] = []

    async def resolve(self, request: Request) -> dns.message.Message:
        q = request.message.question[0]
        self.asked.append((q.name.to_text(), int(q.rdtype), int(q.rdclass)))
        response = make_response(request.message)
        response.answer.append(dns.rrset.from_text(q.name, 300, "IN", "A", "192.0.2.1"))
        return response


def handler(tmp_path: Path, *, refuse_other_classes: bool = True,
            ) -> tuple[QueryHandler, Upstream]:
    path = tmp_path / "lan.test.zone"
    path.write_text(ZONE)
    upstream = Upstream()
    local = LocalData(upstream, zones=[load_zone(path)],
                      refuse_other_classes=refuse_other_classes)
    return QueryHandler(local, local=local, keepalive=30.0), upstream


def make(name: str, rdtype: str | int = "A", rdclass: str | int = "IN", *,
         edns: bool = True, rd: bool = True) -> bytes:
    q = dns.message.make_query(name, rdtype, rdclass, id=4660, use_edns=0 if edns else None)
    if not rd:
        q.flags &= ~dns.flags.RD
    return q.to_wire()


async def answer(h: QueryHandler, wire: bytes, transport: Transport = Transport.UDP,
                 ) -> dns.message.Message:
    """What a listener sends back: the fast path's bytes, else the message path's."""
    routed = h.route(wire, transport)
    assert routed is None or isinstance(routed, bytes)  # no wire forwarder here
    if routed is None:
        parsed = h.parse(wire, transport)
        if isinstance(parsed, Rejection):
            assert parsed.wire is not None
            return dns.message.from_wire(parsed.wire)
        routed = await h.answer(parsed, transport, None)
    return dns.message.from_wire(routed)


@pytest.mark.parametrize("refuse_other_classes", [True, False])
@pytest.mark.parametrize("edns", [True, False])
async def test_qclass_any_is_asked_as_in(tmp_path: Path, refuse_other_classes: bool,
                                         edns: bool) -> None:
    h, upstream = handler(tmp_path, refuse_other_classes=refuse_other_classes)
    for _ in range(2):  # and again: nothing of it was kept under class ANY
        got = await answer(h, make("www.example.com", rdclass="ANY", edns=edns))
        assert got.rcode() == dns.rcode.NOERROR
        assert got.question[0].rdclass == dns.rdataclass.ANY  # echoed as asked
        assert [(r.rdclass, r.to_text()) for r in got.answer] == [
            (dns.rdataclass.IN, "www.example.com. 300 IN A 192.0.2.1")]
        assert (got.edns >= 0) == edns and got.id == 4660
    assert upstream.asked == [("www.example.com.", 1, 1)] * 2


async def test_qclass_any_gets_local_data_as_in(tmp_path: Path) -> None:
    h, upstream = handler(tmp_path)
    got = await answer(h, make("host.lan.test", rdclass="ANY"))
    assert got.flags & dns.flags.AA and got.question[0].rdclass == dns.rdataclass.ANY
    assert [r.to_text() for r in got.answer] == ["host.lan.test. 300 IN A 192.0.2.7"]
    assert upstream.asked == []


async def test_other_classes_are_still_refused(tmp_path: Path) -> None:
    h, upstream = handler(tmp_path)
    for rdclass in ("CH", "HS", "NONE", 42):
        got = await answer(h, make("version.bind", "TXT", rdclass))
        assert got.rcode() == dns.rcode.REFUSED
    assert upstream.asked == []


def test_qclass_any_with_rd0_is_judged_as_in(tmp_path: Path) -> None:
    """Access control's RD=0 rule (allow: local data or REFUSED) sees the IN question."""
    h, _ = handler(tmp_path)
    refused = h.refuse_norec(make("www.example.com", rdclass="ANY", rd=False),
                             Transport.UDP)
    assert refused is not None
    assert dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    assert h.refuse_norec(make("host.lan.test", rdclass="ANY", rd=False),
                          Transport.UDP) is None  # local data answers it


@pytest.mark.parametrize("edns", [True, False])
@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP, Transport.TLS])
async def test_a_query_with_tc_set_is_formerr(tmp_path: Path, edns: bool,
                                              transport: Transport) -> None:
    h, upstream = handler(tmp_path)
    for name in ("www.example.com", "host.lan.test"):
        wire = bytearray(make(name, edns=edns))
        wire[2] |= 0x02  # TC
        got = await answer(h, bytes(wire), transport)
        assert got.rcode() == dns.rcode.FORMERR and not got.flags & dns.flags.TC
        assert got.question == dns.message.from_wire(make(name)).question
        assert (got.edns >= 0) == edns
    assert upstream.asked == []


@pytest.mark.parametrize("rdtype", [128, 200, 248, 253, 254])
async def test_meta_qtypes_are_formerr(tmp_path: Path, rdtype: int) -> None:
    h, upstream = handler(tmp_path)
    got = await answer(h, make("example.com", rdtype))
    assert got.rcode() == dns.rcode.FORMERR and got.question[0].rdtype == rdtype
    assert upstream.asked == []


async def test_any_and_ordinary_high_types_are_answered(tmp_path: Path) -> None:
    h, upstream = handler(tmp_path)
    for rdtype in (255, 256, 257, 65280):
        got = await answer(h, make("example.com", rdtype))
        assert got.rcode() == dns.rcode.NOERROR
    assert [t for _, t, _ in upstream.asked] == [255, 256, 257, 65280]


def test_with_question_class_patches_only_the_class() -> None:
    from dnstls.proto.answers import with_question_class
    wire = make("a.b.example", "AAAA", "IN")
    patched = with_question_class(wire, 255)
    assert len(patched) == len(wire)
    q = dns.message.from_wire(patched).question[0]
    assert (q.name.to_text(), q.rdtype, q.rdclass) == ("a.b.example.", 28, 255)
    header = struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0)
    assert with_question_class(header, 255) == header  # no question: unchanged
