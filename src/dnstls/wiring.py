"""Builds the resolver stages behind local data: cache -> coalescing -> forwarder (or,
with ``[recursion]``, the iterator that resolves from the root).

Kept apart from :mod:`dnstls.service` so that the service only sees a factory that
turns "the stage to fall back to" into "the stage to use", plus an object to
``aclose()`` at shutdown whose ``statistics()`` feed the metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from dnstls.config import CacheConfig, Config, ForwardConfig, RecursionConfig
from dnstls.resolver.base import Resolver
from dnstls.upstreams import UpstreamSpec, default_upstreams

log = logging.getLogger("dnstls.wiring")

Factory = Callable[[Resolver], tuple[Resolver, Any]]


def _flat_upstreams(forwarder_stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    upstreams: dict[str, dict[str, Any]] = {}
    for name, entry in forwarder_stats.get("upstreams", {}).items():  # none: recursion
        flat = {k: v for k, v in entry.items() if k != "transport" and v is not None}
        for key, value in entry.get("transport", {}).items():
            flat[f"transport_{key}" if key in flat else key] = value
        upstreams[name] = flat
    return upstreams


class Forwarding:
    """The running upstream side: pool, cache and stages, closed together. With forward
    zones, ``forwarder`` is their :class:`~dnstls.resolver.forward_zones.ZoneRouter` and
    ``zone_pools`` their upstream pools. With recursion, ``iterator`` is the
    :class:`~dnstls.resolver.iterate.Iterator` (the forwarder, or the ZoneRouter's
    default) and ``pool`` is None."""

    def __init__(self, forwarder: Any, pool: Any, cache: Any, coalescer: Any,
                 zone_pools: Sequence[Any] = (), chase: Any = None,
                 rebind: Any = None,
                 routes: Sequence[tuple[str, Sequence[str]]] = (),
                 prefetcher: Any = None, validating: Any = None,
                 iterator: Any = None,
                 stubs: Sequence[tuple[str, str, Sequence[str]]] = ()) -> None:
        self.forwarder = forwarder
        #: (zone, its upstreams' URIs): "." first (the default upstreams), then each
        #: forward zone, as configured (``dnstls control list_forwards``)
        self.routes = [(zone, list(uris)) for zone, uris in routes]
        self.pool = pool
        self.cache = cache
        self.coalescer = coalescer
        self.zone_pools = list(zone_pools)
        #: the CnameChase in front of the forwarder: the service points it at its
        #: pipeline and hands it to the wire path
        self.chase = chase
        #: the PrivateAddresses filter (None: off): the service hands it to the wire path
        self.rebind = rebind
        #: the cache's Prefetcher (``cache.prefetch``), or None
        self.prefetcher = prefetcher
        #: the DNSSEC ValidatingStage (``dnssec.validation``), or None: while it is
        #: there, the service keeps forwarded queries off the wire path
        self.validating = validating
        #: the recursion's Iterator (``recursion.enabled``), or None: while it is there,
        #: the service keeps forwarded queries off the wire path
        self.iterator = iterator
        #: (zone, "prime" or "noprime", NS names and addresses): the root hints and each
        #: stub zone, with recursion (``dnstls control list_stubs``)
        self.stubs = [(zone, kind, list(items)) for zone, kind, items in stubs]

    def statistics(self) -> dict[str, Any]:
        forwarder_stats = self.forwarder.statistics()
        stats: dict[str, Any] = {"upstreams": _flat_upstreams(forwarder_stats)}
        if "zones" in forwarder_stats:  # the metrics label them with their zone
            stats["zone_upstreams"] = {zone: _flat_upstreams(zstats) for zone, zstats
                                       in forwarder_stats["zones"].items()}
        if self.cache is not None:
            from dnstls.resolver.prefetch import prefetch_statistics

            stats["cache"] = {**dataclasses.asdict(self.cache.statistics()),
                              **prefetch_statistics(self.prefetcher)}
        if self.coalescer is not None:
            stats["coalesce"] = dataclasses.asdict(self.coalescer.statistics())
        if self.chase is not None:
            stats["cname_chase"] = self.chase.statistics()
        if self.rebind is not None:
            stats["private_addresses"] = self.rebind.statistics()
        if self.validating is not None:
            stats["dnssec"] = self.validating.statistics()
        if self.iterator is not None:
            stats["recursion"] = self.iterator.statistics()
            authority = getattr(self.iterator.authority, "statistics", None)
            if authority is not None:  # udp, tcp, mismatched, timeouts, ... by kind
                stats["recursion"]["authority"] = authority()
        return stats

    async def aclose(self) -> None:
        if self.prefetcher is not None:
            await self.prefetcher.aclose()
        pools = [*([] if self.pool is None else [self.pool]), *self.zone_pools]
        await asyncio.gather(*(p.aclose() for p in pools))


def private_addresses(forward: ForwardConfig, stub_zones: Sequence[Any] = ()) -> Any:
    """The DNS rebinding filter of ``forward`` (:mod:`dnstls.resolver.rebind`), or None
    when no private network is configured. The forward zones' and the stub zones' names
    may hold private addresses (their servers are the operator's own), as
    ``private_domains``."""
    if not forward.private_addresses:
        return None
    import dns.name

    from dnstls.resolver.rebind import PrivateAddresses, parse_domains

    domains = [*parse_domains(forward.private_domains, "forward.private_domains"),
               *(dns.name.from_text(zone.name) for zone in [*forward.zones, *stub_zones])]
    return PrivateAddresses(forward.private_addresses, domains)


def validating_stage(cfg: Config, forwarder: Any, clock: Callable[[], float]) -> Any:
    """The DNSSEC :class:`~dnstls.resolver.validating.ValidatingStage` in front of
    ``forwarder`` (its DS and DNSKEY fetches go through it too), or None when
    ``dnssec.validation`` is off."""
    if not cfg.dnssec.validation:
        return None
    from dnstls.resolver.validating import (
        load_anchors,
        parse_insecure,
        stage_summary,
        validating,
    )

    anchors, source = load_anchors(cfg.dnssec.trust_anchor_file)
    insecure = parse_insecure(cfg.dnssec.domain_insecure)
    log.info("%s", stage_summary(anchors, source, insecure))
    return validating(forwarder, anchors, clock, insecure=insecure,
                      minimal=cfg.cache.minimal_responses)


def recursion_summary(recursion: RecursionConfig) -> str:
    """One line on how names are resolved from the root (the start-up log, ``--check``)."""
    from dnstls.resolver.iterate import load_root_hints

    hints = load_root_hints(recursion.root_hints)
    count = len(hints.servers)
    notes = [f"{count} root server{'' if count == 1 else 's'} from {hints.source}",
             f"qname minimisation {'on' if recursion.qname_minimisation else 'off'}"]
    if not (recursion.do_ip4 and recursion.do_ip6):
        notes.append("IPv4 only" if recursion.do_ip4 else "IPv6 only")
    if not recursion.do_not_query_localhost:
        notes.append("localhost addresses may be asked")
    return f"recursion: resolving from the root ({'; '.join(notes)})"


def stub_routes(recursion: RecursionConfig) -> list[tuple[str, str, list[str]]]:
    """Where the recursion starts, as Unbound's ``list_stubs`` says it: "." primed from
    the root hints (their NS names, then addresses), then each stub zone (not primed)
    with its addresses (``@PORT`` when not 53)."""
    from dnstls.resolver.iterate import load_root_hints

    hints = load_root_hints(recursion.root_hints)
    root = [name.to_text() for name, _ in hints.servers]
    root += [address for _, addresses in hints.servers for address in addresses]
    routes = [(".", "prime", root)]
    routes += [(zone.name, "noprime", [host if port == 53 else f"{host}@{port}"
                                       for host, port in zone.addresses])
               for zone in recursion.stub_zones]
    return routes


def build_iterator(recursion: RecursionConfig, clock: Callable[[], float]) -> Any:
    """The :class:`~dnstls.resolver.iterate.Iterator` of ``recursion``, asking the
    authoritative servers through :class:`~dnstls.net.authority.AuthorityTransport`."""
    import dns.name

    from dnstls.net.authority import AuthorityTransport
    from dnstls.resolver.iterate import Iterator, load_root_hints

    stubs = {dns.name.from_text(zone.name): zone.addresses for zone in recursion.stub_zones}
    for zone in recursion.stub_zones:
        log.info("stub zone %s: resolving from %s", zone.name, zone.describe())
    return Iterator(AuthorityTransport(), load_root_hints(recursion.root_hints), clock,
                    stubs=stubs, qname_minimisation=recursion.qname_minimisation,
                    do_not_query_localhost=recursion.do_not_query_localhost,
                    ip4=recursion.do_ip4, ip6=recursion.do_ip6)


def make_cache(cfg: CacheConfig) -> Any:
    from dnstls.resolver.cache import Cache

    return Cache(max_entries=cfg.max_entries, max_bytes=cfg.max_bytes, min_ttl=cfg.min_ttl,
                 max_ttl=cfg.max_ttl, max_negative_ttl=cfg.max_negative_ttl,
                 servfail_ttl=cfg.servfail_ttl, serve_stale=cfg.serve_stale,
                 stale_ttl=cfg.stale_ttl, minimal_responses=cfg.minimal_responses,
                 prefetch=cfg.prefetch)


def attach_prefetcher(cache: Any, resolve: Any, clock: Callable[[], float],
                      cfg: Config) -> Any:
    """The :class:`~dnstls.resolver.prefetch.Prefetcher` that refreshes ``cache``'s
    entries through ``resolve`` (the stage below the cache), set as its
    ``on_prefetch``; None (nothing set) when there is no cache or ``cache.prefetch``
    is off."""
    if cache is None or not cfg.cache.prefetch:
        return None
    from dnstls.resolver.prefetch import Prefetcher

    prefetcher = Prefetcher(resolve, cache, clock, max_in_flight=cfg.server.max_in_flight,
                            timeout=cfg.server.query_timeout)
    cache.on_prefetch = prefetcher
    return prefetcher


def forwarding_factory(cfg: Config, specs: Sequence[UpstreamSpec] | None) -> Factory | None:
    """Stages for ``cfg``: upstreams from the command line, else the config file, else
    Cloudflare's DoT resolvers (RFC 8310 strict, authenticated as cloudflare-dns.com).

    None when forwarding is switched off (``forward.enabled = false``, ``--no-upstream``):
    names outside local data are then REFUSED.
    """
    if not cfg.forward.enabled:
        if specs:
            from dnstls.errors import ConfigError

            raise ConfigError("--no-upstream", "conflicts with --upstream")
        return None

    def factory(_terminal: Resolver) -> tuple[Resolver, Any]:
        from dnstls.net.pool import build_forwarder
        from dnstls.resolver.cache import answer_stage
        from dnstls.resolver.chase import CnameChase
        from dnstls.resolver.coalesce import Coalescer
        from dnstls.resolver.rebind import RebindFilter

        clock = asyncio.get_running_loop().time
        iterator = None
        pool = None
        chosen: list[UpstreamSpec] = []
        if cfg.recursion.enabled:
            forwarder = iterator = build_iterator(cfg.recursion, clock)
            log.info("%s", recursion_summary(cfg.recursion))
        else:
            chosen = list(specs or cfg.forward.upstreams or default_upstreams())
            if not (specs or cfg.forward.upstreams):
                log.info("no upstream configured: forwarding to %s",
                         ", ".join(s.name for s in chosen))
            forwarder, pool = build_forwarder(chosen, clock=clock,
                                              strategy=cfg.forward.strategy)
        zone_pools = []
        if cfg.forward.zones:  # else the forwarder itself: no zones cost nothing
            import dns.name

            from dnstls.resolver.forward_zones import ZoneRouter

            zone_routes = []
            for zone in cfg.forward.zones:
                strategy = zone.strategy or cfg.forward.strategy
                zone_forwarder, zone_pool = build_forwarder(zone.upstreams, clock=clock,
                                                            strategy=strategy)
                zone_routes.append((dns.name.from_text(zone.name), zone_forwarder))
                zone_pools.append(zone_pool)
                log.info("forward zone %s: forwarding to %s%s", zone.name,
                         ", ".join(s.name for s in zone.upstreams),
                         f" ({strategy})" if len(zone.upstreams) > 1 else "")
            if chosen and (specs or cfg.forward.upstreams):
                log.info("names outside the forward zones: forwarding to %s",
                         ", ".join(s.name for s in chosen))
            forwarder = ZoneRouter(forwarder, zone_routes)
        rebind = private_addresses(cfg.forward, cfg.recursion.stub_zones)
        validating = validating_stage(cfg, forwarder, clock)
        checked = forwarder if validating is None else validating
        # answers validated first (resolver/validating.py: signatures cover what the
        # upstream sent), private addresses removed next (resolver/rebind.py), then
        # incomplete CNAME chains completed (resolver/chase.py): a target whose address
        # was removed is asked again and filtered again, as Unbound answers
        chase = CnameChase(checked if rebind is None else RebindFilter(checked, rebind))
        coalescer = Coalescer(chase)
        cache = make_cache(cfg.cache) if cfg.cache.enabled else None
        stage = answer_stage(coalescer, cache, clock,
                             minimal_responses=cfg.cache.minimal_responses)
        # "." with no upstream: recursion (``dnstls control lookup`` says so)
        routes = [(".", [s.name for s in chosen])]
        routes += [(zone.name, [s.name for s in zone.upstreams]) for zone in cfg.forward.zones]
        # refreshes ask the coalescer, as a miss does: private addresses are removed
        # from them too
        prefetcher = attach_prefetcher(cache, coalescer.resolve, clock, cfg)
        return stage, Forwarding(forwarder, pool, cache, coalescer, zone_pools, chase,
                                 rebind, routes, prefetcher, validating, iterator,
                                 stub_routes(cfg.recursion) if iterator is not None else ())

    return factory
