"""Command-line options that ``dnstls serve`` and ``dnstls stub`` share, spelt once."""

from __future__ import annotations

import argparse


def add_service_options(p: argparse.ArgumentParser) -> None:
    """``--no-cache``, ``--prefetch``, ``--metrics``, ``--log-queries`` (RFC 8932: off
    by default) and ``--access-control``."""
    p.add_argument("--no-cache", action="store_true", help="disable the answer cache")
    p.add_argument("--prefetch", action="store_true",
                   help="refresh a cached answer asked for in the last tenth of its TTL in "
                        "the background ([cache] prefetch, as Unbound's prefetch: yes)")
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="Prometheus metrics endpoint (at /metrics)")
    p.add_argument("--log-queries", action="store_true",
                   help="log every query name (off by default, RFC 8932)")
    p.add_argument("--access-control", metavar="'NETBLOCK ACTION'", action="append",
                   help="which clients are answered, as Unbound's access-control: e.g. "
                        "'192.0.2.0/24 allow'; ACTION is allow (RD=0 queries: local data "
                        "only), allow_snoop (RD=0 from the cache too), refuse (REFUSED) or "
                        "deny (dropped); longest prefix wins, others are refused (repeatable; "
                        "replaces the default: loopback and private networks allowed)")


def add_forwarded_answer_options(p: argparse.ArgumentParser, *, fields: dict[str, str],
                                 several_anchors: bool) -> None:
    """DNS rebinding protection (``--private-address``, ``--private-domain``) and DNSSEC
    validation (``--dnssec``, ``--trust-anchor``, ``--domain-insecure``); ``fields``
    names each one's setting in the command's file (``private_addresses``,
    ``private_domains``, ``dnssec``, ``trust_anchors``, ``domain_insecure`` -> the file's
    key), which the option replaces. ``several_anchors``: ``--trust-anchor`` may be
    repeated (the stub's ``dnssec_trust_anchors`` is a list)."""
    p.add_argument("--private-address", metavar="NET", action="append",
                   help="remove addresses of NET (e.g. 10.0.0.0/8, fd00::/8) from forwarded "
                        "answers: DNS rebinding protection, as Unbound's private-address "
                        f"(repeatable; replaces {fields['private_addresses']})")
    p.add_argument("--private-domain", metavar="NAME", action="append",
                   help="names at or under NAME may hold private addresses, as Unbound's "
                        f"private-domain (repeatable; replaces {fields['private_domains']})")
    p.add_argument("--dnssec", action="store_true",
                   help="validate forwarded answers with DNSSEC: AD for secure ones, "
                        "SERVFAIL with an Extended DNS Error for bogus ones (default: off; "
                        f"{fields['dnssec']})")
    p.add_argument("--trust-anchor", metavar="FILE",
                   action="append" if several_anchors else "store",
                   help="DS or DNSKEY records to start validation from, as Unbound's "
                        "trust-anchor-file ("
                        + ("repeatable, all loaded; " if several_anchors else "")
                        + "default: /usr/share/dns/root.key if present, else the built-in "
                        f"root keys; replaces {fields['trust_anchors']})")
    p.add_argument("--domain-insecure", metavar="NAME", action="append",
                   help="do not validate NAME and the names under it, as Unbound's "
                        f"domain-insecure (repeatable; replaces {fields['domain_insecure']})")
