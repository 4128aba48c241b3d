"""``dnstls stub``: a local DNS-over-TLS stub resolver (RFC 7858, RFC 8310).

Applications (the system resolver) ask the stub in plain DNS over UDP and TCP on
loopback; the stub answers from its cache or forwards over TLS through the shared
upstream pool (:mod:`dnstls.net.pool`): connections reused and pipelined, queries
padded to 128-byte blocks (RFC 8467), several upstreams with a strategy and health
back-off (:mod:`dnstls.resolver.forward`). The client's own EDNS options (padding,
cookies, keepalive) are never forwarded: the forwarder builds a fresh query.

The configuration (Stubby's vocabulary in TOML, strict by default, report-only
pins) is loaded and validated by :mod:`dnstls.stub_config`; this module builds and runs
the service.

**Reload** (SIGHUP): the configuration file is read again (command-line options still
override it). If it is valid, a new generation -- upstream pool, coalescer, forwarder
over the same cache -- takes every *new* query, while
queries already in flight finish on the old generation, which is closed once it is
empty (or after the query timeout). Client listeners are not touched, so open client
TCP connections survive. ``[local]`` (local data, zone types, blocklists) is read
again and applied as ``dnstls serve`` applies it, and so are ``private_addresses`` and
``private_domains`` (DNS rebinding protection, :mod:`dnstls.resolver.rebind`: the
networks of one filter replaced, on both answer paths). ``dnssec``,
``dnssec_trust_anchors`` and ``domain_insecure`` (DNSSEC validation: serve's
:class:`~dnstls.resolver.validating.ValidatingStage`, one per generation, between the
forwarder and the rebinding filter) apply with the new generation; when they change,
the whole cache is dropped (an answer cached unvalidated must not be served as if
validated), and the listeners' wire path is switched off for forwarded queries while
validation is on (:meth:`QueryHandler.use_wire_path`). A reload that fails -- a file or a list
that does not load -- keeps the running generation and local data and logs why. Listen
and metrics addresses and the cache settings need a restart (a warning says so): the
cache is one object for the life of the process, because the listeners answer cache hits
from it directly (:meth:`dnstls.net.handler.QueryHandler.fast`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.message

from dnstls.compiled import version_line
from dnstls.config import access_control, format_hostport, metrics_url
from dnstls.errors import ConfigError
from dnstls.net.pool import StreamUpstream
from dnstls.resolver.base import Request, Resolver
from dnstls.stub_config import (
    AUTH_NONE,
    AUTH_REQUIRED,
    DEFAULT_LISTEN,
    DEFAULT_UPSTREAM_ADDRESSES,
    PIN_MODES,
    STRATEGIES,
    StubConfig,
    StubOverrides,
    StubUpstream,
    load_stub_config,
    load_trust_anchors,
    parse_listen,
    stub_config_from_data,
)

log = logging.getLogger("dnstls.stub")


class Generation:
    """The upstream side of one configuration: pool, forwarder, DNSSEC validation (when
    on), coalescer, cache."""

    def __init__(self, config: StubConfig, *, cache: Any, clock: Any,
                 minimal_responses: bool, rebind: Any = None,
                 dnssec_counts: Counter[str] | None = None) -> None:
        from dnstls.resolver.cache import answer_stage
        from dnstls.resolver.coalesce import Coalescer
        from dnstls.resolver.forward import Forwarder
        from dnstls.resolver.rebind import RebindFilter

        self.config = config
        self.upstreams = [StreamUpstream(u.spec, clock=clock, connect_backoff=True)
                          for u in config.upstreams]
        self.forwarder = Forwarder(self.upstreams, strategy=config.strategy, clock=clock)
        #: the stub's PrivateAddresses when ``private_addresses`` is set (None: off): the
        #: message path's answers (misses and prefetches) pass it below the coalescer;
        #: the wire path's are filtered by the listeners' WireForwarder
        self.rebind = rebind
        #: the DNSSEC ValidatingStage (``dnssec``), or None; its DS/DNSKEY fetches go
        #: through this generation's forwarder; its counts are the process's
        #: (``dnssec_counts``: they go on across reloads)
        self.validating, self.dnssec_key = validating_stage(
            config, self.forwarder, clock, minimal=minimal_responses)
        if self.validating is not None and dnssec_counts is not None:
            self.validating.counts = dnssec_counts
        checked: Resolver = self.forwarder if self.validating is None else self.validating
        # validated first, private addresses removed next: as serve (dnstls.wiring)
        self.coalescer = Coalescer(checked if rebind is None else RebindFilter(checked, rebind))
        self.cache = cache
        # minimal_responses: the process's value, as the listeners' (restart only)
        self.stage: Resolver = answer_stage(self.coalescer, cache, clock,
                                            minimal_responses=minimal_responses)
        #: Queries of the coroutine paths in flight (``resolve``, ``resolve_wire``); the
        #: task-free ones are the forwarder's ``in_flight_wire``.
        self.in_flight = 0
        self.retired = False
        self.closing: asyncio.Task[None] | None = None

    def statistics(self) -> dict[str, Any]:
        """Per upstream, flat as ``dnstls serve`` exports them (:mod:`dnstls.wiring`): the
        forwarder's health, then the pool's counters (``transport_`` prefixed on a name
        clash), then what only the stub has."""
        out: dict[str, Any] = {}
        health = self.forwarder.statistics()["upstreams"]
        for upstream in self.upstreams:
            entry = health[upstream.name]
            flat = {k: v for k, v in entry.items() if k != "transport" and v is not None}
            for key, value in entry.get("transport", {}).items():
                flat[f"transport_{key}" if key in flat else key] = value
            flat["healthy"] = not entry["backed_off"]
            flat["opportunistic"] = upstream.spec.opportunistic
            flat["pin_report_only"] = bool(StubUpstream(upstream.spec).report_pins)
            out[upstream.name] = flat
        return out

    async def aclose(self) -> None:
        await asyncio.gather(*(u.aclose() for u in self.upstreams))


def validating_stage(config: StubConfig, forwarder: Any, clock: Callable[[], float], *,
                     minimal: bool) -> tuple[Any, tuple[Any, ...]]:
    """serve's :class:`~dnstls.resolver.validating.ValidatingStage` in front of
    ``forwarder`` with a :class:`~dnstls.resolver.dnssec.Validator` of its own (None
    when ``dnssec`` is off), and what a reload compares to decide whether cached answers
    must go: validation on or off, the trust anchors' records as loaded now (a file may
    change under the same name) and the names not validated."""
    if not config.dnssec:
        return None, (False,)
    from dnstls.resolver.validating import parse_insecure, validating

    anchors, _source = load_trust_anchors(config.dnssec_trust_anchors,
                                          config.dnssec_trust_anchors_field)
    insecure = parse_insecure(config.domain_insecure, config.domain_insecure_field)
    records = sorted(f"{zone} {rdata}" for table in (anchors.ds, anchors.dnskey)
                     for zone, rdatas in table.items() for rdata in rdatas)
    stage = validating(forwarder, anchors, clock, insecure=insecure, minimal=minimal)
    return stage, (True, tuple(records), insecure)


def dnssec_summary(config: StubConfig) -> str:
    """The DNSSEC line of ``--check`` and (validation on) of the banner."""
    if not config.dnssec:
        return "DNSSEC validation: off"
    from dnstls.resolver.validating import parse_insecure, stage_summary

    anchors, source = load_trust_anchors(config.dnssec_trust_anchors,
                                         config.dnssec_trust_anchors_field)
    return stage_summary(anchors, source, parse_insecure(config.domain_insecure,
                                                         config.domain_insecure_field))


class StubForwarding:
    """The stage the service resolves through, swapped whole on reload.

    It is both the resolver stage handed to :class:`~dnstls.service.Service` and the
    object the service closes at shutdown and asks for ``statistics()``.
    """

    def __init__(self, config: StubConfig) -> None:
        from dnstls.wiring import attach_prefetcher, make_cache

        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time
        #: One cache for the life of the process: the service's listeners answer hits from
        #: it directly (``Service`` finds it as ``.cache``), so reloads keep it.
        self.cache = make_cache(config.cache) if config.cache.enabled else None
        self.minimal_responses = config.cache.minimal_responses
        #: DNS rebinding protection (``private_addresses``): one filter for the life of
        #: the process, its networks replaced on reload (so its count goes on), created
        #: the first time a configuration sets any
        self._private: Any = None
        self.rebind: Any = None
        #: ``dnstls_dnssec_validations_total{kind}``: one count for every generation
        self.dnssec_counts: Counter[str] = Counter()
        #: the DNSSEC_COUNTERS of generations closed since
        self._dnssec_closed: Counter[str] = Counter()
        self._adopt(self._generation(config))
        #: ``cache.prefetch``: refreshes go to the current generation (like the cache,
        #: the setting needs a restart)
        self.prefetcher = attach_prefetcher(self.cache, self._prefetch_resolve, self.clock,
                                            config.service_config())
        self.old: list[Generation] = []
        self.reloads = 0
        self.reload_failures = 0

    @property
    def config(self) -> StubConfig:
        return self.current.config

    @property
    def validating(self) -> Any:
        """The current generation's ValidatingStage, or None. The service builds the
        listeners' wire path only when this is None at start (as serve's); after a
        reload :meth:`StubRuntime.reload` switches the path off or on (a stub started
        validating has none: its forwarded queries take the message path until a
        restart, also after a reload switched validation off)."""
        return self.current.validating

    def _generation(self, config: StubConfig) -> Generation:
        """A generation for ``config``; its private networks become the filter's (which
        the listeners' wire path finds as :attr:`rebind`). Raises (and changes nothing)
        when ``config`` cannot be built."""
        fresh = None
        if config.private_addresses:
            import dns.name

            from dnstls.resolver.rebind import PrivateAddresses

            fresh = PrivateAddresses(config.private_addresses,
                                     [dns.name.from_text(d) for d in config.private_domains],
                                     field=config.private_addresses_field)
        shared = self._private if self._private is not None else fresh
        generation = Generation(config, cache=self.cache, clock=self.clock,
                                minimal_responses=self.minimal_responses,
                                rebind=shared if fresh is not None else None,
                                dnssec_counts=self.dnssec_counts)
        if fresh is not None:
            if self._private is None:
                self._private = fresh
            else:
                self._private.adopt(fresh)
        self.rebind = generation.rebind
        return generation

    #: The wire path's task-free forward (:meth:`Forwarder.start_wire` of the current
    #: generation, set by :meth:`_adopt`): what :class:`WireForwarder` calls directly
    #: for every forwarded query. The generation's forwarder counts these queries
    #: (``in_flight_wire``) and calls :meth:`_drained` when none is left, so a reload
    #: still closes the old generation only once they are done -- without a wrapper
    #: and a closure per query here.
    start_wire: Callable[..., bool]
    current: Generation

    def _adopt(self, generation: Generation) -> Generation:
        """Make ``generation`` the one new queries go to (returned)."""
        generation.forwarder.when_idle = functools.partial(self._drained, generation)
        # validating: the listeners keep forwarded queries off the wire path
        # (StubRuntime.reload); one routed there before a reload switched validation
        # on is not forwarded unchecked (resolve_wire)
        self.start_wire = (_no_start_wire if generation.validating is not None
                           else generation.forwarder.start_wire)
        self.current = generation
        return generation

    def _drained(self, generation: Generation) -> None:
        """A query of ``generation`` is done: close it if it is retired and empty."""
        if (generation.retired and generation.in_flight == 0
                and generation.forwarder.in_flight_wire == 0):
            self._close(generation)

    async def resolve(self, request: Request) -> dns.message.Message:
        return await self._in_current(request, below_cache=False)

    async def _in_current(self, request: Request, *, below_cache: bool,
                          ) -> dns.message.Message:
        """``request`` through the current generation's pipeline (or, ``below_cache``,
        its coalescer: a prefetch), counted in flight there so that a retired
        generation closes only once it is done."""
        generation = self.current
        generation.in_flight += 1
        try:
            stage = generation.coalescer if below_cache else generation.stage
            answer: dns.message.Message = await stage.resolve(request)
            return answer
        finally:
            generation.in_flight -= 1
            self._drained(generation)

    @property
    def forwarder(self) -> StubForwarding:
        """What the listeners' wire-level path forwards through (:mod:`resolver.wire`):
        this object, so that it too follows reloads to the current generation."""
        return self

    async def _prefetch_resolve(self, request: Request) -> dns.message.Message:
        """A prefetch's question, below the cache of the current generation."""
        return await self._in_current(request, below_cache=True)

    async def resolve_wire(self, question: bytes, *, flags: int, payload: int, do: bool,
                           deadline: float, check: Callable[[bytes], bool] | None = None,
                           ) -> bytes:
        generation = self.current
        if generation.validating is not None:
            from dnstls.resolver.base import servfail

            raise servfail(dns.edns.EDECode.NOT_READY, "DNSSEC validation was switched on "
                           "while the query was on its way: ask again")
        generation.in_flight += 1
        try:
            answer: bytes = await generation.forwarder.resolve_wire(
                question, flags=flags, payload=payload, do=do, deadline=deadline,
                check=check)
            return answer
        finally:
            generation.in_flight -= 1
            self._drained(generation)

    def swap(self, config: StubConfig) -> Generation:
        """New queries go to a generation built from ``config``; the old one drains."""
        old = self.current
        if config.cache != old.config.cache:
            # the listeners answer hits from this cache object directly (fast path)
            log.warning("reload: [cache] changes apply after a restart")
        new = self._generation(config)  # may raise: old stays
        self._adopt(new)
        old.retired = True
        self.old.append(old)
        if old.in_flight == 0 and old.forwarder.in_flight_wire == 0:
            self._close(old)
        else:
            # Bounded: every query has a deadline of query_timeout; close after it anyway.
            self.loop.call_later(old.config.query_timeout + 1.0, self._close, old)
        return new

    def _close(self, generation: Generation) -> None:
        if generation.closing is None:
            generation.closing = self.loop.create_task(generation.aclose())
            generation.closing.add_done_callback(lambda _t: self._forget(generation))

    def _forget(self, generation: Generation) -> None:
        if generation in self.old and generation.validating is not None:
            figures = generation.validating.statistics()
            for key in DNSSEC_COUNTERS:
                self._dnssec_closed[key] += figures.get(key, 0)
        with contextlib.suppress(ValueError):
            self.old.remove(generation)

    def statistics(self) -> dict[str, Any]:
        current = self.current
        stats: dict[str, Any] = {"upstreams": current.statistics(),
                                 "coalesce": dataclasses.asdict(
                                     current.coalescer.statistics()),
                                 "stub": {"reloads": self.reloads,
                                          "reload_failures": self.reload_failures,
                                          "opportunistic": current.config.opportunistic,
                                          "strategy": current.config.strategy,
                                          "retired_generations": len(self.old)}}
        if self.cache is not None:
            from dnstls.resolver.prefetch import prefetch_statistics

            stats["cache"] = {**dataclasses.asdict(self.cache.statistics()),
                              **prefetch_statistics(self.prefetcher)}
        if self._private is not None:  # configured now or before a reload
            stats["private_addresses"] = self._private.statistics()
        stats.update(self._dnssec_statistics())
        return stats

    def _dnssec_statistics(self) -> dict[str, Any]:
        """serve's ``dnssec`` figures: the current generation's, with the counters
        (validations and the validators' fetches and key cache lookups) summed over
        every generation so far, so that they only grow across reloads."""
        current = self.current
        if current.validating is None and not self.dnssec_counts:
            return {}
        dnssec: dict[str, Any] = (current.validating.statistics()
                                  if current.validating is not None else {})
        dnssec["validations"] = dict(self.dnssec_counts)
        totals = Counter(self._dnssec_closed)
        for generation in self.old:
            if generation.validating is not None and generation is not current:
                totals.update({k: v for k, v in generation.validating.statistics().items()
                               if k in DNSSEC_COUNTERS})
        for key in DNSSEC_COUNTERS:
            if key in dnssec or totals[key]:
                dnssec[key] = dnssec.get(key, 0) + totals[key]
        return {"dnssec": dnssec}

    async def aclose(self) -> None:
        if self.prefetcher is not None:
            await self.prefetcher.aclose()
        generations = [self.current, *self.old]
        for generation in generations:
            if generation.closing is None:
                generation.closing = self.loop.create_task(generation.aclose())
        await asyncio.gather(*(g.closing for g in generations if g.closing is not None),
                             return_exceptions=True)


#: The ValidatingStage's statistics exported as counters (``dnstls_dnssec_*_total``):
#: summed over the generations so that they only grow across reloads.
DNSSEC_COUNTERS = ("fetches", "fetches_shared", "fetch_failures", "key_cache_hits",
                   "key_cache_misses")


def _no_start_wire(*_args: Any, **_kwargs: Any) -> bool:
    """``start_wire`` while validating: nothing started (the caller takes
    ``resolve_wire``)."""
    return False


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class StubRuntime:
    """Builds the :class:`~dnstls.service.Service` for a stub and reloads it on SIGHUP."""

    def __init__(self, config: StubConfig, *, path: str | Path | None = None,
                 overrides: StubOverrides | None = None) -> None:
        self.config = config
        self.path = path
        self.overrides = overrides
        self.forwarding: StubForwarding | None = None
        self.acl: Any = None  # the service's AccessControl, once built
        self._service: Any = None  # the Service, once built (its local data is reloaded)

    def listen_addresses(self) -> list[str]:
        listen = list(self.config.listen)
        if self.config.listen_is_default and not ipv6_loopback_available():
            for text in [a for a in listen if a.startswith("[")]:
                log.warning("IPv6 loopback is not available; not listening on %s", text)
                listen.remove(text)
        return listen

    def service(self) -> Any:
        from dnstls.service import Service

        config = self.config
        if config.opportunistic:
            log.warning("OPPORTUNISTIC mode (RFC 8310 §4): upstreams are encrypted but NOT "
                        "authenticated; anyone on the path can read and change answers")
        if config.upstreams_are_default:
            log.info("no upstream configured: forwarding to %s",
                     ", ".join(u.name for u in config.upstreams))

        def factory(_terminal: Resolver) -> tuple[Resolver, Any]:
            self.forwarding = StubForwarding(config)
            return self.forwarding, self.forwarding

        service = Service(config.service_config(listen=self.listen_addresses()),
                          upstream_factory=factory, acl_field=config.access_control_field)
        self.acl = service.acl
        self._service = service
        service.add_reload_hook(self.reload)
        return service

    def reload(self) -> bool:
        """Re-read the configuration; keep the running one if it is invalid."""
        forwarding = self.forwarding
        if forwarding is None:
            return True
        if self.path is None:
            log.info("reload: no configuration file; upstreams unchanged")
            return True
        service = self._service
        try:
            new = load_stub_config(self.path, self.overrides)
            # [local] is read (blocklists, local data) before anything changes, so that
            # a list that does not load keeps all that runs
            apply_local = (service.prepare_local(new.service_config().local)
                           if service is not None and service.handler is not None else None)
            old_dnssec = forwarding.current.dnssec_key
            new_dnssec = forwarding.swap(new).dnssec_key
            handler = service.handler if service is not None else None
            wire = handler.wire if handler is not None else None
            if wire is not None:  # the listeners' wire path filters with the new networks
                wire.rebind = forwarding.rebind
            if handler is not None:  # forwarded queries off the wire path while validating
                handler.use_wire_path(not new.dnssec)
        except Exception as exc:
            forwarding.reload_failures += 1
            log.error("reload failed, the running configuration stays: %s", exc)
            return False
        old = self.config
        if new.listen != old.listen or new.metrics != old.metrics or new.nsid != old.nsid:
            log.warning("reload: listen_addresses, metrics and nsid changes apply after a "
                        "restart")
        if new.access_control != old.access_control and self.acl is not None:
            # validated by load_stub_config: applies to new connections and every datagram
            # from now on; open connections keep the decision taken when they were accepted
            self.acl.adopt(access_control(new.access_control, new.access_control_field))
            log.info("reload: access control is now: %s", self.acl.describe())
        if apply_local is not None:
            apply_local()  # logs what changed; nothing when [local] is as it was
        if (new.private_addresses, new.private_domains) != (old.private_addresses,
                                                            old.private_domains):
            # answers cached before may hold addresses now private (or miss ones now
            # allowed): dropped, as Unbound's reload drops its whole cache
            cache = forwarding.cache
            dropped = cache.discard_if(lambda _key: True) if cache is not None else 0
            log.info("reload: private addresses removed now: %s%s; %d cached answers "
                     "dropped", ", ".join(new.private_addresses) or "none",
                     f" (except under {', '.join(new.private_domains)})"
                     if new.private_domains else "", dropped)
        if new_dnssec != old_dnssec:
            # validation switched on, off, or anchored elsewhere: what the cache holds was
            # not validated (or not as now); every answer is dropped, as Unbound's reload
            cache = forwarding.cache
            dropped = cache.discard_if(lambda _key: True) if cache is not None else 0
            log.info("reload: %s; %d cached answers dropped", dnssec_summary(new), dropped)
        if new.opportunistic and not old.opportunistic:
            log.warning("OPPORTUNISTIC mode (RFC 8310 §4) after reload: upstreams are NOT "
                        "authenticated")
        self.config = new
        forwarding.reloads += 1
        log.info("reloaded %s: upstreams %s (%s)", self.path,
                 ", ".join(u.name for u in new.upstreams), new.strategy)
        return True


async def run(config: StubConfig, *, path: str | Path | None = None,
              overrides: StubOverrides | None = None) -> int:
    """Run the stub until SIGTERM/SIGINT (the ``dnstls stub`` command)."""
    runtime = StubRuntime(config, path=path, overrides=overrides)
    service = runtime.service()
    service.install_signal_handlers()  # before binding: a signal never finds the default
    try:
        await service.start(tune_gc=True)
    except ConfigError as exc:  # named as the service calls them: say it in stub words
        raise stub_field_error(exc) from None
    for line in banner(config, service.endpoints, acl=service.acl):
        log.info("%s", line)
    await service.run_until_stopped()
    return 0


def stub_field_error(exc: ConfigError) -> ConfigError:
    """A start-up error of the service renamed to the stub's settings: the service's
    ``server.plain[i]`` is the stub's ``listen_addresses[i]`` (or ``--listen``),
    ``server.metrics`` its ``metrics``."""
    fld = exc.field
    for theirs, ours in (("server.plain", "listen_addresses"), ("server.metrics", "metrics")):
        if fld.startswith(theirs):
            return ConfigError(ours + fld[len(theirs):], exc.message)
    return exc


def banner(config: StubConfig, endpoints: Any, *, acl: Any = None) -> list[str]:
    """The start-up lines: which build runs, where the stub listens, each upstream
    with how it is authenticated (name, pins), a command line that queries it, and
    (``acl``: the service's access control) what access control allows when the stub
    listens on an address that is not loopback."""
    lines = [version_line()]
    for host, port in endpoints.plain:
        lines.append(f"DNS stub (UDP+TCP) on {format_hostport(host, port)}")
    if endpoints.metrics:
        lines.append(f"metrics on {metrics_url(endpoints.metrics)}")
    for upstream in config.upstreams:
        spec = upstream.spec
        pins = ", ".join(spec.tls_pubkey_pinset)
        how = ("opportunistic: NOT authenticated" if spec.opportunistic else
               "; ".join(filter(None, [
                   f"name {spec.tls_auth_name}" if spec.tls_auth_name else "",
                   f"pins (report-only) {pins}" if upstream.report_pins
                   else f"pins {pins}" if pins else ""])))
        lines.append(f"upstream {upstream.name} ({how})")
    if config.dnssec:
        lines.append(dnssec_summary(config))
    if endpoints.plain:
        host, port = endpoints.plain[0]
        lines.append(f"try: kdig @{host}{'' if port == 53 else f' -p {port}'} example.com")
    if acl is not None:
        from dnstls.service import access_control_line

        line = access_control_line(acl, endpoints.plain, config.access_control_field)
        if line:
            lines.append(line)
    return lines


__all__ = ["AUTH_NONE", "AUTH_REQUIRED", "DEFAULT_LISTEN", "DEFAULT_UPSTREAM_ADDRESSES",
           "PIN_MODES", "STRATEGIES", "StubConfig", "StubForwarding", "StubOverrides",
           "StubRuntime", "StubUpstream", "load_stub_config", "parse_listen", "run",
           "stub_config_from_data"]
