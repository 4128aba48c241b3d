"""Special-use and locally served zones: answered here by default, never forwarded.

Some names have no meaning in the global DNS, and asking an upstream about them only
leaks what the client is doing:

* ``localhost.`` (RFC 6761 §6.3): the loopback addresses, for the name and every name
  under it (A 127.0.0.1, AAAA ::1); negative answers for every other type;
* the loopback reverse zones ``127.in-addr.arpa.`` and the ``::1`` reverse name: PTR
  ``localhost.`` for 127.0.0.1 and ::1;
* ``onion.`` (RFC 7686 §2: resolvers MUST answer NXDOMAIN and MUST NOT forward),
  ``test.`` and ``invalid.`` (RFC 6761 §6.2, §6.4), ``home.arpa.`` (RFC 8375);
* the reverse zones of private and reserved address space (RFC 6303 "locally served
  zones", plus RFC 6598's shared address space 100.64.0.0/10 as RFC 7793 adds it):
  RFC 1918, link-local, "this network", the documentation prefixes, the broadcast
  address, IPv6 unspecified, ULA (fd00::/8) and link-local (fe80::/10). A PTR query for
  a LAN address sent to a public resolver tells it the LAN's layout; RFC 6303 §3 says
  a resolver serves these zones itself, answering NXDOMAIN.

The table is Unbound 1.17's default local zones (``man unbound.conf``, "local-zone",
checked against a running unbound 1.17.1; see tests/interop/test_default_zones_unbound.py),
with their contents: every zone has NS ``localhost.`` and SOA ``localhost.
nobody.invalid. 1 3600 1200 604800 10800`` at the apex, TTL 10800, so a name in it that
does not exist is NXDOMAIN with that SOA in the authority section (negative TTL 10800).
One difference, on RFC 6761 §6.3's word: Unbound answers the apex's NS and SOA for names
*under* ``localhost.`` too (its "redirect" zone type); here they get NODATA, as in
Knot Resolver.

The zones are built as ordinary local zones (:class:`dns.zone.Zone`), so
:class:`dnstls.resolver.local.LocalData` answers them exactly as it answers configured
zones: AA set, SOA in the authority section for NXDOMAIN and NODATA, the kept wire
renderings on the fast path. A configured zone with the same origin replaces a default
zone; one below a default zone answers for its own names (the longest origin wins).
``nodefault`` (Unbound's word) lists default zones to forward instead.

Queries of any class but IN are refused where default zones are on (Unbound refuses
them too, unless asked for its version or identity, which dnstls does not reveal):
a CHAOS ``version.bind`` question is about *this* server, not one to ask upstream.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TypeVar

import dns.exception
import dns.name
import dns.zone

from dnstls.errors import ConfigError

T = TypeVar("T")

TTL = 10800
SOA_TEXT = "localhost. nobody.invalid. 1 3600 1200 604800 10800"
LOCALHOST = "localhost."
LOOPBACK4 = "127.in-addr.arpa."
LOOPBACK6 = "1." + "0." * 31 + "ip6.arpa."

#: The default zones, in Unbound 1.17's order (services/localzone.c).
DEFAULT_ZONE_NAMES: tuple[str, ...] = (
    LOCALHOST,
    LOOPBACK4,
    LOOPBACK6,
    "home.arpa.",
    "onion.",
    "test.",
    "invalid.",
    # RFC 1918
    "10.in-addr.arpa.",
    *(f"{n}.172.in-addr.arpa." for n in range(16, 32)),
    "168.192.in-addr.arpa.",
    # RFC 5735 / RFC 6303: this network, link-local, TEST-NET-1..3, broadcast
    "0.in-addr.arpa.",
    "254.169.in-addr.arpa.",
    "2.0.192.in-addr.arpa.",
    "100.51.198.in-addr.arpa.",
    "113.0.203.in-addr.arpa.",
    "255.255.255.255.in-addr.arpa.",
    # RFC 6598 shared address space 100.64.0.0/10 (RFC 7793)
    *(f"{n}.100.in-addr.arpa." for n in range(64, 128)),
    # IPv6: unspecified (::), ULA fd00::/8, link-local fe80::/10, documentation
    "0." * 32 + "ip6.arpa.",
    "d.f.ip6.arpa.",
    "8.e.f.ip6.arpa.",
    "9.e.f.ip6.arpa.",
    "a.e.f.ip6.arpa.",
    "b.e.f.ip6.arpa.",
    "8.b.d.0.1.0.0.2.ip6.arpa.",
)

DEFAULT_ZONES: frozenset[dns.name.Name] = frozenset(
    dns.name.from_text(text) for text in DEFAULT_ZONE_NAMES)


def enclosing(name: dns.name.Name, origins: Mapping[dns.name.Name, T]) -> T | None:
    """The value of the longest origin in ``origins`` at or above ``name`` (names compare
    case-insensitively), or None: a walk up ``name``'s labels, one dict lookup each."""
    while True:
        found = origins.get(name)
        if found is not None:
            return found
        if len(name.labels) <= 1:
            return None
        name = name.parent()


_DEFAULT_MAP: dict[dns.name.Name, dns.name.Name] = {n: n for n in DEFAULT_ZONES}


def default_zone(name: dns.name.Name) -> dns.name.Name | None:
    """The default zone ``name`` is at or under, or None."""
    return enclosing(name, _DEFAULT_MAP)


def parse_nodefault(entries: Iterable[str], *, field: str = "local.nodefault",
                    ) -> frozenset[dns.name.Name]:
    """The default zones named by ``entries`` (case and the final dot do not matter);
    a ConfigError naming ``field[i]`` for an entry that is not a default zone."""
    names = set()
    for i, text in enumerate(entries):
        try:
            name = dns.name.from_text(text)
        except dns.exception.DNSException as exc:
            raise ConfigError(f"{field}[{i}]", f"invalid name {text!r}: {exc}") from None
        if name not in DEFAULT_ZONES:
            raise ConfigError(f"{field}[{i}]",
                              f"{text!r} is not a default zone (see docs/serve.md, "
                              "\"Names answered here\")")
        names.add(name)
    return frozenset(names)


@functools.cache
def build_zone(origin: dns.name.Name) -> dns.zone.Zone:
    """The contents of default zone ``origin`` (read-only: shared by every user)."""
    text = origin.to_text()
    lines = [f"@ {TTL} IN SOA {SOA_TEXT}", f"@ {TTL} IN NS localhost."]
    if text == LOCALHOST:
        for owner in ("@", "*"):
            lines += [f"{owner} {TTL} IN A 127.0.0.1", f"{owner} {TTL} IN AAAA ::1"]
    elif text == LOOPBACK4:
        lines.append(f"1.0.0 {TTL} IN PTR localhost.")
    elif text == LOOPBACK6:
        lines.append(f"@ {TTL} IN PTR localhost.")
    return dns.zone.from_text("\n".join(lines), origin=origin, relativize=False)


def default_zones(*, nodefault: Iterable[dns.name.Name] = (),
                  configured: Iterable[dns.name.Name] = ()) -> list[dns.zone.Zone]:
    """The default zones to serve: all but those in ``nodefault`` (forwarded instead)
    and those a configured local zone of the same origin replaces."""
    skip = set(nodefault) | set(configured)
    return [build_zone(name) for name in (dns.name.from_text(t) for t in DEFAULT_ZONE_NAMES)
            if name not in skip]
