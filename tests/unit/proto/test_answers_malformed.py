"""FORMERR for a message that does not parse: the question echoed when it is readable
(as Unbound answers a malformed OPT), with RA as on every answer; else the header."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import pytest

from dnstls.proto.answers import Rejection, parse_query


def base(edns: bool = True) -> bytes:
    return dns.message.make_query("www.example.test", "A", id=0x1234,
                                  use_edns=0 if edns else None).to_wire()


def _two_opts() -> bytes:
    wire = base()
    return wire[:10] + b"\x00\x02" + wire[12:] + wire[-11:]


def _truncated_option() -> bytes:
    wire = base()
    return wire[:-2] + b"\x00\x04\x00\x0a"  # RDLENGTH 4: half an option header


def _owner_not_root() -> bytes:
    wire = base()
    return wire[:-11] + b"\x01a\x00" + wire[-10:]


@pytest.mark.parametrize("wire", [
    base(False) + b"\x00\x01junk", base() + b"junk", _two_opts(), _truncated_option(),
    _owner_not_root(),
], ids=["trailing after the question", "trailing after the OPT", "two OPT",
        "truncated option", "OPT owner not the root"])
def test_formerr_echoes_the_readable_question(wire: bytes) -> None:
    r = parse_query(wire)
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR and r.wire is not None
    response = dns.message.from_wire(r.wire)
    assert response.id == 0x1234 and response.rcode() == dns.rcode.FORMERR
    assert [q.name.to_text() for q in response.question] == ["www.example.test."]
    assert response.flags & dns.flags.RA and response.flags & dns.flags.RD


def test_an_unreadable_question_gets_the_header_alone() -> None:
    wire = struct.pack("!HHHHHH", 0xBEEF, dns.flags.RD, 1, 0, 0, 0) + b"\x05ab"
    r = parse_query(wire)
    assert isinstance(r, Rejection) and r.wire is not None
    assert r.wire == struct.pack("!HHHHHH", 0xBEEF, 0x8101, 0, 0, 0, 0)
