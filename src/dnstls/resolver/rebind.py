"""DNS rebinding protection: private addresses removed from forwarded answers (Unbound's
``private-address`` and ``private-domain``).

A web page from ``evil.example`` may make the browser ask ``x.evil.example``; if that
name resolves to an address of the user's own network (a router's 192.168.1.1, a
service on 127.0.0.1), the browser's same-origin rule no longer separates the attacker's
script from that device ("DNS rebinding"). A resolver stops it by never letting a public
name resolve to a private address. With ``[forward] private_addresses`` set (nothing by
default, as Unbound), every A and AAAA record of a forwarded answer whose address is in
one of those networks is removed, in every section, unless its owner is at or under one
of ``private_domains`` or a forward zone (names the operator sends to a server of their
own network on purpose; Unbound needs ``private-domain`` lines for those).

What the client gets, as Unbound 1.17.1 answers (measured with nsd behind both,
``tests/interop/test_private_addresses_unbound.py``): the other records of the RRset
(an RRset with a public and a private address keeps the public one); an answer left
without records of the asked type is NOERROR with an empty answer section (no SOA, so
it is not cached: RFC 2308 §5), and a CNAME whose target's address was removed stays
without it. Answers from local data are never filtered.

Cost: nothing when no network is configured (the stage is not built). With networks,
the wire path walks the answer's records once (:func:`~dnstls.resolver.wire.has_private`,
compiled: a few integer comparisons per A/AAAA record) and parses and renders the answer
only when an address matches; the message path looks at the records it already holds.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from dnstls.errors import ConfigError
from dnstls.resolver.base import Request
from dnstls.resolver.wire import has_private, matches

log = logging.getLogger("dnstls.resolver.rebind")

_A, _NS, _AAAA, _RRSIG = 1, 2, 28, 46
_Net = tuple[int, int]  # (network address, mask) as integers (resolver/wire.py's)


def parse_networks(texts: Sequence[str], field: str) -> tuple[list[_Net], list[_Net]]:
    """``texts`` (addresses or CIDR networks, IPv4 and IPv6) as (IPv4, IPv6) lists of
    (network, mask) integers; ConfigError naming ``field[i]`` for a bad one."""
    v4: list[_Net] = []
    v6: list[_Net] = []
    for i, text in enumerate(texts):
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{field}[{i}]", f"{text!r} is not an IP address or network "
                              "(e.g. 10.0.0.0/8, fd00::/8)") from None
        (v4 if net.version == 4 else v6).append((int(net.network_address),
                                                  int(net.netmask)))
    return v4, v6


def parse_domains(texts: Sequence[str], field: str) -> list[dns.name.Name]:
    names = []
    for i, text in enumerate(texts):
        try:
            names.append(dns.name.from_text(text))
        except Exception as exc:  # dnspython raises many types for a bad name
            raise ConfigError(f"{field}[{i}]", f"{text!r} is not a domain name: {exc}"
                              ) from None
    return names


class PrivateAddresses:
    """The filter: which addresses are private, which names may hold them."""

    def __init__(self, networks: Sequence[str], domains: Iterable[dns.name.Name] = (), *,
                 field: str = "forward.private_addresses") -> None:
        self.v4, self.v6 = parse_networks(networks, field)
        self.domains = tuple(domains)
        self.removed = 0  # records removed, for the metrics

    def __repr__(self) -> str:
        return f"<PrivateAddresses {len(self.v4)} IPv4, {len(self.v6)} IPv6 networks>"

    def adopt(self, other: PrivateAddresses) -> None:
        """Filter as ``other`` does from now on (a reload of ``dnstls stub``); the count
        of removed records goes on."""
        self.v4, self.v6, self.domains = other.v4, other.v6, other.domains

    def allowed(self, owner: dns.name.Name) -> bool:
        return any(owner.is_subdomain(domain) for domain in self.domains)

    def _private(self, rdata: Any) -> bool:
        if rdata.rdtype == _A:
            return matches(int(ipaddress.IPv4Address(rdata.address)), self.v4)
        return matches(int(ipaddress.IPv6Address(rdata.address)), self.v6)

    def filter_message(self, message: dns.message.Message) -> int:
        """Remove the private addresses of public names from every section of
        ``message`` (in place); the number of records removed."""
        removed = 0
        for section in (message.answer, message.authority, message.additional):
            if removed and section is message.authority:
                # records of the answer went: what is left must not read as a referral
                # (NS in the authority section, no SOA), as Unbound answers it
                section[:] = [r for r in section if r.rdtype != _NS
                              and not (r.rdtype == _RRSIG and r.covers == _NS)]
            kept: list[dns.rrset.RRset] = []
            changed = False
            for rrset in section:
                if rrset.rdtype not in (_A, _AAAA) or self.allowed(rrset.name):
                    kept.append(rrset)
                    continue
                public = [rdata for rdata in rrset if not self._private(rdata)]
                if len(public) == len(rrset):
                    kept.append(rrset)
                    continue
                changed = True
                removed += len(rrset) - len(public)
                log.debug("private address removed from the answer for %s %s "
                          "(forward.private_addresses)", rrset.name,
                          dns.rdatatype.to_text(rrset.rdtype))
                if public:
                    kept.append(dns.rrset.from_rdata_list(rrset.name, rrset.ttl, public))
            if changed:
                section[:] = kept
        self.removed += removed
        return removed

    def filter_wire(self, wire: bytes) -> bytes:
        """``wire`` (a checked response) without the private addresses of public
        names: the same bytes when it has none (the usual case: one walk)."""
        if not has_private(wire, self.v4, self.v6):
            return wire
        message = dns.message.from_wire(wire)
        if not self.filter_message(message):
            return wire  # every private address belonged to an allowed name
        out: bytes = message.to_wire()
        return out

    def statistics(self) -> dict[str, int]:
        """``removed``: A/AAAA records removed (``dnstls_private_addresses_removed_total``)."""
        return {"removed": self.removed}


class RebindFilter:
    """The message path's stage in front of the forwarder: every answer filtered
    (:meth:`PrivateAddresses.filter_message`); the wire path calls :attr:`addresses`'
    :meth:`~PrivateAddresses.filter_wire` itself (:mod:`dnstls.resolver.wire`)."""

    def __init__(self, next: Any, addresses: PrivateAddresses) -> None:
        self.next = next
        self.addresses = addresses

    def __repr__(self) -> str:
        return f"<RebindFilter {self.next!r}>"

    async def resolve(self, request: Request) -> dns.message.Message:
        answer: dns.message.Message = await self.next.resolve(request)
        self.addresses.filter_message(answer)
        return answer
