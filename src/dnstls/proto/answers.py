"""Turning queries into well-formed answers, including the error answers.

Two layers meet here:

* :func:`parse_query` takes the raw bytes of one client message and either returns a
  validated :class:`dns.message.Message` or a :class:`Rejection` -- the bytes to send
  back (FORMERR/NOTIMP/REFUSED/BADVERS), or ``None`` when nothing can or should be said.
  RFC 1035 §4.1.1: without a readable 12-byte header there is nothing to answer, so the
  stream is closed; a message with QR set is a response, not a query, and is dropped.
* :func:`finalize` takes a response built by the resolver pipeline and applies what
  depends on the transport and the query (RFC 7828 keepalive on streams only, the
  server's NSID when asked for, RFC 5001; RFC 8467 padding on encrypted streams only
  when the query was padded, computed last; RFC 1035/6891 truncation on UDP),
  returning wire bytes with the query's ID.

Error answers carry an Extended DNS Error (RFC 8914) when there is a reason to give.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnstls.proto import edns, framing

EDNS_PAYLOAD = 1232  # DNS Flag Day 2020 default UDP payload
MIN_UDP = 512
_HEADER = struct.Struct("!HHHHHH")
#: QTYPEs answered FORMERR, as Unbound answers them: OPT (41) and the range RFC 6895 §3.1
#: gives to QTYPEs and Meta-TYPEs, 128-255, but ANY (255, answered) and AXFR/IXFR (251,
#: 252: REFUSED below) -- TKEY, TSIG, the obsolete MAILA/MAILB (RFC 1035 §3.2.3; mail
#: has used MX since RFC 974), NXNAME (128, RFC 9824: never a query) and the unassigned
#: ones, whose meaning (and so whether their answers may be forwarded or cached) is unknown.
META_QTYPES = frozenset({int(dns.rdatatype.OPT), *range(128, 251), 253, 254})
_ZONE_TRANSFER = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})


class Transport(enum.Enum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_stream(self) -> bool:
        return self is not Transport.UDP


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that will not reach the resolver: what to send back, if anything.

    ``fatal``: the message has no readable header, so nothing after it on a stream can
    be trusted (the stream is closed once earlier queries are answered).
    ``response`` and ``query``: set when the query could be parsed, so the answer can be
    rendered for its transport with :func:`finalize` (padding, keepalive); ``wire`` is
    that response rendered without them.
    """

    wire: bytes | None
    rcode: int | None
    reason: str
    fatal: bool = False
    response: dns.message.Message | None = None
    query: dns.message.Message | None = None


_RD_CD = int(dns.flags.RD | dns.flags.CD)


def header_error(wire: bytes, rcode: int) -> bytes | None:
    """A header-only error response for a message whose body could not be parsed.

    Echoes ID, opcode, RD (RFC 1035 §4.1.1) and CD (RFC 4035 §3.1.6). Returns None if
    there is no header.
    """
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", wire)
    opcode_bits = flags & 0x7800
    out_flags = dns.flags.QR | opcode_bits | flags & _RD_CD | (rcode & 0xF)
    return _HEADER.pack(qid, out_flags, 0, 0, 0, 0)


def _reject(message: dns.message.Message, rcode: int, reason: str, ede: int | None = None,
            ) -> Rejection:
    response = make_response(message)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    if ede is not None and response.edns >= 0:
        response.use_edns(0, response.ednsflags, EDNS_PAYLOAD,
                          options=[edns.ede_option(ede, reason)])
    return Rejection(_rendered(response), rcode, reason, response=response, query=message)


def _rendered(response: dns.message.Message) -> bytes:
    """A rejection's wire form within the client's UDP size (dnspython's default limit:
    the query's EDNS payload, at least 512). Its questions are echoed, and a message
    can carry many: when they do not fit, they are left out (of the stream rendering
    too) -- the header says what went wrong."""
    try:
        return response.to_wire()
    except dns.exception.TooBig:
        response.question = []
        return response.to_wire()


def parse_query(wire: bytes) -> dns.message.Message | Rejection:
    """Validate one client message. See the module docstring for the outcomes."""
    if len(wire) < 12:
        return Rejection(None, None, "message shorter than a DNS header", fatal=True)
    flags = (wire[2] << 8) | wire[3]
    if flags & dns.flags.QR:
        return Rejection(None, None, "QR set in a query")
    opcode = (flags >> 11) & 0xF
    if opcode != dns.opcode.QUERY:
        return _other_opcode(wire, opcode)
    try:
        message = dns.message.from_wire(wire)
    except Exception as exc:  # dnspython raises many types for malformed input
        return _malformed(wire, f"malformed message: {type(exc).__name__}")
    if message.edns > 0:  # first: nothing else is read under an unknown version
        return _badvers(message)
    if message.flags & dns.flags.TC:
        # as Unbound: the message says it was cut short (RFC 1035 §4.1.1), so it is
        # not answered as if it were whole
        return _reject(message, dns.rcode.FORMERR, "TC set in a query")
    if len(message.question) != 1:
        return _reject(message, dns.rcode.FORMERR, f"QDCOUNT {len(message.question)}")
    if message.answer or message.authority:
        return _reject(message, dns.rcode.FORMERR, "records in answer/authority of a query")
    rrset = message.question[0]
    if rrset.rdtype in META_QTYPES:
        return _reject(message, dns.rcode.FORMERR, "meta type in question")
    if rrset.rdtype in _ZONE_TRANSFER:
        return _reject(message, dns.rcode.REFUSED, "zone transfer refused",
                       ede=dns.edns.EDECode.PROHIBITED)
    return message


def _malformed(wire: bytes, reason: str) -> Rejection:
    """FORMERR for a message that does not parse: with its question echoed when that
    much is readable (a malformed OPT or other record, bytes after the last record), as
    Unbound answers a malformed OPT, else the header alone (:func:`header_error`)."""
    try:
        message = dns.message.from_wire(wire, question_only=True)
    except Exception:  # dnspython raises many types for malformed input
        return Rejection(header_error(wire, dns.rcode.FORMERR), dns.rcode.FORMERR, reason)
    if len(message.question) != 1:
        message.question = []  # echo one question or none, never a list of them
    return _reject(message, dns.rcode.FORMERR, reason)


#: The EXTRA-TEXT of the refusal of an RD=0 query that local data does not answer, to a
#: client whose access-control action is ``allow`` (not ``allow_snoop``).
NOREC_TEXT = "recursion not desired (RD=0) is not allowed for this client"


def refused_query(wire: bytes, text: str | None = None) -> Rejection:
    """Access control's answer to a client it refuses (:mod:`dnstls.proto.acl`):
    REFUSED with EDE 18 (Prohibited, RFC 8914 §4.19; EXTRA-TEXT ``text``, none by
    default) for every query, whatever its opcode or contents, the question echoed and
    an OPT of ours when the query had one -- nothing else, so that over UDP the answer
    is hardly larger than the query (no amplification). As :func:`parse_query`: no
    readable header is fatal (nothing is sent), QR set is dropped; a body that cannot be
    read gets the header alone with REFUSED. (With ``text``: the refusal of an RD=0
    query to a client of ``allow``, :data:`NOREC_TEXT`.)"""
    if len(wire) < 12:
        return Rejection(None, None, "message shorter than a DNS header", fatal=True)
    if wire[2] & 0x80:
        return Rejection(None, None, "QR set in a query")
    reason = "access control" if text is None else "access control: RD=0"
    # read as a QUERY (an UPDATE's sections follow other rules; see _other_opcode)
    as_query = wire[:2] + bytes((wire[2] & 0x87,)) + wire[3:]
    try:
        message = dns.message.from_wire(as_query, ignore_trailing=True)
    except Exception:  # dnspython raises many types for malformed input
        return Rejection(header_error(wire, dns.rcode.REFUSED), dns.rcode.REFUSED, reason)
    message.set_opcode(dns.opcode.Opcode.make((wire[2] >> 3) & 0xF))
    if len(message.question) > 1:
        message.question = []  # echo one question or none, never a list of them
    response = make_response(message)
    response.set_rcode(dns.rcode.REFUSED)
    if response.edns >= 0:  # its flags: the query's DO bit (make_response), as every answer
        response.use_edns(0, response.ednsflags, EDNS_PAYLOAD,
                          options=[edns.ede_option(dns.edns.EDECode.PROHIBITED, text)])
    return Rejection(_rendered(response), dns.rcode.REFUSED, reason, response=response,
                     query=message)


def _badvers(message: dns.message.Message) -> Rejection:
    """RFC 6891 §6.1.3: BADVERS, in an OPT of the version we implement (0)."""
    response = make_response(message)
    response.set_rcode(dns.rcode.BADVERS)
    return Rejection(_rendered(response), dns.rcode.BADVERS, f"EDNS version {message.edns}",
                     response=response, query=message)


def _other_opcode(wire: bytes, opcode: int) -> Rejection:
    """NOTIMP for every opcode but QUERY (IQUERY, STATUS, NOTIFY, UPDATE, DSO and the
    unassigned ones: none is implemented), as Unbound answers them, with the question
    echoed and, when the message has an OPT record, an OPT of ours (so that on DoT the
    handler pads it for a padded query, RFC 7830 §4, and adds keepalive). The whole
    message is read to find the OPT (an UPDATE's sections, a NOTIFY's SOA are records
    too), bytes after the last record ignored: a DSO message (RFC 8490) carries TLVs
    there and no OPT, and gets NOTIMP too, which tells its sender that DSO is not
    implemented (§5.1.1; DSOTYPENI is for servers that implement DSO). EDNS version >
    0 gets BADVERS first (RFC 6891 §6.1.3, as BIND orders them). A body that cannot be
    read still gets NOTIMP (its question echoed if that much is readable, else the
    header alone): it is the opcode that is refused, whatever the body."""
    name = dns.opcode.to_text(dns.opcode.Opcode.make(opcode))
    reason = f"opcode {name} not implemented"
    # read as a QUERY: dnspython would read an UPDATE's sections by UPDATE's rules
    # (one SOA in the zone section), which are not ours to check
    as_query = wire[:2] + bytes((wire[2] & 0x87,)) + wire[3:]
    try:
        message = dns.message.from_wire(as_query, ignore_trailing=True)
    except Exception:  # dnspython raises many types for malformed input
        try:
            message = dns.message.from_wire(as_query, question_only=True)
        except Exception:
            return Rejection(header_error(wire, dns.rcode.NOTIMP), dns.rcode.NOTIMP, reason)
    message.set_opcode(dns.opcode.Opcode.make(opcode))
    if message.edns > 0:
        return _badvers(message)
    response = make_response(message)
    response.set_rcode(dns.rcode.NOTIMP)
    if opcode == dns.opcode.UPDATE and not _one_soa(message):
        # an UPDATE client reads the zone section by RFC 2136 §2.3's rules (one SOA of
        # a real class; dnspython refuses the message otherwise): echo only such a one
        response.question = []
    return Rejection(_rendered(response), dns.rcode.NOTIMP, reason, response=response,
                     query=message)


def _one_soa(message: dns.message.Message) -> bool:
    return (len(message.question) == 1 and message.question[0].rdtype == dns.rdatatype.SOA
            and not dns.rdataclass.is_metaclass(message.question[0].rdclass))


def asked_as_in(query: dns.message.Message) -> dns.message.Message:
    """``query`` (one question, of QCLASS ANY) asked as class IN: the question that is
    resolved for it (RFC 1035 §3.2.5: ANY matches any class; the only class served is
    IN, so its answer is IN's, as Unbound answers). Header and EDNS are the query's."""
    question = query.question[0]
    asked = dns.message.Message(id=query.id)
    asked.flags = query.flags
    asked.question = [dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)]
    if query.edns >= 0:
        asked.use_edns(query.edns, query.ednsflags, query.payload, options=list(query.options))
    return asked


def with_question_class(wire: bytes, rdclass: int) -> bytes:
    """A rendered message with the class of its one question (the first name in the
    message, so never compressed: it starts at offset 12) set to ``rdclass``."""
    if len(wire) < 12 or wire[4:6] != b"\0\x01":
        return wire
    end = 12
    while end < len(wire) and wire[end]:
        end += 1 + wire[end]
    at = end + 3  # past the root label and QTYPE
    if at + 2 > len(wire):
        return wire
    return wire[:at] + struct.pack("!H", rdclass) + wire[at + 2:]


def make_response(query: dns.message.Message, *, recursion_available: bool = True,
                  ) -> dns.message.Message:
    """Response skeleton: question copied, RD and CD echoed, EDNS if the query had it
    with its DO bit (RFC 3225 §3; dnspython's ``make_response`` clears it), no pad.

    Transport-dependent options (padding, keepalive) are added by :func:`finalize`.
    """
    response = dns.message.make_response(
        query, recursion_available=recursion_available, our_payload=EDNS_PAYLOAD, pad=0)
    if query.flags & dns.flags.CD:
        response.flags |= dns.flags.CD
    if query.edns >= 0 and query.ednsflags & dns.flags.DO:
        response.ednsflags |= dns.flags.DO
    return response


def error_response(query: dns.message.Message, rcode: int, *, ede: int | None = None,
                   text: str | None = None) -> dns.message.Message:
    """An error answer (SERVFAIL, REFUSED, ...) with an optional RFC 8914 EDE."""
    response = make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    if ede is not None and response.edns >= 0:
        response.use_edns(0, response.ednsflags, EDNS_PAYLOAD,
                          options=[edns.ede_option(ede, text)])
    return response


def finalize(response: dns.message.Message, query: dns.message.Message,
             transport: Transport, *, keepalive: float | None = None,
             nsid: bytes | None = None) -> bytes:
    """Render ``response`` for ``transport``; see the module docstring. ``nsid``: the
    server's NSID, added when the query asks for it (RFC 5001 §2.1), before padding."""
    if response.edns >= 0 and query.edns >= 0:
        options = [o for o in response.options
                   if o.otype not in (edns.PADDING, edns.KEEPALIVE, edns.NSID)]
        pad = 0
        if transport.is_stream:
            if keepalive is not None and edns.has_option(query, edns.KEEPALIVE):
                options.append(edns.keepalive_option(keepalive))
            if transport is Transport.TLS and edns.has_option(query, edns.PADDING):
                pad = edns.SERVER_BLOCK
        if nsid is not None and edns.has_option(query, edns.NSID):
            options.append(dns.edns.NSIDOption(nsid))  # after keepalive, as the wire paths
        response.use_edns(0, response.ednsflags, response.payload, options=options, pad=pad)
    if transport.is_stream:
        response.flags &= ~dns.flags.TC  # RFC 7766 §8: never truncate on a stream...
        # (dnspython would otherwise cap the size at the query's EDNS UDP payload)
        try:
            return response.to_wire(max_size=framing.MAX_MESSAGE)
        except dns.exception.TooBig:  # ...unless the answer cannot be framed at all
            return truncated(response).to_wire(max_size=framing.MAX_MESSAGE)
    limit = max(MIN_UDP, query.payload) if query.edns >= 0 else MIN_UDP
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        return truncated(response).to_wire(max_size=limit)


def truncate_wire(wire: bytes, question_length: int, *, edns: bool, do: bool = False,
                  options: bytes = b"") -> bytes:
    """Wire form of :func:`truncated` for a rendered response: header with TC=1 and
    no records, the question (``question_length`` bytes at offset 12), an OPT with
    ``options`` (rendered: the listener's keepalive or NSID; no padding)."""
    head = bytearray(wire[:12])
    head[2] |= dns.flags.TC >> 8
    head[6:12] = b"\0\0\0\0\0\x01" if edns else b"\0\0\0\0\0\0"
    out = bytes(head) + wire[12:12 + question_length]
    if edns:
        out += b"\0" + struct.pack("!HHIH", dns.rdatatype.OPT, EDNS_PAYLOAD,
                                   dns.flags.DO if do else 0, len(options)) + options
    return out


def truncated(response: dns.message.Message) -> dns.message.Message:
    """The response with every section but the question emptied and TC set."""
    short = dns.message.Message(id=response.id)
    short.flags = response.flags | dns.flags.TC
    short.question = list(response.question)
    if response.edns >= 0:
        options = [o for o in response.options if o.otype != edns.PADDING]
        short.use_edns(0, response.ednsflags, response.payload, options=options)
    short.set_rcode(response.rcode())
    return short
