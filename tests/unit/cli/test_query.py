"""``dnstls query``: kdig-style argument parsing, and runs through ``main()`` against the
fake upstream on loopback (DoT, TCP, UDP): output, exit codes and one-line reasons.

``main()`` runs its own event loop, so the network tests call it in a worker thread
(``asyncio.to_thread``) while the fake serves from the test's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import dns.flags
import dns.name
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography import x509

from dnstls.cli import query as cli
from dnstls.cli.main import main
from dnstls.errors import CertificateError, NetworkError, PinMismatch, QueryTimeout
from dnstls.proto import edns
from fakes import Behavior, FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)
PIN = base64.b64encode(b"p" * 32).decode()


def parse(*tokens: str, port: int | None = None, names: Sequence[str] = (),
          type_: str | None = None, reverse: Sequence[str] = ()) -> cli.QueryOptions:
    args = argparse.Namespace(debug=False, port=port, names=list(names), type=type_,
                              rdclass=None, reverse=list(reverse), extra=list(tokens))
    return cli.parse_options(args)


def questions(opts: cli.QueryOptions) -> list[tuple[str, str, str]]:
    return [(q.name.to_text(), dns.rdatatype.to_text(q.rdtype or 0),
             dns.rdataclass.to_text(q.rdclass or 0)) for q in opts.questions]


# ---------------------------------------------------------------- parsing


def test_groups_of_name_type_class() -> None:
    opts = parse("a.example", "AAAA", "b.example", "mx", "CH", "c.example", "TYPE65")
    assert questions(opts) == [("a.example.", "AAAA", "IN"), ("b.example.", "MX", "CH"),
                               ("c.example.", "HTTPS", "IN")]
    assert questions(parse()) == [(".", "NS", "IN")]  # kdig's default question
    assert questions(parse("x.example", names=["A"], type_="TXT")) == [
        ("A.", "TXT", "IN"), ("x.example.", "TXT", "IN")]


def test_type_and_class_words_before_or_after_a_name_as_kdig_reads_them() -> None:
    # before any name: the default of the names that follow (``dig MX example.com``)
    assert questions(parse("MX", "a.test", "b.test")) == [("a.test.", "MX", "IN"),
                                                          ("b.test.", "MX", "IN")]
    assert questions(parse("IN", "MX", "a.test")) == [("a.test.", "MX", "IN")]
    assert questions(parse("CH", "a.test", "TXT")) == [("a.test.", "TXT", "CH")]
    # after a name: that name's, a later word replacing an earlier one
    assert questions(parse("a.test", "MX", "AAAA", "b.test")) == [("a.test.", "AAAA", "IN"),
                                                                  ("b.test.", "A", "IN")]
    assert questions(parse("MX", "a.test", "AAAA", "b.test", type_="TXT")) == [
        ("a.test.", "AAAA", "IN"), ("b.test.", "MX", "IN")]
    assert questions(parse("MX")) == [(".", "NS", "IN")]  # no name: kdig's . NS


def test_reverse_lookups_as_kdig() -> None:
    assert questions(parse(reverse=["192.0.2.1", "2001:db8::1"])) == [
        ("1.2.0.192.in-addr.arpa.", "PTR", "IN"),
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR",
         "IN")]
    assert questions(parse("a.test", reverse=["192.0.2.1"])) == [
        ("1.2.0.192.in-addr.arpa.", "PTR", "IN"), ("a.test.", "A", "IN")]


def test_timeout_and_retry_defaults_follow_kdig() -> None:
    opts = parse("x")
    assert (opts.time, opts.retry, opts.tries) == (5.0, 2, 3)  # UDP: 1 + 2 retries
    assert parse("+tls", "x").tries == 1  # kdig retries over UDP only
    assert parse("+tcp", "+retry=5", "x").tries == 1
    assert parse("+timeout=1.5", "x").time == 1.5  # kdig's name for +time
    assert parse("+time=0.5", "x").time == 0.5


@pytest.mark.parametrize(("token", "server", "port"), [
    ("@192.0.2.1", "192.0.2.1", None),
    ("@192.0.2.1:8853", "192.0.2.1", 8853),
    ("@192.0.2.1#5353", "192.0.2.1", 5353),
    ("@2001:db8::1", "2001:db8::1", None),
    ("@[2001:db8::1]:853", "2001:db8::1", 853),
    ("@2001:db8::1#853", "2001:db8::1", 853),
    ("@::1", "::1", None),
])
def test_server_forms(token: str, server: str, port: int | None) -> None:
    opts = parse(token, "example.com")
    assert (opts.server, opts.port) == (server, port)


def test_ports_default_by_transport() -> None:
    assert cli.build_client(parse("@192.0.2.1", "+tls", "x")).spec.port == 853
    assert cli.build_client(parse("@192.0.2.1", "x")).spec.port == 53
    assert cli.build_client(parse("@192.0.2.1", "+tcp", "x")).spec.transport == "tcp"
    assert cli.build_client(parse("@192.0.2.1", "+tls", "x", port=8853)).spec.port == 8853
    assert cli.build_client(parse("@192.0.2.1:99", "x", port=8853)).spec.port == 99


def test_tls_options_follow_kdig(tmp_path: Path) -> None:
    pin = base64.b64encode(b"p" * 32).decode()
    ca_file = str(TestPKI.create(tmp_path).ca_file)
    # +tls alone: opportunistic
    client = cli.build_client(parse("@192.0.2.1", "+tls", "x"))
    assert client.spec.opportunistic and not client.verify
    # +tls-ca with a host name: chain and name verified; the name is also the SNI
    client = cli.build_client(parse("@192.0.2.1", f"+tls-ca={ca_file}",
                                    "+tls-host=dns.example", "x"))
    assert client.verify and client.spec.tls_auth_name == "dns.example"
    assert client.spec.ca_file == ca_file and client.sni is None
    # +tls-hostname implies +tls-ca (system store) without pins ...
    client = cli.build_client(parse("@192.0.2.1", "+tls-hostname=dns.example", "x"))
    assert client.verify and client.spec.ca_file is None and client.spec.transport == "tls"
    # ... but with a pin it is only the SNI
    client = cli.build_client(parse("@192.0.2.1", f"+tls-pin={pin}", "+tls-host=dns.example",
                                    "x"))
    assert not client.verify and client.spec.tls_auth_name is None
    assert client.sni == "dns.example" and client.spec.tls_pubkey_pinset == (pin,)
    # +tls-ca alone verifies the chain only; +tls-sni sets the SNI apart from the name
    client = cli.build_client(parse("@192.0.2.1", "+tls-ca", "+tls-sni=front.example", "x"))
    assert client.verify and client.spec.tls_auth_name is None and client.sni == "front.example"


def test_other_plus_options() -> None:
    opts = parse("+tls", "+padding=64", "+keepalive", "+dnssec", "+json", "+time=0.5",
                 "+retry=0", "+cd", "+norec", "x")
    assert (opts.padding, opts.padding_length, opts.keepalive, opts.dnssec, opts.json) == (
        True, 64, True, True, True)
    assert (opts.time, opts.retry, opts.cd, opts.rec) == (0.5, 0, True, False)
    assert parse("+nopadding", "x").padding is False
    assert parse("+short", "+noshort", "x").short is False
    assert parse("+tls", "+notls", "x").tls is False
    client = cli.build_client(parse("@192.0.2.1", "+tls", "+nopadding", "x"))
    assert client.spec.tls_query_padding_blocksize == 0


def test_no_forms_take_kdigs_meaning() -> None:
    """The +no... forms kdig 3.2 accepts for the options dnstls query has, with the
    meaning kdig gives them (checked against kdig 3.2.6 and its kdig_params.c)."""
    # +notimeout and +timeout=0: no time limit ("interpreted as infinity")
    for tokens in (["+notimeout"], ["+timeout=0"], ["+time=2", "+notime"]):
        opts = parse(*tokens, "x")
        assert opts.time is None, tokens
        assert cli.build_client(parse("@192.0.2.1", *tokens, "x")).timeout >= 86400 * 365
    assert parse("+notimeout", "+timeout=3", "x").time == 3.0  # the last one wins
    # +noretry: no retries (kdig 3.2: one attempt over UDP)
    assert (parse("+retry=5", "+noretry", "x").retry, parse("+noretry", "x").tries) == (0, 1)
    # +notcp: back to UDP, also after +tls (kdig uses TLS over TCP only)
    assert parse("+tcp", "+notcp", "x").transport == "udp"
    assert parse("+tls", "+notcp", "x").transport == "udp"
    # +notls: no TLS and none of its settings; the TCP that +tls chose stays (kdig)
    opts = parse(f"+tls-pin={PIN}", "+tls-ca", "+tls-host=dns.example", "+tls-sni=sni.example",
                 "+notls", "x")
    assert (opts.tls, opts.tls_ca, opts.pins, opts.hostname, opts.sni) == (
        False, False, [], None, None)
    assert opts.transport == "tcp"
    assert parse("+tls", "+notls", "+tls", "x").transport == "tls"
    # each TLS setting on its own
    assert parse(f"+tls-pin={PIN}", "+notls-pin", "x").pins == []
    assert parse("+tls-hostname=a.example", "+notls-hostname", "x").hostname is None
    assert parse("+tls-host=a.example", "+notls-host", "x").hostname is None
    assert parse("+tls-sni=a.example", "+notls-sni", "x").sni is None
    opts = parse("+tls-ca=/x.pem", "+notls-ca", "x")
    assert (opts.tls_ca, opts.ca_file, opts.transport) == (False, None, "tls")
    # kdig's full names of the header flags, and their +no forms
    assert (parse("+cdflag", "x").cd, parse("+cd", "+nocdflag", "x").cd) == (True, False)
    assert parse("+norecurse", "x").rec is False and parse("+nordflag", "x").rec is False
    assert parse("+norec", "+recurse", "x").rec is True
    assert parse("+norec", "+rdflag", "x").rec is True
    assert parse("+padding=64", "+nopadding", "x").padding_length is None


def test_options_abbreviate_to_a_unique_prefix_as_in_kdig() -> None:
    """kdig 3.2 takes any prefix that names one of its options (best_param: an exact
    name wins), the +no forms included. Before: only the full names (and the aliases
    +time, +tls-host, +cd, +rec) were accepted."""
    assert parse("+tls-ho=dns.example", "x").hostname == "dns.example"
    assert parse("+tls-h=dns.example", "x").verify  # +tls-hostname: implies +tls-ca
    assert parse("+sh", "x").short and parse("+j", "x").json
    assert parse("+ti=3", "x").time == 3.0 and parse("+tim=2", "x").time == 2.0
    assert parse("+ti=3", "+noti", "x").time is None
    assert parse("+ret=0", "x").retry == 0 and parse("+noret", "x").retry == 0
    assert parse("+dn", "x").dnssec and not parse("+dn", "+nodn", "x").dnssec
    assert parse("+tls-p=" + PIN, "x").pins == parse("+tls-pin=" + PIN, "x").pins != []
    assert parse("+tls-s=sni.example", "x").sni == "sni.example"
    opts = parse("+tls", "+notls-ho", "+notls-s", "x")
    assert (opts.hostname, opts.sni, opts.transport) == (None, None, "tls")
    assert parse("+pa=64", "x").padding_length == 64 and parse("+nopa", "x").padding is False
    assert parse("+cdf", "x").cd and parse("+rdf", "+nordf", "x").rec is False
    assert parse("+tcp", "x").transport == "tcp"  # exact: +tcp, not ambiguous with +tcflag
    assert parse("+tls", "x").transport == "tls"  # exact: +tls, not +tls-ca, ...
    assert parse("+keepa", "x").keepalive  # ours (+ke is also kdig's +keepopen)
    assert parse("+tls-ho=DNS.example", "x").hostname == "DNS.example"  # values keep case


def test_display_options_apply_left_to_right_as_kdig() -> None:
    """kdig 3.2.6's display switches (its style_t), each +OPTION/+noOPTION setting what
    kdig's opt_* function sets: +noall also hides the section comments and the query,
    +all shows them again (not the query), +noadditional also hides the OPT record,
    +short hides header, OPT and statistics and +noshort does not bring them back."""
    style = parse("x").style
    assert (style.format, style.header, style.comments, style.opt, style.question,
            style.answer, style.authority, style.additional, style.stats, style.qr,
            style.rrclass, style.ttl, style.crypto, style.opttext) == (
        "full", True, True, True, True, True, True, True, True, False, True, True, True,
        False)
    style = parse("+noall", "+answer", "x").style
    shown = ("header", "comments", "opt", "question", "answer", "authority", "additional",
             "stats", "qr")
    assert [name for name in shown if getattr(style, name)] == ["answer"]
    style = parse("+qr", "+noall", "+all", "x").style
    assert [name for name in shown if not getattr(style, name)] == ["qr"]
    style = parse("+noadditional", "x").style
    assert (style.additional, style.opt) == (False, False)
    style = parse("+noadd", "+add", "x").style
    assert (style.additional, style.opt) == (True, False)
    style = parse("+short", "x").style
    assert (style.format, style.header, style.opt, style.stats) == ("short", False, False, False)
    style = parse("+short", "+noshort", "x").style
    assert (style.format, style.header, style.opt, style.stats) == ("full", False, False, False)
    assert parse("+short", "+all", "x").style.format == "short"
    assert parse("+json", "+short", "x").style.format == "short"
    assert parse("+short", "+json", "x").style.format == "json"
    assert parse("+json", "+nojson", "x").style.format == "full"
    assert parse("+short", "+nojson", "x").style.format == "full"  # as kdig's opt_nojson
    assert parse("+json", "+noshort", "x").style.format == "full"  # and opt_noshort
    style = parse("+noclass", "+nottl", "+nocrypto", "+opttext", "+nocomments", "x").style
    assert (style.rrclass, style.ttl, style.crypto, style.opttext, style.comments) == (
        False, False, False, True, False)
    assert parse("+sh", "x").short and parse("+j", "x").json
    assert not parse("+json", "+short", "x").json


def test_multiline_and_generic_as_kdig() -> None:
    """kdig's opt_multiline wraps and brings back the full format with header, EDNS and
    statistics (not the comments or the sections); +nomultiline only unwraps."""
    style = parse("+noall", "+answer", "+short", "+multiline", "x").style
    assert (style.multiline, style.format, style.header, style.opt, style.stats,
            style.comments, style.question, style.answer) == (
        True, "full", True, True, True, False, False, True)
    style = parse("+multiline", "+short", "x").style
    assert (style.multiline, style.format) == (True, "short")  # wrapped short data
    style = parse("+noall", "+multiline", "+nomultiline", "x").style
    assert (style.multiline, style.header, style.stats) == (False, True, True)
    assert parse("+mu", "x").style.multiline and parse("+gen", "x").style.generic
    assert not parse("+generic", "+nogeneric", "x").style.generic
    assert parse("+json", "+multiline", "x").style.format == "full"


def test_tsig_keys_as_kdig_reads_them(tmp_path: Path) -> None:
    """-y [ALGORITHM:]NAME:KEY (hmac-sha256 unless named, as kdig 3.2.6), -k FILE (its
    first line, the same form); the last of them wins; +[no]tsig shows the record."""
    import dns.tsig

    from dnstls.cli.main import build_parser

    def key_of(*argv: str) -> dns.tsig.Key | None:
        args, extra = build_parser().parse_known_args(["query", *argv])
        args.extra = extra
        return cli.parse_options(args).tsig_key

    key = key_of("-y", "tsig-key:c2VjcmV0", "x")
    assert key is not None
    assert (key.name.to_text(), key.algorithm, key.secret) == (
        "tsig-key.", dns.tsig.HMAC_SHA256, b"secret")
    path = tmp_path / "key"
    path.write_text("hmac-md5:other.:c2VjcmV0\nignored\n")
    key = key_of("-y", "tsig-key:c2VjcmV0", "x", "-k", str(path))
    assert key is not None and (key.name.to_text(), key.algorithm) == (
        "other.", dns.tsig.HMAC_MD5)
    assert key_of("x") is None and parse("x").tsig_key is None
    assert parse("x").style.tsig and not parse("+notsig", "x").style.tsig
    assert not parse("+noall", "x").style.tsig and not parse("+noadd", "x").style.tsig
    assert parse("+noall", "+all", "x").style.tsig


def test_superfluous_values_warn_as_kdig() -> None:
    """kdig 3.2.6 warns about a value given to an option that takes none and goes on.
    Before: an error (exit 2)."""
    opts = parse("+tcp=1", "+nsid=x", "+notimeout=3", "+noall=1", "+ign=1", "x")
    assert opts.warnings == [f"superfluous option argument: {token}" for token in
                             ("+tcp=1", "+nsid=x", "+notimeout=3", "+noall=1", "+ign=1")]
    assert (opts.transport, opts.nsid, opts.time, opts.ignore) == ("tcp", True, None, True)
    assert parse("+tcp", "x").warnings == []


def test_notcp_and_ignore_keep_a_truncated_answer_as_kdig() -> None:
    """kdig 3.2.6: +notcp is UDP *and* +ignore (opt_notcp calls opt_ignore); +ignore
    alone keeps UDP's truncated answer too; +noignore brings the TCP retry back.
    Before: +ignore was unknown, and +notcp still retried over TCP."""
    assert parse("x").ignore is False
    assert parse("+notcp", "x").ignore is True
    assert parse("+tcp", "+notcp", "x").ignore is True
    assert parse("+ignore", "x").ignore is True and parse("+ign", "x").ignore is True
    assert parse("+notcp", "+noignore", "x").ignore is False
    assert parse("+tcp", "x").ignore is False
    assert cli.build_client(parse("@192.0.2.1", "+notcp", "x")).tcp_fallback is False
    assert cli.build_client(parse("@192.0.2.1", "x")).tcp_fallback is True


@pytest.mark.interop
def test_option_names_resolve_as_the_real_kdig_resolves_them() -> None:
    """Every prefix of every kdig option name, every one- and two-letter word and every
    ``no`` + two letters: the real kdig 3.2.6 (``kdig +WORD -h``) and option_name agree
    on ambiguous / invalid / an option (our own +keepalive's prefixes aside)."""
    import os
    import shutil
    import string
    import subprocess

    kdig = shutil.which("kdig")
    if kdig is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kdig is not installed")
        pytest.skip("kdig is not installed")

    def theirs(word: str) -> str:
        run = subprocess.run([kdig, f"+{word}", "-h"], capture_output=True, text=True,
                             timeout=10, check=False)
        for kind in ("ambiguous", "invalid"):
            if f"{kind} option" in run.stderr:
                return kind
        return "option"

    def ours(word: str) -> str:
        try:
            cli.option_name(word, f"+{word}")
        except cli.UsageError as exc:
            return "ambiguous" if "ambiguous" in str(exc) else "invalid"
        return "option"

    letters = string.ascii_lowercase + "-"
    words = {name[:i] for name in cli.KDIG_OPTIONS for i in range(1, len(name) + 1)}
    words |= set(letters) | {a + b for a in letters for b in letters}
    words |= {f"no{a}{b}" for a in letters for b in letters}
    mine = {name[:i] for name in cli.OUR_OPTIONS for i in range(1, len(name) + 1)}
    differ = [(w, theirs(w), ours(w)) for w in sorted(words - mine)
              if theirs(w) != ours(w)]
    assert differ == []
    assert len(words - mine) > 1900


def test_failure_text_without_a_time_limit() -> None:
    """A query without a time limit (+notimeout) is not said to have had one."""
    opts = parse("@127.0.0.1", "+notimeout", "+tls", "x")
    assert cli.describe_failure(QueryTimeout("no connection to x before the deadline"),
                                opts) == ("no connection to 127.0.0.1@853(TLS) (TCP connect "
                                          "or TLS handshake not completed)")


@pytest.mark.parametrize(("tokens", "message"), [
    (["+bogus", "x"], "invalid option: +bogus"),
    (["+tls-pin=ab!c", "x"], "+tls-pin: pin 'ab!c' is not valid base64"),
    (["+time=-1", "x"], "+time=-1: expected a number of seconds"),
    (["+nobogus", "x"], "invalid option: +nobogus"),
    (["+nono", "x"], "invalid option: +nono"),
    (["+t", "x"], "ambiguous option: +t (+tcflag, +tcp, +timeout, +tls, +tls-ca, "
                  "+tls-certfile, +tls-hostname, +tls-keyfile, +tls-ocsp-stapling, "
                  "+tls-pin, +tls-sni, +tsig, +ttl)"),
    (["+nocl", "x"], "ambiguous option: +nocl (+noclass, +noclient)"),
    (["+tc=1", "x"], "ambiguous option: +tc=1 (+tcflag, +tcp)"),
    (["+fa", "x"], "unsupported option: +fa (+fastopen): a kdig option that dnstls query "
                   "does not implement"),
    (["+TCP", "x"], "invalid option: +TCP"),  # kdig's names are case-sensitive
    (["+noALL", "x"], "invalid option: +noALL"),
    (["+edns=256", "x"], "+edns=256: expected a number from 0 to 255"),
    (["+edns=v1", "x"], "+edns=v1: expected a number from 0 to 255"),
    (["-y", "bad", "x"], "bad key bad: expected [ALGORITHM:]NAME:KEY"),
    (["-y", "name:notbase64!!", "x"], "bad key name:notbase64!!: the key is not base64"),
    (["-y", "hmac-foo:name:c2VjcmV0", "x"], "bad key hmac-foo:name:c2VjcmV0: unknown "
                                           "algorithm 'hmac-foo'"),
    (["-k", "/nonexistent/key", "x"], "bad keyfile /nonexistent/key: No such file"),
    (["+subnet", "x"], "+subnet: needs a value"),
    (["+subnet=dns.example", "x"], "+subnet=dns.example: expected ADDR[/PREFIX]"),
    (["+subnet=192.0.2.0/33", "x"], "+subnet=192.0.2.0/33: expected a number from 0 to 32"),
    (["+cookie=0011", "x"], "+cookie=0011: a cookie is 8 bytes, or 16 to 40"),
    (["+cookie=xyz", "x"], "+cookie=xyz: expected hexadecimal digits"),
    (["+ednsopt=65536", "x"], "+ednsopt=65536: expected a number from 0 to 65535"),
    (["+ednsopt=1:0", "x"], "+ednsopt=1:0: expected hexadecimal digits"),
    (["+bufsize=65536", "x"], "+bufsize=65536: expected a number from 0 to 65535"),
    (["+noidn", "x"], "unsupported option: +noidn"),
    (["+ti", "x"], "+ti: needs a value (+ti=...)"),
    (["+time=soon", "x"], "+time=soon: expected a number of seconds"),
    (["+timeout=3601", "x"], "+timeout=3601: expected a number of seconds"),
    (["+timeout", "x"], "+timeout: needs a value"),
    (["@[::1", "x"], "@[::1: missing ']' after the IPv6 address"),
    (["@::ffff:192.0.2.1:5353", "x"], "@::ffff:192.0.2.1:5353: an IPv6 address with a port "
                                      "goes in brackets: @[::ffff:192.0.2.1]:5353"),
    ([f"+tls-pin={PIN},{PIN}", "x"], "one pin per value"),
    (["+retry=-1", "x"], "+retry=-1: expected a number from 0 to 100"),
    (["+padding=x", "x"], "+padding=x: expected a number from 0 to 4096"),
    (["+tls-host", "x"], "+tls-host: needs a value"),
    (["@dns.example", "x"], "@dns.example: the server must be an IP address"),
    (["@192.0.2.1:0", "x"], "port '0' is not a number from 1 to 65535"),
    (["-z", "x"], "unknown option '-z'"),
    (["-x", "dns.example"], "-x dns.example: not an IPv4 or IPv6 address"),
    (["+tls-ca=/nonexistent/ca.pem", "x"],
     "+tls-ca=/nonexistent/ca.pem: cannot load CA certificates: No such file or directory"),
    (["bad..name"], "is not a valid domain name"),
])
def test_bad_arguments_exit_2_with_one_line(tokens: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "@127.0.0.1", *tokens]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dnstls query: error: ") and message in err
    assert err.count("\n") == 1


def test_edns_option_settings_follow_kdig() -> None:
    opts = parse("+nsid", "+subnet=2001:db8::/48", "+cookie=0011223344556677",
                 "+ednsopt=65001:ABcd", "+ednsopt=7", "+bufsize=512", "+adflag", "+zflag",
                 "+noz", names=["x"])
    assert [(int(o.otype), (o.to_wire() or b"").hex()) for o in opts.edns_options()] == [
        (3, ""), (8, "0002300020010db80000"), (10, "0011223344556677"), (65001, "abcd"),
        (7, "")]
    assert (opts.bufsize, opts.flags) == (512, {"adflag": True, "zflag": False})
    opts = parse("+nsid", "+subnet=192.0.2.1", "+cookie", "+ednsopt=1", "+bufsize=0",
                 "+nonsid", "+nosubnet", "+noednsopt", "+nobufsize", names=["x"])
    assert [int(o.otype) for o in opts.edns_options()] == [10]  # a random client cookie
    assert len(opts.cookie or b"") == 8 and opts.bufsize is None


def test_client_rejects_what_is_not_an_edns_option() -> None:
    from dnstls.client import Client
    from dnstls.errors import ConfigError

    with pytest.raises(ConfigError, match="edns_options"):
        Client("udp://127.0.0.1", edns_options=[b"\x00\x03\x00\x00"])  # type: ignore[list-item]


def test_system_nameserver(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example\nnameserver fe80::1%eth0\nnameserver 10.0.0.1\n")
    assert cli.system_nameserver(conf) == "fe80::1"
    conf.write_text("options edns0\n")
    assert cli.system_nameserver(conf) is None
    assert cli.system_nameserver(tmp_path / "missing") is None


# ---------------------------------------------------------------- against the fake


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI.create(tmp_path)


@pytest.fixture
async def dot(pki: TestPKI) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream("tls", ssl_context=pki.server_context(), keepalive=20.0) as fake:
        yield fake


async def dnstls_query(*argv: str) -> int:
    return await asyncio.to_thread(main, ["query", *argv])


def at(fake: FakeUpstream) -> str:
    return f"@127.0.0.1:{fake.port}"


async def test_verified_query_in_kdig_layout(dot: FakeUpstream, pki: TestPKI,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    status = await dnstls_query(at(dot), f"+tls-ca={pki.ca_file}", "+tls-host=dns.test",
                                "+dnssec", "www.example.com", "AAAA")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith(";; TLS session (TLS1.")
    assert lines[1].startswith(";; ->>HEADER<<- opcode: QUERY; status: NOERROR; id: ")
    assert ";; PADDING: " in out and ";; KEEPALIVE" not in out  # no +keepalive: not asked
    assert "www.example.com.    \t300\tIN\tAAAA\t2001:db8::1" in out
    assert ";; Received 468 B" in out
    assert f";; From 127.0.0.1@{dot.port}(TLS) in " in out
    # the fake's side: one padded query with DO, no keepalive request
    (received,) = dot.received
    assert len(received.wire) % 128 == 0
    assert received.message.ednsflags & dns.flags.DO
    assert not edns.has_option(received.message, edns.KEEPALIVE)


async def test_groups_are_pipelined_over_one_connection(
        pki: TestPKI, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeUpstream("tls", ssl_context=pki.server_context(),
                            behavior=Behavior.REVERSE, reverse_batch=3) as fake:
        status = await dnstls_query(at(fake), "+tls", "+keepalive", "a.example", "b.example",
                                    "AAAA", "c.example", "TXT")
    out = capsys.readouterr().out
    assert status == 0
    assert fake.connections_accepted == 1 and [r.connection for r in fake.received] == [0] * 3
    assert all(edns.has_option(r.message, edns.KEEPALIVE) for r in fake.received)
    questions_out = [line for line in out.splitlines() if line.startswith(";; ") and
                     "\tIN\t" in line]
    assert [q.split()[1] for q in questions_out] == ["a.example.", "b.example.", "c.example."]
    assert [q.split()[-1] for q in questions_out] == ["A", "AAAA", "TXT"]
    assert out.count(";; ->>HEADER<<-") == 3
    assert "\n\n;; TLS session" in out  # answers separated by a blank line


async def test_json_and_short(dot: FakeUpstream, pki: TestPKI,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert await dnstls_query(at(dot), "+tls", "+json", "j.example") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["QNAME"] == "j.example." and document["answerRRs"][0]["rdataA"] == "192.0.2.1"
    assert document["server"]["transport"] == "TLS" and document["server"]["port"] == dot.port
    assert document["msgLength"] == 468
    assert await dnstls_query(at(dot), "+tls", "+short", "s.example", "t.example",
                              "AAAA") == 0
    assert capsys.readouterr().out == "192.0.2.1\n2001:db8::1\n"


async def test_debug_prints_chain_pins_and_verdicts(dot: FakeUpstream, pki: TestPKI,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pin = TestPKI.leaf_pin(pki.leaf)
    status = await dnstls_query("-d", at(dot), f"+tls-ca={pki.ca_file}", "+tls-host=dns.test",
                                f"+tls-pin={pin}", "d.example")
    out, err = capsys.readouterr()
    assert status == 0
    lines = err.splitlines()
    assert lines == [
        ";; DEBUG: TLS, received certificate hierarchy:",
        f";; DEBUG:  #1, {lines[1].split(', ', 1)[1]}",
        f";; DEBUG:      SHA-256 PIN: {pin}, MATCH",
        f";; DEBUG:      Issuer: {lines[3].split(': ', 2)[2]}",
        f";; DEBUG:      Validity: {lines[4].split(': ', 2)[2]}",
        ";; DEBUG: TLS, The certificate is trusted.",
    ]
    ca = x509.load_pem_x509_certificate(pki.ca.cert_pem.bytes())
    assert lines[3] == ";; DEBUG:      Issuer: " + ",".join(
        rdn.rfc4514_string() for rdn in ca.subject.rdns)  # certificate order, as GnuTLS
    leaf = x509.load_pem_x509_certificate(pki.leaf.cert_chain_pems[0].bytes())
    assert lines[4] == (f";; DEBUG:      Validity: {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S}"
                        f" UTC to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    assert ";; ANSWER SECTION:" in out
    # opportunistic: nothing checked, says so
    assert await dnstls_query("-d", at(dot), "+tls", "e.example") == 0
    err = capsys.readouterr().err
    assert "TLS, skipping certificate PIN check" in err
    assert "TLS, skipping certificate verification" in err


async def test_tcp_and_udp(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeUpstream("tcp") as tcp:
        assert await dnstls_query(at(tcp), "+tcp", "t.example") == 0
        out = capsys.readouterr().out
        assert f";; From 127.0.0.1@{tcp.port}(TCP) in " in out and "TLS session" not in out
        assert not edns.has_option(tcp.received[0].message, edns.PADDING)
    async with FakeUpstream("udp") as udp:
        assert await dnstls_query(at(udp), "u.example", "+norec") == 0
        out = capsys.readouterr().out
        assert "(UDP) in " in out
        assert not udp.received[0].message.flags & dns.flags.RD


async def test_no_forms_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    """+notimeout (no time limit) answers as usual; +tls +notls asks over plain TCP;
    +tls +notcp over UDP (kdig's meanings)."""
    async with FakeUpstream("tcp") as tcp:
        assert await dnstls_query(at(tcp), "+tls-ca", "+notls", "+notimeout", "t.example") == 0
        assert f"127.0.0.1@{tcp.port}(TCP)" in capsys.readouterr().out
    async with FakeUpstream("udp") as udp:
        assert await dnstls_query(at(udp), "+tls", "+notcp", "+noretry", "u.example") == 0
        assert f"127.0.0.1@{udp.port}(UDP)" in capsys.readouterr().out


async def test_a_truncated_udp_answer_is_kept_with_notcp_or_ignore(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A UDP server that answers TC=1 (TCP on the same port answers in full): by default
    the question is asked again over TCP; with +notcp or +ignore the truncated answer is
    printed as it came and TCP is never used, as kdig 3.2.6 does (checked against it).
    Before: +notcp asked again over TCP, +ignore was an unknown option."""
    async with FakeUpstream("udp", behavior=Behavior.TRUNCATED, also_tcp=True) as fake:
        assert await dnstls_query(at(fake), "+retry=0", "a.example") == 0
        out = capsys.readouterr().out
        assert f"127.0.0.1@{fake.port}(TCP)" in out and "192.0.2.1" in out
        assert [r.connection for r in fake.received] == [-1, 0]
        for option in ("+notcp", "+ignore", "+ign"):
            fake.received.clear()
            assert await dnstls_query(at(fake), option, "+retry=0", "b.example") == 0
            out = capsys.readouterr().out
            assert f"127.0.0.1@{fake.port}(UDP)" in out, option
            assert ";; Flags: qr tc rd" in out and "192.0.2.1" not in out, option
            assert [r.connection for r in fake.received] == [-1], option
        fake.received.clear()
        assert await dnstls_query(at(fake), "+notcp", "+noignore", "c.example") == 0
        assert f"127.0.0.1@{fake.port}(TCP)" in capsys.readouterr().out
        assert [r.connection >= 0 for r in fake.received] == [False, True]


# ---------------------------------------------------------------- failures: exit 1, one line


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dnstls query: error: ")
    return lines[0].removeprefix("dnstls query: error: ")


async def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    fake = await FakeUpstream("tcp").start()
    port = fake.port
    await fake.aclose()
    assert await dnstls_query(f"@127.0.0.1:{port}", "+tls", "+retry=0", "x.example") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err) == (f"connecting to tls://127.0.0.1:{port} failed: "
                             "Connection refused")


async def test_handshake_failure(capsys: pytest.CaptureFixture[str]) -> None:
    async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(5)
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")  # not a TLS record
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_tls, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        status = await dnstls_query(f"@127.0.0.1:{port}", "+tls", "+retry=0", "x.example")
    assert status == 1
    assert one_line(capsys.readouterr().err) == (
        f"TLS handshake with tls://127.0.0.1:{port} failed: wrong version number: the "
        "server answered with something that is not TLS (plain DNS or another service on "
        "this port?)")


async def test_server_closing_in_the_handshake(capsys: pytest.CaptureFixture[str]) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(5)
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await dnstls_query(f"@127.0.0.1:{port}", "+tls", "x.example") == 1
    reason = one_line(capsys.readouterr().err)
    # asyncio says ConnectionResetError() without a text, uvloop "Connection reset by peer"
    assert reason in (f"TLS handshake with tls://127.0.0.1:{port} failed: {text}" for text in (
        "the server closed the connection during the handshake", "Connection reset by peer"))


async def test_server_without_tls_1_2(pki: TestPKI, capsys: pytest.CaptureFixture[str],
                                      ) -> None:
    ctx = pki.server_context()
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: the point of this server
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at level 1
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:  # blocking ssl sends its protocol_version alert
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            ctx.wrap_socket(conn, server_side=True)

    with listener:
        served = asyncio.create_task(asyncio.to_thread(serve_once))
        assert await dnstls_query(f"@127.0.0.1:{port}", "+tls", "+retry=0", "x.example") == 1
        await served
    assert one_line(capsys.readouterr().err) == (
        f"TLS handshake with tls://127.0.0.1:{port} failed: tlsv1 alert protocol "
        "version: the server does not accept TLS 1.2 or 1.3 (DNS over TLS needs TLS 1.2 "
        "or later)")


async def test_handshake_timeout_says_no_connection(capsys: pytest.CaptureFixture[str],
                                                    ) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # takes the ClientHello, never answers
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await dnstls_query(f"@127.0.0.1:{port}", "+tls", "+time=0.3", "x.example") == 4
    assert one_line(capsys.readouterr().err) == (
        f"no connection to 127.0.0.1@{port}(TLS) within 0.3 s (TCP connect or TLS "
        "handshake not completed)")


async def test_untrusted_certificate(dot: FakeUpstream,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert await dnstls_query(at(dot), "+tls-ca", "+tls-host=dns.test", "x.example") == 3
    assert one_line(capsys.readouterr().err) == (
        f"TLS authentication failed for 127.0.0.1@{dot.port}(TLS): "
        "unable to get local issuer certificate")
    assert dot.received == []


async def test_hostname_mismatch(dot: FakeUpstream, pki: TestPKI,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert await dnstls_query(at(dot), f"+tls-ca={pki.ca_file}", "+tls-host=other.test",
                              "x.example") == 3
    assert one_line(capsys.readouterr().err) == (
        f"TLS authentication failed for 127.0.0.1@{dot.port}(TLS): "
        "Hostname mismatch, certificate is not valid for 'other.test'")
    assert dot.received == []


async def test_pin_mismatch_names_expected_and_seen(dot: FakeUpstream, pki: TestPKI,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    wrong = [base64.b64encode(bytes([i]) * 32).decode() for i in (1, 2)]
    status = await dnstls_query(at(dot), f"+tls-pin={wrong[0]}", f"+tls-pin={wrong[1]}",
                                "x.example", "y.example")
    assert status == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err) == (  # two questions, one reason
        f"127.0.0.1@{dot.port}(TLS): SPKI pin mismatch: expected one of "
        f"{', '.join(sorted(wrong))}; server presented {TestPKI.leaf_pin(pki.leaf)}")
    assert dot.received == []


async def test_pin_mismatch_with_debug_shows_the_chain(dot: FakeUpstream, pki: TestPKI,
                                                       capsys: pytest.CaptureFixture[str],
                                                       ) -> None:
    wrong = base64.b64encode(b"\x07" * 32).decode()
    assert await dnstls_query("-d", at(dot), f"+tls-pin={wrong}", "x.example") == 3
    err = capsys.readouterr().err.splitlines()
    assert f";; DEBUG:      SHA-256 PIN: {TestPKI.leaf_pin(pki.leaf)}" in err
    assert ";; DEBUG: TLS, no certificate PIN match" in err
    assert err[-1].startswith("dnstls query: error: ") and "SPKI pin mismatch" in err[-1]


async def test_timeout(pki: TestPKI, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeUpstream("tls", ssl_context=pki.server_context(),
                            behavior=Behavior.STALL) as fake:
        status = await dnstls_query(at(fake), "+tls", "+time=0.3", "+retry=1", "x.example")
    assert status == 4
    assert one_line(capsys.readouterr().err) == (
        f"no answer from 127.0.0.1@{fake.port}(TLS) within 0.3 s")
    assert len(fake.received) == 1  # as kdig: +retry is for UDP only
    async with FakeUpstream("udp", behavior=Behavior.STALL) as fake:
        status = await dnstls_query(at(fake), "+time=0.3", "+retry=1", "x.example")
    assert status == 4
    assert one_line(capsys.readouterr().err) == (
        f"no answer from 127.0.0.1@{fake.port}(UDP) within 0.3 s (2 tries)")
    assert len(fake.received) == 2


async def test_partial_failure_prints_the_answers_and_exits_4(
        pki: TestPKI, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeUpstream("tls", ssl_context=pki.server_context()) as fake:
        fake.script.extend([Behavior.NORMAL, Behavior.STALL])
        status = await dnstls_query(at(fake), "+tls", "+time=0.5", "+retry=0", "ok.example",
                                    "slow.example")
    out, err = capsys.readouterr()
    assert status == 4  # a timeout
    assert out.count(";; ->>HEADER<<-") == 1 and "ok.example." in out
    assert "no answer from" in one_line(err)


def test_no_server_and_no_resolv_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "RESOLV_CONF", tmp_path / "none")
    assert main(["query", "x.example"]) == 2
    assert "no @SERVER given" in one_line(capsys.readouterr().err)


async def test_resolv_conf_server_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeUpstream("udp") as udp:
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\n")
        monkeypatch.setattr(cli, "RESOLV_CONF", conf)
        assert await dnstls_query("-p", str(udp.port), "r.example") == 0
    assert len(udp.received) == 1
    assert dns.name.from_text("r.example") == udp.received[0].message.question[0].name


def test_exit_status_names_the_worst_failure() -> None:
    timeout, lost = QueryTimeout("t"), NetworkError("n")
    mismatch = PinMismatch(["a"], ["b"])
    assert cli.exit_status([]) == 0
    assert cli.exit_status([timeout, timeout]) == 4
    assert cli.exit_status([timeout, lost]) == 1
    assert cli.exit_status([lost, mismatch, timeout]) == 3
    assert cli.exit_status([CertificateError("c")]) == 3


@pytest.mark.parametrize(("tokens", "edns", "kept"), [
    ((), 0, {}),
    (("+noedns",), None, {}),
    (("+edns=7",), 7, {}),
    (("+noedns", "+edns"), 0, {}),
    (("+nsid", "+dnssec", "+bufsize=512", "+cookie=0011223344556677", "+padding",
      "+subnet=192.0.2.0/24", "+noedns"), None,
     {"nsid": False, "dnssec": False, "bufsize": None, "cookie": None, "padding": False,
      "subnet": None}),
    (("+noedns", "+nsid"), 0, {"nsid": True}),
    (("+edns=3", "+noedns", "+dnssec"), 0, {"dnssec": True}),
    (("+ednsopt=65001:aa", "+noedns"), None, {"ednsopt": [(65001, b"\xaa")]}),
])
def test_noedns_and_edns_as_kdig(tokens: tuple[str, ...], edns: int | None,
                                 kept: dict[str, object]) -> None:
    """kdig's opt_noedns forgets the options that live in the OPT record (not
    +ednsopt); a later option that needs one brings EDNS 0 back; +edns=N is the version."""
    opts = parse(*tokens, names=["x"])
    assert opts.edns == edns
    for name, value in kept.items():
        assert getattr(opts, name) == value, name


def test_an_ednsopt_or_keepalive_left_after_noedns_still_sends_an_opt() -> None:
    assert cli._edns_version(parse("+ednsopt=65001", "+noedns", names=["x"]), "udp") == 0
    assert cli._edns_version(parse("+noedns", names=["x"]), "udp") is None
    keepalive = parse("+keepalive", "+noedns", names=["x"])
    assert cli._edns_version(keepalive, "tls") == 0
    assert cli._edns_version(keepalive, "udp") is None  # no keepalive over UDP
