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
