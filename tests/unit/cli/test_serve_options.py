"""``dnstls serve`` options that shape the configuration (--forward-zone)."""

from __future__ import annotations

import argparse

import pytest

from dnstls import config
from dnstls.cli.main import build_parser
from dnstls.cli.serve import overrides, with_forward_zones
from dnstls.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_forward_zone_flags_replace_the_file_zones() -> None:
    args = parse("--forward-zone", "corp.example=udp://10.0.0.53,udp://10.0.0.54",
                 "--forward-zone", "home.arpa=udp://192.168.1.1")
    base = config.load(overrides={"forward_zone": [
        {"name": "other.example", "upstream": [{"uri": "udp://10.9.9.9"}]}]})
    cfg = with_forward_zones(base, args)
    assert [(z.name, len(z.upstreams)) for z in cfg.forward.zones] == [
        ("corp.example.", 2), ("home.arpa.", 1)]
    assert with_forward_zones(base, parse()) is base  # not given: the file's


def test_forward_zone_conflicts_with_no_upstream() -> None:
    args = parse("--no-upstream", "--forward-zone", "corp.example=udp://10.0.0.53")
    with pytest.raises(ConfigError) as info:
        with_forward_zones(config.load(overrides=overrides(args)), args)
    assert info.value.field == "--forward-zone"


def test_forward_zone_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        with_forward_zones(config.load(), parse("--forward-zone", "corp.example"))
    assert info.value.field == "--forward-zone[0]"


def test_local_zone_type_and_blocklist_flags() -> None:
    args = parse("--local-zone-type", "ads.example. always_nxdomain",
                 "--local-zone-type", "corp.example. refuse", "--blocklist", "/etc/ads.txt")
    cfg = config.load(overrides=overrides(args))
    assert cfg.local.zone_types == ("ads.example. always_nxdomain", "corp.example. refuse")
    assert [(b.file, b.type) for b in cfg.local.blocklist] == [
        ("/etc/ads.txt", "always_nxdomain")]
    with pytest.raises(ConfigError, match=r"^local\.zone_types\[0\]: unknown local-zone "):
        config.load(overrides=overrides(parse("--local-zone-type", "ads.example. nope")))
