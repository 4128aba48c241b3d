"""Unbound's local-zone types: blocking and overriding names (``[local] zone_types``,
``[[local.blocklist]]``, ``serve --local-zone-type``).

A *typed zone* is a name and one of Unbound 1.17's ``local-zone`` types; it covers the
name and every name under it, the longest (most specific) one deciding, as in Unbound:
``"ads.example. always_nxdomain"`` with ``"ok.ads.example. always_transparent"``
blocks every name under ads.example but those under ok.ads.example. Names compare by
whole labels, case-insensitively (``xads.example`` is not under ``ads.example``).

What each type answers was measured on unbound 1.17.1 on loopback (see
tests/interop/test_zone_types_unbound.py, which compares every case); "local data" is
``[local] data`` at the query name (``local-data``), answered first by the types that
look at it (AA set, the record's own TTL):

===================== ============================================================
type                  answer
===================== ============================================================
always_nxdomain       NXDOMAIN, AA; local data is not looked at
always_nodata         NOERROR without records, AA; local data is not looked at
always_refuse         REFUSED, AA; local data is not looked at
always_deny           no answer over UDP (the query is dropped); REFUSED over TCP/DoT
always_null           local data, else A 0.0.0.0 / AAAA :: (TTL 3600), else NODATA
always_transparent    resolved as usual; local data is not looked at
refuse                local data, else REFUSED, AA
deny                  local data, else dropped over UDP; REFUSED over TCP/DoT
static                local data, else NODATA (the name has local data) or NXDOMAIN
redirect              the zone name's local data for every name under it (renamed),
                      else NODATA
transparent           local data, else NODATA if the name has local data, else
                      resolved as usual
typetransparent       local data of the asked type, else resolved as usual
nodefault             as transparent (on a default zone's name: that zone is not served)
===================== ============================================================

NXDOMAIN and NODATA answers carry the zone's SOA (its negative TTL: min(TTL, MINIMUM))
when local data gives the zone name one (``"ads.example. SOA ..."``), else an empty
authority section, as Unbound's. A type on a default zone's name replaces that default
zone (Unbound: a configured local-zone replaces the default of the same name).

``deny`` and ``always_deny``: Unbound drops the query on every transport (a TCP client
sees the connection closed). dnstls drops it over UDP, as asked, but answers REFUSED
over TCP and DoT: a connection carries other queries (pipelined, RFC 7766 §6.2.1.1), and
every query accepted on it gets an answer.

Not supported: ``inform``, ``inform_deny``, ``inform_redirect`` (they log every query:
``server.log_queries`` logs all queries instead), ``noview`` and ``ipset`` (no views,
no ipset module); ``block_a`` is not in unbound 1.17.

Blocklists (``[[local.blocklist]] file = ... type = ...``): one name per line, ``#``
comments, or hosts-file lines (``0.0.0.0 ads.example``, ``127.0.0.1 ads.example``,
``::`` ...; every name on the line, ``localhost`` and the like skipped) as such lists are
distributed; each name gets the list's type. A list's name given again with another
type (another list, ``zone_types``): the later one wins, as in a later ``local-zone``
line. Errors name the file and the line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path

import dns.exception
import dns.name

from dnstls.errors import ConfigError

#: The supported types (Unbound 1.17 spelling).
ZONE_TYPES = frozenset({
    "always_nxdomain", "always_nodata", "always_refuse", "always_deny", "always_null",
    "always_transparent", "refuse", "deny", "static", "redirect", "transparent",
    "typetransparent", "nodefault"})
#: Unbound types deliberately not offered, and why (in the error message).
_UNSUPPORTED = {
    "inform": "it logs every query; use server.log_queries",
    "inform_deny": "it logs every query; use deny with server.log_queries",
    "inform_redirect": "it logs every query; use redirect with server.log_queries",
    "noview": "dnstls has no views", "ipset": "dnstls has no ipset module",
    "block_a": "not in unbound 1.17"}
#: Types whose answers are all local (never resolved upstream, whatever the question).
BLOCKING = frozenset({"always_nxdomain", "always_nodata", "always_refuse", "always_deny",
                      "always_null", "refuse", "deny", "static", "redirect"})
#: Hosts-file names that are not blocklist entries.
_HOSTS_SKIP = frozenset({"localhost", "localhost.localdomain", "local", "broadcasthost",
                         "ip6-localhost", "ip6-loopback", "ip6-localnet",
                         "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
                         "ip6-allhosts", "0.0.0.0"})


def check_type(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ConfigError(where, f"expected a local-zone type as a string, got {text!r}")
    kind = text.strip().lower().replace("-", "_")
    if kind in _UNSUPPORTED:
        raise ConfigError(where, f"type {text!r} is not supported: {_UNSUPPORTED[kind]}")
    if kind not in ZONE_TYPES:
        raise ConfigError(where, f"unknown local-zone type {text!r} (one of "
                          f"{', '.join(sorted(ZONE_TYPES))})")
    return kind


def _name(text: str, where: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ConfigError(where, f"invalid name {text!r}: {exc}") from None


def parse_zone_types(entries: Iterable[object], *, field: str = "local.zone_types",
                     ) -> dict[dns.name.Name, str]:
    """``"NAME TYPE"`` lines (Unbound's ``local-zone: NAME TYPE``; quotes around the
    name allowed) by name; ConfigError naming the first bad one (``field[i]``)."""
    out: dict[dns.name.Name, str] = {}
    for i, text in enumerate(entries):
        where = f"{field}[{i}]"
        if not isinstance(text, str):
            raise ConfigError(where, f"expected \"NAME TYPE\" as a string, like "
                              f"\"ads.example. always_nxdomain\", got {text!r}")
        parts = text.split()
        if len(parts) != 2:
            raise ConfigError(where, f"{text!r}: expected \"NAME TYPE\", like "
                              "\"ads.example. always_nxdomain\"")
        out[_name(parts[0].strip("\"'"), where)] = check_type(parts[1], where)
    return out


def _hosts_address(word: str) -> bool:
    try:
        ipaddress.ip_address(word.partition("%")[0])
    except ValueError:
        return False
    return True


def wire_name(text: str) -> bytes:
    """``text`` as a lower-cased wire-form name (as cache keys hold names): plain ASCII
    names directly (blocklists are large: ~4x faster than dnspython, and no Name object
    is kept), anything else (escapes, IDNA) through dnspython. Raises
    dns.exception.DNSException (dnspython's errors) for a name that is not one."""
    if text.isascii() and "\\" not in text and text not in (".", "@"):
        labels = text.lower().encode().split(b".")
        if labels[-1] == b"":
            labels.pop()
        if all(0 < len(label) < 64 for label in labels):
            wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\0"
            if len(wire) <= 255:
                return wire
    return (dns.name.from_text(text).to_wire() or b"").lower()


def by_wire(typed: Mapping[dns.name.Name, str]) -> dict[bytes, str]:
    """``typed`` keyed by lower-cased wire names (what LocalData takes)."""
    return {(name.to_wire() or b"").lower(): kind for name, kind in typed.items()}


def typed_above(names: Iterable[dns.name.Name], typed: Mapping[bytes, str],
                ) -> set[dns.name.Name]:
    """The typed zones at or above some of ``names``."""
    found = set()
    for name in names:
        while True:
            if (name.to_wire() or b"").lower() in typed:
                found.add(name)
            if len(name.labels) <= 1:
                break
            name = name.parent()
    return found


def parse_blocklist(text: str, *, source: str) -> list[bytes]:
    """The names of a blocklist (see the module's text) in lower-cased wire form;
    ConfigError naming ``source:line`` for a line that is neither a name nor a
    hosts-file entry."""
    names: list[bytes] = []
    append = names.append
    addresses: dict[str, bool] = {}
    for number, line in enumerate(text.splitlines(), 1):
        hash_at = line.find("#")
        if hash_at >= 0:
            line = line[:hash_at]
        words = line.split()
        if not words:
            continue
        first = words[0]
        address = addresses.get(first)
        if address is None:  # the few addresses of a hosts file, each checked once
            address = (first[0].isdigit() or ":" in first) and _hosts_address(first)
            if address:
                addresses[first] = True
        if len(words) > 1 or address:
            if not address:
                raise ConfigError(f"{source}:{number}", f"{line.strip()!r}: expected one "
                                  "name, or an address and names (a hosts-file line)")
            words = [w for w in words[1:] if w.lower() not in _HOSTS_SKIP]
        for word in words:
            try:
                append(wire_name(word))
            except dns.exception.DNSException as exc:
                raise ConfigError(f"{source}:{number}",
                                  f"invalid name {word!r}: {exc}") from None
    return names


def read_blocklist(path: str, *, field: str) -> list[bytes]:
    """:func:`parse_blocklist` of the file ``path``; ConfigError naming ``field`` (and
    the file and line) when it cannot be read or parsed."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(field, f"cannot read blocklist {path}: {exc.strerror}") from None
    try:
        return parse_blocklist(text, source=path)
    except ConfigError as exc:
        raise ConfigError(field, f"{exc.field}: {exc.message}") from None
