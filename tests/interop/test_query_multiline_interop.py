"""``dnstls query +multiline`` and ``+generic`` against the real kdig 3.2.6.

nsd serves a zone with records of some forty types -- DNSKEYs of every algorithm kdig
names (their ``; KSK, ... id = N`` comments), RRSIG, NSEC, DS, TLSA, SVCB, LOC, types
Knot 3.2 does not know (printed as ``TYPE11 \\# ...``) and unknown ones -- and kdig and
``dnstls query`` ask it every (name, type) of :data:`QUESTIONS` in one command, over
TCP, with the same display options. Their standard output must be equal byte for byte,
after normalising the message IDs, the clock and the elapsed times (as
test_query_display_interop.py does).
"""

from __future__ import annotations

import base64
import random
import subprocess
from collections.abc import Sequence

import pytest

from dnstls.cli.main import main

from . import peers
from .peers import Peer, require
from .test_query_display_interop import normalise

pytestmark = pytest.mark.interop

TIMEOUT = 60
_RANDOM = random.Random(20261207)  # the same zone on every run


def _b64(size: int, head: bytes = b"") -> str:
    return base64.b64encode(head + bytes(_RANDOM.randrange(256) for _ in range(size))).decode()


def _hex(size: int) -> str:
    return bytes(_RANDOM.randrange(256) for _ in range(size)).hex()


_E3 = b"\x03\x01\x00\x01"  # RSA exponent 65537, one-byte length form
#: DNSKEYs: (owner, flags, algorithm, key) -- sizes and key tags as kdig works them out
_KEYS = [
    ("@", 257, 13, _b64(64)), ("@", 256, 13, _b64(64)), ("@", 257, 8, _b64(255, _E3 + b"\xc1")),
    ("@", 256, 8, _b64(127, _E3 + b"\xb0")), ("@", 256, 15, _b64(32)), ("@", 256, 16, _b64(57)),
    ("@", 256, 14, _b64(96)), ("@", 385, 13, _b64(64)), ("@", 256, 253, _b64(20)),
    ("k", 256, 8, _b64(255, _E3 + b"\x01")), ("k", 257, 1, _b64(63, _E3 + b"\xc0")),
    ("k", 256, 5, _b64(127, b"\x01\x03\xc0")), ("k", 257, 10, _b64(511, _E3 + b"\xc0")),
    ("k", 256, 8, _b64(255, b"\x00\x00\x03\x01\x00\x01\xc0")), ("k", 256, 3, _b64(212)),
    ("k", 256, 2, _b64(40)), ("k", 256, 12, _b64(64)), ("k", 256, 200, _b64(10)),
    ("k", 256, 252, _b64(10)), ("k", 0, 13, _b64(64)), ("k", 1, 13, _b64(64)),
]

ZONE_TEXT = "\n".join([
    f"$ORIGIN {peers.ZONE_ORIGIN}",
    "$TTL 300",
    "@ IN SOA ns1 hostmaster 2024010101 3600 600 86400 300",
    "@ IN NS ns1",
    "ns1 IN A 127.0.0.1",
    *(f"{owner} IN DNSKEY {flags} 3 {alg} {key}" for owner, flags, alg, key in _KEYS),
    f"@ IN CDNSKEY 257 3 13 {_b64(64)}",
    f"@ IN CDS 12345 13 2 {_hex(32)}",
    f"@ IN RRSIG SOA 13 2 300 20260101000000 20250101000000 12345 example.test. {_b64(64)}",
    f"@ IN RRSIG DNSKEY 8 2 300 20260101000000 20250101000000 23456 example.test. {_b64(256)}",
    "@ IN NSEC www.example.test. A NS SOA MX TXT AAAA RRSIG NSEC DNSKEY TYPE65534",
    "@ IN MX 10 mail",
    '@ IN CAA 0 issue "letsencrypt.org"',
    f"sub IN DS 12345 13 2 {_hex(32)}",
    f"sub IN DS 23456 8 1 {_hex(20)}",
    f"sub IN DS 3456 13 4 {_hex(48)}",
    "sub IN NS ns1",
    "www IN A 192.0.2.1",
    "www IN AAAA 2001:db8::1",
    'txt IN TXT "hello dnstls"',
    'txt IN TXT "a" "b" "c"',
    f'txt IN TXT "{"x" * 200}" "{"y" * 100}"',
    'txt IN TXT "with \\"quote\\" and \\\\ and \\009 tab" "\\255\\200"',
    f"_443._tcp IN TLSA 3 1 1 {_hex(32)}",
    f"_443._tcp IN TLSA 3 0 0 {_hex(100)}",
    f"host IN SSHFP 4 2 {_hex(32)}",
    f"host IN SSHFP 1 1 {_hex(20)}",
    "host IN LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m",
    "host IN LOC 0 0 0.001 S 0 0 0.5 W -100000.00m 1m 1m 1m",
    'host IN HINFO "PC" "Linux"',
    f"host IN CERT 1 12345 8 {_b64(100)}",
    f"host IN DHCID {_b64(35)}",
    f"host IN IPSECKEY 10 1 2 192.0.2.38 {_b64(64)}",
    f"host IN IPSECKEY 10 3 2 gw.example.test. {_b64(20)}",
    "host IN SRV 0 5 5060 sip.example.test.",
    'host IN NAPTR 100 10 "U" "E2U+sip" "!^.*$!sip:info@example.test!" .',
    'host IN SPF "v=spf1 -all"',
    'host IN URI 10 1 "https://example.test/"',
    f"host IN OPENPGPKEY {_b64(150)}",
    f"host IN SMIMEA 3 1 1 {_hex(32)}",
    "host IN CSYNC 66 3 A NS AAAA",
    f"host IN ZONEMD 2024010101 1 1 {_hex(48)}",
    "host IN TYPE65534 \\# 3 ABCDEF",
    f"host IN TYPE65533 \\# 45 {_hex(45)}",
    "host IN TYPE65000 \\# 0",
    "host IN PTR www.example.test.",
    "host IN RP mbox.example.test. txt.example.test.",
    'host IN SVCB 1 . alpn="h2,h3" port=8443',
    "host IN SVCB 0 www.example.test.",
    'host IN HTTPS 1 . mandatory=alpn alpn="h2" no-default-alpn ipv4hint=192.0.2.1,192.0.2.2 '
    'ipv6hint=2001:db8::1 key65000="abc"',
    "host IN EUI48 00-00-5e-00-53-2a",
    "host IN EUI64 00-00-5e-ef-10-00-00-2a",
    f"host IN KEY 256 3 13 {_b64(64)}",
    "host IN NID 10 0014:4fff:ff20:ee64",
    "host IN L64 10 2001:0DB8:1140:1000",
    "host IN L32 10 10.1.2.0",
    "host IN LP 10 l64-subnet.example.test.",
    "host IN KX 10 kx.example.test.",
    "host IN AFSDB 1 afs.example.test.",
    "host IN APL 1:192.168.32.0/21 !1:192.168.38.0/28 2:2001:db8::/32",
    "host IN WKS 192.0.2.1 6 25 80",
    'host IN X25 "311061700956"',
    "host IN TYPE27 \\# 23 082D33322E36383832083131362E383635320431302E30",  # GPOS
    "",
])

_HOST_TYPES = [
    "SSHFP", "LOC", "HINFO", "CERT", "DHCID", "IPSECKEY", "SRV", "NAPTR", "SPF", "URI",
    "OPENPGPKEY", "SMIMEA", "CSYNC", "ZONEMD", "TYPE65534", "TYPE65533", "TYPE65000", "PTR",
    "RP", "SVCB", "HTTPS", "EUI48", "EUI64", "KEY", "NID", "L64", "L32", "LP", "KX", "AFSDB",
    "APL", "TYPE11", "TYPE19", "TYPE27",  # WKS, X25, GPOS: kdig has no names for them
]
#: every (name, type) of the zone, asked in one command
QUESTIONS = [
    *(("example.test.", t) for t in ["SOA", "DNSKEY", "CDNSKEY", "CDS", "RRSIG", "NSEC",
                                      "MX", "CAA", "NS"]),
    ("k.example.test.", "DNSKEY"), ("sub.example.test.", "DS"), ("www.example.test.", "A"),
    ("www.example.test.", "AAAA"), ("txt.example.test.", "TXT"),
    ("_443._tcp.example.test.", "TLSA"), *(("host.example.test.", t) for t in _HOST_TYPES),
]

OPTIONS = [
    ["+multiline"], ["+multiline", "+nocrypto"], ["+generic"], ["+generic", "+multiline"],
    ["+noall", "+answer"], ["+noall", "+answer", "+nocrypto"], ["+multiline", "+short"],
    ["+short", "+multiline"], ["+noall", "+answer", "+multiline"],
    ["+multiline", "+nomultiline"], ["+multiline", "+nottl", "+noclass", "+nocomments"],
    ["+json", "+multiline"], ["+short", "+generic"], ["+mu", "+qr", "+dnssec"],
]


@pytest.fixture(scope="module")
def zone_nsd(tmp_path_factory: pytest.TempPathFactory) -> object:
    with peers.peer_group_at(tmp_path_factory.mktemp("multiline") / "peers") as group:
        yield peers.start_nsd(group, zone_text=ZONE_TEXT)


def _names() -> list[str]:
    return [word for name, rdtype in QUESTIONS for word in (name, rdtype)]


def run_kdig(port: int, options: Sequence[str]) -> tuple[int, str, str]:
    kdig = require("kdig")
    run = subprocess.run([kdig, "@127.0.0.1", "-p", str(port), "+retry=0", "+timeout=5",
                          "+noadflag", "+bufsize=1232", "+tcp", "+norec", *options, *_names()],
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return run.returncode, run.stdout, run.stderr


@pytest.mark.parametrize("options", OPTIONS, ids=" ".join)
def test_multiline_and_generic_print_what_kdig_prints(
        options: list[str], zone_nsd: Peer, capsys: pytest.CaptureFixture[str]) -> None:
    status, theirs, their_err = run_kdig(zone_nsd.port, options)
    assert status == 0, theirs + their_err
    assert "SERVFAIL" not in theirs and len(theirs.splitlines()) > len(QUESTIONS)
    capsys.readouterr()
    ours_status = main(["query", "@127.0.0.1", "-p", str(zone_nsd.port), "+retry=0",
                        "+timeout=5", "+tcp", "+norec", *options, *_names()])
    ours, our_err = capsys.readouterr()
    assert ours_status == 0, our_err
    if "+json" in options:  # +json then +multiline: kdig's full format, not JSON
        assert not ours.startswith("{") and not theirs.startswith("{")
    assert normalise(ours) == normalise(theirs)
    assert our_err == their_err
