"""Full recursion: iterative resolution from the root (RFC 1034 §5.3.3), as Unbound.

:class:`Iterator` is the last stage of the recursive pipeline (instead of the
forwarder): it answers a question by walking the delegations from the root (or from a
configured *stub* zone, Unbound's ``stub-zone``) down to the zone's authoritative
servers, asking each one question at a time through an :class:`Authority` (the
network, ``net/authority.py``; a fake in the tests). It never imports ``net/``.

**Priming** (RFC 8109). Before the first resolution the root's NS RRset is asked of a
root-hints server (``load_root_hints``: named.root format; the built-in IANA list), and
the answer's NS names and glue are the root delegation until its TTL runs out (then it
is primed again). If priming fails the hints are used for :data:`PRIME_RETRY` seconds.
Queries that arrive while a priming is under way wait for it (each until its own
deadline) instead of priming again.
A stub for ``.`` replaces the hints and is not primed (Unbound's default
``stub-prime: no``).

**The delegation cache.** zone -> NS names -> addresses, each entry until min(NS TTL,
glue TTLs) (capped at :data:`MAX_TTL`), least recently used dropped beyond
``max_entries``; addresses of NS names found by sub-resolution are cached the same way.
A resolution starts at the deepest cached delegation (or stub: a stub at the same depth
wins, as Unbound's stub beats its cache) at or above the name -- for a DS question at
or above the name's *parent*: DS records live in the parent zone (RFC 4035 §3.1.4.1),
so the child's servers are never asked for them and a referral to the name itself is
refused. Answers themselves are not cached here (the cache stage in front does that).

**Referrals** are accepted only downward: NOERROR, no answer, an NS RRset in the
authority section for a zone strictly below the zone of the server asked and at or
above the name asked (anything else -- upward or sideways referrals -- is a lame
answer). Glue (A/AAAA in the additional section) is accepted only for the referral's
NS names and only inside the bailiwick of the zone that sent it (Unbound's
``harden-glue``); out-of-bailiwick addresses are resolved separately, lazily: servers
with known addresses are tried first, an NS name without one is resolved (A, then
AAAA) only when none is left, at most :data:`MAX_DEPTH` levels deep and
:data:`MAX_SUBRESOLUTIONS` times per client query; a name already being resolved up
the stack is skipped (a glueless loop ends in SERVFAIL, not recursion).

**Answers are scrubbed.** From an authoritative answer only the RRsets on the chain
from the question are kept: the RRset of the name and type, CNAMEs at the names the
chain reaches, DNAMEs above them (with the CNAME the server synthesized when it matches
the DNAME, otherwise one synthesized here -- RFC 6672 §3.3), each only when its owner is
inside the zone of the server that sent it; RRSIGs only for kept RRsets. Everything
else in the answer and all of the additional section is dropped, so poison is neither
returned nor used as an address. A CNAME or DNAME whose target is outside the zone (or
inside it, when the server did not follow it) restarts the lookup at the target, at most
:data:`MAX_RESTARTS` (11, Unbound's ``MAX_RESTART_COUNT``) times; the answer section is
the whole chain. Negative answers (NXDOMAIN, NODATA, with AA) keep the zone's SOA, and
with DO the NSEC/NSEC3 records and RRSIGs of the zone from the authority section (also
kept for positive answers with DO: the wildcard proofs). What the DNSSEC stage in front
(``validating.py``) needs: it asks with DO+CD, gets the RRSIGs and proofs, and its DS
and DNSKEY fetches reach the parent and the zone respectively. CD is never sent to
authorities (it means nothing to them); every query has EDNS (payload
:data:`~dnstls.proto.answers.EDNS_PAYLOAD`), DO when the client query had it, RD clear.

**Lame servers.** REFUSED, SERVFAIL, NOTIMP (any RCODE but NOERROR/NXDOMAIN), an answer
without AA that is not a referral, an upward referral, an answer to another question:
the server is marked lame for that zone for :data:`LAME_TTL` seconds (tried only when
no other is left) and the next is asked. FORMERR to a query with EDNS: asked once more
without EDNS (Unbound's EDNS fallback). TC=1: asked again over TCP, same server.

**Server selection** (Unbound's infra cache, simplified). Per address a smoothed RTT and
variance give a retransmission timeout (RTO, RFC 6298: srtt + 4 rttvar, at least 50 ms);
an unknown address counts :data:`UNKNOWN_RTT` (376 ms); a timeout doubles the address's
RTO (capped at :data:`RTO_MAX`, 12 s). Each attempt waits the address's RTO; the next
server is chosen at random among those within :data:`RTT_BAND` (400 ms) of the best;
when every server has been tried, those that timed out are asked again (up to
:data:`MAX_ROUNDS` times each, their RTO doubling), so one lost datagram is no SERVFAIL.
Each lookup sends at most :data:`MAX_SENT_COUNT` queries (Unbound's ``max-sent-count``),
a client query at most :data:`MAX_TOTAL_SENDS` in all, and everything stops at the
request's deadline.

**QNAME minimisation** (RFC 9156, relaxed as Unbound's default
``qname-minimisation-strict: no``). Below the zone cut the resolver knows, one more
label at a time is asked, with type A (Unbound, RFC 9156 §3), until the full name; a
referral moves the cut and minimising goes on below it; NOERROR (an empty
non-terminal or a name with data) moves one label down in the same zone. What we chose
for errors (relaxed mode, RFC 9156 §2.3): an NXDOMAIN to a minimised query is not
believed (broken servers answer NXDOMAIN for empty non-terminals) -- minimising stops
and the full name is asked of the same zone, whose answer is final; a server that
refuses or fails a minimised query is lame as for any query. At most
:data:`MAX_MINIMISE_COUNT` (10) minimised queries per lookup, then the full name.

**Failures** raise :class:`~dnstls.resolver.base.ResolveFailure`: SERVFAIL with EDE 22
*No Reachable Authority* (servers timed out, were lame, none usable, the deadline or the
send budget ran out) or EDE 23 *Network Error* (every attempt failed with a network
error: unreachable, refused connection). Questions of another class than IN get
REFUSED (EDE 21 *Not Supported*): recursion is for class IN, as Unbound (measured:
Unbound 1.17.1 answers CH and HS questions under its stub zone REFUSED, without an EDE
as its ``ede: no`` default sends none).

**do_not_query_localhost** (Unbound's ``do-not-query-localhost: yes``, the default):
127.0.0.0/8 and ::1 are never sent to, stub addresses included, as Unbound: measured
with Unbound 1.17.1 and a ``stub-zone`` whose ``stub-addr`` is an nsd on 127.0.0.1, it
answers SERVFAIL with ``do-not-query-localhost: yes`` and the zone's data with ``no``.
IPv6 link-local, unspecified and multicast addresses are always skipped; ``ip4``/``ip6``
(Unbound's ``do-ip4``/``do-ip6``) skip a family.

**The wire path** (:meth:`Iterator.resolve_wire`, the forwarder's wire contract: the
service's WireForwarder and cache take its bytes as they take a forwarder's, without
validation or dnstap, as for forwarding). The resolution is the same algorithm; the
questions of its first lookup (from the deepest cached cut or stub: the minimised ones
and the full question the client asked) are sent as bytes (the authority's
``exchange_wire``) and each answer is judged on the wire before anything is parsed:

* a *referral* (:func:`wire_referral`: NOERROR without AA, no answer records, the
  authority section starting with the NS RRset of a zone below the server's and at or
  above the name asked) becomes the delegation the message path would build from it:
  the NS names, glue only for them and only inside the server's zone, the smallest TTL;
* an *answer to the full question* (:func:`wire_verdict`): AA, NOERROR, every answer
  record the question's name and type (with DO, RRSIGs covering them after them) and,
  with DO, no NSEC/NSEC3/RRSIG in the authority section; or AA, NXDOMAIN or NODATA whose
  authority section starts with the SOA of the zone asked (with DO, then its RRSIGs,
  then the zone's NSEC/NSEC3 records and their RRSIGs). That is exactly what the message
  path keeps of it (the same records in the same order), so the response is that prefix
  of the bytes: the header (QR, RA, RCODE; AA, AD, TC cleared; the authority count
  cut), the question, the answer section and the kept authority records; additional
  section and OPT dropped (the cache renders the client's). The cache's check of the
  body (``check``) must pass too.

Both are taken only when the whole message reads as dnspython reads it (RDATA of the
types the wire path knows, names with pointers backwards only and not into the header,
RRsets together with one TTL and no duplicate RDATA, OPT last without an extended RCODE;
TTLs with the high bit are 0, as there). Any other answer -- CNAME/DNAME, lame, TC,
FORMERR, poison, an owner or type not asked, a type it does not know -- is parsed and
judged exactly as on the message path, which carries on from there: nothing is asked
twice; TCP and EDNS fallbacks, lame marking, RTT, counters and deadlines are the same
code. Restarts (CNAME/DNAME targets), NS address lookups, priming, questions of type
DS, RRSIG, SIG, ANY and meta types, and an Authority without ``exchange_wire``
(dnstap's) take the message path; the result is then rendered to bytes.
``wire_answers`` counts the answers taken as bytes.

Limits: no answer cache (the stage in front caches), no negative/aggressive NSEC use,
no target-fetch prefetch, no 0x20, no cookies, no EDNS-broken memory across queries,
no lameness by DNSSEC (the validating stage judges the answer).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dns.edns
import dns.exception
import dns.flags
import dns.ipv4
import dns.ipv6
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zonefile

from dnstls.errors import ConfigError, NetworkError, ProtocolError, QueryTimeout
from dnstls.proto.answers import EDNS_PAYLOAD, make_response
from dnstls.resolver.base import Request, ResolveFailure, servfail

log = logging.getLogger("dnstls.resolver.iterate")

Address = tuple[str, int]  # (IP literal, port)

#: Where Debian's dns-root-data keeps the root hints.
ROOT_HINTS_FILE = "/usr/share/dns/root.hints"
MAX_RESTARTS = 11  # CNAME/DNAME restarts (Unbound's MAX_RESTART_COUNT)
MAX_SENT_COUNT = 32  # queries sent per lookup (Unbound's max-sent-count)
MAX_TOTAL_SENDS = 96  # queries sent per client query, sub-resolutions included
MAX_SUBRESOLUTIONS = 12  # NS address lookups per client query
MAX_DEPTH = 4  # nesting of NS address lookups
MAX_ROUNDS = 3  # times a server that timed out is asked again for the same question
MAX_MINIMISE_COUNT = 10  # minimised queries per lookup (Unbound's MAX_MINIMISE_COUNT)
UNKNOWN_RTT = 0.376  # an address never measured (Unbound's UNKNOWN_SERVER_NICENESS)
RTT_BAND = 0.400  # choose at random among addresses this close to the best
RTO_MIN = 0.050
RTO_MAX = 12.0
LAME_TTL = 900.0  # Unbound's infra-host-ttl
MAX_TTL = 86400.0  # delegations and addresses kept at most this long
PRIME_RETRY = 60.0  # after a failed priming the hints serve this long
PRIME_TIMEOUT = 5.0  # a priming takes at most this long
TCP_TIMEOUT = 3.0  # the TCP retry of a truncated answer waits at most this

_IN = dns.rdataclass.IN
_NS = dns.rdatatype.NS
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_DS = dns.rdatatype.DS
_SOA = dns.rdatatype.SOA
_CNAME = dns.rdatatype.CNAME
_DNAME = dns.rdatatype.DNAME
_RRSIG = dns.rdatatype.RRSIG
_ANY = dns.rdatatype.ANY
_PROOFS = frozenset({dns.rdatatype.NSEC, dns.rdatatype.NSEC3})
_NOERROR = dns.rcode.NOERROR
_NXDOMAIN = dns.rcode.NXDOMAIN
_ROOT = dns.name.root


class Authority(Protocol):
    """Sends one query to one authoritative server; implemented in net/authority.py.

    Raises :class:`~dnstls.errors.QueryTimeout`, :class:`~dnstls.errors.NetworkError`
    or :class:`~dnstls.errors.ProtocolError`; ``deadline`` is in the iterator's clock."""

    async def exchange(self, query: dns.message.Message, address: Address, *, tcp: bool,
                       deadline: float) -> dns.message.Message: ...


@dataclass(frozen=True)
class RootHints:
    servers: tuple[tuple[dns.name.Name, tuple[str, ...]], ...]  # (NS name, its addresses)
    source: str  # file path or "built-in"


_BUILTIN = (
    ("a", "198.41.0.4", "2001:503:ba3e::2:30"), ("b", "170.247.170.2", "2801:1b8:10::b"),
    ("c", "192.33.4.12", "2001:500:2::c"), ("d", "199.7.91.13", "2001:500:2d::d"),
    ("e", "192.203.230.10", "2001:500:a8::e"), ("f", "192.5.5.241", "2001:500:2f::f"),
    ("g", "192.112.36.4", "2001:500:12::d0d"), ("h", "198.97.190.53", "2001:500:1::53"),
    ("i", "192.36.148.17", "2001:7fe::53"), ("j", "192.58.128.30", "2001:503:c27::2:30"),
    ("k", "193.0.14.129", "2001:7fd::1"), ("l", "199.7.83.42", "2001:500:9f::42"),
    ("m", "202.12.27.33", "2001:dc3::35"),
)
#: The 13 IANA root servers (named.root of 2024), IPv4 and IPv6.
BUILTIN_ROOT_HINTS = RootHints(
    tuple((dns.name.from_text(f"{letter}.root-servers.net."), (v4, v6))
          for letter, v4, v6 in _BUILTIN), "built-in")


def load_root_hints(path: str, field: str = "recursion.root_hints") -> RootHints:
    """The root hints of ``path`` (named.root / Unbound root-hints: zone-file syntax,
    ``. NS x.``, ``x. A ...``, ``x. AAAA ...``); ``""``: :data:`ROOT_HINTS_FILE` when it
    exists, else :data:`BUILTIN_ROOT_HINTS`. Raises :class:`ConfigError` naming
    ``field`` with one reason."""
    if not path and not os.path.exists(ROOT_HINTS_FILE):
        return BUILTIN_ROOT_HINTS
    chosen = path or ROOT_HINTS_FILE
    try:
        with open(chosen, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(field, f"cannot read {chosen}: {reason}") from None
    try:
        rrsets = dns.zonefile.read_rrsets(text, origin=_ROOT, relativize=False,
                                          default_ttl=3600000)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(field, f"{chosen}: not a root hints file ({exc})") from None
    names: list[dns.name.Name] = []
    addresses: dict[dns.name.Name, list[str]] = {}
    for rrset in rrsets:
        if rrset.rdtype == _NS:
            if rrset.name != _ROOT:
                raise ConfigError(field, f"{chosen}: NS records for {rrset.name}, "
                                  "not the root")
            names.extend(r.target for r in rrset if r.target not in names)
        elif rrset.rdtype in (_A, _AAAA):
            addresses.setdefault(rrset.name, []).extend(r.address for r in rrset)
    servers = tuple((n, tuple(addresses[n])) for n in names if addresses.get(n))
    if not servers:
        raise ConfigError(field, f"{chosen}: no root server with an address "
                          "(\". NS name\" and \"name A/AAAA address\" lines)")
    return RootHints(servers, chosen)


@dataclass(slots=True)
class _Delegation:
    zone: dns.name.Name
    servers: dict[dns.name.Name, list[str]]  # NS name -> glue addresses (port 53)
    expires: float
    fixed: tuple[Address, ...] = ()  # a stub's addresses
    stub: bool = False
    zone_wire: bytes = b""  # the zone in lower-case wire form, once the wire path asks

    def wire(self) -> bytes:
        if not self.zone_wire:
            self.zone_wire = (self.zone.to_wire() or b"").lower()
        return self.zone_wire


@dataclass(slots=True)
class _Host:
    """What is known of one address (Unbound's infra cache entry)."""

    srtt: float = 0.0
    rttvar: float = 0.0
    rto: float = UNKNOWN_RTT
    known: bool = False

    def measured(self, rtt: float) -> None:
        if not self.known:
            self.srtt, self.rttvar, self.known = rtt, rtt / 2, True
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(RTO_MAX, max(RTO_MIN, self.srtt + 4 * self.rttvar))

    def timed_out(self) -> None:
        self.rto = min(RTO_MAX, self.rto * 2)


@dataclass(slots=True)
class _Work:
    """One client query's budget and state."""

    deadline: float
    do: bool
    sends: int = 0
    subresolutions: int = 0
    depth: int = 0
    resolving: set[tuple[dns.name.Name, int]] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Lookup:
    sends: int = 0


class _Kind:
    ANSWER = "answer"
    REFERRAL = "referral"
    LAME = "lame"


@dataclass(slots=True)
class _Fast:
    """A question of the wire path (:meth:`Iterator.resolve_wire`)."""

    name: dns.name.Name
    qname: bytes  # lower-case wire form
    qtype: int
    question: bytes  # the question section
    wire: bytes  # the query (ID 0, EDNS as the message path sends it)
    do: bool
    check: Callable[[bytes], bool] | None


@dataclass(slots=True)
class _WireQuery:
    """A query of the wire path's lookup sent as bytes, to a server of ``zone``: the
    full question of a :class:`_Fast` or a minimised one (``full`` False)."""

    fast: _Fast
    zone: bytes
    wire: bytes
    name: dns.name.Name  # the name asked
    sname: bytes  # the same, lower-case wire form
    stype: int
    full: bool
    edns: bool = True

    def question(self) -> bytes:
        return self.sname + self.stype.to_bytes(2, "big") + b"\x00\x01"


@dataclass(slots=True)
class _Referral:
    """A referral read on the wire (:func:`wire_referral`): the child zone, its NS
    names and the in-bailiwick glue, as :meth:`Iterator._delegation` builds them, and
    the delegation's TTL."""

    child: bytes
    servers: dict[bytes, list[str]]
    ttl: float


def _query_wire(question: bytes, do: bool, edns: bool = True) -> bytes:
    """Our query for ``question`` (the question section) as dnspython's make_query
    renders the message path's: ID 0, no flags, EDNS version 0 with our payload, DO."""
    if not edns:
        return b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question
    return (b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01" + question
            + b"\x00\x00\x29" + EDNS_PAYLOAD.to_bytes(2, "big")
            + (b"\x00\x00\x80\x00\x00\x00" if do else b"\x00\x00\x00\x00\x00\x00"))


def _rrsets(section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: int,
            ) -> list[dns.rrset.RRset]:
    return [r for r in section if r.name == name and r.rdtype == rdtype and r.rdclass == _IN]


def _sigs(section: list[dns.rrset.RRset], name: dns.name.Name, covers: int,
          ) -> list[dns.rrset.RRset]:
    return [r for r in section if r.name == name and r.rdtype == _RRSIG
            and r.covers == covers and r.rdclass == _IN]


class Iterator:
    """The iterative resolver stage described in the module docstring. ``clock`` is the
    clock of ``Request.deadline`` (the event loop's ``time``)."""

    def __init__(self, authority: Authority, hints: RootHints, clock: Callable[[], float], *,
                 stubs: Mapping[dns.name.Name, Sequence[Address]] = {},
                 qname_minimisation: bool = True, do_not_query_localhost: bool = True,
                 ip4: bool = True, ip6: bool = True, max_entries: int = 10_000) -> None:
        self.authority = authority
        self.hints = hints
        self.clock = clock
        self.stubs = {name: _Delegation(name, {}, float("inf"), tuple(addrs), True)
                      for name, addrs in stubs.items()}
        self.qname_minimisation = qname_minimisation
        self.do_not_query_localhost = do_not_query_localhost
        self.ip4 = ip4
        self.ip6 = ip6
        self.max_entries = max_entries
        self._delegations: OrderedDict[dns.name.Name, _Delegation] = OrderedDict()
        self._addresses: OrderedDict[dns.name.Name, tuple[list[str], float]] = OrderedDict()
        self._hosts: OrderedDict[Address, _Host] = OrderedDict()
        # keyed by the zone's wire form (bytes hash in C; a Name hashes in Python)
        self._lame: OrderedDict[tuple[Address, bytes], float] = OrderedDict()
        #: the delegations and stubs by the zone's lower-case wire form (the wire
        #: path's start, :meth:`_wire_start`)
        self._by_wire: dict[bytes, _Delegation] = {}
        self._stubs_by_wire = {dp.wire(): dp for dp in self.stubs.values()}
        self._usable: dict[str, bool] = {}
        self._random = random.Random()
        self._priming: asyncio.Future[_Delegation] | None = None
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        start = "stub ." if _ROOT in self.stubs else f"root hints {self.hints.source}"
        return f"<Iterator {start}, {len(self._delegations)} delegations>"

    def statistics(self) -> dict[str, Any]:
        """Counters (resolutions, failures, sends, timeouts, network_errors,
        protocol_errors, tcp_fallbacks, edns_fallbacks, lame, referrals, minimised,
        restarts, primings, priming_failures, subresolutions, wire_answers: answers the
        wire path returned without reading them into a message) and cache sizes."""
        names = ("resolutions", "failures", "sends", "timeouts", "network_errors",
                 "protocol_errors", "tcp_fallbacks", "edns_fallbacks", "lame", "referrals",
                 "minimised", "restarts", "primings", "priming_failures", "subresolutions",
                 "wire_answers")
        stats: dict[str, Any] = {name: self.counts[name] for name in names}
        stats.update(delegation_entries=len(self._delegations),
                     address_entries=len(self._addresses), infra_entries=len(self._hosts),
                     lame_entries=len(self._lame))
        return stats

    # ------------------------------------------------------------------ the stage

    async def resolve(self, request: Request) -> dns.message.Message:
        client = request.message
        if len(client.question) != 1:
            raise ResolveFailure(dns.rcode.FORMERR)
        question = client.question[0]
        if question.rdclass != _IN:
            raise ResolveFailure(dns.rcode.REFUSED, int(dns.edns.EDECode.NOT_SUPPORTED),
                                 "only class IN is resolved")
        work = _Work(request.deadline,
                     bool(client.edns >= 0 and client.ednsflags & dns.flags.DO))
        self.counts["resolutions"] += 1
        try:
            rcode, answer, authority = await self._chain(question.name, question.rdtype, work)
        except ResolveFailure:
            self.counts["failures"] += 1
            raise
        response = make_response(client)
        response.flags &= ~(dns.flags.AA | dns.flags.AD)
        response.answer = answer
        response.authority = authority
        response.set_rcode(dns.rcode.Rcode.make(rcode))
        return response

    async def resolve_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                           deadline: float, check: Callable[[bytes], bool] | None = None,
                           ) -> bytes:
        """The wire path (module docstring, "The wire path"), with the contract of
        :meth:`Forwarder.resolve_wire <dnstls.resolver.forward.Forwarder.resolve_wire>`:
        ``question`` is the question section as the cache key has it (the name in lower
        case), the result a response to it (ID 0, RA; the cache renders it for each
        client) with the answers :meth:`resolve` gives; failures raise ResolveFailure.
        ``flags`` and ``payload`` (the client's) are not used: authorities are asked
        with RD clear and our own payload, as on the message path."""
        labels = []
        used = 0
        end = len(question) - 4
        while used < end and question[used]:  # the key's name: uncompressed, checked
            labels.append(question[used + 1:used + 1 + question[used]])
            used += 1 + question[used]
        if used >= end or question[used] or len(labels) > 127:
            raise ResolveFailure(dns.rcode.FORMERR)
        labels.append(b"")
        used += 1
        try:
            qname = dns.name.Name(labels)
        except dns.exception.DNSException:
            raise ResolveFailure(dns.rcode.FORMERR) from None
        qtype = (question[used] << 8) | question[used + 1]
        if (question[used + 2] << 8) | question[used + 3] != _IN:
            raise ResolveFailure(dns.rcode.REFUSED, int(dns.edns.EDECode.NOT_SUPPORTED),
                                 "only class IN is resolved")
        work = _Work(deadline, do)
        self.counts["resolutions"] += 1
        fast = start = None
        if qtype not in _NOT_FAST and callable(getattr(self.authority, "exchange_wire", None)):
            fast = _Fast(qname, question[:used], qtype, question, _query_wire(question, do),
                         do, check)
            start = self._wire_start(fast.qname)
        try:
            found = await self._chain(qname, qtype, work, fast, start)
        except ResolveFailure:
            self.counts["failures"] += 1
            raise
        if isinstance(found, bytes):
            return found
        rcode, answer, authority = found
        response = dns.message.Message(id=0)
        response.flags = dns.flags.QR | dns.flags.RA
        response.question = [dns.rrset.RRset(qname, _IN, dns.rdatatype.RdataType.make(qtype))]
        response.answer = answer
        response.authority = authority
        response.set_rcode(dns.rcode.Rcode.make(rcode))
        return response.to_wire(max_size=65535)

    def start_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                   deadline: float,
                   callback: Callable[[bytes | None, BaseException | None], None],
                   check: Callable[[bytes], bool] | None = None) -> bool:
        """Nothing is started without a coroutine here (False): the WireForwarder (and
        a ZoneRouter over the iterator) then use :meth:`resolve_wire`."""
        return False

    # ------------------------------------------------------------------ chains

    async def _chain(self, qname: dns.name.Name, qtype: int, work: _Work,
                     fast: _Fast | None = None, start: _Delegation | None = None,
                     ) -> tuple[int, list[dns.rrset.RRset], list[dns.rrset.RRset]] | bytes:
        """The rcode, answer chain and authority section for (qname, qtype); with
        ``fast``, the wire path's response when the first lookup's answer took it
        (``start``: where that lookup starts, :meth:`_wire_start`)."""
        answer: list[dns.rrset.RRset] = []
        authority: list[dns.rrset.RRset] = []
        name = qname
        for restart in range(MAX_RESTARTS + 1):
            if restart:
                self.counts["restarts"] += 1
            found = await (self._lookup(name, qtype, work, fast, start) if not restart
                           else self._lookup(name, qtype, work))
            if isinstance(found, bytes):
                return found
            response, zone = found
            records, final, complete = _follow(response, zone, name, qtype)
            answer.extend(r for r in records if r not in answer)
            proofs = _proofs(response, zone) if work.do else []
            if complete:
                authority.extend(r for r in proofs if r not in authority)
                return _NOERROR, answer, authority
            soa = [r for r in response.authority if r.rdtype == _SOA and r.rdclass == _IN
                   and r.name.is_subdomain(zone) and final.is_subdomain(r.name)]
            if final != name and (not final.is_subdomain(zone) or not soa):
                # a CNAME/DNAME out of the zone (or not followed by its server)
                authority.extend(r for r in proofs if r not in authority)
                name = final
                continue
            rcode = response.rcode()
            soa_sigs = [s for r in soa[:1] for s in _sigs(response.authority, r.name, _SOA)]
            negative = [*soa[:1], *(soa_sigs if work.do else []), *proofs]
            authority.extend(r for r in negative if r not in authority)
            return rcode, answer, authority
        raise servfail(dns.edns.EDECode.OTHER,
                       f"CNAME/DNAME chain longer than {MAX_RESTARTS} from {qname}")

    # ------------------------------------------------------------------ one lookup

    async def _lookup(self, qname: dns.name.Name, qtype: int, work: _Work,
                      fast: _Fast | None = None, start: _Delegation | None = None,
                      ) -> tuple[dns.message.Message, dns.name.Name] | bytes:
        """The authoritative response for (qname, qtype) and the zone that gave it; with
        ``fast``, the full question is asked as bytes and an answer the wire path takes
        (:func:`wire_verdict`) is returned as the response bytes."""
        ds = qtype == _DS and qname != _ROOT
        dp = start if start is not None else await self._start(
            qname.parent() if ds else qname, work)
        lookup = _Lookup()
        minimise = self.qname_minimisation
        minimised = 0
        exists = dp.zone  # the deepest name known to exist on the way to qname
        while True:
            known = exists if exists is dp.zone or exists.is_subdomain(dp.zone) else dp.zone
            if minimise and minimised < MAX_MINIMISE_COUNT and len(qname) > len(known) + 1:
                sname = qname.split(len(known) + 1)[1]
                stype = dns.rdatatype.RdataType.A
                minimised += 1
                self.counts["minimised"] += 1
            else:
                sname, stype = qname, dns.rdatatype.RdataType.make(qtype)
            full = stype == qtype and (sname is qname or sname == qname)
            kind, response = await self._ask(dp, sname, stype, lookup, work,
                                             ds=ds and sname == qname, fast=fast)
            if isinstance(response, bytes):
                return response
            if isinstance(response, _Delegation):
                dp = response
                continue
            if kind is _Kind.REFERRAL:
                dp = self._referral(dp, response, sname)
                continue
            if full:
                return response, dp.zone
            if response.rcode() == _NOERROR:
                exists = sname
            else:  # relaxed: an NXDOMAIN to a minimised query is not believed
                minimise = False

    async def _start(self, name: dns.name.Name, work: _Work) -> _Delegation:
        """The deepest stub or cached delegation at or above ``name``."""
        now = self.clock()
        current = name
        while True:
            stub = self.stubs.get(current)
            if stub is not None:
                return stub
            cached = self._delegations.get(current)
            if cached is not None:
                if cached.expires > now:
                    self._delegations.move_to_end(current)
                    return cached
                del self._delegations[current]
                self._by_wire.pop(cached.wire(), None)
            if current == _ROOT:
                return await self._primed(work)
            current = current.parent()

    async def _primed(self, work: _Work) -> _Delegation:
        """The root delegation from priming: one priming at a time, shared by every
        query that needs it, bounded by the first one's deadline (and PRIME_TIMEOUT);
        each waits at most until its own deadline."""
        future = self._priming
        if future is None:
            deadline = min(work.deadline, self.clock() + PRIME_TIMEOUT)
            future = self._priming = asyncio.ensure_future(
                self._prime(_Work(deadline, work.do)))
            future.add_done_callback(self._primed_done)
        remaining = work.deadline - self.clock()
        try:
            if remaining <= 0:
                raise TimeoutError
            return await asyncio.wait_for(asyncio.shield(future), remaining)
        except TimeoutError:
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                           "no answer in time: priming the root") from None

    def _primed_done(self, future: asyncio.Future[_Delegation]) -> None:
        if self._priming is future:
            self._priming = None
        if not future.cancelled():
            future.exception()  # retrieved, whoever still waits

    async def _prime(self, work: _Work) -> _Delegation:
        """RFC 8109 priming: the root NS RRset from a hints server (the hints if it
        fails, for PRIME_RETRY seconds)."""
        self.counts["primings"] += 1
        hints = _Delegation(_ROOT, {n: list(a) for n, a in self.hints.servers},
                            self.clock() + PRIME_RETRY)
        try:
            kind, asked = await self._ask(hints, _ROOT, _NS, _Lookup(), work, ds=False)
        except ResolveFailure:
            kind, asked = _Kind.LAME, None
        response = asked if isinstance(asked, dns.message.Message) else None
        ns = _rrsets(response.answer, _ROOT, _NS) if response is not None else []
        if kind is not _Kind.ANSWER or response is None or not ns:
            self.counts["priming_failures"] += 1
            log.warning("priming the root failed: using the root hints from %s",
                        self.hints.source)
            self._store(hints)
            return hints
        primed = self._delegation(_ROOT, ns[0], response, _ROOT)
        if not any(primed.servers.values()):  # no glue at all: the hints' addresses
            primed.servers = {n: list(a) for n, a in self.hints.servers}
        self._store(primed)
        return primed

    def _referral(self, dp: _Delegation, response: dns.message.Message,
                  sname: dns.name.Name) -> _Delegation:
        self.counts["referrals"] += 1
        ns = next(r for r in response.authority if r.rdtype == _NS and r.rdclass == _IN
                  and sname.is_subdomain(r.name) and r.name != dp.zone
                  and r.name.is_subdomain(dp.zone))
        stub = self.stubs.get(ns.name)
        if stub is not None:
            return stub
        delegation = self._delegation(ns.name, ns, response, dp.zone)
        self._store(delegation)
        return delegation

    def _wire_delegation(self, dp: _Delegation, referral: _Referral) -> _Delegation:
        """:meth:`_referral` for a referral read on the wire."""
        self.counts["referrals"] += 1
        stub = self._stubs_by_wire.get(referral.child)
        if stub is not None:
            return stub
        servers = {_name_of(name): glue for name, glue in referral.servers.items()}
        delegation = _Delegation(_name_of(referral.child), servers,
                                 self.clock() + referral.ttl, zone_wire=referral.child)
        self._store(delegation)
        return delegation

    def _delegation(self, zone: dns.name.Name, ns: dns.rrset.RRset,
                    response: dns.message.Message, bailiwick: dns.name.Name) -> _Delegation:
        """A delegation from an NS RRset and the glue of ``response`` for its names
        inside ``bailiwick`` (the zone of the server that sent it)."""
        ttl = float(min(ns.ttl, MAX_TTL))
        servers: dict[dns.name.Name, list[str]] = {r.target: [] for r in ns}
        for rrset in response.additional:
            if rrset.rdtype in (_A, _AAAA) and rrset.rdclass == _IN \
                    and rrset.name in servers and rrset.name.is_subdomain(bailiwick):
                servers[rrset.name].extend(r.address for r in rrset)
                ttl = min(ttl, float(rrset.ttl))
        return _Delegation(zone, servers, self.clock() + ttl)

    def _store(self, delegation: _Delegation) -> None:
        self._delegations[delegation.zone] = delegation
        self._delegations.move_to_end(delegation.zone)
        self._by_wire[delegation.wire()] = delegation
        while len(self._delegations) > self.max_entries:
            _, dropped = self._delegations.popitem(last=False)
            self._by_wire.pop(dropped.wire(), None)

    def _wire_start(self, qname: bytes) -> _Delegation | None:
        """:meth:`_start` for the wire path, on the name's wire form: the deepest stub
        or unexpired cached delegation at or above it; None when there is none (or it
        expired): :meth:`_start` then decides (priming, clean-up)."""
        now = self.clock()
        stubs = self._stubs_by_wire
        cache = self._by_wire
        pos = 0
        for _ in range(128):
            suffix = qname[pos:] if pos else qname
            stub = stubs.get(suffix)
            if stub is not None:
                return stub
            cached = cache.get(suffix)
            if cached is not None:
                if cached.expires <= now:
                    return None
                self._delegations.move_to_end(cached.zone)
                return cached
            if not qname[pos]:
                return None
            pos += qname[pos] + 1
        return None

    # ------------------------------------------------------------------ one question

    async def _ask(self, dp: _Delegation, sname: dns.name.Name, stype: int, lookup: _Lookup,
                   work: _Work, *, ds: bool, fast: _Fast | None = None,
                   ) -> tuple[str, dns.message.Message | bytes | _Delegation]:
        """Ask ``dp``'s servers until one gives an answer or a referral; with ``fast``
        (a lookup of the wire path), as bytes: an answer to the full question the wire
        path takes is returned as its response bytes, a referral it reads as the new
        delegation (stored), any other is read and judged as here."""
        query: dns.message.Message | _WireQuery
        if fast is not None:
            full = sname is fast.name
            skip = len(fast.name) - len(sname)
            pos = 0
            for _ in range(skip):
                pos += fast.qname[pos] + 1
            wire_name = fast.qname[pos:]
            query = _WireQuery(fast, dp.wire(), fast.wire, sname, wire_name, int(stype), full)
            if not full:
                query.wire = _query_wire(query.question(), fast.do)
        else:
            query = dns.message.make_query(sname, dns.rdatatype.RdataType.make(stype),
                                           use_edns=0, payload=EDNS_PAYLOAD,
                                           want_dnssec=work.do)
            query.flags = 0
        tried: set[Address] = set()
        timed_out: set[Address] = set()
        rounds = 1
        looked_up: set[dns.name.Name] = set()
        while True:
            address = self._pick(dp, tried)
            if address is None:
                name = self._unresolved(dp, looked_up, work)
                if name is None:
                    if timed_out and rounds < MAX_ROUNDS:  # lost datagrams: again,
                        rounds += 1                       # each with its RTO doubled
                        tried -= timed_out
                        timed_out.clear()
                        continue
                    raise self._failure(dp, sname, stype, work)
                looked_up.add(name)
                await self._resolve_ns(name, work)
                continue
            tried.add(address)
            timeouts = work.failures["timeout"]
            response = await self._send(query, address, lookup, work)
            if response is None:
                if work.failures["timeout"] > timeouts:
                    timed_out.add(address)
                continue
            if isinstance(response, bytes):
                self.counts["wire_answers"] += 1
                return _Kind.ANSWER, response
            if isinstance(response, _Referral):
                return _Kind.REFERRAL, self._wire_delegation(dp, response)
            kind = self._classify(response, dp.zone, sname, stype, ds=ds)
            if kind is _Kind.LAME:
                self.counts["lame"] += 1
                work.failures["lame"] += 1
                self._lame[(address, dp.wire())] = self.clock() + LAME_TTL
                self._lame.move_to_end((address, dp.wire()))
                while len(self._lame) > self.max_entries:
                    self._lame.popitem(last=False)
                continue
            return kind, response

    def _classify(self, response: dns.message.Message, zone: dns.name.Name,
                  sname: dns.name.Name, stype: int, *, ds: bool) -> str:
        if len(response.question) != 1 or not response.flags & dns.flags.QR:
            return _Kind.LAME
        asked = response.question[0]
        if asked.name != sname or asked.rdtype != stype or asked.rdclass != _IN:
            return _Kind.LAME
        rcode = response.rcode()
        if rcode not in (_NOERROR, _NXDOMAIN):
            return _Kind.LAME
        aa = response.flags & dns.flags.AA
        if rcode == _NOERROR and not any(r.rdclass == _IN and r.rdtype != _RRSIG
                                         for r in response.answer):
            for rrset in response.authority:
                if rrset.rdtype == _NS and rrset.rdclass == _IN and not aa:
                    child = rrset.name
                    if child != zone and child.is_subdomain(zone) \
                            and sname.is_subdomain(child) and not (ds and child == sname):
                        return _Kind.REFERRAL
                    return _Kind.LAME  # upward, sideways, or to the child for its DS
        return _Kind.ANSWER if aa else _Kind.LAME

    def _pick(self, dp: _Delegation, tried: set[Address]) -> Address | None:
        """An address of ``dp`` not yet tried: random among the fastest (RTT_BAND),
        lame ones only when nothing else is left."""
        now = self.clock()
        candidates: list[Address] = []
        if dp.stub:
            candidates = [a for a in dp.fixed if a not in tried and self._ok(a[0])]
        else:
            for name, glue in dp.servers.items():
                for ip in [*glue, *self._cached_addresses(name, now)]:
                    address = (ip, 53)
                    if address not in tried and address not in candidates and self._ok(ip):
                        candidates.append(address)
        if not candidates:
            return None
        zone = dp.wire()
        healthy = [a for a in candidates if self._lame.get((a, zone), 0.0) <= now]
        pool = healthy or candidates
        rtos = [self._host(a).rto for a in pool]
        best = min(rtos)
        band = [a for a, rto in zip(pool, rtos, strict=True) if rto <= best + RTT_BAND]
        return self._random.choice(band)

    def _unresolved(self, dp: _Delegation, looked_up: set[dns.name.Name], work: _Work,
                    ) -> dns.name.Name | None:
        """An NS name of ``dp`` whose addresses are still to be looked up."""
        if dp.stub or work.depth >= MAX_DEPTH:
            return None
        now = self.clock()
        for name, glue in dp.servers.items():
            if name in looked_up or (name, _A) in work.resolving or glue:
                continue
            if name in self._addresses and self._addresses[name][1] > now:
                continue
            return name
        return None

    def _cached_addresses(self, name: dns.name.Name, now: float) -> list[str]:
        entry = self._addresses.get(name)
        if entry is None or entry[1] <= now:
            return []
        return entry[0]

    async def _resolve_ns(self, name: dns.name.Name, work: _Work) -> None:
        """Look up the addresses of NS ``name`` (A, then AAAA if no usable A) and cache
        them; failures are remembered as an empty entry for PRIME_RETRY seconds."""
        if work.subresolutions >= MAX_SUBRESOLUTIONS:
            return
        work.subresolutions += 1
        self.counts["subresolutions"] += 1
        work.depth += 1
        work.resolving.add((name, _A))
        found: list[str] = []
        ttl = MAX_TTL
        try:
            for rdtype in (_A, _AAAA):
                if (rdtype == _A and not self.ip4) or (rdtype == _AAAA and not self.ip6):
                    continue
                try:
                    chained = await self._chain(name, rdtype, work)
                except ResolveFailure:
                    continue
                answer = [] if isinstance(chained, bytes) else chained[1]
                for rrset in answer:
                    if rrset.rdtype == rdtype and rrset.rdclass == _IN:
                        found.extend(r.address for r in rrset)
                        ttl = min(ttl, float(rrset.ttl))
                if any(self._ok(ip) for ip in found):
                    break
        finally:
            work.depth -= 1
            work.resolving.discard((name, _A))
        self._addresses[name] = (found, self.clock() + (ttl if found else PRIME_RETRY))
        self._addresses.move_to_end(name)
        while len(self._addresses) > self.max_entries:
            self._addresses.popitem(last=False)

    def _ok(self, ip: str) -> bool:
        usable = self._usable.get(ip)
        if usable is None:
            try:
                parsed = ipaddress.ip_address(ip)
            except ValueError:
                usable = False
            else:
                usable = not (parsed.is_link_local or parsed.is_unspecified
                              or parsed.is_multicast)
                usable = usable and (self.ip4 if parsed.version == 4 else self.ip6)
                if self.do_not_query_localhost and parsed.is_loopback:
                    usable = False
            if len(self._usable) >= self.max_entries:
                self._usable.clear()
            self._usable[ip] = usable
        return usable

    def _host(self, address: Address) -> _Host:
        host = self._hosts.get(address)
        if host is None:
            host = self._hosts[address] = _Host()
            while len(self._hosts) > self.max_entries:
                self._hosts.popitem(last=False)
        return host

    # ------------------------------------------------------------------ one send

    async def _send(self, query: dns.message.Message | _WireQuery, address: Address,
                    lookup: _Lookup, work: _Work,
                    ) -> dns.message.Message | bytes | _Referral | None:
        """One exchange (and its TCP or no-EDNS retry); None when it failed; bytes: the
        wire path's response (a :class:`_WireQuery` whose answer it takes)."""
        host = self._host(address)
        response = await self._exchange(query, address, host, lookup, work, tcp=False)
        if not isinstance(response, dns.message.Message):
            return response
        if response.flags & dns.flags.TC:
            self.counts["tcp_fallbacks"] += 1
            response = await self._exchange(query, address, host, lookup, work, tcp=True)
            if not isinstance(response, dns.message.Message):
                return response
        edns = query.edns if isinstance(query, _WireQuery) else query.edns >= 0
        if response.rcode() == dns.rcode.FORMERR and edns:
            self.counts["edns_fallbacks"] += 1
            plain: dns.message.Message | _WireQuery
            if isinstance(query, _WireQuery):
                plain = _WireQuery(query.fast, query.zone,
                                   _query_wire(query.question(), False, edns=False),
                                   query.name, query.sname, query.stype, query.full,
                                   edns=False)
            else:
                plain = dns.message.make_query(query.question[0].name,
                                               query.question[0].rdtype, use_edns=False)
                plain.flags = 0
            response = await self._exchange(plain, address, host, lookup, work, tcp=False)
            if isinstance(response, dns.message.Message) and response.flags & dns.flags.TC:
                self.counts["tcp_fallbacks"] += 1
                response = await self._exchange(plain, address, host, lookup, work, tcp=True)
        return response

    async def _exchange(self, query: dns.message.Message | _WireQuery, address: Address,
                        host: _Host, lookup: _Lookup, work: _Work, *, tcp: bool,
                        ) -> dns.message.Message | bytes | _Referral | None:
        now = self.clock()
        name = query.name if isinstance(query, _WireQuery) else query.question[0].name
        if now >= work.deadline:
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                           f"no answer for {name} in time")
        if lookup.sends >= MAX_SENT_COUNT or work.sends >= MAX_TOTAL_SENDS:
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                           f"sent {work.sends} queries without an answer for {name}")
        lookup.sends += 1
        work.sends += 1
        self.counts["sends"] += 1
        wait = max(host.rto, TCP_TIMEOUT) if tcp else host.rto
        deadline = min(work.deadline, now + wait)
        response: dns.message.Message | bytes | _Referral
        try:
            if isinstance(query, _WireQuery):
                raw: bytes = await self.authority.exchange_wire(  # type: ignore[attr-defined]
                    query.wire, address, tcp=tcp, deadline=deadline)
                fast = query.fast
                taken = wire_verdict(raw, fast.qname, fast.qtype, query.zone,
                                     fast.do) if query.full else None
                referral = None if taken is not None else wire_referral(
                    raw, query.sname, query.stype, query.zone)
                if taken is not None and (fast.check is None or fast.check(taken)):
                    response = taken
                elif referral is not None:
                    response = referral
                else:  # what the message path's transport does with the bytes
                    try:
                        response = dns.message.from_wire(raw)
                    except (dns.exception.DNSException, ValueError) as exc:
                        raise ProtocolError(f"malformed answer from {address[0]}: "
                                            f"{exc}") from None
            else:
                response = await self.authority.exchange(query, address, tcp=tcp,
                                                         deadline=deadline)
        except QueryTimeout:
            self.counts["timeouts"] += 1
            work.failures["timeout"] += 1
            host.timed_out()
            return None
        except NetworkError:
            self.counts["network_errors"] += 1
            work.failures["network"] += 1
            host.timed_out()
            return None
        except ProtocolError:
            self.counts["protocol_errors"] += 1
            work.failures["protocol"] += 1
            return None
        host.measured(max(0.0, self.clock() - now))
        return response

    def _failure(self, dp: _Delegation, sname: dns.name.Name, stype: int,
                 work: _Work) -> ResolveFailure:
        failures = work.failures
        what = f"{sname} {dns.rdatatype.RdataType.make(stype).name} at {dp.zone}"
        if failures and set(failures) == {"network"}:
            return servfail(dns.edns.EDECode.NETWORK_ERROR,
                            f"network errors from every server for {what}")
        detail = ", ".join(f"{n} {k}" for k, n in sorted(failures.items()))
        return servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                        f"no server answered {what}" + (f" ({detail})" if detail else ""))


# ---------------------------------------------------------------------- scrubbing

def _follow(response: dns.message.Message, zone: dns.name.Name, name: dns.name.Name,
            qtype: int) -> tuple[list[dns.rrset.RRset], dns.name.Name, bool]:
    """The answer RRsets of ``response`` on the chain from ``name`` inside ``zone``
    (module docstring, "Answers are scrubbed"): (records, the name the chain reached,
    whether it ended in data of ``qtype``)."""
    answer = response.answer
    records: list[dns.rrset.RRset] = []
    current = name
    for _ in range(MAX_RESTARTS + 1):
        if not current.is_subdomain(zone):
            return records, current, False
        if qtype == _ANY:
            found = [r for r in answer if r.name == current and r.rdclass == _IN
                     and r.rdtype != _RRSIG]
        else:
            found = _rrsets(answer, current, qtype)[:1]
        if found:
            for rrset in found:
                records.append(rrset)
                records.extend(_sigs(answer, current, rrset.rdtype))
            return records, current, True
        dname = _dname_above(answer, current, zone)
        if dname is not None:
            try:
                target = current.relativize(dname.name).concatenate(dname[0].target)
            except dns.name.NameTooLong:
                return records, current, False
            records.append(dname)
            records.extend(_sigs(answer, dname.name, _DNAME))
            sent = _rrsets(answer, current, _CNAME)
            if sent and len(sent[0]) == 1 and sent[0][0].target == target:
                records.append(sent[0])
                records.extend(_sigs(answer, current, _CNAME))
            else:
                records.append(dns.rrset.from_text(current, dname.ttl, _IN, _CNAME,
                                                   target.to_text()))
            if qtype == _CNAME:
                return records, current, True
            current = target
            continue
        if qtype == _CNAME:
            return records, current, False
        cname = _rrsets(answer, current, _CNAME)
        if not cname or len(cname[0]) != 1:
            return records, current, False
        records.append(cname[0])
        records.extend(_sigs(answer, current, _CNAME))
        current = cname[0][0].target
    return records, current, False


def _dname_above(answer: list[dns.rrset.RRset], name: dns.name.Name, zone: dns.name.Name,
                 ) -> dns.rrset.RRset | None:
    best = None
    for rrset in answer:
        if rrset.rdtype == _DNAME and rrset.rdclass == _IN and len(rrset) == 1 \
                and name.is_subdomain(rrset.name) and name != rrset.name \
                and rrset.name.is_subdomain(zone) \
                and (best is None or len(rrset.name) > len(best.name)):
            best = rrset
    return best


def _proofs(response: dns.message.Message, zone: dns.name.Name) -> list[dns.rrset.RRset]:
    """The zone's NSEC/NSEC3 RRsets of the authority section and their RRSIGs."""
    return [r for r in response.authority if r.rdclass == _IN and r.name.is_subdomain(zone)
            and (r.rdtype in _PROOFS or (r.rdtype == _RRSIG and r.covers in _PROOFS))]


# ---------------------------------------------------------------------- the wire path

_AA = 0x04
_TC = 0x02
#: RDATA without domain names that the wire path relays: its least size (TXT and SPF:
#: their strings are checked; DS and CDS: their digest length; the rest as dnspython
#: reads them: fixed fields, then any bytes).
_NAME_FREE: dict[int, int] = {1: 4, 28: 16, 16: 1, 99: 1, 10: 0, 43: 4, 59: 4, 48: 4,
                              60: 4}
_DIGEST_SIZES = {1: 20, 2: 32, 3: 32, 4: 48}
#: RDATA with domain names (which dnspython decompresses) that the wire path relays:
#: the offsets of the names (-1: right after the previous one) and the size of what
#: follows the last (-1: any; NSEC: its type bitmap, checked).
_NAMED: dict[int, tuple[tuple[int, ...], int]] = {
    2: ((0,), 0), 3: ((0,), 0), 4: ((0,), 0), 5: ((0,), 0), 7: ((0,), 0), 8: ((0,), 0),
    9: ((0,), 0), 12: ((0,), 0), 39: ((0,), 0), 6: ((0, -1), 20), 14: ((0, -1), 0),
    17: ((0, -1), 0), 15: ((2,), 0), 18: ((2,), 0), 21: ((2,), 0), 36: ((2,), 0),
    33: ((6,), 0), 46: ((18,), -1), 47: ((0,), -1),
}
#: QTYPEs the wire path does not answer itself: DS (the parent's), RRSIG and SIG
#: (dnspython splits them by covered type), meta types and ANY.
_NOT_FAST = frozenset({_DS, 24, _RRSIG, 41, 249, 250, 251, 252, 253, 254, _ANY})


def _read_name(wire: bytes, pos: int, end: int) -> tuple[bytes, int] | None:
    """The name at ``pos`` (compression followed, pointers strictly backwards, as
    dnspython requires, and not into the header) in lower case wire form, and the
    position after it; None when it cannot be read."""
    labels: list[bytes] = []
    size = 0
    after = -1
    limit = pos
    for _ in range(128):
        if pos >= end:
            return None
        length = wire[pos]
        if length == 0:
            labels.append(b"\x00")
            return b"".join(labels).lower(), (pos + 1 if after < 0 else after)
        if length & 0xC0 == 0xC0:
            if pos + 1 >= end:
                return None
            target = ((length & 0x3F) << 8) | wire[pos + 1]
            if target >= limit or target < 12:  # not into the header: we rewrite it
                return None
            if after < 0:
                after = pos + 2
            pos = limit = target
            continue
        if length & 0xC0:
            return None
        size += length + 1
        if size > 254 or pos + 1 + length > end:
            return None
        labels.append(wire[pos:pos + 1 + length])
        pos += 1 + length
    return None


def _in_zone(name: bytes, zone: bytes) -> bool:
    """``name`` (lower-case wire form) is ``zone`` or below it, by whole labels."""
    cut = len(name) - len(zone)
    if cut < 0 or not name.endswith(zone):
        return False
    pos = 0
    while pos < cut:
        pos += name[pos] + 1
    return pos == cut


def _rdata_ok(wire: bytes, rrtype: int, start: int, stop: int) -> bool:
    """The RDATA reads as dnspython reads it (else the message path, which would fail
    that server, decides), and every name in it with backward pointers only."""
    size = stop - start
    least = _NAME_FREE.get(rrtype)
    if least is not None:
        if rrtype in (_A, _AAAA):
            return size == least
        if size < least:
            return False
        if rrtype in (16, 99):  # character-strings, to the last byte
            pos = start
            while pos < stop:
                pos += wire[pos] + 1
            return pos == stop
        if rrtype in (_DS, 59):  # digest type 0 is reserved; known types' sizes
            digest = wire[start + 3]
            return digest != 0 and _DIGEST_SIZES.get(digest, size - 4) == size - 4
        return True
    named = _NAMED.get(rrtype)
    if named is None:
        return False
    offsets, tail = named
    pos = start
    for offset in offsets:
        if offset >= 0:
            pos = start + offset
        if pos >= stop:
            return False
        read = _read_name(wire, pos, stop)
        if read is None:
            return False
        pos = read[1]
    if tail >= 0:
        return stop - pos == tail
    if rrtype == 47:  # NSEC's type bitmap: windows in order, 1..32 bytes each
        window = -1
        while pos < stop:
            if pos + 2 > stop or wire[pos] <= window or not 0 < wire[pos + 1] <= 32:
                return False
            window = wire[pos]
            pos += 2 + wire[pos + 1]
            if pos > stop or not wire[pos - 1]:  # the last octet is never zero
                return False
        return pos == stop
    return True


def _opt_ok(wire: bytes, start: int, stop: int) -> bool:
    """An OPT record's options as the cache and dnspython read them alike: NSID,
    cookie and padding only (others take the message path)."""
    pos = start
    while pos < stop:
        if pos + 4 > stop:
            return False
        code = (wire[pos] << 8) | wire[pos + 1]
        if code not in (3, 10, 12):
            return False
        pos += 4 + ((wire[pos + 2] << 8) | wire[pos + 3])
    return pos == stop


def _records(wire: bytes, pos: int, count: int, qname: bytes, *, additional: bool = False,
             ) -> list[tuple[bytes, int, int, int, int, int, int]] | None:
    """``count`` records from ``pos``: (owner, type, class, TTL, RDATA start, RDATA
    end, covered type of an RRSIG or 0); None when one cannot be read or relayed. In
    the ``additional`` section one OPT record may end them (root owner, no extended
    RCODE); it is not listed. ``qname``: the question's name (lower case), which an
    owner that is a pointer to the question is."""
    end = len(wire)
    out = []
    for index in range(count):
        if pos + 1 < end and wire[pos] == 0xC0 and wire[pos + 1] == 12:
            owner = qname
            pos += 2
        else:
            read = _read_name(wire, pos, end)
            if read is None:
                return None
            owner, pos = read
        if pos + 10 > end:
            return None
        rrtype = (wire[pos] << 8) | wire[pos + 1]
        rrclass = (wire[pos + 2] << 8) | wire[pos + 3]
        ttl = int.from_bytes(wire[pos + 4:pos + 8], "big")
        if ttl > 0x7FFFFFFF:  # RFC 2181 §8: 0, as dnspython (and the cache) read it
            ttl = 0
        start = pos + 10
        stop = start + ((wire[pos + 8] << 8) | wire[pos + 9])
        if stop > end:
            return None
        if rrtype == 41:
            if not additional or index != count - 1 or owner != b"\x00" or wire[pos + 4] \
                    or not _opt_ok(wire, start, stop):
                return None
            pos = stop
            continue
        if not _rdata_ok(wire, rrtype, start, stop):
            return None
        covers = 0
        if rrtype == _RRSIG:
            covers = (wire[start] << 8) | wire[start + 1]
        out.append((owner, rrtype, rrclass, ttl, start, stop, covers))
        pos = stop
    return out if pos == end or not additional else None


def _grouped(records: list[tuple[bytes, int, int, int, int, int, int]], wire: bytes,
             ) -> bool:
    """The records form RRsets as dnspython reads them: the records of one RRset
    (owner, type, covered type) next to each other, one TTL, no RDATA twice."""
    if len(records) < 2:
        return True
    seen: set[tuple[bytes, int, int]] = set()
    previous: tuple[bytes, int, int] | None = None
    ttl = 0
    rdatas: set[bytes] = set()
    for owner, rrtype, _, rrttl, start, stop, covers in records:
        group = (owner, rrtype, covers)
        rdata = wire[start:stop]
        if group == previous:
            if rrttl != ttl or rdata in rdatas:
                return False
        else:
            if group in seen:
                return False
            seen.add(group)
            previous, ttl = group, rrttl
            rdatas = set()
        rdatas.add(rdata)
    return True


def wire_verdict(wire: bytes, qname: bytes, qtype: int, zone: bytes, do: bool,
                 ) -> bytes | None:
    """The response the wire path returns for the authoritative answer ``wire`` to
    (``qname`` in lower-case wire form, ``qtype``) from a server of ``zone``, when it
    is what the message path would make of it without reading more (module docstring,
    "The wire path"); None: let the message path read it.

    * AA, NOERROR, every answer record the question's name and type (with ``do``,
      RRSIGs covering them after them), no DNSSEC proof in the authority section with
      ``do``: the header, question and answer section;
    * AA, NXDOMAIN or NOERROR without answer records, the authority section starting
      with the SOA of ``zone`` (with ``do``: then its RRSIGs, then the zone's NSEC/NSEC3
      records and their RRSIGs), nothing after those that the message path keeps: the
      header, question and those records.

    The records kept are a prefix of the message and their compression pointers point
    backwards (checked), so the slice reads as the whole did."""
    end = len(wire)
    qend = 12 + len(qname) + 4
    if end < qend or wire[2] & 0xFE != 0x80 | _AA or wire[4:6] != b"\x00\x01":
        return None  # not AA, TC, another opcode: the message path
    rcode = wire[3] & 0xF
    if rcode not in (_NOERROR, _NXDOMAIN) or wire[12:qend - 4].lower() != qname \
            or (wire[qend - 4] << 8) | wire[qend - 3] != qtype \
            or wire[qend - 2:qend] != b"\x00\x01":
        return None
    ancount = (wire[6] << 8) | wire[7]
    nscount = (wire[8] << 8) | wire[9]
    answer = _records(wire, qend, ancount, qname)
    if answer is None:
        return None
    cut = answer[-1][5] if answer else qend
    authority = _records(wire, cut, nscount, qname)
    if authority is None or _records(wire, authority[-1][5] if authority else cut,
                                     (wire[10] << 8) | wire[11], qname,
                                     additional=True) is None:
        return None  # what dnspython would not read (or an extended RCODE)
    kept = 0
    if ancount:
        if rcode != _NOERROR or answer[0][1] != qtype:
            return None
        sigs = False
        for owner, rrtype, rrclass, _, _, _, covers in answer:
            if owner != qname or rrclass != 1:
                return None
            if rrtype == _RRSIG and do and covers == qtype:
                sigs = True
            elif rrtype != qtype or sigs:
                return None
        if not _grouped(answer, wire):
            return None
        if do and any(r[1] in _PROOFS or r[1] == _RRSIG for r in authority):
            return None
    else:
        if not authority:
            return None
        owner, rrtype, rrclass, _, _, stop, _ = authority[0]
        if rrtype != _SOA or rrclass != 1 or owner != zone:
            return None
        phase = 0  # 0: the SOA's RRSIGs, 1: proofs, 2: records the message path drops
        kept = 1
        cut = stop
        for owner, rrtype, rrclass, _, _, stop, covers in authority[1:]:
            if rrtype == _SOA:
                return None  # a second SOA: the message path decides
            if not do or rrclass != 1:
                phase = 2
                continue
            if rrtype == _RRSIG and covers == _SOA and owner == zone:
                if phase > 0:
                    return None
            elif (rrtype in _PROOFS or (rrtype == _RRSIG and covers in _PROOFS)) \
                    and _in_zone(owner, zone):
                if phase > 1:
                    return None
                phase = 1
            else:
                phase = 2
                continue
            kept += 1
            cut = stop
        if not _grouped(authority[:kept], wire):
            return None
    out = bytearray(wire[:cut])
    out[2] = 0x80  # QR; AA, TC, RD clear (the cache renders the client's RD)
    out[3] = 0x80 | rcode  # RA; Z, AD, CD clear
    out[8:12] = kept.to_bytes(2, "big") + b"\x00\x00"
    return bytes(out)


def _name_of(wire: bytes) -> dns.name.Name:
    """The Name of an uncompressed, checked wire-form name."""
    labels = []
    pos = 0
    while wire[pos]:
        labels.append(wire[pos + 1:pos + 1 + wire[pos]])
        pos += 1 + wire[pos]
    labels.append(b"")
    return dns.name.Name(labels)


def wire_referral(wire: bytes, sname: bytes, stype: int, zone: bytes) -> _Referral | None:
    """The referral in the answer ``wire`` to (``sname``, ``stype``) from a server of
    ``zone`` when the message path would take it as one and read it alike
    (:meth:`Iterator._classify`, :meth:`Iterator._referral`): NOERROR without AA, no
    answer records, the authority section starting with the NS RRset of a zone below
    ``zone`` at or above ``sname``; the NS names, and the addresses of A/AAAA records of
    the additional section for those names inside ``zone`` (glue in bailiwick; every
    other record is ignored, as there); the TTL the smallest of the NS RRset's and the
    glue's (at most :data:`MAX_TTL`). None: let the message path read it."""
    end = len(wire)
    qend = 12 + len(sname) + 4
    if end < qend or wire[2] & 0xFE != 0x80 or wire[3] & 0xF != _NOERROR \
            or wire[4:6] != b"\x00\x01" or wire[6:8] != b"\x00\x00":
        return None  # AA, TC, another opcode or RCODE, answer records
    if wire[12:qend - 4].lower() != sname or (wire[qend - 4] << 8) | wire[qend - 3] != stype \
            or wire[qend - 2:qend] != b"\x00\x01":
        return None
    authority = _records(wire, qend, (wire[8] << 8) | wire[9], sname)
    if not authority:
        return None
    additional = _records(wire, authority[-1][5], (wire[10] << 8) | wire[11], sname,
                          additional=True)
    if additional is None or any(r[2] != 1 for r in authority):
        return None
    child = authority[0][0]
    if authority[0][1] != _NS or child == zone or not _in_zone(child, zone) \
            or not _in_zone(sname, child):
        return None
    servers: dict[bytes, list[str]] = {}
    ttl = MAX_TTL
    for owner, rrtype, _, rrttl, start, stop, _ in authority:
        if rrtype == _NS and owner == child:
            read = _read_name(wire, start, stop)
            if read is None:
                return None
            servers.setdefault(read[0], [])
            ttl = min(ttl, float(rrttl))
    # the glue as dnspython groups it: one RRset per owner and type, in the order of
    # their first records, each address once, the RRset's TTL the smallest
    groups: dict[tuple[bytes, int], tuple[list[str], list[int]]] = {}
    for owner, rrtype, rrclass, rrttl, start, stop, _ in additional:
        if rrtype in (_A, _AAAA) and rrclass == 1:
            found = groups.setdefault((owner, rrtype), ([], []))
            text = (dns.ipv4.inet_ntoa(wire[start:stop]) if rrtype == _A
                    else dns.ipv6.inet_ntoa(wire[start:stop]))
            if text not in found[0]:
                found[0].append(text)
            found[1].append(rrttl)
    for (owner, _), (addresses, ttls) in groups.items():
        if owner in servers and _in_zone(owner, zone):
            servers[owner].extend(addresses)
            ttl = min(ttl, float(min(ttls)))
    return _Referral(child, servers, ttl)
