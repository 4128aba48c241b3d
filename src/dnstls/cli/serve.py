"""``dnstls serve``: the DNS-over-TLS resolver service."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from dnstls import config as config_mod
from dnstls.cli.options import add_forwarded_answer_options, add_service_options
from dnstls.errors import ConfigError
from dnstls.net import loop
from dnstls.proto.pins import spki_pin
from dnstls.service import Service

log = logging.getLogger("dnstls.serve")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="run the DNS-over-TLS service",
        description="Serve DNS over TLS (RFC 7858). With no arguments: DoT on 127.0.0.1:853 "
                    "and [::1]:853 with a self-signed certificate kept in the state "
                    "directory; its SPKI pin is printed at start.")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--listen", metavar="ADDR:PORT", action="append",
                   help="DoT listen address (repeatable; default 127.0.0.1:853 and [::1]:853)")
    p.add_argument("--plain", metavar="ADDR:PORT", action="append",
                   help="also serve plain DNS over UDP+TCP here (repeatable)")
    p.add_argument("--cert", metavar="PEM", help="certificate chain (PEM)")
    p.add_argument("--key", metavar="PEM", help="private key (PEM)")
    p.add_argument("--local-zone", metavar="ZONEFILE", action="append",
                   help="answer this zone (RFC 1035 master file) authoritatively (repeatable)")
    p.add_argument("--local-data", metavar="'RECORD'", action="append",
                   help="answer this record here, e.g. 'nas.home.arpa. A 192.168.1.10' "
                        "(repeatable; Unbound's local-data; replaces local.data)")
    p.add_argument("--local-zone-type", metavar="'NAME TYPE'", action="append",
                   help="answer NAME and the names under it as Unbound's local-zone of "
                        "TYPE, e.g. 'ads.example. always_nxdomain' (repeatable; "
                        "replaces local.zone_types; see docs/serve.md, \"Blocking names\")")
    p.add_argument("--blocklist", metavar="FILE", action="append",
                   help="answer NXDOMAIN for every name in FILE and the names under them "
                        "(one name a line or hosts-file lines; repeatable; replaces the "
                        "file's [[local.blocklist]])")
    p.add_argument("--upstream", metavar="URI", action="append",
                   help="forward to udp://ADDR[:PORT], tcp://ADDR[:PORT] or "
                        "tls://ADDR[:PORT][#NAME] (repeatable)")
    p.add_argument("--pin", metavar="BASE64", action="append",
                   help="SPKI pin for the tls:// upstreams given with --upstream")
    p.add_argument("--ca-file", metavar="PEM",
                   help="CA bundle for the tls:// upstreams given with --upstream")
    p.add_argument("--forward-zone", metavar="NAME=URI[,URI...]", action="append",
                   help="forward names at or under NAME to these upstreams (URIs as for "
                        "--upstream) instead of the default ones, as Unbound's "
                        "forward-zone (repeatable; replaces the file's [[forward_zone]])")
    add_forwarded_answer_options(p, fields={
        "private_addresses": "forward.private_addresses",
        "private_domains": "forward.private_domains", "dnssec": "dnssec.validation",
        "trust_anchors": "dnssec.trust_anchor_file",
        "domain_insecure": "dnssec.domain_insecure"}, several_anchors=False)
    p.add_argument("--recursive", action="store_true",
                   help="resolve names from the root servers instead of forwarding them "
                        "(as Unbound with no forward-zone \".\"; forward zones still go "
                        "to their upstreams)")
    p.add_argument("--root-hints", metavar="FILE",
                   help="the root servers to start from, in named.root format (default "
                        "/usr/share/dns/root.hints, else the built-in IANA list)")
    p.add_argument("--stub-zone", metavar="NAME=ADDR[@PORT][,...]", action="append",
                   help="with --recursive, resolve names at or under NAME from these "
                        "authoritative servers instead of from the root, as Unbound's "
                        "stub-zone (repeatable; replaces the file's [[stub_zone]])")
    p.add_argument("--no-upstream", action="store_true",
                   help="do not forward: names outside local zones get REFUSED "
                        "(default: forward to the configured upstreams, else Cloudflare DoT)")
    add_service_options(p)
    p.add_argument("--nsid", metavar="VALUE",
                   help="the server's NSID (RFC 5001), sent to queries that ask for it, "
                        "as Unbound's nsid: hex (646e73746c73) or ascii_ and text "
                        "(ascii_dot-1); default none")
    p.add_argument("--control", metavar="PATH",
                   help="answer dnstls control on this Unix socket (mode 0600; "
                        "default: none, as Unbound's control-enable: no)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the generated certificate is kept")
    p.add_argument("--check", action="store_true",
                   help="check the configuration (the file, the command line, zone files, "
                        "blocklists, certificates, trust anchors) as unbound-checkconf "
                        "does, print what would run and exit: 0 when it is good, 2 with "
                        "an error naming the field when not")
    p.add_argument("--workers", metavar="N", type=int, default=1,
                   help="run N worker processes sharing the listen ports (SO_REUSEPORT); "
                        "each has its own cache; metrics on port+i for worker i")
    p.set_defaults(func=main)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if args.listen:
        server["listen"] = args.listen
    if args.plain:
        server["plain"] = args.plain
    if args.metrics:
        server["metrics"] = args.metrics
    if args.state_dir:
        server["state_dir"] = args.state_dir
    if args.log_queries:
        server["log_queries"] = True
    if args.access_control:
        server["access_control"] = args.access_control
    if args.nsid is not None:
        server["nsid"] = args.nsid
    if args.control:
        server["control"] = args.control
    if server:
        out["server"] = server
    if bool(args.cert) != bool(args.key):
        raise ConfigError("--cert/--key", "give both a certificate and a key")
    if args.cert:
        out["tls"] = {"certificates": [{"cert": args.cert, "key": args.key}]}
    local: dict[str, Any] = {}
    if args.local_zone:
        local["zones"] = args.local_zone
    if args.local_data:
        local["data"] = args.local_data
    if args.local_zone_type:
        local["zone_types"] = args.local_zone_type
    if args.blocklist:
        local["blocklist"] = [{"file": f} for f in args.blocklist]
    if local:
        out["local"] = local
    if args.no_cache and args.prefetch:
        raise ConfigError("--prefetch", "conflicts with --no-cache")
    if args.no_cache:
        out["cache"] = {"enabled": False}
    if args.prefetch:
        out["cache"] = {"prefetch": True}
    forward: dict[str, Any] = {}
    if args.no_upstream:
        forward["enabled"] = False
    if args.private_address:
        forward["private_addresses"] = args.private_address
    if args.private_domain:
        forward["private_domains"] = args.private_domain
    if forward:
        out["forward"] = forward
    recursion: dict[str, Any] = {}
    if args.recursive:
        recursion["enabled"] = True
    if args.root_hints:
        recursion["root_hints"] = args.root_hints
    if recursion:
        out["recursion"] = recursion
    dnssec: dict[str, Any] = {}
    if args.dnssec:
        dnssec["validation"] = True
    if args.trust_anchor:
        dnssec["trust_anchor_file"] = args.trust_anchor
    if args.domain_insecure:
        dnssec["domain_insecure"] = args.domain_insecure
    if dnssec:
        out["dnssec"] = dnssec
    return out


def upstream_specs(args: argparse.Namespace) -> list[Any] | None:
    """Upstreams from --upstream (with --pin/--ca-file), or None if not given."""
    if not args.upstream:
        if args.pin or args.ca_file:
            raise ConfigError("--pin/--ca-file", "need at least one --upstream")
        return None
    from dnstls.upstreams import parse_upstream_uri

    specs = []
    for i, uri in enumerate(args.upstream):
        tls = uri.strip().lower().startswith("tls://")
        specs.append(parse_upstream_uri(uri, pins=(args.pin or ()) if tls else (),
                                        ca_file=args.ca_file if tls else None,
                                        path=f"--upstream[{i}]"))
    if (args.pin or args.ca_file) and not any(s.transport == "tls" for s in specs):
        raise ConfigError("--pin/--ca-file", "apply to tls:// upstreams; none was given")
    return specs


def with_forward_zones(cfg: config_mod.Config, args: argparse.Namespace,
                       ) -> config_mod.Config:
    """``cfg`` with the zones of --forward-zone and --stub-zone, when given, instead of
    the file's."""
    if not (args.forward_zone or args.stub_zone):
        return cfg
    from dnstls.upstreams import forward_zones_from_args, stub_zones_from_args

    if args.forward_zone:
        zones = forward_zones_from_args(args.forward_zone)
        if not cfg.forward.enabled:
            raise ConfigError("--forward-zone", "conflicts with --no-upstream "
                              "(or forward.enabled = false)")
        cfg = dataclasses.replace(
            cfg, forward=dataclasses.replace(cfg.forward, zones=tuple(zones)))
    if args.stub_zone:
        stubs = stub_zones_from_args(args.stub_zone)
        if not cfg.recursion.enabled:
            raise ConfigError("--stub-zone", "stub zones need recursion (--recursive "
                              "or recursion.enabled = true); forward zones are "
                              "--forward-zone")
        cfg = dataclasses.replace(
            cfg, recursion=dataclasses.replace(cfg.recursion, stub_zones=tuple(stubs)))
    config_mod.check_recursion(cfg.recursion, cfg.forward)
    return cfg


def main(args: argparse.Namespace) -> int:
    given = overrides(args)

    def load() -> config_mod.Config:  # again on SIGHUP: the file and the command line
        return with_forward_zones(config_mod.load(args.config, given), args)

    cfg = load()
    specs = upstream_specs(args)
    if specs and cfg.recursion.enabled:
        raise ConfigError("--upstream", "conflicts with recursion (--recursive or "
                          "recursion.enabled): names are resolved from the root; give "
                          "--forward-zone for names that must go to an upstream")
    if args.check:
        for line in check(cfg, specs):
            print(line)
        return 0
    if args.workers != 1:
        from dnstls.workers import serve_workers

        return serve_workers(cfg, specs, args.workers, reload_config=load)
    return loop.run(_serve(cfg, specs, load))


def check(cfg: config_mod.Config, specs: list[Any] | None) -> list[str]:
    """``serve --check``: read everything a start would read -- zone files, blocklists,
    local data, the configured certificates and keys (a generated certificate is only
    named: the check writes nothing), trust anchors -- raising the ConfigError a start
    would raise, and describe what would run."""
    from dnstls.config import access_control
    from dnstls.upstreams import default_upstreams
    from dnstls.wiring import recursion_summary

    service = Service(cfg)
    service.prepare_local(cfg.local)
    server = cfg.server
    lines = [f"dnstls serve: {cfg.source or 'no configuration file'} is good"]
    if server.listen:
        lines.append(f"DNS over TLS: {', '.join(server.listen)}")
        if cfg.tls.certificates:
            from dnstls.net.tls import ServerTLS

            tls = ServerTLS(service._certificates())
            lines.append(f"certificate: {cfg.tls.certificates[0].cert} (SPKI pin "
                         f"{spki_pin(tls.leaf)})")
        else:
            lines.append("certificate: self-signed, generated in the state directory "
                         "at start if not there yet")
    if server.plain:
        lines.append(f"plain DNS: {', '.join(server.plain)}")
    lines.append("access control: " + access_control(server.access_control,
                                                     "server.access_control").describe())
    if cfg.recursion.enabled:
        lines.append(recursion_summary(cfg.recursion))
    elif cfg.forward.enabled:
        chosen = list(specs or cfg.forward.upstreams or default_upstreams())
        lines.append(f"upstreams ({cfg.forward.strategy}): "
                     + ", ".join(s.name for s in chosen))
    else:
        lines.append("forwarding: off (names outside local data are REFUSED)")
    lines += [f"forward zone {z.name}: " + ", ".join(s.name for s in z.upstreams)
              for z in cfg.forward.zones]
    lines += [f"stub zone {z.name}: {z.describe()}" for z in cfg.recursion.stub_zones]
    cache = cfg.cache
    lines.append(f"cache: {'on' if cache.enabled else 'off'}"
                 + (", prefetch" if cache.enabled and cache.prefetch else ""))
    if cfg.dnssec.validation:
        from dnstls.resolver.validating import load_anchors, parse_insecure, stage_summary

        anchors, source = load_anchors(cfg.dnssec.trust_anchor_file)
        lines.append(stage_summary(anchors, source,
                                   parse_insecure(cfg.dnssec.domain_insecure)))
    else:
        lines.append("DNSSEC validation: off")
    return lines


async def _serve(cfg: config_mod.Config, specs: list[Any] | None,
                 load: Callable[[], config_mod.Config]) -> int:
    from dnstls.wiring import forwarding_factory

    service = Service(cfg, upstream_factory=forwarding_factory(cfg, specs),
                      reload_config=load)
    service.install_signal_handlers()  # before binding: a signal never finds the default
    await service.start(tune_gc=True)
    for line in service.banner():
        log.info("%s", line)
    await service.run_until_stopped()
    return 0

