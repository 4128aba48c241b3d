"""EDNS(0) options this project speaks: padding, edns-tcp-keepalive, EDE.

* **Padding** (RFC 7830, policy RFC 8467 §4.1): clients pad queries to a multiple of
  128 bytes; a server pads a response to a multiple of 468 bytes *only* when the query
  was padded and only on an encrypted transport. dnspython renders padding itself
  (``Message.use_edns(pad=N)``); we decide N.
* **edns-tcp-keepalive** (RFC 7828): option code 11. A client sends it empty to ask;
  a server answers on TCP/TLS with a 16-bit idle timeout in units of 100 ms. It must
  never appear over UDP.
* **Extended DNS Errors** (RFC 8914): the reason behind a SERVFAIL/REFUSED.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.message

KEEPALIVE = dns.edns.OptionType.KEEPALIVE
PADDING = dns.edns.OptionType.PADDING
EDE = dns.edns.OptionType.EDE

CLIENT_BLOCK = 128  # RFC 8467 §4.1 recommended query block size
SERVER_BLOCK = 468  # RFC 8467 §4.1 recommended response block size
MAX_KEEPALIVE_UNITS = 0xFFFF


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
