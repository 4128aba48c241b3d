"""``dnstls query``: kdig-style DNS queries over TLS, TCP or UDP.

Syntax (the common part of kdig's)::

    dnstls query [-d] [@SERVER] [-p PORT] [-x ADDR] [+OPTION...] NAME [TYPE] [CLASS] [NAME...]

Every ``NAME [TYPE] [CLASS]`` group is one question (type and class words before the
first name set the defaults, as kdig reads them); all of them are sent at once,
pipelined over one connection (RFC 7766 §6.2.1.1), and the answers printed in the order
asked. Authentication follows kdig (and RFC 8310):

* ``+tls`` alone is opportunistic: encrypted, not authenticated;
* ``+tls-ca`` (system store) or ``+tls-ca=FILE`` verifies the chain, and the name given
  by ``+tls-host``/``+tls-hostname`` (without one, the chain only, with a warning under
  ``-d``); ``+tls-hostname`` without ``+tls-pin`` implies ``+tls-ca``;
* ``+tls-pin=BASE64`` (repeatable) requires a certificate of the chain to carry one of
  the pinned keys; with ``+tls-ca`` both checks must pass;
* ``+tls-sni=NAME`` sends NAME as SNI (default: the host name, if any).

Options are read as kdig reads them: ``+noOPTION`` negates, and a name may be cut to
any prefix that is unique among kdig's options (:data:`KDIG_OPTIONS`; ``+tls-ho=``,
``+sh``); ``+notcp`` also implies ``+ignore`` (a truncated UDP answer is printed as it
came, not asked again over TCP).

The answer is rendered by :mod:`dnstls.cli.output` (kdig's layout, ``+json`` RFC 8427,
``+short`` record data only), with kdig's display options (``+noall +answer``, ``+qr``,
``+nocomments``, ... :data:`DISPLAY`) applied left to right into a
:class:`~dnstls.cli.output.Style`; a value given to an option that takes none is
ignored with kdig's warning, and names are case-sensitive, as kdig's. ``-d`` prints
the presented chain with the SPKI pin of each certificate and the trust and pin
verdicts, to stderr as kdig does; when the server fails authentication it connects
once more, unauthenticated, to show what was presented.

``AXFR`` and ``IXFR=SERIAL`` transfer a zone (over TCP, or TLS with the ``+tls*``
options; UDP only with ``+notcp``), as kdig does: :mod:`dnstls.cli.transfer`.

Exit status (kdig only promises "not 0 on error"; these say which error, for scripts and
monitoring): 0 when every question got an answer (whatever its RCODE); otherwise, with one
line on stderr per reason, 3 when the server failed authentication (untrusted
certificate, wrong name, pin mismatch), 1 when it could not be reached or broke the
exchange (refused, reset, failed handshake, closed mid-answer), 4 when it only timed out;
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import dataclasses
import ipaddress
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
import dns.tsig

from dnstls.cli.output import (
    ReplyInfo,
    Style,
    TlsSession,
    message_json,
    render_chain_debug,
    render_json,
    render_kdig,
)
from dnstls.client import Client, Reply, make_query
from dnstls.errors import (
    ConfigError,
    DnsTlsError,
    NetworkError,
    PinMismatch,
    QueryTimeout,
    TLSAuthenticationError,
)
from dnstls.net.probe import Verification, fetch_chain
from dnstls.net.tls_client import check_ca_file
from dnstls.proto.pins import parse_pin

RESOLV_CONF = Path("/etc/resolv.conf")
DEFAULT_TIME = 5.0  # kdig's +timeout: seconds per attempt
NO_TIME_LIMIT = 86400.0 * 366  # the Client's timeout for +notimeout / +timeout=0
DEFAULT_RETRY = 2  # kdig's +retry: UDP only
#: kdig 3.2.6's ``+`` options (``kdig -h``, and its obsolete alias ``+[no]client``),
#: each with its ``+no`` form (``+noidn`` has only that one). An option may be
#: abbreviated to any prefix that is unique among these (kdig's ``best_param``: an
#: exact name wins, else exactly one name must start with the prefix), so ``+tls-ho``,
#: ``+sh``, ``+ign`` work and ``+t``, ``+nocl`` are ambiguous, as in kdig.
_KDIG_NAMES = (
    "multiline", "short", "generic", "aaflag", "tcflag", "rdflag", "recurse", "raflag",
    "zflag", "adflag", "cdflag", "dnssec", "all", "qr", "header", "comments", "opt",
    "opttext", "question", "answer", "authority", "additional", "tsig", "stats", "class",
    "ttl", "crypto", "tcp", "fastopen", "ignore", "keepopen", "tls", "tls-ca", "tls-pin",
    "tls-hostname", "tls-sni", "tls-keyfile", "tls-certfile", "tls-ocsp-stapling", "https",
    "https-get", "quic", "nsid", "bufsize", "padding", "alignment", "subnet", "client",
    "edns", "timeout", "retry", "expire", "cookie", "badcookie", "ednsopt", "proxy", "json",
)
KDIG_OPTIONS = (*(f"{no}{name}" for name in _KDIG_NAMES for no in ("", "no")), "noidn")
#: Ours, on top of kdig's (abbreviated the same way).
OUR_OPTIONS = ("keepalive", "nokeepalive")
OPTION_NAMES = KDIG_OPTIONS + OUR_OPTIONS
#: kdig's names of the options we support -> our key (the others are the key).
KEYS = {"timeout": "time", "cdflag": "cd", "recurse": "rec", "rdflag": "rec"}
#: kdig's header flag options -> the bit each sets in the query (``+zflag``: the Z bit).
HEADER_FLAGS = {"aaflag": int(dns.flags.AA), "tcflag": int(dns.flags.TC),
                "raflag": int(dns.flags.RA), "zflag": 0x0040, "adflag": int(dns.flags.AD)}
#: +tls and the options that imply it.
TLS_OPTIONS = ("tls", "tls-ca", "tls-hostname", "tls-sni", "tls-pin")
#: What ``+noOPTION`` sets, as kdig's ``opt_no*`` functions do, where it is more than
#: ``OPTION = False``.
NO_OPTIONS: dict[str, dict[str, Any]] = {
    # every TLS setting goes; the TCP that +tls chose stays
    "tls": {"tls": False, "tls_ca": False, "ca_file": None, "pins": [], "hostname": None,
            "sni": None},
    "tls-ca": {"tls_ca": False, "ca_file": None},
    "tls-pin": {"pins": []},
    "tls-hostname": {"hostname": None},
    "tls-sni": {"sni": None},
    # UDP, and a truncated answer is final; a zone transfer too goes over UDP
    "tcp": {"tcp": False, "ignore": True, "notcp": True},
    "subnet": {"subnet": None},
    "cookie": {"cookie": None},
    "ednsopt": {"ednsopt": []},  # kdig: +noednsopt drops every +ednsopt given before
    "bufsize": {"bufsize": None},
    "padding": {"padding": False, "padding_length": None},
    # kdig's opt_noedns: no OPT, and the options that live in it are forgotten (not
    # +ednsopt and +keepalive: they bring an OPT back when the query is sent)
    "edns": {"edns": None, "dnssec": False, "nsid": False, "bufsize": None,
             "cookie": None, "padding": False, "padding_length": None, "subnet": None},
    "time": {"time": None},  # "notimeout is interpreted as infinity"
    "retry": {"retry": 0},
}
#: kdig's display options (``+[no]OPTION``, no value): what each sets in :class:`Style`,
#: as kdig 3.2.6's ``opt_*`` functions set its ``style_t`` (checked against kdig by
#: tests/interop/test_query_display_interop.py). ``+noall`` also turns the section
#: comments and ``+qr`` off, ``+all`` the comments (not ``+qr``) on; ``+noadditional``
#: also hides the OPT record; ``+short`` hides the header, the OPT record and the
#: statistics, which ``+noshort`` does not bring back; ``+json``, ``+short`` and their
#: ``+no`` forms set one output format, the last one given wins.
_SECTIONS = ("header", "comments", "opt", "question", "answer", "authority", "additional",
             "stats")
DISPLAY: dict[str, dict[str, Any]] = {
    "all": dict.fromkeys((*_SECTIONS, "tsig"), True),
    "noall": {**dict.fromkeys((*_SECTIONS, "tsig"), False), "qr": False},
    "noadditional": {"additional": False, "opt": False, "tsig": False},
    "tsig": {"tsig": True},  # kdig's +[no]tsig: the TSIG pseudosection (-y, -k sign)
    "notsig": {"tsig": False},
    "short": {"format": "short", "header": False, "opt": False, "stats": False},
    "noshort": {"format": "full"},
    "json": {"format": "json"},
    "nojson": {"format": "full"},
    "class": {"rrclass": True},
    # kdig's opt_multiline: the full format with header, EDNS and footer back on;
    # +nomultiline only unwraps
    "multiline": {"multiline": True, "format": "full", "header": True, "opt": True,
                  "stats": True},
    "nomultiline": {"multiline": False},
    "generic": {"generic": True},
    "nogeneric": {"generic": False},
    "noclass": {"rrclass": False},
    **{name: {name: True} for name in (*_SECTIONS, "qr", "ttl", "crypto", "opttext")},
    **{f"no{name}": {name: False} for name in ("header", "comments", "opt", "question",
                                               "answer", "authority", "stats", "qr", "ttl",
                                               "crypto", "opttext")},
}
#: Options with a +no form (kdig's ``+[no]OPTION``), by our key.
#: Options that need an OPT record: after +noedns, each brings EDNS 0 back (kdig).
NEEDS_EDNS = ("dnssec", "nsid", "bufsize", "cookie", "padding", "subnet", "ednsopt",
              "keepalive")
NEGATABLE = (*NO_OPTIONS, "keepalive", "dnssec", "cd", "rec", "ignore",
             "nsid", "subnet", "cookie", "ednsopt", "bufsize", *HEADER_FLAGS,
             *(name for name in DISPLAY if not name.startswith("no")))
#: Options that take no value (kdig's ARG_NONE): a value is warned about and ignored.
NO_VALUE = ("tls", "tcp", "keepalive", "dnssec", "cd", "rec", "ignore", "nsid",
            *HEADER_FLAGS, *DISPLAY)


EXIT_ANSWERED = 0
EXIT_FAILED = 1  # unreachable, failed handshake, connection lost, malformed answer
EXIT_USAGE = 2
EXIT_AUTHENTICATION = 3  # the server is not who it should be: never retried
EXIT_TIMEOUT = 4  # nothing but timeouts


class UsageError(Exception):
    """Bad arguments: reported on one line, exit status 2."""


@dataclass(slots=True)
class Question:
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType | None = None
    rdclass: dns.rdataclass.RdataClass | None = None
    #: the serial of an IXFR (``IXFR=SERIAL``): the version the client has
    serial: int | None = None


@dataclass(slots=True)
class QueryOptions:
    """What the command line asked for, in kdig's terms."""

    server: str | None = None
    port: int | None = None
    questions: list[Question] = field(default_factory=list)
    tls: bool = False
    tcp: bool = False
    #: +notcp given (and not undone by +tcp or +tls): a zone transfer goes over UDP too,
    #: as kdig's; otherwise AXFR and IXFR go over TCP
    notcp: bool = False
    tls_ca: bool = False
    ca_file: str | None = None
    hostname: str | None = None
    sni: str | None = None
    pins: list[str] = field(default_factory=list)
    padding: bool | None = None
    padding_length: int | None = None
    keepalive: bool = False
    dnssec: bool = False
    cd: bool = False
    rec: bool = True
    #: what to print (kdig's display options, +json and +short)
    style: Style = field(default_factory=Style)
    #: kdig's warnings about the arguments (``superfluous option argument: +tcp=1``),
    #: printed to stderr as ``;; WARNING: ...`` before the queries are sent
    warnings: list[str] = field(default_factory=list)
    #: a truncated UDP answer is final, not asked again over TCP (kdig's +ignore, which
    #: +notcp implies)
    ignore: bool = False
    #: EDNS options: +nsid, +subnet=ADDR[/PREFIX], +cookie[=HEX], +ednsopt=CODE[:HEX]
    nsid: bool = False
    subnet: dns.edns.ECSOption | None = None
    cookie: bytes | None = None
    ednsopt: list[tuple[int, bytes]] = field(default_factory=list)
    #: the EDNS UDP size asked for (+bufsize=B); None: 1232
    bufsize: int | None = None
    #: the EDNS version (+edns=N); None: no OPT record (+noedns). We send EDNS 0 by
    #: default, kdig only when an option needs it (docs/query.md).
    edns: int | None = 0
    #: header bits set by +aaflag, +adflag, +raflag, +tcflag, +zflag
    flags: dict[str, bool] = field(default_factory=dict)
    #: seconds per attempt; None: no limit (kdig's +notimeout and +timeout=0)
    time: float | None = DEFAULT_TIME
    retry: int = DEFAULT_RETRY
    debug: bool = False
    #: -y/-k: the TSIG key the queries are signed with (RFC 8945)
    tsig_key: dns.tsig.Key | None = None
    #: type and class words given before any name (they win over -t and -c)
    default_type: dns.rdatatype.RdataType | None = None
    default_class: dns.rdataclass.RdataClass | None = None
    default_serial: int | None = None

    def edns_options(self) -> list[dns.edns.Option]:
        """The EDNS options asked for, in kdig's order (NSID, subnet, cookie, others)."""
        options: list[dns.edns.Option] = []
        if self.nsid:
            options.append(dns.edns.GenericOption(dns.edns.OptionType.NSID, b""))
        if self.subnet is not None:
            options.append(self.subnet)
        if self.cookie is not None:
            options.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, self.cookie))
        options.extend(dns.edns.GenericOption(dns.edns.OptionType.make(code), data)
                       for code, data in self.ednsopt)
        return options

    @property
    def json(self) -> bool:
        return self.style.format == "json"

    @property
    def short(self) -> bool:
        return self.style.format == "short"

    @property
    def verify(self) -> bool:
        """kdig: +tls-ca verifies; +tls-hostname implies +tls-ca unless pins are given."""
        return self.tls_ca or (self.hostname is not None and not self.pins)

    @property
    def transfer(self) -> Question | None:
        """The zone transfer asked for (an AXFR or IXFR question), if any."""
        for question in self.questions:
            if question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
                return question
        return None

    @property
    def transport(self) -> str:
        """As kdig: TLS rides on TCP (+tls chooses TCP; a later +notcp means UDP); a
        zone transfer goes over TCP unless +notcp says UDP."""
        tcp = self.tcp or (not self.notcp and self.transfer is not None)
        return "tls" if self.tls and tcp else "tcp" if tcp else "udp"

    @property
    def timeout(self) -> float:
        """Seconds per attempt for the client (:data:`NO_TIME_LIMIT` without a limit)."""
        return NO_TIME_LIMIT if self.time is None else self.time

    @property
    def tries(self) -> int:
        """Attempts per question: kdig retries over UDP only (``+retry``); over TCP and
        TLS a timeout or a refused connection is final."""
        return self.retry + 1 if self.transport == "udp" else 1


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "query",
        help="ask a DNS server over TLS, TCP or UDP with kdig-style options",
        description="kdig-style queries: dnstls query [-d] [@SERVER] [-p PORT] [+tls] "
                    "[+tls-ca[=FILE]] [+tls-host=NAME] [+tls-sni=NAME] [+tls-pin=BASE64]... "
                    "[+padding[=N]] [+keepalive] [+dnssec] [+cd] [+norec] [+json] "
                    "[+short] [+timeout=S] [+retry=N] [+tcp] [+ignore] [+[no]all] [+[no]qr] "
                    "[+[no]header] [+[no]comments] [+[no]opt] [+[no]question] [+[no]answer] "
                    "[+[no]authority] [+[no]additional] [+[no]stats] [+[no]class] [+[no]ttl] "
                    "[+[no]crypto] [+[no]opttext] [TYPE] [CLASS] NAME [TYPE] "
                    "[CLASS] [NAME [TYPE] [CLASS]]...; zone transfers: ZONE AXFR, "
                    "ZONE IXFR=SERIAL (over TCP, or TLS with +tls...)",
        epilog="Options are negated as +noOPTION and may be abbreviated to a unique "
               "prefix, as in kdig (+notls, +nopadding, +norec, +notls-pin, +notcp, "
               "+tls-ho=NAME); +notcp and +ignore: a truncated UDP answer is not asked "
               "again over TCP; +notimeout or +timeout=0: no time limit. "
               "+retry applies to UDP only. Display options apply left to right as in "
               "kdig (+noall +answer: the answer records only). Several NAME [TYPE] groups are "
               "sent pipelined over one connection. Exit status: 0 answered (any RCODE), "
               "1 server unreachable or connection failed, 2 bad arguments, 3 TLS "
               "authentication failed, 4 timed out; the reason on stderr.")
    parser.add_argument("-d", dest="debug", action="store_true",
                        help="print the presented certificate chain with SPKI pins and "
                             "verdicts (stderr)")
    parser.add_argument("-p", dest="port", type=int, metavar="PORT",
                        help="server port (default 853 with TLS, else 53)")
    parser.add_argument("-q", dest="names", action="append", default=[], metavar="NAME",
                        help="a query name (also one that looks like a type)")
    parser.add_argument("-x", dest="reverse", action="append", default=[], metavar="ADDR",
                        help="reverse lookup: ask for the PTR record of an IPv4 or IPv6 "
                             "address")
    parser.add_argument("-y", dest="tsig", type=lambda text: ("y", text),
                        metavar="[ALG:]NAME:KEY",
                        help="sign the queries with this TSIG key (RFC 8945; ALG default "
                             "hmac-sha256; KEY in base64) and verify the answers, as kdig -y")
    parser.add_argument("-k", dest="tsig", type=lambda path: ("k", path), metavar="KEYFILE",
                        help="the same with the key read from the first line of KEYFILE")
    parser.add_argument("-t", dest="type", metavar="TYPE", help="default query type (A)")
    parser.add_argument("-c", dest="rdclass", metavar="CLASS", help="default class (IN)")
    parser.set_defaults(func=run, accepts_extra=True, quiet_default=1)


# ---------------------------------------------------------------- argument parsing


def parse_options(args: argparse.Namespace) -> QueryOptions:
    """Turn the parsed namespace and the kdig-style extra tokens into options.

    Raises :class:`UsageError` naming the offending token.
    """
    opts = QueryOptions(debug=bool(args.debug))
    tsig = getattr(args, "tsig", None)
    if tsig is not None:
        opts.tsig_key = tsig_key(*tsig)
    for name in args.names:
        opts.questions.append(Question(_name(name)))
    for address in args.reverse:
        opts.questions.append(Question(_reverse_name(address), dns.rdatatype.PTR))
    for token in args.extra:
        if token.startswith("+"):
            _plus_option(opts, token)
        elif token.startswith("@"):
            opts.server, port = _server(token[1:])
            if port is not None:
                opts.port = port
        elif token.startswith("-") and len(token) > 1:
            raise UsageError(f"unknown option {token!r}")
        else:
            _positional(opts, token)
    if args.port is not None and opts.port is None:
        if not 0 < args.port < 65536:
            raise UsageError(f"-p {args.port}: port out of range 1..65535")
        opts.port = args.port
    t_serial = _ixfr(args.type, "-t") if args.type else None  # -t IXFR=SERIAL
    if opts.default_type is not None:  # a type word before the names wins over -t
        default_type, default_serial = opts.default_type, opts.default_serial
    elif t_serial is not None:
        default_type, default_serial = dns.rdatatype.IXFR, t_serial
    else:
        default_type = _rdtype(args.type) if args.type else dns.rdatatype.A
        default_serial = None
    default_class = opts.default_class or (_rdclass(args.rdclass) if args.rdclass
                                           else dns.rdataclass.IN)
    if not opts.questions:
        opts.questions.append(Question(dns.name.root, dns.rdatatype.NS))
    for question in opts.questions:
        if question.rdtype is None:
            question.rdtype = default_type
            if question.serial is None:
                question.serial = default_serial
        question.rdclass = question.rdclass if question.rdclass is not None else default_class
    _check_transfer(opts)
    return opts


def _check_transfer(opts: QueryOptions) -> None:
    """A zone transfer is asked alone (one connection carries it, to its end), an
    IXFR with the serial the client has (kdig reads a bare ``IXFR`` as a name)."""
    transfer = opts.transfer
    if transfer is None:
        return
    if len(opts.questions) > 1:
        raise UsageError("a zone transfer (AXFR, IXFR=SERIAL) is asked alone: give one "
                         "NAME with it")
    if transfer.rdtype == dns.rdatatype.IXFR and transfer.serial is None:
        raise UsageError("IXFR needs the serial the client has: IXFR=SERIAL")
    if transfer.rdtype != dns.rdatatype.IXFR:
        transfer.serial = None


def _ixfr(token: str, where: str = "") -> int | None:
    """The serial of an ``IXFR=SERIAL`` word (any case, as kdig), None for other words."""
    head, equals, serial = token.partition("=")
    if not equals or head.upper() != "IXFR":
        return None
    if not serial.isdigit() or int(serial) > 0xFFFFFFFF:
        raise UsageError(f"{where + ' ' if where else ''}{token}: expected IXFR=SERIAL, "
                         "a serial from 0 to 4294967295")
    return int(serial)


#: kdig's TSIG algorithms (``-y hmac-sha512:name:key``)
TSIG_ALGORITHMS = {"hmac-md5": dns.tsig.HMAC_MD5, "hmac-sha1": dns.tsig.HMAC_SHA1,
                   "hmac-sha224": dns.tsig.HMAC_SHA224, "hmac-sha256": dns.tsig.HMAC_SHA256,
                   "hmac-sha384": dns.tsig.HMAC_SHA384, "hmac-sha512": dns.tsig.HMAC_SHA512}


def tsig_key(how: str, value: str) -> dns.tsig.Key:
    """kdig's ``-y [ALGORITHM:]NAME:KEY`` (``how`` "y") or ``-k FILE`` ("k"): the first
    line of FILE in the same form. The algorithm is hmac-sha256 unless given, as kdig's."""
    what = f"bad key {value}" if how == "y" else f"bad keyfile {value}"
    text = value
    if how == "k":
        try:
            with open(value, encoding="utf-8") as file:
                text = file.readline()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{what}: {getattr(exc, 'strerror', None) or exc}") from None
    head, colon, secret = text.strip().rpartition(":")
    if not colon or not head:
        raise UsageError(f"{what}: expected [ALGORITHM:]NAME:KEY")
    algorithm, colon, name = head.partition(":")
    if not colon:
        algorithm, name = "hmac-sha256", algorithm
    if algorithm.lower() not in TSIG_ALGORITHMS:
        raise UsageError(f"{what}: unknown algorithm {algorithm!r} (one of "
                         + ", ".join(TSIG_ALGORITHMS) + ")")
    try:
        data = base64.b64decode(secret, validate=True)
    except (ValueError, binascii.Error):
        raise UsageError(f"{what}: the key is not base64") from None
    if not data:
        raise UsageError(f"{what}: the key is empty")
    return dns.tsig.Key(_name(name), data, TSIG_ALGORITHMS[algorithm.lower()])


def _name(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise UsageError(f"{text!r} is not a valid domain name: {exc}") from None


def _reverse_name(address: str) -> dns.name.Name:
    try:
        return dns.reversename.from_address(address)
    except (dns.exception.DNSException, ValueError):
        raise UsageError(f"-x {address}: not an IPv4 or IPv6 address") from None


def _rdtype(text: str) -> dns.rdatatype.RdataType:
    try:
        return dns.rdatatype.from_text(text)
    except dns.exception.DNSException:
        raise UsageError(f"{text!r} is not a record type") from None


def _rdclass(text: str) -> dns.rdataclass.RdataClass:
    try:
        return dns.rdataclass.from_text(text)
    except dns.exception.DNSException:
        raise UsageError(f"{text!r} is not a class") from None


def _maybe(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except (dns.exception.DNSException, ValueError):
        return None


def _positional(opts: QueryOptions, token: str) -> None:
    """NAME, or a TYPE or CLASS word, read as kdig reads it: after a name it sets that
    name's type (class), replacing an earlier one; before any name it sets the default
    for the names that follow, so ``MX example.com`` is ``example.com MX``."""
    current = opts.questions[-1] if opts.questions else None
    if (serial := _ixfr(token)) is not None:  # IXFR=SERIAL, kdig's IXFR type word
        if current is None:
            opts.default_type, opts.default_serial = dns.rdatatype.IXFR, serial
        else:
            current.rdtype, current.serial = dns.rdatatype.IXFR, serial
        return
    if rdtype := _maybe(dns.rdatatype.from_text, token):  # (type 0 is no query type)
        if current is None:
            opts.default_type = rdtype
        else:
            current.rdtype = rdtype
        return
    if (rdclass := _maybe(dns.rdataclass.from_text, token)) is not None:
        if current is None:
            opts.default_class = rdclass
        else:
            current.rdclass = rdclass
        return
    opts.questions.append(Question(_name(token)))


def _server(text: str) -> tuple[str, int | None]:
    """``ADDR``, ``ADDR:PORT``, ``ADDR#PORT``, ``[V6]:PORT``, ``V6`` or ``V6#PORT``."""
    host, port_text = text, None
    if "#" in text:
        host, port_text = text.rsplit("#", 1)
    elif text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise UsageError(f"@{text}: missing ']' after the IPv6 address")
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"@{text}: expected [ADDR]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        head, _, tail = host.rpartition(":")
        if tail.isdigit() and _maybe(ipaddress.IPv6Address, head):
            raise UsageError(f"@{text}: an IPv6 address with a port goes in brackets: "
                             f"@[{head}]:{tail} (or @{head}#{tail})") from None
        raise UsageError(f"@{text}: the server must be an IP address") from None
    if port_text is None:
        return address, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"@{text}: port {port_text!r} is not a number from 1 to 65535")
    return address, int(port_text)


def option_name(word: str, token: str) -> str:
    """The option ``word`` (what came between ``+`` and ``=``) names, as kdig resolves
    it: itself if it is a name, else the one name it is a prefix of (UsageError when
    none or several are)."""
    if word in OPTION_NAMES:
        return word
    matches = sorted(name for name in OPTION_NAMES if name.startswith(word)) if word else []
    if not matches:
        raise UsageError(f"invalid option: {token}")
    if len(matches) > 1:
        raise UsageError(f"ambiguous option: {token} (" + ", ".join(
            f"+{name}" for name in matches) + ")")
    return matches[0]


def _plus_option(opts: QueryOptions, token: str) -> None:
    """One ``+OPTION[=VALUE]`` or ``+noOPTION``, applied in order as kdig applies them."""
    typed, has_value, value = token[1:].partition("=")  # case-sensitive, as kdig's
    name = option_name(typed, token)
    negated = name.startswith("no") and name != "noidn"
    key = KEYS.get(name[2:], name[2:]) if negated else KEYS.get(name, name)
    if key not in NEGATABLE:  # every option we have has a +no form
        shown = f" (+{name})" if name != typed else ""
        raise UsageError(f"unsupported option: {token}{shown}: a kdig option that "
                         "dnstls query does not implement")
    if has_value and (negated or key in NO_VALUE):  # kdig warns and goes on
        opts.warnings.append(f"superfluous option argument: {token}")
        has_value = value = ""
    if name in DISPLAY:
        for attribute, setting in DISPLAY[name].items():
            setattr(opts.style, attribute, setting)
        return
    if negated:
        _no_option(opts, key)
        return
    if key in ("tls-hostname", "tls-sni", "tls-pin", "time", "retry", "subnet", "ednsopt",
               "bufsize") and not (has_value and value):
        raise UsageError(f"{token}: needs a value (+{typed}=...)")
    if key in NEEDS_EDNS and opts.edns is None:
        opts.edns = 0
    if key in TLS_OPTIONS:
        opts.tls = True  # every +tls-* option implies +tls, as in kdig ...
    if key in (*TLS_OPTIONS, "tcp"):
        opts.tcp = True  # ... and TLS is over TCP
        opts.notcp = False
    if key in ("tls", "tcp"):
        return
    if key == "tls-ca":
        opts.tls_ca = True
        opts.ca_file = value or None
    elif key == "tls-hostname":
        opts.hostname = value.rstrip(".")
    elif key == "tls-sni":
        opts.sni = value
    elif key == "tls-pin":
        try:
            opts.pins.append(parse_pin(value))
        except ValueError as exc:
            raise UsageError(f"+tls-pin: {exc}") from None
    elif key == "padding":
        opts.padding = True
        opts.padding_length = _integer(token, value, 0, 4096) if has_value else None
    elif key in ("keepalive", "dnssec", "cd", "rec", "ignore", "nsid", *HEADER_FLAGS):
        if key in HEADER_FLAGS:
            opts.flags[key] = True
        else:
            setattr(opts, key, True)
    elif key == "subnet":
        opts.subnet = _subnet(token, value)
    elif key == "cookie":
        opts.cookie = _cookie(token, value) if has_value else secrets.token_bytes(8)
    elif key == "ednsopt":
        code, _, data = value.partition(":")
        opts.ednsopt.append((_integer(token, code, 0, 65535), _hex(token, data)))
    elif key == "bufsize":
        opts.bufsize = _integer(token, value, 0, 65535)
    elif key == "edns":
        opts.edns = _integer(token, value, 0, 255) if has_value else 0
    elif key == "time":
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 3600:
            raise UsageError(f"{token}: expected a number of seconds (0 <= S <= 3600; "
                             "0: no limit)")
        opts.time = seconds or None  # kdig: "zero value ... is interpreted as infinity"
    elif key == "retry":
        opts.retry = _integer(token, value, 0, 100)
    else:  # (every key of NEGATABLE and the TLS options is handled above)
        raise UsageError(f"unsupported option: {token}")


def _no_option(opts: QueryOptions, key: str) -> None:
    """``+noOPTION`` with kdig's meaning (its ``opt_no*`` functions)."""
    if key in HEADER_FLAGS:
        opts.flags[key] = False
        return
    for name, value in NO_OPTIONS.get(key, {key: False}).items():
        setattr(opts, name, copy.copy(value))  # a fresh list for pins


def _subnet(token: str, value: str) -> dns.edns.ECSOption:
    """kdig's ``+subnet=ADDR[/PREFIX]``: the source prefix is the whole address when
    not given (``/32``, ``/128``)."""
    text, slash, prefix = value.partition("/")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{token}: expected ADDR[/PREFIX]") from None
    length = _integer(token, prefix, 0, address.max_prefixlen) if slash \
        else address.max_prefixlen
    return dns.edns.ECSOption(str(address), length)


def _hex(token: str, text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{token}: expected hexadecimal digits") from None


def _cookie(token: str, value: str) -> bytes:
    """A client cookie (8 bytes) and optionally the server's (8 to 32), RFC 7873."""
    cookie = _hex(token, value)
    if len(cookie) != 8 and not 16 <= len(cookie) <= 40:
        raise UsageError(f"{token}: a cookie is 8 bytes, or 16 to 40 with the server's")
    return cookie


def _integer(token: str, value: str, lo: int, hi: int) -> int:
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise UsageError(f"{token}: expected a number from {lo} to {hi}")
    return int(value)


def system_nameserver(path: Path | None = None) -> str | None:
    """The first ``nameserver`` of resolv.conf (kdig's default server), if any."""
    with contextlib.suppress(OSError):
        for line in (path or RESOLV_CONF).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    return str(ipaddress.ip_address(parts[1].split("%")[0]))
    return None


# ---------------------------------------------------------------- running


def build_client(opts: QueryOptions) -> Client:
    """The :class:`Client` for ``opts`` (one connection, every question pipelined on it)."""
    assert opts.server is not None
    transport = opts.transport
    port = opts.port or (853 if transport == "tls" else 53)
    host = f"[{opts.server}]" if ":" in opts.server else opts.server
    uri = f"{transport}://{host}:{port}"
    sni = opts.sni
    if transport == "tls" and opts.verify and opts.hostname:
        uri += f"#{opts.hostname}"  # checked against the certificate; SNI by default
    elif transport == "tls":
        sni = opts.sni or opts.hostname
    verify = opts.verify if transport == "tls" else None
    return Client(uri, pins=opts.pins if transport == "tls" else (),
                  ca_file=opts.ca_file if verify else None, timeout=opts.timeout,
                  padding=opts.padding is not False, padding_length=opts.padding_length,
                  keepalive=opts.keepalive, verify=verify,
                  opportunistic=transport == "tls" and not (verify or opts.pins),
                  sni=sni, max_connections=1,
                  max_in_flight=max(1, min(len(opts.questions), 65535)),
                  tcp_fallback=not opts.ignore, edns_options=opts.edns_options(),
                  edns=_edns_version(opts, transport))


def _edns_version(opts: QueryOptions, transport: str) -> int | None:
    """The EDNS version sent: +edns=N's, or none after +noedns -- unless an +ednsopt
    (or, over TCP and TLS, +keepalive) given before it still needs an OPT (kdig)."""
    if opts.edns is not None:
        return opts.edns
    return 0 if opts.ednsopt or (opts.keepalive and transport != "udp") else None


def query_message(question: Question, opts: QueryOptions) -> dns.message.Message:
    """The query for ``question`` with the header bits and EDNS header asked for."""
    assert question.rdtype is not None and question.rdclass is not None
    message = make_query(question.name, question.rdtype, question.rdclass,
                         dnssec=opts.dnssec, cd=opts.cd, rd=opts.rec,
                         payload=1232 if opts.bufsize is None else opts.bufsize)
    for flag, on in opts.flags.items():
        if on:
            message.flags |= HEADER_FLAGS[flag]
    if opts.tsig_key is not None:  # signed when sent (prepare_query), at this time
        message.use_tsig(opts.tsig_key, fudge=300, algorithm=opts.tsig_key.algorithm)
        assert message.tsig is not None
        template: Any = message.tsig[0]
        message.tsig = dns.rrset.from_rdata(message.tsig.name, 0,
                                            template.replace(time_signed=int(time.time())))
    return message


async def ask(client: Client, message: dns.message.Message, opts: QueryOptions) -> Reply:
    """One question, tried :attr:`QueryOptions.tries` times on timeouts and network
    errors (never again after an authentication failure, which could not change)."""
    for attempt in range(opts.tries):
        try:
            return await client.exchange(message)
        except (QueryTimeout, NetworkError):
            if attempt == opts.tries - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def run_queries(opts: QueryOptions) -> tuple[list[Reply | BaseException], list[bytes]]:
    """The answers (or failures) in the order asked, and the queries as sent (+qr)."""
    messages = [query_message(question, opts) for question in opts.questions]
    async with build_client(opts) as client:
        queries = [client.wire_query(message) for message in messages]
        results = await asyncio.gather(*(ask(client, m, opts) for m in messages),
                                       return_exceptions=True)
    return list(results), queries


def run(args: argparse.Namespace) -> int:
    try:
        opts = parse_options(args)
        if opts.ca_file is not None and opts.verify:
            try:
                check_ca_file(opts.ca_file)
            except ConfigError as exc:
                raise UsageError(f"+tls-ca={exc.message}") from None
        if opts.server is None:
            opts.server = system_nameserver()
            if opts.server is None:
                raise UsageError(f"no @SERVER given and no nameserver in {RESOLV_CONF}")
    except UsageError as exc:
        print(f"dnstls query: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in opts.warnings:
        print(f";; WARNING: {warning}", file=sys.stderr)
    if opts.transfer is not None:  # AXFR, IXFR=SERIAL: dnstls.cli.transfer
        from dnstls.cli.transfer import run_transfer

        with _quiet_library_logs(args.verbose):
            return asyncio.run(run_transfer(opts))
    with _quiet_library_logs(args.verbose):
        results, queries = asyncio.run(run_queries(opts))
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, DnsTlsError):
                raise failure
        if opts.debug:
            sys.stderr.write(debug_block(results, opts))
    sys.stderr.write(truncation_warnings(results, opts))
    sys.stderr.write(tsig_warnings(results, opts))
    sys.stdout.write(render_results(results, opts, queries))
    reasons = list(dict.fromkeys(describe_failure(f, opts) for f in failures))
    for reason in reasons:
        print(f"dnstls query: error: {reason}", file=sys.stderr)
    return exit_status(failures)


def exit_status(failures: Sequence[BaseException]) -> int:
    """The most telling status for the questions that got no answer: an authentication
    failure first, then any other failure; timeouts alone give :data:`EXIT_TIMEOUT`."""
    if not failures:
        return EXIT_ANSWERED
    if any(isinstance(f, TLSAuthenticationError) for f in failures):
        return EXIT_AUTHENTICATION
    if all(isinstance(f, QueryTimeout) for f in failures):
        return EXIT_TIMEOUT
    return EXIT_FAILED


@contextlib.contextmanager
def _quiet_library_logs(verbose: int) -> Iterator[None]:
    """The query tool reports failures itself; the pool's log lines only with -v."""
    logger = logging.getLogger("dnstls")
    previous = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


# ---------------------------------------------------------------- output


def reply_info(reply: Reply) -> ReplyInfo:
    conn = reply.connection
    tls = conn.tls
    session = (TlsSession(tls.version or "TLS", tls.cipher or "unknown", group=tls.group,
                          signature=tls.signature, chain=tls.chain)
               if tls is not None else None)
    return ReplyInfo(server=conn.address, port=conn.port, transport=conn.transport.upper(),
                     elapsed_ms=reply.rtt * 1000.0, received=reply.size,
                     time=datetime.now(UTC), tls=session)


def render_results(results: Sequence[Reply | BaseException], opts: QueryOptions,
                   queries: Sequence[bytes] = ()) -> str:
    """The answers in the order asked, each after its query with +qr (as kdig: the
    query, an empty line, the answer); failed questions are left out (see stderr).
    Blocks are separated by an empty line in the full format, as kdig separates them."""
    style = opts.style
    blocks: list[str] = []
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            continue
        info = reply_info(result)
        # kdig prints an empty line when it asks again over TCP (and warns on stderr)
        retried = "\n" if _retried_over_tcp(result, opts) else ""
        query = None
        if style.qr and index < len(queries):
            query = dns.message.from_wire(queries[index], keyring=False)  # TSIG: as sent
        if style.format == "json":
            if query is None:
                blocks.append(retried + render_json(result.message, info))
            else:
                document = {"queryMessage": message_json(query, _sent_info(info, queries[index]),
                                                         metadata=False),
                            "responseMessage": message_json(result.message, info)}
                blocks.append(retried + json.dumps(document, indent=2, ensure_ascii=False)
                              + "\n")
            continue
        text = render_kdig(result.message, info, style)
        if query is not None:
            sent = render_kdig(query, _sent_info(info, queries[index]), style, incoming=False)
            text = sent + "\n" + text
        blocks.append(retried + text)
    separator = "\n" if style.format == "full" else ""
    return separator.join(blocks)


def _sent_info(answer: ReplyInfo, wire: bytes) -> ReplyInfo:
    """The footer of a query sent: its size; no time taken (we do not time sending)."""
    return dataclasses.replace(answer, received=len(wire), elapsed_ms=-1.0)


def _retried_over_tcp(result: Reply, opts: QueryOptions) -> bool:
    return opts.transport == "udp" and result.connection.transport == "tcp"


def truncation_warnings(results: Sequence[Reply | BaseException], opts: QueryOptions) -> str:
    """kdig's warning, on stderr, for each UDP answer that came truncated and was asked
    again over TCP (nothing is said when +ignore keeps the truncated answer)."""
    port = opts.port or 53
    return "".join(
        f";; WARNING: truncated reply from {opts.server}@{port}(UDP), retrying over TCP\n\n"
        for result in results if isinstance(result, Reply) and _retried_over_tcp(result, opts))


def tsig_warnings(results: Sequence[Reply | BaseException], opts: QueryOptions) -> str:
    """kdig's warnings, on stderr, for the answers to signed queries (-y, -k): one
    without a question (a server's TSIG error has none), one that is not signed or
    whose TSIG does not verify. The answer is printed all the same and the exit status
    is 0, as kdig's."""
    if opts.tsig_key is None:
        return ""
    lines = []
    for result in results:
        if not isinstance(result, Reply):
            continue
        if not result.message.question:
            lines.append(";; WARNING: response doesn't have question section\n")
        verdict = getattr(result.message, "tsig_verdict", None)
        if verdict is not None:
            conn = result.connection
            lines.append(f";; WARNING: reply verification for {conn.address}@{conn.port}"
                         f"({conn.transport.upper()}) ({verdict})\n")
    return "".join(lines)


def debug_block(results: Sequence[Reply | BaseException], opts: QueryOptions) -> str:
    """``-d``: the chain of each TLS connection that answered, or of the server that
    failed authentication (fetched again, unauthenticated, to show it)."""
    text: list[str] = []
    seen: set[int] = set()
    for result in results:
        if isinstance(result, Reply) and result.connection.tls is not None:
            if result.connection.number in seen:
                continue
            seen.add(result.connection.number)
            tls = result.connection.tls
            verification = (Verification(True, True, tls.anchor, tls.verified_name)
                            if tls.verified else None)
            if tls.resumed:
                text.append(";; DEBUG: TLS, session resumed: no certificates presented\n")
                continue
            text.append(render_chain_debug(tls.chain, pins=opts.pins,
                                           verification=verification, now=datetime.now(UTC)))
    if not text and any(isinstance(r, TLSAuthenticationError) for r in results):
        text.append(asyncio.run(_refetch_chain(opts)))
    return "".join(text)


async def _refetch_chain(opts: QueryOptions) -> str:
    assert opts.server is not None
    name = opts.sni or opts.hostname
    try:
        result = await fetch_chain(opts.server, opts.port or 853, server_name=name,
                                   timeout=opts.timeout, cafile=opts.ca_file,
                                   verify=opts.verify)
    except DnsTlsError as exc:
        return f";; DEBUG: TLS, cannot fetch the chain again: {exc}\n"
    verification = result.verification
    if verification.checked and opts.hostname is None:
        verification = Verification(True, verification.trusted, verification.anchor, None,
                                    verification.reason)
    return render_chain_debug(result.chain, pins=opts.pins, verification=verification,
                              now=datetime.now(UTC))


def describe_failure(error: BaseException, opts: QueryOptions) -> str:
    """The one-line reason for a question that got no answer."""
    transport = opts.transport
    where = f"{opts.server}@{opts.port or (853 if transport == 'tls' else 53)}({transport.upper()})"
    if isinstance(error, PinMismatch):
        return f"{where}: {error}"
    if isinstance(error, TLSAuthenticationError):
        reason = re.sub(r"\.? for (tls|tcp|udp)://\S+$", "", str(error))  # named already
        return f"TLS authentication failed for {where}: {reason}"
    if isinstance(error, QueryTimeout):
        tries = f" ({opts.tries} tries)" if opts.tries > 1 else ""
        within = "" if opts.time is None else f" within {opts.time:g} s"
        if str(error).startswith("no connection"):  # the pool's: never connected
            stage = " (TCP connect or TLS handshake not completed)" if transport == "tls" else ""
            return f"no connection to {where}{within}{stage}{tries}"
        return f"no answer from {where}{within}{tries}"
    return str(error).replace("\n", " ")
