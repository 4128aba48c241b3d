from pathlib import Path

import pytest

from dnstls import config
from dnstls.cli.main import main as cli_main
from dnstls.errors import ConfigError


def test_defaults() -> None:
    c = config.load()
    assert c.server.listen == ("127.0.0.1:853", "[::1]:853")
    assert c.server.idle_timeout == 10.0 and c.server.handshake_timeout == 5.0
    assert c.server.max_in_flight == 100 and not c.server.log_queries


def test_tls_session_cache() -> None:
    from dnstls.net.tls import SESSION_CACHE_SIZE

    assert config.load().tls.session_cache == SESSION_CACHE_SIZE == 10_000
    assert config.load(overrides={"tls": {"session_cache": 0}}).tls.session_cache == 0
    with pytest.raises(ConfigError, match=r"^tls\.session_cache: must not be negative"):
        config.load(overrides={"tls": {"session_cache": -1}})


def test_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nlisten = ["127.0.0.1:8853"]\nidle_timeout = 20\n'
                    '[[tls.certificates]]\ncert = "a.pem"\nkey = "b.pem"\n')
    c = config.load(path, {"server": {"idle_timeout": 5}})
    assert c.server.listen == ("127.0.0.1:8853",) and c.server.idle_timeout == 5.0
    assert c.tls.certificates[0].key == "b.pem"


@pytest.mark.parametrize(("data", "field"), [
    ({"server": {"idle_timeout": -1}}, "server.idle_timeout"),
    ({"server": {"idle_timout": 1}}, "server.idle_timout"),
    ({"server": {"listen": ["127.0.0.1:99999"]}}, r"server.listen\[0\]"),
    ({"server": {"listen": ["localhost:853"]}}, r"server.listen\[0\]"),
    ({"server": {"plain": ["[::1"]}}, r"server.plain\[0\]"),
    ({"server": {"log_queries": "yes"}}, "server.log_queries"),
    ({"tls": {"certificates": [{"cert": "a"}]}}, r"tls.certificates\[0\].key"),
    ({"bogus": {}}, "bogus"),
    ({"forward": {"strategy": "random"}}, "forward.strategy"),
    ({"cache": {"min_ttl": 10, "max_ttl": 5}}, "cache.min_ttl"),
    ({"cache": {"servfail_ttl": 30}}, "cache.servfail_ttl"),
])
def test_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        config.load(overrides=data)


def test_cache_prefetch_is_off_by_default_as_in_unbound() -> None:
    assert config.load().cache.prefetch is False
    assert config.load(overrides={"cache": {"prefetch": True}}).cache.prefetch is True
    for bad in ("yes", 1):
        with pytest.raises(ConfigError) as info:
            config.load(overrides={"cache": {"prefetch": bad}})
        assert str(info.value) == f"cache.prefetch: expected true or false, got {bad!r}"


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 853)), ("127.0.0.1:53", ("127.0.0.1", 53)),
    ("[::1]:8853", ("::1", 8853)), ("[::1]", ("::1", 853)), ("::1", ("::1", 853)),
])
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert config.parse_hostport(text, 853, field="f") == expected
    assert config.parse_hostport(config.format_hostport(*expected), 1, field="f") == expected


def test_access_control_default_and_rules() -> None:
    from dnstls.proto.acl import DEFAULT_RULES

    assert config.load().server.access_control == DEFAULT_RULES
    c = config.load(overrides={"server": {"access_control": ["0.0.0.0/0 allow",
                                                             "::/0 allow"]}})
    assert c.server.access_control == ("0.0.0.0/0 allow", "::/0 allow")
    one = config.load(overrides={"server": {"access_control": "192.0.2.0/24 allow"}})
    assert one.server.access_control == ("192.0.2.0/24 allow",)
    # host bits set: accepted as Unbound accepts them (the network)
    assert config.access_control(("10.0.0.1/8 allow",), "x").rules[0].network.exploded \
        == "10.0.0.0/8"


@pytest.mark.parametrize(("rules", "message"), [
    (["127.0.0.0/8 allow", "10.0.0.0/8 allow", "10.0.0.0/8 alow"],
     r"^server\.access_control\[2\]: unknown action 'alow' "
     r"\(allow, allow_snoop, refuse or deny\)$"),
    (["10.0.0.0/33 allow"],
     r"^server\.access_control\[0\]: '10\.0\.0\.0/33' is not an address or netblock$"),
    (["10.0.0.0/8 allow", 7], r"^server\.access_control\[1\]: expected a string"),
    (["10.0.0.0/8 allow", "10.0.0.0/8 deny"],
     r"^server\.access_control\[1\]: 10\.0\.0\.0/8 is already in server\.access_control\[0\]$"),
    ([], r"^server\.access_control: no rules"),
])
def test_access_control_errors_name_the_rule(rules: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(overrides={"server": {"access_control": rules}})


def test_forward_upstreams_is_an_error_naming_the_upstream_tables() -> None:
    """``[forward] upstreams = [...]`` was dropped silently, so the service forwarded to
    the default (Cloudflare) instead of the upstreams the operator wrote."""
    with pytest.raises(ConfigError, match=r"^forward\.upstreams: .*\[\[upstream\]\]"):
        config.load(overrides={"forward": {"upstreams": ["udp://127.0.0.1:53"]}})


def test_nsid_default_is_none() -> None:
    server = config.load().server
    assert server.nsid == "" and server.nsid_bytes is None


@pytest.mark.parametrize(("text", "value"), [("ascii_dot-1", b"dot-1"),
                                             ("646e73746c73", b"dnstls")])
def test_nsid_as_unbound_writes_it(tmp_path: Path, text: str, value: bytes) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\nnsid = "{text}"\n')
    assert config.load(path).server.nsid_bytes == value


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "server.nsid: 'abc' is neither hex"),
    ("", "server.nsid: an empty NSID"),
    ("ascii_", "server.nsid: an empty NSID"),
    ("ab" * 256, "server.nsid: an NSID of 256 bytes (at most 255)"),
    (3, "server.nsid: expected a string, got 3"),
])
def test_bad_nsid_is_one_error_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"server": {"nsid": value}})
    assert str(info.value).startswith(message)


def test_serve_cli_nsid(capsys: pytest.CaptureFixture[str]) -> None:
    from dnstls.cli.main import build_parser
    from dnstls.cli.serve import overrides

    args = build_parser().parse_args(["serve", "--nsid", "ascii_dot-1"])
    assert overrides(args)["server"]["nsid"] == "ascii_dot-1"
    assert cli_main(["serve", "--nsid", "abc"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dnstls serve: error: server.nsid: 'abc' is neither hex (an even number of hex "
        "digits) nor ascii_ followed by text")


def test_forward_zones_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[forward]\nstrategy = "fastest"\n'
                    '[[forward_zone]]\nname = "corp.example"\n'
                    '[[forward_zone.upstream]]\nuri = "udp://10.0.0.53"\n')
    c = config.load(path)
    assert [z.name for z in c.forward.zones] == ["corp.example."]
    assert c.forward.strategy == "fastest" and c.forward.zones[0].strategy is None
    assert config.load().forward.zones == ()


@pytest.mark.parametrize(("data", "field"), [
    ({"forward": {"zones": []}}, "forward.zones"),
    ({"forward_zone": {"name": "corp.example"}}, "forward_zone"),
    ({"forward_zone": [{"name": "corp.example", "upstream": [{"uri": "udp://10.0.0.1"}]}],
      "forward": {"enabled": False}}, "forward.enabled"),
    ({"forward_zone": [{"name": "corp.example", "upstream": [{"uri": "udp://10.0.0.1"}]},
                       {"name": "home.arpa"}]}, "forward_zone[1].upstream"),
])
def test_forward_zone_errors(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(overrides=data)
    assert info.value.field == field


def test_control_is_off_by_default_and_its_path_checked() -> None:
    assert config.load().server.control == ""
    path = "/run/dnstls/control.sock"
    assert config.load(overrides={"server": {"control": path}}).server.control == path
    with pytest.raises(ConfigError, match=r"^server.control: '/x+' is 121 bytes long; a "
                                          r"Unix socket path can have at most 107$"):
        config.load(overrides={"server": {"control": "/" + "x" * 120}})
    with pytest.raises(ConfigError, match=r"^server.control: '/run/dnstls/' names a "
                                          r"directory"):
        config.load(overrides={"server": {"control": "/run/dnstls/"}})
    with pytest.raises(ConfigError, match=r"^server.control: expected a string"):
        config.load(overrides={"server": {"control": 1}})


def test_prefetch_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      ) -> None:
    from dnstls.cli.main import build_parser
    from dnstls.cli.serve import overrides

    args = build_parser().parse_args(["serve", "--prefetch"])
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nmax_ttl = 600\n")
    c = config.load(path, overrides(args))
    assert c.cache.prefetch is True and c.cache.max_ttl == 600
    assert cli_main(["serve", "--prefetch", "--no-cache"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dnstls serve: error: --prefetch: conflicts with --no-cache")
