"""``dnstls query`` reads zone transfer words as kdig 3.2.6 does: ``AXFR``, ``IXFR=SERIAL``
(any case, also ``-t IXFR=SERIAL``), over TCP unless ``+notcp``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import dns.rdatatype
import pytest

from dnstls.cli import query as cli


def parse(*tokens: str, type_: str | None = None,
          names: Sequence[str] = ()) -> cli.QueryOptions:
    args = argparse.Namespace(debug=False, port=None, names=list(names), type=type_,
                              rdclass=None, reverse=[], extra=list(tokens))
    return cli.parse_options(args)


def transfer(opts: cli.QueryOptions) -> tuple[str, str, int | None]:
    question = opts.transfer
    assert question is not None and question.rdtype is not None
    return question.name.to_text(), dns.rdatatype.to_text(question.rdtype), question.serial


@pytest.mark.parametrize("tokens, type_", [
    (("AXFR", "example.test"), None), (("example.test", "AXFR"), None),
    (("example.test", "axfr"), None), (("example.test",), "AXFR")])
def test_axfr_words(tokens: tuple[str, ...], type_: str | None) -> None:
    opts = parse(*tokens, type_=type_)
    assert transfer(opts) == ("example.test.", "AXFR", None)
    assert opts.transport == "tcp"  # kdig: a transfer goes over TCP


@pytest.mark.parametrize("tokens, type_", [
    (("IXFR=2024010101", "example.test"), None), (("example.test", "IXFR=2024010101"), None),
    (("example.test", "ixfr=2024010101"), None), (("example.test",), "IXFR=2024010101"),
    (("example.test",), "ixfr=2024010101")])
def test_ixfr_words(tokens: tuple[str, ...], type_: str | None) -> None:
    assert transfer(parse(*tokens, type_=type_)) == ("example.test.", "IXFR", 2024010101)


def test_a_type_word_before_the_names_wins_over_minus_t() -> None:
    assert transfer(parse("AXFR", "example.test", type_="IXFR=5")) == \
        ("example.test.", "AXFR", None)


@pytest.mark.parametrize("tokens, type_, error", [
    (("example.test", "IXFR"), None, "IXFR needs the serial the client has: IXFR=SERIAL"),
    (("example.test", "IXFR=x"), None, "IXFR=x: expected IXFR=SERIAL"),
    (("example.test", "IXFR=4294967296"), None, "expected IXFR=SERIAL"),
    (("example.test",), "IXFR=-1", "-t IXFR=-1: expected IXFR=SERIAL"),
    (("example.test", "AXFR", "www.example.test"), None, "a zone transfer (AXFR, IXFR=SERIAL) "
                                                          "is asked alone"),
])
def test_bad_transfer_words(tokens: tuple[str, ...], type_: str | None, error: str) -> None:
    with pytest.raises(cli.UsageError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse(*tokens, type_=type_)


@pytest.mark.parametrize("options, transport", [
    ((), "tcp"), (("+notcp",), "udp"), (("+tcp", "+notcp"), "udp"), (("+notcp", "+tcp"), "tcp"),
    (("+tls",), "tls"), (("+notcp", "+tls"), "tls"), (("+tls", "+notcp"), "udp"),
    (("+tls", "+notls"), "tcp")])
def test_transport_of_a_transfer_as_kdig(options: tuple[str, ...], transport: str) -> None:
    assert parse(*options, "example.test", "AXFR").transport == transport


def test_queries_keep_udp_by_default() -> None:
    assert parse("example.test").transport == "udp"
    assert parse("example.test", "SOA").transfer is None
