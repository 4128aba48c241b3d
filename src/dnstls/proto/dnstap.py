"""dnstap messages and Frame Streams framing, sans-IO (https://dnstap.info).

A dnstap log is a sequence of protobuf ``Dnstap`` messages (dnstap.proto, as published
in github.com/dnstap/dnstap.pb) carried in Frame Streams (github.com/farsightsec/fstrm,
``fstrm/control.h``) with the content type ``protobuf:dnstap.Dnstap``. This module
builds both as bytes and reads the Frame Streams framing back; the asyncio side (the
Unix socket, the file, the queue) is :mod:`dnstls.net.dnstap`.

**Protobuf.** Only the fields a DNS server writes, encoded by hand (no protobuf
dependency): varints (wire type 0), length-delimited bytes (2) and fixed32 (5)::

    Dnstap  { identity = 1 (bytes); version = 2 (bytes); type = 15 (MESSAGE = 1);
              message = 14 (Message) }
    Message { type = 1; socket_family = 2 (INET 1, INET6 2); socket_protocol = 3
              (UDP 1, TCP 2, DOT 3, DOH 4, DNSCryptUDP 5, DNSCryptTCP 6, DOQ 7);
              query_address = 4; response_address = 5 (4 or 16 bytes);
              query_port = 6; response_port = 7; query_time_sec = 8 (uint64);
              query_time_nsec = 9 (fixed32); query_message = 10; response_time_sec = 12;
              response_time_nsec = 13 (fixed32); response_message = 14 }

Fields are written in field-number order, as protobuf-c (Unbound, Knot) writes them.

**Frame Streams.** A data frame is a 32-bit big-endian length and the payload. A
control frame is an "escape" (a length of 0), the control frame's length, its type
(ACCEPT 1, START 2, STOP 3, READY 4, FINISH 5) and fields (CONTENT_TYPE 1: length and
bytes). Over a socket (bidirectional): the writer sends READY with the content types
it offers, the reader answers ACCEPT with the one it takes, the writer sends START with
it, then data frames, then STOP, and the reader answers FINISH. A file (unidirectional)
is START, the data frames and STOP.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, Protocol

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"

# Frame Streams control frame types (fstrm/control.h)
ACCEPT = 0x01
START = 0x02
STOP = 0x03
READY = 0x04
FINISH = 0x05
FIELD_CONTENT_TYPE = 0x01
#: fstrm's bound on a control frame (FSTRM_CONTROL_FRAME_LENGTH_MAX)
MAX_CONTROL = 512

# dnstap.proto: Message.Type
AUTH_QUERY = 1
AUTH_RESPONSE = 2
RESOLVER_QUERY = 3
RESOLVER_RESPONSE = 4
CLIENT_QUERY = 5
CLIENT_RESPONSE = 6
FORWARDER_QUERY = 7
FORWARDER_RESPONSE = 8

# dnstap.proto: SocketFamily, SocketProtocol
INET = 1
INET6 = 2
UDP = 1
TCP = 2
DOT = 3
DOH = 4

_U32 = struct.Struct(">I")
_CONTROL_HEAD = struct.Struct(">III")  # escape, length, type


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _key(number, 2) + varint(len(value)) + value


def _varint_field(number: int, value: int) -> bytes:
    return _key(number, 0) + varint(value)


def _fixed32_field(number: int, value: int) -> bytes:
    return _key(number, 5) + struct.pack("<I", value)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of an exchange: address and port, its packed address bytes and family
    computed once (a listener's or an upstream's own address is reused per query)."""

    packed: bytes
    port: int

    @classmethod
    def of(cls, host: str, port: int) -> Endpoint:
        # a scoped IPv6 address ("fe80::1%eth0") is logged without its zone
        return cls(ipaddress.ip_address(host.split("%", 1)[0]).packed, port)

    @property
    def family(self) -> int:
        return INET6 if len(self.packed) == 16 else INET


def encode_message(kind: int, *, protocol: int, query: Endpoint | None = None,
                   response: Endpoint | None = None, query_time: int | None = None,
                   query_message: bytes | None = None, response_time: int | None = None,
                   response_message: bytes | None = None) -> bytes:
    """A dnstap ``Message`` (times in nanoseconds since the epoch)."""
    family = (query or response)
    out = [_varint_field(1, kind)]
    if family is not None:
        out.append(_varint_field(2, family.family))
    out.append(_varint_field(3, protocol))
    if query is not None:
        out.append(_bytes_field(4, query.packed))
    if response is not None:
        out.append(_bytes_field(5, response.packed))
    if query is not None:
        out.append(_varint_field(6, query.port))
    if response is not None:
        out.append(_varint_field(7, response.port))
    if query_time is not None:
        sec, nsec = divmod(query_time, 1_000_000_000)
        out.append(_varint_field(8, sec))
        out.append(_fixed32_field(9, nsec))
    if query_message is not None:
        out.append(_bytes_field(10, query_message))
    if response_time is not None:
        sec, nsec = divmod(response_time, 1_000_000_000)
        out.append(_varint_field(12, sec))
        out.append(_fixed32_field(13, nsec))
    if response_message is not None:
        out.append(_bytes_field(14, response_message))
    return b"".join(out)


def dnstap_prefix(identity: bytes, version: bytes) -> bytes:
    """The fields of every ``Dnstap`` message that come before its ``message`` (the
    server's identity and version, when set), built once."""
    out = b""
    if identity:
        out += _bytes_field(1, identity)
    if version:
        out += _bytes_field(2, version)
    return out


_TYPE_MESSAGE = _varint_field(15, 1)  # Dnstap.type = MESSAGE


def encode_dnstap(prefix: bytes, message: bytes) -> bytes:
    """A ``Dnstap`` message of type MESSAGE around ``message`` (an encoded ``Message``),
    after ``prefix`` (:func:`dnstap_prefix`)."""
    return prefix + _bytes_field(14, message) + _TYPE_MESSAGE


def data_frame(payload: bytes) -> bytes:
    """One Frame Streams data frame."""
    return _U32.pack(len(payload)) + payload


def control_frame(kind: int, content_type: bytes | None = CONTENT_TYPE) -> bytes:
    """A Frame Streams control frame (with the content type field, if given)."""
    fields = (b"" if content_type is None
              else _U32.pack(FIELD_CONTENT_TYPE) + _U32.pack(len(content_type)) + content_type)
    return _CONTROL_HEAD.pack(0, 4 + len(fields), kind) + fields


@dataclass(frozen=True, slots=True)
class Control:
    """A control frame read back: its type and content types."""

    kind: int
    content_types: tuple[bytes, ...]


class FrameStreamError(ValueError):
    """Bytes that are not Frame Streams (a bad control frame, one too long)."""


def parse_control(body: bytes) -> Control:
    """A control frame's body (type and fields, after the escape and length)."""
    if len(body) < 4:
        raise FrameStreamError("control frame shorter than its type")
    (kind,) = _U32.unpack_from(body)
    types = []
    at = 4
    while at < len(body):
        if at + 8 > len(body):
            raise FrameStreamError("truncated control field")
        field_type, length = struct.unpack_from(">II", body, at)
        at += 8
        if at + length > len(body):
            raise FrameStreamError("truncated control field")
        if field_type == FIELD_CONTENT_TYPE:
            types.append(body[at:at + length])
        at += length
    return Control(kind, tuple(types))


class FrameReader:
    """Reads Frame Streams from bytes fed in any split: :meth:`feed` returns the frames
    completed so far, each a :class:`Control` or the payload bytes of a data frame."""

    def __init__(self, *, max_frame: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[Control | bytes]:
        buf = self._buf
        buf += data
        out: list[Control | bytes] = []
        at = 0
        while len(buf) - at >= 4:
            (length,) = _U32.unpack_from(buf, at)
            if length == 0:  # escape: a control frame follows
                if len(buf) - at < 8:
                    break
                (clen,) = _U32.unpack_from(buf, at + 4)
                if clen > MAX_CONTROL:
                    raise FrameStreamError(f"control frame of {clen} bytes")
                if len(buf) - at < 8 + clen:
                    break
                out.append(parse_control(bytes(buf[at + 8:at + 8 + clen])))
                at += 8 + clen
                continue
            if length > self.max_frame:
                raise FrameStreamError(f"data frame of {length} bytes")
            if len(buf) - at < 4 + length:
                break
            out.append(bytes(buf[at + 4:at + 4 + length]))
            at += 4 + length
        del buf[:at]
        return out


class ClientTap(Protocol):
    """What a listener asks of the dnstap writer (:class:`dnstls.net.dnstap.DnstapWriter`):
    which client messages are wanted, and to log one (``client`` a socket address as
    the loop reports it, ``server`` the listener's own address)."""

    log_client_query: bool
    log_client_response: bool

    def client_query(self, wire: bytes, protocol: int, client: Any,
                     server: Endpoint | None) -> None: ...

    def client_response(self, wire: bytes, protocol: int, client: Any,
                        server: Endpoint | None) -> None: ...
