import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rrset
import pytest

from dnstls.proto import edns
from dnstls.proto.answers import (
    Rejection,
    Transport,
    error_response,
    finalize,
    header_error,
    make_response,
    parse_query,
    truncate_wire,
)


def query(name: str = "example.test", rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


def test_valid_query_parses() -> None:
    q = query(use_edns=0)
    parsed = parse_query(q.to_wire())
    assert isinstance(parsed, dns.message.Message)
    assert parsed.question == q.question


def test_short_message_cannot_be_answered() -> None:
    r = parse_query(b"\x00" * 11)
    assert isinstance(r, Rejection) and r.wire is None and r.rcode is None and r.fatal


def test_qr_set_is_dropped() -> None:
    wire = bytearray(query().to_wire())
    wire[2] |= 0x80
    r = parse_query(bytes(wire))
    assert isinstance(r, Rejection) and r.wire is None and "QR" in r.reason and not r.fatal


def test_garbage_after_header_gets_formerr_with_id_and_rd() -> None:
    wire = struct.pack("!HHHHHH", 0xBEEF, dns.flags.RD, 1, 0, 0, 0) + b"\xff\xff\xff"
    r = parse_query(wire)
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR
    assert r.wire is not None
    response = dns.message.from_wire(r.wire)
    assert response.id == 0xBEEF
    assert response.flags & dns.flags.QR and response.flags & dns.flags.RD
    assert response.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("count", [0, 2])
def test_qdcount_other_than_one_is_formerr(count: int) -> None:
    q = query()
    q.question = q.question * count
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR


def test_other_opcode_is_notimp() -> None:
    q = query()
    q.set_opcode(dns.opcode.STATUS)
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.NOTIMP
    assert r.wire is not None and dns.message.from_wire(r.wire).rcode() == dns.rcode.NOTIMP


def _header(wire: bytes) -> tuple[int, int, int, int]:
    """(opcode, RCODE, QDCOUNT, ARCOUNT) of a response's header."""
    _, flags, qdcount, _, _, arcount = struct.unpack_from("!HHHHHH", wire)
    return (flags >> 11) & 0xF, flags & 0xF, qdcount, arcount


# IQUERY, STATUS, unassigned 3, NOTIFY, UPDATE, DSO, unassigned 7..15
OTHER_OPCODES = [1, 2, 3, 4, 5, 6, 7, 15]


@pytest.mark.parametrize("opcode", OTHER_OPCODES)
@pytest.mark.parametrize("with_edns", [False, True])
def test_other_opcodes_get_notimp_with_our_opt_when_the_message_had_one(
        opcode: int, with_edns: bool) -> None:
    # An OPT of ours is what the handler pads on DoT (RFC 7830 §4) and adds keepalive
    # to; NOTIMP answers carried none (only the question was read). An UPDATE whose
    # zone section is no SOA was a header-only FORMERR (dnspython's UPDATE rules).
    q = query(use_edns=0, payload=4000) if with_edns else query(use_edns=False)
    q.set_opcode(opcode)
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.NOTIMP and r.wire is not None
    # an UPDATE's zone section is echoed only if it is one SOA (RFC 2136 §2.3), as
    # UPDATE clients read it (dnspython refuses the response otherwise)
    echoed = 0 if opcode == dns.opcode.UPDATE else 1
    assert _header(r.wire) == (opcode, dns.rcode.NOTIMP, echoed, 1 if with_edns else 0)
    assert r.response is not None and r.query is not None
    assert r.response.edns == (0 if with_edns else -1)
    if with_edns:
        assert r.response.payload == 1232  # ours, not the query's


@pytest.mark.parametrize("opcode", OTHER_OPCODES)
def test_other_opcodes_with_edns_version_1_get_badvers_first(opcode: int) -> None:
    # RFC 6891 §6.1.3: nothing of a message of an unknown EDNS version is read (BIND
    # answers BADVERS before it looks at the opcode)
    q = query(use_edns=1)
    q.set_opcode(opcode)
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.BADVERS and r.wire is not None
    assert _header(r.wire) == (opcode, dns.rcode.BADVERS & 0xF, 1, 1)
    assert r.response is not None and r.response.edns == 0


@pytest.mark.parametrize("rdclass", ["IN", "CH"])
def test_an_update_gets_notimp_its_client_can_read(rdclass: str) -> None:
    update = dns.message.make_query("example.test", "SOA", rdclass, use_edns=0)
    update.set_opcode(dns.opcode.UPDATE)
    r = parse_query(update.to_wire())
    assert isinstance(r, Rejection) and r.wire is not None
    response = dns.message.from_wire(r.wire)  # an UpdateMessage, by RFC 2136's rules
    assert (response.opcode(), response.rcode()) == (dns.opcode.UPDATE, dns.rcode.NOTIMP)
    assert [(z.name, z.rdtype) for z in response.question] == [
        (dns.name.from_text("example.test"), dns.rdatatype.SOA)]


def test_a_dso_message_gets_notimp() -> None:
    # RFC 8490 §5.1.1: NOTIMP tells the client this server does not implement DSO
    # (DSOTYPENI is for servers that do). Counts 0, a Keepalive TLV after the header.
    wire = struct.pack("!HHHHHH", 0x4242, 6 << 11, 0, 0, 0, 0) + struct.pack(
        "!HHII", 1, 8, 10000, 10000)
    r = parse_query(wire)
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.NOTIMP and r.wire is not None
    assert r.wire[:2] == b"\x42\x42" and _header(r.wire) == (6, dns.rcode.NOTIMP, 0, 0)


@pytest.mark.parametrize("opcode", [4, 5, 6])
def test_other_opcodes_with_a_malformed_body_get_notimp(opcode: int) -> None:
    wire = struct.pack("!HHHHHH", 7, (opcode << 11) | dns.flags.RD, 1, 0, 0, 1) + b"\x03www"
    r = parse_query(wire)
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.NOTIMP and r.wire is not None
    assert _header(r.wire) == (opcode, dns.rcode.NOTIMP, 0, 0)


@pytest.mark.parametrize("count", [0, 2])
def test_qdcount_other_than_one_with_edns_gets_an_opt(count: int) -> None:
    # a header-only FORMERR before: on DoT a padded query got an unpadded answer
    q = query(use_edns=0)
    q.question = q.question * count
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR and r.wire is not None
    assert r.response is not None and r.response.edns == 0
    assert _header(r.wire) == (0, dns.rcode.FORMERR, count, 1)


def test_qdcount_two_with_edns_version_1_is_badvers() -> None:
    q = query(use_edns=1)
    q.question = q.question * 2
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.BADVERS


@pytest.mark.parametrize("opcode", [0, 4])
def test_many_questions_are_not_echoed_past_the_udp_size(opcode: int) -> None:
    q = query("a" * 60 + "." + "b" * 60 + ".example.test", use_edns=0, payload=1232)
    q.question = [dns.rrset.RRset(dns.name.from_text(f"{i}" + "x" * 60 + ".example.test"),
                                  1, 1) for i in range(40)]
    q.set_opcode(opcode)
    r = parse_query(q.to_wire(max_size=65535))
    assert isinstance(r, Rejection) and r.wire is not None and len(r.wire) <= 1232
    assert r.rcode == (dns.rcode.FORMERR if opcode == 0 else dns.rcode.NOTIMP)
    assert _header(r.wire)[2:] == (0, 1)


def test_edns_version_1_is_badvers() -> None:
    r = parse_query(query(use_edns=1).to_wire())
    assert isinstance(r, Rejection) and r.wire is not None
    response = dns.message.from_wire(r.wire)
    assert response.rcode() == dns.rcode.BADVERS and response.edns == 0


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfer_refused(rdtype: str) -> None:
    r = parse_query(query(rdtype=rdtype).to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.REFUSED


def test_meta_type_in_question_is_formerr() -> None:
    r = parse_query(query(rdtype="OPT").to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR


def test_two_opt_records_is_formerr() -> None:
    wire = bytearray(query(use_edns=0).to_wire())
    opt = bytes(wire[-11:])
    wire += opt
    wire[11] = 2  # ARCOUNT
    r = parse_query(bytes(wire))
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR


def test_header_error_needs_a_header() -> None:
    assert header_error(b"abc", dns.rcode.FORMERR) is None


def test_header_error_echoes_id_opcode_rd_and_cd() -> None:
    """RFC 1035 §4.1.1 (ID, opcode, RD) and RFC 4035 §3.1.6 (CD); nothing else: not
    the query's AA, TC, RA, Z or AD, nor its counts."""
    flags = 0x2000 | 0x0100 | 0x0010 | 0x0400 | 0x0200 | 0x0080 | 0x0040 | 0x0020
    wire = struct.pack("!HHHHHH", 0x1234, flags, 1, 0, 0, 0) + b"\xff"
    out = header_error(wire, dns.rcode.FORMERR)
    assert out is not None
    qid, out_flags, *counts = struct.unpack("!HHHHHH", out)
    assert qid == 0x1234 and counts == [0, 0, 0, 0]
    assert out_flags == 0x8000 | 0x2000 | 0x0100 | 0x0010 | dns.rcode.FORMERR
    plain = header_error(struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0), dns.rcode.FORMERR)
    assert plain is not None and struct.unpack_from("!H", plain, 2)[0] == 0x8001


def _padded_keepalive_query() -> dns.message.Message:
    q = query(use_edns=0, pad=128, options=[edns.keepalive_option(None)])
    return dns.message.from_wire(q.to_wire())  # padding exists only on the wire


def test_tls_pads_to_468_and_answers_keepalive() -> None:
    q = _padded_keepalive_query()
    wire = finalize(make_response(q), q, Transport.TLS, keepalive=10.0)
    assert len(wire) % 468 == 0
    response = dns.message.from_wire(wire)
    ka = edns.find_option(response, edns.KEEPALIVE)
    assert ka is not None and edns.keepalive_timeout(ka) == 10.0


def test_plain_tcp_never_pads_but_answers_keepalive() -> None:
    q = _padded_keepalive_query()
    response = dns.message.from_wire(finalize(make_response(q), q, Transport.TCP, keepalive=7.5))
    assert not edns.has_option(response, edns.PADDING)
    assert edns.has_option(response, edns.KEEPALIVE)


def test_udp_has_neither_padding_nor_keepalive() -> None:
    q = _padded_keepalive_query()
    response = dns.message.from_wire(finalize(make_response(q), q, Transport.UDP, keepalive=7.5))
    assert not response.options


def test_unpadded_query_gets_unpadded_answer_on_tls() -> None:
    q = query(use_edns=0)
    response = dns.message.from_wire(finalize(make_response(q), q, Transport.TLS))
    assert not edns.has_option(response, edns.PADDING)


def _big_response(q: dns.message.Message) -> dns.message.Message:
    response = make_response(q)
    rrset = dns.rrset.from_text("example.test.", 300, "IN", "TXT",
                                *[f'"{"x" * 200}{i}"' for i in range(10)])
    response.answer.append(rrset)
    return response


def test_udp_truncates_beyond_512_without_edns() -> None:
    q = query(rdtype="TXT")
    wire = finalize(_big_response(q), q, Transport.UDP)
    response = dns.message.from_wire(wire)
    assert len(wire) <= 512 and response.flags & dns.flags.TC and not response.answer
    assert response.question == q.question


def test_udp_respects_edns_buffer_and_streams_never_truncate() -> None:
    q = query(rdtype="TXT", use_edns=0, payload=4096)
    assert not dns.message.from_wire(finalize(_big_response(q), q, Transport.UDP)).flags \
        & dns.flags.TC
    q2 = query(rdtype="TXT")
    response = dns.message.from_wire(finalize(_big_response(q2), q2, Transport.TCP))
    assert not response.flags & dns.flags.TC and response.answer


def test_error_response_carries_ede() -> None:
    q = query(use_edns=0)
    response = error_response(q, dns.rcode.SERVFAIL, ede=22, text="no upstream")
    back = dns.message.from_wire(finalize(response, q, Transport.TLS))
    ede = edns.find_option(back, edns.EDE)
    assert back.rcode() == dns.rcode.SERVFAIL
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == 22 and ede.text == "no upstream"


def test_cd_bit_is_echoed() -> None:
    q = query()
    q.flags |= dns.flags.CD
    assert make_response(q).flags & dns.flags.CD


def test_stream_answer_larger_than_the_edns_payload_is_sent_whole() -> None:
    q = dns.message.from_wire(query(rdtype="TXT", use_edns=0, payload=1232).to_wire())
    response = _big_response(q)
    response.answer[0].add(dns.rdata.from_text("IN", "TXT", '"' + "y" * 250 + '"'))
    for _ in range(3):
        response.answer.append(dns.rrset.from_text(
            "example.test.", 300, "IN", "TXT", *[f'"{"z" * 250}{i}"' for i in range(3)]))
    wire = finalize(response, q, Transport.TLS)
    assert len(wire) > 1232
    assert not dns.message.from_wire(wire).flags & dns.flags.TC


def test_a_stream_answer_too_long_to_frame_is_truncated() -> None:
    """Past 65,535 bytes (an upstream's answer of about that size, with our OPT, the
    keepalive and the padding added) nothing can frame it: TC=1 with the question, as
    Unbound and Knot Resolver answer then. It raised dns.exception.TooBig out of the
    handler, and the client was never answered (fuzz/fuzz_upstream_path.py)."""
    keepalive = dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")
    q = query(rdtype="TXT", use_edns=0, pad=128, options=[keepalive])
    response = make_response(q)
    response.answer.append(dns.rrset.from_text(
        "example.test.", 300, "IN", "TXT", *[f'"{i:05d}{"z" * 245}"' for i in range(248)],
        f'"{"z" * 253}"'))
    assert 65530 <= len(response.to_wire(max_size=65535)) < 65535
    wire = finalize(response, q, Transport.TLS, keepalive=10.0)
    back = dns.message.from_wire(wire)
    assert len(wire) <= 65535 and back.flags & dns.flags.TC and not back.answer
    assert back.question == q.question


def test_records_in_answer_section_of_a_query_is_formerr() -> None:
    q = query(use_edns=0)
    q.answer.append(dns.rrset.from_text("example.test.", 1, "IN", "A", "192.0.2.1"))
    r = parse_query(q.to_wire())
    assert isinstance(r, Rejection) and r.rcode == dns.rcode.FORMERR


def test_zone_transfer_refusal_carries_ede_with_edns() -> None:
    r = parse_query(query(rdtype="AXFR", use_edns=0).to_wire())
    assert isinstance(r, Rejection) and r.wire is not None
    ede = edns.find_option(dns.message.from_wire(r.wire), edns.EDE)
    assert isinstance(ede, dns.edns.EDEOption) and ede.code == dns.edns.EDECode.PROHIBITED


def test_udp_truncation_keeps_edns_without_padding() -> None:
    q = dns.message.from_wire(query(rdtype="TXT", use_edns=0, payload=600, pad=128).to_wire())
    wire = finalize(_big_response(q), q, Transport.UDP)
    response = dns.message.from_wire(wire)
    assert len(wire) <= 600 and response.flags & dns.flags.TC and response.edns == 0
    assert not edns.has_option(response, edns.PADDING)


@pytest.mark.parametrize("do", [True, False])
def test_every_answer_copies_the_do_bit(do: bool) -> None:
    """RFC 3225 §3, as Unbound 1.17 does: dnspython's make_response clears
    DO; every answer we build (the skeleton, error answers with and without an EDE,
    rejections and NOTIMP for another opcode) has the query's."""
    asked = query(use_edns=0, want_dnssec=do)
    notify = query("example.test", "SOA", use_edns=0, want_dnssec=do)
    notify.set_opcode(dns.opcode.NOTIFY)
    axfr = query("example.test", "AXFR", use_edns=0, want_dnssec=do)
    two = query(use_edns=0, want_dnssec=do)
    two.question.append(two.question[0])
    built = [make_response(asked),
             error_response(asked, dns.rcode.SERVFAIL),
             error_response(asked, dns.rcode.SERVFAIL, ede=22, text="timed out")]
    for message in (notify, axfr, two):
        rejection = parse_query(message.to_wire())
        assert isinstance(rejection, Rejection) and rejection.wire is not None
        built.append(dns.message.from_wire(rejection.wire))
    for response in built:
        assert response.edns == 0
        assert bool(response.ednsflags & dns.flags.DO) is do, response
    finalized = dns.message.from_wire(finalize(built[2], asked, Transport.TLS))
    assert bool(finalized.ednsflags & dns.flags.DO) is do


# -- access control's REFUSED (refused_query) -------------------------------------------
def _ede_codes(message: dns.message.Message) -> list[int]:
    return [o.code for o in message.options if isinstance(o, dns.edns.EDEOption)]


def test_refused_query_echoes_the_question_with_ede_18() -> None:
    from dnstls.proto.answers import refused_query

    q = query("example.test", "AAAA", use_edns=0, want_dnssec=True)
    q.id = 4242
    r = refused_query(q.to_wire())
    assert r.rcode == dns.rcode.REFUSED and r.wire is not None and not r.fatal
    response = dns.message.from_wire(r.wire)
    assert response.id == 4242 and response.rcode() == dns.rcode.REFUSED
    assert response.flags & dns.flags.QR and response.flags & dns.flags.RD
    assert response.question == q.question
    assert _ede_codes(response) == [dns.edns.EDECode.PROHIBITED]
    assert not response.answer and not response.authority and len(response.additional) == 0
    ede = next(o for o in response.options if isinstance(o, dns.edns.EDEOption))
    assert ede.text is None  # nothing to amplify with
    assert response.ednsflags & dns.flags.DO  # the query's DO bit, as every answer
    plain = dns.message.from_wire(refused_query(query(use_edns=0).to_wire()).wire or b"")
    assert plain.edns == 0 and not plain.ednsflags & dns.flags.DO


def test_refused_query_without_edns_has_no_opt() -> None:
    from dnstls.proto.answers import refused_query

    q = query(use_edns=False)
    r = refused_query(q.to_wire())
    assert r.wire is not None and len(r.wire) == len(q.to_wire())  # header + question
    response = dns.message.from_wire(r.wire)
    assert response.edns < 0 and response.rcode() == dns.rcode.REFUSED


def test_refused_query_is_no_bigger_than_needed_over_udp() -> None:
    from dnstls.proto.answers import refused_query

    # a padded query with a cookie: the answer carries neither (our OPT, EDE only)
    q = query(use_edns=0, pad=128, options=[dns.edns.CookieOption(b"\1" * 8, b"")])
    r = refused_query(q.to_wire())
    assert r.wire is not None
    assert len(r.wire) <= len(q.to_wire())
    assert len(r.wire) == 12 + len(b"\x0cexample\x04test\x00") + 4 + 11 + 6


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, 3, 15])
def test_refused_query_refuses_every_opcode(opcode: int) -> None:
    from dnstls.proto.answers import refused_query

    q = query("example.test", "SOA", use_edns=0)
    q.set_opcode(opcode)
    r = refused_query(q.to_wire())
    assert r.rcode == dns.rcode.REFUSED and r.wire is not None
    assert (r.wire[2] >> 3) & 0xF == opcode and r.wire[3] & 0xF == dns.rcode.REFUSED


def test_refused_query_unreadable_body_gets_the_header() -> None:
    from dnstls.proto.answers import refused_query

    wire = struct.pack("!HHHHHH", 99, 0x0100, 1, 0, 0, 0) + b"\x07garbage"
    r = refused_query(wire)
    assert r.wire == struct.pack("!HHHHHH", 99, 0x8105, 0, 0, 0, 0)


def test_refused_query_short_and_qr() -> None:
    from dnstls.proto.answers import refused_query

    short = refused_query(b"\0" * 11)
    assert short.wire is None and short.fatal
    response = make_response(query()).to_wire()
    qr = refused_query(response)
    assert qr.wire is None and not qr.fatal


def test_refused_query_with_several_questions_echoes_none() -> None:
    from dnstls.proto.answers import refused_query

    q = query(use_edns=0)
    q.question.append(dns.rrset.RRset(dns.name.from_text("b.test"), 1, 1))
    r = refused_query(q.to_wire())
    assert r.wire is not None
    response = dns.message.from_wire(r.wire)
    assert response.question == [] and response.rcode() == dns.rcode.REFUSED


def _nsid_query(*, pad: int = 0, payload: int = 1232, asked: bool = True,
                name: str = "example.com") -> dns.message.Message:
    options = [dns.edns.GenericOption(edns.NSID, b"")] if asked else []
    return dns.message.from_wire(dns.message.make_query(
        name, "TXT", use_edns=0, pad=pad, payload=payload, options=options).to_wire())


def _nsid_of(wire: bytes) -> bytes | None:
    option = edns.find_option(dns.message.from_wire(wire), edns.NSID)
    return None if option is None else option.to_wire()


@pytest.mark.parametrize("transport", list(Transport))
def test_finalize_adds_the_nsid_when_asked(transport: Transport) -> None:
    query = _nsid_query()
    out = finalize(make_response(query), query, transport, nsid=b"dot-1")
    assert _nsid_of(out) == b"dot-1"
    plain = _nsid_query(asked=False)
    assert _nsid_of(finalize(make_response(plain), plain, transport, nsid=b"dot-1")) is None
    assert _nsid_of(finalize(make_response(query), query, transport)) is None  # none set
    error = error_response(query, dns.rcode.SERVFAIL, ede=dns.edns.EDECode.OTHER, text="x")
    answer = dns.message.from_wire(finalize(error, query, transport, nsid=b"dot-1"))
    assert {o.otype for o in answer.options} == {edns.NSID, edns.EDE}


@pytest.mark.parametrize("length", range(0, 480, 7))
def test_padding_counts_the_nsid(length: int) -> None:
    # RFC 8467: the whole response a multiple of 468 bytes, NSID included
    query = _nsid_query(pad=128)
    out = finalize(make_response(query), query, Transport.TLS, nsid=b"n" * (length or 1))
    assert len(out) % 468 == 0 and _nsid_of(out) == b"n" * (length or 1)
    assert edns.has_option(dns.message.from_wire(out), edns.PADDING)


def test_the_nsid_never_takes_an_answer_past_the_udp_size() -> None:
    query = _nsid_query(payload=512)
    response = make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "TXT",
                                               '"' + "t" * 200 + '"', '"' + "u" * 200 + '"'))
    assert len(finalize(response, query, Transport.UDP)) <= 512  # fits without the NSID
    out = finalize(response, query, Transport.UDP, nsid=b"n" * 100)
    answer = dns.message.from_wire(out)
    assert len(out) <= 512 and answer.flags & dns.flags.TC and not answer.answer
    assert _nsid_of(out) == b"n" * 100  # the truncated answer still says who answered


def test_truncate_wire_carries_options() -> None:
    query = _nsid_query()
    full = finalize(make_response(query), query, Transport.UDP)
    nsid = edns.nsid_option_wire(b"x")
    out = truncate_wire(full, len(query.question[0].name.to_wire()) + 4, edns=True,
                        options=nsid)
    answer = dns.message.from_wire(out)
    assert answer.flags & dns.flags.TC and _nsid_of(out) == b"x"
