"""Cache keys for DNS queries, from a parsed message or straight from the wire.

What identifies a cacheable query
---------------------------------
A cached answer may be reused for another query when both ask the same question:
the owner name compared case-insensitively (RFC 1034 §3.1, RFC 4343), the QTYPE and the
QCLASS -- and when the two requests would get the same answer from an upstream: the DO
bit (RFC 3225: DNSSEC records only when asked for), the CD bit (RFC 4035 §3.2.2:
checking disabled may yield data a validator would have rejected) and, without DO, the
AD bit (RFC 6840 §5.7/5.8: the answer's AD bit is set only for a query with AD or DO, so
a cached answer to a query without either must not serve one with AD, and vice versa;
with DO, AD in the query changes nothing). Nothing else in the query is part of the key.
In particular the key is never the raw query bytes: the ID,
the case of the name (0x20 randomisation), EDNS padding (RFC 7830, a different length
per transport), cookies (RFC 7873, per client) and edns-tcp-keepalive (RFC 7828) all
differ between queries that deserve the same answer. dnsdist's packet cache skips
PADDING and COOKIE for the same reason.

The key is one ``bytes`` value: the question's owner name in uncompressed wire form
with ASCII letters lower-cased (exactly the RFC 4343 folding; ``bytes.lower`` touches
nothing else), then QTYPE and QCLASS (2 bytes each) and one byte of flags
(:data:`KEY_DO`, :data:`KEY_CD`, :data:`KEY_AD`). The name is self-delimiting (it ends
at the root label), so distinct questions give distinct keys. Only the *name* is lower-cased: QTYPE
65 (HTTPS) is the byte 0x41, "A", and must not fold into QTYPE 97.

The fast path
-------------
:func:`read_query` reads a raw query without a dnspython parse: the header, the one
question, then every RR of the additional section (walked with bounds checks; names
there may be compressed) to find the OPT RR, whose TTL field holds the EDNS version and
the DO bit (RFC 6891 §6.1.3). It returns ``None`` -- "take the slow path" -- for
anything it cannot read confidently or that the slow path must judge itself: a short or
truncated message, QR or TC set, an opcode other than QUERY, QDCOUNT other than 1,
records in the answer or authority section, a compression pointer or an extended label
in the question, a name longer than 255 octets, a meta QTYPE (OPT, or 128-254: TKEY,
TSIG, AXFR, IXFR, MAILB, MAILA, NXNAME, unassigned ones), a TSIG record, an OPT that is
duplicated, not owned by the root, of an EDNS version other than 0, with malformed
options or with options whose contents dnspython validates (a malformed COOKIE or ECS,
or any EDE, ... option), another additional record that dnspython rejects (its owner or
RDATA), and trailing bytes: whatever the slow path would reject with FORMERR must not
get a cached answer on the fast path. For every
query it accepts, :func:`key_from_wire` equals :func:`key_from_message` of the parsed
query (the unit tests check this property with hypothesis).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import dns.flags
import dns.message
import dns.rdatatype

CacheKey = bytes

KEY_DO = 0x01
KEY_CD = 0x02
KEY_AD = 0x04  # AD without DO

_QR = 0x8000
_TC = 0x0200
_RD = 0x0100
_OPCODE_MASK = 0x7800
_CD = 0x0010
_AD = 0x0020
_DO = 0x8000
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_MAX_NAME = 255
_OPT = int(dns.rdatatype.OPT)
_TSIG = int(dns.rdatatype.TSIG)
_PADDING = 12
_KEEPALIVE = 11
_COOKIE = 10
_NSID = 3
# Options dnspython parses into classes that validate their contents (EDE, Report-
# Channel, EDE language, filtering contact/organization/DB): a malformed one makes the
# slow path answer FORMERR, so queries carrying them take the slow path. NSID and
# unknown options are opaque bytes; COOKIE is checked here (RFC 7873 §4: a client
# cookie of 8 bytes, optionally followed by a server cookie of 8 to 32 bytes), and so is
# ECS (:func:`_ecs_valid`): Stubby sends ECS with a zero source prefix in every query by
# default (``edns_client_subnet_private``), so it must not push queries off the fast path.
# Neither path uses ECS: answers never depend on the client's subnet and never carry it.
_SLOW_PATH_OPTIONS = frozenset({15, 18, 22, 23, 24, 25})
_ECS = 8
_NOT_READ = _QR | _TC | _OPCODE_MASK  # one mask: a single test per query
# answers.META_QTYPES (FORMERR there) and AXFR/IXFR (REFUSED there)
_META_QTYPES = frozenset({_OPT, *range(128, 255)})


def key_from_message(message: dns.message.Message) -> CacheKey:
    """The cache key of a parsed query. Raises ValueError unless it has one question."""
    if len(message.question) != 1:
        raise ValueError(f"a cache key needs exactly one question, not {len(message.question)}")
    rrset = message.question[0]
    flags = 0
    if message.edns >= 0 and message.ednsflags & dns.flags.DO:
        flags |= KEY_DO
    elif message.flags & dns.flags.AD:
        flags |= KEY_AD
    if message.flags & dns.flags.CD:
        flags |= KEY_CD
    name = rrset.name.to_wire()
    assert name is not None  # to_wire() without a file returns the bytes
    return name.lower() + struct.pack("!HHB", rrset.rdtype, rrset.rdclass, flags)


def asking_in(key: CacheKey) -> CacheKey:
    """``key`` with QCLASS ANY (255) replaced by IN: the question its query is answered
    with (:func:`dnstls.proto.answers.asked_as_in`); any other key unchanged."""
    if key[-3] == 0 and key[-2] == 255:
        return key[:-3] + b"\0\x01" + key[-1:]
    return key


def key_from_wire(wire: bytes) -> CacheKey | None:
    """The cache key of a raw query, or None when the slow path must decide."""
    query = read_query(wire)
    return None if query is None else query.key


class WireQuery(NamedTuple):
    """What the listener's fast path needs to know about a raw query.

    ``qname`` is the question's owner name as sent (case preserved, for 0x20 echo);
    ``edns`` says whether the query had an OPT RR, ``payload`` is its advertised UDP
    size (0 without EDNS); ``padding``, ``keepalive`` and ``nsid`` say which of those
    options the query carried (RFC 8467 pads a response only when the query was padded;
    RFC 5001: the server's NSID only to a query that asks for it). A named
    tuple because it is built for every query on the fast path (cheaper than a frozen
    dataclass).
    """

    key: CacheKey
    id: int
    flags: int
    qname: bytes
    edns: bool
    payload: int
    padding: bool
    keepalive: bool
    nsid: bool

    @property
    def rd(self) -> bool:
        return bool(self.flags & _RD)


def read_query(wire: bytes) -> WireQuery | None:
    """Read a raw query for the fast path; see the module docstring for the rules."""
    end = len(wire)
    if end < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if flags & _NOT_READ or qdcount != 1 or ancount or nscount:
        return None
    # The question name: uncompressed at offset 12, at most 255 octets (inline: this
    # runs for every query on the fast path).
    # A label length > 63 has one of the two top bits set: a compression pointer or an
    # extended label type. Indexing past the end raises IndexError (free in 3.11 until
    # raised), instead of a bounds check per label.
    name_end = 12
    try:
        length = wire[12]
        while length:
            if length > 63:
                return None
            name_end += length + 1
            length = wire[name_end]
    except IndexError:
        return None
    name_end += 1
    if name_end - 12 > _MAX_NAME or name_end + 4 > end:
        return None
    qtype = (wire[name_end] << 8) | wire[name_end + 1]
    if qtype in _META_QTYPES:
        return None
    pos = name_end + 4
    edns = padding = keepalive = nsid = False
    payload = 0
    key_flags = _AD_CD_KEY_FLAGS[(flags & (_AD | _CD)) >> 4]
    others = False  # records other than OPT in the additional section
    for _ in range(arcount) if arcount else ():
        owner = pos
        # the OPT's owner is the root (one zero byte): skip_name only for other owners
        pos = pos + 1 if pos < end and wire[pos] == 0 else skip_name(wire, pos)
        if pos < 0 or pos + 10 > end:
            return None
        rrtype, rrclass, ttl, rdlength = _unpack_rr(wire, pos)
        pos += 10
        opt = pos
        pos += rdlength
        if pos > end or rrtype == _TSIG:
            return None
        if rrtype != _OPT:
            others = True
            continue
        # RFC 6891 §6.1.1: one OPT, owned by the root; version in TTL bits 16-23.
        if edns or wire[owner] != 0 or ttl & 0xFF0000:
            return None
        # The options, inline (every padded query has one): well-formed, none that the
        # slow path validates, a COOKIE of a legal length and a valid ECS (see
        # _SLOW_PATH_OPTIONS).
        while opt < pos:
            if opt + 4 > pos:
                return None
            code, length = _unpack_option(wire, opt)
            opt += 4 + length
            if opt > pos:
                return None
            if code == _PADDING:
                padding = True
            elif code == _KEEPALIVE:
                keepalive = True
            elif code == _NSID:  # any length: Unbound answers a non-empty one too
                nsid = True
            elif code in _SLOW_PATH_OPTIONS or (
                    code == _COOKIE and not (length == 8 or 16 <= length <= 40)) or (
                    code == _ECS and not _ecs_valid(wire, opt - length, length)):
                return None
        edns = True
        payload = rrclass
        if ttl & _DO:
            key_flags = (key_flags | KEY_DO) & ~KEY_AD
    if pos != end:
        return None
    if others and not _parses(wire):
        return None  # an owner pointer or RDATA only dnspython's per-type rules reject
    qname = wire[12:name_end]
    key = qname.lower() + wire[name_end:name_end + 4] + _KEY_FLAG_BYTES[key_flags]
    # tuple.__new__ directly: a NamedTuple's own __new__ is a Python function (~0.3 µs)
    return _new_tuple(WireQuery, (key, qid, flags, qname, edns, payload, padding, keepalive,
                                  nsid))


_new_tuple = tuple.__new__
_unpack_rr = _RR_FIXED.unpack_from
_unpack_option = struct.Struct("!HH").unpack_from
_KEY_FLAG_BYTES = [bytes((flags,)) for flags in range((KEY_DO | KEY_CD | KEY_AD) + 1)]
_AD_CD_KEY_FLAGS = (0, KEY_CD, KEY_AD, KEY_AD | KEY_CD)


def carries_cookie(wire: bytes) -> bool:
    """True if the OPT RR of ``wire`` (a query :func:`read_query` may accept) carries a
    COOKIE option, or if that cannot be told (then the caller assumes it does).

    Walks the question and the additional section like :func:`read_query`, without its
    checks; only for the listeners' exact-query memo, which does not keep queries whose
    bytes differ per client (RFC 7873 client cookies)."""
    try:
        qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(wire, 4)
        if qdcount != 1 or ancount or nscount:
            return True
        pos = skip_name(wire, 12)
        if pos < 0:
            return True
        pos += 4
        end = len(wire)
        for _ in range(arcount):
            pos = skip_name(wire, pos)
            if pos < 0 or pos + 10 > end:
                return True
            rrtype, _rrclass, _ttl, rdlength = _unpack_rr(wire, pos)
            pos += 10
            opt = pos
            pos += rdlength
            if rrtype != _OPT:
                continue
            while opt + 4 <= pos:
                code, length = _unpack_option(wire, opt)
                if code == _COOKIE:
                    return True
                opt += 4 + length
    except (IndexError, struct.error):
        return True
    return False


_COUNTS = struct.Struct("!HHHH")


def _parses(wire: bytes) -> bool:
    """True if the slow path's parser accepts ``wire`` (rare queries only)."""
    try:
        dns.message.from_wire(wire)
    except Exception:
        return False
    return True


def skip_name(wire: bytes, pos: int) -> int:
    """Offset just past a possibly compressed name at ``pos``, or -1 if unreadable."""
    end = len(wire)
    while pos < end:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2 if pos + 2 <= end else -1
        if length & 0xC0:
            return -1
        pos += 1 + length
    return -1


def _ecs_valid(wire: bytes, pos: int, length: int) -> bool:
    """True if the ECS option data ``wire[pos:pos+length]`` is what dnspython accepts
    (RFC 7871 §6): family 1 or 2, prefix lengths within the address width, exactly the
    address bytes the source prefix needs, and zero bits past the prefix."""
    if length < 4:
        return False
    family, source, scope = wire[pos] << 8 | wire[pos + 1], wire[pos + 2], wire[pos + 3]
    bits = 32 if family == 1 else 128 if family == 2 else 0
    if not bits or source > bits or scope > bits or length != 4 + (source + 7) // 8:
        return False
    rest = source % 8
    return not rest or not wire[pos + length - 1] & (0xFF >> rest)
