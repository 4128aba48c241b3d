"""``dnstls query``'s display options against the real kdig 3.2.6, side by side.

A responder on loopback (UDP and TCP on one port) answers every query with the same
bytes -- one answer rendered once, only the ID patched in, so that dnspython's shuffling
of RRsets cannot make two runs differ -- and kdig and ``dnstls query`` ask it the same
question with the same options. Their standard output must be equal byte for byte, after
normalising what differs by design or by chance: the message ID (each picks its own),
the clock in ``;; Time`` and the elapsed time after `` in `` (``;; From`` and ``;; To``;
we print no time for the query sent, see docs/query.md).

kdig is run with ``+noadflag +bufsize=1232``: kdig 3.2.6 sets AD in its queries and sends
no OPT unless an option needs one, and we send an OPT of 1232 bytes and no AD; with those
two options both send the same query, so that ``+qr`` prints the same query block too.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest

from dnstls.cli.main import main
from dnstls.cli.output import ReplyInfo, Style, render_kdig

from .peers import require

pytestmark = pytest.mark.interop

QNAME = "www.example."
TIMEOUT = 30


def _answer(*, truncated: bool = False) -> bytes:
    query = dns.message.make_query(QNAME, "A")
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA | dns.flags.RA
    reply.use_edns(0, payload=1232, options=[
        dns.edns.NSIDOption(b"ns-1"), dns.edns.GenericOption(65001, b"hi there"),
        dns.edns.GenericOption(65002, b"\x01\x02"), dns.edns.GenericOption(12, bytes(5))])
    if not truncated:
        long_owner = "a-rather-long-owner-name-for.example."
        for section, text in (
                (reply.answer, f"{QNAME} 300 IN CNAME {long_owner}"),
                (reply.answer, f"{long_owner} 60 IN A 192.0.2.1"),
                (reply.answer, f"{long_owner} 60 IN RRSIG A 13 3 60 20260101000000 "
                               "20250101000000 12345 example. dGhpcyBpcyBhIHNpZ25hdHVyZSBk"
                               "YXRhIHRoYXQgaXMgbG9uZw=="),
                (reply.answer, "example. 60 IN DNSKEY 257 3 13 dGhpcyBpcyBhIHNpZ25hdHVyZSBk"
                               "YXRhIHRoYXQgaXMgbG9uZw=="),
                (reply.answer, "example. 60 IN DS 12345 13 2 " + "ab" * 32),
                (reply.authority, "example. 3600 IN NS ns1.example."),
                (reply.additional, "ns1.example. 3600 IN AAAA 2001:db8::53"),
                (reply.additional, 'ns1.example. 3600 IN TXT "hello world" "two"')):
            section.append(dns.rrset.from_text(*text.split(maxsplit=4)))
    else:
        reply.flags |= dns.flags.TC
    return reply.to_wire()


class Responder:
    """UDP and TCP on one loopback port; every query gets :attr:`udp_answer` (over UDP)
    or :attr:`tcp_answer`, ID patched. Queries of another name are not answered."""

    def __init__(self, *, truncate_udp: bool = False) -> None:
        self.tcp_answer = _answer()
        self.udp_answer = _answer(truncated=True) if truncate_udp else self.tcp_answer
        for _ in range(50):  # a port free for both UDP and TCP
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port: int = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen()
        self.stopping = False
        self.received: list[bytes] = []
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]

    def _reply(self, query: bytes, answer: bytes) -> bytes | None:
        self.received.append(query)
        if len(query) < 12 or dns.message.from_wire(query).question[0].name.to_text() != QNAME:
            return None
        return query[:2] + answer[2:]

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if self.stopping:
                return
            reply = self._reply(data, self.udp_answer)
            if reply is not None:
                self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            if self.stopping:
                conn.close()
                return
            with conn, conn.makefile("rb") as stream:
                conn.settimeout(TIMEOUT)
                while (head := stream.read(2)) and len(head) == 2:
                    reply = self._reply(stream.read(struct.unpack("!H", head)[0]),
                                        self.tcp_answer)
                    if reply is None:
                        break
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    def __enter__(self) -> Responder:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True  # closing a socket does not wake a thread blocked on it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as poke:
            poke.sendto(b"stop", ("127.0.0.1", self.port))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass
        self.udp.close()
        self.tcp.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def responder() -> Iterator[Responder]:
    with Responder() as server:
        yield server


def normalise(text: str) -> str:
    """IDs, clocks and elapsed times out (see the module docstring)."""
    text = re.sub(r"; id: \d+$", "; id: N", text, flags=re.M)
    text = re.sub(r"^;; Time .*$", ";; Time T", text, flags=re.M)
    return re.sub(r"^(;; (From|To) \S+) in \d+\.\d ms$", r"\1", text, flags=re.M)


def run_kdig(port: int, options: Sequence[str],
             names: Sequence[str] = (QNAME,)) -> tuple[int, str, str]:
    """kdig with ``options`` before the names: kdig applies options given after a name
    to that name's query only (dnstls query applies every option to every question)."""
    kdig = require("kdig")
    run = subprocess.run([kdig, "@127.0.0.1", "-p", str(port), "+retry=0", "+timeout=5",
                          "+noadflag", "+bufsize=1232", *options, *names],
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return run.returncode, run.stdout, run.stderr


def run_ours(capsys: pytest.CaptureFixture[str], port: int, options: Sequence[str],
             names: Sequence[str] = (QNAME,)) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["query", "@127.0.0.1", "-p", str(port), "+retry=0", "+timeout=5",
                   *options, *names])
    out, err = capsys.readouterr()
    return status, out, err


DISPLAY = [
    [], ["+noall", "+answer"], ["+noall"], ["+noall", "+stats"], ["+nocomments"],
    ["+noheader"], ["+noopt"], ["+noquestion", "+noanswer"], ["+nostats"],
    ["+noadditional"], ["+noadditional", "+opt"], ["+noauthority", "+noclass", "+nottl"],
    ["+noclass"], ["+nottl"], ["+nocrypto"], ["+nocrypto", "+crypto"], ["+opttext"],
    ["+noall", "+opt", "+opttext"], ["+noall", "+question"], ["+noall", "+comments", "+header"],
    ["+nocomments", "+all"], ["+all", "+noall", "+answer", "+authority"],
    ["+noall", "+answer", "+qr"], ["+qr"], ["+tcp", "+qr"],
    ["+qr", "+nsid", "+subnet=192.0.2.0/24", "+cookie=0011223344556677", "+dnssec"],
    ["+qr", "+noall", "+answer"], ["+qr", "+nocomments", "+noclass"],
    ["+short"], ["+short", "+all"], ["+short", "+noshort"], ["+noall", "+short"],
    ["+short", "+qr"], ["+short", "+nocrypto"], ["+json", "+short"],
    ["+short", "+nojson"], ["+json", "+noshort"], ["+nocomments", "+noclass", "+nottl",
                                                   "+noques", "+noadd"],
    ["+tcp", "+noall", "+answer", "+stats"], ["+tcp=1", "+noall", "+answer"],
    ["+multiline"], ["+multiline", "+nocrypto", "+qr"], ["+noall", "+multiline"],
    ["+generic"], ["+generic", "+multiline", "+opttext"], ["+multiline=1", "+noall", "+answer"],
]


@pytest.mark.parametrize("options", DISPLAY, ids=" ".join)
def test_display_options_print_what_kdig_prints(options: list[str], responder: Responder,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    status, theirs, their_err = run_kdig(responder.port, options)
    assert status == 0, theirs + their_err
    ours_status, ours, our_err = run_ours(capsys, responder.port, options)
    assert ours_status == 0, our_err
    assert normalise(ours) == normalise(theirs)
    assert our_err == their_err  # "superfluous option argument" warnings included


@pytest.mark.parametrize("options", [["+noall", "+answer"], ["+noall"], ["+short"],
                                     ["+noall", "+stats", "+qr"], ["+json"]],
                         ids=" ".join)
def test_two_questions_separated_as_kdig(options: list[str], responder: Responder,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    names = (QNAME, QNAME)
    status, theirs, their_err = run_kdig(responder.port, options, names)
    assert status == 0, theirs + their_err
    ours_status, ours, our_err = run_ours(capsys, responder.port, options, names)
    if options == ["+json"]:  # ours has members of its own; the layout is what counts
        assert ours.count("\n}\n{\n") == theirs.count("\n}\n{\n") == 1
        return
    assert ours_status == 0, our_err
    assert normalise(ours) == normalise(theirs)


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_qr_prints_the_query_as_sent(transport: str, responder: Responder,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """+qr: the query block is the message the server received (under the ID printed)."""
    status, out, err = run_ours(capsys, responder.port, [
        transport, "+qr", "+nostats", "+nsid", "+cookie=0011223344556677", "+dnssec"])
    assert status == 0, err
    [received] = responder.received
    printed_id = int(re.search(r"; id: (\d+)$", out, re.M).group(1))  # type: ignore[union-attr]
    query = dns.message.from_wire(printed_id.to_bytes(2, "big") + received[2:])
    info = ReplyInfo("127.0.0.1", responder.port, "UDP", -1.0, len(received),
                     datetime.now(UTC))
    expected = render_kdig(query, info, Style(qr=True, stats=False), incoming=False)
    assert ";; NSID: \n" in expected and "flags: do;" in expected
    assert out.startswith(expected + "\n;; ->>HEADER<<-")


def test_json_ignores_display_options_as_kdig(responder: Responder,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """kdig 3.2.6's +json is not changed by +noall, +nocomments, ... (only +qr wraps it)."""
    _, plain, _ = run_ours(capsys, responder.port, ["+json"])
    _, hidden, _ = run_ours(capsys, responder.port, ["+json", "+noall", "+nocomments",
                                                     "+noclass", "+nocrypto", "+noopt"])
    drop = re.compile(r'^\s*"(dateString|dateSeconds|ID|queryTime)": .*\n', re.M)
    assert drop.sub("", hidden) == drop.sub("", plain)
    _, theirs, _ = run_kdig(responder.port, ["+json", "+noall", "+nocomments", "+noclass"])
    _, their_plain, _ = run_kdig(responder.port, ["+json"])
    assert drop.sub("", theirs) == drop.sub("", their_plain)


def test_truncated_udp_answer_warns_as_kdig(capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated UDP answer asked again over TCP: kdig's warning on stderr, word for
    word; with +ignore (or +notcp) the truncated answer is printed and nothing is said."""
    with Responder(truncate_udp=True) as server:
        for options in (["+noall", "+answer"], ["+ignore", "+noall", "+answer", "+header"],
                        ["+notcp", "+short"]):
            status, theirs, their_err = run_kdig(server.port, options)
            assert status == 0, theirs + their_err
            ours_status, ours, our_err = run_ours(capsys, server.port, options)
            assert ours_status == 0, our_err
            assert (normalise(ours), our_err) == (normalise(theirs), their_err)
    assert their_err == ""
