"""EDNS(0) options this project speaks: padding, edns-tcp-keepalive, EDE.

* **Padding** (RFC 7830, policy RFC 8467 §4.1): clients pad queries to a multiple of
  128 bytes; a server pads a response to a multiple of 468 bytes *only* when the query
  was padded and only on an encrypted transport. dnspython renders padding itself
  (``Message.use_edns(pad=N)``); we decide N.
* **edns-tcp-keepalive** (RFC 7828): option code 11. A client sends it empty to ask;
  a server answers on TCP/TLS with a 16-bit idle timeout in units of 100 ms. It must
  never appear over UDP.
* **Extended DNS Errors** (RFC 8914): the reason behind a SERVFAIL/REFUSED.
* **NSID** (RFC 5001): option code 3. A client sends it empty to ask which server
  answered; a server that has an identifier configured answers with it (opaque bytes).
  The value is written as Unbound's ``nsid:`` option is (:func:`parse_nsid`).
"""

from __future__ import annotations

import struct

import dns.edns
import dns.message

KEEPALIVE = dns.edns.OptionType.KEEPALIVE
PADDING = dns.edns.OptionType.PADDING
EDE = dns.edns.OptionType.EDE
NSID = dns.edns.OptionType.NSID

CLIENT_BLOCK = 128  # RFC 8467 §4.1 recommended query block size
SERVER_BLOCK = 468  # RFC 8467 §4.1 recommended response block size
MAX_KEEPALIVE_UNITS = 0xFFFF
#: The longest NSID accepted, in bytes. RFC 5001 sets no limit (nor does Unbound), but
#: every answer to an NSID query carries it, so it should fit beside a short answer in
#: the 512 bytes every client takes over UDP: 255 holds any host name (253 octets) or a
#: 127-byte identifier written in hex.
MAX_NSID = 255


def keepalive_option(timeout: float | None) -> dns.edns.GenericOption:
    """The edns-tcp-keepalive option: empty for a query, ``timeout`` seconds in a response."""
    if timeout is None:
        return dns.edns.GenericOption(KEEPALIVE, b"")
    units = max(0, min(MAX_KEEPALIVE_UNITS, round(timeout * 10)))
    return dns.edns.GenericOption(KEEPALIVE, struct.pack("!H", units))


def keepalive_timeout(option: dns.edns.Option) -> float | None:
    """Seconds advertised in a keepalive option, or None if it carries no timeout.

    Raises ValueError for a malformed option (length other than 0 or 2, RFC 7828 §3.1).
    """
    data = option.to_wire() or b""
    if not data:
        return None
    if len(data) != 2:
        raise ValueError(f"edns-tcp-keepalive option of length {len(data)}")
    return int(struct.unpack("!H", data)[0]) / 10.0


def find_option(message: dns.message.Message, otype: int) -> dns.edns.Option | None:
    for option in message.options:
        if option.otype == otype:
            found: dns.edns.Option = option
            return found
    return None


def has_option(message: dns.message.Message, otype: int) -> bool:
    return any(option.otype == otype for option in message.options)


def padded_size(length: int, block: int) -> int:
    """Smallest multiple of ``block`` that holds ``length`` bytes (0 block: unchanged)."""
    if block <= 0:
        return length
    return -(-length // block) * block


def ede_option(code: int, text: str | None = None) -> dns.edns.EDEOption:
    return dns.edns.EDEOption(dns.edns.EDECode.make(code), text)


def parse_nsid(text: str) -> bytes:
    """The NSID bytes of a value written as Unbound's ``nsid:`` option: ``ascii_``
    (any case, as Unbound reads it) followed by the text itself (its UTF-8 bytes), or
    the bytes in hex (an even number of hex digits, either case, nothing else).
    Raises ValueError (the reason) for anything else, an empty value or more than
    :data:`MAX_NSID` bytes."""
    if text[:6].lower() == "ascii_":
        value = text[6:].encode()
    else:
        if len(text) % 2 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"{text!r} is neither hex (an even number of hex digits) "
                             "nor ascii_ followed by text")
        value = bytes.fromhex(text)
    if not value:
        raise ValueError("an empty NSID (leave nsid out to send none)")
    if len(value) > MAX_NSID:
        raise ValueError(f"an NSID of {len(value)} bytes (at most {MAX_NSID})")
    return value


def nsid_option_wire(nsid: bytes) -> bytes:
    """The NSID option carrying ``nsid``, in wire form (code, length, value)."""
    return struct.pack("!HH", NSID, len(nsid)) + nsid
