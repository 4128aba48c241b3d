"""Cache keys: the wire reader agrees with the parsed-message key, and refuses the rest."""

from __future__ import annotations

import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnstls.proto.cachekey import (
    KEY_AD,
    KEY_CD,
    KEY_DO,
    key_from_message,
    key_from_wire,
    read_query,
)


def query(name: str = "www.Example.COM.", rdtype: str = "A", **kwargs: object,
          ) -> dns.message.QueryMessage:
    return dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]


# -- the property ------------------------------------------------------------------------

labels = st.lists(st.binary(min_size=1, max_size=20), min_size=0, max_size=6)
ascii_labels = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
            min_size=1, max_size=30).map(str.encode),
    min_size=0, max_size=5)
qtypes = st.sampled_from([1, 2, 5, 6, 12, 15, 16, 28, 33, 43, 46, 48, 52, 64, 65, 90, 97, 255,
                          0x4141, 0x5A5A, 65280])
qclasses = st.sampled_from([1, 3, 4, 254, 255, 0x4142])
option_sets = st.lists(st.sampled_from(["padding", "cookie", "keepalive", "ecs"]),
                       unique=True)


def build(name_labels: list[bytes], rdtype: int, rdclass: int, use_edns: bool, do: bool,
          cd: bool, options: list[str], qid: int, ad: bool = False,
          ) -> dns.message.QueryMessage:
    name = dns.name.Name([*name_labels, b""])
    opts: list[dns.edns.Option] = []
    pad = 0
    for o in options:
        if o == "padding":
            pad = 128
        elif o == "cookie":
            opts.append(dns.edns.CookieOption(b"\x01" * 8, b""))
        elif o == "keepalive":
            opts.append(dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b""))
        else:
            opts.append(dns.edns.ECSOption("192.0.2.0", 24))
    msg = dns.message.make_query(name, rdtype, rdclass, id=qid,
                                 use_edns=0 if use_edns or do else None,
                                 want_dnssec=do, options=opts if use_edns else None,
                                 pad=pad if use_edns else 0)
    if cd:
        msg.flags |= dns.flags.CD
    if ad:
        msg.flags |= dns.flags.AD
    return msg


@given(st.one_of(labels, ascii_labels), qtypes, qclasses, st.booleans(), st.booleans(),
       st.booleans(), option_sets, st.integers(0, 0xFFFF), st.booleans())
def test_wire_key_equals_message_key(name_labels: list[bytes], rdtype: int, rdclass: int,
                                     use_edns: bool, do: bool, cd: bool, options: list[str],
                                     qid: int, ad: bool) -> None:
    if sum(len(label) + 1 for label in name_labels) + 1 > 255:
        return
    msg = build(name_labels, rdtype, rdclass, use_edns, do, cd, options, qid, ad)
    wire = msg.to_wire()
    key = key_from_message(msg)
    assert key_from_wire(wire) == key
    assert key_from_message(dns.message.from_wire(wire)) == key
    # The key ignores case, ID, padding, cookies and keepalive ...
    lowered = build([label.lower() for label in name_labels], rdtype, rdclass, True, do, cd,
                    [], 0, ad)
    assert key_from_wire(lowered.to_wire()) == key
    # ... but not DO, CD (nor AD without DO), QTYPE.
    other_ad = build(name_labels, rdtype, rdclass, use_edns, do, cd, options, qid,
                     not ad).to_wire()
    assert (key_from_wire(other_ad) == key) == do
    assert key_from_wire(build(name_labels, rdtype, rdclass, True, not do, cd, options,
                               qid, ad).to_wire()) != key
    assert key_from_wire(build(name_labels, rdtype, rdclass, use_edns, do, not cd, options,
                               qid, ad).to_wire()) != key
    parsed = read_query(wire)
    assert parsed is not None
    assert (parsed.id, parsed.qname, parsed.edns) == (qid, msg.question[0].name.to_wire(),
                                                      msg.edns >= 0)
    assert parsed.padding == ("padding" in options and use_edns)
    assert parsed.keepalive == ("keepalive" in options and use_edns)


def test_key_layout() -> None:
    msg = query("A.b.", "HTTPS", want_dnssec=True)
    msg.flags |= dns.flags.CD
    assert key_from_message(msg) == b"\x01a\x01b\x00" + struct.pack("!HHB", 65, 1,
                                                                   KEY_DO | KEY_CD)


def test_key_ad_only_without_do() -> None:
    msg = query("a.b.")
    msg.flags |= dns.flags.AD
    assert key_from_message(msg)[-1] == KEY_AD == key_from_wire(msg.to_wire())[-1]  # type: ignore[index]
    msg = query("a.b.", want_dnssec=True)
    msg.flags |= dns.flags.AD | dns.flags.CD
    assert key_from_message(msg)[-1] == KEY_DO | KEY_CD == key_from_wire(msg.to_wire())[-1]  # type: ignore[index]


def test_qtype_bytes_are_not_case_folded() -> None:
    # QTYPE 65 is the byte "A" after a zero byte; lower-casing it would make it 97.
    assert key_from_wire(query("x.", 65).to_wire()) != key_from_wire(query("x.", 97).to_wire())
    assert key_from_wire(query("x.", 0x4141).to_wire()) == key_from_message(query("x.", 0x4141))


def test_read_query_facts() -> None:
    msg = query(use_edns=0, payload=4096, pad=128, flags=0,
                options=[dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")])
    facts = read_query(msg.to_wire())
    assert facts is not None
    assert facts.payload == 4096 and facts.padding and facts.keepalive
    assert not facts.rd and facts.qname == b"\x03www\x07Example\x03COM\x00"
    plain = read_query(query().to_wire())
    assert plain is not None and plain.rd and not plain.edns and plain.payload == 0
    assert not facts.nsid and not plain.nsid


@pytest.mark.parametrize("data", [b"", b"any"])  # RFC 5001 asks for an empty one; Unbound
def test_read_query_says_whether_nsid_was_asked(data: bytes) -> None:  # answers either
    msg = query(use_edns=0, pad=128,
                options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, data)])
    facts = read_query(msg.to_wire())
    assert facts is not None and facts.nsid and facts.padding
    assert facts.key == key_from_message(msg)  # not part of the key


def test_message_key_needs_one_question() -> None:
    msg = dns.message.Message()
    with pytest.raises(ValueError, match="exactly one question"):
        key_from_message(msg)


# -- what the wire reader refuses -----------------------------------------------------------


def with_header(wire: bytes, **fields: int) -> bytes:
    qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", wire)
    values = {"id": qid, "flags": flags, "qd": qd, "an": an, "ns": ns, "ar": ar} | fields
    return struct.pack("!HHHHHH", *values.values()) + wire[12:]


def test_every_truncation_is_refused() -> None:
    wire = query(use_edns=0, pad=128, want_dnssec=True).to_wire()
    assert key_from_wire(wire) is not None
    for cut in range(len(wire)):
        assert key_from_wire(wire[:cut]) is None, cut


def test_trailing_bytes_are_refused() -> None:
    assert key_from_wire(query().to_wire() + b"\x00") is None


@pytest.mark.parametrize("fields", [
    {"flags": dns.flags.QR | dns.flags.RD},
    {"flags": dns.opcode.to_flags(dns.opcode.NOTIFY)},
    {"flags": dns.opcode.to_flags(dns.opcode.UPDATE)},
    {"qd": 0}, {"qd": 2}, {"an": 1}, {"ns": 1},
])
def test_header_refusals(fields: dict[str, int]) -> None:
    assert key_from_wire(with_header(query().to_wire(), **fields)) is None


def test_compression_in_question_is_refused() -> None:
    wire = bytearray(query("a.").to_wire())
    # Replace the question name "\x01a\x00" by a pointer to offset 12 (itself).
    compressed = bytes(wire[:12]) + b"\xc0\x0c" + bytes(wire[15:])
    assert key_from_wire(compressed) is None
    extended = bytes(wire[:12]) + b"\x41a\x00" + bytes(wire[15:])  # extended label type
    assert key_from_wire(extended) is None


def test_overlong_name_is_refused() -> None:
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 octets
    wire = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    assert key_from_wire(wire) is None


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR", "TKEY", "TSIG", "OPT", "MAILA", "MAILB",
                                    "TYPE128", "TYPE200", "TYPE248"])
def test_meta_qtypes_are_refused(rdtype: str) -> None:
    wire = query("a.", "A").to_wire()
    code = dns.rdatatype.from_text(rdtype)
    assert key_from_wire(wire[:-4] + struct.pack("!HH", code, 1)) is None


@pytest.mark.parametrize("rdtype", ["ANY", "TYPE127", "TYPE256"])
def test_any_and_data_types_next_to_the_meta_range_are_read(rdtype: str) -> None:
    wire = query("a.", "A").to_wire()
    code = dns.rdatatype.from_text(rdtype)
    assert key_from_wire(wire[:-4] + struct.pack("!HH", code, 1)) is not None


def test_a_query_with_tc_set_is_left_to_the_slow_path() -> None:
    """It gets FORMERR there (answers.parse_query), as from Unbound."""
    wire = bytearray(query("a.", "A").to_wire())
    assert key_from_wire(bytes(wire)) is not None
    wire[2] |= 0x02
    assert key_from_wire(bytes(wire)) is None


def opt_rr(ttl: int = 0, rdata: bytes = b"", owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", 41, 1232, ttl, len(rdata)) + rdata


def add_records(wire: bytes, *records: bytes) -> bytes:
    ar = struct.unpack_from("!H", wire, 10)[0]
    return with_header(wire, ar=ar + len(records)) + b"".join(records)


def test_additional_section_walk() -> None:
    base = query("a.").to_wire()
    # A glue-like record with a compressed owner before the OPT is skipped safely.
    a_rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)
    key = key_from_wire(add_records(base, a_rr, opt_rr(ttl=0x8000)))
    assert key == key_from_message(query("a.", want_dnssec=True))
    assert key_from_wire(add_records(base, opt_rr(), opt_rr())) is None  # two OPTs
    assert key_from_wire(add_records(base, opt_rr(owner=b"\x01a\x00"))) is None
    assert key_from_wire(add_records(base, opt_rr(ttl=1 << 16))) is None  # EDNS version 1
    assert key_from_wire(add_records(base, opt_rr(rdata=b"\x00\x0c\x00\x05ab"))) is None
    assert key_from_wire(add_records(base, opt_rr(rdata=b"\x00\x0c"))) is None
    tsig = b"\x00" + struct.pack("!HHIH", 250, 255, 0, 0)
    assert key_from_wire(add_records(base, tsig)) is None
    bad_owner = b"\x41" + struct.pack("!HHIH", 1, 1, 0, 0)
    assert key_from_wire(add_records(base, bad_owner)) is None
    assert key_from_wire(add_records(base, b"\xc0")) is None  # pointer cut short
    assert key_from_wire(add_records(base, b"\x05ab")) is None  # name runs off the end
    overlong = b"\x00" + struct.pack("!HHIH", 1, 1, 0, 9) + bytes(4)
    assert key_from_wire(add_records(base, overlong)) is None


@pytest.mark.parametrize(("option", "fast"), [
    (b"\x00\x0a\x00\x08" + bytes(8), True),  # client cookie
    (b"\x00\x0a\x00\x10" + bytes(16), True),  # client + server cookie
    (b"\x00\x0a\x00\x03abc", False),  # malformed cookie: FORMERR on the slow path
    (b"\x00\x0a\x00\x0c" + bytes(12), False),
    (b"\x00\x03\x00\x00", True),  # NSID request
    (b"\xfd\xe9\x00\x02ab", True),  # unknown (local use) option: opaque
    (b"\x00\x08\x00\x01a", False),  # ECS too short: dnspython validates it
    (b"\x00\x08\x00\x04\x00\x01\x00\x00", True),  # ECS 0.0.0.0/0 (Stubby's default)
    (b"\x00\x08\x00\x07\x00\x01\x18\x00\xc0\x00\x02", True),  # 192.0.2.0/24
    (b"\x00\x08\x00\x04\x00\x00\x00\x00", False),  # family 0
    (b"\x00\x08\x00\x05\x00\x01\x00\x00\x00", False),  # address bytes past /0
    (b"\x00\x08\x00\x06\x00\x01\x0c\x00\xc0\x01", False),  # bits past /12 set
    (b"\x00\x08\x00\x08\x00\x01\x21\x00" + bytes(4), False),  # /33 for IPv4
    (b"\x00\x0f\x00\x01a", False),  # EDE
])
def test_options_the_slow_path_validates(option: bytes, fast: bool) -> None:
    wire = add_records(query("a.").to_wire(), opt_rr(rdata=option))
    assert (key_from_wire(wire) is not None) == fast
    try:
        dns.message.from_wire(wire)
    except dns.exception.FormError:
        assert not fast


@given(st.integers(0, 3), st.integers(0, 140), st.integers(0, 140), st.binary(max_size=20))
def test_ecs_fast_path_accepts_exactly_what_the_slow_path_parses(
        family: int, source: int, scope: int, address: bytes) -> None:
    data = struct.pack("!HBB", family, source, scope) + address
    option = struct.pack("!HH", 8, len(data)) + data
    wire = add_records(query("a.").to_wire(), opt_rr(rdata=option))
    try:
        dns.message.from_wire(wire)
        parses = True
    except Exception:
        parses = False
    assert (key_from_wire(wire) is not None) == parses


@given(st.sampled_from([1, 2]), st.integers(0, 128), st.binary(min_size=16, max_size=16))
def test_ecs_well_formed_options_are_fast(family: int, source: int, address: bytes) -> None:
    bits = 32 if family == 1 else 128
    source = min(source, bits)
    length = (source + 7) // 8
    addr = bytearray(address[:length])
    if source % 8:
        addr[-1] &= (0xFF << (8 - source % 8)) & 0xFF
    data = struct.pack("!HBB", family, source, 0) + bytes(addr)
    wire = add_records(query("a.").to_wire(),
                       opt_rr(rdata=struct.pack("!HH", 8, len(data)) + data))
    dns.message.from_wire(wire)  # the slow path accepts it ...
    assert key_from_wire(wire) is not None  # ... and so does the fast path
