"""Property tests (hypothesis) over the parts of proto/ that see hostile bytes first.

* framing: any chunking of any stream gives the same messages; a zero length prefix
  raises FramingError and nothing after it is ever returned; arbitrary bytes never
  raise anything else;
* ``parse_query`` never raises: always a Message or a Rejection; a Rejection that has
  bytes parses as a response carrying the query's ID; one without bytes is exactly the
  "no header" or "QR set" case; an accepted Message has one question and opcode QUERY;
* ``finalize``: the ID is the query's; on TLS a padded query gets a response padded to
  468-byte blocks; nothing is padded in cleartext; UDP answers fit the client's size
  (512 without EDNS) and set TC when cut; streams never set TC; keepalive only on
  streams and only when asked;
* ``read_query`` (the fast path) vs the slow path: whatever the fast path accepts --
  including mutated queries -- the slow path accepts too, with the same cache key.

The mutation strategies flip, cut, insert and overwrite bytes of well-formed queries,
which reaches far deeper into the parser than uniformly random bytes.
"""

from __future__ import annotations

import itertools
import os
import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dnstls.proto import edns
from dnstls.proto.answers import MIN_UDP, Rejection, Transport, finalize, make_response, parse_query
from dnstls.proto.cachekey import key_from_message, read_query
from dnstls.proto.framing import FrameDecoder, FramingError, encode_many

#: DNSTLS_PROPERTY_SCALE=50 multiplies the examples for a longer local campaign.
SCALE = float(os.environ.get("DNSTLS_PROPERTY_SCALE", "1"))


def examples(n: int) -> settings:
    return settings(max_examples=max(10, int(n * SCALE)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


SETTINGS = examples(200)

# ----------------------------------------------------------------------------- inputs

label = st.binary(min_size=1, max_size=20).filter(lambda b: b"." not in b) | st.sampled_from(
    [b"www", b"Example", b"TEST", b"a" * 63, b"\x00", b"xn--bcher-kva"])
names = st.lists(label, min_size=0, max_size=6).filter(
    lambda ls: sum(len(x) + 1 for x in ls) + 1 <= 255)
qtypes = st.sampled_from([1, 2, 5, 6, 15, 16, 28, 33, 43, 46, 48, 64, 65, 255, 41, 250,
                          251, 252, 0, 65535])
qclasses = st.sampled_from([1, 3, 4, 254, 255, 2])


@st.composite
def queries(draw: st.DrawFn) -> dns.message.Message:
    name = dns.name.Name([*draw(names), b""])
    use_edns = draw(st.booleans())
    options: list[dns.edns.Option] = []
    if use_edns and draw(st.booleans()):
        options.append(edns.keepalive_option(None))
    if use_edns and draw(st.booleans()):
        options.append(dns.edns.GenericOption(10, draw(  # a cookie
            st.binary(min_size=8, max_size=8) | st.binary(min_size=16, max_size=40))))
    msg = dns.message.make_query(
        name, draw(qtypes), draw(qclasses), use_edns=0 if use_edns else None,
        payload=draw(st.sampled_from([512, 1232, 4096, 600, 65535])),
        want_dnssec=use_edns and draw(st.booleans()), options=options or None,
        pad=draw(st.sampled_from([0, 128])) if use_edns else 0)
    msg.id = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        msg.flags |= dns.flags.CD
    if not draw(st.booleans()):
        msg.flags &= ~dns.flags.RD
    return msg


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A well-formed query's wire, then up to four byte-level mutations."""
    wire = bytearray(draw(queries()).to_wire())
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "header"]))
        pos = draw(st.integers(0, max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[pos] = draw(st.sampled_from([0x00, 0x3F, 0x40, 0x80, 0xC0, 0xC0 | 12, 0xFF,
                                              0x29]))
        elif op == "cut":
            del wire[pos:]
        elif op == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and wire:
            del wire[pos:pos + draw(st.integers(1, 4))]
        elif op == "header" and len(wire) >= 12:
            field = draw(st.integers(0, 5))
            struct.pack_into("!H", wire, field * 2, draw(st.sampled_from(
                [0, 1, 2, 0xFFFF, 0x8000, 0x7800, 0x2000, 0x0100])))
    return bytes(wire)


hostile = st.binary(max_size=300) | mutated()

# ----------------------------------------------------------------------------- framing


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6),
       st.lists(st.integers(0, 10_000), max_size=12))
def test_framing_any_chunking_same_messages(messages: list[bytes], cuts: list[int]) -> None:
    stream = encode_many(messages)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder()
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += decoder.feed(stream[a:b])
    assert out == messages
    assert not decoder.in_message and decoder.buffered == 0


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=100), max_size=4), st.binary(max_size=50),
       st.lists(st.integers(0, 1000), max_size=6))
def test_framing_zero_length_stops_the_stream(before: list[bytes], after: bytes,
                                              cuts: list[int]) -> None:
    stream = encode_many(before) + b"\x00\x00" + after
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder()
    out: list[bytes] = []
    raised = False
    for a, b in itertools.pairwise(points):
        try:
            out += decoder.feed(stream[a:b])
        except FramingError:
            raised = True
            break
    assert raised
    assert out == before[: len(out)]  # a prefix of what came before, never anything after


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_framing_arbitrary_bytes_only_framing_errors(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    try:
        for chunk in chunks:
            for message in decoder.feed(chunk):
                assert 1 <= len(message) <= 65535
            assert decoder.buffered <= 65535 + 2
    except FramingError:
        pass


# ----------------------------------------------------------------------------- parse_query


@SETTINGS
@given(hostile)
def test_parse_query_never_raises(wire: bytes) -> None:
    result = parse_query(wire)
    if isinstance(result, dns.message.Message):
        assert len(result.question) == 1
        assert result.opcode() == dns.opcode.QUERY
        assert result.edns <= 0
        assert not result.flags & dns.flags.QR
        return
    assert isinstance(result, Rejection)
    if result.wire is None:
        assert len(wire) < 12 or wire[2] & 0x80
        return
    response = dns.message.from_wire(result.wire)
    assert response.id == struct.unpack_from("!H", wire)[0]
    assert response.flags & dns.flags.QR
    assert response.rcode() == result.rcode


# ----------------------------------------------------------------------------- finalize

txt_sizes = st.lists(st.integers(1, 255), max_size=12)


@SETTINGS
@given(queries(), txt_sizes, st.sampled_from(list(Transport)),
       st.sampled_from([None, 10.0, 0.0]))
def test_finalize_sizes(query: dns.message.Message, sizes: list[int], transport: Transport,
                        keepalive: float | None) -> None:
    query = dns.message.from_wire(query.to_wire())  # as the server sees it
    assume(len(query.question) == 1)
    response = make_response(query)
    if sizes:
        response.answer.append(dns.rrset.from_text(
            query.question[0].name, 300, "IN", "TXT",
            *[f'"{"x" * n}"' for n in sizes]))
    wire = finalize(response, query, transport, keepalive=keepalive)
    out = dns.message.from_wire(wire)
    assert out.id == query.id
    padded = edns.has_option(out, edns.PADDING)
    if transport is Transport.TLS and query.edns >= 0 and edns.has_option(query, edns.PADDING):
        assert padded and len(wire) % edns.SERVER_BLOCK == 0
    else:
        assert not padded
    has_keepalive = edns.has_option(out, edns.KEEPALIVE)
    assert has_keepalive == (transport.is_stream and keepalive is not None
                             and query.edns >= 0 and edns.has_option(query, edns.KEEPALIVE))
    if transport is Transport.UDP:
        assert len(wire) <= (max(MIN_UDP, query.payload) if query.edns >= 0 else MIN_UDP)
        if not out.answer and sizes:
            assert out.flags & dns.flags.TC
    else:
        assert not out.flags & dns.flags.TC
        assert len(out.answer) == (1 if sizes else 0)


# ----------------------------------------------------------------------------- fast vs slow


@SETTINGS
@given(queries())
def test_read_query_accepts_well_formed_queries(query: dns.message.Message) -> None:
    wire = query.to_wire()
    fast = read_query(wire)
    slow = parse_query(wire)
    if fast is None:
        return  # allowed: the slow path decides
    assert isinstance(slow, dns.message.Message)
    assert fast.key == key_from_message(slow)
    assert fast.id == query.id and fast.edns == (query.edns >= 0)
    assert fast.padding == (slow.edns >= 0 and edns.has_option(slow, edns.PADDING))


@examples(800)
@given(hostile)
def test_fast_path_never_accepts_what_the_slow_path_rejects(wire: bytes) -> None:
    fast = read_query(wire)
    if fast is None:
        return
    slow = parse_query(wire)
    assert isinstance(slow, dns.message.Message), (wire, slow)
    assert fast.key == key_from_message(slow)
    assert fast.id == slow.id
    assert fast.qname == slow.question[0].name.to_wire()
    assert fast.edns == (slow.edns >= 0)
    if slow.edns >= 0:
        assert fast.payload == slow.payload
        assert fast.padding == edns.has_option(slow, edns.PADDING)
        assert fast.keepalive == edns.has_option(slow, edns.KEEPALIVE)
        assert fast.nsid == edns.has_option(slow, edns.NSID)
