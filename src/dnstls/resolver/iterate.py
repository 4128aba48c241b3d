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
        self._lame: OrderedDict[tuple[Address, dns.name.Name], float] = OrderedDict()
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
        restarts, primings, priming_failures, subresolutions) and cache sizes."""
        names = ("resolutions", "failures", "sends", "timeouts", "network_errors",
                 "protocol_errors", "tcp_fallbacks", "edns_fallbacks", "lame", "referrals",
                 "minimised", "restarts", "primings", "priming_failures", "subresolutions")
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

    # ------------------------------------------------------------------ chains

    async def _chain(self, qname: dns.name.Name, qtype: int, work: _Work,
                     ) -> tuple[int, list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        """The rcode, answer chain and authority section for (qname, qtype)."""
        answer: list[dns.rrset.RRset] = []
        authority: list[dns.rrset.RRset] = []
        name = qname
        for restart in range(MAX_RESTARTS + 1):
            if restart:
                self.counts["restarts"] += 1
            response, zone = await self._lookup(name, qtype, work)
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
                      ) -> tuple[dns.message.Message, dns.name.Name]:
        """The authoritative response for (qname, qtype) and the zone that gave it."""
        ds = qtype == _DS and qname != _ROOT
        dp = await self._start(qname.parent() if ds else qname, work)
        lookup = _Lookup()
        minimise = self.qname_minimisation
        minimised = 0
        exists = dp.zone  # the deepest name known to exist on the way to qname
        while True:
            known = exists if exists.is_subdomain(dp.zone) else dp.zone
            if minimise and minimised < MAX_MINIMISE_COUNT and len(qname) > len(known) + 1:
                sname = qname.split(len(known) + 1)[1]
                stype = dns.rdatatype.RdataType.A
                minimised += 1
                self.counts["minimised"] += 1
            else:
                sname, stype = qname, dns.rdatatype.RdataType.make(qtype)
            kind, response = await self._ask(dp, sname, stype, lookup, work,
                                             ds=ds and sname == qname)
            if kind is _Kind.REFERRAL:
                dp = self._referral(dp, response, sname)
                continue
            if sname == qname and stype == qtype:
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
            kind, response = await self._ask(hints, _ROOT, _NS, _Lookup(), work, ds=False)
        except ResolveFailure:
            kind, response = _Kind.LAME, None
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
        while len(self._delegations) > self.max_entries:
            self._delegations.popitem(last=False)

    # ------------------------------------------------------------------ one question

    async def _ask(self, dp: _Delegation, sname: dns.name.Name, stype: int, lookup: _Lookup,
                   work: _Work, *, ds: bool) -> tuple[str, dns.message.Message]:
        """Ask ``dp``'s servers until one gives an answer or a referral."""
        query = dns.message.make_query(sname, dns.rdatatype.RdataType.make(stype), use_edns=0,
                                       payload=EDNS_PAYLOAD, want_dnssec=work.do)
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
            kind = self._classify(response, dp.zone, query, ds=ds)
            if kind is _Kind.LAME:
                self.counts["lame"] += 1
                work.failures["lame"] += 1
                self._lame[(address, dp.zone)] = self.clock() + LAME_TTL
                self._lame.move_to_end((address, dp.zone))
                while len(self._lame) > self.max_entries:
                    self._lame.popitem(last=False)
                continue
            return kind, response

    def _classify(self, response: dns.message.Message, zone: dns.name.Name,
                  query: dns.message.Message, *, ds: bool) -> str:
        if len(response.question) != 1 or response.question[0] != query.question[0] \
                or not response.flags & dns.flags.QR:
            return _Kind.LAME
        rcode = response.rcode()
        sname = query.question[0].name
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
        healthy = [a for a in candidates if self._lame.get((a, dp.zone), 0.0) <= now]
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
                    _, answer, _ = await self._chain(name, rdtype, work)
                except ResolveFailure:
                    continue
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

    async def _send(self, query: dns.message.Message, address: Address, lookup: _Lookup,
                    work: _Work) -> dns.message.Message | None:
        """One exchange (and its TCP or no-EDNS retry); None when it failed."""
        host = self._host(address)
        response = await self._exchange(query, address, host, lookup, work, tcp=False)
        if response is None:
            return None
        if response.flags & dns.flags.TC:
            self.counts["tcp_fallbacks"] += 1
            response = await self._exchange(query, address, host, lookup, work, tcp=True)
            if response is None:
                return None
        if response.rcode() == dns.rcode.FORMERR and query.edns >= 0:
            self.counts["edns_fallbacks"] += 1
            plain = dns.message.make_query(query.question[0].name, query.question[0].rdtype,
                                           use_edns=False)
            plain.flags = 0
            response = await self._exchange(plain, address, host, lookup, work, tcp=False)
            if response is not None and response.flags & dns.flags.TC:
                self.counts["tcp_fallbacks"] += 1
                response = await self._exchange(plain, address, host, lookup, work, tcp=True)
        return response

    async def _exchange(self, query: dns.message.Message, address: Address, host: _Host,
                        lookup: _Lookup, work: _Work, *, tcp: bool,
                        ) -> dns.message.Message | None:
        now = self.clock()
        if now >= work.deadline:
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                           f"no answer for {query.question[0].name} in time")
        if lookup.sends >= MAX_SENT_COUNT or work.sends >= MAX_TOTAL_SENDS:
            raise servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                           f"sent {work.sends} queries without an answer for "
                           f"{query.question[0].name}")
        lookup.sends += 1
        work.sends += 1
        self.counts["sends"] += 1
        wait = max(host.rto, TCP_TIMEOUT) if tcp else host.rto
        deadline = min(work.deadline, now + wait)
        try:
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
