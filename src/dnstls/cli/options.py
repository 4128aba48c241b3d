"""Command-line options that ``dnstls serve`` and ``dnstls stub`` share, spelt once."""

from __future__ import annotations

import argparse


def add_service_options(p: argparse.ArgumentParser) -> None:
    """``--no-cache``, ``--metrics`` and ``--log-queries`` (RFC 8932: off by default)."""
    p.add_argument("--no-cache", action="store_true", help="disable the answer cache")
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="Prometheus metrics endpoint (at /metrics)")
    p.add_argument("--log-queries", action="store_true",
                   help="log every query name (off by default, RFC 8932)")
