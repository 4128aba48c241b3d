"""``dnstls query`` zone transfers against the real kdig 3.2.6, from nsd 4.6.1 and from
a scripted primary.

nsd is the primary: ``example.test.`` (a few hundred records: several messages) and
``big.test.`` (thousands: a few dozen messages) with ``provide-xfr: 127.0.0.1 NOKEY``,
``signed.test.`` only with the TSIG key ``tsig-key.``, over TCP and over TLS on a
second port (``tls-port``; nsd 4.6.1 serves AXFR and IXFR there: XFR-over-TLS,
RFC 9103). nsd 4.6.1 keeps no IXFR history: an IXFR from an older serial is answered
with the whole zone, AXFR-style, one from the current serial or a newer one with the
SOA alone. kdig and ``dnstls query`` ask the same thing; standard output, standard
error and the exit status must be the same after normalising what differs by design
or by chance (see :func:`same`): the clock, elapsed times, message IDs, the TSIG's time
and MAC, ``(TLS)`` where kdig says ``(TCP)`` and the TLS key exchange group.

The scripted primary (tests/fakes/primary.py) breaks transfers in the ways kdig reports
(refusal mid-transfer, no SOA first, a close, garbage, a TSIG that does not verify):
kdig and ``dnstls query`` must print the same there too; a stalled transfer ends in a
timeout, exit status 4 for us where kdig exits 1 (docs/query.md).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from dnstls.cli.main import main
from fakes.primary import SCRIPTS, Primary

from . import peers
from .peers import TestPKI, require
from .test_query_tsig_interop import tsig_normalise

pytestmark = pytest.mark.interop

TIMEOUT = 60
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
WRONG = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTM="
GOOD_KEY = f"tsig-key:{SECRET}"
SERIAL = 2024010101


def zone(origin: str, count: int, serial: int = SERIAL) -> str:
    lines = [f"$ORIGIN {origin}", "$TTL 300",
             f"@ IN SOA ns1 hostmaster {serial} 3600 600 86400 300", "@ IN NS ns1",
             "ns1 IN A 127.0.0.1"]
    lines += [f'r{i} IN TXT "{"record data " * 8}{i}"' for i in range(count)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Primaries:
    host: str
    port: int
    tls_port: int
    pki: TestPKI


@pytest.fixture(scope="module")
def nsd_primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primaries]:
    base = tmp_path_factory.mktemp("xfr")
    pki = peers.make_pki(base / "pki")
    zones = base / "zones"
    zones.mkdir()
    (zones / "big.test.zone").write_text(zone("big.test.", 3000, 7))
    (zones / "signed.test.zone").write_text(zone("signed.test.", 1500, 5))
    tls_port = peers.free_port()
    with peers.peer_group_at(base / "peers") as group:
        nsd = peers.start_nsd(
            group, zone_text=peers.ZONE_TEXT + "\n" + zone("example.test.", 400).split(
                "ns1 IN A 127.0.0.1\n", 1)[1],
            server_extra=f"""\
    ip-address: {peers.LOOPBACK}@{tls_port}
    tls-port: {tls_port}
    tls-service-key: "{pki.key_pem}"
    tls-service-pem: "{pki.cert_pem}"
""",
            extra=f"""\
    provide-xfr: 127.0.0.1 NOKEY
key:
    name: "tsig-key."
    algorithm: hmac-sha256
    secret: "{SECRET}"
zone:
    name: "big.test."
    zonefile: "{zones / 'big.test.zone'}"
    provide-xfr: 127.0.0.1 NOKEY
zone:
    name: "signed.test."
    zonefile: "{zones / 'signed.test.zone'}"
    provide-xfr: 127.0.0.1 tsig-key.
""")
        nsd.wait_ready(lambda: peers.tcp_accepts(peers.LOOPBACK, tls_port))
        yield Primaries(nsd.host, nsd.port, tls_port, pki)


def run_kdig(port: int, options: Sequence[str]) -> tuple[int, str, str]:
    kdig = require("kdig")
    run = subprocess.run([kdig, "@127.0.0.1", "-p", str(port), "+retry=0", "+timeout=5",
                          "+noadflag", "+bufsize=1232", *options],
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return run.returncode, run.stdout, run.stderr


def run_ours(capsys: pytest.CaptureFixture[str], port: int,
             options: Sequence[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["query", "@127.0.0.1", "-p", str(port), "+retry=0", "+timeout=5",
                   *options])
    out, err = capsys.readouterr()
    return status, out, err


def normalise(text: str) -> str:
    """The TSIG normalisation of the TSIG interop tests, and what differs by design over
    TLS: kdig names TLS ``(TCP)``, and the two clients offer key shares of different
    groups first."""
    text = tsig_normalise(text).replace("(TLS)", "(TCP)")
    return re.sub(r"-\(ECDHE-[A-Z0-9]+\)-", "-(ECDHE-G)-", text)


VOLATILE = ("dateString", "dateSeconds", "ID")


def json_normalise(value: Any) -> Any:
    """kdig's +json: the clock, IDs and the TSIG's time and MAC out."""
    if isinstance(value, list):
        return [json_normalise(item) for item in value]
    if isinstance(value, dict):
        if value.get("TYPEname") == "TSIG":
            return {k: v for k, v in value.items() if k not in ("rdataTSIG", "RDATAHEX")}
        return {k: json_normalise(v) for k, v in value.items() if k not in VOLATILE}
    return value


def same(theirs: tuple[int, str, str], ours: tuple[int, str, str], *,
         json_output: bool = False, status: int | None = None) -> None:
    assert ours[0] == (theirs[0] if status is None else status), ours[2]
    if json_output:
        assert json_normalise(json.loads(ours[1])) == json_normalise(json.loads(theirs[1]))
    else:
        assert normalise(ours[1]) == normalise(theirs[1])
    assert normalise(ours[2]) == normalise(theirs[2])


DISPLAY = [[], ["+noall", "+answer"], ["+noall"], ["+short"], ["+short", "+all"],
           ["+multiline"], ["+nostats"], ["+noheader"], ["+qr"], ["+qr", "+nostats"],
           ["+noclass", "+nottl"], ["+generic"], ["+nocomments", "+noquestion"]]


@pytest.mark.parametrize("display", DISPLAY, ids=" ".join)
def test_axfr_over_several_messages_as_kdig(display: list[str], nsd_primary: Primaries,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    options = ["AXFR", "example.test", *display]
    theirs = run_kdig(nsd_primary.port, options)
    assert theirs[0] == 0, theirs[2]
    if "+noall" not in display and "+nostats" not in display and "+short" not in display:
        assert re.search(r"\(([2-9]|\d\d) messages, 418 records\)", theirs[1]), theirs[1][-300:]
    same(theirs, run_ours(capsys, nsd_primary.port, options))


@pytest.mark.parametrize("options", [
    ["AXFR", "big.test"],
    ["IXFR=2024010101", "example.test"],  # up to date: the SOA alone
    ["-t", "IXFR=2024010102", "example.test"],  # newer than the server's: the same
    ["example.test", "IXFR=2024010100"],  # older: nsd 4.6.1 sends the whole zone
    ["example.test", "ixfr=1", "+qr", "+noall", "+stats"],
    ["AXFR", "nonexist.test"],  # NOTAUTH
    ["AXFR", "signed.test"],  # REFUSED: no key
    ["+notcp", "AXFR", "example.test"],  # NOTIMPL over UDP
    ["+notcp", "IXFR=2024010101", "example.test"],  # up to date over UDP
    ["+tcp", "+notcp", "-t", "AXFR", "example.test"],
], ids=" ".join)
def test_transfers_as_kdig(options: list[str], nsd_primary: Primaries,
                           capsys: pytest.CaptureFixture[str]) -> None:
    same(run_kdig(nsd_primary.port, options), run_ours(capsys, nsd_primary.port, options))


KEYS = {"good": GOOD_KEY, "wrong-secret": f"hmac-sha256:tsig-key:{WRONG}",
        "unknown-key": f"other-key.:{SECRET}"}


@pytest.mark.parametrize("display", [[], ["+multiline", "+noall"], ["+notsig"],
                                     ["+short"], ["+qr"]], ids=" ".join)
@pytest.mark.parametrize("key", list(KEYS), ids=list(KEYS))
def test_signed_transfers_as_kdig(key: str, display: list[str], nsd_primary: Primaries,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """nsd signs every message of the transfer (RFC 8945 §5.3.1): each is verified; a
    wrong secret or an unknown key is refused with BADSIG or BADKEY."""
    options = ["-y", KEYS[key], "AXFR", "signed.test", *display]
    theirs = run_kdig(nsd_primary.port, options)
    if key == "good":
        assert theirs[0] == 0
        assert display or theirs[1].count("NOERROR 0\n") > 2  # a TSIG per message
    else:
        assert theirs[0] == 1 and ("BADSIG" in theirs[2] or "BADKEY" in theirs[2])
    same(theirs, run_ours(capsys, nsd_primary.port, options))


def test_signed_ixfr_as_kdig(nsd_primary: Primaries, capsys: pytest.CaptureFixture[str]) -> None:
    options = ["-y", GOOD_KEY, "signed.test", "IXFR=4", "+qr"]
    same(run_kdig(nsd_primary.port, options), run_ours(capsys, nsd_primary.port, options))


@pytest.mark.parametrize("options", [
    ["AXFR", "example.test", "+json"],
    ["AXFR", "big.test", "+json"],
    ["-y", GOOD_KEY, "AXFR", "signed.test", "+json"],
    ["AXFR", "signed.test", "+json"],  # the refusal is in the array
    ["-y", f"tsig-key:{WRONG}", "AXFR", "signed.test", "+json"],
    ["+json", "+qr", "IXFR=2024010100", "example.test"],
    ["+json", "+qr", "-y", GOOD_KEY, "IXFR=5", "signed.test"],
], ids=" ".join)
def test_json_as_kdig(options: list[str], nsd_primary: Primaries,
                      capsys: pytest.CaptureFixture[str]) -> None:
    same(run_kdig(nsd_primary.port, options), run_ours(capsys, nsd_primary.port, options),
         json_output=True)


def tls_options(pki: TestPKI) -> dict[str, list[str]]:
    return {"opportunistic": ["+tls"],
            "ca-and-name": [f"+tls-ca={pki.ca_pem}", "+tls-host=dns.test"],
            "pin": [f"+tls-pin={pki.pin}"]}


@pytest.mark.parametrize("auth", ["opportunistic", "ca-and-name", "pin"])
@pytest.mark.parametrize("options", [
    ["AXFR", "example.test"], ["AXFR", "big.test", "+noall", "+stats"],
    ["-y", GOOD_KEY, "AXFR", "signed.test", "+qr"], ["IXFR=2024010101", "example.test"],
    ["AXFR", "signed.test"],
], ids=" ".join)
def test_xfr_over_tls_as_kdig(auth: str, options: list[str], nsd_primary: Primaries,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """XFR-over-TLS (RFC 9103) from nsd's TLS port, authenticated as any query."""
    full = [*tls_options(nsd_primary.pki)[auth], *options]
    theirs = run_kdig(nsd_primary.tls_port, full)
    ours = run_ours(capsys, nsd_primary.tls_port, full)
    same(theirs, ours)
    if theirs[0] == 0:
        assert "(TLS)" in ours[1]


def test_xfr_over_tls_refuses_a_server_that_fails_authentication(
        nsd_primary: Primaries, capsys: pytest.CaptureFixture[str]) -> None:
    """kdig: ``;; WARNING: TLS, handshake failed``, exit 1; ours names the pins, exit 3
    (docs/query.md), nothing sent."""
    options = [f"+tls-pin={nsd_primary.pki.wrong_pin}", "AXFR", "example.test"]
    theirs = run_kdig(nsd_primary.tls_port, options)
    ours = run_ours(capsys, nsd_primary.tls_port, options)
    assert (theirs[0], theirs[1]) == (1, "")
    assert (ours[0], ours[1]) == (3, "")
    assert "SPKI pin mismatch" in ours[2]


@pytest.fixture
def scripted() -> Iterator[Callable[[str], Primary]]:
    started: list[Primary] = []

    def start(name: str) -> Primary:
        server = Primary(SCRIPTS[name])
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.mark.parametrize("script, options", [
    ("axfr", ["AXFR", "z.test"]), ("ixfr", ["IXFR=8", "z.test"]),
    ("soa", ["IXFR=9", "z.test"]), ("soa", ["AXFR", "z.test", "+timeout=1"]),
    ("refused", ["AXFR", "z.test"]), ("refused", ["AXFR", "z.test", "+json"]),
    ("midrefused", ["AXFR", "z.test"]), ("nosoa", ["IXFR=3", "z.test"]),
    ("close", ["AXFR", "z.test"]), ("garbage", ["AXFR", "z.test"]),
    ("cut", ["IXFR=1", "z.test"]), ("hang", ["AXFR", "z.test", "+timeout=1"]),
    ("badsig", ["-y", GOOD_KEY, "AXFR", "z.test"]),
    ("unsigned", ["-y", GOOD_KEY, "AXFR", "z.test"]),
    ("badsig", ["-y", GOOD_KEY, "AXFR", "z.test", "+json"]),
], ids=lambda value: value if isinstance(value, str) else " ".join(value))
def test_broken_transfers_as_kdig(script: str, options: list[str],
                                  scripted: Callable[[str], Primary],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    server = scripted(script)
    theirs = run_kdig(server.port, options)
    ours = run_ours(capsys, server.port, options)
    timeout = "response timeout" in theirs[2]
    same(theirs, ours, json_output="+json" in options, status=4 if timeout else None)
