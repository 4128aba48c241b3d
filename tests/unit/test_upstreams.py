"""Upstream URIs and [[upstream]] tables: parsing, defaults, dotted-path errors."""

from __future__ import annotations

import base64
import hashlib
import tomllib

import pytest

from dnstls.errors import ConfigError
from dnstls.upstreams import (
    UpstreamSpec,
    default_upstreams,
    parse_upstream_uri,
    upstreams_from_toml,
)

PIN = base64.b64encode(hashlib.sha256(b"key").digest()).decode()
SHORT = base64.b64encode(b"x" * 20).decode()


@pytest.mark.parametrize(("uri", "address", "port", "transport", "name"), [
    ("udp://192.0.2.1", "192.0.2.1", 53, "udp", None),
    ("tcp://192.0.2.1:5353", "192.0.2.1", 5353, "tcp", None),
    ("tls://1.1.1.1#cloudflare-dns.com", "1.1.1.1", 853, "tls", "cloudflare-dns.com"),
    ("TLS://[2606:4700::1111]:8853#one.one.one.one.", "2606:4700::1111", 8853, "tls",
     "one.one.one.one"),
])
def test_uri_forms(uri: str, address: str, port: int, transport: str, name: str | None) -> None:
    spec = parse_upstream_uri(uri)
    assert (spec.address, spec.port, spec.transport, spec.tls_auth_name) == (
        address, port, transport, name)
    assert parse_upstream_uri(spec.uri) == spec  # round trip
    assert spec.name == spec.uri


def test_uri_with_pins_and_ca_file() -> None:
    spec = parse_upstream_uri("tls://127.0.0.1", pins=[f"pin-sha256={PIN}"], ca_file="/ca.pem")
    assert spec.tls_pubkey_pinset == (PIN,) and spec.ca_file == "/ca.pem"
    assert spec.tls_auth_name is None and not spec.opportunistic


@pytest.mark.parametrize(("uri", "message"), [
    ("1.1.1.1", "expected udp://"),
    ("https://1.1.1.1", "unknown transport 'https'"),
    ("tls://1.1.1.1", "strict TLS needs tls_auth_name"),
    ("tls://dns.example#dns.example", "is not an IP address"),
    ("tcp://1.1.1.1:99999", "out of range"),
    ("tls://::1#x.test", "brackets"),
    ("udp://1.1.1.1#name.test", "only to tls://"),
    ("tls://1.1.1.1/dns-query#x.test", "unexpected path"),
    ("tls://1.1.1.1#bad..name", "not a valid host name"),
])
def test_bad_uris_name_the_problem(uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_upstream_uri(uri, path="upstream[0].uri")
    assert info.value.field == "upstream[0].uri"
    assert message in info.value.message


def test_bad_pin_on_the_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_upstream_uri("tls://1.1.1.1", pins=["abc"])
    assert info.value.field == "upstream.pins[0]"


TOML = f"""
[[upstream]]
uri = "tls://1.1.1.1#cloudflare-dns.com"

[[upstream]]
address = "9.9.9.9"
tls_auth_name = "dns.quad9.net"
tls_pubkey_pinset = [{{ digest = "sha256", value = "{PIN}" }}]
idle_timeout = 5
max_connections = 4
max_queries_per_connection = 50

[[upstream]]
address = "192.0.2.53"
transport = "udp"

[[upstream]]
uri = "tls://127.0.0.1:8853"
tls_pubkey_pinset = [{{ digest = "sha256", value = "{PIN}" }}]
"""


def test_toml_tables() -> None:
    specs = upstreams_from_toml(tomllib.loads(TOML)["upstream"])
    assert [s.name for s in specs] == ["tls://1.1.1.1:853#cloudflare-dns.com",
                                       "tls://9.9.9.9:853#dns.quad9.net",
                                       "udp://192.0.2.53:53", "tls://127.0.0.1:8853"]
    quad9 = specs[1]
    assert quad9.tls_pubkey_pinset == (PIN,) and quad9.idle_timeout == 5
    assert (quad9.max_connections, quad9.max_queries_per_connection) == (4, 50)
    assert specs[3].tls_pubkey_pinset == (PIN,)


@pytest.mark.parametrize(("table", "field", "message"), [
    ({"address": "9.9.9.9", "tls_auth_name": "x.test",
      "tls_pubkey_pinset": [{"digest": "sha256", "value": "ab!c"}]},
     "upstream[1].tls_pubkey_pinset[0].value", "not valid base64"),
    ({"address": "9.9.9.9", "tls_pubkey_pinset": [{"digest": "sha256", "value": SHORT}]},
     "upstream[1].tls_pubkey_pinset[0].value", "decodes to 20 bytes"),
    ({"address": "9.9.9.9", "tls_pubkey_pinset": [{"digest": "sha1", "value": PIN}]},
     "upstream[1].tls_pubkey_pinset[0].digest", "only \"sha256\""),
    ({"address": "9.9.9.9", "tls_pubkey_pinset": "x"},
     "upstream[1].tls_pubkey_pinset", "expected a list"),
    ({"address": "9.9.9.9", "tls_auth_name": "x.test", "colour": "red"},
     "upstream[1].colour", "unknown key"),
    ({"tls_auth_name": "x.test"}, "upstream[1].address", "missing"),
    ({"address": "9.9.9.9", "tls_auth_name": "x.test", "port": "853"},
     "upstream[1].port", "expected an integer"),
    ({"address": "9.9.9.9", "tls_auth_name": "x.test", "max_connections": 0},
     "upstream[1].max_connections", "out of range"),
    ({"address": "9.9.9.9", "transport": "quic"}, "upstream[1].transport", "expected udp"),
    ({"uri": "tls://9.9.9.9#x.test", "port": 53}, "upstream[1].port", "either uri"),
    ({"uri": "tls://9.9.9.9#x.test", "opportunistic": True}, "upstream[1].opportunistic",
     "not authenticated"),
    ({"address": "9.9.9.9", "transport": "udp", "tls_auth_name": "x.test"}, "upstream[1]",
     "cannot be authenticated"),
    ({"uri": "tls://1.1.1.1#cloudflare-dns.com"}, "upstream[1]", "duplicate of upstream[0]"),
    ({"address": "9.9.9.9", "tls_auth_name": "x.test", "tls_pubkey_pinset_mode": "audit"},
     "upstream[1].tls_pubkey_pinset_mode", "expected \"enforce\" or \"report\""),
    ({"address": "9.9.9.9", "tls_auth_name": "x.test", "tls_pubkey_pinset_mode": True},
     "upstream[1].tls_pubkey_pinset_mode", "expected a string"),
    ({"address": "9.9.9.9", "tls_pubkey_pinset": [PIN], "tls_pubkey_pinset_mode": "report"},
     "upstream[1].tls_pubkey_pinset_mode", "need tls_auth_name"),  # never unauthenticated
    ("tls://1.1.1.1", "upstream[1]", "expected a table"),
])
def test_toml_errors_name_the_dotted_path(table: object, field: str, message: str) -> None:
    items = [{"uri": "tls://1.1.1.1#cloudflare-dns.com"}, table]
    with pytest.raises(ConfigError) as info:
        upstreams_from_toml(items)
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value).startswith(field)


def test_pinset_mode() -> None:
    enforce, report = upstreams_from_toml([
        {"uri": "tls://192.0.2.1#dns.test", "tls_pubkey_pinset": [PIN]},
        {"uri": "tls://192.0.2.2#dns.test", "tls_pubkey_pinset": [PIN],
         "tls_pubkey_pinset_mode": "report"}])
    assert enforce.tls_pubkey_pinset_mode == "enforce"  # the default
    assert report.tls_pubkey_pinset_mode == "report" and report.tls_pubkey_pinset == (PIN,)
    # report mode without pins says nothing and needs no name beyond strict's rules
    (spec,) = upstreams_from_toml([{"address": "192.0.2.3", "tls_auth_name": "dns.test",
                                    "tls_pubkey_pinset_mode": "report"}])
    assert spec.tls_pubkey_pinset_mode == "report" and spec.tls_pubkey_pinset == ()


def test_toml_not_a_list_and_opportunistic_ok() -> None:
    with pytest.raises(ConfigError):
        upstreams_from_toml({"uri": "udp://1.2.3.4"})
    (spec,) = upstreams_from_toml([{"address": "192.0.2.1", "opportunistic": True}])
    assert spec.opportunistic and spec.transport == "tls" and spec.port == 853


def test_defaults_are_cloudflare_over_dot_strict() -> None:
    specs = default_upstreams()
    assert [s.name for s in specs] == ["tls://1.1.1.1:853#cloudflare-dns.com",
                                       "tls://1.0.0.1:853#cloudflare-dns.com"]
    assert all(s.ca_file is None and not s.opportunistic for s in specs)
    assert specs[0].idle_timeout == 8.0


def test_spec_is_frozen_and_keyed() -> None:
    spec = UpstreamSpec("127.0.0.1", 53, "udp")
    with pytest.raises(AttributeError):
        spec.port = 54  # type: ignore[misc]
    assert spec.key == ("127.0.0.1", 53, "udp", None)


# -- [[forward_zone]] and --forward-zone ---------------------------------------------


def zones_toml(text: str) -> list[object]:
    from dnstls.upstreams import forward_zones_from_toml

    return forward_zones_from_toml(tomllib.loads(text)["forward_zone"])  # type: ignore[return-value]


def test_forward_zone_tables() -> None:
    from dnstls.upstreams import ForwardZoneSpec

    zones = zones_toml(f'''
[[forward_zone]]
name = "Corp.Example"
strategy = "ordered"
[[forward_zone.upstream]]
uri = "udp://10.0.0.53"
[[forward_zone.upstream]]
uri = "tls://10.0.0.54#dns.corp.example"
tls_pubkey_pinset = [{{digest = "sha256", value = "{PIN}"}}]

[[forward_zone]]
name = "168.192.in-addr.arpa."
[[forward_zone.upstream]]
address = "192.168.1.1"
transport = "udp"
''')
    first, second = zones
    assert isinstance(first, ForwardZoneSpec) and isinstance(second, ForwardZoneSpec)
    assert first.name == "corp.example." and first.strategy == "ordered"
    assert [u.name for u in first.upstreams] == ["udp://10.0.0.53:53",
                                                 "tls://10.0.0.54:853#dns.corp.example"]
    assert first.upstreams[1].tls_pubkey_pinset == (PIN,)
    assert second.name == "168.192.in-addr.arpa." and second.strategy is None
    assert [u.name for u in second.upstreams] == ["udp://192.168.1.1:53"]


@pytest.mark.parametrize(("text", "field", "message"), [
    ('[[forward_zone]]\nname = "."\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"',
     "forward_zone[0].name", "use|[[upstream]]"),
    ('[[forward_zone]]\nname = ""\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"',
     "forward_zone[0].name", "[[upstream]]"),
    ('[[forward_zone]]\nname = "a..b"\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"',
     "forward_zone[0].name", "not a valid domain name"),
    (f'[[forward_zone]]\nname = "{"x" * 64}.example"\n[[forward_zone.upstream]]\n'
     'uri = "udp://10.0.0.1"', "forward_zone[0].name", "not a valid domain name"),
    ('[[forward_zone]]\nname = 5\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"',
     "forward_zone[0].name", "expected a domain name"),
    ('[[forward_zone]]\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"',
     "forward_zone[0].name", "required"),
    ('[[forward_zone]]\nname = "corp.example"', "forward_zone[0].upstream", "no upstream"),
    ('[[forward_zone]]\nname = "corp.example"\nupstream = []', "forward_zone[0].upstream",
     "no upstream"),
    ('[[forward_zone]]\nname = "a.example"\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"\n'
     '[[forward_zone]]\nname = "corp.example"\n[[forward_zone.upstream]]\n'
     'uri = "udp://10.0.0.1"\n[[forward_zone.upstream]]\nuri = "udp://10.0.0.2"\n'
     '[[forward_zone.upstream]]\nuri = "udp://10.0.0.x"', "forward_zone[1].upstream[2].uri",
     "not an IP address"),
    ('[[forward_zone]]\nname = "corp.example"\n[[forward_zone.upstream]]\n'
     'uri = "tls://10.0.0.1"', "forward_zone[0].upstream[0]", "strict TLS"),
    ('[[forward_zone]]\nname = "corp.example"\n[[forward_zone.upstream]]\n'
     'uri = "udp://10.0.0.1"\n[[forward_zone]]\nname = "CORP.example."\n'
     '[[forward_zone.upstream]]\nuri = "udp://10.0.0.2"', "forward_zone[1].name",
     "duplicate of forward_zone[0]"),
    ('[[forward_zone]]\nname = "corp.example"\nstrategy = "random"\n'
     '[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"', "forward_zone[0].strategy",
     "unknown strategy"),
    ('[[forward_zone]]\nname = "corp.example"\nforward_first = true\n'
     '[[forward_zone.upstream]]\nuri = "udp://10.0.0.1"', "forward_zone[0].forward_first",
     "unknown key"),
    ('[[forward_zone]]\nname = "corp.example"\nupstream = "udp://10.0.0.1"',
     "forward_zone[0].upstream", "array of tables"),
])
def test_forward_zone_errors_name_the_field(text: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        zones_toml(text)
    assert info.value.field == field
    assert any(part in str(info.value) for part in message.split("|"))


def test_forward_zone_args() -> None:
    from dnstls.upstreams import forward_zones_from_args

    zones = forward_zones_from_args(["Corp.Example=udp://10.0.0.53, tcp://10.0.0.54:5353",
                                     "home.arpa.=udp://192.168.1.1"])
    assert [(z.name, [u.name for u in z.upstreams], z.strategy) for z in zones] == [
        ("corp.example.", ["udp://10.0.0.53:53", "tcp://10.0.0.54:5353"], None),
        ("home.arpa.", ["udp://192.168.1.1:53"], None)]


@pytest.mark.parametrize(("values", "field", "message"), [
    (["corp.example"], "--forward-zone[0]", "NAME=URI"),
    (["corp.example="], "--forward-zone[0]", "no upstream"),
    ([".=udp://10.0.0.1"], "--forward-zone[0]", "--upstream"),
    (["a.example=udp://10.0.0.1", "corp.example=udp://10.0.0.1,tls://10.0.0.2"],
     "--forward-zone[1].upstream[1]", "strict TLS"),
    (["corp.example=udp://10.0.0.1,,udp://10.0.0.2"], "--forward-zone[0]", "empty URI"),
    (["corp.example=udp://10.0.0.1,udp://10.0.0.1:53"], "--forward-zone[0].upstream[1]",
     "twice"),
    (["corp.example=udp://10.0.0.1", "Corp.Example.=udp://10.0.0.2"], "--forward-zone[1]",
     "duplicate of --forward-zone[0]"),
])
def test_forward_zone_arg_errors(values: list[str], field: str, message: str) -> None:
    from dnstls.upstreams import forward_zones_from_args

    with pytest.raises(ConfigError) as info:
        forward_zones_from_args(values)
    assert info.value.field == field and message in str(info.value)


# ------------------------------------------------------------------------ stub zones

def test_stub_zones_from_toml_and_args() -> None:
    from dnstls.upstreams import stub_zones_from_args, stub_zones_from_toml

    zones = stub_zones_from_toml([
        {"name": "Corp.Example", "addresses": ["10.0.0.53", "10.0.0.54@5353"]},
        {"name": "lab.test.", "addresses": ["2001:db8::53@5300"]}])
    assert [(z.name, z.addresses) for z in zones] == [
        ("corp.example.", (("10.0.0.53", 53), ("10.0.0.54", 5353))),
        ("lab.test.", (("2001:db8::53", 5300),))]
    assert zones[0].describe() == "10.0.0.53@53, 10.0.0.54@5353"
    args = stub_zones_from_args(["corp.example=10.0.0.53,127.0.0.1@5353"])
    assert args[0].addresses == (("10.0.0.53", 53), ("127.0.0.1", 5353))


@pytest.mark.parametrize(("items", "field", "words"), [
    ([{"name": "corp.example."}], "stub_zone[0].addresses", "has no address"),
    ([{"name": ".", "addresses": ["10.0.0.53"]}], "stub_zone[0].name", "root_hints"),
    ([{"name": "a.", "addresses": ["ns.a."]}], "stub_zone[0].addresses[0]",
     "not an IP address"),
    ([{"name": "a.", "addresses": ["10.0.0.1@0"]}], "stub_zone[0].addresses[0]", "1-65535"),
    ([{"name": "a.", "addresses": ["10.0.0.1"], "prime": True}], "stub_zone[0].prime",
     "unknown key"),
    ([{"name": "a.", "addresses": ["10.0.0.1"]}, {"name": "A", "addresses": ["10.0.0.2"]}],
     "stub_zone[1].name", "duplicate of stub_zone[0]"),
    ({"name": "a."}, "stub_zone", "array of tables"),
])
def test_stub_zone_errors_name_the_field(items: object, field: str, words: str) -> None:
    from dnstls.upstreams import stub_zones_from_toml

    with pytest.raises(ConfigError) as info:
        stub_zones_from_toml(items)
    assert info.value.field == field and words in str(info.value)


def test_stub_zone_flag_errors() -> None:
    from dnstls.upstreams import stub_zones_from_args

    with pytest.raises(ConfigError, match=r"^--stub-zone\[0\]: 'corp.example': expected"):
        stub_zones_from_args(["corp.example"])
    with pytest.raises(ConfigError, match=r"^--stub-zone\[0\]: stub zone corp.example. has "):
        stub_zones_from_args(["corp.example="])
