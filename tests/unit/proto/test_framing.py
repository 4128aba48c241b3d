import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnstls.proto.framing import FrameDecoder, FramingError, encode, encode_many

MESSAGES = [b"\x12\x34" + bytes(range(10)), b"x" * 300, b"\xab" * 12]


def test_encode_prefixes_length() -> None:
    assert encode(b"abc") == b"\x00\x03abc"
    assert encode_many([b"a", b"bc"]) == b"\x00\x01a\x00\x02bc"


@pytest.mark.parametrize("size", [0, 65536])
def test_encode_rejects_out_of_range(size: int) -> None:
    with pytest.raises(ValueError):
        encode(b"x" * size)


def test_every_split_offset_yields_the_same_messages() -> None:
    stream = encode_many(MESSAGES)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        out = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert out == MESSAGES, cut
        assert not decoder.in_message


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_messages_are_bytes_whatever_the_input_type(kind: type) -> None:
    stream = encode_many(MESSAGES) + b"\x00"
    decoder = FrameDecoder()
    out = decoder.feed(kind(stream))
    assert out == MESSAGES and all(type(m) is bytes for m in out)
    assert decoder.buffered == 1
    tail = decoder.feed(kind(b"\x03abc"))
    assert tail == [b"abc"] and type(tail[0]) is bytes


def test_every_pair_of_split_offsets() -> None:
    stream = encode_many(MESSAGES[:2])
    for a in range(len(stream) + 1):
        for b in range(a, len(stream) + 1, 7):
            decoder = FrameDecoder()
            out = decoder.feed(stream[:a]) + decoder.feed(stream[a:b]) + decoder.feed(stream[b:])
            assert out == MESSAGES[:2]


def test_byte_at_a_time_reports_partial_message() -> None:
    stream = encode(b"y" * 20)
    decoder = FrameDecoder()
    for i, byte in enumerate(stream[:-1]):
        assert decoder.feed(bytes([byte])) == []
        assert decoder.in_message, i
    assert decoder.feed(stream[-1:]) == [b"y" * 20]
    assert decoder.buffered == 0


def test_glued_messages_in_one_read() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_many(MESSAGES) + b"\x00") == MESSAGES
    assert decoder.in_message and decoder.buffered == 1


@pytest.mark.parametrize(("prefix", "before"), [(b"\x00\x00", []),
                                                (b"\x00\x01a\x00\x00", [b"a"])])
def test_zero_length_is_a_framing_error(prefix: bytes, before: list[bytes]) -> None:
    with pytest.raises(FramingError) as info:
        FrameDecoder().feed(prefix)
    assert info.value.messages == before  # received intact before the bad prefix


def test_zero_length_after_buffered_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00")
    with pytest.raises(FramingError):
        decoder.feed(b"\x00")


def test_declared_65535_with_short_body_waits() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\xff\xff" + b"a" * 100) == []
    assert decoder.in_message


@given(st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=8),
       st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=30))
def test_any_chunking_roundtrips(messages: list[bytes], sizes: list[int]) -> None:
    stream = encode_many(messages)
    decoder = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = sizes[i % len(sizes)]
        out += decoder.feed(stream[pos:pos + step])
        pos += step
        i += 1
    assert out == messages
