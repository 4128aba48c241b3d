"""Record data as Knot DNS 3.2 (kdig) prints it: one line, ``+multiline``, ``+generic``.

dnspython's presentation format agrees with Knot's for most types; this module holds
what differs, measured against kdig 3.2.6 (tests/interop/test_query_multiline_interop.py):

* types Knot 3.2 has no descriptor for (WKS, X25, NSAP, GPOS, DLV, AMTRELAY, RESINFO,
  WALLET...) are printed as ``TYPE11`` with RFC 3597 data, ``\\# 16 C00002...`` (hex in
  capitals), as is every type with ``+generic`` (the class keeps its name, as in kdig);
* base64 and hex unbroken on one line, hex in capitals (DS, TLSA, SSHFP, ZONEMD, the
  NSEC3 salt, EUI48/64, L64, NID), CERT with numbers, LOC in Knot's layout, SVCB
  parameters unquoted, a space after the text of CAA and URI and before an empty NSEC
  type bitmap (kdig prints them so);
* ``+nocrypto``: a DNSKEY's key becomes ``[id = KEYTAG]`` (multi-line: ``[omitted]``),
  a signature ``[omitted]`` (Knot's ``hide_crypto``);
* ``+multiline`` (Knot's ``wrap`` and ``verbose`` style): long fields inside
  ``( ... )`` on lines of their own, indented by four TABs, base64 and hex broken every
  40 characters; the SOA fields each with a comment (``3600 ; refresh (1 hour)``); a
  DNSKEY followed by ``; KSK, ECDSAP256SHA256 (256b), id = 61834``.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.svcbbase

__all__ = ["KNOT_TYPES", "dnskey_info", "human_time", "key_tag", "knot_rdata", "type_text"]

#: The types Knot 3.2.6 has a descriptor for (``knot_rrtype_to_string``, checked against
#: kdig 3.2.6): every other type is printed as ``TYPEnnn`` with RFC 3597 data.
KNOT_TYPES = frozenset({
    1, 2, 5, 6, 10, 12, 13, 14, 15, 16, 17, 18, 21, 24, 25, 28, 29, 33, 35, 36, 37, 39, 41,
    42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 59, 60, 61, 62, 63, 64, 65, 99, 104,
    105, 106, 107, 108, 109, 249, 250, 251, 252, 255, 256, 257,
})

#: Knot's multi-line layout: a field on a line of its own, and the wrap of long data.
INDENT = "\n\t\t\t\t"
BLOCK_WIDTH = 40

_DNSKEY, _CDNSKEY, _KEY = 48, 60, 25
_KEYS = frozenset({_DNSKEY, _CDNSKEY, _KEY})
_SIGNATURES = frozenset({46, 24})  # RRSIG, SIG

#: knot_dnssec_alg_names
ALGORITHMS = {
    1: "RSAMD5", 2: "DH", 3: "DSA", 5: "RSASHA1", 6: "DSA_NSEC3_SHA1",
    7: "RSASHA1_NSEC3_SHA1", 8: "RSASHA256", 10: "RSASHA512", 12: "ECC_GOST",
    13: "ECDSAP256SHA256", 14: "ECDSAP384SHA384", 15: "ED25519", 16: "ED448",
    252: "INDIRECT", 253: "PRIVATEDNS", 254: "PRIVATEOID",
}
_RSA = frozenset({1, 5, 7, 8, 10})
_DSA = frozenset({3, 6})
_FIXED_SIZE = {12: 512, 13: 256, 14: 384, 15: 256, 16: 456}
_NO_SIZE = frozenset({252, 253, 254})

#: SVCB keys whose values Knot prints without quotes (mandatory ... ipv6hint)
_SVCB_PLAIN = frozenset(range(7))

_TIME_UNITS = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60),
               ("second", 1))


def type_text(rdtype: int, *, generic: bool = False) -> str:
    """The type as kdig names it: ``TYPEnnn`` with ``+generic`` or when Knot 3.2 does
    not know the type."""
    if generic or rdtype not in KNOT_TYPES:
        return f"TYPE{rdtype}"
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def class_text(rdclass: int) -> str:
    """``IN``, ``CH``, ``NONE``, ``ANY`` or ``CLASSnnn`` (``HS`` too: Knot has no name
    for class 4)."""
    return {1: "IN", 3: "CH", 254: "NONE", 255: "ANY"}.get(rdclass, f"CLASS{rdclass}")


def key_tag(rdata: dns.rdata.Rdata) -> int:
    """RFC 4034 Appendix B key tag of a DNSKEY (CDNSKEY, KEY); for algorithm 1 (RSA/MD5)
    the 16 bits before the last byte of the modulus (B.1)."""
    wire = rdata.to_wire() or b""
    if len(wire) > 4 and wire[3] == 1:
        return int.from_bytes(wire[-3:-1], "big") if len(wire) >= 7 else 0
    total = 0
    for index, byte in enumerate(wire):
        total += byte << 8 if index % 2 == 0 else byte
    return (total + (total >> 16)) & 0xFFFF


def _key_size(wire: bytes) -> int:
    """Knot's key size in bits (``dnskey_len``): RSA from the modulus length in bytes,
    DSA from T, fixed for the curves, 0 for the rest."""
    if len(wire) <= 4:
        return 0
    algorithm, key = wire[3], wire[4:]
    if algorithm in _RSA:
        if key[0] == 0:
            if len(key) < 3:
                return 0
            return max(0, len(key) - 3 - int.from_bytes(key[1:3], "big")) * 8
        return max(0, len(key) - 1 - key[0]) * 8
    if algorithm in _DSA:
        return (64 + 8 * key[0]) * 8
    return _FIXED_SIZE.get(algorithm, 0)


def dnskey_info(rdata: dns.rdata.Rdata) -> str:
    """``KSK, ECDSAP256SHA256 (256b), id = 61834``: the comment kdig's +multiline puts
    after a DNSKEY (KSK when the SEP bit is set)."""
    wire = rdata.to_wire() or b""
    role = "KSK" if len(wire) > 1 and wire[1] & 1 else "ZSK"
    algorithm = wire[3] if len(wire) > 3 else 0
    name = ALGORITHMS.get(algorithm, "UNKNOWN")
    size = "" if algorithm in _NO_SIZE else f" ({_key_size(wire)}b)"
    return f"{role}, {name}{size}, id = {key_tag(rdata)}"


def human_time(seconds: int) -> str:
    """``1 hour 1 second``, ``2 weeks``: the SOA comments of kdig's +multiline ('' for 0)."""
    parts = []
    for unit, size in _TIME_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count > 1 else ''}")
    return " ".join(parts)


def _wrap(text: str, multiline: bool) -> str:
    if not multiline:
        return text
    return INDENT.join(text[i:i + BLOCK_WIDTH] for i in range(0, len(text), BLOCK_WIDTH))


def _b64(data: bytes, multiline: bool) -> str:
    return _wrap(base64.b64encode(data).decode("ascii"), multiline)


def _hex(data: bytes, multiline: bool) -> str:
    return _wrap(data.hex().upper(), multiline)


def _block(head: str, body: str, multiline: bool) -> str:
    """``head body`` on one line, or ``head (`` + body on its own lines + ``)``."""
    if not multiline:
        return f"{head} {body}" if head else body
    return (f"{head} (" if head else "(") + INDENT + body + INDENT + ")"


def _generic(wire: bytes, multiline: bool) -> str:
    if not wire:
        return _block("", "\\# 0", multiline)
    if multiline:
        return _block("", f"\\# {len(wire)} " + INDENT + _hex(wire, True), True)
    return f"\\# {len(wire)} {wire.hex().upper()}"


def knot_rdata(rdata: dns.rdata.Rdata, *, multiline: bool = False, crypto: bool = True,
               generic: bool = False) -> str:
    """One record's data as kdig 3.2.6 prints it (see the module docstring)."""
    rdtype = int(rdata.rdtype)
    wire = rdata.to_wire() or b""
    if generic or rdtype not in KNOT_TYPES or isinstance(rdata, dns.rdata.GenericRdata):
        return _generic(wire, multiline)
    r: Any = rdata
    if rdtype in _KEYS:
        head = f"{r.flags} {r.protocol} {r.algorithm}"
        if not crypto:
            if multiline:
                return f"{head} [omitted]{INDENT} ; {dnskey_info(rdata)}"
            return f"{head} [id = {key_tag(rdata)}]"
        if multiline:
            return _block(head, _b64(r.key, True), True) + f" ; {dnskey_info(rdata)}"
        return f"{head} {_b64(r.key, False)}"
    if rdtype in _SIGNATURES:
        signature = _b64(r.signature, multiline) if crypto else "[omitted]"
        fields = rdata.replace(signature=b"").to_text().split()
        head, rest = " ".join(fields[:5]), " ".join(fields[5:8])
        if multiline:
            return f"{head} (" + INDENT + rest + INDENT + signature + INDENT + ")"
        return f"{head} {rest} {signature}"
    if rdtype == 6:  # SOA
        if not multiline:
            return str(rdata.to_text())
        lines = [f"{r.serial} ; serial"]
        for label, value in (("refresh", r.refresh), ("retry", r.retry),
                             ("expire", r.expire), ("minimum", r.minimum)):
            human = human_time(value)
            lines.append(f"{value} ; {label}" + (f" ({human})" if human else ""))
        return _block(f"{r.mname} {r.rname}", INDENT.join(lines), True)
    if rdtype in (43, 59):  # DS, CDS
        return _block(f"{r.key_tag} {r.algorithm} {r.digest_type}",
                      _hex(r.digest, multiline), multiline)
    if rdtype in (52, 53):  # TLSA, SMIMEA
        return _block(f"{r.usage} {r.selector} {r.mtype}", _hex(r.cert, multiline),
                      multiline)
    if rdtype == 44:  # SSHFP
        return _block(f"{r.algorithm} {r.fp_type}", _hex(r.fingerprint, multiline),
                      multiline)
    if rdtype == 63:  # ZONEMD
        return _block(f"{r.serial} {r.scheme} {r.hash_algorithm}",
                      _hex(r.digest, multiline), multiline)
    if rdtype == 37:  # CERT: numbers, not mnemonics
        return _block(f"{r.certificate_type} {r.key_tag} {r.algorithm}",
                      _b64(r.certificate, multiline), multiline)
    if rdtype in (49, 61):  # DHCID, OPENPGPKEY
        data = r.data if rdtype == 49 else r.key
        return _block("", _b64(data, multiline), multiline)
    if rdtype == 45:  # IPSECKEY
        gateway = "." if r.gateway_type == 0 else str(r.gateway)
        where = f"{r.gateway_type} {r.algorithm} {gateway}"
        key = _b64(r.key, multiline) if r.algorithm > 0 and r.key else ""
        if multiline:
            return _block(f"{r.precedence}", where + (INDENT + key if key else ""), True)
        return f"{r.precedence} {where}" + (f" {key}" if key else "")
    if rdtype == 50:  # NSEC3: salt in capitals
        fields = str(rdata.to_text()).split(" ", 5)
        salt = r.salt.hex().upper() if r.salt else "-"
        bitmap = fields[5] if len(fields) > 5 else ""
        head = f"{r.algorithm} {r.flags} {r.iterations} {salt}"
        if multiline:
            return f"{head} (" + INDENT + fields[4] + INDENT + bitmap + INDENT + ")"
        return f"{head} {fields[4]} {bitmap}"
    if rdtype == 51:  # NSEC3PARAM
        salt = r.salt.hex().upper() if r.salt else "-"
        return f"{r.algorithm} {r.flags} {r.iterations} {salt}"
    if rdtype == 47:  # NSEC: the bitmap after a space, even when empty
        nsec = str(rdata.to_text())
        return nsec if " " in nsec else nsec + " "
    if rdtype == 62:  # CSYNC
        csync = str(rdata.to_text())
        return csync if csync.count(" ") >= 2 else csync + " "
    if rdtype in (257, 256):  # CAA, URI: Knot ends the text with a space
        return str(rdata.to_text()) + " "
    if rdtype == 29:  # LOC
        return _loc(wire)
    if rdtype in (108, 109, 104, 106):  # EUI48, EUI64, NID, L64
        return str(rdata.to_text()).upper()
    if rdtype in (64, 65):  # SVCB, HTTPS
        return _svcb(r, multiline)
    if rdtype == 250:  # TSIG
        return _tsig(r, multiline)
    return str(rdata.to_text())


#: Knot's names of TSIG errors (knot_tsig_err_names) and of the RCODEs below them
TSIG_ERRORS = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMPL",
               5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
               10: "NOTZONE", 16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}


def _tsig(r: Any, multiline: bool) -> str:
    """``hmac-sha256. 1796651476 300 32 MAC 61485 NOERROR 0``: algorithm, time signed,
    fudge, MAC size and MAC (base64, never wrapped), original ID, error, other data
    (length, then hex)."""
    mac = f"{len(r.mac)} {base64.b64encode(r.mac).decode('ascii')}" if r.mac else "0"
    other = f"{len(r.other)} {r.other.hex().upper()}" if r.other else "0"
    tail = f"{r.original_id} {TSIG_ERRORS.get(r.error, 'NULL')} {other}"
    head = f"{r.algorithm} {r.time_signed} {r.fudge}"
    if multiline:
        return f"{head} (" + INDENT + mac + INDENT + tail + INDENT + ")"
    return f"{head} {mac} {tail}"


def _svcb(r: Any, multiline: bool) -> str:
    head = f"{r.priority} {r.target}"
    params = []
    for key in sorted(r.params):
        value = r.params[key]
        text = value.to_text() if value is not None else ""
        name: str = dns.rdtypes.svcbbase.key_to_text(key)  # type: ignore[no-untyped-call]
        if int(key) in _SVCB_PLAIN and text.startswith('"') and text.endswith('"'):
            text = text[1:-1]
        params.append(f"{name}={text}" if text else name)
    if not params:
        return head
    if multiline:
        return f"{head} (" + INDENT + INDENT.join(params) + INDENT + ")"
    return head + " " + " ".join(params)


def _loc(wire: bytes) -> str:
    """Knot's ``wire_loc_to_str``: degrees, minutes, seconds (3 decimals only when not
    whole), two spaces between the parts, metres without decimals when whole."""
    if len(wire) < 16 or wire[0] != 0:
        return _generic(wire, False)
    size_w, hpre_w, vpre_w = wire[1], wire[2], wire[3]
    lat_w, lon_w, alt_w = struct.unpack("!III", wire[4:16])

    def angle(value: int, positive: str, negative: str) -> str:
        zero = 2 ** 31
        mark, amount = (positive, value - zero) if value >= zero else (negative, zero - value)
        degrees = amount // 3600000
        minutes = (amount - 3600000 * degrees) // 60000
        thousandths = amount - 3600000 * degrees - 60000 * minutes
        seconds = f"{thousandths // 1000}" if thousandths % 1000 == 0 \
            else f"{thousandths / 1000:.3f}"
        return f"{degrees} {minutes} {seconds} {mark}"

    def metres(centimetres: int) -> str:
        return f"{centimetres // 100}m" if centimetres % 100 == 0 \
            else f"{centimetres / 100:.2f}m"

    def precision(byte: int) -> str:
        return metres((byte >> 4) * 10 ** (byte & 0xF))

    altitude = alt_w - 10000000
    alt = f"{altitude // 100}m" if altitude % 100 == 0 else f"{altitude / 100:.2f}m"
    return (f"{angle(lat_w, 'N', 'S')}  {angle(lon_w, 'E', 'W')}  {alt}  "
            f"{precision(size_w)} {precision(hpre_w)} {precision(vpre_w)}")
