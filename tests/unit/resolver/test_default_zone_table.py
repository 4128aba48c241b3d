"""The default zones: the table, the matching (at/under, any case), nodefault, a
configured zone replacing one, and the answers LocalData gives from them."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from dnstls import config
from dnstls.errors import ConfigError
from dnstls.proto.answers import Transport
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.default_zones import (
    DEFAULT_ZONE_NAMES,
    DEFAULT_ZONES,
    default_zone,
    default_zones,
    parse_nodefault,
)
from dnstls.resolver.local import LocalData, load_zone

N = dns.name.from_text
V6_LOOPBACK = "1." + "0." * 31 + "ip6.arpa."


class Next:
    """The stage after local data: records what would have been forwarded."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def resolve(self, request: Request) -> dns.message.Message:
        self.seen.append(request.message.question[0].name.to_text())
        raise ResolveFailure(dns.rcode.SERVFAIL)


def test_the_table_is_unbounds() -> None:
    # Unbound 1.17's default local zones (man unbound.conf): 7 + RFC 1918 (18) + 6
    # reserved IPv4 + 64 of 100.64/10 + 7 IPv6
    assert len(DEFAULT_ZONE_NAMES) == len(DEFAULT_ZONES) == 7 + 18 + 6 + 64 + 7
    for name in ("localhost.", "127.in-addr.arpa.", V6_LOOPBACK, "home.arpa.", "onion.",
                 "test.", "invalid.", "10.in-addr.arpa.", "16.172.in-addr.arpa.",
                 "31.172.in-addr.arpa.", "168.192.in-addr.arpa.", "0.in-addr.arpa.",
                 "254.169.in-addr.arpa.", "2.0.192.in-addr.arpa.",
                 "100.51.198.in-addr.arpa.", "113.0.203.in-addr.arpa.",
                 "255.255.255.255.in-addr.arpa.", "64.100.in-addr.arpa.",
                 "127.100.in-addr.arpa.", "0." * 32 + "ip6.arpa.", "d.f.ip6.arpa.",
                 "8.e.f.ip6.arpa.", "b.e.f.ip6.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa."):
        assert N(name) in DEFAULT_ZONES, name
    for name in ("15.172.in-addr.arpa.", "32.172.in-addr.arpa.", "63.100.in-addr.arpa.",
                 "128.100.in-addr.arpa.", "c.e.f.ip6.arpa.", "local.", "example.",
                 "resolver.arpa.", "in-addr.arpa.", "arpa."):
        assert N(name) not in DEFAULT_ZONES, name


@pytest.mark.parametrize(("name", "zone"), [
    ("localhost.", "localhost."),
    ("LocalHost.", "localhost."),
    ("a.b.LOCALHOST.", "localhost."),
    ("1.0.0.127.in-addr.arpa.", "127.in-addr.arpa."),
    ("1.0.168.192.IN-ADDR.ARPA.", "168.192.in-addr.arpa."),
    ("168.192.in-addr.arpa.", "168.192.in-addr.arpa."),
    ("x.y.onion.", "onion."),
    ("router.home.arpa.", "home.arpa."),
    ("1.0.20.172.in-addr.arpa.", "20.172.in-addr.arpa."),
    ("1.D.F.ip6.arpa.", "d.f.ip6.arpa."),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
     V6_LOOPBACK),
])
def test_names_at_or_under_a_default_zone(name: str, zone: str) -> None:
    assert default_zone(N(name)) == N(zone)


@pytest.mark.parametrize("name", [
    "example.com.", "localhost.example.", "xlocalhost.", "onion.example.", "arpa.",
    "in-addr.arpa.", "192.in-addr.arpa.", "1.0.32.172.in-addr.arpa.",
    "1.1.1.1.in-addr.arpa.", "e.f.ip6.arpa.", "c.e.f.ip6.arpa.", "foo.local.", ".",
])
def test_names_outside_the_default_zones(name: str) -> None:
    assert default_zone(N(name)) is None


def test_nodefault_names_default_zones_only() -> None:
    assert parse_nodefault(["168.192.IN-ADDR.ARPA", "onion."]) == {
        N("168.192.in-addr.arpa."), N("onion.")}
    with pytest.raises(ConfigError) as info:
        parse_nodefault(["onion", "1.168.192.in-addr.arpa"])
    assert info.value.field == "local.nodefault[1]"
    assert "not a default zone" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_nodefault(["a..b"])
    assert info.value.field == "local.nodefault[0]"


def test_config_validates_nodefault() -> None:
    cfg = config.load(overrides={"local": {"nodefault": ["10.in-addr.arpa"]}})
    assert cfg.local.default_zones is True and cfg.local.nodefault == ("10.in-addr.arpa",)
    assert config.load().local.default_zones is True
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"local": {"nodefault": ["example.com"]}})
    assert info.value.field == "local.nodefault[0]"
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"local": {"default_zones": "yes"}})
    assert info.value.field == "local.default_zones"


def test_nodefault_and_configured_zones_are_left_out() -> None:
    origins = {z.origin for z in default_zones()}
    assert origins == DEFAULT_ZONES
    origins = {z.origin for z in default_zones(nodefault=[N("onion.")],
                                               configured=[N("home.arpa.")])}
    assert origins == DEFAULT_ZONES - {N("onion."), N("home.arpa.")}


async def ask(stage: LocalData, name: str, rdtype: str = "A",
              rdclass: str = "IN") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, rdclass, use_edns=0)
    return await stage.resolve(Request(q, Transport.UDP, None, deadline=0.0))


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return [line for rrset in section for line in rrset.to_text().splitlines()]


@pytest.fixture
def stage() -> tuple[LocalData, Next]:
    nxt = Next()
    return LocalData(nxt, zones=default_zones(), refuse_other_classes=True), nxt


SOA = "localhost. nobody.invalid. 1 3600 1200 604800 10800"


async def test_localhost_answers(stage: tuple[LocalData, Next]) -> None:
    local, nxt = stage
    for name in ("localhost.", "foo.localhost.", "a.b.LOCALHOST."):
        r = await ask(local, name, "A")
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert texts(r.answer) == [f"{name} 10800 IN A 127.0.0.1"]
        r = await ask(local, name, "AAAA")
        assert texts(r.answer) == [f"{name} 10800 IN AAAA ::1"]
        r = await ask(local, name, "MX")  # NODATA with the zone's SOA
        assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.flags & dns.flags.AA
        assert texts(r.authority) == [f"localhost. 10800 IN SOA {SOA}"]
    # the apex has the zone's own NS and SOA; names under it do not (RFC 6761 §6.3)
    assert texts((await ask(local, "localhost.", "NS")).answer) == [
        "localhost. 10800 IN NS localhost."]
    r = await ask(local, "foo.localhost.", "NS")
    assert not r.answer and r.rcode() == dns.rcode.NOERROR
    assert nxt.seen == []


async def test_loopback_reverse_answers(stage: tuple[LocalData, Next]) -> None:
    local, nxt = stage
    r = await ask(local, "1.0.0.127.in-addr.arpa.", "PTR")
    assert texts(r.answer) == ["1.0.0.127.in-addr.arpa. 10800 IN PTR localhost."]
    r = await ask(local, V6_LOOPBACK, "PTR")
    assert texts(r.answer) == [f"{V6_LOOPBACK} 10800 IN PTR localhost."]
    r = await ask(local, "2.0.0.127.in-addr.arpa.", "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert texts(r.authority) == [f"127.in-addr.arpa. 10800 IN SOA {SOA}"]
    assert nxt.seen == []


@pytest.mark.parametrize(("name", "zone"), [
    ("foo.onion.", "onion."), ("foo.test.", "test."), ("foo.invalid.", "invalid."),
    ("router.home.arpa.", "home.arpa."), ("1.0.0.10.in-addr.arpa.", "10.in-addr.arpa."),
    ("1.0.168.192.in-addr.arpa.", "168.192.in-addr.arpa."),
    ("1.0.64.100.in-addr.arpa.", "64.100.in-addr.arpa."),
    ("1.d.f.ip6.arpa.", "d.f.ip6.arpa."),
])
async def test_the_rest_is_nxdomain_with_the_zones_soa(stage: tuple[LocalData, Next],
                                                        name: str, zone: str) -> None:
    local, nxt = stage
    r = await ask(local, name, "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA and not r.answer
    assert texts(r.authority) == [f"{zone} 10800 IN SOA {SOA}"]
    r = await ask(local, zone, "SOA")  # the apex exists
    assert texts(r.answer) == [f"{zone} 10800 IN SOA {SOA}"]
    assert nxt.seen == []


async def test_other_classes_are_refused(stage: tuple[LocalData, Next]) -> None:
    local, nxt = stage
    for name, rdclass in (("version.bind.", "CH"), ("id.server.", "CH"),
                          ("example.com.", "CH"), ("localhost.", "CH"),
                          ("example.com.", "HS")):
        r = await ask(local, name, "TXT", rdclass)
        assert r.rcode() == dns.rcode.REFUSED and not r.answer
        assert not r.flags & dns.flags.AA
        ede = [o for o in r.options if o.otype == dns.edns.OptionType.EDE]
        assert ede and ede[0].code == dns.edns.EDECode.NOT_SUPPORTED, name
        assert ede[0].text == f"class {rdclass} is not served"
    assert nxt.seen == []
    # the wire path is told these are local too (so it does not forward them)
    q = dns.message.make_query("version.bind.", "TXT", "CH")
    assert local.covers_key(key_from_message(q))
    q = dns.message.make_query("example.com.", "A")
    assert not local.covers_key(key_from_message(q))


async def test_without_default_zones_everything_goes_on() -> None:
    nxt = Next()
    local = LocalData(nxt, zones=[])
    for name, rdclass in (("localhost.", "IN"), ("foo.onion.", "IN"),
                          ("version.bind.", "CH")):
        with pytest.raises(ResolveFailure):
            await ask(local, name, "TXT", rdclass)
    assert nxt.seen == ["localhost.", "foo.onion.", "version.bind."]
    q = dns.message.make_query("version.bind.", "TXT", "CH")
    assert not local.covers_key(key_from_message(q))


async def test_a_configured_zone_wins(tmp_path: Path) -> None:
    at = tmp_path / "home.zone"
    at.write_text("$ORIGIN home.arpa.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 60\n"
                  "@ 300 IN NS ns\nns 300 IN A 192.168.1.1\nrouter 300 IN A 192.168.1.1\n")
    under = tmp_path / "lan.zone"
    under.write_text("$ORIGIN 1.168.192.in-addr.arpa.\n"
                     "@ 300 IN SOA ns.home.arpa. hostmaster.home.arpa. 1 3600 600 86400 60\n"
                     "@ 300 IN NS ns.home.arpa.\n1 300 IN PTR router.home.arpa.\n")
    zones = [load_zone(at), load_zone(under)]
    nxt = Next()
    local = LocalData(nxt, zones=zones + default_zones(
        configured=[z.origin for z in zones if z.origin is not None]),
        refuse_other_classes=True)
    r = await ask(local, "router.home.arpa.", "A")
    assert texts(r.answer) == ["router.home.arpa. 300 IN A 192.168.1.1"]
    r = await ask(local, "nope.home.arpa.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert texts(r.authority)[0].startswith("home.arpa. 60 IN SOA ns.home.arpa.")
    r = await ask(local, "1.1.168.192.in-addr.arpa.", "PTR")
    assert texts(r.answer) == ["1.1.168.192.in-addr.arpa. 300 IN PTR router.home.arpa."]
    # the rest of the default zone above it still answers NXDOMAIN
    r = await ask(local, "1.2.168.192.in-addr.arpa.", "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert texts(r.authority) == [f"168.192.in-addr.arpa. 10800 IN SOA {SOA}"]
    assert nxt.seen == []


def test_nodefault_zones_are_not_covered() -> None:
    local = LocalData(Next(), zones=default_zones(nodefault=[N("168.192.in-addr.arpa.")]),
                      refuse_other_classes=True)
    for name, covered in (("1.0.168.192.in-addr.arpa.", False),
                          ("1.0.0.10.in-addr.arpa.", True), ("foo.onion.", True),
                          ("LOCALHOST.", True), ("www.example.com.", False),
                          ("8.8.8.8.in-addr.arpa.", False)):
        q = dns.message.make_query(name, "PTR")
        assert local.covers_key(key_from_message(q)) is covered, name
        assert local.covers_wire((N(name).to_wire() or b"").lower()) is covered, name


def test_the_stub_takes_default_zones_and_nodefault() -> None:
    from dnstls.stub_config import stub_config_from_data

    base = {"upstream_recursive_servers": [{"address_data": "127.0.0.1",
                                            "tls_auth_name": "dns.test"}]}
    cfg = stub_config_from_data(base)
    assert cfg.service_config().local.default_zones is True
    cfg = stub_config_from_data({**base, "local": {"nodefault": ["Test."],
                                                   "default_zones": False}})
    local = cfg.service_config().local
    assert (local.default_zones, local.nodefault, local.zones, local.ddr) == (
        False, ("Test.",), (), False)
    for bad, field in (({"nodefault": ["example."]}, "local.nodefault[0]"),
                       ({"zones": ["/etc/x.zone"]}, "local.zones"),
                       ({"default_zones": 1}, "local.default_zones"),
                       ("yes", "local")):
        with pytest.raises(ConfigError) as info:
            stub_config_from_data({**base, "local": bad})
        assert info.value.field == field, bad
