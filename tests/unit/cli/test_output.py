"""Renderers of ``dnstls query``: full expected text for fixed messages and a fixed time.

The layout is kdig 3.2's; ``test_layout_matches_kdig`` (interop) runs the real kdig
against a UDP responder that sends the very message we render and compares line by line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dnstls.cli.output import (
    ReplyInfo,
    Style,
    TlsSession,
    render_chain_debug,
    render_json,
    render_kdig,
    tls_session_line,
)
from dnstls.net.probe import Verification
from dnstls.proto.pins import spki_pin

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TLS13 = TlsSession("TLSv1.3", "TLS_AES_256_GCM_SHA384")
TAB = "\t"


def response(qname: str, qtype: str, *records: str, authority: Sequence[str] = (),
             additional: Sequence[str] = (), edns: bool = True,
             options: Sequence[dns.edns.Option] = (), msg_id: int = 4242,
             rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, use_edns=0 if edns else False)
    query.id = msg_id
    answer = dns.message.make_response(query)
    answer.flags |= dns.flags.RA
    if edns:
        answer.use_edns(0, payload=1232, options=list(options))
    answer.set_rcode(rcode)
    for section, texts in ((answer.answer, records), (answer.authority, authority),
                           (answer.additional, additional)):
        for text in texts:
            section.append(dns.rrset.from_text(*text.split(maxsplit=4)))
    return answer


def info(transport: str = "TLS", *, tls: TlsSession | None = TLS13, received: int = 468,
         elapsed: float = 1.25, server: str = "127.0.0.1", port: int = 853) -> ReplyInfo:
    return ReplyInfo(server=server, port=port, transport=transport, elapsed_ms=elapsed,
                     received=received, time=WHEN, tls=tls)


# --- kdig layout -----------------------------------------------------------------------

def test_tls_answer_with_padding_and_keepalive() -> None:
    message = response("dns.example.", "A", "dns.example. 300 IN A 192.0.2.1", options=[
        dns.edns.GenericOption(dns.edns.KEEPALIVE, b"\x04\xb0"),
        dns.edns.GenericOption(dns.edns.PADDING, bytes(402))])
    assert render_kdig(message, info()) == (
        ";; TLS session (TLS1.3)-(AES-256-GCM)\n"
        ";; ->>HEADER<<- opcode: QUERY; status: NOERROR; id: 4242\n"
        ";; Flags: qr rd ra; QUERY: 1; ANSWER: 1; AUTHORITY: 0; ADDITIONAL: 1\n"
        "\n"
        ";; EDNS PSEUDOSECTION:\n"
        ";; Version: 0; flags: ; UDP size: 1232 B; ext-rcode: NOERROR\n"
        ";; KEEPALIVE: 120.0 s\n"
        ";; PADDING: 402 B\n"
        "\n"
        ";; QUESTION SECTION:\n"
        f";; dns.example.        {TAB}{TAB}IN{TAB}A\n"
        "\n"
        ";; ANSWER SECTION:\n"
        f"dns.example.        {TAB}300{TAB}IN{TAB}A{TAB}192.0.2.1\n"
        "\n"
        ";; Received 468 B\n"
        ";; Time 2026-01-02 03:04:05 UTC\n"
        ";; From 127.0.0.1@853(TLS) in 1.2 ms\n"
    )


def test_nxdomain_with_ede_nsid_cookie_unknown_option_and_long_owner() -> None:
    long_zone = "a-rather-long-zone-name.example."  # 32 characters: a space, not a TAB
    assert len(long_zone) == 32
    message = response(
        "gone.a-rather-long-zone-name.example.", "AAAA",
        authority=[f"{long_zone} 3600 IN SOA ns1.example. hostmaster.example. 7 3600 600 "
                   "86400 300"],
        options=[dns.edns.EDEOption(dns.edns.EDECode.PROHIBITED, "blocked by policy"),
                 dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER),
                 dns.edns.GenericOption(dns.edns.EDE, struct_ede(4711, "")),
                 dns.edns.NSIDOption(b"ns1"),
                 dns.edns.GenericOption(dns.edns.NSID, b"\x01\x02"),
                 dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(1, 9)) * 3),
                 dns.edns.GenericOption(65001, b"\xab\xcd"),
                 dns.edns.GenericOption(dns.edns.KEEPALIVE, b""),
                 dns.edns.GenericOption(dns.edns.KEEPALIVE, b"\x01"),
                 dns.edns.GenericOption(dns.edns.EDE, b"\x00")],
        rcode=dns.rcode.NXDOMAIN, msg_id=1)
    message.flags |= dns.flags.AD | dns.flags.CD
    message.ednsflags |= dns.flags.DO
    text = render_kdig(message, info("TCP", tls=None, received=201, elapsed=0.04))
    soa = ("ns1.example. hostmaster.example. 7 3600 600 86400 300")
    assert text == (
        ";; ->>HEADER<<- opcode: QUERY; status: NXDOMAIN; id: 1\n"
        ";; Flags: qr rd ra ad cd; QUERY: 1; ANSWER: 0; AUTHORITY: 1; ADDITIONAL: 1\n"
        "\n"
        ";; EDNS PSEUDOSECTION:\n"
        ";; Version: 0; flags: do; UDP size: 1232 B; ext-rcode: NOERROR\n"
        ";; EDE: 18 (Prohibited): 'blocked by policy'\n"
        ";; EDE: 3 (Stale Answer)\n"
        ";; EDE: 4711 (Unknown code)\n"
        ';; NSID: 6E7331 "ns1"\n'
        ";; NSID: 0102\n"
        ";; COOKIE: " + "0102030405060708" * 3 + "\n"
        ";; Option (65001): ABCD\n"
        ";; KEEPALIVE: (empty)\n"
        ";; KEEPALIVE: (malformed)\n"
        ";; EDE: (malformed)\n"
        "\n"
        ";; QUESTION SECTION:\n"
        f";; gone.a-rather-long-zone-name.example. {TAB}IN{TAB}AAAA\n"
        "\n"
        ";; AUTHORITY SECTION:\n"
        f"{long_zone} 3600{TAB}IN{TAB}SOA{TAB}{soa}\n"
        "\n"
        ";; Received 201 B\n"
        ";; Time 2026-01-02 03:04:05 UTC\n"
        ";; From 127.0.0.1@853(TCP) in 0.0 ms\n"
    )


def struct_ede(code: int, text: str) -> bytes:
    return code.to_bytes(2, "big") + text.encode()


def test_without_edns_every_section_and_multiple_rdata() -> None:
    message = response(
        "example.", "MX", "example. 300 IN MX 10 mail.example.",
        "example. 300 IN MX 20 mx2.example.",
        authority=["example. 86400 IN NS ns1.example."],
        additional=["mail.example. 300 IN A 192.0.2.25",
                    'mail.example. 300 IN TXT "hello world" "two"'],
        edns=False, msg_id=65535)
    message.flags &= ~(dns.flags.RD | dns.flags.RA)
    text = render_kdig(message, info("UDP", tls=None, received=120, elapsed=12.345,
                                     server="::1", port=53))
    assert text == (
        ";; ->>HEADER<<- opcode: QUERY; status: NOERROR; id: 65535\n"
        ";; Flags: qr; QUERY: 1; ANSWER: 2; AUTHORITY: 1; ADDITIONAL: 2\n"
        "\n"
        ";; QUESTION SECTION:\n"
        f";; example.            {TAB}{TAB}IN{TAB}MX\n"
        "\n"
        ";; ANSWER SECTION:\n"
        f"example.            {TAB}300{TAB}IN{TAB}MX{TAB}10 mail.example.\n"
        f"example.            {TAB}300{TAB}IN{TAB}MX{TAB}20 mx2.example.\n"
        "\n"
        ";; AUTHORITY SECTION:\n"
        f"example.            {TAB}86400{TAB}IN{TAB}NS{TAB}ns1.example.\n"
        "\n"
        ";; ADDITIONAL SECTION:\n"
        f"mail.example.       {TAB}300{TAB}IN{TAB}A{TAB}192.0.2.25\n"
        f'mail.example.       {TAB}300{TAB}IN{TAB}TXT{TAB}"hello world" "two"\n'
        "\n"
        ";; Received 120 B\n"
        ";; Time 2026-01-02 03:04:05 UTC\n"
        ";; From ::1@53(UDP) in 12.3 ms\n"
    )


def test_no_flags_unknown_opcode_and_extended_rcode() -> None:
    message = response("example.", "A", msg_id=7)
    message.flags = 0
    message.set_opcode(3)
    message.set_rcode(dns.rcode.BADVERS)  # 16: the upper bits live in the OPT TTL
    header = render_kdig(message, info("TLS", tls=None)).splitlines()[:5]
    assert header == [
        ";; ->>HEADER<<- opcode: OPCODE 3; status: BADVERS; id: 7",
        ";; Flags: ; QUERY: 1; ANSWER: 0; AUTHORITY: 0; ADDITIONAL: 1",
        "",
        ";; EDNS PSEUDOSECTION:",
        ";; Version: 0; flags: ; UDP size: 1232 B; ext-rcode: BADVERS",
    ]
    message.set_rcode(4000)  # no name: kdig prints the number
    assert "status: RCODE 4000;" in render_kdig(message, info())


def _signed() -> dns.message.Message:
    message = response(
        "example.", "DNSKEY",
        "example. 60 IN DNSKEY 257 3 13 dGhpcyBpcyBhIHNpZ25hdHVyZSBkYXRhIHRoYXQgaXMgbG9uZw==",
        "example. 60 IN RRSIG DNSKEY 13 1 60 20260101000000 20250101000000 9082 example. "
        "dGhpcyBpcyBhIHNpZ25hdHVyZSBkYXRhIHRoYXQgaXMgbG9uZw==",
        authority=["example. 60 IN DS 12345 13 2 " + "ab" * 32],
        additional=["a-rather-long-owner-name-for.example. 3600 IN A 192.0.2.1"],
        options=[dns.edns.GenericOption(65001, b"hi there"), dns.edns.NSIDOption(b"")])
    return message


def test_display_switches_as_kdig() -> None:
    """kdig's +nocomments (";;" glued to the OPT and question lines, no section titles),
    +noclass, +nottl, +opttext, +nocrypto and +noheader/+nostats, checked line by line
    against kdig 3.2.6 (tests/interop/test_query_display_interop.py runs it)."""
    style = Style(comments=False, rrclass=False, ttl=False, opttext=True, crypto=False,
                  header=False, stats=False)
    assert render_kdig(_signed(), info(), style) == (
        ";;Version: 0; flags: ; UDP size: 1232 B; ext-rcode: NOERROR\n"
        ";; Option (65001): hi there\n"
        ";; NSID: \n"
        f";;example.            {TAB}DNSKEY\n"
        f"example.            {TAB}DNSKEY{TAB}257 3 13 [id = 9082]\n"
        f"example.            {TAB}RRSIG{TAB}DNSKEY 13 1 60 20260101000000 20250101000000 "
        "9082 example. [omitted]\n"
        f"example.            {TAB}DS{TAB}12345 13 2 {'AB' * 32}\n"
        "a-rather-long-owner-name-for.example. A\t192.0.2.1\n"
    )


def test_default_style_prints_crypto_unbroken_and_hex_in_capitals() -> None:
    """Base64 in one piece and hex digits in capitals, as Knot prints them (dnspython
    breaks base64 into 32-character chunks and writes hex in small letters)."""
    text = render_kdig(_signed(), info(), Style(header=False, stats=False, opt=False))
    assert f"DNSKEY{TAB}257 3 13 dGhpcyBpcyBhIHNpZ25hdHVyZSBkYXRhIHRoYXQgaXMgbG9uZw==\n" in text
    assert f"DS{TAB}12345 13 2 {'AB' * 32}\n" in text


def test_short_all_and_sections_off() -> None:
    message = _signed()
    assert render_kdig(message, info(), Style(format="short", header=False, opt=False,
                                              stats=False)) == (
        "257 3 13 dGhpcyBpcyBhIHNpZ25hdHVyZSBkYXRhIHRoYXQgaXMgbG9uZw==\n"
        "DNSKEY 13 1 60 20260101000000 20250101000000 9082 example. "
        "dGhpcyBpcyBhIHNpZ25hdHVyZSBkYXRhIHRoYXQgaXMgbG9uZw==\n")
    off = Style(header=False, opt=False, question=False, answer=False, authority=False,
                additional=False, stats=False)
    assert render_kdig(message, info(), off) == ""
    assert render_kdig(message, info(), Style(header=False, opt=False, question=False,
                                              answer=False, authority=False,
                                              additional=False)) == (
        "\n;; Received 468 B\n;; Time 2026-01-02 03:04:05 UTC\n"
        ";; From 127.0.0.1@853(TLS) in 1.2 ms\n")


def test_query_sent_footer_has_no_time() -> None:
    """+qr: the query as sent, "Sent" and "To" instead of "Received" and "From"; we do
    not time the sending, so the To line has no "in X ms" (kdig's has)."""
    query = dns.message.make_query("example.", "A", use_edns=0, payload=1232)
    query.id = 7
    sent = ReplyInfo("127.0.0.1", 53, "UDP", -1.0, 40, WHEN)
    text = render_kdig(query, sent, Style(), incoming=False)
    assert text.endswith("\n;; Sent 40 B\n;; Time 2026-01-02 03:04:05 UTC\n"
                         ";; To 127.0.0.1@53(UDP)\n")
    assert text.startswith(";; ->>HEADER<<- opcode: QUERY; status: NOERROR; id: 7\n"
                           ";; Flags: rd; QUERY: 1; ANSWER: 0; AUTHORITY: 0; ADDITIONAL: 1\n")


def test_naive_time_is_utc_and_aware_time_is_converted() -> None:
    message = response("example.", "A", edns=False)
    naive = ReplyInfo("192.0.2.1", 853, "TLS", 3.0, 40, dt.datetime(2026, 5, 6, 7, 8, 9))
    assert ";; Time 2026-05-06 07:08:09 UTC\n" in render_kdig(message, naive)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    aware = ReplyInfo("192.0.2.1", 853, "TLS", 3.0, 40, dt.datetime(2026, 5, 6, 9, 8, 9,
                                                                      tzinfo=plus2))
    assert ";; Time 2026-05-06 07:08:09 UTC\n" in render_kdig(message, aware)


@pytest.mark.parametrize(("session", "line"), [
    (TlsSession("TLSv1.3", "TLS_AES_256_GCM_SHA384", "x25519", "ECDSA-SECP256R1-SHA256"),
     ";; TLS session (TLS1.3)-(ECDHE-X25519)-(ECDSA-SECP256R1-SHA256)-(AES-256-GCM)"),
    (TlsSession("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
     ";; TLS session (TLS1.3)-(CHACHA20-POLY1305)"),
    (TlsSession("TLSv1.3", "TLS_AES_128_GCM_SHA256", "secp256r1"),
     ";; TLS session (TLS1.3)-(ECDHE-SECP256R1)-(AES-128-GCM)"),
    (TlsSession("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"),
     ";; TLS session (TLS1.2)-(ECDHE)-(AES-256-GCM)"),
    (TlsSession("TLSv1.2", "AES128-SHA"), ";; TLS session (TLS1.2)-(AES-128-CBC)"),
    (TlsSession("TLSv1.2", "CAMELLIA256-SHA"), ";; TLS session (TLS1.2)-(CAMELLIA256-SHA)"),
])
def test_tls_session_line(session: TlsSession, line: str) -> None:
    assert tls_session_line(session) == line


# --- JSON ------------------------------------------------------------------------------

def test_json_members_and_order() -> None:
    message = response("dns.example.", "A", "dns.example. 300 IN A 192.0.2.1",
                       "dns.example. 300 IN TYPE65280 \\# 2 abcd", options=[
                           dns.edns.GenericOption(dns.edns.KEEPALIVE, b"\x00\x64"),
                           dns.edns.GenericOption(dns.edns.PADDING, bytes(3)),
                           dns.edns.EDEOption(dns.edns.EDECode.FILTERED, "ads"),
                           dns.edns.EDEOption(dns.edns.EDECode.BLOCKED),
                           dns.edns.NSIDOption(b"ns1"),
                           dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(16))),
                           dns.edns.ECSOption("192.0.2.0", 24, 0),
                           dns.edns.GenericOption(65001, b"\x01")])
    message.ednsflags |= dns.flags.DO | 0x0001
    text = render_json(message, info())
    assert text.startswith('{\n  "dateString": "2026-01-02T03:04:05+0000",\n')
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data == {
        "dateString": "2026-01-02T03:04:05+0000", "dateSeconds": 1767323045,
        "msgLength": 468, "ID": 4242, "QR": 1, "Opcode": 0, "AA": 0, "TC": 0, "RD": 1,
        "RA": 1, "AD": 0, "CD": 0, "RCODE": 0, "QDCOUNT": 1, "ANCOUNT": 2, "NSCOUNT": 0,
        "ARCOUNT": 1, "QNAME": "dns.example.", "QTYPE": 1, "QTYPEname": "A", "QCLASS": 1,
        "QCLASSname": "IN",
        "questionRRs": [{"NAME": "dns.example.", "TYPE": 1, "TYPEname": "A", "CLASS": 1,
                         "CLASSname": "IN"}],
        "answerRRs": [
            {"NAME": "dns.example.", "TYPE": 1, "TYPEname": "A", "CLASS": 1,
             "CLASSname": "IN", "TTL": 300, "rdataA": "192.0.2.1", "RDLENGTH": 4,
             "RDATAHEX": "C0000201"},
            {"NAME": "dns.example.", "TYPE": 65280, "TYPEname": "TYPE65280", "CLASS": 1,
             "CLASSname": "IN", "TTL": 300, "RDLENGTH": 2, "RDATAHEX": "ABCD"},
        ],
        "EDNS": {
            "Version": 0, "FLAGS": ["DO", "BIT15"], "RCODE": "NOERROR", "UDPSIZE": 1232,
            "KEEPALIVE": 100, "PADDING": {"LENGTH": 3},
            "EDE": [{"CODE": 17, "Purpose": "Filtered", "TEXT": "ads"},
                    {"CODE": 15, "Purpose": "Blocked"}],
            "NSID": {"HEX": "6E7331", "TEXT": "ns1"},
            "COOKIE": ["0001020304050607", "08090A0B0C0D0E0F"],
            "ECS": "192.0.2.0/24/0", "OPT65001": "01",
        },
        "queryTime": 1.25,
        "server": {"address": "127.0.0.1", "port": 853, "transport": "TLS",
                   "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
                           "chain": []}},
    }


def test_json_without_edns_or_tls_keeps_sections_and_name_case() -> None:
    message = response("Example.", "MX", "Example. 300 IN MX 10 Mail.Example.",
                       authority=["example. 300 IN NS ns1.example."],
                       additional=["ns1.example. 300 IN A 192.0.2.53"], edns=False)
    data = json.loads(render_json(message, info("UDP", tls=None)))
    assert "EDNS" not in data
    assert data["server"] == {"address": "127.0.0.1", "port": 853, "transport": "UDP"}
    assert data["answerRRs"][0]["rdataMX"] == "10 Mail.Example."
    assert data["answerRRs"][0]["RDATAHEX"] == (b"\x00\x0a\x04Mail\x07Example\x00".hex()
                                                .upper())
    assert [r["NAME"] for r in data["authorityRRs"]] == ["example."]
    assert [r["rdataA"] for r in data["additionalRRs"]] == ["192.0.2.53"]
    assert data["ARCOUNT"] == 1


def test_json_edns_odd_options_fall_back_to_hex() -> None:
    message = response("example.", "A", options=[
        dns.edns.GenericOption(dns.edns.KEEPALIVE, b""),
        dns.edns.GenericOption(dns.edns.EDE, b"\x00"),
        dns.edns.GenericOption(dns.edns.NSID, b"\x00\x01"),
        dns.edns.GenericOption(dns.edns.COOKIE, bytes(8)),
        dns.edns.GenericOption(dns.edns.PADDING, b"\x00\x07")])
    edns = json.loads(render_json(message, info()))["EDNS"]
    assert edns["OPT11"] == ""
    assert edns["OPT15"] == "00"
    assert edns["NSID"] == {"HEX": "0001"}
    assert edns["COOKIE"] == ["0000000000000000"]
    assert edns["PADDING"] == {"LENGTH": 2, "HEX": "0007"}


# --- the -d chain block -----------------------------------------------------------------

def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


@pytest.fixture(scope="module")
def chain() -> list[bytes]:
    """Leaf (CN=dns.example) and its CA (CN=Test CA), DER, fixed names."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name((NameOID.COUNTRY_NAME, "CZ"), (NameOID.ORGANIZATION_NAME, "Example"),
                    (NameOID.COMMON_NAME, "Test CA"))
    leaf_name = _name((NameOID.ORGANIZATION_NAME, "Example"),
                      (NameOID.COMMON_NAME, "dns.example"))
    def build(subject: x509.Name, key: ec.EllipticCurvePrivateKey, ca: bool) -> bytes:
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
                .not_valid_after(dt.datetime(2027, 1, 1, 12, 30, tzinfo=dt.UTC))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.DER)

    return [build(leaf_name, leaf_key, False), build(ca_name, ca_key, True)]


def _chain_lines(chain: Sequence[bytes], marks: Sequence[str] = ("", ""),
                 valid: str = "") -> str:
    leaf_pin, ca_pin = (spki_pin(der) for der in chain)
    return (
        ";; DEBUG: TLS, received certificate hierarchy:\n"
        ";; DEBUG:  #1, O=Example,CN=dns.example\n"
        f";; DEBUG:      SHA-256 PIN: {leaf_pin}{marks[0]}\n"
        ";; DEBUG:      Issuer: C=CZ,O=Example,CN=Test CA\n"
        f";; DEBUG:      Validity: 2026-01-01 00:00:00 UTC to 2027-01-01 12:30:00 UTC{valid}\n"
        ";; DEBUG:  #2, C=CZ,O=Example,CN=Test CA\n"
        f";; DEBUG:      SHA-256 PIN: {ca_pin}{marks[1]}\n"
        ";; DEBUG:      Issuer: C=CZ,O=Example,CN=Test CA\n"
        f";; DEBUG:      Validity: 2026-01-01 00:00:00 UTC to 2027-01-01 12:30:00 UTC{valid}\n"
    )


def test_chain_block_without_pins_or_verification(chain: list[bytes]) -> None:
    assert render_chain_debug(chain) == _chain_lines(chain) + (
        ";; DEBUG: TLS, skipping certificate PIN check\n"
        ";; DEBUG: TLS, skipping certificate verification\n")
    unchecked = Verification(checked=False)
    assert render_chain_debug(chain, verification=unchecked) == render_chain_debug(chain)


def test_chain_block_pin_match_and_trusted(chain: list[bytes]) -> None:
    trusted = Verification(True, True, "ca.pem", "dns.example")
    text = render_chain_debug(chain, pins={spki_pin(chain[1])}, verification=trusted)
    assert text == _chain_lines(chain, ("", ", MATCH")) + (
        ";; DEBUG: TLS, The certificate is trusted.\n")


def test_chain_block_pin_mismatch_stops(chain: list[bytes]) -> None:
    trusted = Verification(True, True, "ca.pem", "dns.example")
    text = render_chain_debug(chain, pins={"A" * 43 + "="}, verification=trusted)
    assert text == _chain_lines(chain) + ";; DEBUG: TLS, no certificate PIN match\n"


def test_chain_block_untrusted_without_name(chain: list[bytes]) -> None:
    untrusted = Verification(True, False, "system CA store", None,
                             "unable to get local issuer certificate")
    assert render_chain_debug(chain, verification=untrusted) == _chain_lines(chain) + (
        ";; DEBUG: TLS, skipping certificate PIN check\n"
        ";; WARNING: TLS, no hostname provided, will not verify certificate owner\n"
        ";; DEBUG: TLS, The certificate is NOT trusted. Unable to get local issuer "
        "certificate.\n")
    mismatch = Verification(True, False, "ca.pem", "x.example",
                            "Hostname mismatch, certificate is not valid for 'x.example'.")
    assert render_chain_debug(chain, verification=mismatch).endswith(
        ";; DEBUG: TLS, The certificate is NOT trusted. Hostname mismatch, certificate is "
        "not valid for 'x.example'.\n")
    unknown = Verification(True, False, "ca.pem", "x.example", None)
    assert render_chain_debug(chain, verification=unknown).endswith(
        "NOT trusted. Unknown reason.\n")


def test_chain_block_marks_certificates_out_of_their_validity(chain: list[bytes]) -> None:
    skip = (";; DEBUG: TLS, skipping certificate PIN check\n"
            ";; DEBUG: TLS, skipping certificate verification\n")
    inside = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    assert render_chain_debug(chain, now=inside) == _chain_lines(chain) + skip
    after = dt.datetime(2027, 1, 1, 12, 30, 1, tzinfo=dt.UTC)
    assert render_chain_debug(chain, now=after) == _chain_lines(chain, valid=", EXPIRED") + skip
    before = dt.datetime(2025, 12, 31, 23, 59, tzinfo=dt.UTC)
    assert render_chain_debug(chain, now=before) == _chain_lines(
        chain, valid=", NOT YET VALID") + skip


def test_json_lists_the_presented_chain(chain: list[bytes]) -> None:
    session = TlsSession("TLSv1.3", "TLS_AES_256_GCM_SHA384", chain=tuple(chain))
    message = response("dns.example.", "A", "dns.example. 300 IN A 192.0.2.1")
    tls = json.loads(render_json(message, info(tls=session)))["server"]["tls"]
    assert tls["chain"] == [
        {"subject": subject, "issuer": "C=CZ,O=Example,CN=Test CA",
         "notBefore": "2026-01-01T00:00:00+0000", "notAfter": "2027-01-01T12:30:00+0000",
         "pinSHA256": spki_pin(der)}
        for subject, der in zip(("O=Example,CN=dns.example", "C=CZ,O=Example,CN=Test CA"),
                                chain, strict=True)]


def test_chain_block_empty_chain() -> None:
    assert render_chain_debug([]) == (
        ";; DEBUG: TLS, empty certificate list\n"
        ";; DEBUG: TLS, skipping certificate verification\n")


# --- the real kdig -----------------------------------------------------------------------

class _Responder:
    """A UDP DNS responder on loopback that answers every query with ``reply``
    (its ID and question rewritten to the query's) and remembers what it sent."""

    def __init__(self, reply: dns.message.Message) -> None:
        self.reply = reply
        self.sent: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            if data == b"stop":
                return
            query = dns.message.from_wire(data)
            self.reply.id = query.id
            self.reply.question = query.question
            wire = self.reply.to_wire()
            self.sent.append(wire)
            self.sock.sendto(wire, peer)

    def __enter__(self) -> _Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as poke:
            poke.sendto(b"stop", ("127.0.0.1", self.port))
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def kdig() -> Iterator[str]:
    path = shutil.which("kdig")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kdig is not installed")
        pytest.skip("kdig is not installed")
    yield path


@pytest.mark.interop
def test_layout_matches_kdig(kdig: str) -> None:
    reply = response(
        "www.example.", "A", "www.example. 300 IN CNAME a-rather-long-owner-name-for.example.",
        "a-rather-long-owner-name-for.example. 60 IN A 192.0.2.1",
        authority=["example. 3600 IN NS ns1.example."],
        additional=["ns1.example. 3600 IN AAAA 2001:db8::53",
                    'ns1.example. 3600 IN TXT "hello world" "two"'],
        options=[dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER, "served stale"),
                 dns.edns.NSIDOption(b"ns-1"),
                 dns.edns.GenericOption(dns.edns.PADDING, bytes(17)),
                 dns.edns.GenericOption(65001, b"\x01\x02")])
    reply.flags |= dns.flags.AA
    with _Responder(reply) as responder:
        run = subprocess.run(
            [kdig, "@127.0.0.1", "-p", str(responder.port), "+notcp", "+timeout=5",
             "+retry=0", "www.example.", "A"],
            capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    assert len(responder.sent) == 1
    wire = responder.sent[0]
    ours = render_kdig(dns.message.from_wire(wire),
                       info("UDP", tls=None, received=len(wire), port=responder.port))
    theirs_lines, ours_lines = run.stdout.splitlines(), ours.splitlines()
    # Same lines, except the clock: the date and the elapsed time.
    assert len(theirs_lines) == len(ours_lines), run.stdout
    for theirs, mine in zip(theirs_lines, ours_lines, strict=True):
        if theirs.startswith(";; Time "):
            assert mine.startswith(";; Time ")
        elif theirs.startswith(";; From "):
            assert mine.split(" in ")[0] == theirs.split(" in ")[0]
        else:
            assert mine == theirs
