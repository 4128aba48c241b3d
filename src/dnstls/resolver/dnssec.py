"""DNSSEC validation of forwarded responses (RFC 4033-4035, 5155, 6840, 9276).

:class:`Validator` decides whether a response that a recursive upstream returned for a
query sent with DO=1 and CD=1 is SECURE, INSECURE, BOGUS or INDETERMINATE, the four
states of RFC 4035 §4.3, and says why in a :class:`Verdict` (an RFC 8914 Extended DNS
Error code and an Unbound ``val_reason``-style text). It asks the same upstream for the
DS and DNSKEY RRsets it needs through a :data:`Fetch` callable, and never talks to the
network itself. The signature mathematics is dnspython's (``dns.dnssec.validate_rrsig``
under :data:`POLICY`); the denial-of-existence logic is in ``dnssec_proofs.py``.

The chain of trust (RFC 4035 §5). From the closest trust anchor at or above a name, the
validator walks down one label at a time asking for the DS RRset of each name, as a
validating resolver behind a forwarder must (it cannot see referrals):

* a signed DS RRset (verified with the keys of the zone above) is a secure zone cut: the
  child's DNSKEY RRset is fetched and must contain a zone key matching one of the DS
  records with a supported digest (RFC 4509) and be signed by it;
* a NODATA answer whose verified NSEC/NSEC3 at the name shows NS but no DS, or an NSEC3
  opt-out span covering it, is an insecure delegation: everything below is INSECURE;
* DS records with only unsupported digests or algorithms make the child INSECURE
  (RFC 4035 §5.2, RFC 6840 §5.2: EDE 2/1);
* any other NODATA (an empty non-terminal or a name inside the same zone) is no cut,
  an NXDOMAIN ends the walk.

A name that claims to be no cut is not verified: if it were in fact a secure cut, the
data below it would be signed by a zone whose keys the walk never established, so the
answer ends BOGUS rather than INSECURE -- no downgrade follows from trusting it.

Each answer RRset is verified by an RRSIG whose signer is its owner or an ancestor (the
parent, for DS), within the closest anchor; CNAME chains are followed across zones, a
DNAME's synthesized CNAME may be unsigned but must match the DNAME (RFC 6672 §5.3.3);
a wildcard expansion (RRSIG labels below the owner's) needs the NSEC/NSEC3 proof that
the exact name does not exist (RFC 4035 §5.3.4, RFC 5155 §8.8). The final name of a
chain without data needs an NXDOMAIN or NODATA proof, and the SOA in the authority
section is verified. An answer-section RRset that is not part of the answer (not on the
CNAME/DNAME chain from the question) makes the response BOGUS: Unbound's scrubber would
drop it, an honest upstream never sends it, and the caller marks the whole answer
authenticated. Authority NS and additional-section records of positive answers are
not vouched for.

Signature times get Unbound's skew: 10 % of the validity period, at least an hour and at
most a day (``val-sig-skew-min``/``-max``). Results are cached per zone cut (bounded,
``max_zones``, least recently used first), each until min(TTL, RRSIG expiration); a
BOGUS cut is remembered for 60 s (Unbound's ``val-bogus-ttl``). Signatures that verified
are remembered too (:class:`SignatureCache`: the key, the signature and a SHA-256 digest
of the signed data, until the RRset's TTL or the signature's expiration,
``max_signatures``, least recently used first): the denial proofs and SOA of a zone's
negative answers, and a wildcard's signature -- whose signed data is the wildcard's
whatever name it expands to --, are checked once, not for every answer; the validity
window is still checked each time, and a failure is never remembered. Concurrent
validations that need the same (name, type) share one fetch. Work per validation is bounded: at
most :data:`MAX_FETCHES` fetches, :data:`MAX_VERIFICATIONS` signature checks,
:data:`MAX_RRSIGS` RRSIGs per RRset, :data:`MAX_CANDIDATE_KEYS` keys tried per RRSIG
(same key tag and algorithm), at most :data:`MAX_KEYS` keys in a DNSKEY RRset,
:data:`MAX_CHAIN` CNAME/DNAME hops, :data:`MAX_DENIAL_RRSETS`
NSEC/NSEC3 RRsets. Running out is BOGUS (EDE 6) for that response only, not cached.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import struct
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zonefile
from cryptography.exceptions import InvalidSignature
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG

from dnstls.errors import DnsTlsError
from dnstls.resolver import dnssec_proofs as proofs
from dnstls.resolver.base import ResolveFailure

with warnings.catch_warnings():  # its DSA module warns on import (cryptography >= 43)
    warnings.simplefilter("ignore")
    import dns.dnssec
    import dns.dnssecalgs

log = logging.getLogger("dnstls.resolver.dnssec")

#: RFC 8624 §3.1 validation: RSAMD5, DSA and GOST are not validated.
POLICY = dns.dnssec.rfc_8624_policy
SUPPORTED_ALGORITHMS = frozenset({5, 7, 8, 10, 13, 14, 15, 16})
SUPPORTED_DIGESTS = frozenset({1, 2, 4})

MAX_FETCHES = 64
MAX_VERIFICATIONS = 128  # signature checks (one per key tried) per validation
MAX_RRSIGS = 8
MAX_KEYS = 32
MAX_CANDIDATE_KEYS = 4
MAX_CHAIN = 16
MAX_LABELS = 64
MAX_DENIAL_RRSETS = 32
#: DNSKEY RRsets whose key tags are remembered (Validator._key_tags), then forgotten all at once
MAX_KEY_TAG_SETS = 4096
#: verified signatures remembered (Validator ``max_signatures``, :class:`SignatureCache`)
MAX_SIGNATURES = 10_000
#: public key objects kept (by algorithm and key bytes), then forgotten all at once
MAX_PUBLIC_KEYS = 4096
BOGUS_TTL = 60.0
MAX_CACHE_TTL = 86400.0
SKEW_MIN, SKEW_MAX = 3600.0, 86400.0

# RFC 8914 codes
EDE_UNSUPPORTED_ALGORITHM = 1
EDE_UNSUPPORTED_DIGEST = 2
EDE_BOGUS = 6
EDE_EXPIRED = 7
EDE_NOT_YET_VALID = 8
EDE_DNSKEY_MISSING = 9
EDE_RRSIGS_MISSING = 10
EDE_NO_ZONE_KEY = 11
EDE_NSEC_MISSING = 12

IN = dns.rdataclass.IN


class Security(enum.Enum):
    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True, slots=True)
class Verdict:
    security: Security
    ede: int | None = None
    text: str | None = None


Fetch = Callable[[dns.name.Name, int], Awaitable[dns.message.Message]]


# --------------------------------------------------------------------------- anchors

class TrustAnchors:
    """Trust anchors: DS and DNSKEY records by zone (Unbound's trust-anchor-file)."""

    def __init__(self, ds: dict[dns.name.Name, list[DS]],
                 dnskey: dict[dns.name.Name, list[DNSKEY]]) -> None:
        self.ds = ds
        self.dnskey = dnskey
        self.zones: tuple[dns.name.Name, ...] = tuple(sorted(set(ds) | set(dnskey)))
        #: the zones by their lower-cased labels: :meth:`closest` slices a name's labels
        #: instead of making Name objects (dnspython's parent() and == cost µs each)
        self._by_labels = {_folded(zone): zone for zone in self.zones}

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>") -> TrustAnchors:
        """Parse zone-file lines holding DS and/or DNSKEY records (comments, blank lines
        and parenthesized continuation lines allowed); a DNSKEY with the REVOKE bit
        (RFC 5011) or without the zone-key bit is ignored. ValueError names ``source``
        and the line of a bad record, or says there is no anchor at all."""
        ds: dict[dns.name.Name, list[DS]] = {}
        dnskey: dict[dns.name.Name, list[DNSKEY]] = {}
        for lineno, record in _logical_lines(text):
            try:
                rrsets = dns.zonefile.read_rrsets(record, rdclass=None, default_ttl=3600,
                                                  origin=dns.name.root)
            except (dns.exception.DNSException, ValueError) as exc:
                detail = str(exc).removeprefix("<input>:1: ")
                raise ValueError(f"{source}:{lineno}: {detail}") from None
            for rrset in rrsets:
                if rrset.rdclass != IN or rrset.rdtype not in (dns.rdatatype.DS,
                                                               dns.rdatatype.DNSKEY):
                    raise ValueError(f"{source}:{lineno}: not a DS or DNSKEY record: "
                                     f"{dns.rdatatype.to_text(rrset.rdtype)}")
                for rdata in rrset:
                    if isinstance(rdata, DS):
                        ds.setdefault(rrset.name, []).append(rdata)
                    elif isinstance(rdata, DNSKEY) and rdata.flags & 0x0100 \
                            and not rdata.flags & 0x0080:
                        dnskey.setdefault(rrset.name, []).append(rdata)
        if not ds and not dnskey:
            raise ValueError(f"{source}: no trust anchor (DS or DNSKEY record)")
        return cls(ds, dnskey)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrustAnchors:
        return cls.from_text(Path(path).read_text(), source=os.fspath(path))

    def closest(self, name: dns.name.Name) -> dns.name.Name | None:
        """The deepest anchor zone at or above ``name``, or None (a relative name has
        none)."""
        labels = _folded(name)
        by_labels = self._by_labels
        for i in range(len(labels)):
            zone = by_labels.get(labels[i:])
            if zone is not None:
                return zone
        return None


def _folded(name: dns.name.Name) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in name.labels)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, record text) with comments dropped and ( ) joined."""
    parts: list[str] = []
    start = 0
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split(";", 1)[0]
        if not body.strip() and depth == 0:
            continue
        if depth == 0:
            start = lineno
        parts.append(body)
        depth += body.count("(") - body.count(")")
        if depth <= 0:
            yield start, " ".join(parts)
            parts, depth = [], 0
    if parts:
        yield start, " ".join(parts)


# --------------------------------------------------------------------------- state

class _Bogus(Exception):
    """A BOGUS result; ``transient`` ones (a fetch failed, the work budget ran out) are
    not remembered for the zone cut being examined."""

    def __init__(self, ede: int, text: str, *, transient: bool = False) -> None:
        super().__init__(text)
        self.ede = ede
        self.text = text
        self.transient = transient


class _Step(enum.Enum):
    SECURE = "secure"      # a secure zone cut here: keys known
    INSECURE = "insecure"  # an insecure delegation here (or unsupported algorithms)
    BOGUS = "bogus"
    NOCUT = "nocut"        # no zone cut at this name
    STOP = "stop"          # the name does not exist: nothing below either


@dataclass(slots=True)
class _Entry:
    step: _Step
    zone: dns.name.Name
    expires: float
    keys: dns.rdataset.Rdataset | None = None
    ede: int | None = None
    text: str | None = None


@dataclass(slots=True)
class _Budget:
    fetches: int = MAX_FETCHES
    verifications: int = MAX_VERIFICATIONS

    def fetch(self) -> None:
        self.fetches -= 1
        if self.fetches < 0:
            raise _Bogus(EDE_BOGUS, f"more than {MAX_FETCHES} fetches needed",
                         transient=True)

    def verify(self) -> None:
        self.verifications -= 1
        if self.verifications < 0:
            raise _Bogus(EDE_BOGUS, f"more than {MAX_VERIFICATIONS} signature checks",
                         transient=True)


def _find(section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: int,
          covers: int = dns.rdatatype.NONE) -> dns.rrset.RRset | None:
    """The RRset (class IN) in ``section``; searched, not looked up in the message's
    index, which goes stale when a caller edits the sections."""
    for rrset in section:
        if rrset.rdtype == rdtype and rrset.covers == covers and rrset.rdclass == IN \
                and rrset.name == name:
            return rrset
    return None


def _type(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


class _What:
    """``NAME TYPE`` for the reasons' texts, made only when one is written (a name's
    text costs microseconds, and the secure path writes none)."""

    __slots__ = ("name", "rdtype")

    def __init__(self, name: dns.name.Name, rdtype: int) -> None:
        self.name = name
        self.rdtype = rdtype

    def __str__(self) -> str:
        return f"{self.name} {_type(self.rdtype)}"


# --------------------------------------------------------------------------- signatures

_ZONE_FLAG, _REVOKE_FLAG = 0x0100, 0x0080
#: the RRSIG RDATA fields before the signer's name (RFC 4034 §3.1.8.1)
_RRSIG_HEADER = struct.Struct("!HBBIIIH")
_RR_FIXED = struct.Struct("!HHI")
_RDLENGTH = struct.Struct("!H")


def _failure(text: str) -> dns.exception.ValidationFailure:
    return dns.exception.ValidationFailure(text)  # type: ignore[no-untyped-call]


def signed_data(name: dns.name.Name, rdataset: dns.rdataset.Rdataset, sig: RRSIG) -> bytes:
    """What ``sig`` signs over ``name``'s ``rdataset`` (RFC 4034 §3.1.8.1, §6.2; the
    owner replaced by the wildcard it expands, RFC 4035 §5.3.2): the bytes of dnspython's
    ``_make_rrsig_signature_data`` for an absolute name, built without rendering the
    RRSIG. Raises ``dns.exception.ValidationFailure`` where it does (a wildcard owner with
    the wrong label count, more RRSIG labels than the owner has)."""
    data = _RRSIG_HEADER.pack(sig.type_covered, sig.algorithm, sig.labels, sig.original_ttl,
                              sig.expiration, sig.inception, sig.key_tag)
    data += sig.signer.to_digestable()
    labels = len(name) - 1  # without the root label
    if name.is_wild() and sig.labels != labels - 1:
        raise _failure("wild owner name has wrong label length")
    if labels < sig.labels:
        raise _failure("owner name longer than RRSIG labels")
    if sig.labels < labels:
        owner = b"\x01*" + dns.name.Name(name.labels[labels - sig.labels:]).to_digestable()
    else:
        owner = name.to_digestable()
    fixed = owner + _RR_FIXED.pack(rdataset.rdtype, rdataset.rdclass, sig.original_ttl)
    for rdata in sorted(rdata.to_digestable() for rdata in rdataset):
        data += fixed + _RDLENGTH.pack(len(rdata)) + rdata
    return data


def signature_expiry(now: float, ttl: float, sig: RRSIG) -> float:
    """Until when a verified signature is remembered: the RRset's TTL (capped by the
    RRSIG's original TTL and :data:`MAX_CACHE_TTL`) or the signature's expiration,
    whichever comes first."""
    return min(now + min(ttl, float(sig.original_ttl), MAX_CACHE_TTL), float(sig.expiration))


class SignatureCache:
    """Signatures that verified: (key bytes, signature, SHA-256 of :func:`signed_data`)
    -> until when (:func:`signature_expiry`), least recently used first out beyond
    ``max_entries``. Only successes are added; what an entry vouches for is the
    mathematics of that key, signature and data, so the caller still checks the
    signature's validity window and the key's trust each time."""

    def __init__(self, max_entries: int = MAX_SIGNATURES) -> None:
        self.max_entries = max(1, max_entries)
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, key: tuple[bytes, bytes, bytes], now: float) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= now:
            del self._entries[key]
            return False
        self._entries.move_to_end(key)
        return True

    def add(self, key: tuple[bytes, bytes, bytes], expires: float, now: float) -> None:
        if expires <= now:
            return
        self._entries[key] = expires
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def expiries(self) -> list[float]:
        return list(self._entries.values())

    def clear(self) -> None:
        self._entries.clear()


class Validator:
    """Validates responses against ``anchors``, fetching DS/DNSKEY RRsets with ``fetch``."""

    def __init__(self, anchors: TrustAnchors, fetch: Fetch, *,
                 now: Callable[[], float] = time.time, max_zones: int = 10_000,
                 max_signatures: int = MAX_SIGNATURES) -> None:
        self.anchors = anchors
        self._fetch_fn = fetch
        self._now = now
        self._max_zones = max(1, max_zones)
        self._cache: OrderedDict[dns.name.Name, _Entry] = OrderedDict()
        #: :meth:`_zone_of`'s results: (the entry, until when the steps that gave it
        #: hold) -- a validation asks for the same signers again and again, and the
        #: walk down from the anchor makes a Name and a lookup per label
        self._zone_memo: OrderedDict[dns.name.Name, tuple[_Entry, float]] = OrderedDict()
        #: key tags of the DNSKEY RRsets in use (by id, the RRset kept alive with them)
        self._tags: dict[int, tuple[dns.rdataset.Rdataset, list[int]]] = {}
        self._inflight: dict[tuple[dns.name.Name, int], asyncio.Future[dns.message.Message]] = {}
        #: signatures that verified (a wildcard's or a zone's denial proofs come again
        #: and again with different answers)
        self._signatures = SignatureCache(max_signatures)
        #: dnspython's public key objects by (algorithm, key bytes); None: unusable key
        self._public_keys: dict[tuple[int, bytes], object | None] = {}
        self._stats = {"secure": 0, "insecure": 0, "bogus": 0, "indeterminate": 0,
                       "fetches": 0, "fetches_shared": 0, "fetch_failures": 0,
                       "cache_hits": 0, "cache_misses": 0, "signatures_verified": 0,
                       "signature_cache_hits": 0}

    # ------------------------------------------------------------------ public

    async def validate(self, response: dns.message.Message) -> Verdict:
        """The verdict for the whole of ``response`` (see the module docstring)."""
        try:
            verdict = await self._validate(response, _Budget())
        except _Bogus as exc:
            verdict = Verdict(Security.BOGUS, exc.ede, exc.text)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # hostile input must never escape
            log.warning("validator error: %r", exc, exc_info=True)
            verdict = Verdict(Security.BOGUS, EDE_BOGUS, f"validator error: {exc}")
        self._stats[verdict.security.value] += 1
        return verdict

    def flush(self) -> None:
        """Forget every cached key and zone-cut result."""
        self._cache.clear()
        self._zone_memo.clear()
        self._tags.clear()
        self._signatures.clear()
        self._public_keys.clear()

    def statistics(self) -> dict[str, int]:
        return {**self._stats, "key_cache": len(self._cache), "inflight": len(self._inflight),
                "signature_cache": len(self._signatures)}

    # ------------------------------------------------------------------ response

    async def _validate(self, response: dns.message.Message, budget: _Budget) -> Verdict:
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or len(response.question) != 1:
            return Verdict(Security.INDETERMINATE)
        question = response.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != IN or self.anchors.closest(qname) is None:
            return Verdict(Security.INSECURE)
        if qtype == dns.rdatatype.RRSIG and response.answer:
            # RRSIGs are not signed themselves; Unbound leaves such answers unchecked
            return Verdict(Security.INSECURE, None, "RRSIG answers are not validated")
        verdicts: list[Verdict | None] = []
        done: set[int] = set()  # id() of the answer RRsets accounted for
        current = qname
        final_data = False
        for _ in range(MAX_CHAIN):
            dname = self._dname_above(response, current)
            if dname is not None and qtype == dns.rdatatype.CNAME:
                # the synthesized CNAME is the answer (RFC 6672 §5.3.3), vouched for by
                # the signed DNAME
                verdicts.append(await self._positive(response, dname, budget))
                done.add(id(dname))
                synthesized, current = self._synthesize(response, dname, current)
                done.add(id(synthesized))
                final_data = True
                break
            if qtype == dns.rdatatype.ANY:
                found = [r for r in response.answer if r.name == current and r.rdclass == IN
                         and r.rdtype != dns.rdatatype.RRSIG]
            else:
                match = _find(response.answer, current, qtype)
                found = [] if match is None else [match]
            if found:
                for rrset in found:
                    verdicts.append(await self._positive(response, rrset, budget))
                    done.add(id(rrset))
                final_data = True
                break
            if dname is not None:
                verdicts.append(await self._positive(response, dname, budget))
                done.add(id(dname))
                synthesized, current = self._synthesize(response, dname, current)
                done.add(id(synthesized))
                continue
            cname = _find(response.answer, current, dns.rdatatype.CNAME)
            if cname is not None and qtype != dns.rdatatype.CNAME:
                verdicts.append(await self._positive(response, cname, budget))
                done.add(id(cname))
                current = cname[0].target
                continue
            break
        else:
            raise _Bogus(EDE_BOGUS, f"CNAME chain longer than {MAX_CHAIN} from {qname}")
        if final_data:
            if rcode == dns.rcode.NXDOMAIN:
                raise _Bogus(EDE_BOGUS, f"NXDOMAIN with data for {current}")
        else:
            verdicts.append(await self._denial(response, current, qtype, budget,
                                               nxdomain=rcode == dns.rcode.NXDOMAIN))
        for rrset in response.answer:  # nothing else: an upstream does not send it
            if rrset.rdtype != dns.rdatatype.RRSIG and id(rrset) not in done:
                raise _Bogus(EDE_BOGUS, f"{rrset.name} {_type(rrset.rdtype)} in the answer "
                             f"is not part of the answer to {qname} {_type(qtype)}")
        return next((v for v in verdicts if v is not None), Verdict(Security.SECURE))

    @staticmethod
    def _dname_above(response: dns.message.Message, name: dns.name.Name,
                     ) -> dns.rrset.RRset | None:
        best = None
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.DNAME and rrset.rdclass == IN \
                    and name.is_subdomain(rrset.name) and name != rrset.name \
                    and (best is None or len(rrset.name) > len(best.name)):
                best = rrset
        return best

    @staticmethod
    def _synthesize(response: dns.message.Message, dname: dns.rrset.RRset,
                    name: dns.name.Name) -> tuple[dns.rrset.RRset, dns.name.Name]:
        """The CNAME that ``dname`` synthesizes for ``name`` (RFC 6672 §5.3.3: it may be
        unsigned, but must match) and its target."""
        try:
            target = name.relativize(dname.name).concatenate(dname[0].target)
        except dns.name.NameTooLong:
            raise _Bogus(EDE_BOGUS, f"DNAME {dname.name} makes {name} too long") from None
        cname = _find(response.answer, name, dns.rdatatype.CNAME)
        if cname is None or len(cname) != 1 or cname[0].target != target:
            raise _Bogus(EDE_BOGUS, f"CNAME for {name} does not match DNAME {dname.name}")
        return cname, target

    async def _positive(self, response: dns.message.Message, rrset: dns.rrset.RRset,
                        budget: _Budget) -> Verdict | None:
        """Verify an answer RRset (and its wildcard proof); a Verdict if INSECURE."""
        insecure, sig, zone = await self._verify(response, response.answer, rrset, budget)
        if insecure is not None or sig is None:
            return insecure or Verdict(Security.INSECURE)
        labels = len(rrset.name) - 1
        if rrset.name.is_wild():
            labels -= 1
        if sig.labels >= labels:
            return None
        # wildcard expansion: the exact name must not exist
        encloser = dns.name.Name(rrset.name.labels[len(rrset.name) - sig.labels - 1:])
        nsecs, nsec3s, insecure = await self._denial_records(response, zone, budget)
        if insecure is not None:
            return insecure
        if nsec3s:
            proof = proofs.nsec3_wildcard_proof(rrset.name, encloser, zone, nsec3s)
        else:
            proof = proofs.nsec_wildcard_proof(rrset.name, encloser, nsecs)
        return self._proof_verdict(proof)

    @staticmethod
    def _proof_verdict(proof: proofs.Proof) -> Verdict | None:
        if proof.outcome is proofs.Outcome.SECURE:
            return None
        if proof.outcome is proofs.Outcome.INSECURE:
            return Verdict(Security.INSECURE, proof.ede, proof.text)
        raise _Bogus(proof.ede or EDE_BOGUS, proof.text)

    async def _denial(self, response: dns.message.Message, name: dns.name.Name, qtype: int,
                      budget: _Budget, *, nxdomain: bool) -> Verdict | None:
        what = _What(name, qtype)
        soa = next((r for r in response.authority if r.rdtype == dns.rdatatype.SOA
                    and r.rdclass == IN and name.is_subdomain(r.name)), None)
        if soa is not None:
            insecure, _, zone = await self._verify(response, response.authority, soa, budget)
            if insecure is not None:
                return insecure
        else:
            entry = await self._zone_of(name, budget)
            if entry.step is _Step.INSECURE:
                return Verdict(Security.INSECURE, entry.ede, entry.text)
            if entry.step is _Step.BOGUS:
                raise _Bogus(entry.ede or EDE_BOGUS, entry.text or f"bogus zone {entry.zone}")
            zone = entry.zone
        nsecs, nsec3s, insecure = await self._denial_records(response, zone, budget)
        if insecure is not None:
            return insecure
        if not nsecs and not nsec3s:
            kind = "NXDOMAIN" if nxdomain else "NODATA"
            raise _Bogus(EDE_NSEC_MISSING, f"no NSEC/NSEC3 records prove {kind} for {what}")
        if nsec3s:
            proof = proofs.nsec3_proof(name, qtype, zone, nsec3s, nxdomain=nxdomain)
        else:
            proof = proofs.nsec_proof(name, qtype, nsecs, nxdomain=nxdomain)
        return self._proof_verdict(proof)

    async def _denial_records(self, response: dns.message.Message, zone: dns.name.Name,
                              budget: _Budget,
                              ) -> tuple[list[tuple[dns.name.Name, NSEC]],
                                         list[tuple[dns.name.Name, NSEC3]], Verdict | None]:
        """The verified NSEC and NSEC3 records of ``zone`` in the authority section
        (records signed by other zones -- the proofs of another link of a CNAME chain --
        are left out)."""
        nsecs: list[tuple[dns.name.Name, NSEC]] = []
        nsec3s: list[tuple[dns.name.Name, NSEC3]] = []
        candidates = []
        for rrset in response.authority:
            if rrset.rdclass != IN or rrset.rdtype not in (dns.rdatatype.NSEC,
                                                           dns.rdatatype.NSEC3):
                continue
            if not rrset.name.is_subdomain(zone) or (
                    rrset.rdtype == dns.rdatatype.NSEC3 and rrset.name.parent() != zone):
                continue
            sigset = _find(response.authority, rrset.name, dns.rdatatype.RRSIG, rrset.rdtype)
            if sigset and all(getattr(sig, "signer", None) != zone for sig in sigset):
                continue
            candidates.append(rrset)
        for rrset in candidates[:MAX_DENIAL_RRSETS]:
            insecure, _, _ = await self._verify(response, response.authority, rrset, budget)
            if insecure is not None:
                return [], [], insecure
            for rdata in rrset:
                if isinstance(rdata, NSEC):
                    nsecs.append((rrset.name, rdata))
                elif isinstance(rdata, NSEC3):
                    nsec3s.append((rrset.name, rdata))
        return nsecs, nsec3s, None

    # ------------------------------------------------------------------ RRsets

    async def _verify(self, response: dns.message.Message, section: list[dns.rrset.RRset],
                      rrset: dns.rrset.RRset, budget: _Budget,
                      ) -> tuple[Verdict | None, RRSIG | None, dns.name.Name]:
        """(None, the RRSIG that verified, signer) if SECURE, (an INSECURE Verdict, None,
        zone) if the RRset's zone is insecure; raises _Bogus."""
        what = _What(rrset.name, rrset.rdtype)
        sigset = _find(section, rrset.name, dns.rdatatype.RRSIG, rrset.rdtype)
        sigs = [sig for sig in (sigset or []) if isinstance(sig, RRSIG)][:MAX_RRSIGS]
        owner = rrset.name
        if not sigs:
            entry = await self._zone_of(owner.parent() if rrset.rdtype == dns.rdatatype.DS
                                        and owner != dns.name.root else owner, budget)
            if entry.step is _Step.INSECURE:
                return Verdict(Security.INSECURE, entry.ede, entry.text), None, entry.zone
            if entry.step is _Step.BOGUS:
                raise _Bogus(entry.ede or EDE_BOGUS, entry.text or f"bogus zone {entry.zone}")
            raise _Bogus(EDE_RRSIGS_MISSING, f"no signatures over {what}")
        signers = []
        for sig in sigs:
            signer = sig.signer
            if not owner.is_subdomain(signer):
                continue
            if rrset.rdtype == dns.rdatatype.DS and signer == owner:
                continue
            if rrset.rdtype == dns.rdatatype.DNSKEY and signer != owner:
                continue
            if signer not in signers:
                signers.append(signer)
        if not signers:
            raise _Bogus(EDE_BOGUS, f"no RRSIG over {what} has a valid signer name")
        anchor = self.anchors.closest(owner)
        failure: _Bogus | None = None
        for signer in signers[:2]:
            if anchor is not None and not signer.is_subdomain(anchor):
                failure = _Bogus(EDE_BOGUS, f"signer {signer} of {what} is above its "
                                 f"trust anchor {anchor}")
                continue
            entry = await self._zone_of(signer, budget)
            if entry.step is _Step.INSECURE:
                return Verdict(Security.INSECURE, entry.ede, entry.text), None, entry.zone
            if entry.step is _Step.BOGUS:
                failure = _Bogus(entry.ede or EDE_BOGUS, entry.text or f"bogus zone {signer}")
                continue
            if entry.zone != signer or entry.keys is None:
                failure = _Bogus(EDE_DNSKEY_MISSING, f"no trusted DNSKEY for {signer}, "
                                 f"signer of {what}")
                continue
            try:
                good = self._check_sigs(rrset, [s for s in sigs if s.signer == signer],
                                        entry.keys, signer, budget)
                return None, good, signer
            except _Bogus as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _check_sigs(self, rrset: dns.rrset.RRset | tuple[dns.name.Name, dns.rdataset.Rdataset],
                    sigs: list[RRSIG], keys: dns.rdataset.Rdataset, signer: dns.name.Name,
                    budget: _Budget) -> RRSIG:
        """The first RRSIG of ``sigs`` that verifies with ``keys``; _Bogus otherwise."""
        name, rdataset = rrset if isinstance(rrset, tuple) else (rrset.name, rrset)
        what = _What(name, rdataset.rdtype)
        now = self._now()
        reasons: list[tuple[int, str]] = []
        for sig in sigs[:MAX_RRSIGS]:
            if sig.algorithm not in SUPPORTED_ALGORITHMS:
                reasons.append((EDE_UNSUPPORTED_ALGORITHM, f"unsupported algorithm "
                                f"{sig.algorithm} of the signature over {what}"))
                continue
            skew = min(max((sig.expiration - sig.inception) * 0.1, SKEW_MIN), SKEW_MAX)
            if now > sig.expiration + skew:
                reasons.append((EDE_EXPIRED, f"signature expired for {what}"))
                continue
            if now < sig.inception - skew:
                reasons.append((EDE_NOT_YET_VALID, f"signature not yet valid for {what}"))
                continue
            candidates = [k for k, tag in zip(keys, self._key_tags(keys), strict=True)
                          if tag == sig.key_tag and isinstance(k, DNSKEY)
                          and k.algorithm == sig.algorithm][:MAX_CANDIDATE_KEYS]
            if not candidates:
                reasons.append((EDE_DNSKEY_MISSING, f"no DNSKEY of {signer} with key tag "
                                f"{sig.key_tag} for the signature over {what}"))
                continue
            for _ in candidates:
                budget.verify()
            try:
                if self._signature_verifies(name, rdataset, sig, candidates, now):
                    return sig
                reasons.append((EDE_BOGUS, f"signature crypto failed for {what}"))
            except dns.exception.ValidationFailure:
                reasons.append((EDE_BOGUS, f"signature crypto failed for {what}"))
            except Exception as exc:  # malformed key or signature
                reasons.append((EDE_BOGUS, f"signature check failed for {what}: {exc}"))
        if not reasons:
            raise _Bogus(EDE_RRSIGS_MISSING, f"no signatures over {what}")
        # the most telling reason: a crypto failure over a time problem over the rest
        for ede in (EDE_BOGUS, EDE_EXPIRED, EDE_NOT_YET_VALID, EDE_DNSKEY_MISSING,
                    EDE_UNSUPPORTED_ALGORITHM):
            for code, text in reasons:
                if code == ede:
                    raise _Bogus(code, text)
        raise _Bogus(*reasons[0])

    def _signature_verifies(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset,
                            sig: RRSIG, candidates: list[DNSKEY], now: float) -> bool:
        """Whether ``sig`` over ``name``'s ``rdataset`` verifies with one of
        ``candidates`` (key tag and algorithm match; its time is checked by the caller):
        dnspython's ``validate_rrsig`` under :data:`POLICY` -- the same checks and the
        same exceptions --, with the public key objects kept per key and the
        signatures that verified remembered (:class:`SignatureCache`)."""
        if sig.type_covered != rdataset.rdtype or sig.rdclass != rdataset.rdclass:
            raise _failure("RRSIG does not cover the RRset")
        data = signed_data(name, rdataset, sig)
        digest = hashlib.sha256(data).digest()  # the entry's size bounded
        for key in candidates:
            if not key.flags & _ZONE_FLAG or key.protocol != 3 or (
                    key.flags & _REVOKE_FLAG and sig.type_covered != dns.rdatatype.DNSKEY):
                continue
            if not POLICY.ok_to_validate(key):
                continue
            entry = (key.key, sig.signature, digest)
            if self._signatures.hit(entry, now):
                self._stats["signature_cache_hits"] += 1
                return True
            public = self._public_key(key)
            if public is None:
                continue
            self._stats["signatures_verified"] += 1
            try:
                public.verify(sig.signature, data)  # type: ignore[attr-defined]
            except (InvalidSignature, dns.exception.ValidationFailure):
                continue
            self._signatures.add(entry, signature_expiry(now, rdataset.ttl, sig), now)
            return True
        return False

    def _public_key(self, key: DNSKEY) -> object | None:
        """dnspython's public key object for ``key`` (None: not a usable key), made once
        per key."""
        index = (key.algorithm, key.key)
        if index in self._public_keys:
            return self._public_keys[index]
        try:
            public: object | None = dns.dnssecalgs.get_algorithm_cls_from_dnskey(
                key).public_cls.from_dnskey(key)
        except ValueError:
            public = None
        if len(self._public_keys) >= MAX_PUBLIC_KEYS:
            self._public_keys.clear()
        self._public_keys[index] = public
        return public

    def _key_tags(self, keys: dns.rdataset.Rdataset) -> list[int]:
        """The key tag of each record of ``keys`` (-1: not a DNSKEY), computed once per
        RRset object: the cached zones' keys are checked against every answer."""
        known = self._tags.get(id(keys))
        if known is not None and known[0] is keys:
            return known[1]
        tags = [dns.dnssec.key_id(k) if isinstance(k, DNSKEY) else -1 for k in keys]
        if len(self._tags) >= MAX_KEY_TAG_SETS:
            self._tags.clear()
        self._tags[id(keys)] = (keys, tags)
        return tags

    # ------------------------------------------------------------------ chain of trust

    async def _zone_of(self, name: dns.name.Name, budget: _Budget) -> _Entry:
        """The deepest zone cut at or above ``name`` that the walk from the closest anchor
        establishes: a SECURE entry with its keys, INSECURE, or BOGUS."""
        memo = self._zone_memo.get(name)
        if memo is not None and memo[1] > self._now():
            self._stats["cache_hits"] += 1
            return memo[0]
        anchor = self.anchors.closest(name)
        if anchor is None:
            return _Entry(_Step.INSECURE, dns.name.root, float("inf"))
        entry = await self._step(anchor, None, budget)
        holds = entry.expires
        labels = name.relativize(anchor).labels if name != anchor else ()
        if len(labels) > MAX_LABELS:
            raise _Bogus(EDE_BOGUS, f"{name} has too many labels")
        current = anchor
        for label in reversed(labels):
            if entry.step is not _Step.SECURE:
                break
            current = dns.name.Name((label, *current.labels))
            step = await self._step(current, entry, budget)
            holds = min(holds, step.expires)
            if step.step is _Step.NOCUT:
                continue
            if step.step is _Step.STOP:
                break
            entry = step
        self._zone_memo[name] = (entry, holds)
        self._zone_memo.move_to_end(name)
        while len(self._zone_memo) > self._max_zones:
            self._zone_memo.popitem(last=False)
        return entry

    async def _step(self, name: dns.name.Name, parent: _Entry | None,
                    budget: _Budget) -> _Entry:
        now = self._now()
        entry = self._cache.get(name)
        if entry is not None and entry.expires > now:
            self._cache.move_to_end(name)
            self._stats["cache_hits"] += 1
            return entry
        self._stats["cache_misses"] += 1
        try:
            entry = await (self._anchor_keys(name, budget) if parent is None
                           else self._cut(name, parent, budget))
        except _Bogus as exc:
            if exc.transient:
                raise
            entry = _Entry(_Step.BOGUS, name, self._now() + BOGUS_TTL, ede=exc.ede,
                           text=exc.text)
        self._cache[name] = entry
        self._cache.move_to_end(name)
        while len(self._cache) > self._max_zones:
            self._cache.popitem(last=False)
        return entry

    async def _fetch(self, name: dns.name.Name, rdtype: int,
                     budget: _Budget) -> dns.message.Message:
        budget.fetch()
        key = (name, rdtype)
        future = self._inflight.get(key)
        if future is None:
            self._stats["fetches"] += 1
            future = asyncio.ensure_future(self._fetch_fn(name, rdtype))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._fetched(key, f))
        else:
            self._stats["fetches_shared"] += 1
        try:
            response = await asyncio.shield(future)
        except (ResolveFailure, DnsTlsError, TimeoutError, OSError) as exc:
            self._stats["fetch_failures"] += 1
            ede = EDE_DNSKEY_MISSING if rdtype == dns.rdatatype.DNSKEY else EDE_BOGUS
            raise _Bogus(ede, f"could not fetch {_type(rdtype)} for {name}: {exc}",
                         transient=True) from None
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            ede = EDE_DNSKEY_MISSING if rdtype == dns.rdatatype.DNSKEY else EDE_BOGUS
            raise _Bogus(ede, f"could not fetch {_type(rdtype)} for {name}: "
                         f"{dns.rcode.to_text(response.rcode())}", transient=True)
        return response

    def _fetched(self, key: tuple[dns.name.Name, int],
                 future: asyncio.Future[dns.message.Message]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved: every waiter may have been cancelled

    def _expiry(self, *rrsets: dns.rrset.RRset, sig: RRSIG | None = None) -> float:
        now = self._now()
        ttl = min([MAX_CACHE_TTL, *(float(r.ttl) for r in rrsets)])
        expires = now + ttl
        if sig is not None:
            expires = min(expires, float(sig.expiration))
        return expires

    async def _anchor_keys(self, zone: dns.name.Name, budget: _Budget) -> _Entry:
        ds = [d for d in self.anchors.ds.get(zone, [])]
        trusted = list(self.anchors.dnskey.get(zone, []))
        return await self._keys(zone, ds, trusted, budget)

    async def _cut(self, name: dns.name.Name, parent: _Entry, budget: _Budget) -> _Entry:
        response = await self._fetch(name, dns.rdatatype.DS, budget)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return _Entry(_Step.STOP, parent.zone, self._expiry(*response.authority))
        ds = _find(response.answer, name, dns.rdatatype.DS)
        if ds is not None:
            await self._verify_in(response, response.answer, ds, parent, budget)
            return await self._keys(name, [d for d in ds if isinstance(d, DS)], [], budget)
        if _find(response.answer, name, dns.rdatatype.CNAME) is not None:
            return _Entry(_Step.NOCUT, parent.zone, self._expiry(*response.answer))
        return await self._no_ds(response, name, parent, budget)

    async def _no_ds(self, response: dns.message.Message, name: dns.name.Name,
                     parent: _Entry, budget: _Budget) -> _Entry:
        """A NODATA answer to DS ``name``: an insecure delegation or no cut at all."""
        expires = self._expiry(*response.authority)
        nsec = _find(response.authority, name, dns.rdatatype.NSEC)
        if nsec is not None:
            types = proofs.types_of(nsec[0])
            kind = proofs.delegation_from_nsec(types)
            if kind == "none":
                return _Entry(_Step.NOCUT, parent.zone, expires)
            await self._verify_in(response, response.authority, nsec, parent, budget)
            if kind == "insecure":
                return _Entry(_Step.INSECURE, name, expires,
                              text=f"insecure delegation {name} (NSEC: no DS)")
            raise _Bogus(EDE_BOGUS, f"NSEC at {name} lists DS but no DS was returned")
        nsec3_rrsets = [r for r in response.authority if r.rdtype == dns.rdatatype.NSEC3
                        and r.rdclass == IN and r.name.parent() == parent.zone]
        if not nsec3_rrsets:
            return _Entry(_Step.NOCUT, parent.zone, expires)
        records: list[tuple[dns.name.Name, NSEC3]] = []
        for rrset in nsec3_rrsets[:MAX_DENIAL_RRSETS]:
            records.extend((rrset.name, r) for r in rrset if isinstance(r, NSEC3))
        nsec3 = proofs.Nsec3Set(parent.zone, records)
        if nsec3.iterations > proofs.MAX_NSEC3_ITERATIONS:
            for rrset in nsec3_rrsets[:MAX_DENIAL_RRSETS]:
                await self._verify_in(response, response.authority, rrset, parent, budget)
            return _Entry(_Step.INSECURE, name, expires,
                          ede=proofs.EDE_UNSUPPORTED_NSEC3_ITERATIONS,
                          text=f"NSEC3 iterations {nsec3.iterations} above "
                               f"{proofs.MAX_NSEC3_ITERATIONS} at {parent.zone}")
        match = nsec3.matching(name)
        if match is not None:
            kind = proofs.delegation_from_nsec(proofs.types_of(match))
            if kind == "none":
                return _Entry(_Step.NOCUT, parent.zone, expires)
            for rrset in nsec3_rrsets[:MAX_DENIAL_RRSETS]:
                await self._verify_in(response, response.authority, rrset, parent, budget)
            if kind == "insecure":
                return _Entry(_Step.INSECURE, name, expires,
                              text=f"insecure delegation {name} (NSEC3: no DS)")
            raise _Bogus(EDE_BOGUS, f"NSEC3 for {name} lists DS but no DS was returned")
        for rrset in nsec3_rrsets[:MAX_DENIAL_RRSETS]:
            await self._verify_in(response, response.authority, rrset, parent, budget)
        proof = proofs.nsec3_proof(name, dns.rdatatype.DS, parent.zone, records,
                                   nxdomain=False)
        if proof.outcome is proofs.Outcome.INSECURE:
            return _Entry(_Step.INSECURE, name, expires, ede=proof.ede,
                          text=f"insecure delegation {name} ({proof.text})")
        return _Entry(_Step.NOCUT, parent.zone, expires)

    async def _verify_in(self, response: dns.message.Message, section: list[dns.rrset.RRset],
                         rrset: dns.rrset.RRset, parent: _Entry, budget: _Budget) -> None:
        """Verify an RRset of the zone above a cut with that zone's keys."""
        sigset = _find(section, rrset.name, dns.rdatatype.RRSIG, rrset.rdtype)
        sigs = [s for s in (sigset or []) if isinstance(s, RRSIG) and s.signer == parent.zone]
        if not sigs:
            raise _Bogus(EDE_RRSIGS_MISSING,
                         f"no signatures over {rrset.name} {_type(rrset.rdtype)}")
        assert parent.keys is not None
        self._check_sigs(rrset, sigs, parent.keys, parent.zone, budget)

    async def _keys(self, zone: dns.name.Name, ds: list[DS], trusted: list[DNSKEY],
                    budget: _Budget) -> _Entry:
        """The DNSKEY RRset of ``zone``, trusted through ``ds`` or the ``trusted`` keys."""
        usable_digest = [d for d in ds if d.digest_type in SUPPORTED_DIGESTS]
        usable = [d for d in usable_digest if d.algorithm in SUPPORTED_ALGORITHMS]
        trusted = [k for k in trusted if k.algorithm in SUPPORTED_ALGORITHMS]
        if not usable and not trusted:
            if ds and not usable_digest:
                ede, why = EDE_UNSUPPORTED_DIGEST, "unsupported DS digest types"
            else:
                ede, why = EDE_UNSUPPORTED_ALGORITHM, "unsupported DNSKEY algorithms"
            return _Entry(_Step.INSECURE, zone, self._now() + BOGUS_TTL * 5, ede=ede,
                          text=f"{why} for {zone}")
        response = await self._fetch(zone, dns.rdatatype.DNSKEY, budget)
        dnskeys = _find(response.answer, zone, dns.rdatatype.DNSKEY)
        if dnskeys is None:
            raise _Bogus(EDE_DNSKEY_MISSING, f"no DNSKEY for {zone}")
        keys = [k for k in dnskeys if isinstance(k, DNSKEY)]
        if len(keys) > MAX_KEYS:
            raise _Bogus(EDE_BOGUS, f"more than {MAX_KEYS} keys in the DNSKEY RRset of {zone}")
        matched: list[DNSKEY] = []
        for key in keys:
            if key in trusted:
                matched.append(key)
                continue
            tag = dns.dnssec.key_id(key)
            for d in usable:
                if d.key_tag != tag or d.algorithm != key.algorithm:
                    continue
                try:
                    made = dns.dnssec.make_ds(zone, key, d.digest_type, policy=POLICY,
                                              validating=True)
                except Exception:  # an unusable key matches nothing
                    continue
                if made.digest == d.digest:
                    matched.append(key)
                    break
        if not matched:
            raise _Bogus(EDE_DNSKEY_MISSING, f"no DNSKEY of {zone} matches its "
                         + ("trust anchor" if trusted else "DS"))
        zone_keys = [k for k in matched if k.flags & 0x0100 and not k.flags & 0x0080]
        if not zone_keys:
            raise _Bogus(EDE_NO_ZONE_KEY, f"the DNSKEY of {zone} matching its DS is not "
                         "a zone key (or is revoked)")
        sigset = _find(response.answer, zone, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
        sigs = [s for s in (sigset or []) if isinstance(s, RRSIG) and s.signer == zone]
        if not sigs:
            raise _Bogus(EDE_RRSIGS_MISSING, f"no signatures over {zone} DNSKEY")
        good = self._check_sigs(dnskeys, sigs,
                                dns.rdataset.from_rdata_list(dnskeys.ttl, zone_keys),
                                zone, budget)
        rdataset = dns.rdataset.from_rdata_list(dnskeys.ttl, keys)
        return _Entry(_Step.SECURE, zone, self._expiry(dnskeys, sig=good), keys=rdataset)


# --------------------------------------------------------------------------- DO=0

_DNSSEC_ONLY = frozenset({dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3})
_DNSSEC_KEYS = frozenset({dns.rdatatype.DNSKEY, dns.rdatatype.DS, dns.rdatatype.NSEC3PARAM})


def strip_dnssec(response: dns.message.Message, qtype: int) -> None:
    """Remove DNSSEC records for a client that did not set DO (RFC 4035 §3.2.1), in
    place: RRSIG, NSEC and NSEC3 from every section unless asked for (then kept in the
    answer section), DNSKEY, DS and NSEC3PARAM from every section except the answer
    section when they are the type asked for (or the query is ANY)."""
    for section in (response.answer, response.authority, response.additional):
        is_answer = section is response.answer
        keep = []
        for rrset in section:
            rdtype = rrset.rdtype
            if rdtype in _DNSSEC_ONLY:
                if not (is_answer and rdtype == qtype):
                    continue
            elif rdtype in _DNSSEC_KEYS and not (
                    is_answer and qtype in (rdtype, dns.rdatatype.ANY)):
                continue
            keep.append(rrset)
        section[:] = keep
    kept = {id(rrset) for section in (response.answer, response.authority,
                                      response.additional) for rrset in section}
    response.index = {key: rrset for key, rrset in response.index.items() if id(rrset) in kept}
