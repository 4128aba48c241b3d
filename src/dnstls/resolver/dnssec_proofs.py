"""Authenticated denial of existence: the NSEC and NSEC3 proof logic, without crypto or I/O.

The validator (``dnssec.py``) verifies the signatures of the NSEC/NSEC3 RRsets it hands
here; these functions only decide whether the (already verified) records prove what the
response claims. Each returns a :class:`Proof`: ``SECURE`` (proven), ``INSECURE``
(RFC 5155 opt-out covers the name, or the NSEC3 iteration count is above the RFC 9276
limit) or ``BOGUS`` with a reason.

NSEC (RFC 4035 §5.4, RFC 4034 §6.1 canonical order, which ``dns.name.Name`` comparison
implements):

* *NXDOMAIN*: an NSEC covers the name (owner < name < next, wrapping at the end of the
  zone) and the name is not an empty non-terminal (next is not below the name), plus an
  NSEC that covers the wildcard at the closest encloser (the deepest ancestor shared with
  the covering NSEC's owner or next name).
* *NODATA*: an NSEC at the name whose bitmap has neither the type nor CNAME; or one that
  proves the name is an empty non-terminal; or a covering NSEC plus an NSEC at the
  matching wildcard without the type (wildcard NODATA). A parent-side NSEC at a
  delegation (NS without SOA) proves nothing about the child's data, only about DS.

NSEC3 (RFC 5155 §8):

* the *closest encloser proof* (§8.3): an NSEC3 matches the closest encloser, another
  covers the "next closer" name (the closest encloser plus one label of the name);
* *NXDOMAIN* (§8.4): closest encloser proof + an NSEC3 covering the wildcard
  ``*.<closest encloser>``;
* *NODATA* (§8.5-8.7): an NSEC3 matches the name without the type or CNAME; or, for DS,
  the closest encloser proof whose next-closer NSEC3 has opt-out (an insecure, unsigned
  delegation: INSECURE); or wildcard NODATA (§8.7): closest encloser proof + an NSEC3
  matching the wildcard without the type.
* *wildcard answers* (§8.8): the next closer name is covered.

Opt-out only ever makes an unsigned *delegation* insecure (RFC 5155 §6, §9.2); an
NXDOMAIN proof whose next-closer NSEC3 has opt-out is INSECURE, as in Unbound (the name
might be an unsigned delegation the zone does not list).
Iterations above :data:`MAX_NSEC3_ITERATIONS` make the answer INSECURE with EDE 27
(RFC 9276 §3.2, Unbound's ``val-nsec3-keysize-iterations`` upper bound of 150).
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdatatype
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3

#: RFC 9276 §3.2: validators may treat more iterations as insecure (Unbound: 150).
MAX_NSEC3_ITERATIONS = 150
#: Bounds on hostile input: NSEC/NSEC3 records looked at, ancestors walked.
MAX_DENIAL_RECORDS = 32
MAX_LABELS = 128

#: RFC 8914 codes used here.
EDE_DNSSEC_BOGUS = 6
EDE_NSEC_MISSING = 12
EDE_UNSUPPORTED_NSEC3_ITERATIONS = 27


class Outcome(enum.Enum):
    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"


@dataclass(frozen=True, slots=True)
class Proof:
    outcome: Outcome
    text: str = ""
    ede: int | None = None


PROVEN = Proof(Outcome.SECURE)


def _bogus(text: str) -> Proof:
    return Proof(Outcome.BOGUS, text, EDE_NSEC_MISSING)


def _name_of(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _types(rdata: NSEC | NSEC3) -> set[int]:
    found: set[int] = set()
    for window, bitmap in rdata.windows:
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    found.add(window * 256 + i * 8 + bit)
    return found


def types_of(rdata: NSEC | NSEC3) -> set[int]:
    """The RR types an NSEC/NSEC3 bitmap lists."""
    return _types(rdata)


def _is_delegation(types: set[int]) -> bool:
    return dns.rdatatype.NS in types and dns.rdatatype.SOA not in types


def _lacks(types: set[int], qtype: int) -> bool:
    return qtype not in types and dns.rdatatype.CNAME not in types


# --------------------------------------------------------------------------- NSEC

def nsec_covers(owner: dns.name.Name, nsec: NSEC, name: dns.name.Name) -> bool:
    """True if the NSEC at ``owner`` covers ``name`` (name strictly between owner and
    next in canonical order, the last NSEC of the zone wrapping to the apex)."""
    nxt: dns.name.Name = nsec.next
    if owner < nxt:
        return bool(owner < name < nxt)
    # the last NSEC: next is the apex; covers everything after owner inside the zone
    return bool(owner < name and name.is_subdomain(nxt))


def _common(a: dns.name.Name, b: dns.name.Name) -> dns.name.Name:
    labels = a.fullcompare(b)[2]
    return dns.name.Name(a.labels[len(a.labels) - labels:])


def nsec_proof(qname: dns.name.Name, qtype: int, nsecs: Sequence[tuple[dns.name.Name, NSEC]],
               *, nxdomain: bool) -> Proof:
    """Decide an NXDOMAIN (``nxdomain``) or NODATA answer for (qname, qtype) from
    verified NSEC records (owner, rdata) of the zone."""
    nsecs = list(nsecs)[:MAX_DENIAL_RECORDS]
    for owner, nsec in nsecs:
        if owner == qname:
            types = _types(nsec)
            if nxdomain:
                return _bogus(f"NSEC at {qname} shows the name exists")
            if _is_delegation(types) and qtype != dns.rdatatype.DS:
                return _bogus(f"NSEC at {qname} is from the parent side of a delegation")
            if _lacks(types, qtype):
                return PROVEN
            return _bogus(f"NSEC at {qname} lists {_name_of(qtype)}")
    cover = next(((o, n) for o, n in nsecs if nsec_covers(o, n, qname)), None)
    if cover is None:
        return _bogus(f"no NSEC proves {qname} does not exist")
    owner, nsec = cover
    types = _types(nsec)
    if qname.is_subdomain(owner) and (_is_delegation(types) or dns.rdatatype.DNAME in types):
        return _bogus(f"NSEC at {owner} is a delegation or DNAME above {qname}")
    if nsec.next.is_subdomain(qname) and nsec.next != qname:
        # qname is an empty non-terminal: it exists, without data
        return _bogus(f"{qname} is an empty non-terminal") if nxdomain else PROVEN
    encloser = max(_common(qname, owner), _common(qname, nsec.next), key=len)
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if nxdomain:
        if any(nsec_covers(o, n, wildcard) for o, n in nsecs):
            return PROVEN
        return _bogus(f"no NSEC proves the wildcard {wildcard} does not exist")
    for o, n in nsecs:
        if o == wildcard:
            if _lacks(_types(n), qtype):
                return PROVEN
            return _bogus(f"NSEC at {wildcard} lists {_name_of(qtype)}")
    return _bogus(f"no NSEC proves {qname} has no {_name_of(qtype)}")


def nsec_wildcard_proof(qname: dns.name.Name, encloser: dns.name.Name,
                        nsecs: Sequence[tuple[dns.name.Name, NSEC]]) -> Proof:
    """A wildcard-expanded answer for ``qname`` from ``*.<encloser>`` (the encloser the
    RRSIG's label count gives): an NSEC must prove that ``qname`` does not exist and
    that ``encloser`` is its closest encloser -- no name between them exists
    (RFC 4035 §5.3.4)."""
    for owner, nsec in list(nsecs)[:MAX_DENIAL_RECORDS]:
        if not nsec_covers(owner, nsec, qname) or nsec.next.is_subdomain(qname):
            continue
        closest = max(_common(qname, owner), _common(qname, nsec.next), key=len)
        if closest == encloser:
            return PROVEN
        return _bogus(f"NSEC shows {closest}, not {encloser}, encloses {qname}")
    return _bogus(f"no NSEC proves {qname} does not exist for the wildcard answer")


# --------------------------------------------------------------------------- NSEC3

class Nsec3Set:
    """The verified NSEC3 records of one zone in a response, with hashing cached."""

    def __init__(self, zone: dns.name.Name,
                 records: Sequence[tuple[dns.name.Name, NSEC3]]) -> None:
        self.zone = zone
        self.records: list[tuple[bytes, NSEC3]] = []
        for owner, rdata in list(records)[:MAX_DENIAL_RECORDS]:
            if owner.parent() != zone or rdata.algorithm != 1:
                continue
            try:
                digest = base64.b32hexdecode(owner.labels[0].upper())
            except ValueError:
                continue
            self.records.append((digest, rdata))
        first = self.records[0][1] if self.records else None
        self.iterations = first.iterations if first is not None else 0
        self.salt: bytes = (first.salt or b"") if first is not None else b""
        # RFC 5155 §8.2: records with other parameters are ignored
        self.records = [(d, r) for d, r in self.records
                        if r.iterations == self.iterations and (r.salt or b"") == self.salt]
        self._hashes: dict[dns.name.Name, bytes] = {}

    def hash(self, name: dns.name.Name) -> bytes:
        digest = self._hashes.get(name)
        if digest is None:
            wire = name.canonicalize().to_wire() or b""
            digest = hashlib.sha1(wire + self.salt).digest()
            for _ in range(self.iterations):
                digest = hashlib.sha1(digest + self.salt).digest()
            self._hashes[name] = digest
        return digest

    def matching(self, name: dns.name.Name) -> NSEC3 | None:
        digest = self.hash(name)
        return next((r for d, r in self.records if d == digest), None)

    def covering(self, name: dns.name.Name) -> NSEC3 | None:
        digest = self.hash(name)
        for owner, rdata in self.records:
            nxt = rdata.next
            if (owner < digest < nxt) if owner < nxt else (digest > owner or digest < nxt):
                return rdata
        return None

    def closest_encloser(self, qname: dns.name.Name,
                         ) -> tuple[dns.name.Name, NSEC3, NSEC3] | None:
        """(closest encloser, its NSEC3, the NSEC3 covering the next closer name)."""
        name = qname
        for _ in range(MAX_LABELS):
            if name == self.zone or not name.is_subdomain(self.zone):
                break
            parent = name.parent()
            match = self.matching(parent)
            if match is not None:
                cover = self.covering(name)
                if cover is None:
                    return None
                return parent, match, cover
            name = parent
        return None


def _optout(rdata: NSEC3) -> bool:
    return bool(rdata.flags & 1)


def nsec3_proof(qname: dns.name.Name, qtype: int, zone: dns.name.Name,
                records: Sequence[tuple[dns.name.Name, NSEC3]], *, nxdomain: bool) -> Proof:
    """Decide an NXDOMAIN or NODATA answer for (qname, qtype) in ``zone`` from verified
    NSEC3 records (RFC 5155 §8.4-8.7)."""
    nsec3 = Nsec3Set(zone, records)
    if not nsec3.records:
        return _bogus(f"no usable NSEC3 records for {qname}")
    if nsec3.iterations > MAX_NSEC3_ITERATIONS:
        return Proof(Outcome.INSECURE, f"NSEC3 iterations {nsec3.iterations} above "
                     f"{MAX_NSEC3_ITERATIONS}", EDE_UNSUPPORTED_NSEC3_ITERATIONS)
    if not nxdomain:
        match = nsec3.matching(qname)
        if match is not None:
            types = _types(match)
            if _is_delegation(types) and qtype != dns.rdatatype.DS:
                return _bogus(f"NSEC3 for {qname} is from the parent side of a delegation")
            if _lacks(types, qtype):
                return PROVEN
            return _bogus(f"NSEC3 for {qname} lists {_name_of(qtype)}")
    found = nsec3.closest_encloser(qname)
    if found is None:
        return _bogus(f"no NSEC3 closest encloser proof for {qname}")
    encloser, match, cover = found
    ce_types = _types(match)
    if encloser != zone and (_is_delegation(ce_types) or dns.rdatatype.DNAME in ce_types):
        return _bogus(f"NSEC3 closest encloser {encloser} is a delegation or DNAME")
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if nxdomain:
        if nsec3.covering(wildcard) is None:
            return _bogus(f"no NSEC3 proves the wildcard {wildcard} does not exist")
        if _optout(cover):
            return Proof(Outcome.INSECURE, f"NSEC3 opt-out covers {qname}")
        return PROVEN
    if qtype == dns.rdatatype.DS and _optout(cover):
        return Proof(Outcome.INSECURE, f"NSEC3 opt-out covers {qname}")
    wild = nsec3.matching(wildcard)
    if wild is not None and _lacks(_types(wild), qtype):
        return PROVEN
    return _bogus(f"no NSEC3 proves {qname} has no {_name_of(qtype)}")


def nsec3_wildcard_proof(qname: dns.name.Name, encloser: dns.name.Name, zone: dns.name.Name,
                         records: Sequence[tuple[dns.name.Name, NSEC3]]) -> Proof:
    """A wildcard answer for ``qname`` synthesized at ``*.<encloser>``: the next closer
    name must be covered (RFC 5155 §8.8)."""
    nsec3 = Nsec3Set(zone, records)
    if nsec3.iterations > MAX_NSEC3_ITERATIONS:
        return Proof(Outcome.INSECURE, f"NSEC3 iterations {nsec3.iterations} above "
                     f"{MAX_NSEC3_ITERATIONS}", EDE_UNSUPPORTED_NSEC3_ITERATIONS)
    if not qname.is_subdomain(encloser) or qname == encloser:
        return _bogus(f"wildcard answer for {qname} not below {encloser}")
    next_closer = dns.name.Name(qname.labels[len(qname) - len(encloser) - 1:])
    cover = nsec3.covering(next_closer)
    if cover is None:
        return _bogus(f"no NSEC3 proves {qname} does not exist for the wildcard answer")
    if _optout(cover):
        return Proof(Outcome.INSECURE, f"NSEC3 opt-out covers {qname}")
    return PROVEN


def delegation_from_nsec(types: set[int]) -> str:
    """What an NSEC/NSEC3 bitmap at a name says about a zone cut there: ``"secure"``
    (NS and DS), ``"insecure"`` (NS, no DS), ``"none"`` (no delegation)."""
    if _is_delegation(types):
        return "secure" if dns.rdatatype.DS in types else "insecure"
    return "none"


def is_nsec3(rdata: dns.rdata.Rdata) -> bool:
    return isinstance(rdata, NSEC3)
