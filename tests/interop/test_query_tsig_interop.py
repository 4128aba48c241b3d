"""``dnstls query -y``/``-k`` (TSIG, RFC 8945) against the real kdig 3.2.6.

nsd knows the key ``tsig-key.`` (hmac-sha256): it answers a query signed with it with a
signed answer, and a query signed with a wrong secret or an unknown key with BADSIG or
BADKEY (unsigned, no question). kdig and ``dnstls query`` ask it the same question with
the same key, over UDP and TCP: standard output, standard error (kdig's warnings) and the
exit status must be the same, after normalising what differs by design or by chance --
the message ID, the clock, and in the TSIG record the time signed, the MAC and the
original ID (each client signs its own query at its own second).

A server that does not sign (``dnstls serve`` over DoT) answers unsigned: both print
the answer and warn ``expected a TSIG or SIG(0)``, exit 0.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from dnstls.cli.main import main

from . import peers
from .peers import Peer, TestPKI, require
from .test_query_display_interop import normalise

pytestmark = pytest.mark.interop

TIMEOUT = 30
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
WRONG = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTM="
NSD_KEY = f"""\
key:
    name: "tsig-key."
    algorithm: hmac-sha256
    secret: "{SECRET}"
"""
QNAME = "www.example.test."


@pytest.fixture(scope="module")
def tsig_nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    with peers.peer_group_at(tmp_path_factory.mktemp("tsig") / "peers") as group:
        yield peers.start_nsd(group, extra=NSD_KEY)


def tsig_normalise(text: str) -> str:
    """:func:`normalise`, and the TSIG record's time, MAC and original ID, one line or
    +multiline."""
    text = normalise(text)
    text = re.sub(r"(hmac-[a-z0-9.-]+\.) \d+ 300 (\d+) \S+ \d+ ", r"\1 T 300 \2 MAC ID ",
                  text)
    text = re.sub(r"(hmac-[a-z0-9.-]+\.) \d+ 300 0 \d+ ", r"\1 T 300 0 ID ", text)
    text = re.sub(r"(hmac-[a-z0-9.-]+\.) \d+ 300 \(", r"\1 T 300 (", text)
    text = re.sub(r"^(\t+)(\d+) \S+$", r"\1\2 MAC", text, flags=re.M)
    return re.sub(r"^(\t+)\d+ ([A-Z]+ \d+)$", r"\1ID \2", text, flags=re.M)


def run_kdig(host: str, port: int, options: Sequence[str]) -> tuple[int, str, str]:
    kdig = require("kdig")
    run = subprocess.run([kdig, f"@{host}", "-p", str(port), "+retry=0", "+timeout=5",
                          "+noadflag", "+bufsize=1232", *options, QNAME],
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return run.returncode, run.stdout, run.stderr


def run_ours(capsys: pytest.CaptureFixture[str], host: str, port: int,
             options: Sequence[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["query", f"@{host}", "-p", str(port), "+retry=0", "+timeout=5",
                   *options, QNAME])
    out, err = capsys.readouterr()
    return status, out, err


def _same(theirs: tuple[int, str, str], ours: tuple[int, str, str]) -> None:
    assert ours[0] == theirs[0], ours[2]
    assert tsig_normalise(ours[1]) == tsig_normalise(theirs[1])
    assert ours[2] == theirs[2]


KEYS = {"good": f"tsig-key:{SECRET}", "wrong-secret": f"hmac-sha256:tsig-key:{WRONG}",
        "unknown-key": f"other-key.:{SECRET}"}


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
@pytest.mark.parametrize("key", list(KEYS), ids=list(KEYS))
@pytest.mark.parametrize("display", [[], ["+multiline"], ["+noall", "+answer", "+tsig"],
                                     ["+short"], ["+notsig"], ["+qr", "+nostats"],
                                     ["+generic", "+noall", "+tsig"]], ids=" ".join)
def test_signed_query_as_kdig(transport: str, key: str, display: list[str], tsig_nsd: Peer,
                              capsys: pytest.CaptureFixture[str]) -> None:
    options = [transport, "+norec", "-y", KEYS[key], *display]
    theirs = run_kdig(tsig_nsd.host, tsig_nsd.port, options)
    assert theirs[0] == 0, theirs[1] + theirs[2]
    if key == "good":
        assert "NOERROR 0" in theirs[1] or display in (["+short"], ["+notsig"]) \
            or "+generic" in display
        assert theirs[2] == ""
    else:
        assert "failed to verify TSIG" in theirs[2]
    ours = run_ours(capsys, tsig_nsd.host, tsig_nsd.port, options)
    if "+generic" in display:  # the record's hex holds the time and MAC: compare the rest
        assert [line.split("\\#")[0] for line in ours[1].splitlines()] == \
            [line.split("\\#")[0] for line in theirs[1].splitlines()]
        return
    _same(theirs, ours)


def test_key_from_a_file_as_kdig(tsig_nsd: Peer, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(f"hmac-sha256:tsig-key:{SECRET}\n")
    options = ["+norec", "-k", str(keyfile), "+noall", "+answer", "+tsig"]
    theirs = run_kdig(tsig_nsd.host, tsig_nsd.port, options)
    assert "NOERROR 0" in theirs[1]
    _same(theirs, run_ours(capsys, tsig_nsd.host, tsig_nsd.port, options))


def test_unsigned_answers_over_dot_warn_as_kdig(dnstls_serve: Callable[..., Peer],
                                               pki: TestPKI, zone_file: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """dnstls serve does not do TSIG: its answer to a signed query is not signed, and
    both clients print it with kdig's warning and exit 0."""
    server = dnstls_serve(zone=zone_file)
    options = ["+tls", "+nopadding", "-y", KEYS["good"], "+noall", "+answer", "+tsig"]
    theirs = run_kdig(server.host, server.port, options)
    assert theirs[0] == 0 and "expected a TSIG or SIG(0)" in theirs[2], theirs[2]
    ours = run_ours(capsys, server.host, server.port, options)
    assert ours[0] == 0
    assert ours[1] == theirs[1]
    # kdig names TLS "TCP" in its messages (docs/query.md): ours says TLS
    assert ours[2] == theirs[2].replace("(TCP)", "(TLS)")
