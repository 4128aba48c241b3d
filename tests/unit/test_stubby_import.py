"""stubby.yml -> dnstls stub TOML: the YAML subset, the mapping, what is dropped."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dnstls.cli.main import main as cli_main
from dnstls.errors import ConfigError
from dnstls.stub import stub_config_from_data
from dnstls.stubby import convert, convert_file, parse_yaml

PIN1 = "62lKu9HsDVbyiPenApnc4sfmSYTHOVfFgL3pyB+cBL4="
PIN2 = "cE2ecALeE5B+urJhDrJlVFmf38cJLAvqekONvjvpqUA="

# Shaped like Debian's /etc/stubby/stubby.yml (comments, odd spacing, unquoted pins).
STUBBY_YML = f"""\
# Stubby config
resolution_type: GETDNS_RESOLUTION_STUB
dns_transport_list:
  - GETDNS_TRANSPORT_TLS
tls_authentication: GETDNS_AUTHENTICATION_REQUIRED
tls_query_padding_blocksize: 128
edns_client_subnet_private : 1
round_robin_upstreams: 1
idle_timeout: 10000
appdata_dir: "/var/cache/stubby"   # trust anchors
listen_addresses:
  - 127.0.0.1@5353
  -  0::1@5353
upstream_recursive_servers:
## The Surfnet/Sinodun servers
  - address_data: 145.100.185.15
    tls_auth_name: "dnsovertls.sinodun.com"
    tls_pubkey_pinset:
      - digest: "sha256"
        value: {PIN1}
  - address_data: 2001:610:1:40ba:145:100:185:16
    tls_port: 853
    tls_auth_name: 'dnsovertls1.sinodun.com'
    tls_pubkey_pinset:
      - digest: "sha256"
        value: {PIN2}
      - {{digest: "sha256", value: {PIN1}}}
    tls_cipher_list: "EECDH+AESGCM"
"""


def test_parse_yaml_subset() -> None:
    data = parse_yaml(STUBBY_YML)
    assert data["dns_transport_list"] == ["GETDNS_TRANSPORT_TLS"]
    assert data["edns_client_subnet_private"] == 1
    assert data["appdata_dir"] == "/var/cache/stubby"
    assert data["listen_addresses"] == ["127.0.0.1@5353", "0::1@5353"]
    first, second = data["upstream_recursive_servers"]
    assert first == {"address_data": "145.100.185.15",
                     "tls_auth_name": "dnsovertls.sinodun.com",
                     "tls_pubkey_pinset": [{"digest": "sha256", "value": PIN1}]}
    assert second["address_data"] == "2001:610:1:40ba:145:100:185:16"
    assert second["tls_port"] == 853 and second["tls_auth_name"] == "dnsovertls1.sinodun.com"
    assert second["tls_pubkey_pinset"][1] == {"digest": "sha256", "value": PIN1}


@pytest.mark.parametrize(("text", "expected"), [
    ("a: [1, two, \"th,ree\"]\n", {"a": [1, "two", "th,ree"]}),
    ("a:\n- x\n- y\nb: true\n", {"a": ["x", "y"], "b": True}),
    ("a: 'it''s'\nb: \"q\\\"x\"\nc: ~\n", {"a": "it's", "b": 'q"x', "c": None}),
    ("---\na:\n  b:\n    c: 1\n", {"a": {"b": {"c": 1}}}),
    ("a: x # comment\nb: \"#not\"\n", {"a": "x", "b": "#not"}),
    ("- a: 1\n  b: 2\n- c\n", [{"a": 1, "b": 2}, "c"]),
    ("a: {k: v, n: [1, 2]}\n", {"a": {"k": "v", "n": [1, 2]}}),
    ("", {}),
])
def test_parse_yaml_cases(text: str, expected: object) -> None:
    assert parse_yaml(text) == expected


@pytest.mark.parametrize(("text", "line"), [
    ("a: &x 1\n", 1), ("a: 1\nb: *x\n", 2), ("a: |\n  text\n", 1),
    ("a: 1\n   b: 2\n", 2), ("a: 1\na: 2\n", 2), ("a: [1, 2\n", 1),
    ("a: 1\n---\nb: 2\n", 2), ("just text\n", 1), ("a:\n\t- x\n", 2),
])
def test_parse_yaml_refuses_what_it_does_not_know(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, source="s.yml")
    assert info.value.field == f"s.yml:{line}"


def test_convert_produces_loadable_equivalent_toml() -> None:
    text = convert(parse_yaml(STUBBY_YML))
    assert "WARNING" not in text
    data = tomllib.loads(text)
    assert data["listen_addresses"] == ["127.0.0.1@5353", "0::1@5353"]
    assert data["round_robin_upstreams"] == 1 and data["idle_timeout"] == 10000
    assert data["tls_query_padding_blocksize"] == 128
    assert data["tls_authentication"] == "GETDNS_AUTHENTICATION_REQUIRED"
    first, second = data["upstream_recursive_servers"]
    assert first["tls_pubkey_pinset"] == [{"digest": "sha256", "value": PIN1}]
    assert second["tls_port"] == 853 and len(second["tls_pubkey_pinset"]) == 2
    cfg = stub_config_from_data(data)
    assert cfg.listen == ("127.0.0.1:5353", "[::1]:5353") and cfg.strategy == "round_robin"
    assert [u.spec.tls_auth_name for u in cfg.upstreams] == ["dnsovertls.sinodun.com",
                                                             "dnsovertls1.sinodun.com"]
    assert cfg.upstreams[1].spec.tls_pubkey_pinset == (PIN2, PIN1)
    assert cfg.upstreams[0].spec.idle_timeout == 10.0
    # what has no equivalent is listed, with the reason
    tail = text.split("# Not carried over:")[1]
    for word in ("resolution_type", "appdata_dir", "edns_client_subnet_private",
                 "upstream_recursive_servers[1].tls_cipher_list"):
        assert word in tail
    assert "dns_transport_list" not in text  # TLS only: nothing to say


def test_convert_flags_cleartext_transports_and_unauthenticatable_servers() -> None:
    yml = ("dns_transport_list:\n  - GETDNS_TRANSPORT_TLS\n  - GETDNS_TRANSPORT_UDP\n"
           "upstream_recursive_servers:\n  - address_data: 192.0.2.1\n")
    text = convert(parse_yaml(yml))
    assert "never falls back to cleartext" in text
    assert "# WARNING: dnstls stub will refuse this file as it is: " \
           "upstream_recursive_servers[0]: tls://192.0.2.1:853 cannot be authenticated" in text
    with pytest.raises(ConfigError) as info:
        convert(["not", "a", "mapping"])
    assert info.value.field == "stubby.yml"
    with pytest.raises(ConfigError) as info:
        convert({"upstream_recursive_servers": [{"address_data": "192.0.2.1",
                                                 "tls_pubkey_pinset": "x"}]})
    assert info.value.field == "upstream_recursive_servers[0].tls_pubkey_pinset"


def test_import_stubby_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stubby.yml"
    path.write_text(STUBBY_YML)
    assert cli_main(["stub", "--import-stubby", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == convert_file(path)
    toml = tmp_path / "stub.toml"
    toml.write_text(out)
    assert cli_main(["stub", "--config", str(toml), "--check"]) == 0
    assert "upstream: tls://145.100.185.15:853#dnsovertls.sinodun.com" in \
        capsys.readouterr().out
    assert cli_main(["stub", "--import-stubby", str(tmp_path / "none.yml")]) == 2
    assert "--import-stubby: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["dnssec", "dnssec_return_status"])
def test_dnssec_settings_are_carried_over(tmp_path: Path, key: str) -> None:
    anchor = tmp_path / "getdns-root.key"
    anchor.write_text(". IN DS 20326 8 2 "
                      "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n")
    yml = (f"{key}: GETDNS_EXTENSION_TRUE\ndnssec_trust_anchors: \"{anchor}\"\n"
           "appdata_dir: \"/var/cache/stubby\"\ntrust_anchors_backoff_time: 2500\n"
           "upstream_recursive_servers:\n  - address_data: 192.0.2.1\n"
           "    tls_auth_name: dns.test\n")
    text = convert(parse_yaml(yml))
    assert "WARNING" not in text
    data = tomllib.loads(text)
    assert data["dnssec"] is True and data["dnssec_trust_anchors"] == str(anchor)
    cfg = stub_config_from_data(data)
    assert cfg.dnssec and cfg.dnssec_trust_anchors == (str(anchor),)
    tail = text.split("# Not carried over:")[1]
    assert "appdata_dir" in tail and "trust_anchors_backoff_time" in tail
    assert "never fetches trust anchors" in tail
    assert f"#   {key}:" not in tail and "#   dnssec_trust_anchors:" not in tail


def test_dnssec_false_list_of_anchors_and_what_cannot_be_carried() -> None:
    data = tomllib.loads(convert(parse_yaml(
        "dnssec: GETDNS_EXTENSION_FALSE\ndnssec_trust_anchors: [/a.key, /b.key]\n")))
    assert data["dnssec"] is False and data["dnssec_trust_anchors"] == ["/a.key", "/b.key"]
    text = convert(parse_yaml("dnssec: yes_please\ndnssec_trust_anchors:\n"
                              "  - {name: ., type: GETDNS_RRTYPE_DS}\n"))
    tail = text.split("# Not carried over:")[1]
    assert "dnssec: 'yes_please' (expected GETDNS_EXTENSION_TRUE" in tail
    assert "dnstls reads trust anchors from files only" in tail
