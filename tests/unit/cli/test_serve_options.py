"""``dnstls serve`` options that shape the configuration (--forward-zone)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography import x509

from dnstls import certs, config
from dnstls.cli.main import build_parser
from dnstls.cli.main import main as cli_main
from dnstls.cli.serve import overrides, with_forward_zones
from dnstls.errors import ConfigError
from dnstls.proto.pins import spki_pin


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


# ------------------------------------------------------------------------ serve --check

def test_check_describes_what_would_run(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert cli_main(["serve", "--check", "--upstream", "udp://192.0.2.53",
                     "--plain", "127.0.0.1:5353", "--dnssec", "--domain-insecure", "lan.",
                     "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dnstls serve: no configuration file is good"
    assert "upstreams (round_robin): udp://192.0.2.53:53" in out
    assert "plain DNS: 127.0.0.1:5353" in out
    assert any(line.startswith("DNSSEC validation on: trust anchors for .")
               and line.endswith("not validated: lan.") for line in out)
    assert not state.exists()  # nothing written: no certificate generated


def test_check_reads_zone_files_and_certificates(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = ["serve", "--check", "--no-upstream"]
    assert cli_main([*base, "--local-zone", str(tmp_path / "missing.zone")]) == 2
    assert "local.zones[0]: cannot read zone file" in capsys.readouterr().err
    key = tmp_path / "key.pem"
    cert = tmp_path / "cert.pem"
    key.write_text("not a key\n")
    cert.write_text("not a certificate\n")
    assert cli_main([*base, "--cert", str(cert), "--key", str(key)]) == 2
    assert "tls.certificates[0]" in capsys.readouterr().err


def test_check_with_a_real_certificate_prints_its_pin(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      ) -> None:
    cert, key, _ = certs.ensure_self_signed(tmp_path, ["dns.test"], ["127.0.0.1"])
    assert cli_main(["serve", "--check", "--no-upstream", "--cert", str(cert),
                     "--key", str(key)]) == 0
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    assert f"certificate: {cert} (SPKI pin {spki_pin(leaf)})" in capsys.readouterr().out


# ------------------------------------------------------------------------ recursion

HINTS = (".  3600000 NS a.root.test.\n"
         "a.root.test. 3600000 A 192.0.2.1\n"
         "a.root.test. 3600000 AAAA 2001:db8::1\n")


def test_recursive_and_root_hints_flags(tmp_path: Path) -> None:
    hints = tmp_path / "root.hints"
    hints.write_text(HINTS)
    cfg = config.load(overrides=overrides(parse("--recursive", "--root-hints", str(hints))))
    assert cfg.recursion.enabled and cfg.recursion.root_hints == str(hints)
    assert cfg.recursion.qname_minimisation and cfg.recursion.do_not_query_localhost
    assert not config.load().recursion.enabled  # forwarding stays the default


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"recursion": {"root_hints": "/x"}}, "recursion.root_hints", "recursion.enabled is off"),
    ({"recursion": {"enabled": True}, "forward": {"enabled": False}}, "recursion.enabled",
     "forward.enabled = false"),
    ({"recursion": {"enabled": True}, "upstream": [{"uri": "udp://192.0.2.53"}]},
     "recursion.enabled", "[[upstream]]"),
    ({"recursion": {"enabled": True, "do_ip4": False, "do_ip6": False}},
     "recursion.do_ip4", "both false"),
    ({"recursion": {"enabled": True, "root_hints": "/nonexistent/root.hints"}},
     "recursion.root_hints", ""),
    ({"recursion": {"enabled": "yes"}}, "recursion.enabled", "true or false"),
    ({"recursion": {"qname_minimization": True}}, "recursion.qname_minimization", ""),
])
def test_recursion_config_errors_name_the_field(data: dict[str, object], field: str,
                                                words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(overrides=data)
    assert info.value.field == field
    assert words in str(info.value)


def test_bad_root_hints_file_names_the_field(tmp_path: Path) -> None:
    hints = tmp_path / "root.hints"
    hints.write_text("this is not a zone file\n")
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"recursion": {"enabled": True, "root_hints": str(hints)}})
    assert info.value.field == "recursion.root_hints"


def test_recursive_conflicts_with_upstream_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--check", "--recursive", "--upstream",
                     "udp://192.0.2.53"]) == 2
    assert "--upstream: conflicts with recursion" in capsys.readouterr().err


def test_check_describes_recursion(tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    hints = tmp_path / "root.hints"
    hints.write_text(HINTS)
    assert cli_main(["serve", "--check", "--recursive", "--root-hints", str(hints),
                     "--forward-zone", "corp.example=udp://10.0.0.53",
                     "--stub-zone", "lab.test=10.0.0.9@5353",
                     "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (f"recursion: resolving from the root (1 root server from {hints}; "
            "qname minimisation on)") in out
    assert "stub zone lab.test.: 10.0.0.9@5353" in out
    assert "forward zone corp.example.: udp://10.0.0.53:53" in out
    assert not any(line.startswith("upstreams") for line in out)


def test_stub_zones_need_recursion_and_differ_from_forward_zones(tmp_path: Path) -> None:
    stub = {"name": "corp.example.", "addresses": ["10.0.0.53"]}
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"stub_zone": [stub]})
    assert info.value.field == "stub_zone" and "recursion.enabled is off" in str(info.value)
    hints = tmp_path / "root.hints"
    hints.write_text(HINTS)
    recursion = {"enabled": True, "root_hints": str(hints)}
    cfg = config.load(overrides={"stub_zone": [stub], "recursion": recursion})
    assert [z.name for z in cfg.recursion.stub_zones] == ["corp.example."]
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"stub_zone": [stub], "recursion": recursion, "forward_zone": [
            {"name": "corp.example", "upstream": [{"uri": "udp://10.0.0.1"}]}]})
    assert info.value.field == "stub_zone[0].name"
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"recursion": {**recursion, "stub_zones": []}})
    assert info.value.field == "recursion.stub_zones"


def test_stub_zone_flag(tmp_path: Path) -> None:
    hints = tmp_path / "root.hints"
    hints.write_text(HINTS)
    args = parse("--recursive", "--root-hints", str(hints),
                 "--stub-zone", "corp.example=10.0.0.53@5353")
    cfg = with_forward_zones(config.load(overrides=overrides(args)), args)
    assert cfg.recursion.stub_zones[0].addresses == (("10.0.0.53", 5353),)
    with pytest.raises(ConfigError) as info:
        args = parse("--stub-zone", "corp.example=10.0.0.53")
        with_forward_zones(config.load(overrides=overrides(args)), args)
    assert info.value.field == "--stub-zone"
    args = parse("--recursive", "--root-hints", str(hints), "--stub-zone",
                 "corp.example=10.0.0.53", "--forward-zone", "corp.example=udp://10.0.0.1")
    with pytest.raises(ConfigError) as info:
        with_forward_zones(config.load(overrides=overrides(args)), args)
    assert info.value.field == "stub_zone[0].name"
