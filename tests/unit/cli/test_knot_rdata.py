"""Knot-style record data: one line, +multiline, +generic, +nocrypto.

Every expected string here was printed by kdig 3.2.6 (against nsd 4.6 serving the same
records on loopback); tests/interop/test_query_multiline_interop.py checks the whole
output against the running kdig.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import dns.message
import dns.name
import dns.rdata
import dns.rrset
import pytest

from dnstls.cli.knot_rdata import dnskey_info, human_time, key_tag, knot_rdata, type_text
from dnstls.cli.output import ReplyInfo, Style, render_kdig

T4 = "\n\t\t\t\t"

P256_KSK = ("257 3 13 5FuKsQmAEgcJYfN95Dbd/cmdbnWvZUfPsRtCBySC3FMcK8OQfJYX615QieQBhrqopX0R"
            "nm+2XQCrwyrzjmZ/Ag==")
RSA_ZSK = ("256 3 8 AwEAAQF5Qr3yIQbwhHdi8PPLTXZNxwcgURWaD4nyxtrK40S7MRJF/W+E35rXxbPQdqwOj1O"
           "nNWyIkT8g9vctsCLSTQqW2tQ8FhfBqY54Ep4DJzcQZdCVhk8VraC4RsHA68U0itx5mt+Em60F1KEKw"
           "EQequ60tI76Cx8KvYDpmKNaul6gvYeZwTUNQ55xiXqnX94xNKSqcuBWKKxv5opzPRFhoV2OriuwQteV"
           "iu2x1ZTW0RLTT2YC9N5xEOmTrnQikj19FxFl3BkG9j1XmXoK0xs6rkCB9B+0cWU+PVd6jEED+cwZin"
           "+J2BrypQAcQBc/GSP3ECz6oVChJLPFx5u4h2Go2z8=")


def rd(rdtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text("IN", rdtype, text)


@pytest.mark.parametrize(("rdtype", "text", "info"), [
    ("DNSKEY", P256_KSK, "KSK, ECDSAP256SHA256 (256b), id = 61834"),
    ("DNSKEY", RSA_ZSK, "ZSK, RSASHA256 (2048b), id = 51070"),  # modulus byte 0x01: bytes count
    ("DNSKEY", "257 3 1 AwEAAcC9XH+XYMU4pVKj+FjJ7mTRuzYc9mdUVT0zPMahy4wh9Y2gdYU8bDj0vt5Lhr1fh2Z"
               "yfoSxrzYyRSpz6qo6p0g=", "KSK, RSAMD5 (512b), id = 15015"),  # RFC 4034 B.1 tag
    ("DNSKEY", "257 3 8 AwEAAQBUFfuJRL7h29rcg5eLxk4XEFfcAGxDar6DFrdnPFFvJfjbk0w7rFKERiwoRjADK"
               "sjp4oZaASOQ1FcDEKynuTQ=", "KSK, RSASHA256 (512b), id = 5772"),
    ("DNSKEY", "256 3 3 kUvgQJ1Wc7uXPiX/IvV+1AoFC/ICHfUGGLCXnPH7mZxDni3PFjpieSpRyEdUKpoD/SK5/yv"
               "Xqsje7q8OpZz2hPKDabcxhvXX9GesHXoYzXvFXKMyW+eC3NeuwdwUusm6yItwRnRkD9M1zfT0wd1m8"
               "sodUgtjMUbKOz41bZZB2N5KUG7Y/qHiDoIJr6LFbT6QZStpx3xxqnUvqptuassAmHpKjiSAsGiUT7B"
               "uZjvo2oAcyoeTZuZon7ItNtfMsHmAPz4MWKOwVnKnGDqiItCrlAr54uBW",
     "ZSK, DSA (9792b), id = 12769"),
    ("DNSKEY", "256 3 2 FmzGBeOncuHneQKwbnVQ1MgxyqE6fJQxDM8NrXJk6IfDa9qdIFvnMw==",
     "ZSK, DH (0b), id = 23795"),
    ("DNSKEY", "256 3 200 0pq1zSftYySB4A==", "ZSK, UNKNOWN (0b), id = 39458"),
    ("DNSKEY", "256 3 253 XsnmoDkoVKhhXu8Qn8G/qeJWNwE=", "ZSK, PRIVATEDNS, id = 41322"),
])
def test_dnskey_comment_as_kdig(rdtype: str, text: str, info: str) -> None:
    assert dnskey_info(rd(rdtype, text)) == info
    assert key_tag(rd(rdtype, text)) == int(info.rsplit(" ", 1)[1])


def test_dnskey_multiline_and_nocrypto() -> None:
    key = rd("DNSKEY", P256_KSK)
    info = " ; KSK, ECDSAP256SHA256 (256b), id = 61834"
    assert knot_rdata(key, multiline=True) == (
        "257 3 13 (" + T4 + "5FuKsQmAEgcJYfN95Dbd/cmdbnWvZUfPsRtCBySC" + T4
        + "3FMcK8OQfJYX615QieQBhrqopX0Rnm+2XQCrwyrz" + T4 + "jmZ/Ag==" + T4 + ")" + info)
    assert knot_rdata(key, multiline=True, crypto=False) == "257 3 13 [omitted]" + T4 + info
    assert knot_rdata(key, crypto=False) == "257 3 13 [id = 61834]"
    assert knot_rdata(key) == P256_KSK


@pytest.mark.parametrize(("seconds", "text"), [
    (0, ""), (1, "1 second"), (60, "1 minute"), (61, "1 minute 1 second"),
    (3599, "59 minutes 59 seconds"), (3601, "1 hour 1 second"), (86401, "1 day 1 second"),
    (90061, "1 day 1 hour 1 minute 1 second"), (604800, "1 week"), (1209600, "2 weeks"),
    (31536000, "52 weeks 1 day"),
    (4294967295, "7101 weeks 3 days 6 hours 28 minutes 15 seconds"),
])
def test_human_time_as_kdig(seconds: int, text: str) -> None:
    assert human_time(seconds) == text


def test_soa_multiline_comments() -> None:
    soa = rd("SOA", "ns1.example.test. hostmaster.example.test. 2024010101 0 600 86400 300")
    assert knot_rdata(soa, multiline=True) == (
        "ns1.example.test. hostmaster.example.test. (" + T4 + "2024010101 ; serial" + T4
        + "0 ; refresh" + T4 + "600 ; retry (10 minutes)" + T4 + "86400 ; expire (1 day)"
        + T4 + "300 ; minimum (5 minutes)" + T4 + ")")
    assert knot_rdata(soa) == ("ns1.example.test. hostmaster.example.test. 2024010101 0 600 "
                               "86400 300")


def test_rrsig_multiline() -> None:
    sig = rd("RRSIG", "SOA 13 2 300 20260101000000 20250101000000 12345 example.test. "
                      "uShlyFF+0CER9qZS2jUkhytqMdf/5Fh3RNXreD6Wlo+JvoKFZeB+X314TpBgpyHKgH12M"
                      "+0SNALzduW/FJZ3PQ==")
    head = "SOA 13 2 300 20260101000000 (" + T4 + "20250101000000 12345 example.test." + T4
    assert knot_rdata(sig, multiline=True) == (
        head + "uShlyFF+0CER9qZS2jUkhytqMdf/5Fh3RNXreD6W" + T4
        + "lo+JvoKFZeB+X314TpBgpyHKgH12M+0SNALzduW/" + T4 + "FJZ3PQ==" + T4 + ")")
    assert knot_rdata(sig, multiline=True, crypto=False) == head + "[omitted]" + T4 + ")"


@pytest.mark.parametrize(("rdtype", "text", "one_line", "multiline"), [
    ("DS", "23456 8 1 3fab861a88df87976f2b075685786751a762c7a8",
     "23456 8 1 3FAB861A88DF87976F2B075685786751A762C7A8",
     "23456 8 1 (" + T4 + "3FAB861A88DF87976F2B075685786751A762C7A8" + T4 + ")"),
    ("NSEC3", "1 1 10 aabbccdd 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR A RRSIG",
     "1 1 10 AABBCCDD 2t7b4g4vsa5smi47k61mv5bv1a22bojr A RRSIG",
     "1 1 10 AABBCCDD (" + T4 + "2t7b4g4vsa5smi47k61mv5bv1a22bojr" + T4 + "A RRSIG" + T4 + ")"),
    ("NSEC3", "1 0 0 - 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR",
     "1 0 0 - 2t7b4g4vsa5smi47k61mv5bv1a22bojr ",
     "1 0 0 - (" + T4 + "2t7b4g4vsa5smi47k61mv5bv1a22bojr" + T4 + T4 + ")"),
    ("NSEC", "a.example.", "a.example. ", "a.example. "),
    ("NSEC3PARAM", "1 0 10 aabbccdd", "1 0 10 AABBCCDD", "1 0 10 AABBCCDD"),
    ("CAA", '0 issue "letsencrypt.org"', '0 issue "letsencrypt.org" ',
     '0 issue "letsencrypt.org" '),
    ("URI", '10 1 "https://example.test/"', '10 1 "https://example.test/" ',
     '10 1 "https://example.test/" '),
    ("LOC", "52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m",
     "52 22 23 N  4 53 32 E  -2m  0m 10000m 10m", "52 22 23 N  4 53 32 E  -2m  0m 10000m 10m"),
    ("LOC", "0 0 0.001 S 0 0 0.5 W -100000.00m 1m 1m 1m",
     "0 0 0.001 S  0 0 0.500 W  -100000m  1m 1m 1m",
     "0 0 0.001 S  0 0 0.500 W  -100000m  1m 1m 1m"),
    ("EUI48", "00-00-5e-00-53-2a", "00-00-5E-00-53-2A", "00-00-5E-00-53-2A"),
    ("CERT", "1 12345 8 AAECAw==", "1 12345 8 AAECAw==",
     "1 12345 8 (" + T4 + "AAECAw==" + T4 + ")"),
    ("DHCID", "AAECAw==", "AAECAw==", "(" + T4 + "AAECAw==" + T4 + ")"),
    ("IPSECKEY", "10 1 2 192.0.2.38 AAECAw==", "10 1 2 192.0.2.38 AAECAw==",
     "10 (" + T4 + "1 2 192.0.2.38" + T4 + "AAECAw==" + T4 + ")"),
    ("SVCB", '2 . mandatory=alpn alpn="h2,h3" no-default-alpn port=53 key65000="abc"',
     '2 . mandatory=alpn alpn=h2,h3 no-default-alpn port=53 key65000="abc"',
     "2 . (" + T4 + "mandatory=alpn" + T4 + "alpn=h2,h3" + T4 + "no-default-alpn" + T4
     + "port=53" + T4 + 'key65000="abc"' + T4 + ")"),
    ("SVCB", "0 target.example.", "0 target.example.", "0 target.example."),
    ("TXT", '"a" "b"', '"a" "b"', '"a" "b"'),
    ("TYPE65534", r"\# 3 abcdef", r"\# 3 ABCDEF", "(" + T4 + r"\# 3 " + T4 + "ABCDEF" + T4 + ")"),
    ("TYPE65000", r"\# 0", r"\# 0", "(" + T4 + r"\# 0" + T4 + ")"),
    ("WKS", "192.0.2.1 6 25 80", r"\# 16 C0000201060000004000000000000080",
     "(" + T4 + r"\# 16 " + T4 + "C0000201060000004000000000000080" + T4 + ")"),
])
def test_record_data_as_kdig(rdtype: str, text: str, one_line: str, multiline: str) -> None:
    assert knot_rdata(rd(rdtype, text)) == one_line
    assert knot_rdata(rd(rdtype, text), multiline=True) == multiline


def test_generic_wraps_every_40_hex_digits() -> None:
    mx = rd("MX", "10 mail.example.test.")
    assert knot_rdata(mx, generic=True) == r"\# 21 000A046D61696C076578616D706C650474657374" + "00"
    assert knot_rdata(mx, generic=True, multiline=True) == (
        "(" + T4 + r"\# 21 " + T4 + "000A046D61696C076578616D706C650474657374" + T4 + "00"
        + T4 + ")")


@pytest.mark.parametrize(("rdtype", "generic", "text"), [
    (6, False, "SOA"), (6, True, "TYPE6"), (11, False, "TYPE11"), (32769, False, "TYPE32769"),
    (261, False, "TYPE261"), (64, False, "SVCB"), (10, False, "NULL"),
])
def test_type_names_are_knots(rdtype: int, generic: bool, text: str) -> None:
    assert type_text(rdtype, generic=generic) == text


def _message() -> dns.message.Message:
    query = dns.message.make_query("example.test.", "SOA")
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text(
        "example.test.", 300, "IN", "SOA",
        "ns1.example.test. hostmaster.example.test. 2024010101 3600 600 86400 300"))
    return reply


INFO = ReplyInfo("127.0.0.1", 53, "UDP", 0.4, 111, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_multiline_layout_separates_columns_with_spaces() -> None:
    text = render_kdig(_message(), INFO, Style(multiline=True, header=False, stats=False))
    assert text == (
        "\n;; QUESTION SECTION:\n;; example.test.       \t IN SOA\n\n;; ANSWER SECTION:\n"
        "example.test.       \t300 IN SOA ns1.example.test. hostmaster.example.test. ("
        + T4 + "2024010101 ; serial" + T4 + "3600 ; refresh (1 hour)" + T4
        + "600 ; retry (10 minutes)" + T4 + "86400 ; expire (1 day)" + T4
        + "300 ; minimum (5 minutes)" + T4 + ")\n")
    bare = render_kdig(_message(), INFO, Style(multiline=True, header=False, stats=False,
                                               comments=False, ttl=False, rrclass=False,
                                               answer=False))
    assert bare == ";;example.test.       \tSOA\n"


def test_generic_names_the_type_by_number_in_every_line() -> None:
    text = render_kdig(_message(), INFO, Style(generic=True, header=False, stats=False))
    assert ";; example.test.       \t\tIN\tTYPE6\n" in text
    assert "\t300\tIN\tTYPE6\t\\# 63 036E7331" in text


def _tsig(mac: bytes, error: int = 0, other: bytes = b"") -> dns.rdata.Rdata:
    import dns.rdtypes.ANY.TSIG

    return dns.rdtypes.ANY.TSIG.TSIG(255, 250, dns.name.from_text("hmac-sha256."),
                                     1796651476, 300, mac, 61485, error, other)


def test_tsig_record_as_kdig() -> None:
    mac = base64.b64decode("9Hk42IV+HtkqcEodgJoMTw/cjl5hSn+jMXRznnpJWwE=")
    assert knot_rdata(_tsig(mac)) == (
        "hmac-sha256. 1796651476 300 32 9Hk42IV+HtkqcEodgJoMTw/cjl5hSn+jMXRznnpJWwE= 61485 "
        "NOERROR 0")
    assert knot_rdata(_tsig(b"", 17)) == "hmac-sha256. 1796651476 300 0 61485 BADKEY 0"
    assert knot_rdata(_tsig(mac), multiline=True) == (
        "hmac-sha256. 1796651476 300 (" + T4 + "32 9Hk42IV+HtkqcEodgJoMTw/cjl5hSn+jMXRznnpJWwE="
        + T4 + "61485 NOERROR 0" + T4 + ")")
    assert knot_rdata(_tsig(b"", 16), multiline=True) == (
        "hmac-sha256. 1796651476 300 (" + T4 + "0" + T4 + "61485 BADSIG 0" + T4 + ")")
    assert knot_rdata(_tsig(b"", 18, b"\x00\x01")).endswith(" BADTIME 2 0001")


def test_tsig_pseudosection_and_status_as_kdig() -> None:
    reply = _message()
    reply.question = []
    reply.answer = []
    reply.set_rcode(9)  # NOTAUTH: the TSIG error says which
    reply.flags = 0x8000 | 9  # QR, as nsd sends it
    reply.tsig = dns.rrset.from_rdata("tsig-key.", 0, _tsig(b"", 16))
    text = render_kdig(reply, INFO, Style(stats=False))
    assert text == (
        ";; ->>HEADER<<- opcode: QUERY; status: BADSIG; id: " + str(reply.id) + "\n"
        ";; Flags: qr; QUERY: 0; ANSWER: 0; AUTHORITY: 0; ADDITIONAL: 1\n"
        "\n;; TSIG PSEUDOSECTION:\n"
        "tsig-key.           \t0\tANY\tTSIG\thmac-sha256. 1796651476 300 0 61485 BADSIG 0\n")
    assert render_kdig(reply, INFO, Style(stats=False, header=False, tsig=False)) == ""
    reply.answer.append(dns.rrset.from_text("a.example.", 300, "IN", "A", "192.0.2.1"))
    assert render_kdig(reply, INFO, Style(format="short", header=False, opt=False,
                                          stats=False)) == (
        "192.0.2.1\n\n;; TSIG PSEUDOSECTION:\ntsig-key.           \t0\tANY\tTSIG\t"
        "hmac-sha256. 1796651476 300 0 61485 BADSIG 0\n")
