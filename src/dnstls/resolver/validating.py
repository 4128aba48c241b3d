"""DNSSEC validation of forwarded answers: the stage in front of the forwarder.

With ``[dnssec] validation = true`` (``serve --dnssec``) every forwarded question of
class IN is asked of the upstream with DO and CD set, whatever the client asked (CD: the
upstream hands over what it has, even data it finds bogus, so that we decide and can say
why), and the answer is checked by :class:`dnstls.resolver.dnssec.Validator` against the
trust anchors, fetching the DS and DNSKEY RRsets it needs through the same forwarder (so
a forward zone's keys come from that zone's upstreams). What the client gets, as a
validating Unbound 1.17 answers:

* **secure**: the answer with AD set when the client asked for it (DO or AD, RFC 6840
  §5.7/5.8), and the DNSSEC records (RRSIG, NSEC, NSEC3) only when it set DO;
* **insecure** (below an unsigned delegation, no trust anchor above the name, or only
  algorithms we cannot check): the answer without AD;
* **bogus**: SERVFAIL with an Extended DNS Error (RFC 8914) saying why -- 6 *DNSSEC
  Bogus*, 7 *Signature Expired*, 8 *Signature Not Yet Valid*, 9 *DNSKEY Missing*,
  10 *RRSIGs Missing*, 12 *NSEC Missing*, ... -- with the validator's reason as its
  text (Unbound's ``val-log-level: 2`` line); the bogus data never reaches the client;
* **CD set by the client** (RFC 4035 §3.2.2, RFC 6840 §5.9): the answer whatever the
  verdict -- bogus data too, for the client to check itself -- with AD when it is
  secure, as Unbound answers (it validates what it fetched for a CD query as for any);
* a name at or under ``dnssec.domain_insecure`` (Unbound's ``domain-insecure``, RFC 7646
  negative trust anchors): forwarded as without validation, AD clear.

Upstream failures stay what the forwarder makes of them (SERVFAIL with its EDE). The
client query's deadline bounds the validation as everything else: when the keys cannot
be had in time the answer is SERVFAIL, EDE 22 *No Reachable Authority*.

The forwarder's wire path is off while validation is on (every forwarded answer is
checked here; cache hits stay on the fast path: what the cache keeps is the validated
answer, under a key that tells DO, CD and AD apart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from dnstls.proto.answers import EDNS_PAYLOAD, Transport
from dnstls.resolver.base import Request, Resolver, servfail
from dnstls.resolver.dnssec import Security, strip_dnssec
from dnstls.resolver.forward import client_response

log = logging.getLogger("dnstls.resolver.validating")

#: Where Debian's dns-root-data keeps the root zone's trust anchor (DNSKEY records).
ROOT_KEY_FILE = "/usr/share/dns/root.key"
#: The root KSKs' DS records (KSK-2017 and KSK-2024, IANA root-anchors.xml), used when
#: no trust anchor file is given and :data:`ROOT_KEY_FILE` is not there.
BUILTIN_ROOT_ANCHORS = """\
. IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
. IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16
"""
#: Seconds one DS or DNSKEY fetch may take (it is shared by the queries that need it,
#: so it has its own deadline; each client query is still bounded by its own).
FETCH_TIMEOUT = 5.0
_IN = dns.rdataclass.IN
_CD = dns.flags.CD
_AD = dns.flags.AD
_DO = dns.flags.DO


def load_anchors(path: str) -> tuple[Any, str]:
    """The trust anchors of ``dnssec.trust_anchor_file`` (``""``: :data:`ROOT_KEY_FILE`
    when it exists, else :data:`BUILTIN_ROOT_ANCHORS`) and where they came from.
    Raises :class:`~dnstls.errors.ConfigError` naming the field."""
    from dnstls.errors import ConfigError
    from dnstls.resolver.dnssec import TrustAnchors

    field = "dnssec.trust_anchor_file"
    if not path and not os.path.exists(ROOT_KEY_FILE):
        return TrustAnchors.from_text(BUILTIN_ROOT_ANCHORS, source="built-in"), \
            "the built-in root KSK DS records"
    chosen = path or ROOT_KEY_FILE
    try:
        return TrustAnchors.from_file(chosen), chosen
    except OSError as exc:
        raise ConfigError(field, f"cannot read {chosen}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None


def parse_insecure(names: Iterable[str], field: str = "dnssec.domain_insecure",
                   ) -> tuple[dns.name.Name, ...]:
    """``dnssec.domain_insecure`` as names; a bad one is a ConfigError naming it."""
    from dnstls.errors import ConfigError

    out = []
    for i, text in enumerate(names):
        try:
            out.append(dns.name.from_text(text))
        except (dns.exception.DNSException, ValueError) as exc:
            raise ConfigError(f"{field}[{i}]", f"not a domain name: {text!r} ({exc})") from None
    return tuple(out)


def fetcher(next: Resolver, clock: Callable[[], float], *, timeout: float = FETCH_TIMEOUT,
            ) -> Callable[[dns.name.Name, int], Awaitable[dns.message.Message]]:
    """The validator's way to ask for a DS or DNSKEY RRset: a query with RD, DO and CD
    through ``next`` (the forwarder, so forward zones route it), its own deadline."""

    async def fetch(name: dns.name.Name, rdtype: int) -> dns.message.Message:
        query = dns.message.make_query(name, dns.rdatatype.RdataType.make(rdtype),
                                       want_dnssec=True, payload=EDNS_PAYLOAD)
        query.flags |= _CD
        return await next.resolve(Request(query, Transport.TCP, None, clock() + timeout))

    return fetch


def validating(forwarder: Resolver, anchors: Any, clock: Callable[[], float], *,
               insecure: Iterable[dns.name.Name] = (), minimal: bool = True,
               ) -> ValidatingStage:
    """A :class:`ValidatingStage` in front of ``forwarder`` whose Validator fetches its
    DS and DNSKEY records through that same forwarder (serve's and each stub
    generation's)."""
    from dnstls.resolver.dnssec import Validator

    return ValidatingStage(forwarder, Validator(anchors, fetcher(forwarder, clock)),
                           insecure=insecure, minimal=minimal)


def validating_query(client: dns.message.Message) -> dns.message.Message:
    """The query the forwarder sends for ``client``: its question, RD, DO and CD set,
    an EDNS payload of at least :data:`EDNS_PAYLOAD` (signed answers are larger)."""
    query = dns.message.Message(id=client.id)
    query.flags = (client.flags & dns.flags.RD) | _CD
    query.question = list(client.question)
    payload = client.payload if client.edns >= 0 else 0
    query.use_edns(0, _DO, max(EDNS_PAYLOAD, payload), options=[])
    return query


class ValidatingStage:
    """The resolver stage described in the module docstring."""

    def __init__(self, next: Resolver, validator: Any, *,
                 insecure: Iterable[dns.name.Name] = (), minimal: bool = True) -> None:
        self.next = next
        #: ``cache.minimal_responses``: a positive answer for DO keeps only its proofs
        self.minimal = minimal
        self.validator = validator
        self.insecure = tuple(insecure)
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<ValidatingStage {self.next!r}>"

    def _is_insecure(self, name: dns.name.Name) -> bool:
        return any(name.is_subdomain(n) for n in self.insecure)

    async def resolve(self, request: Request) -> dns.message.Message:
        client = request.message
        question = client.question[0]
        if question.rdclass != _IN:
            self.counts["unchecked"] += 1
            return await self.next.resolve(request)
        if self._is_insecure(question.name):
            self.counts["insecure"] += 1
            response = await self.next.resolve(request)
            response.flags &= ~_AD
            return response
        upstream = await self.next.resolve(
            dataclasses.replace(request, message=validating_query(client), wire=b""))
        checking = not client.flags & _CD
        try:
            async with asyncio.timeout_at(request.deadline):
                verdict = await self.validator.validate(upstream)
        except TimeoutError:
            self.counts["timeout"] += 1
            if checking:
                raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                               f"DNSSEC validation of {question.name} "
                               f"{dns.rdatatype.to_text(question.rdtype)} did not finish "
                               "in time") from None
            verdict = None
        security = verdict.security if verdict is not None else Security.INDETERMINATE
        if verdict is not None:
            self.counts[security.value] += 1
        if security is Security.BOGUS and checking:
            assert verdict is not None
            ede = dns.edns.EDECode.DNSSEC_BOGUS if verdict.ede is None else verdict.ede
            # the name is the client's question: at debug level only (no query names in
            # the log unless asked, as Unbound's val-log-level: 0)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("validation failure <%s %s IN>: %s", question.name,
                          dns.rdatatype.to_text(question.rdtype), verdict.text or "bogus")
            raise servfail(ede, verdict.text)
        response = client_response(client, upstream)
        response.flags &= ~_AD
        do = client.edns >= 0 and client.ednsflags & _DO
        if security is Security.SECURE and (do or client.flags & _AD):
            response.flags |= _AD
        if not do:
            strip_dnssec(response, question.rdtype)
        elif self.minimal and response.authority and any(r.rdtype == question.rdtype
                                                         for r in response.answer):
            _keep_proofs(response)
        return response

    def statistics(self) -> dict[str, Any]:
        """``validations``: answers by outcome (secure, insecure, bogus, timeout, and
        unchecked: another class), ``dnstls_dnssec_validations_total{kind}``; then the
        validator's DS/DNSKEY work: fetches (shared by several validations, failed), its
        key cache's hits, misses and entries, fetches in flight; signatures verified and
        taken from the cache of verified signatures, its entries."""
        stats: dict[str, Any] = {"validations": dict(self.counts)}
        validator_stats = getattr(self.validator, "statistics", None)
        if validator_stats is not None:
            figures = validator_stats()
            for ours, theirs in _VALIDATOR_FIGURES:
                if theirs in figures:
                    stats[ours] = figures[theirs]
        return stats


#: (our statistics key, the Validator's): the metrics ``dnstls_dnssec_<ours>``
_VALIDATOR_FIGURES = (("fetches", "fetches"), ("fetches_shared", "fetches_shared"),
                      ("fetch_failures", "fetch_failures"),
                      ("key_cache_hits", "cache_hits"), ("key_cache_misses", "cache_misses"),
                      ("key_cache_entries", "key_cache"), ("fetches_in_flight", "inflight"),
                      ("signatures_verified", "signatures_verified"),
                      ("signature_cache_hits", "signature_cache_hits"),
                      ("signature_cache_entries", "signature_cache"))


def _keep_proofs(response: dns.message.Message) -> None:
    """A positive answer for a DO query keeps, of the authority section, only what
    proves it (a wildcard's NSEC or NSEC3 and their signatures), and no additional
    section, as Unbound's ``minimal-responses`` answers: the upstream's NS RRset goes."""
    proofs = {dns.rdatatype.NSEC, dns.rdatatype.NSEC3}
    response.authority = [r for r in response.authority
                          if r.rdtype in proofs or (r.rdtype == dns.rdatatype.RRSIG
                                                    and r.covers in proofs)]
    response.additional = []


def stage_summary(anchors: Any, source: str, insecure: tuple[dns.name.Name, ...]) -> str:
    """The start-up log line's text."""
    zones = ", ".join(str(z) for z in anchors.zones)
    text = f"DNSSEC validation on: trust anchors for {zones} from {source}"
    if insecure:
        text += "; not validated: " + ", ".join(str(n) for n in insecure)
    return text
