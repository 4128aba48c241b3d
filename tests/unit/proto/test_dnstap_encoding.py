"""dnstap messages and Frame Streams framing (proto/dnstap.py): bytes checked by hand
against dnstap.proto's field numbers and fstrm/control.h, and read back by the tests'
own decoder (tests/fakes/dnstap_collector.py)."""

from __future__ import annotations

import pytest

from dnstls.proto import dnstap
from dnstls.proto.dnstap import Control, Endpoint, FrameReader, FrameStreamError
from fakes.dnstap_collector import decode, fields

CLIENT = Endpoint.of("127.0.0.1", 53000)
SERVER = Endpoint.of("127.0.0.1", 53)


def test_message_bytes_by_hand() -> None:
    message = dnstap.encode_message(dnstap.CLIENT_QUERY, protocol=dnstap.UDP, query=CLIENT,
                                    response=SERVER, query_time=1_000_000_002,
                                    query_message=b"\x12\x34")
    assert message == bytes.fromhex(
        "0805"  # type = CLIENT_QUERY (5)
        "1001"  # socket_family = INET
        "1801"  # socket_protocol = UDP
        "22047f000001"  # query_address (field 4, length 4)
        "2a047f000001"  # response_address (5)
        "30889e03"  # query_port = 53000 (varint)
        "3835"  # response_port = 53
        "4001"  # query_time_sec = 1
        "4d02000000"  # query_time_nsec = 2 (fixed32, little-endian)
        "52021234")  # query_message (10)
    framed = dnstap.encode_dnstap(dnstap.dnstap_prefix(b"h", b"v"), message)
    assert framed == (bytes.fromhex("0a0168" "120176" "72") + bytes([len(message)])
                      + message + bytes.fromhex("7801"))


def test_response_and_ipv6_fields() -> None:
    message = dnstap.encode_message(
        dnstap.CLIENT_RESPONSE, protocol=dnstap.DOT, query=Endpoint.of("::1", 853 + 1),
        response=Endpoint.of("fe80::1%eth0", 853), response_time=5 * 10**9 + 7,
        response_message=b"\xab")
    got = decode(dnstap.encode_dnstap(b"", message))
    assert got == {"type": 6, "message_type": "CLIENT_RESPONSE", "socket_family": 2,
                   "socket_protocol": 3, "query_address": b"\x00" * 15 + b"\x01",
                   "response_address": b"\xfe\x80" + b"\x00" * 13 + b"\x01",
                   "query_port": 854, "response_port": 853, "response_time_sec": 5,
                   "response_time_nsec": 7, "response_message": b"\xab",
                   "dnstap_type": 1}


def test_forwarder_message_without_query_address() -> None:
    message = dnstap.encode_message(dnstap.FORWARDER_QUERY, protocol=dnstap.TCP,
                                    response=SERVER, query_time=0, query_message=b"q")
    assert [n for n, _ in fields(message)] == [1, 2, 3, 5, 7, 8, 9, 10]


def test_dnstap_numbers_match_the_published_proto() -> None:
    # dnstap.proto (github.com/dnstap/dnstap.pb): Message.Type and SocketProtocol
    assert (dnstap.CLIENT_QUERY, dnstap.CLIENT_RESPONSE) == (5, 6)
    assert (dnstap.FORWARDER_QUERY, dnstap.FORWARDER_RESPONSE) == (7, 8)
    assert (dnstap.UDP, dnstap.TCP, dnstap.DOT, dnstap.DOH) == (1, 2, 3, 4)


def test_varints() -> None:
    assert [dnstap.varint(v) for v in (0, 1, 127, 128, 300, 2**32)] == [
        b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\xac\x02", b"\x80\x80\x80\x80\x10"]


def test_control_frames_by_hand() -> None:
    assert dnstap.control_frame(dnstap.STOP, None) == bytes.fromhex("00000000" "00000004"
                                                                     "00000003")
    assert dnstap.control_frame(dnstap.READY) == (
        bytes.fromhex("00000000" "00000022" "00000004" "00000001" "00000016")
        + b"protobuf:dnstap.Dnstap")
    assert dnstap.data_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_frame_reader_at_every_split() -> None:
    stream = (dnstap.control_frame(dnstap.ACCEPT) + dnstap.data_frame(b"one")
              + dnstap.data_frame(b"two!") + dnstap.control_frame(dnstap.FINISH, None))
    want = [Control(dnstap.ACCEPT, (dnstap.CONTENT_TYPE,)), b"one", b"two!",
            Control(dnstap.FINISH, ())]
    for split in range(len(stream) + 1):
        reader = FrameReader()
        assert reader.feed(stream[:split]) + reader.feed(stream[split:]) == want, split
    reader = FrameReader()
    assert [f for byte in stream for f in reader.feed(bytes([byte]))] == want


def test_frame_reader_refuses_what_is_not_frame_streams() -> None:
    with pytest.raises(FrameStreamError):
        FrameReader(max_frame=10).feed(dnstap.data_frame(b"x" * 11))
    with pytest.raises(FrameStreamError):
        FrameReader().feed(b"\x00\x00\x00\x00\x00\x00\x10\x00")  # control of 4096 bytes
    with pytest.raises(FrameStreamError):
        FrameReader().feed(b"\x00\x00\x00\x00\x00\x00\x00\x02ab")  # shorter than a type
    with pytest.raises(FrameStreamError):  # a field longer than the frame
        FrameReader().feed(bytes.fromhex("00000000" "0000000c" "00000001" "00000001"
                                         "000000ff"))
