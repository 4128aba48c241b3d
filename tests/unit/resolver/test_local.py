from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from dnstls.errors import ConfigError
from dnstls.proto.answers import Transport
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.local import LocalData, ddr_records, load_zone

ZONE = """$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
www IN A 192.0.2.1
www IN AAAA 2001:db8::1
alias IN CNAME www
outside IN CNAME www.elsewhere.example.
*.wild IN TXT "wildcard"
a.b.ent IN A 192.0.2.7
sub IN NS ns.sub
ns.sub IN A 192.0.2.8
"""


class Next:
    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def resolve(self, request: Request) -> dns.message.Message:
        self.seen.append(request)
        raise ResolveFailure(dns.rcode.REFUSED)


@pytest.fixture
def stage(tmp_path: Path) -> tuple[LocalData, Next]:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    nxt = Next()
    return LocalData(nxt, zones=[load_zone(path)], ddr=ddr_records("dns.test", 853)), nxt


async def ask(stage: LocalData, name: str, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return await stage.resolve(Request(q, Transport.TLS, None, deadline=0.0))


async def test_answer_is_authoritative(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "WWW.example.test")
    assert r.flags & dns.flags.AA and r.rcode() == dns.rcode.NOERROR
    # the owner echoes the query's case (0x20-safe)
    assert [rr.to_text() for rr in r.answer] == ["WWW.example.test. 300 IN A 192.0.2.1"]


async def test_nodata_has_soa_with_negative_ttl(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "www.example.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA and r.authority[0].ttl == 60


async def test_nxdomain(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "nope.example.test")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.SOA


async def test_empty_non_terminal_is_nodata(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "b.ent.example.test")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


async def test_cname_followed_in_zone(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "alias.example.test")
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


async def test_cname_out_of_zone_is_not_chased(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "outside.example.test")
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME]


async def test_wildcard(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "x.y.wild.example.test", "TXT")
    assert r.answer[0].name.to_text() == "x.y.wild.example.test."


async def test_delegation_is_a_referral(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "host.sub.example.test")
    assert not r.flags & dns.flags.AA and r.authority[0].rdtype == dns.rdatatype.NS


async def test_other_names_go_to_the_next_stage(stage: tuple[LocalData, Next]) -> None:
    with pytest.raises(ResolveFailure):
        await ask(stage[0], "example.com")
    assert len(stage[1].seen) == 1


async def test_ddr(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "_dns.resolver.arpa", "SVCB")
    assert r.answer[0][0].to_text() == '1 dns.test. alpn="dot"'
    assert (await ask(stage[0], "x.resolver.arpa")).rcode() == dns.rcode.NXDOMAIN
    assert not stage[1].seen


def test_ddr_port() -> None:
    assert ddr_records("dns.test", 8853)[0].to_text() == '1 dns.test. alpn="dot" port="8853"'


def test_missing_zone_file_names_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"local.zones\[0\].*cannot read"):
        load_zone(tmp_path / "missing", field="local.zones[0]")


def test_zone_without_origin(tmp_path: Path) -> None:
    path = tmp_path / "z"
    path.write_text("www 300 IN A 192.0.2.1\n")
    with pytest.raises(ConfigError, match=r"ORIGIN|zone file"):
        load_zone(path)


async def test_any_returns_every_rrset(stage: tuple[LocalData, Next]) -> None:
    r = await ask(stage[0], "www.example.test", "ANY")
    assert {rr.rdtype for rr in r.answer} == {dns.rdatatype.A, dns.rdatatype.AAAA}


async def test_cname_loop_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "loop.zone"
    path.write_text("$ORIGIN loop.test.\n$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\n"
                    "a CNAME b\nb CNAME a\n")
    stage = LocalData(Next(), zones=[load_zone(path)])
    r = await ask(stage, "a.loop.test")
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) <= 9
    assert stage.origins[0].to_text() == "loop.test."


def test_zone_without_soa_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nosoa.zone"
    path.write_text("$ORIGIN nosoa.test.\n$TTL 60\nwww A 192.0.2.1\n")
    with pytest.raises(ConfigError, match="nosoa"):
        LocalData(Next(), zones=[load_zone(path)])


# --- [local] data (Unbound's local-data) -------------------------------------------------

@pytest.mark.parametrize(("line", "message"), [
    ("nas.lan. A 1.2.3", "malformed"),
    ("nas.lan. CH TXT x", "class"),
    ("nas.lan. BOGUS 1", "unknown rdatatype"),
    ("*.lan. A 192.0.2.1", "wildcard"),
    ("@ A 192.0.2.1", "root"),
    ("a.lan. A 192.0.2.1\nb.lan. A 192.0.2.2", "one record per line"),
    ("", "expected one record"),
    ("x.lan. NULL \\# 0", ""),  # accepted: any data type
])
def test_parse_local_data_errors_name_the_line(line: str, message: str) -> None:
    from dnstls.resolver.local import parse_local_data

    if not message:
        assert len(parse_local_data([line])) == 1
        return
    with pytest.raises(ConfigError, match=rf"^local\.data\[1\]: .*{message}"):
        parse_local_data(["ok.lan. A 192.0.2.9", line])


def test_parse_local_data_merges_lines_and_refuses_cname_with_data() -> None:
    from dnstls.resolver.local import LOCAL_DATA_TTL, parse_local_data

    rrsets = parse_local_data(["nas.lan A 192.0.2.1", "NAS.lan. 60 A 192.0.2.2",
                               "nas.lan. TXT hi"])
    assert [(str(r.name), dns.rdatatype.to_text(r.rdtype), len(r), r.ttl) for r in rrsets] \
        == [("nas.lan.", "A", 2, 60), ("nas.lan.", "TXT", 1, LOCAL_DATA_TTL)]
    with pytest.raises(ConfigError, match=r"^local\.data\[1\]: .*CNAME and other data"):
        parse_local_data(["www.lan. A 192.0.2.1", "www.lan. CNAME nas.lan."])
    with pytest.raises(ConfigError, match=r"^local\.data\[1\]: .*CNAME and other data"):
        parse_local_data(["www.lan. CNAME nas.lan.", "www.lan. A 192.0.2.1"])


def test_place_local_data_joins_the_enclosing_zone_or_is_transparent(tmp_path: Path) -> None:
    from dnstls.resolver.local import parse_local_data, place_local_data

    path = tmp_path / "z"
    path.write_text(ZONE)
    zone = load_zone(path)
    assert zone.origin is not None
    inside = f"extra.{zone.origin} A 192.0.2.77"
    zones = [zone]
    transparent = place_local_data(zones, parse_local_data([inside, "nas.lan. A 192.0.2.1"]))
    assert list(transparent) == [dns.name.from_text("nas.lan.")]
    extra = dns.name.from_text(f"extra.{zone.origin}")
    assert zones[0].get_rrset(extra, dns.rdatatype.A) is not None  # in a copy
    assert zone.get_rrset(extra, dns.rdatatype.A) is None
    local = LocalData(Next(), zones=zones, transparent=transparent)
    assert local.covers_wire(b"\x03nas\x03lan\x00")
    assert not local.covers_wire(b"\x03sub\x03nas\x03lan\x00")
    assert not local.covers_wire(b"\x03lan\x00")


async def test_forwarded_names_carved_out_of_a_default_zone(tmp_path: Path) -> None:
    """A forward zone under a default zone: its names are passed on, on both paths;
    the rest of the default zone is still answered here; a configured zone below the
    forward zone still answers its own names."""
    import dns.name

    from dnstls.proto.cachekey import key_from_message
    from dnstls.resolver.default_zones import build_zone

    path = tmp_path / "lan.zone"
    path.write_text("$ORIGIN 9.1.168.192.in-addr.arpa.\n$TTL 60\n"
                    "@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\n"
                    "5 IN PTR printer.lan.\n")
    nxt = Next()
    local = LocalData(nxt, zones=[build_zone(dns.name.from_text("168.192.in-addr.arpa.")),
                                  load_zone(path)],
                      forwarded=[dns.name.from_text("1.168.192.in-addr.arpa.")])

    def covered(name: str) -> bool:
        return local.covers_key(key_from_message(dns.message.make_query(name, "PTR")))

    for name in ("1.168.192.in-addr.arpa.", "7.1.168.192.IN-ADDR.arpa."):
        assert not covered(name)
        with pytest.raises(ResolveFailure):  # Next refuses: it was passed on
            await ask(local, name, "PTR")
    assert len(nxt.seen) == 2
    r = await ask(local, "7.2.168.192.in-addr.arpa.", "PTR")
    assert covered("7.2.168.192.in-addr.arpa.") and r.rcode() == dns.rcode.NXDOMAIN
    r = await ask(local, "5.9.1.168.192.in-addr.arpa.", "PTR")
    assert covered("5.9.1.168.192.in-addr.arpa.")
    assert [rr.to_text() for rr in r.answer] == [
        "5.9.1.168.192.in-addr.arpa. 60 IN PTR printer.lan."]
    assert len(nxt.seen) == 2


async def test_local_data_under_a_carved_out_forward_zone_stays_local() -> None:
    """A record of local data under a forward zone carved out of a default zone is a
    transparent name (answered here), not lost in the default zone it no longer serves."""
    import dns.name
    import dns.zone

    from dnstls.resolver.default_zones import LOOPBACK4, SOA_TEXT
    from dnstls.resolver.local import parse_local_data, place_local_data

    # a default zone's contents, built here: place_local_data adds records to it
    zone = dns.zone.from_text(f"@ 60 IN SOA {SOA_TEXT}\n@ 60 IN NS localhost.\n",
                              origin=LOOPBACK4, relativize=False)
    carved = dns.name.from_text("9." + LOOPBACK4)
    rrsets = parse_local_data([f"5.9.{LOOPBACK4} PTR nas.lan.", f"5.8.{LOOPBACK4} PTR x.lan."])
    zones = [zone]
    transparent = place_local_data(zones, rrsets, [carved])
    assert list(transparent) == [dns.name.from_text(f"5.9.{LOOPBACK4}")]
    nxt = Next()
    local = LocalData(nxt, zones=zones, transparent=transparent, forwarded=[carved])
    r = await ask(local, f"5.9.{LOOPBACK4}", "PTR")
    assert [rr.to_text() for rr in r.answer] == [f"5.9.{LOOPBACK4} 3600 IN PTR nas.lan."]
    r = await ask(local, f"5.8.{LOOPBACK4}", "PTR")
    assert [rr.to_text() for rr in r.answer] == [f"5.8.{LOOPBACK4} 3600 IN PTR x.lan."]
    with pytest.raises(ResolveFailure):
        await ask(local, f"6.9.{LOOPBACK4}", "PTR")
    assert len(nxt.seen) == 1


def test_local_data_never_changes_the_shared_default_zones() -> None:
    """Default zones are built once per process and shared: a record of local data
    goes into a copy, so it cannot outlive its configuration (another service, a
    reload that removes it)."""
    from dnstls.resolver.default_zones import build_zone, default_zones
    from dnstls.resolver.local import parse_local_data, place_local_data

    home = dns.name.from_text("home.arpa.")
    nas = dns.name.from_text("nas.home.arpa.")
    zones = default_zones()
    shared = next(z for z in zones if z.origin == home)
    place_local_data(zones, parse_local_data(["nas.home.arpa. A 192.168.1.10"]))
    mine = next(z for z in zones if z.origin == home)
    assert mine is not shared and mine.get_rrset(nas, dns.rdatatype.A) is not None
    assert build_zone(home).get_node(nas) is None
    assert next(z for z in default_zones() if z.origin == home).get_node(nas) is None
