"""Renderers for ``dnstls query``: kdig's text layout, RFC 8427 JSON, the ``-d`` chain block.

The text layout follows kdig 3.2 (Knot DNS ``src/utils/common/exec.c``) so that people
and scripts used to kdig read it without surprise:

* an optional ``;; TLS session (TLS1.3)-(...)-(AES-256-GCM)`` line;
* the header, ``;; ->>HEADER<<- opcode: ...; status: ...; id: N`` and ``;; Flags: ...``
  with the *wire* counts (ADDITIONAL includes the OPT record);
* ``;; EDNS PSEUDOSECTION:`` with one line per option, in wire order;
* the sections, each record as ``owner`` padded to 20 columns, TAB, TTL, TAB, class,
  TAB, type, TAB, RDATA (the question line has an empty TTL column);
* the footer: ``;; Received N B``, ``;; Time ... UTC``, ``;; From ADDR@PORT(TRANSPORT)
  in X.X ms``.

Deliberate differences from kdig 3.2: edns-tcp-keepalive (RFC 7828) is shown as
``;; KEEPALIVE: 12.0 s`` instead of a hex dump, the time is always UTC, the transport
label is the caller's (kdig 3.2 prints ``TCP`` for TLS), and the TLS session line leaves
out what OpenSSL could not be asked (the key exchange group and the server's signature
scheme need ctypes, :func:`dnstls.net.tls.handshake_nids`; a resumed session has no
signature).
RDATA text is dnspython's presentation format, which agrees with Knot's for the common
types, put on one line as Knot puts it (:func:`rdata_text`: base64 and hex unbroken, hex
in capitals for DS and friends). Which parts are printed is kdig's display options'
business (:class:`Style`, Knot's ``style_t``; :func:`render_kdig` follows Knot's
``print_packet``).

The JSON form uses RFC 8427 member names (``ID``, ``QR``, ``Opcode``, ..., ``QNAME``,
``answerRRs`` of objects with ``NAME``/``TYPE``/``CLASS``/``TTL``/``rdata<TYPE>``/
``RDATAHEX``), the ``EDNS`` object of newer kdig releases, and two members of our own:
``queryTime`` (milliseconds) and ``server``.

Time never comes from a clock here: the caller passes it in :class:`ReplyInfo`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnstls.cli.knot_rdata import (
    TSIG_ERRORS,
    class_text,
    key_tag,
    knot_rdata,
    type_text,
)
from dnstls.keys import pinned_certificate
from dnstls.net.probe import Verification

__all__ = [
    "DEFAULT_STYLE",
    "ReplyInfo",
    "Style",
    "TlsSession",
    "key_tag",
    "rdata_text",
    "render_chain_debug",
    "render_json",
    "render_kdig",
    "tls_session_line",
]

_OPT_NSID = 3
_OPT_ECS = 8
_OPT_COOKIE = 10
_OPT_KEEPALIVE = 11
_OPT_PADDING = 12
_OPT_EDE = 15

# RFC 8914 §5.2 registry, with Knot's wording (knot_edns_ede_names).
EDE_NAMES = {
    0: "Other", 1: "Unsupported DNSKEY Algorithm", 2: "Unsupported DS Digest Type",
    3: "Stale Answer", 4: "Forged Answer", 5: "DNSSEC Indeterminate", 6: "DNSSEC Bogus",
    7: "Signature Expired", 8: "Signature Not Yet Valid", 9: "DNSKEY Missing",
    10: "RRSIGs Missing", 11: "No Zone Key Bit Set", 12: "NSEC Missing",
    13: "Cached Error", 14: "Not Ready", 15: "Blocked", 16: "Censored", 17: "Filtered",
    18: "Prohibited", 19: "Stale NXDOMAIN Answer", 20: "Not Authoritative",
    21: "Not Supported", 22: "No Reachable Authority", 23: "Network Error",
    24: "Invalid Data", 25: "Signature Expired before Valid", 26: "Too Early",
    27: "Unsupported NSEC3 Iterations Value", 28: "Unable to conform to policy",
    29: "Synthesized", 30: "Invalid Query Type",
}

# Header flags in kdig's order; "z" is the reserved bit 0x0040.
_FLAGS = (("qr", dns.flags.QR), ("aa", dns.flags.AA), ("tc", dns.flags.TC),
          ("rd", dns.flags.RD), ("ra", dns.flags.RA), ("z", 0x0040),
          ("ad", dns.flags.AD), ("cd", dns.flags.CD))

# OpenSSL TLS 1.3 / common TLS 1.2 bulk ciphers in GnuTLS spelling.
_BULK = (("AES_256_GCM", "AES-256-GCM"), ("AES256-GCM", "AES-256-GCM"),
         ("AES_128_GCM", "AES-128-GCM"), ("AES128-GCM", "AES-128-GCM"),
         ("CHACHA20", "CHACHA20-POLY1305"), ("AES_128_CCM", "AES-128-CCM"),
         ("AES256-SHA", "AES-256-CBC"), ("AES128-SHA", "AES-128-CBC"))


@dataclass(frozen=True, slots=True)
class TlsSession:
    """What the TLS handshake agreed on, as Python's ``ssl`` reports it.

    ``version`` is ``SSLObject.version()`` (``"TLSv1.3"``), ``cipher`` the OpenSSL cipher
    name; ``group`` (``"X25519"``) and ``signature`` (``"ECDSA-SECP256R1-SHA256"``), in
    GnuTLS's names, are optional: Python's ``ssl`` does not expose them and they come from
    OpenSSL where it can be asked (:func:`dnstls.net.tls.handshake_nids`).
    """

    version: str
    cipher: str
    group: str | None = None
    signature: str | None = None
    #: the DER chain the server presented, leaf first (empty for a resumed session)
    chain: tuple[bytes, ...] = ()


@dataclass(slots=True)
class Style:
    """What to print, as kdig's display options set it (Knot's ``style_t``).

    ``format`` is ``"full"`` (the sections), ``"short"`` (``+short``: the answer's record
    data only) or ``"json"``; the switches are kdig's ``+[no]header`` (with the TLS session
    line), ``+[no]comments`` (section titles), ``+[no]opt`` (the EDNS pseudosection),
    ``+[no]question``, ``+[no]answer``, ``+[no]authority``, ``+[no]additional``,
    ``+[no]stats`` (the footer), ``+[no]qr`` (the query too), ``+[no]class``, ``+[no]ttl``,
    ``+[no]crypto`` (key and signature data, else ``[id = N]`` / ``[omitted]``) and
    ``+[no]opttext`` (unknown EDNS options as text when printable), ``+[no]multiline``
    (kdig's multi-line record layout with comments) and ``+[no]generic`` (RFC 3597 types
    and data). The defaults are kdig's.
    """

    format: str = "full"
    header: bool = True
    comments: bool = True
    opt: bool = True
    question: bool = True
    answer: bool = True
    authority: bool = True
    additional: bool = True
    stats: bool = True
    qr: bool = False
    rrclass: bool = True
    ttl: bool = True
    crypto: bool = True
    opttext: bool = False
    #: +multiline: long record data wrapped in ( ... ), SOA and DNSKEY comments
    multiline: bool = False
    #: +generic: every record's type and data in RFC 3597 form (TYPE6 \\# 63 ...)
    generic: bool = False
    #: +[no]tsig: the TSIG pseudosection (the answer's TSIG record, RFC 8945)
    tsig: bool = True


DEFAULT_STYLE = Style()


@dataclass(frozen=True, slots=True)
class ReplyInfo:
    """Metadata of one answer: where from, how, how fast, when.

    ``transport`` is the label printed in the ``From`` line (``TLS``, ``TCP``, ``UDP``);
    ``received`` the DNS message size in bytes (without the TCP length prefix);
    ``time`` when the answer arrived (naive values are taken as UTC).
    """

    server: str
    port: int
    transport: str
    elapsed_ms: float
    received: int
    time: datetime
    tls: TlsSession | None = None


# --- kdig text layout -------------------------------------------------------------------

def tls_session_line(session: TlsSession) -> str:
    """``;; TLS session (TLS1.3)-(ECDHE-X25519)-(ECDSA-SECP256R1-SHA256)-(AES-256-GCM)``."""
    parts = [session.version.replace("TLSv", "TLS")]
    if session.group:  # GnuTLS spells finite-field groups "DHE-FFDHE2048"
        group = session.group.upper()
        parts.append(("DHE-" if group.startswith("FFDHE") else "ECDHE-") + group)
    elif session.cipher.startswith(("ECDHE-", "DHE-")):  # TLS 1.2 names carry the kx
        parts.append(session.cipher.split("-")[0])
    if session.signature:
        parts.append(session.signature)
    parts.append(_bulk_cipher(session.cipher))
    return ";; TLS session " + "-".join(f"({part})" for part in parts)


def _bulk_cipher(cipher: str) -> str:
    for marker, name in _BULK:
        if marker in cipher:
            return name
    return cipher


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rcode_name(value: int) -> str:
    # dnspython names unknown values by their number; kdig says "RCODE 4000".
    name = dns.rcode.to_text(dns.rcode.Rcode.make(value)) if 0 <= value <= 4095 else ""
    return name if name and not name.isdigit() else f"RCODE {value}"


def _opcode_name(value: int) -> str:
    name = dns.opcode.to_text(dns.opcode.Opcode.make(value)) if 0 <= value <= 15 else ""
    return name if name and not name.isdigit() else f"OPCODE {value}"


def _counts(message: dns.message.Message) -> tuple[int, int, int, int]:
    def rrs(section: Iterable[dns.rrset.RRset]) -> int:
        return sum(len(rrset) for rrset in section)

    extra = (1 if message.opt is not None else 0) + (1 if message.tsig is not None else 0)
    return (len(message.question), rrs(message.answer), rrs(message.authority),
            rrs(message.additional) + extra)


def _status(message: dns.message.Message) -> str:
    """The status kdig prints: the TSIG error when the TSIG record has one (BADSIG,
    BADKEY...: the header says NOTAUTH), else the extended RCODE."""
    if message.tsig is not None:
        error = int(getattr(message.tsig[0], "error", 0))
        if error:
            return TSIG_ERRORS.get(error, f"RCODE {error}")
    return _rcode_name(message.rcode())


def _header(message: dns.message.Message) -> list[str]:
    flags = "".join(f" {name}" for name, bit in _FLAGS if message.flags & bit)
    qd, an, ns, ar = _counts(message)
    return [
        f";; ->>HEADER<<- opcode: {_opcode_name(message.opcode())}; "
        f"status: {_status(message)}; id: {message.id}",
        f";; Flags:{flags or ' '}; QUERY: {qd}; ANSWER: {an}; AUTHORITY: {ns}; "
        f"ADDITIONAL: {ar}",
    ]


def _option_data(option: dns.edns.Option) -> bytes:
    return option.to_wire() or b""


def _printable(data: bytes) -> bool:
    return all(0x20 <= byte < 0x7F for byte in data)


def _option_line(option: dns.edns.Option, opttext: bool = False) -> str:
    code = int(option.otype)
    data = _option_data(option)
    if code == _OPT_NSID:
        text = f' "{data.decode("ascii")}"' if data and _printable(data) else ""
        return f";; NSID: {data.hex().upper()}{text}"
    if code == _OPT_ECS and isinstance(option, dns.edns.ECSOption):
        return f";; CLIENT-SUBNET: {option.address}/{option.srclen}/{option.scopelen}"
    if code == _OPT_PADDING:
        return f";; PADDING: {len(data)} B"
    if code == _OPT_COOKIE:
        return f";; COOKIE: {data.hex().upper()}"
    if code == _OPT_EDE:
        return ";; EDE: " + _ede_text(data)
    if code == _OPT_KEEPALIVE:
        if not data:
            return ";; KEEPALIVE: (empty)"
        if len(data) != 2:
            return ";; KEEPALIVE: (malformed)"
        return f";; KEEPALIVE: {struct.unpack('!H', data)[0] / 10:.1f} s"
    if opttext and data and _printable(data):  # kdig's +opttext
        return f";; Option ({code}): {data.decode('ascii')}"
    return f";; Option ({code}): {data.hex().upper()}"


def _ede_text(data: bytes) -> str:
    if len(data) < 2:
        return "(malformed)"
    code = struct.unpack("!H", data[:2])[0]
    name = EDE_NAMES.get(code, "Unknown code")
    if len(data) > 2:
        return f"{code} ({name}): '{data[2:].decode('utf-8', 'replace')}'"
    return f"{code} ({name})"


def _edns(message: dns.message.Message, style: Style) -> str:
    """kdig's EDNS pseudosection: its title and the first line's ``;; `` come with
    +comments; without, the version line is glued to ``;;`` (``;;Version: 0; ...``)."""
    ext = (message.ednsflags >> 24) & 0xFF
    whole = (ext << 4) | (message.flags & 0xF) if ext else 0
    do = "do" if message.ednsflags & dns.flags.DO else ""
    lines = [f"Version: {message.edns}; flags: {do}; UDP size: {message.payload} B; "
             f"ext-rcode: {_rcode_name(whole)}"]
    lines += [_option_line(option, style.opttext) for option in message.options]
    return ("\n;; EDNS PSEUDOSECTION:\n;; " if style.comments else ";;") + "\n".join(lines) + "\n"


def _owner(text: str) -> str:
    # Knot: "%-20s" then TAB, or a space for names of 32 characters and more.
    return f"{text:<20}" + ("\t" if len(text) < 32 else " ")


def _question_line(rrset: dns.rrset.RRset, style: Style = DEFAULT_STYLE) -> str:
    # Knot's header dump with an empty TTL: the TTL column is only its separator
    sep = " " if style.multiline else "\t"
    return (_owner(rrset.name.to_text()) + (sep if style.ttl else "")
            + (f"{class_text(rrset.rdclass):<2}{sep}" if style.rrclass else "")
            + type_text(rrset.rdtype, generic=style.generic))


def rdata_text(rdata: dns.rdata.Rdata, style: Style = DEFAULT_STYLE) -> str:
    """Record data as kdig prints it (:func:`dnstls.cli.knot_rdata.knot_rdata`): on one
    line or, with +multiline, wrapped with comments; +nocrypto hides keys and
    signatures, +generic prints RFC 3597 data."""
    return knot_rdata(rdata, multiline=style.multiline, crypto=style.crypto,
                      generic=style.generic)


def _record_lines(section: Iterable[dns.rrset.RRset], style: Style = DEFAULT_STYLE,
                  ) -> list[str]:
    """Knot's ``knot_rrset_txt_dump``: the columns separated by TABs, by spaces with
    +multiline."""
    sep = " " if style.multiline else "\t"
    lines = []
    for rrset in section:
        head = (_owner(rrset.name.to_text()) + (f"{rrset.ttl}{sep}" if style.ttl else "")
                + (f"{class_text(rrset.rdclass):<2}{sep}" if style.rrclass else "")
                + f"{type_text(rrset.rdtype, generic=style.generic)}{sep}")
        lines += [head + rdata_text(rdata, style) for rdata in rrset]
    return lines


def render_kdig(message: dns.message.Message, info: ReplyInfo,
                style: Style = DEFAULT_STYLE, *, incoming: bool = True) -> str:
    """A message in kdig's layout (Knot's ``print_packet``), as ``style`` says;
    newline-terminated unless empty. ``incoming=False`` renders a query sent (``+qr``):
    ``;; Sent`` and ``;; To`` in the footer."""
    out: list[str] = []
    if style.header:
        if info.tls is not None:
            out.append(tls_session_line(info.tls) + "\n")
        out.append("\n".join(_header(message)) + "\n")
    if style.opt and message.opt is not None:
        out.append(_edns(message, style))
    if style.format == "short":  # kdig's dig format: every answer record's data
        out += [rdata_text(rdata, style) + "\n" for rrset in message.answer for rdata in rrset]
    else:
        if style.question and message.question:
            out.append(("\n;; QUESTION SECTION:\n;; " if style.comments else ";;")
                       + "\n;; ".join(_question_line(rrset, style)
                                      for rrset in message.question) + "\n")
        for title, section, shown in (
                ("ANSWER", message.answer, style.answer),
                ("AUTHORITY", message.authority, style.authority),
                ("ADDITIONAL", message.additional, style.additional)):
            records = _record_lines(section, style) if shown else []
            if records:
                out.append((f"\n;; {title} SECTION:\n" if style.comments else "")
                           + "\n".join(records) + "\n")
    if style.tsig and message.tsig is not None:  # the short format has it too (kdig)
        out.append(("\n;; TSIG PSEUDOSECTION:\n" if style.comments else "")
                   + "\n".join(_record_lines([message.tsig], style)) + "\n")
    if style.stats:
        out.append("\n" + "\n".join(_footer(info, incoming=incoming)) + "\n")
    return "".join(out)


def _footer(info: ReplyInfo, *, incoming: bool = True) -> list[str]:
    """kdig's statistics; no `` in X ms`` when ``info.elapsed_ms`` is negative."""
    when = _utc(info.time).strftime("%Y-%m-%d %H:%M:%S UTC")
    where = f"{info.server}@{info.port}({info.transport})"
    elapsed = f" in {info.elapsed_ms:.1f} ms" if info.elapsed_ms >= 0 else ""
    return [f";; {'Received' if incoming else 'Sent'} {info.received} B",
            f";; Time {when}",
            f";; {'From' if incoming else 'To'} {where}{elapsed}"]


# --- zone transfers (kdig's print_header_xfr, print_data_xfr, print_footer_xfr) ------------

def render_xfr_header(kind: str, zone: str, style: Style = DEFAULT_STYLE) -> str:
    """``;; AXFR for example.test.`` (``+header``; any format but JSON), as kdig prints
    it once the first message of a transfer has arrived."""
    return f";; {kind} for {zone}\n" if style.header else ""


def render_xfr_message(message: dns.message.Message, style: Style = DEFAULT_STYLE) -> str:
    """One message of a transfer as kdig prints it: its answer records whatever the
    section switches (``+noanswer`` does not hide them), without section titles; its
    TSIG record after them with ``+tsig`` (not in the short format, which prints the
    records' data alone)."""
    if style.format == "short":
        return "".join(rdata_text(rdata, style) + "\n"
                       for rrset in message.answer for rdata in rrset)
    lines = _record_lines(message.answer, style)
    if style.tsig and message.tsig is not None:
        lines += _record_lines([message.tsig], style)
    return "".join(line + "\n" for line in lines)


def render_xfr_footer(info: ReplyInfo, messages: int, records: int,
                      style: Style = DEFAULT_STYLE) -> str:
    """kdig's footer of a transfer (``+stats``): the bytes of the messages accepted and,
    when there are any, ``(N messages, M records)`` (the TSIG records not counted)."""
    if not style.stats:
        return ""
    lines = _footer(info)
    if messages:
        lines[0] += f" ({messages} messages, {records} records)"
    return "\n".join(lines) + "\n"


def xfr_message_json(message: dns.message.Message, info: ReplyInfo) -> dict[str, Any]:
    """One element of kdig's ``+json`` array for a transfer (and its ``queryMessage``
    with ``+qr``), as kdig 3.2.6 prints it there: the RFC 8427 members of the message
    (no ``queryTime`` and ``server``), no ``questionRRs``, the OPT record as a record of
    ``additionalRRs`` (``CLASS`` the UDP size, ``TTL`` the extended RCODE, version and
    flags) rather than an ``EDNS`` object, and the TSIG record after it; the TSIG not
    counted in ``ARCOUNT`` and ``msgLength`` (kdig strips it before measuring)."""
    size = info.received
    tsig = message.tsig
    if tsig is not None:
        size -= len(tsig.name.to_wire() or b"") + 10 + len(tsig[0].to_wire() or b"")
    out = message_json(message, replace(info, received=size), metadata=False)
    out.pop("questionRRs", None)
    out.pop("EDNS", None)
    if tsig is not None:
        out["ARCOUNT"] -= 1
    additional = _json_records(message.additional)
    if message.opt is not None:
        data = b"".join(struct.pack("!HH", int(option.otype), len(_option_data(option)))
                        + _option_data(option) for option in message.options)
        opt: dict[str, Any] = {"NAME": ".", "TYPE": 41, "TYPEname": "OPT",
                               "CLASS": message.payload, "TTL": message.ednsflags
                               | (message.edns << 16)
                               | ((message.rcode() >> 4) << 24), "RDLENGTH": len(data)}
        if data:
            opt["RDATAHEX"] = data.hex().upper()
        additional.append(opt)
    additional += _json_records([tsig] if tsig is not None else [])
    out.pop("additionalRRs", None)
    if additional:
        out["additionalRRs"] = additional
    return out


# --- RFC 8427 JSON ----------------------------------------------------------------------

def _type_name(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _class_name(rdclass: int) -> str:
    return dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(rdclass))


def _json_records(section: Iterable[dns.rrset.RRset]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for rrset in section:
        type_name = _type_name(rrset.rdtype)
        for rdata in rrset:
            wire = rdata.to_wire()
            record: dict[str, Any] = {
                "NAME": rrset.name.to_text(), "TYPE": int(rrset.rdtype),
                "TYPEname": type_name, "CLASS": int(rrset.rdclass),
                "CLASSname": _class_name(rrset.rdclass), "TTL": rrset.ttl,
            }
            if not type_name.startswith("TYPE"):
                record[f"rdata{type_name}"] = (knot_rdata(rdata) if rrset.rdtype == 250
                                               else rdata.to_text())
            record["RDLENGTH"] = len(wire)
            if wire:
                record["RDATAHEX"] = wire.hex().upper()
            records.append(record)
    return records


def _json_option(option: dns.edns.Option) -> tuple[str, Any]:
    code = int(option.otype)
    data = _option_data(option)
    if code == _OPT_NSID:
        nsid: dict[str, Any] = {"HEX": data.hex().upper()}
        if _printable(data):
            nsid["TEXT"] = data.decode("ascii")
        return "NSID", nsid
    if code == _OPT_ECS and isinstance(option, dns.edns.ECSOption):
        return "ECS", f"{option.address}/{option.srclen}/{option.scopelen}"
    if code == _OPT_COOKIE:
        parts = [data[:8].hex().upper()] + ([data[8:].hex().upper()] if len(data) > 8 else [])
        return "COOKIE", parts
    if code == _OPT_KEEPALIVE and len(data) == 2:
        return "KEEPALIVE", struct.unpack("!H", data)[0]
    if code == _OPT_PADDING:
        padding: dict[str, Any] = {"LENGTH": len(data)}
        if any(data):
            padding["HEX"] = data.hex().upper()
        return "PADDING", padding
    if code == _OPT_EDE and len(data) >= 2:
        ede_code = struct.unpack("!H", data[:2])[0]
        ede: dict[str, Any] = {"CODE": ede_code}
        if ede_code in EDE_NAMES:
            ede["Purpose"] = EDE_NAMES[ede_code]
        if len(data) > 2:
            ede["TEXT"] = data[2:].decode("utf-8", "replace")
        return "EDE", ede
    return f"OPT{code}", data.hex().upper()


def _json_edns(message: dns.message.Message) -> dict[str, Any]:
    flags = []
    for index in range(16):  # kdig: most significant bit first, DO or BIT<index>
        bit = 0x8000 >> index
        if message.ednsflags & bit:
            flags.append("DO" if bit == dns.flags.DO else f"BIT{index}")
    edns: dict[str, Any] = {
        "Version": message.edns, "FLAGS": flags, "RCODE": _rcode_name(message.rcode()),
        "UDPSIZE": message.payload,
    }
    for option in message.options:
        key, value = _json_option(option)
        if key == "EDE" and "EDE" in edns:  # several EDE options: keep them all
            previous = edns["EDE"]
            edns["EDE"] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            edns[key] = value
    return edns


def message_json(message: dns.message.Message, info: ReplyInfo, *,
                 metadata: bool = True) -> dict[str, Any]:
    """The JSON object of :func:`render_json`, for callers that embed it; without
    ``metadata``, RFC 8427's members only (no ``queryTime`` and ``server``: the query
    of kdig's ``+json +qr``)."""
    moment = _utc(info.time)
    qd, an, ns, ar = _counts(message)
    out: dict[str, Any] = {
        "dateString": moment.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dateSeconds": int(moment.timestamp()),
        "msgLength": info.received,
        "ID": message.id,
        "QR": int(bool(message.flags & dns.flags.QR)),
        "Opcode": int(message.opcode()),
        "AA": int(bool(message.flags & dns.flags.AA)),
        "TC": int(bool(message.flags & dns.flags.TC)),
        "RD": int(bool(message.flags & dns.flags.RD)),
        "RA": int(bool(message.flags & dns.flags.RA)),
        "AD": int(bool(message.flags & dns.flags.AD)),
        "CD": int(bool(message.flags & dns.flags.CD)),
        "RCODE": message.flags & 0xF,
        "QDCOUNT": qd, "ANCOUNT": an, "NSCOUNT": ns, "ARCOUNT": ar,
    }
    if len(message.question) == 1:
        question = message.question[0]
        out |= {"QNAME": question.name.to_text(), "QTYPE": int(question.rdtype),
                "QTYPEname": _type_name(question.rdtype), "QCLASS": int(question.rdclass),
                "QCLASSname": _class_name(question.rdclass)}
    if message.question:
        out["questionRRs"] = [
            {"NAME": q.name.to_text(), "TYPE": int(q.rdtype), "TYPEname": _type_name(q.rdtype),
             "CLASS": int(q.rdclass), "CLASSname": _class_name(q.rdclass)}
            for q in message.question]
    tsig = [message.tsig] if message.tsig is not None else []
    for key, section in (("answerRRs", message.answer), ("authorityRRs", message.authority),
                         ("additionalRRs", [*message.additional, *tsig])):
        records = _json_records(section)
        if records:
            out[key] = records
    if message.opt is not None:
        out["EDNS"] = _json_edns(message)
    if not metadata:
        return out
    out["queryTime"] = round(info.elapsed_ms, 3)
    server: dict[str, Any] = {"address": info.server, "port": info.port,
                              "transport": info.transport}
    if info.tls is not None:
        tls: dict[str, Any] = {"version": info.tls.version, "cipher": info.tls.cipher}
        if info.tls.group:
            tls["group"] = info.tls.group
        if info.tls.signature:
            tls["signature"] = info.tls.signature
        tls["chain"] = [_json_certificate(der) for der in info.tls.chain]
        server["tls"] = tls
    out["server"] = server
    return out


def _json_certificate(der: bytes) -> dict[str, Any]:
    item = pinned_certificate(der, "")
    return {"subject": item.subject, "issuer": item.issuer,
            "notBefore": _json_time(item.not_before), "notAfter": _json_time(item.not_after),
            "pinSHA256": item.pin}


def _json_time(moment: datetime | None) -> str | None:
    return None if moment is None else _utc(moment).strftime("%Y-%m-%dT%H:%M:%S%z")


def render_json(message: dns.message.Message, info: ReplyInfo) -> str:
    """The answer as one RFC 8427 JSON object (2-space indent), newline-terminated."""
    return json.dumps(message_json(message, info), indent=2, ensure_ascii=False) + "\n"


# --- the -d chain block -----------------------------------------------------------------

def render_chain_debug(chain: Sequence[bytes], *, pins: Collection[str] = (),
                       verification: Verification | None = None,
                       now: datetime | None = None) -> str:
    """kdig's ``-d`` certificate lines for a presented chain, newline-terminated.

    Every certificate gets ``#N, SUBJECT`` and its ``SHA-256 PIN`` (``, MATCH`` when it
    is in ``pins``), as in kdig, and then, beyond kdig, its ``Issuer`` and ``Validity``
    (``, EXPIRED`` or ``, NOT YET VALID`` against ``now``, when given); then the pin
    verdict (skipped when ``pins`` is empty) and the trust
    verdict of ``verification`` (skipped when None or not checked). As in kdig, a pin
    mismatch ends the block: the connection is refused before verification matters.
    """
    lines: list[str] = []
    if not chain:
        lines.append("TLS, empty certificate list")
    else:
        lines.append("TLS, received certificate hierarchy:")
        matched = False
        for index, der in enumerate(chain, start=1):
            item = pinned_certificate(der, f"#{index}")
            match = item.pin in pins
            matched |= match
            lines.append(f" #{index}, {item.subject}")
            lines.append(f"     SHA-256 PIN: {item.pin}{', MATCH' if match else ''}")
            lines.append(f"     Issuer: {item.issuer}")
            lines.append(f"     Validity: {item.validity(now)}")
        if pins and not matched:
            lines.append("TLS, no certificate PIN match")
            return "".join(f";; DEBUG: {line}\n" for line in lines)
        if not pins:
            lines.append("TLS, skipping certificate PIN check")
    if verification is None or not verification.checked:
        lines.append("TLS, skipping certificate verification")
        return "".join(f";; DEBUG: {line}\n" for line in lines)
    text = "".join(f";; DEBUG: {line}\n" for line in lines)
    if verification.name is None:
        text += ";; WARNING: TLS, no hostname provided, will not verify certificate owner\n"
    if verification.trusted:
        return text + ";; DEBUG: TLS, The certificate is trusted.\n"
    return text + f";; DEBUG: TLS, The certificate is NOT trusted. {_sentence(verification)}\n"


def _sentence(verification: Verification) -> str:
    reason = (verification.reason or "unknown reason").strip()
    reason = reason[:1].upper() + reason[1:]
    return reason if reason.endswith(".") else reason + "."
