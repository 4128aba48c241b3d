"""``dnstls stub`` configuration: Stubby vocabulary, defaults, CLI overrides, errors."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from dnstls.cli.main import main as cli_main
from dnstls.errors import ConfigError
from dnstls.stub import (
    AUTH_NONE,
    DEFAULT_UPSTREAM_ADDRESSES,
    StubOverrides,
    load_stub_config,
    parse_listen,
    stub_config_from_data,
)

PIN_A = base64.b64encode(hashlib.sha256(b"a").digest()).decode()
PIN_B = base64.b64encode(hashlib.sha256(b"b").digest()).decode()


def upstream(**kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"address_data": "192.0.2.1", "tls_auth_name": "dns.test"}
    item.update(kw)
    return {k: v for k, v in item.items() if v is not None}


def load(data: dict[str, Any], **cli: Any) -> Any:
    return stub_config_from_data(data, StubOverrides(**cli))


def test_defaults_are_cloudflare_strict_on_loopback() -> None:
    cfg = load({})
    assert cfg.listen == ("127.0.0.1:53", "[::1]:53")
    assert cfg.listen_is_default and cfg.upstreams_are_default
    assert [u.spec.address for u in cfg.upstreams] == list(DEFAULT_UPSTREAM_ADDRESSES)
    for u in cfg.upstreams:
        assert u.spec.transport == "tls" and u.spec.port == 853
        assert u.spec.tls_auth_name == "cloudflare-dns.com"
        assert u.spec.ca_file is None  # the system store
        assert not u.spec.opportunistic and not u.report_pins
        assert u.spec.tls_query_padding_blocksize == 128
        assert u.spec.idle_timeout == 8.0
    assert cfg.strategy == "round_robin" and not cfg.opportunistic
    assert cfg.query_timeout == 4.0 and cfg.cache.enabled


def test_stubby_vocabulary() -> None:
    cfg = load({
        "listen_addresses": ["127.0.0.1@5353", "0::1@5353", "127.0.0.2"],
        "round_robin_upstreams": 0, "idle_timeout": 5000, "timeout": 1500,
        "tls_authentication": "GETDNS_AUTHENTICATION_REQUIRED",
        "tls_query_padding_blocksize": 256,
        "upstream_recursive_servers": [
            upstream(tls_port=8853, tls_pubkey_pinset=[{"digest": "sha256", "value": PIN_A}]),
            upstream(address_data="2001:db8::53", tls_auth_name=None,
                     tls_pubkey_pinset=[{"digest": "sha256", "value": PIN_B}]),
        ],
        "metrics": "127.0.0.1:9153", "log_queries": True, "cache": {"enabled": False},
    })
    assert cfg.listen == ("127.0.0.1:5353", "[::1]:5353", "127.0.0.2:53")
    assert cfg.strategy == "ordered"
    first, second = (u.spec for u in cfg.upstreams)
    assert (first.address, first.port, first.tls_auth_name) == ("192.0.2.1", 8853, "dns.test")
    assert first.tls_pubkey_pinset == (PIN_A,)
    assert second.name == "tls://[2001:db8::53]:853" and second.tls_pubkey_pinset == (PIN_B,)
    assert first.idle_timeout == 5.0 and first.tls_query_padding_blocksize == 256
    assert first.query_timeout == 0.75  # per attempt: half the query's budget, at most 2 s
    assert cfg.query_timeout == 1.5
    assert not cfg.cache.enabled and cfg.log_queries and cfg.metrics == "127.0.0.1:9153"
    svc = cfg.service_config()
    assert svc.server.listen == () and svc.server.plain == cfg.listen
    assert svc.server.query_timeout == 1.5 and not svc.local.ddr
    assert svc.forward.strategy == "ordered"


@pytest.mark.parametrize(("rr", "strategy", "expected"), [
    (1, None, "round_robin"), (0, None, "ordered"), (None, "fastest", "fastest"),
    (1, "fastest", "fastest"), (True, None, "round_robin"), (None, None, "round_robin")])
def test_strategy(rr: Any, strategy: str | None, expected: str) -> None:
    data: dict[str, Any] = {}
    if rr is not None:
        data["round_robin_upstreams"] = rr
    if strategy is not None:
        data["strategy"] = strategy
    assert load(data).strategy == expected


def test_report_only_pins_reach_the_pool_with_their_mode() -> None:
    cfg = load({"upstream_recursive_servers": [
        upstream(tls_pubkey_pinset_mode="report", tls_pubkey_pinset=[PIN_A, PIN_B]),
        upstream(address_data="192.0.2.2", tls_pubkey_pinset=[PIN_A])]})
    report, enforce = cfg.upstreams
    assert report.spec.tls_pubkey_pinset == (PIN_A, PIN_B) and report.report_pins == (PIN_A, PIN_B)
    assert report.spec.tls_pubkey_pinset_mode == "report"
    assert report.spec.tls_auth_name == "dns.test"  # still authenticated by name
    assert enforce.spec.tls_pubkey_pinset == (PIN_A,) and enforce.report_pins == ()
    assert enforce.spec.tls_pubkey_pinset_mode == "enforce"
    # the global mode applies to every upstream
    cfg = load({"tls_pubkey_pinset_mode": "report",
                "upstream_recursive_servers": [upstream(tls_pubkey_pinset=[PIN_A])]})
    assert cfg.upstreams[0].report_pins == (PIN_A,)


def test_opportunistic_is_explicit_and_drops_pins(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    cfg = load({"tls_authentication": AUTH_NONE, "upstream_recursive_servers": [
        upstream(tls_auth_name=None), upstream(address_data="192.0.2.2",
                                               tls_pubkey_pinset=[PIN_A])]})
    assert cfg.opportunistic
    assert all(u.spec.opportunistic and not u.spec.tls_pubkey_pinset for u in cfg.upstreams)
    assert "pins are not checked" in caplog.text
    cli = load({"upstream_recursive_servers": [upstream(tls_auth_name=None)]},
               opportunistic=True)
    assert cli.opportunistic and cli.upstreams[0].spec.opportunistic


def test_command_line_replaces_upstreams_and_listen(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(ca))
    data = {"listen_addresses": ["127.0.0.1@53"],
            "upstream_recursive_servers": [upstream()]}
    cfg = load(data, listen=("127.0.0.1:5300", "[::1]:5300"),
               upstreams=("tls://192.0.2.9#dns.example", "tls://[2001:db8::9]:8853"),
               pins=(PIN_A,), ca_file=str(ca), strategy="fastest", no_cache=True,
               metrics="127.0.0.1:0")
    assert cfg.listen == ("127.0.0.1:5300", "[::1]:5300") and not cfg.listen_is_default
    assert [u.name for u in cfg.upstreams] == ["tls://192.0.2.9:853#dns.example",
                                               "tls://[2001:db8::9]:8853"]
    assert all(u.spec.tls_pubkey_pinset == (PIN_A,) for u in cfg.upstreams)
    assert all(u.spec.ca_file == str(ca) for u in cfg.upstreams)
    assert cfg.strategy == "fastest" and not cfg.cache.enabled and not cfg.upstreams_are_default
    cfg = load(data, upstreams=("tls://192.0.2.9#dns.example",), pins=(PIN_A,),
               pin_mode="report")
    assert cfg.upstreams[0].report_pins == (PIN_A,)


def test_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "stub.toml"
    path.write_text('listen_addresses = ["127.0.0.1@5353"]\ntimeout = 2000\n'
                    '[[upstream_recursive_servers]]\naddress_data = "192.0.2.1"\n'
                    'tls_auth_name = "dns.test"\n')
    cfg = load_stub_config(path, StubOverrides(metrics="127.0.0.1:9999"))
    assert cfg.listen == ("127.0.0.1:5353",) and cfg.metrics == "127.0.0.1:9999"
    assert cfg.source == str(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1@53", "127.0.0.1:53"), ("0::1@5353", "[::1]:5353"), ("::1", "[::1]:53"),
    ("[::1]:54", "[::1]:54"), ("127.0.0.1", "127.0.0.1:53"), ("127.0.0.1:5300", "127.0.0.1:5300"),
])
def test_parse_listen(text: str, expected: str) -> None:
    assert parse_listen(text, "x") == expected


BAD: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({"listen_adresses": []}, {}, "listen_adresses"),
    ({"listen_addresses": ["localhost@53"]}, {}, "listen_addresses[0]"),
    ({"listen_addresses": ["127.0.0.1@99999"]}, {}, "listen_addresses[0]"),
    ({"listen_addresses": []}, {}, "listen_addresses"),
    ({}, {"listen": ("127.0.0.1:53", "nope")}, "--listen[1]"),
    ({"round_robin_upstreams": 2}, {}, "round_robin_upstreams"),
    ({"round_robin_upstreams": 0, "strategy": "round_robin"}, {}, "strategy"),
    ({"strategy": "random"}, {}, "strategy"),
    ({"idle_timeout": -1}, {}, "idle_timeout"),
    ({"idle_timeout": "10s"}, {}, "idle_timeout"),
    ({"timeout": 0}, {}, "timeout"),
    ({"tls_authentication": "GETDNS_AUTHENTICATION_HOSTNAME"}, {}, "tls_authentication"),
    ({"tls_query_padding_blocksize": 4096}, {}, "tls_query_padding_blocksize"),
    ({"tls_ca_file": "/nonexistent/ca.pem"}, {}, "tls_ca_file"),
    ({"tls_pubkey_pinset_mode": "warn"}, {}, "tls_pubkey_pinset_mode"),
    ({"metrics": "localhost:9153"}, {}, "metrics"),
    ({"log_queries": "yes"}, {}, "log_queries"),
    ({"cache": {"max_entries": 0}}, {}, "cache.max_entries"),
    ({"cache": {"size": 1}}, {}, "cache.size"),
    ({"local": {"data": ["nas.lan. A 192.0.2.1", "nas.lan. CH TXT x"]}}, {}, "local.data[1]"),
    ({"upstream_recursive_servers": []}, {}, "upstream_recursive_servers"),
    ({"upstream_recursive_servers": {"address_data": "1.1.1.1"}}, {},
     "upstream_recursive_servers"),
    ({"upstream_recursive_servers": ["1.1.1.1"]}, {}, "upstream_recursive_servers[0]"),
    ({"upstream_recursive_servers": [upstream(address_data=None)]}, {},
     "upstream_recursive_servers[0].address_data"),
    ({"upstream_recursive_servers": [upstream(address_data="dns.quad9.net")]}, {},
     "upstream_recursive_servers[0].address_data"),
    ({"upstream_recursive_servers": [upstream(tls_port=0)]}, {},
     "upstream_recursive_servers[0].tls_port"),
    ({"upstream_recursive_servers": [upstream(tls_auth_name="a..b")]}, {},
     "upstream_recursive_servers[0].tls_auth_name"),
    ({"upstream_recursive_servers": [upstream(), upstream(tls_auth_name=None)]}, {},
     "upstream_recursive_servers[1]"),  # strict: neither name nor pin
    ({"upstream_recursive_servers": [upstream(tls_pubkey_pinset=[{"digest": "sha1",
                                                                  "value": PIN_A}])]}, {},
     "upstream_recursive_servers[0].tls_pubkey_pinset[0].digest"),
    ({"upstream_recursive_servers": [upstream(tls_pubkey_pinset=[PIN_A, {"value": "abc"}])]},
     {}, "upstream_recursive_servers[0].tls_pubkey_pinset[1].value"),
    ({"upstream_recursive_servers": [upstream(tls_pubkey_pinset=PIN_A)]}, {},
     "upstream_recursive_servers[0].tls_pubkey_pinset"),
    ({"upstream_recursive_servers": [upstream(tls_pubkey_pinset=[{"value": PIN_A,
                                                                  "hash": "x"}])]}, {},
     "upstream_recursive_servers[0].tls_pubkey_pinset[0].hash"),
    ({"upstream_recursive_servers": [upstream(tls_cipher_list="x")]}, {},
     "upstream_recursive_servers[0].tls_cipher_list"),
    ({"upstream_recursive_servers": [upstream(tls_pubkey_pinset_mode="audit")]}, {},
     "upstream_recursive_servers[0].tls_pubkey_pinset_mode"),
    ({"upstream_recursive_servers": [upstream(tls_auth_name=None, tls_pubkey_pinset_mode="report",
                                              tls_pubkey_pinset=[PIN_A])]}, {},
     "upstream_recursive_servers[0].tls_pubkey_pinset_mode"),  # report needs a name
    ({"upstream_recursive_servers": [upstream(), upstream()]}, {},
     "upstream_recursive_servers[1]"),
    ({}, {"upstreams": ("udp://192.0.2.1",)}, "--upstream[0]"),  # never cleartext
    ({}, {"upstreams": ("tcp://192.0.2.1",)}, "--upstream[0]"),
    ({}, {"upstreams": ("tls://192.0.2.1",)}, "--upstream[0]"),  # strict: no name, no pin
    ({}, {"upstreams": ("tls://::1#x",)}, "--upstream[0]"),
    ({}, {"upstreams": ("tls://192.0.2.1#x",), "pins": ("nope",)}, "--pin[0]"),
    ({}, {"upstreams": ("tls://192.0.2.1",), "pins": (PIN_A,), "pin_mode": "report"},
     "--upstream[0].tls_pubkey_pinset_mode"),
    ({}, {"pins": (PIN_A,)}, "--pin/--ca-file"),
    ({}, {"upstreams": ("tls://192.0.2.1#x",), "ca_file": "/nonexistent"}, "--ca-file"),
    ({}, {"metrics": "nope"}, "--metrics"),
]


@pytest.mark.parametrize(("data", "cli", "field"), BAD)
def test_one_error_naming_the_field(data: dict[str, Any], cli: dict[str, Any],
                                    field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(data, **cli)
    assert info.value.field == field, str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_stub_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("listen_addresses = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_stub_config(bad)


def test_cli_check_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stub.toml"
    path.write_text('[[upstream_recursive_servers]]\naddress_data = "192.0.2.1"\n'
                    f'tls_auth_name = "dns.test"\ntls_pubkey_pinset = ["{PIN_A}"]\n'
                    'tls_pubkey_pinset_mode = "report"\n')
    assert cli_main(["stub", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "upstream: tls://192.0.2.1:853#dns.test name=dns.test report-only pins=" in out
    assert "authentication: strict" in out
    path.write_text("timeout = -5\n")
    assert cli_main(["stub", "--config", str(path), "--check"]) == 2
    assert "dnstls stub: error: timeout: expected a positive number" in capsys.readouterr().err
    assert cli_main(["stub", "--upstream", "udp://127.0.0.1:53", "--check"]) == 2
    assert "TLS only" in capsys.readouterr().err
    assert cli_main(["stub", "--upstream", "tls://127.0.0.1", "--check"]) == 2
    assert capsys.readouterr().err == (
        "dnstls stub: error: --upstream[0]: tls://127.0.0.1:853 cannot be authenticated: "
        "add #AUTH_NAME (tls://ADDR#NAME) and/or --pin (or --opportunistic)\n")


def test_access_control_key_and_option() -> None:
    from dnstls.proto.acl import DEFAULT_RULES

    cfg = load({})
    assert cfg.access_control == DEFAULT_RULES
    assert cfg.service_config().server.access_control == DEFAULT_RULES
    cfg = load({"access_control": ["192.0.2.0/24 allow", "127.0.0.0/8 allow"]})
    assert cfg.service_config().server.access_control == ("192.0.2.0/24 allow",
                                                          "127.0.0.0/8 allow")
    assert cfg.access_control_field == "access_control"
    # the command line replaces the file's rules
    cfg = load({"access_control": ["192.0.2.0/24 allow"]},
               access_control=("0.0.0.0/0 allow",))
    assert cfg.access_control == ("0.0.0.0/0 allow",)
    assert cfg.access_control_field == "--access-control"


@pytest.mark.parametrize(("data", "cli", "message"), [
    ({"access_control": ["127.0.0.0/8 allow", "10.0.0.0/8 alow"]}, (),
     r"^access_control\[1\]: unknown action 'alow' \(allow, allow_snoop, refuse or deny\)$"),
    ({}, ("127.0.0.0/8 allow", "10.0.0.0/33 deny"),
     r"^--access-control\[1\]: '10\.0\.0\.0/33' is not an address or netblock$"),
    ({"access_control": {"a": 1}}, (), r"^access_control: expected a list of rules"),
    ({"access_control": []}, (), r"^access_control: no rules"),
])
def test_access_control_errors(data: dict[str, Any], cli: tuple[str, ...],
                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(data, access_control=cli)


def test_cli_check_shows_access_control(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["stub", "--upstream", "tls://127.0.0.1#dns.test", "--check"]
    assert cli_main(argv) == 0
    assert ("access control: loopback and private networks allowed, others refused"
            in capsys.readouterr().out)
    assert cli_main([*argv, "--access-control", "10.0.0.1/8 allow",
                     "--access-control", "10.9.0.0/16 deny"]) == 0
    assert ("access control: allow 10.0.0.0/8; deny 10.9.0.0/16; others refused"
            in capsys.readouterr().out)
    assert cli_main([*argv, "--access-control", "127.0.0.0/8 allow",
                     "--access-control", "127.0.0.2 allow_snoop"]) == 0
    assert ("access control: allow 127.0.0.0/8; allow_snoop 127.0.0.2/32; others refused"
            in capsys.readouterr().out)
    assert cli_main([*argv, "--access-control", "10.0.0.0/8 alow"]) == 2
    assert ("dnstls stub: error: --access-control[0]: unknown action 'alow' "
            "(allow, allow_snoop, refuse or deny)" in capsys.readouterr().err)


def test_serve_cli_access_control_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--access-control", "127.0.0.0/8 allow",
                     "--access-control", "10.0.0.0/8 alow"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dnstls serve: error: server.access_control[1]: unknown action 'alow' "
        "(allow, allow_snoop, refuse or deny)")


def test_nsid_key() -> None:
    assert load({}).nsid == "" and load({}).service_config().server.nsid_bytes is None
    cfg = load({"nsid": "ascii_stub-1"})
    assert cfg.service_config().server.nsid_bytes == b"stub-1"
    for bad, message in (("abc", r"^nsid: 'abc' is neither hex"),
                         ("", r"^nsid: an empty NSID"), (7, r"^nsid: expected a string")):
        with pytest.raises(ConfigError, match=message):
            load({"nsid": bad})


def test_prefetch_from_the_file_and_the_command_line() -> None:
    assert load({}).cache.prefetch is False
    assert load({"cache": {"prefetch": True}}).cache.prefetch is True
    assert load({}, prefetch=True).cache.prefetch is True
    with pytest.raises(ConfigError, match=r"^cache\.prefetch: expected true or false"):
        load({"cache": {"prefetch": "yes"}})
    with pytest.raises(ConfigError, match=r"^--prefetch: conflicts with --no-cache"):
        load({}, prefetch=True, no_cache=True)


def test_private_addresses_and_domains_from_the_file_and_the_command_line() -> None:
    """DNS rebinding protection, as serve's ``forward.private_addresses`` (off by
    default, as Unbound): top-level keys named as serve's, the command line replaces
    them."""
    assert load({}).private_addresses == () and load({}).private_domains == ()
    cfg = load({"private_addresses": ["10.0.0.0/8", "fd00::/8"],
                "private_domains": ["home.arpa."]})
    assert cfg.private_addresses == ("10.0.0.0/8", "fd00::/8")
    assert cfg.private_domains == ("home.arpa.",)
    cfg = load({"private_addresses": ["10.0.0.0/8"], "private_domains": ["home.arpa."]},
               private_addresses=("192.168.0.0/16",), private_domains=("lan.",))
    assert cfg.private_addresses == ("192.168.0.0/16",)
    assert cfg.private_domains == ("lan.",)


@pytest.mark.parametrize(("data", "cli", "message"), [
    ({"private_addresses": ["10.0.0.0/8", "10.0.0.0/33"]}, {},
     r"^private_addresses\[1\]: '10\.0\.0\.0/33' is not an IP address or network"),
    ({}, {"private_addresses": ("nope",)},
     r"^--private-address\[0\]: 'nope' is not an IP address or network"),
    ({"private_addresses": ["10.0.0.0/8"], "private_domains": ["a..b"]}, {},
     r"^private_domains\[0\]: 'a\.\.b' is not a domain name"),
    ({"private_addresses": ["10.0.0.0/8"]}, {"private_domains": ("a..b",)},
     r"^--private-domain\[0\]: 'a\.\.b' is not a domain name"),
    ({"private_domains": ["home.arpa."]}, {},
     r"^private_domains: names allowed to hold private addresses, but "
     r"private_addresses lists none"),
    ({"private_addresses": "10.0.0.0/8"}, {},
     r"^private_addresses: expected a list of networks"),
    ({"private_addresses": ["10.0.0.0/8"], "private_domains": "x."}, {},
     r"^private_domains: expected a list of names"),
])
def test_private_address_errors_name_the_field(data: dict[str, Any], cli: dict[str, Any],
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(data, **cli)


def test_cli_private_address_options_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["stub", "--upstream", "tls://127.0.0.1#dns.test", "--check"]
    assert cli_main(argv) == 0
    assert "private addresses: off" in capsys.readouterr().out
    assert cli_main([*argv, "--private-address", "10.0.0.0/8", "--private-address",
                     "fd00::/8", "--private-domain", "home.arpa."]) == 0
    assert ("private addresses: 10.0.0.0/8, fd00::/8 removed (except under home.arpa.)"
            in capsys.readouterr().out)
    assert cli_main([*argv, "--private-address", "10.0.0.0/40"]) == 2
    assert ("dnstls stub: error: --private-address[0]: '10.0.0.0/40' is not an IP address"
            in capsys.readouterr().err)


ROOT_DS = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n"
TEST_DS = "test. IN DS 1 13 2 " + "AB" * 32 + "\n"


def test_dnssec_keys_named_as_stubby(tmp_path: Path) -> None:
    """``dnssec`` (off by default, as Stubby), ``dnssec_trust_anchors`` (a file or a
    list, every file loaded), ``domain_insecure``; the command line replaces them."""
    from dnstls.stub_config import load_trust_anchors

    assert load({}).dnssec is False and load({}).dnssec_trust_anchors == ()
    root, test = tmp_path / "root.ds", tmp_path / "test.ds"
    root.write_text(ROOT_DS)
    test.write_text(TEST_DS)
    cfg = load({"dnssec": True, "dnssec_trust_anchors": str(root),
                "domain_insecure": ["corp.example."]})
    assert cfg.dnssec and cfg.dnssec_trust_anchors == (str(root),)
    assert cfg.domain_insecure == ("corp.example.",)
    cfg = load({"dnssec": True, "dnssec_trust_anchors": [str(root), str(test)]})
    anchors, source = load_trust_anchors(cfg.dnssec_trust_anchors)
    assert [z.to_text() for z in anchors.zones] == [".", "test."]
    assert source == f"{root}, {test}"
    cfg = load({"dnssec_trust_anchors": str(root), "domain_insecure": ["a."]}, dnssec=True,
               trust_anchors=(str(test),), domain_insecure=("b.",))
    assert cfg.dnssec and cfg.dnssec_trust_anchors == (str(test),)
    assert cfg.domain_insecure == ("b.",) and cfg.dnssec_trust_anchors_field == "--trust-anchor"
    # no file: serve's default (root.key when there, else the built-in root DS)
    assert [z.to_text() for z in load_trust_anchors(())[0].zones] == ["."]


@pytest.mark.parametrize(("data", "cli", "message"), [
    ({"dnssec": "GETDNS_EXTENSION_TRUE"}, {}, r"^dnssec: expected true or false"),
    ({"dnssec": True, "dnssec_trust_anchors": 3}, {},
     r"^dnssec_trust_anchors: expected a file name or a list of file names"),
    ({"dnssec": True, "dnssec_trust_anchors": "/nonexistent/root.key"}, {},
     r"^dnssec_trust_anchors: cannot read /nonexistent/root.key"),
    ({"dnssec": True, "dnssec_trust_anchors": ["ROOT", "/nonexistent/x.key"]}, {},
     r"^dnssec_trust_anchors\[1\]: cannot read /nonexistent/x.key"),
    ({}, {"dnssec": True, "trust_anchors": ("/nonexistent/root.key",)},
     r"^--trust-anchor: cannot read"),
    ({"dnssec_trust_anchors": "ROOT"}, {},
     r"^dnssec_trust_anchors: given, but dnssec is off"),
    ({"dnssec": True, "domain_insecure": ["ok.", "a..b"]}, {},
     r"^domain_insecure\[1\]: not a domain name"),
    ({}, {"dnssec": True, "domain_insecure": ("a..b",)},
     r"^--domain-insecure\[0\]: not a domain name"),
    ({"domain_insecure": "x."}, {}, r"^domain_insecure: expected a list of names"),
])
def test_dnssec_errors_name_the_field(tmp_path: Path, data: dict[str, Any],
                                      cli: dict[str, Any], message: str) -> None:
    root = tmp_path / "root.ds"
    root.write_text(ROOT_DS)
    value = data.get("dnssec_trust_anchors")
    if value == "ROOT":
        data["dnssec_trust_anchors"] = str(root)
    elif isinstance(value, list):
        data["dnssec_trust_anchors"] = [str(root) if v == "ROOT" else v for v in value]
    with pytest.raises(ConfigError, match=message):
        load(data, **cli)


def test_dnssec_bad_anchor_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text(". IN A 192.0.2.1\n")
    with pytest.raises(ConfigError, match=r"^dnssec_trust_anchors: .*not a DS or DNSKEY"):
        load({"dnssec": True, "dnssec_trust_anchors": str(bad)})


def test_cli_dnssec_options_and_check(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root.ds"
    root.write_text(ROOT_DS)
    argv = ["stub", "--upstream", "tls://127.0.0.1#dns.test", "--check"]
    assert cli_main(argv) == 0
    assert "DNSSEC validation: off" in capsys.readouterr().out
    assert cli_main([*argv, "--dnssec", "--trust-anchor", str(root),
                     "--domain-insecure", "corp.example."]) == 0
    assert (f"DNSSEC validation on: trust anchors for . from {root}; not validated: "
            "corp.example." in capsys.readouterr().out)
    assert cli_main([*argv, "--dnssec", "--trust-anchor", str(tmp_path / "none")]) == 2
    assert "dnstls stub: error: --trust-anchor: cannot read" in capsys.readouterr().err
