"""Fixtures the DNSSEC validator's unit tests share: the signed test hierarchy signed at
:data:`fakes.signed_zones.T0` and the root's DNSKEY set as the trust anchor. A test
module registers them by assignment (``zones = dnssec_fixtures.zones``): a conftest.py
under tests/unit would shadow the integration tests' ``from conftest import ...``."""

from __future__ import annotations

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from dnstls.resolver.dnssec import TrustAnchors
from fakes.signed_zones import T0, build_hierarchy


@pytest.fixture(scope="module")
def zones() -> dict[str, dns.zone.Zone]:
    built, _ = build_hierarchy(now=T0)
    return built


@pytest.fixture(scope="module")
def anchors(zones: dict[str, dns.zone.Zone]) -> TrustAnchors:
    keys = zones["."].nodes[dns.name.root].get_rdataset(dns.rdataclass.IN,
                                                         dns.rdatatype.DNSKEY)
    assert keys is not None
    return TrustAnchors.from_text("".join(f". IN DNSKEY {k.to_text()}\n" for k in keys))
