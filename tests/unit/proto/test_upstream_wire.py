"""The wire-level upstream path: query rendering, response matching, keepalive."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from dnstls.proto import edns
from dnstls.proto.answers import truncate_wire
from dnstls.proto.cachekey import read_query
from dnstls.proto.framing import encode
from dnstls.proto.upstream import (
    ConnectionState,
    QueryRejected,
    WireMatched,
    check_response_wire,
    prepare_query_wire,
    response_keepalive,
)


def question(name: str = "Www.Example.NET", rdtype: str = "A") -> bytes:
    wq = read_query(dns.message.make_query(name, rdtype).to_wire())
    assert wq is not None
    return wq.key[:-1]


def answer_to(query_wire: bytes, *, name: str | None = None,
              options: list[dns.edns.Option] | None = None) -> bytes:
    q = dns.message.from_wire(query_wire)
    r = dns.message.make_response(q, pad=0)
    if options is not None:
        r.use_edns(0, 0, 1232, options=options)
    owner = dns.name.from_text(name) if name else q.question[0].name
    r.answer.append(dns.rrset.from_text(owner, 60, "IN", "A", "192.0.2.1"))
    if name is not None:
        r.question = [dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.A)]
    return r.to_wire()


@pytest.mark.parametrize("pad", [0, 128])
def test_prepare_query_wire(pad: int) -> None:
    wire = prepare_query_wire(question(), qid=0x1234, flags=0x0130 | 0x8000 | 0x0400,
                              payload=4096, do=True, pad=pad, keepalive=True)
    q = dns.message.from_wire(wire)
    assert q.id == 0x1234 and q.flags == dns.flags.RD | dns.flags.CD | dns.flags.AD
    assert q.question[0].name.to_text() == "www.example.net."
    assert q.payload == 4096 and q.ednsflags & dns.flags.DO
    assert edns.has_option(q, edns.KEEPALIVE)
    if pad:
        assert len(wire) % pad == 0
    else:
        assert not edns.has_option(q, edns.PADDING)


def test_check_response_wire() -> None:
    qw = question()
    query = prepare_query_wire(qw, qid=7, flags=0x0100, payload=1232, do=False)
    good = answer_to(query)
    assert check_response_wire(good, qw) is None
    upper = bytearray(good)
    upper[13:16] = b"WWW"  # 0x20 case in the echoed question is fine
    assert check_response_wire(bytes(upper), qw) is None
    assert check_response_wire(answer_to(query, name="other.example.net"), qw) is not None
    qr0 = bytearray(good)
    qr0[2] &= 0x7F
    assert check_response_wire(bytes(qr0), qw) == "QR=0 in a response"
    assert check_response_wire(good[:14], qw) is not None
    other_type = bytearray(good)
    other_type[12 + len(qw) - 3] = 28  # QTYPE AAAA
    assert check_response_wire(bytes(other_type), qw) is not None


def test_response_keepalive() -> None:
    query = prepare_query_wire(question(), qid=7, flags=0x0100, payload=1232, do=False)
    assert response_keepalive(answer_to(query)) is None
    wire = answer_to(query, options=[edns.keepalive_option(25.0)])
    assert response_keepalive(wire) == 25.0
    assert response_keepalive(b"\x00" * 5) is None


def _connected() -> ConnectionState:
    state = ConnectionState("tls://192.0.2.1:853", max_in_flight=10)
    state.connected(0.0)
    return state


def test_connection_matches_wire_queries() -> None:
    state = _connected()
    qw = question()
    state.reserve()
    qid, framed = state.start_query_wire(qw, 1.0, flags=0x0100, payload=1232, do=False,
                                         pad=128, keepalive=True)
    assert len(framed) - 2 == 128
    reply = bytearray(answer_to(framed[2:], options=[edns.keepalive_option(3.0)]))
    events = state.receive(encode(bytes(reply)), 1.5)
    assert events == [WireMatched(qid, bytes(reply), 0.5)]
    assert state.idle_timeout == 3.0
    assert not state.in_flight


def test_connection_rejects_wrong_question_on_wire_path() -> None:
    state = _connected()
    state.reserve()
    qid, framed = state.start_query_wire(question(), 1.0, flags=0x0100, payload=1232,
                                         do=False)
    wrong = answer_to(framed[2:], name="evil.example.net")
    [event] = state.receive(encode(wrong), 1.2)
    assert isinstance(event, QueryRejected) and event.qid == qid


def test_truncate_wire() -> None:
    q = dns.message.make_query("www.example.net", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.net.", 60, "IN", "A", "192.0.2.1"))
    wire = r.to_wire()
    short = dns.message.from_wire(truncate_wire(wire, len(b"\x03www\x07example\x03net\x00") + 4,
                                                edns=True, do=True))
    assert short.flags & dns.flags.TC and not short.answer and short.question == q.question
    assert short.edns == 0 and short.ednsflags & dns.flags.DO


def test_response_keepalive_ignores_a_lying_rdlength_and_options_outside_opt() -> None:
    query = prepare_query_wire(b"\x03www\x07example\x00\x00\x01\x00\x01", qid=9, flags=0x0100,
                               payload=1232, do=False)
    wire = answer_to(query, options=[edns.keepalive_option(7.5)])
    assert response_keepalive(wire) == 7.5
    assert response_keepalive(wire[:-1]) is None  # RDATA runs past the end: no crash
    # the option's bytes inside an answer's RDATA are not an OPT option
    fake = dns.message.from_wire(answer_to(query))
    fake.answer.append(dns.rrset.from_text("www.example.", 60, "IN", "TXT",
                                           '"\\000\\011\\000\\002\\000\\100"'))
    assert response_keepalive(fake.to_wire()) is None
