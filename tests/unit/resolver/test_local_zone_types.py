"""Typed zones (Unbound's local-zone types, dnstls.resolver.zonetypes): each type's
answer, with and without local data, as measured on unbound 1.17.1 (the same table as
tests/interop/test_zone_types_unbound.py, which asks the real peer); parsing of
zone_types lines and blocklists; covers_key agreeing with resolve."""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from dnstls.errors import ConfigError, QueryDropped
from dnstls.proto.answers import Transport
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import Request
from dnstls.resolver.local import LocalData, parse_local_data, place_local_data
from dnstls.resolver.zonetypes import (
    by_wire,
    parse_blocklist,
    parse_zone_types,
    read_blocklist,
    wire_name,
)

TYPES = ["always_nxdomain", "always_refuse", "always_null", "always_nodata", "always_deny",
         "refuse", "static", "deny", "transparent", "typetransparent",
         "always_transparent", "redirect", "nodefault"]
PASS = "resolved"  # passed on to the next stage (the forwarder)
DROP = "dropped"


def zone_of(kind: str) -> str:
    return f"{kind.replace('_', '-')}.example.test."


def zone_lines() -> list[str]:
    return [f"{zone_of(kind)} {kind}" for kind in TYPES]


def data_lines() -> list[str]:
    lines = []
    for kind in TYPES:
        zone = zone_of(kind)
        if kind == "redirect":
            lines.append(f"{zone} 120 A 10.9.9.9")  # Unbound: only at the apex
        else:  # and q: an empty non-terminal
            lines += [f"d.{zone} 60 A 10.0.0.1", f"p.q.{zone} 60 A 10.0.0.2"]
        if kind == "static":
            lines.append(f"{zone} SOA ns hm 1 2 3 4 77")
    return lines


# (type, relative name, qtype) -> (rcode, AA, answer lines, authority lines), or PASS/DROP
# (unbound 1.17.1 on loopback; "@" is the zone name)
SOA77 = ["static.example.test. 77 IN SOA ns. hm. 1 2 3 4 77"]
NAMES = [("@", "A"), ("@", "AAAA"), ("a", "A"), ("d", "A"), ("d", "AAAA"), ("d", "ANY"),
         ("x.d", "A"), ("nx", "TXT"), ("q", "A")]


def expected(kind: str, rel: str, qtype: str) -> object:
    zone = zone_of(kind)
    name = zone if rel == "@" else f"{rel}.{zone}"
    local_a = [f"{name} 60 IN A 10.0.0.1"]
    if kind == "always_nxdomain":
        return ("NXDOMAIN", True, [], [])
    if kind == "always_refuse":
        return ("REFUSED", True, [], [])
    if kind == "always_nodata":
        return ("NOERROR", True, [], [])
    if kind == "always_deny":
        return DROP
    if kind == "always_null":
        if (rel, qtype) == ("d", "A"):
            return ("NOERROR", True, local_a, [])
        null = {"A": "0.0.0.0", "AAAA": "::"}.get(qtype)
        return ("NOERROR", True, [f"{name} 3600 IN {qtype} {null}"] if null else [], [])
    if kind in ("refuse", "deny"):
        if (rel, qtype) == ("d", "A"):
            return ("NOERROR", True, local_a, [])
        return ("REFUSED", True, [], []) if kind == "refuse" else DROP
    if kind == "static":
        if (rel, qtype) == ("d", "A"):
            return ("NOERROR", True, local_a, [])
        if rel in ("@", "d", "q"):  # q: an empty non-terminal of local data
            return ("NOERROR", True, [], SOA77)
        return ("NXDOMAIN", True, [], SOA77)
    if kind in ("transparent", "nodefault"):
        if (rel, qtype) == ("d", "A"):
            return ("NOERROR", True, local_a, [])
        return ("NOERROR", True, [], []) if rel == "d" else PASS
    if kind == "typetransparent":
        return ("NOERROR", True, local_a, []) if (rel, qtype) == ("d", "A") else PASS
    if kind == "always_transparent":
        return PASS
    assert kind == "redirect"
    if qtype == "A":
        return ("NOERROR", True, [f"{name} 120 IN A 10.9.9.9"], [])
    return ("NOERROR", True, [], [])


class Next:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def resolve(self, request: Request) -> dns.message.Message:
        self.seen.append(str(request.message.question[0].name))
        response = dns.message.make_response(request.message)
        response.set_rcode(dns.rcode.SERVFAIL)  # marks "passed on"
        return response


def build(zone_types: list[str], data: list[str], nxt: Next) -> LocalData:
    typed = parse_zone_types(zone_types)
    transparent = place_local_data([], parse_local_data(data), list(typed))
    return LocalData(nxt, transparent=transparent, typed=by_wire(typed))


def summary(response: dns.message.Message) -> tuple[str, bool, list[str], list[str]]:
    return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
            sorted(line for rrset in response.answer for line in rrset.to_text().splitlines()),
            [line for rrset in response.authority for line in rrset.to_text().splitlines()])


CASES = [(kind, rel, qtype) for kind in TYPES for rel, qtype in NAMES]


@pytest.mark.parametrize(("kind", "rel", "qtype"), CASES,
                         ids=[f"{k}-{r}-{q}" for k, r, q in CASES])
async def test_each_type_answers_as_unbound(kind: str, rel: str, qtype: str) -> None:
    nxt = Next()
    local = build(zone_lines(), data_lines(), nxt)
    zone = zone_of(kind)
    name = zone if rel == "@" else f"{rel}.{zone}"
    want = expected(kind, rel, qtype)
    query = dns.message.make_query(name, qtype)
    key = key_from_message(query)
    request = Request(query, Transport.UDP, None, deadline=0.0)
    if want == DROP:
        with pytest.raises(QueryDropped):
            await local.resolve(request)
        # over a stream: REFUSED (EDE 15 Blocked), never a hung client
        response = await local.resolve(Request(query, Transport.TLS, None, deadline=0.0))
        assert response.rcode() == dns.rcode.REFUSED
        assert local.covers_key(key)
        return
    response = await local.resolve(request)
    if want == PASS:
        assert nxt.seen == [name]
        assert not local.covers_key(key)
        return
    assert nxt.seen == []
    assert summary(response) == want
    assert local.covers_key(key)
    # kept: the fast path's rendering of the same answer (REFUSED is never kept: the
    # answer store is a Cache, which keeps NOERROR and NXDOMAIN answers only)
    out = local.lookup_wire(key, 7)
    if response.rcode() == dns.rcode.REFUSED:
        assert out is None
        return
    assert out is not None
    assert summary(dns.message.from_wire(out)) == want


async def test_longest_name_wins_and_labels_are_whole() -> None:
    nxt = Next()
    local = build(["ads.example. always_nxdomain", "ok.ads.example. always_transparent",
                   "Deep.OK.ads.example. always_refuse"], [], nxt)
    cases = {"ads.example.": "NXDOMAIN", "x.ADS.example.": "NXDOMAIN",
             "ok.ads.example.": PASS, "y.ok.ads.example.": PASS,
             "deep.ok.ads.example.": "REFUSED", "z.deep.ok.ads.example.": "REFUSED",
             "xads.example.": PASS, "example.": PASS, "ads.example.com.": PASS}
    for name, want in cases.items():
        nxt.seen.clear()
        query = dns.message.make_query(name, "A")
        response = await local.resolve(Request(query, Transport.UDP, None, deadline=0.0))
        got = PASS if nxt.seen else dns.rcode.to_text(response.rcode())
        assert got == want, name
        assert local.covers_key(key_from_message(query)) == (want != PASS), name


async def test_answers_are_counted_by_type_on_both_paths() -> None:
    local = build(["ads.example. always_nxdomain"], [], Next())
    query = dns.message.make_query("x.ads.example.", "A")
    await local.resolve(Request(query, Transport.UDP, None, deadline=0.0))
    key = key_from_message(query)
    assert local.covers_key(key)  # the handler asks, then takes the kept answer
    assert local.lookup_wire(key, 1) is not None
    assert local.zone_answers == {"always_nxdomain": 2}
    other = LocalData(Next(), zones=[], typed=by_wire(parse_zone_types(
        ["ads.example. always_nxdomain"])))
    assert other.lookup_wire(key, 1) is None  # nothing kept: nothing counted
    assert not other.zone_answers


def test_without_typed_zones_the_hot_path_methods_are_the_class_ones() -> None:
    local = LocalData(Next())
    assert "covers_key" not in vars(local) and "lookup_wire" not in vars(local)


@pytest.mark.parametrize(("line", "message"), [
    ("ads.example.", r"'ads.example.': expected \"NAME TYPE\""),
    ("ads.example. blackhole", r"unknown local-zone type 'blackhole'"),
    ("ads.example. inform", r"type 'inform' is not supported: it logs every query"),
    ("ads..example. static", r"invalid name"),
])
def test_zone_types_errors_name_the_entry(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^local\.zone_types\[1\]: " + message):
        parse_zone_types(["ok.example. static", line])


def test_zone_types_accept_unbound_spelling() -> None:
    typed = parse_zone_types(['"Ads.Example" always-nxdomain', "b.example. STATIC"])
    assert typed == {dns.name.from_text("ads.example."): "always_nxdomain",
                     dns.name.from_text("b.example."): "static"}


def test_blocklist_formats() -> None:
    text = """# a comment
ads.example
tracker.example.   # trailing comment
0.0.0.0 a.example b.example
127.0.0.1 localhost
::1 ip6-localhost
0.0.0.0 0.0.0.0
:: c.example

"""
    assert parse_blocklist(text, source="ads.txt") == [
        wire_name(n) for n in ("ads.example.", "tracker.example.", "a.example.", "b.example.",
                               "c.example.")]


@pytest.mark.parametrize("text", ["ads.example", "Ads.Example.", "a-b_c.x9.example",
                                  "x" * 63 + ".example", ".".join(["a" * 60] * 4),
                                  "b\\.c.example", "bücher.example", "xn--bcher-kva.example",
                                  "*.example"])
def test_wire_name_is_dnspythons_lower_cased_wire_form(text: str) -> None:
    assert wire_name(text) == (dns.name.from_text(text).to_wire() or b"").lower()


@pytest.mark.parametrize("text", ["a..example", "x" * 64 + ".example",
                                  ".".join(["a" * 62] * 5), ".example"])
def test_wire_name_refuses_what_dnspython_refuses(text: str) -> None:
    with pytest.raises(dns.exception.DNSException):
        dns.name.from_text(text).to_wire()
    with pytest.raises(dns.exception.DNSException):
        wire_name(text)


@pytest.mark.parametrize(("text", "where"), [
    ("ok.example\nbad name here\n", "ads.txt:2"),
    ("ok.example\n\n0.0.0.0 " + "x" * 70 + ".example\n", "ads.txt:3"),
])
def test_blocklist_errors_name_file_and_line(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_blocklist(text, source="ads.txt")
    assert info.value.field == where


def test_read_blocklist_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "ads.txt"
    path.write_text("ok.example\nbad name\n")
    with pytest.raises(ConfigError, match=rf"^local\.blocklist\[0\]\.file: {path}:2: "):
        read_blocklist(str(path), field="local.blocklist[0].file")
    with pytest.raises(ConfigError, match=r"cannot read blocklist"):
        read_blocklist(str(tmp_path / "missing"), field="local.blocklist[0].file")


def test_config_checks_types_and_blocklists() -> None:
    from dnstls import config

    with pytest.raises(ConfigError, match=r"^local\.blocklist\[0\]\.type: unknown"):
        config.load(overrides={"local": {"blocklist": [{"file": "x", "type": "nope"}]}})
    with pytest.raises(ConfigError, match=r"^local\.zone_types\[0\]: "):
        config.load(overrides={"local": {"zone_types": ["ads.example."]}})
    loaded = config.load(overrides={"local": {
        "zone_types": ["ads.example. always_nxdomain"],
        "blocklist": [{"file": "/x", "type": "always_null"}]}})
    assert loaded.local.blocklist[0].type == "always_null"
    assert dns.rdatatype.A  # (keeps the import used for readers of this table)
