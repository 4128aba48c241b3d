"""``dnstls stub``: a local DNS-over-TLS stub resolver (see :mod:`dnstls.stub`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dnstls import stub, stub_config
from dnstls.cli.options import add_forwarded_answer_options, add_service_options
from dnstls.config import access_control
from dnstls.net import loop


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "stub", help="run a local stub resolver that forwards over DNS-over-TLS",
        description="Answer plain DNS on loopback (UDP and TCP; default 127.0.0.1:53 and "
                    "[::1]:53) from a cache or over DNS-over-TLS. Strict by default: an "
                    "upstream that cannot be authenticated (name and/or pins) is never used, "
                    "and nothing is ever sent in cleartext. With no upstream: Cloudflare "
                    "(1.1.1.1, 1.0.0.1, 2606:4700:4700::1111, 2606:4700:4700::1001) "
                    "authenticated as cloudflare-dns.com. SIGHUP reloads --config.")
    p.add_argument("--config", metavar="FILE",
                   help="TOML configuration (Stubby's vocabulary; see docs/stub.md)")
    p.add_argument("--listen", metavar="ADDR:PORT", action="append",
                   help="listen for plain DNS on UDP+TCP here (repeatable; "
                        "ADDR@PORT as in Stubby works too)")
    p.add_argument("--upstream", metavar="URI", action="append",
                   help="tls://ADDR[:PORT][#AUTH_NAME] (repeatable; replaces the "
                        "configured upstreams)")
    p.add_argument("--pin", metavar="BASE64", action="append",
                   help="SPKI pin (sha256) for the --upstream servers (repeatable; any "
                        "match suffices: pin the current key, the next one and/or the CA)")
    p.add_argument("--pin-mode", choices=stub_config.PIN_MODES,
                   help="enforce pins (default) or only report mismatches (needs "
                        "#AUTH_NAME so the server is still authenticated by name)")
    p.add_argument("--ca-file", metavar="PEM",
                   help="CA bundle for the --upstream servers (default: system store)")
    p.add_argument("--opportunistic", action="store_true",
                   help="encrypt without authenticating the upstreams (RFC 8310 "
                        "opportunistic privacy; logged as a warning, shown in metrics)")
    p.add_argument("--strategy", choices=stub_config.STRATEGIES,
                   help="how upstreams are chosen (default round_robin)")
    add_forwarded_answer_options(p, fields={
        "private_addresses": "private_addresses", "private_domains": "private_domains",
        "dnssec": "dnssec, as Stubby's", "trust_anchors": "dnssec_trust_anchors",
        "domain_insecure": "domain_insecure"}, several_anchors=True)
    add_service_options(p)
    p.add_argument("--import-stubby", metavar="STUBBY_YML",
                   help="print the TOML equivalent of a stubby.yml and exit")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration, print the upstreams and exit")
    p.set_defaults(func=main)


def overrides(args: argparse.Namespace) -> stub_config.StubOverrides:
    return stub_config.StubOverrides(
        listen=tuple(args.listen or ()), upstreams=tuple(args.upstream or ()),
        pins=tuple(args.pin or ()), pin_mode=args.pin_mode, ca_file=args.ca_file,
        opportunistic=args.opportunistic, strategy=args.strategy, metrics=args.metrics,
        no_cache=args.no_cache, prefetch=args.prefetch, log_queries=args.log_queries,
        access_control=tuple(args.access_control or ()),
        private_addresses=tuple(args.private_address or ()),
        private_domains=tuple(args.private_domain or ()), dnssec=args.dnssec,
        trust_anchors=tuple(args.trust_anchor or ()),
        domain_insecure=tuple(args.domain_insecure or ()))


def main(args: argparse.Namespace) -> int:
    if args.import_stubby:
        from dnstls import stubby

        sys.stdout.write(stubby.convert_file(args.import_stubby))
        return 0
    cli = overrides(args)
    cfg = stub_config.load_stub_config(args.config, cli)
    if args.check:
        for line in describe(cfg):
            print(line)
        return 0
    return loop.run(stub.run(cfg, path=args.config, overrides=cli))


def describe(cfg: stub_config.StubConfig) -> list[str]:
    lines = [f"listen: {', '.join(cfg.listen)}",
             f"strategy: {cfg.strategy}",
             f"authentication: {'OPPORTUNISTIC' if cfg.opportunistic else 'strict'}",
             f"cache: {'on' if cfg.cache.enabled else 'off'}",
             "access control: " + access_control(cfg.access_control,
                                                 cfg.access_control_field).describe(),
             "private addresses: " + (
                 ", ".join(cfg.private_addresses) + " removed" + (
                     f" (except under {', '.join(cfg.private_domains)})"
                     if cfg.private_domains else "") if cfg.private_addresses else "off"),
             stub.dnssec_summary(cfg)]
    for u in cfg.upstreams:
        parts = []
        if u.spec.tls_auth_name:
            parts.append(f"name={u.spec.tls_auth_name}")
        if u.spec.tls_pubkey_pinset:
            report = "report-only " if u.spec.tls_pubkey_pinset_mode == "report" else ""
            parts.append(f"{report}pins={','.join(u.spec.tls_pubkey_pinset)}")
        if u.spec.ca_file:
            parts.append(f"ca_file={u.spec.ca_file}")
        lines.append(f"upstream: {u.name} {' '.join(parts)}".rstrip())
    return lines
