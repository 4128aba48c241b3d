"""Zone transfers (AXFR, RFC 5936; IXFR, RFC 1995) as a client reads them: sans-IO.

A transfer is a stream of DNS messages answering one AXFR or IXFR query. Every message
is fed to a :class:`Transfer` as it arrives; :meth:`Transfer.feed` says when the
transfer is complete and raises :class:`TransferError` when the stream is not one:

* the first message's RCODE must be NOERROR (REFUSED, NOTAUTH, NOTIMPL... end it: an
  error RCODE in a later message too), and its first answer record must be the zone's
  SOA (its serial is the transfer's);
* AXFR (and an IXFR answered AXFR-style, RFC 1995 §4: the second record is not an
  SOA) ends with the next SOA of that serial;
* IXFR incremental: after the first SOA come sequences of (old SOA, deletions, new SOA,
  additions); the transfer ends when an SOA of the first serial appears where the next
  sequence's old SOA would be;
* an IXFR answered by the SOA alone, in one message, is complete: the zone is up to date
  (RFC 1995 §4), as kdig takes it.

The counts (messages, answer records, bytes) are those kdig prints in its
``;; Received N B (M messages, R records)`` footer: of the messages accepted, the TSIG
record not counted as a record. No sockets here: :mod:`dnstls.net.xfr` reads the
messages, :mod:`dnstls.cli.query` prints them.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnstls.errors import ProtocolError
from dnstls.proto import upstream

#: RFC 8945 §5.3.1: in a signed transfer, at most 99 messages in a row may come unsigned
MAX_UNSIGNED = 99


class TransferError(ProtocolError):
    """The server refused or broke the transfer; ``kind`` says how (``"rcode"``,
    ``"no-soa"``, ``"tsig"``: the message is kdig's verdict, ``"limit"``, ``"extra"``),
    ``rcode`` the RCODE's name for ``"rcode"``."""

    def __init__(self, message: str, *, kind: str, rcode: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.rcode = rcode
        #: the message that broke the transfer, and its size (set by the reader)
        self.response: dns.message.Message | None = None
        self.size = 0


def ixfr_soa(zone: dns.name.Name, serial: int) -> dns.rrset.RRset:
    """The SOA an IXFR query carries in its authority section (RFC 1995 §3), as kdig
    sends it: ``ZONE 0 IN SOA . . SERIAL 0 0 0 0``."""
    return dns.rrset.from_text(zone, 0, dns.rdataclass.IN, dns.rdatatype.SOA,
                               f". . {serial} 0 0 0 0")


def query_wire(query: dns.message.Message, *, qid: int, serial: int | None = None,
               pad: int = 0, keepalive: bool = False, pad_length: int | None = None,
               extra: bytes = b"", edns_version: int | None = 0) -> bytes:
    """The wire form of a transfer query: :func:`dnstls.proto.upstream.prepare_query`'s
    (header, question, OPT with the transport's options), with the IXFR's SOA
    (:func:`ixfr_soa`, when ``serial`` is given) in the authority section, block
    padding (``pad``) computed with it, and signed last when ``query`` has a TSIG
    key."""
    tsig = query.tsig
    query.tsig = None
    try:
        def render(length: int | None) -> bytes:
            return upstream.prepare_query(query, qid=qid, keepalive=keepalive,
                                          pad_length=length, extra=extra,
                                          edns_version=edns_version)

        soa = b""
        if serial is not None:
            buffer = io.BytesIO()
            name = query.question[0].name  # its owner compressed to the question's, as kdig
            ixfr_soa(name, serial).to_wire(buffer, compress={name: 12})
            soa = buffer.getvalue()
        if pad_length is None and pad and edns_version is not None:
            bare = len(render(0)) + len(soa)
            pad_length = (-bare) % pad
        wire = render(pad_length if edns_version is not None else None)
    finally:
        query.tsig = tsig
    if soa:
        end = 12 + sum(len(q.name.to_wire() or b"") + 4 for q in query.question)
        wire = wire[:8] + struct.pack("!H", 1) + wire[10:end] + soa + wire[end:]
    if tsig is not None and query.keyring:
        wire = upstream._signed(query, wire, qid)
    return wire


#: RFC 8945 §4.3.3: the TSIG errors, which the header shows as NOTAUTH
_TSIG_ERROR_NAMES = {16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}


def rcode_name(message: dns.message.Message) -> str:
    """The status as kdig names it: the TSIG error when the TSIG record has one, else
    the extended RCODE (``RCODE 4000`` when it has no name)."""
    if message.tsig is not None:
        error = int(getattr(message.tsig[0], "error", 0))
        if error:
            return _TSIG_ERROR_NAMES.get(error, f"RCODE {error}")
    value = message.rcode()
    if value == dns.rcode.NOTIMP:
        return "NOTIMPL"  # Knot's name (dnspython's is NOTIMP)
    name = dns.rcode.to_text(dns.rcode.Rcode.make(value)) if 0 <= value <= 4095 else ""
    return name if name and not name.isdigit() else f"RCODE {value}"


def _serial(rrset: dns.rrset.RRset) -> int:
    rdata: Any = rrset[0]
    return int(rdata.serial)


@dataclass(slots=True)
class Transfer:
    """The state of one transfer of ``zone`` (``rdtype`` AXFR or IXFR) as messages come.

    ``limit_records`` bounds the answer records accepted (0: no bound)."""

    zone: dns.name.Name
    rdtype: int = dns.rdatatype.AXFR
    limit_records: int = 0
    #: messages, answer records and bytes accepted so far (kdig's footer)
    messages: int = 0
    records: int = 0
    size: int = 0
    #: the serial of the first SOA, once seen
    serial: int | None = None
    done: bool = False
    #: "axfr" (also an IXFR answered in full), "ixfr" (incremental), None before the
    #: second record
    style: str | None = None
    #: incremental: reading deletions (True) or additions (False)
    _deleting: bool = False
    _unsigned: int = 0

    @property
    def is_ixfr(self) -> bool:
        return self.rdtype == dns.rdatatype.IXFR

    def feed(self, message: dns.message.Message, size: int, *, signed: bool = False,
             verdict: str | None = None) -> bool:
        """Take one message of ``size`` bytes; True when the transfer is complete.

        ``signed``: the query was signed (TSIG), so the first message must be and no
        more than :data:`MAX_UNSIGNED` in a row may come unsigned (RFC 8945 §5.3.1);
        ``verdict``: why the message's TSIG did not verify (kdig's words), if it did
        not. The checks are kdig's, in its order: the RCODE, the first SOA, then the
        TSIG. Raises :class:`TransferError` (the message is not counted)."""
        if self.done:
            raise TransferError("a message after the end of the transfer", kind="extra")
        name = rcode_name(message)
        if name != "NOERROR":
            raise TransferError(f"server replied with error '{name}'", kind="rcode",
                                rcode=name)
        records = list(message.answer)
        first = self.messages == 0
        if first and (not records or records[0].rdtype != dns.rdatatype.SOA):
            raise TransferError("first answer record isn't SOA", kind="no-soa")
        if signed and verdict is None:
            if message.tsig is not None:
                self._unsigned = 0
            elif first:
                verdict = upstream.TSIG_MISSING
            else:
                self._unsigned += 1
                if self._unsigned > MAX_UNSIGNED:
                    verdict = upstream.TSIG_MISSING
        if verdict is not None:
            raise TransferError(verdict, kind="tsig")
        if first:
            self.serial = _serial(records[0])
        count = sum(len(rrset) for rrset in records)
        if self.limit_records and self.records + count > self.limit_records:
            raise TransferError(f"more than {self.limit_records} records", kind="limit")
        self.messages += 1
        self.records += count
        self.size += size
        if first and self.is_ixfr and count == 1:
            self.done = True  # the SOA alone: up to date
            return True
        for index, rrset in enumerate(records):
            if first and index == 0:
                continue
            for position in range(len(rrset)):
                self._step(rrset, position)
                if self.done:
                    return True
        return False

    def _step(self, rrset: dns.rrset.RRset, position: int) -> None:
        is_soa = rrset.rdtype == dns.rdatatype.SOA
        serial = int(getattr(rrset[position], "serial", -1)) if is_soa else -1
        if self.style is None:  # the second record says which kind of answer this is
            if is_soa and self.is_ixfr and serial != self.serial:
                self.style = "ixfr"
                self._deleting = True
                return
            self.style = "axfr"
        if self.style == "axfr":
            if is_soa and serial == self.serial:
                self.done = True
            return
        if not is_soa:
            return
        if self._deleting:
            self._deleting = False  # the new SOA: the additions follow
        elif serial == self.serial:
            self.done = True
        else:
            self._deleting = True  # the next sequence's old SOA
