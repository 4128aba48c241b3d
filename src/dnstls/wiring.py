"""Builds the resolver stages behind local data: cache -> coalescing -> forwarder.

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

from dnstls.config import CacheConfig, Config, ForwardConfig
from dnstls.resolver.base import Resolver
from dnstls.upstreams import UpstreamSpec, default_upstreams

log = logging.getLogger("dnstls.wiring")

Factory = Callable[[Resolver], tuple[Resolver, Any]]


def _flat_upstreams(forwarder_stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    upstreams: dict[str, dict[str, Any]] = {}
    for name, entry in forwarder_stats["upstreams"].items():
        flat = {k: v for k, v in entry.items() if k != "transport" and v is not None}
        for key, value in entry.get("transport", {}).items():
            flat[f"transport_{key}" if key in flat else key] = value
        upstreams[name] = flat
    return upstreams


class Forwarding:
    """The running upstream side: pool, cache and stages, closed together. With forward
    zones, ``forwarder`` is their :class:`~dnstls.resolver.forward_zones.ZoneRouter` and
    ``zone_pools`` their upstream pools."""

    def __init__(self, forwarder: Any, pool: Any, cache: Any, coalescer: Any,
                 zone_pools: Sequence[Any] = (), chase: Any = None,
                 rebind: Any = None,
                 routes: Sequence[tuple[str, Sequence[str]]] = (),
                 prefetcher: Any = None, validating: Any = None) -> None:
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
        return stats

    async def aclose(self) -> None:
        if self.prefetcher is not None:
            await self.prefetcher.aclose()
        await asyncio.gather(self.pool.aclose(), *(p.aclose() for p in self.zone_pools))


def private_addresses(forward: ForwardConfig) -> Any:
    """The DNS rebinding filter of ``forward`` (:mod:`dnstls.resolver.rebind`), or None
    when no private network is configured. The forward zones' names may hold private
    addresses (their servers are the operator's own), as ``private_domains``."""
    if not forward.private_addresses:
        return None
    import dns.name

    from dnstls.resolver.rebind import PrivateAddresses, parse_domains

    domains = [*parse_domains(forward.private_domains, "forward.private_domains"),
               *(dns.name.from_text(zone.name) for zone in forward.zones)]
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

        chosen = list(specs or cfg.forward.upstreams or default_upstreams())
        if not (specs or cfg.forward.upstreams):
            log.info("no upstream configured: forwarding to %s",
                     ", ".join(s.name for s in chosen))
        clock = asyncio.get_running_loop().time
        forwarder, pool = build_forwarder(chosen, clock=clock, strategy=cfg.forward.strategy)
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
            if specs or cfg.forward.upstreams:
                log.info("names outside the forward zones: forwarding to %s",
                         ", ".join(s.name for s in chosen))
            forwarder = ZoneRouter(forwarder, zone_routes)
        rebind = private_addresses(cfg.forward)
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
        routes = [(".", [s.name for s in chosen])]
        routes += [(zone.name, [s.name for s in zone.upstreams]) for zone in cfg.forward.zones]
        # refreshes ask the coalescer, as a miss does: private addresses are removed
        # from them too
        prefetcher = attach_prefetcher(cache, coalescer.resolve, clock, cfg)
        return stage, Forwarding(forwarder, pool, cache, coalescer, zone_pools, chase,
                                 rebind, routes, prefetcher, validating)

    return factory
