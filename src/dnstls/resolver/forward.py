"""The forwarder stage: send the client's question to upstream resolvers.

**What is sent.** A fresh query (RFC 5452 / RFC 8932 minimisation of what we pass on):
the client's question, its RD, CD and AD bits, its DO bit and EDNS payload size (kept
within 512..4096), and nothing else -- never the client's padding, cookies or keepalive.
The transport adds its own ID, padding and keepalive (:mod:`dnstls.proto.upstream`).

**Which upstream.** ``strategy`` orders the healthy upstreams for each query:
``round_robin`` rotates the starting point, ``fastest`` sorts by smoothed RTT (7/8
weighting as in RFC 6298 / BIND's SRTT; unmeasured upstreams first, so each is probed),
``ordered`` keeps the configured order (failover). An upstream that fails (timeout,
network, TLS authentication or protocol error) is backed off: 1 s, doubling on each
consecutive failure, capped at 60 s, reset by a success. Backed-off upstreams come
after the healthy ones, earliest retry first, so they are used only as a last resort
until their back-off expires.

**Down upstreams.** After :data:`DOWN_AFTER` failed attempts in a row with no answer
in between, each begun after the previous one had failed, an upstream is *down*.
(Attempts under way together are one piece of evidence: three queries for a domain
whose servers are dead, asked at once of a recursive upstream that is slower to give up
than our deadline, time out together and must not take the upstream down; a
blackholed upstream under load is found after three deadlines in turn.) While it is
down, one query a second goes to it as the probe (it
waits for its answer or its own timeout); every other query skips it, and a query with
no other upstream left gets SERVFAIL at once instead of waiting for a timeout of its
own. A blackholed lone upstream otherwise made every query wait the whole deadline,
for as long as it stayed dead. The first answer ends it. Measured against a blackholed
forwarder: Unbound 1.17 left queries unanswered for ~30 s, then marked it down and
answered SERVFAIL at once (for up to its infra-host-ttl, 15 min); Stubby 0.3 answered
every query SERVFAIL after ~5 s for as long as we watched (40 s). Here the probe a
second bounds the recovery to about a second. The log says when an upstream starts failing (one
warning), when it is down (one warning) and when it answers again (INFO), not every
failed query: a dead upstream under load must not turn into a line per query.

**One deadline.** The request's deadline bounds everything; each attempt gets the
upstream's own timeout (``timeout`` attribute, else 2 s), the last candidate gets what
is left. SERVFAIL, timeouts, errors, a malformed answer (:class:`MalformedAnswer`: our
ID and question, a body that cannot be read; a failure of that upstream, as Unbound's
"parse error on reply packet") and an answer that declines the query (any RCODE but
NOERROR, NXDOMAIN and SERVFAIL: REFUSED, NOTIMP, FORMERR, ...) move the query to the
next candidate.

**What the client gets.** A new message for *its* query (its ID, question, RD, CD),
with the upstream's answer, authority and additional sections and RCODE; RA set, AA
and TC cleared; AD kept only if the client asked for it (DO or AD, RFC 6840 §5.7/5.8);
DO echoed; of the upstream's EDNS options only Extended DNS Errors are kept -- its
padding and keepalive never leak (the listener adds its own). A response that does not
answer the question is never relayed (the transports check it; :func:`check_response`
is the last guard). If nothing usable arrives: the last upstream SERVFAIL is relayed
with its EDE; otherwise :class:`ResolveFailure` SERVFAIL with EDE 23 *Network Error*
naming the TLS reason (authentication failures) or the connection errors (EDE 24
*Invalid Data* when one of them was a malformed answer), else EDE 22
*No Reachable Authority* (timeouts, and upstreams that declined: "refused by NAME",
"NOTIMP from NAME"; their own EDEs are not relayed). The wire path
(:meth:`Forwarder.resolve_wire`, :meth:`Forwarder.start_wire`) decides the same way, and
relays the same options (:mod:`dnstls.resolver.cache`): both are compared answer by
answer in tests/integration/test_upstream_errors.py. As Unbound and Knot Resolver,
which answer SERVFAIL when their forwarder answers NOTIMP or FORMERR and relay none of
its EDNS options.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import dns.edns
import dns.flags
import dns.message
import dns.rcode

from dnstls.errors import (
    DnsTlsError,
    MalformedAnswer,
    NetworkError,
    PinMismatch,
    ProtocolError,
    QueryTimeout,
    TLSAuthenticationError,
)
from dnstls.proto import edns
from dnstls.proto.answers import EDNS_PAYLOAD, make_response
from dnstls.proto.upstream import check_response, question_key
from dnstls.resolver.base import Request, ResolveFailure, Upstream, servfail

log = logging.getLogger("dnstls.resolver.forward")

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
#: Failed attempts in a row (no answer in between), each begun after the previous one
#: failed, after which an upstream is down. Three: one lost datagram or one reset
#: connection must not make every query fail.
DOWN_AFTER = 3
#: While down, one query this often goes to the upstream as the probe.
PROBE_INTERVAL = 1.0
DEFAULT_ATTEMPT_TIMEOUT = 2.0
SRTT_WEIGHT = 0.875
_FORWARDED_FLAGS = dns.flags.RD | dns.flags.CD | dns.flags.AD
_RCODE_TEXT = [dns.rcode.to_text(dns.rcode.Rcode.make(i)) for i in range(16)]
_REFUSED = int(dns.rcode.REFUSED)
_SERVFAIL = int(dns.rcode.SERVFAIL)
#: RCODEs of an answer that declines the query (REFUSED, NOTIMP, FORMERR, ...): the
#: next upstream is asked. NOERROR and NXDOMAIN are answers, SERVFAIL is kept apart.
_DECLINED = frozenset(range(16)) - {int(dns.rcode.NOERROR), int(dns.rcode.NXDOMAIN),
                                    _SERVFAIL}
T = TypeVar("T")


class Strategy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    FASTEST = "fastest"
    ORDERED = "ordered"


class ForwarderMetrics(Protocol):
    """Optional sink: one call per attempt; ``outcome`` is an RCODE name or error kind."""

    def observe(self, upstream: str, outcome: str, seconds: float) -> None: ...


@dataclass(slots=True)
class UpstreamHealth:
    failures: int = 0
    retry_at: float = 0.0
    srtt: float | None = None
    queries: int = 0
    responses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency_sum: float = 0.0
    latency_count: int = 0
    probe_at: float = 0.0  # while down: when the next probe may go
    #: failures in a row that each began after the one before had failed (DOWN_AFTER)
    streak: int = 0
    streak_at: float = 0.0  # when the last of them failed
    held: int = 0  # queries that skipped it because it was down
    #: the last failed attempt's error; when it only restated an earlier one (a connect
    #: hold's "... (not retried for 0.9 s)" is raised ``from`` the connect error), that one
    error: Exception | None = None

    def backed_off(self, now: float) -> bool:
        return self.failures > 0 and now < self.retry_at

    def down(self) -> bool:
        return self.streak >= DOWN_AFTER

    def held_for(self, now: float) -> float | None:
        """For a query about to try this upstream: None when it may (when the upstream
        is down it goes as the probe, and the next probe is due a second later), else
        the seconds until the next probe."""
        if self.streak < DOWN_AFTER:
            return None
        wait = self.probe_at - now
        if wait > 0:
            self.held += 1
            return wait
        self.probe_at = now + PROBE_INTERVAL
        return None

    def succeeded(self, rtt: float) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.probe_at = 0.0
        self.streak = 0
        self.streak_at = 0.0
        self.error = None
        self.srtt = rtt if self.srtt is None else SRTT_WEIGHT * self.srtt + (1 - SRTT_WEIGHT) * rtt
        self.latency_sum += rtt
        self.latency_count += 1

    def failed(self, now: float, elapsed: float, error: Exception, *, initial: float,
               cap: float) -> float:
        self.failures += 1
        cause = error.__cause__
        self.error = cause if isinstance(cause, DnsTlsError) else error
        if now - elapsed >= self.streak_at:  # begun after the last counted failure
            self.streak += 1
            self.streak_at = now
        if self.streak >= DOWN_AFTER:  # (still) down: the next probe a second from now
            self.probe_at = max(self.probe_at, now + PROBE_INTERVAL)
        delay = min(cap, initial * (1 << min(self.failures - 1, 30)))
        self.retry_at = now + delay
        sample = max(elapsed, self.srtt or 0.0)
        self.srtt = sample if self.srtt is None else (
            SRTT_WEIGHT * self.srtt + (1 - SRTT_WEIGHT) * sample)
        return delay


def upstream_query(client: dns.message.Message) -> dns.message.Message:
    """The query sent upstream for ``client`` (see the module docstring)."""
    query = dns.message.Message(id=0)
    query.flags = client.flags & _FORWARDED_FLAGS
    query.question = list(client.question)
    payload = client.payload if client.edns >= 0 else EDNS_PAYLOAD
    ednsflags = client.ednsflags & dns.flags.DO if client.edns >= 0 else 0
    query.use_edns(0, ednsflags, max(512, min(4096, payload)), options=[])
    return query


def client_response(client: dns.message.Message, upstream: dns.message.Message,
                    ) -> dns.message.Message:
    """A new response to ``client`` carrying ``upstream``'s answer (module docstring)."""
    response = make_response(client)
    response.answer = list(upstream.answer)
    response.authority = list(upstream.authority)
    response.additional = list(upstream.additional)
    wants_ad = client.flags & dns.flags.AD or (client.edns >= 0
                                               and client.ednsflags & dns.flags.DO)
    if upstream.flags & dns.flags.AD and wants_ad:
        response.flags |= dns.flags.AD
    if client.edns >= 0:
        options = [o for o in upstream.options if o.otype == edns.EDE]
        response.use_edns(0, client.ednsflags & dns.flags.DO, EDNS_PAYLOAD, options=options)
    response.set_rcode(upstream.rcode())
    return response


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, QueryTimeout):
        return "timeout"
    if isinstance(exc, TLSAuthenticationError):
        return "tls"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "network"


def _reason(upstream: Upstream, exc: Exception) -> str:
    """``exc``'s text without the upstream's name where the transports put it
    (``NAME: ...``, ``... for NAME``): the EDE text names it once, not twice."""
    name = upstream.name
    text = str(exc).removeprefix(f"{name}: ")
    return text[:-len(name) - 5] if text.endswith(f" for {name}") else text


def _naming(upstream: Upstream, exc: Exception) -> str:
    """``NAME: reason``, or the reason alone when it names the upstream already."""
    text = _reason(upstream, exc)
    return text if upstream.name in text else f"{upstream.name}: {text}"


class Forwarder:
    """A resolver stage that forwards to upstreams; see the module docstring."""

    def __init__(self, upstreams: Sequence[Upstream], *, strategy: str | Strategy = "round_robin",
                 clock: Callable[[], float], metrics: ForwarderMetrics | None = None,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 ) -> None:
        if not upstreams:
            raise ValueError("a forwarder needs at least one upstream")
        self.upstreams = list(upstreams)
        self.strategy = Strategy(strategy)
        self.clock = clock
        self.metrics = metrics
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.health: dict[str, UpstreamHealth] = {u.name: UpstreamHealth() for u in upstreams}
        self._next = 0
        #: Queries of :meth:`start_wire` not yet handed to their callback; when it drops
        #: to 0, ``when_idle()`` runs if set (the stub closes a retired generation then).
        self.in_flight_wire = 0
        self.when_idle: Callable[[], None] | None = None

    def __repr__(self) -> str:
        names = ", ".join(u.name for u in self.upstreams)
        return f"<Forwarder {self.strategy.value} [{names}]>"

    def order(self, now: float) -> list[Upstream]:
        """Upstreams in the order this query will try them."""
        ups = self.upstreams
        health = self.health
        if len(ups) == 1:  # the common forwarder: nothing to rotate or sort (~3 µs saved)
            return list(ups)
        if self.strategy is Strategy.ROUND_ROBIN:
            start = self._next % len(ups)
            self._next += 1
            ups = ups[start:] + ups[:start]
        elif self.strategy is Strategy.FASTEST:
            ups = sorted(ups, key=lambda u: health[u.name].srtt or 0.0)
        healthy: list[Upstream] = []
        resting: list[Upstream] = []
        for u in ups:
            (resting if health[u.name].backed_off(now) else healthy).append(u)
        if resting:
            resting.sort(key=lambda u: health[u.name].retry_at)
            healthy += resting
        return healthy

    async def resolve(self, request: Request) -> dns.message.Message:
        client = request.message
        query = upstream_query(client)
        expected = question_key(client)

        async def attempt(upstream: Upstream, deadline: float) -> dns.message.Message:
            answer = await upstream.exchange(query, deadline=deadline)
            if check_response(answer, expected) is not None:
                raise ProtocolError(f"{upstream.name}: answer does not match the question")
            if answer.rcode() > 15:  # BADVERS, BADCOOKIE, ...: not an answer to our query
                raise ProtocolError(f"{upstream.name}: extended RCODE {int(answer.rcode())}")
            return answer

        answer = await self._run(attempt, lambda a: int(a.rcode()), request.deadline)
        return client_response(client, answer)

    async def resolve_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                           deadline: float, check: Callable[[bytes], bool] | None = None,
                           ) -> bytes:
        """The wire-level path: the chosen upstream's response bytes, header and question
        checked by the transport, the rest by ``check`` (False: the body cannot be read,
        MalformedAnswer, that attempt failed). Same strategy, back-off, failover and
        failures as :meth:`resolve`."""
        payload = min(max(payload or EDNS_PAYLOAD, 512), 4096)

        async def attempt(upstream: Upstream, attempt_deadline: float) -> bytes:
            answer: bytes = await upstream.exchange_wire(  # type: ignore[attr-defined]
                question, deadline=attempt_deadline, flags=flags, payload=payload, do=do)
            if check is not None and answer[3] & 0xF not in _DECLINED and not check(answer):
                raise MalformedAnswer(f"malformed answer from {upstream.name}")
            return answer

        return await self._run(attempt, lambda a: a[3] & 0xF, deadline)

    def start_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                   deadline: float,
                   callback: Callable[[bytes | None, BaseException | None], None],
                   check: Callable[[bytes], bool] | None = None) -> bool:
        """:meth:`resolve_wire` without a coroutine, for the common forwarder: one
        upstream whose transport has ``start_wire`` (UDP; TCP/TLS, which use a task only
        when they must wait for a connection). ``callback(answer, None)`` or
        ``callback(None, failure)`` (ResolveFailure) follows once, from the loop, with
        the same bookkeeping, SERVFAIL/REFUSED handling and failures as :meth:`_run`
        for a single candidate (``check`` as there). False (nothing started): use
        :meth:`resolve_wire`.

        Measured (bench/bench_miss.py, fake upstream): the task and coroutine layers of
        the forwarded query were ~20 of its ~40 µs of Python."""
        if len(self.upstreams) != 1:
            return False
        upstream = self.upstreams[0]
        start_exchange = getattr(upstream, "start_wire", None)
        start = self.clock()
        if start_exchange is None or start >= deadline:
            return False
        health = self.health[upstream.name]
        if health.streak >= DOWN_AFTER:  # inline on the miss path; held_for checks it too
            wait = health.held_for(start)
            if wait is not None:  # down, not this query's turn to probe: SERVFAIL at once
                self.in_flight_wire += 1
                asyncio.get_running_loop().call_soon(
                    self._land_held, callback, self._held_failure([(upstream, wait)]))
                return True
        health.queries += 1

        # bound as defaults, not closed over: no cell per variable (as the handler's)
        def landed(answer: bytes | None, exc: BaseException | None, self: Forwarder = self,
                   upstream: Upstream = upstream, start: float = start,
                   health: UpstreamHealth = health,
                   callback: Callable[[bytes | None, BaseException | None], None] = callback,
                   check: Callable[[bytes], bool] | None = check) -> None:
            self.in_flight_wire -= 1
            if not self.in_flight_wire and self.when_idle is not None:
                self.when_idle()
            if exc is not None or answer is None:
                if isinstance(exc, (QueryTimeout, NetworkError, TLSAuthenticationError,
                                    ProtocolError)):
                    self._failed(upstream, exc, start)
                    callback(None, self._failure([(upstream, exc)], []))
                else:
                    callback(None, exc or RuntimeError("no answer"))
                return
            rcode = answer[3] & 0xF
            if check is not None and rcode not in _DECLINED and not check(answer):
                malformed = MalformedAnswer(f"malformed answer from {upstream.name}")
                self._failed(upstream, malformed, start)
                callback(None, self._failure([(upstream, malformed)], []))
                return
            elapsed = self.clock() - start
            if health.failures:
                self._recovered(upstream, health)
            health.succeeded(elapsed)
            text = _RCODE_TEXT[rcode]
            health.responses[text] += 1
            if self.metrics is not None:  # _observe inline: a call saved per answer
                self.metrics.observe(upstream.name, text, elapsed)
            if rcode in _DECLINED:
                callback(None, self._failure([], [(upstream, rcode)]))
                return
            callback(answer, None)  # SERVFAIL too: the last (only) candidate's answer

        if payload < 512:  # min(max(payload or EDNS_PAYLOAD, 512), 4096), without calls
            payload = EDNS_PAYLOAD if payload == 0 else 512
        elif payload > 4096:
            payload = 4096
        self.in_flight_wire += 1
        try:
            start_exchange(question, deadline=deadline, flags=flags, payload=payload, do=do,
                           callback=landed)
        except (NetworkError, QueryTimeout) as exc:  # no socket: fail as an attempt does
            # (landed, from the loop, as the transport would have called it)
            asyncio.get_running_loop().call_soon(landed, None, exc)
        except BaseException:  # a bug: nothing will land (uncounted), the caller sees it
            self.in_flight_wire -= 1
            raise
        return True

    def _land_held(self, callback: Callable[[bytes | None, BaseException | None], None],
                   failure: ResolveFailure) -> None:
        """A held query's callback, from the loop, counted as :meth:`start_wire`'s are."""
        self.in_flight_wire -= 1
        if not self.in_flight_wire and self.when_idle is not None:
            self.when_idle()
        callback(None, failure)

    async def _run(self, attempt: Callable[[Upstream, float], Awaitable[T]],
                   rcode_of: Callable[[T], int], deadline: float) -> T:
        """Try the candidates in order within ``deadline``; see the module docstring."""
        candidates = self.order(self.clock())
        failures: list[tuple[Upstream, Exception]] = []
        last_servfail: T | None = None
        declined: list[tuple[Upstream, int]] = []
        held: list[tuple[Upstream, float]] = []
        for index, upstream in enumerate(candidates):
            start = self.clock()
            if start >= deadline:
                break
            health = self.health[upstream.name]
            wait = health.held_for(start)
            if wait is not None:  # down, and not this query's turn to probe it
                held.append((upstream, wait))
                continue
            health.queries += 1
            attempt_deadline = deadline
            if index < len(candidates) - 1:
                budget = float(getattr(upstream, "timeout", DEFAULT_ATTEMPT_TIMEOUT))
                attempt_deadline = min(deadline, start + budget)
            try:
                answer = await attempt(upstream, attempt_deadline)
            except (QueryTimeout, NetworkError, TLSAuthenticationError, ProtocolError) as exc:
                self._failed(upstream, exc, start)
                failures.append((upstream, exc))
                continue
            elapsed = self.clock() - start
            if health.failures:
                self._recovered(upstream, health)
            health.succeeded(elapsed)
            rcode = rcode_of(answer)
            text = _RCODE_TEXT[rcode]
            health.responses[text] += 1
            self._observe(upstream, text, elapsed)
            if rcode == _SERVFAIL:
                last_servfail = answer
                continue
            if rcode in _DECLINED:
                declined.append((upstream, rcode))
                continue
            return answer
        if last_servfail is not None:
            return last_servfail
        if held and not failures and not declined:
            raise self._held_failure(held)
        raise self._failure(failures, declined)

    def _failed(self, upstream: Upstream, exc: Exception, start: float) -> None:
        now = self.clock()
        kind = _error_kind(exc)
        health = self.health[upstream.name]
        health.errors[kind] += 1
        was_down = health.down()
        delay = health.failed(now, now - start, exc, initial=self.backoff_initial,
                              cap=self.backoff_max)
        self._observe(upstream, kind, now - start)
        if health.failures == 1:  # a state change: logged; the failures after it are not
            if len(self.upstreams) > 1:
                log.warning("upstream %s failing (%s: %s); the others go first for %.0f s, "
                            "doubling up to %.0f s while it keeps failing", upstream.name,
                            kind, exc, delay, self.backoff_max)
            else:
                log.warning("upstream %s failing (%s: %s)", upstream.name, kind, exc)
        elif not was_down and health.down():
            cause = health.error or exc
            log.warning("upstream %s down after %d failed attempts in a row (%s: %s); one "
                        "query a second probes it, queries with no other upstream meanwhile "
                        "get SERVFAIL at once", upstream.name, health.failures,
                        _error_kind(cause), cause)
        else:
            log.debug("upstream %s failed again (%d in a row; %s: %s)", upstream.name,
                      health.failures, kind, exc)

    def _recovered(self, upstream: Upstream, health: UpstreamHealth) -> None:
        log.info("upstream %s answering again (after %d failed attempts)", upstream.name,
                 health.failures)

    def _observe(self, upstream: Upstream, outcome: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(upstream.name, outcome, seconds)

    def _failure(self, failures: list[tuple[Upstream, Exception]],
                 declined: list[tuple[Upstream, int]]) -> ResolveFailure:
        for upstream, exc in failures:
            if isinstance(exc, PinMismatch):
                return servfail(dns.edns.EDECode.NETWORK_ERROR,
                                f"pin mismatch for {upstream.name}")
        for upstream, exc in failures:
            if isinstance(exc, TLSAuthenticationError):
                return servfail(dns.edns.EDECode.NETWORK_ERROR,
                                f"TLS authentication failed for {upstream.name}: "
                                f"{_reason(upstream, exc)}")
        broken = [(u, e) for u, e in failures if not isinstance(e, QueryTimeout)]
        if broken:
            text = "; ".join(_naming(u, e) for u, e in broken[:3])
            if any(isinstance(e, MalformedAnswer) for _, e in broken):
                return servfail(dns.edns.EDECode.INVALID_DATA, text)
            return servfail(dns.edns.EDECode.NETWORK_ERROR, text)
        if failures:
            names = ", ".join(u.name for u, _ in failures[:3])
            return servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY, f"timed out: {names}")
        if declined:
            refusers = [u.name for u, rcode in declined if rcode == _REFUSED]
            parts = [f"refused by {', '.join(refusers[:3])}"] if refusers else []
            parts += [f"{_RCODE_TEXT[rcode]} from {u.name}"
                      for u, rcode in declined if rcode != _REFUSED][:3]
            return servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY, "; ".join(parts))
        return servfail(dns.edns.EDECode.NO_REACHABLE_AUTHORITY,
                        "deadline passed before an upstream could be asked")

    def _held_failure(self, held: list[tuple[Upstream, float]]) -> ResolveFailure:
        """SERVFAIL for a query whose every upstream was down (``held``: each with the
        seconds to its next probe): the EDE their failures give, saying they are down."""
        causes: list[tuple[Upstream, Exception]] = []
        for upstream, _ in held:
            error = self.health[upstream.name].error
            causes.append((upstream, error or QueryTimeout(f"no answer from {upstream.name}")))
        failure = self._failure(causes, [])
        ede = dns.edns.EDECode.NO_REACHABLE_AUTHORITY if failure.ede is None else failure.ede
        wait = max(min(w for _, w in held), 0.1)
        if len(held) == 1:
            failures = self.health[held[0][0].name].failures
            state = f"down after {failures} failed attempts in a row"
        else:
            state = "all down"
        return servfail(ede, f"{failure.text}; {state}, next try in {wait:.1f} s")

    def statistics(self) -> dict[str, Any]:
        now = self.clock()
        out: dict[str, Any] = {"strategy": self.strategy.value, "upstreams": {}}
        for upstream in self.upstreams:
            health = self.health[upstream.name]
            entry: dict[str, Any] = {
                "queries": health.queries,
                "responses": dict(health.responses),
                "errors": dict(health.errors),
                "latency_sum": health.latency_sum,
                "latency_count": health.latency_count,
                "srtt": health.srtt,
                "failures": health.failures,
                "backed_off": health.backed_off(now),
                "down": health.down(),
                "held": health.held,
                "retry_in": max(0.0, health.retry_at - now) if health.failures else 0.0,
            }
            stats = getattr(upstream, "statistics", None)
            if callable(stats):
                entry["transport"] = stats()
            out["upstreams"][upstream.name] = entry
        return out
