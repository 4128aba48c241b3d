"""``dnstls query`` and ``dnstls pin --server`` against real DoT servers on loopback.

Servers: Unbound, Knot Resolver and dnsdist (each backed by nsd, authoritative for the
test zone) and ``dnstls serve --no-upstream --local-zone``. For each: authentication by
CA and name (``+tls-ca=FILE +tls-host=dns.test``), by the right pin, a wrong pin (exit 1
naming the expected and the presented pins, no answer), and several questions pipelined
over one connection; ``-d`` shows the pin of the presented chain. ``dnstls pin --server``
must print the pins OpenSSL computes from what ``openssl s_client -showcerts`` received::

    openssl x509 -pubkey -noout | openssl pkey -pubin -outform der \\
        | openssl dgst -sha256 -binary | base64

Peers missing: skipped, except under CI (``CI=true``), where the harness fails the test.
"""

from __future__ import annotations

import contextlib
import json
import re
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import dns.message
import pytest

from dnstls.cli.main import main

from .peers import ZONE_DATA, Peer, TestPKI, dnstls_command, require

pytestmark = pytest.mark.interop

SERVERS = ["unbound_dot", "kresd_dot", "dnsdist_dot", "dnstls_serve"]
QUESTIONS = [("www.example.test.", "A"), ("www.example.test.", "AAAA"),
             ("example.test.", "MX"), ("txt.example.test.", "TXT"),
             ("big.example.test.", "TXT")]
TIMEOUT = 30


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, zone_file: Path) -> Peer:
    """Each DoT server of the harness in turn."""
    if request.param == "dnstls_serve":
        start: Callable[..., Peer] = request.getfixturevalue("dnstls_serve")
        return start(zone=zone_file)
    peer: Peer = request.getfixturevalue(request.param)
    return peer


def query(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main(["query", *map(str, argv), "+time=5"])
    out, err = capsys.readouterr()
    return status, out, err


def answers(out: str) -> dict[tuple[str, str], list[str]]:
    """(owner, type) -> rdata of the answer sections of kdig-layout output."""
    found: dict[tuple[str, str], list[str]] = {}
    section = None
    for line in out.splitlines():
        if line.startswith(";; ") and line.endswith(" SECTION:"):
            section = line[3:-len(" SECTION:")]
        elif line and not line.startswith(";;") and section == "ANSWER":
            owner, _ttl, _class, rtype, rdata = line.split(None, 4)
            found.setdefault((owner, rtype), []).append(rdata)
    return found


def test_query_verified_by_ca_and_name_pipelined(server: Peer, pki: TestPKI,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    groups = [token for name, rtype in QUESTIONS for token in (name, rtype)]
    status, out, err = query(capsys, f"@{server.host}", "-p", str(server.port),
                             f"+tls-ca={pki.ca_pem}", f"+tls-host={pki.hostname}", *groups)
    assert status == 0, err
    assert out.count(";; ->>HEADER<<-") == len(QUESTIONS)
    assert out.count("status: NOERROR") == len(QUESTIONS), out
    assert out.count(f";; From {server.host}@{server.port}(TLS) in ") == len(QUESTIONS)
    assert ";; TLS session (TLS1." in out
    got = answers(out)
    for key in QUESTIONS:
        assert sorted(got[key]) == sorted(ZONE_DATA[key]), (key, out)


def test_query_by_pin_and_debug_chain(server: Peer, pki: TestPKI,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = query(capsys, "-d", f"@{server.host}:{server.port}",
                             f"+tls-pin={pki.pin}", "+json", "www.example.test", "A")
    assert status == 0, err
    document = json.loads(out)
    assert document["RCODE"] == 0
    assert [rr["rdataA"] for rr in document["answerRRs"]] == ZONE_DATA[
        ("www.example.test.", "A")]
    assert document["server"]["tls"]["version"].startswith("TLSv1.")
    assert f";; DEBUG:      SHA-256 PIN: {pki.pin}, MATCH" in err.splitlines()
    assert "TLS, skipping certificate verification" in err


def test_query_with_ca_and_pin_both_checked(server: Peer, pki: TestPKI,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = query(capsys, "-d", f"@{server.host}:{server.port}",
                             f"+tls-ca={pki.ca_pem}", f"+tls-host={pki.hostname}",
                             f"+tls-pin={pki.wrong_pin}", f"+tls-pin={pki.pin}",
                             "+short", "www.example.test", "AAAA")
    assert status == 0, err
    assert out.splitlines() == ZONE_DATA[("www.example.test.", "AAAA")]
    assert ";; DEBUG: TLS, The certificate is trusted." in err


def test_query_wrong_pin_fails_without_answer(server: Peer, pki: TestPKI,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = query(capsys, f"@{server.host}:{server.port}",
                             f"+tls-pin={pki.wrong_pin}", "www.example.test")
    assert status == 3  # TLS authentication failed
    assert out == ""
    assert err.splitlines() == [
        f"dnstls query: error: {server.host}@{server.port}(TLS): SPKI pin mismatch: "
        f"expected one of {pki.wrong_pin}; server presented {pki.pin}"]


def test_query_wrong_name_and_untrusted_fail(server: Peer, pki: TestPKI,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = query(capsys, f"@{server.host}:{server.port}",
                             f"+tls-ca={pki.ca_pem}", "+tls-host=other.test", "www.example.test")
    assert (status, out) == (3, "")
    assert "Hostname mismatch" in err and err.count("\n") == 1
    status, out, err = query(capsys, f"@{server.host}:{server.port}", "+tls-ca",
                             f"+tls-host={pki.hostname}", "www.example.test")
    assert (status, out) == (3, "")
    assert "unable to get local issuer certificate" in err and err.count("\n") == 1


# ---------------------------------------------------------------- dnstls pin --server vs openssl


def openssl_presented_pins(host: str, port: int, workdir: Path) -> list[str]:
    """Pins of the chain ``openssl s_client -showcerts`` received, by the shell pipeline."""
    openssl = require("openssl")
    run = subprocess.run([openssl, "s_client", "-connect", f"{host}:{port}", "-servername",
                          "dns.test", "-alpn", "dot", "-showcerts"],
                         input=b"", capture_output=True, timeout=TIMEOUT, check=False)
    certs = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?",
                       run.stdout, re.S)
    assert certs, run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    pins = []
    for index, pem in enumerate(certs):
        path = workdir / f"presented-{index}.pem"
        path.write_bytes(pem)
        pipeline = ('"$OPENSSL" x509 -pubkey -noout -in "$CERT" '
                    '| "$OPENSSL" pkey -pubin -outform der '
                    '| "$OPENSSL" dgst -sha256 -binary | base64')
        piped = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], text=True,
                               capture_output=True, timeout=TIMEOUT, check=False,
                               env={"PATH": "/usr/bin:/bin", "OPENSSL": openssl,
                                    "CERT": str(path)})
        assert piped.returncode == 0, piped.stderr
        pins.append(piped.stdout.strip())
    return pins


def test_pin_server_equals_openssl(server: Peer, pki: TestPKI, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    expected = openssl_presented_pins(server.host, server.port, tmp_path)
    assert expected[0] == pki.pin
    status = main(["pin", "--server", f"{server.host}:{server.port}", "--name", pki.hostname,
                   "--ca-file", str(pki.ca_pem), "--format", "kdig"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.split() == [f"+tls-pin={pin}" for pin in expected]
    status = main(["pin", "--server", f"{server.host}:{server.port}", "--name", pki.hostname,
                   "--ca-file", str(pki.ca_pem)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert re.findall(r"SHA-256 PIN: (\S+)", out) == expected
    assert f"# chain trusted against {pki.ca_pem} for {pki.hostname}" in out
    assert re.search(r"^# \S+: TLSv1\.3, TLS_\w+, (X25519|SECP256R1), ECDSA-SECP256R1-SHA256, "
                     r"(ALPN dot|no ALPN), SNI dns\.test$", out, re.M), out


# ---------------------------------------------------------------- the TLS session line vs kdig


def session_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(";; TLS session ")]
    assert len(lines) == 1, out
    return lines[0]


def test_tls_session_line_names_what_kdig_names(server: Peer, pki: TestPKI,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Against each real server: the signature scheme as kdig (GnuTLS) names it and a
    key exchange group. The group itself may differ: kdig offers a SECP256R1 key share
    first and Python's client X25519, and each server takes the client's choice."""
    kdig = require("kdig")
    run = subprocess.run([kdig, f"@{server.host}", "-p", str(server.port),
                          f"+tls-ca={pki.ca_pem}", f"+tls-hostname={pki.hostname}",
                          "www.example.test", "A"], capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    theirs = session_line(run.stdout)
    status, out, err = query(capsys, f"@{server.host}", "-p", str(server.port),
                             f"+tls-ca={pki.ca_pem}", f"+tls-host={pki.hostname}",
                             "www.example.test", "A")
    assert status == 0, err
    ours = session_line(out)
    version, group, signature, _cipher = ours[len(";; TLS session "):].split(")-(")
    assert version == "(TLS1.3", ours
    assert group in ("ECDHE-X25519", "ECDHE-SECP256R1"), ours
    assert signature == theirs.split(")-(")[2] == "ECDSA-SECP256R1-SHA256", (ours, theirs)


def _key_and_cert(kind: str, directory: Path) -> tuple[Path, Path]:
    openssl = require("openssl")
    newkey = {"rsa": ["-newkey", "rsa:2048"], "rsa-pss": ["-newkey", "rsa-pss"],
              "ed25519": ["-newkey", "ed25519"],
              "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]}[kind]
    key, cert = directory / f"{kind}.key", directory / f"{kind}.pem"
    subprocess.run([openssl, "req", "-x509", *newkey, "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=dns.test"],
                   capture_output=True, timeout=TIMEOUT, check=True)
    return key, cert


class _Replier(socketserver.BaseRequestHandler):
    """One DoT connection: every query answered with an empty NOERROR."""

    def handle(self) -> None:
        context: ssl.SSLContext = self.server.context  # type: ignore[attr-defined]
        self.request.settimeout(TIMEOUT)
        with contextlib.suppress(OSError, EOFError, ValueError), \
                context.wrap_socket(self.request, server_side=True) as tls:
            stream = tls.makefile("rb")
            while header := stream.read(2):
                query = dns.message.from_wire(stream.read(int.from_bytes(header, "big")))
                wire = dns.message.make_response(query).to_wire()
                tls.sendall(len(wire).to_bytes(2, "big") + wire)


@pytest.mark.parametrize("kind", ["p384", "rsa", "rsa-pss", "ed25519"])
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_session_line_equals_kdigs(kind: str, version: ssl.TLSVersion, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A server that allows one group only (secp384r1), so that kdig and we must agree on
    it: the whole ``;; TLS session`` line is kdig's, for ECDSA P-384, RSA (PSS with an
    rsaEncryption key), RSASSA-PSS and Ed25519 keys over TLS 1.2 and 1.3."""
    kdig = require("kdig")
    key, cert = _key_and_cert(kind, tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.minimum_version = context.maximum_version = version
    context.set_ecdh_curve("secp384r1")
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Replier) as tcp:
        tcp.daemon_threads = True
        tcp.context = context  # type: ignore[attr-defined]
        thread = threading.Thread(target=tcp.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            port = str(tcp.server_address[1])
            run = subprocess.run([kdig, "@127.0.0.1", "-p", port, "+tls", "example.test"],
                                 capture_output=True, text=True, timeout=TIMEOUT, check=False)
            status, out, err = query(capsys, "@127.0.0.1", "-p", port, "+tls", "example.test")
        finally:
            tcp.shutdown()
            thread.join(TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert status == 0, err
    tls_name = "TLS1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLS1.3"
    assert session_line(out).startswith(f";; TLS session ({tls_name})-(ECDHE-SECP384R1)-(")
    assert session_line(out) == session_line(run.stdout)


# ---------------------------------------------------------------- EDNS options sent, vs kdig


class _Recorder(socketserver.BaseRequestHandler):
    """A UDP responder that keeps each query it is sent and answers it empty."""

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        self.server.queries.append(query)  # type: ignore[attr-defined]
        sock.sendto(dns.message.make_response(query).to_wire(), self.client_address)


def _sent(options: list[str], command: list[str]) -> dns.message.Message:
    with socketserver.UDPServer(("127.0.0.1", 0), _Recorder) as udp:
        udp.queries = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=udp.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            run = subprocess.run([*command, "@127.0.0.1", "-p", str(udp.server_address[1]),
                                  "example.test", "+retry=0", "+time=5", *options],
                                 capture_output=True, text=True, timeout=TIMEOUT, check=False)
        finally:
            udp.shutdown()
            thread.join(TIMEOUT)
        assert run.returncode == 0, run.stdout + run.stderr
        queries: list[dns.message.Message] = udp.queries  # type: ignore[attr-defined]
        assert len(queries) == 1, queries
        return queries[0]


def _options(query: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.otype), (o.to_wire() or b"").hex()) for o in query.options]


@pytest.mark.parametrize("options", [
    ["+nsid"], ["+subnet=192.0.2.0"], ["+subnet=192.0.2.0/24"], ["+subnet=2001:db8::/32"],
    ["+subnet=0.0.0.0/0"], ["+cookie=0011223344556677"],
    ["+ednsopt=65001:abcd", "+ednsopt=65002"], ["+nsid", "+ednsopt=65001:ab", "+noednsopt"],
    ["+nsid", "+subnet=198.51.100.0/24", "+cookie=0011223344556677", "+ednsopt=65001:ff"],
])
def test_edns_options_sent_are_kdigs(options: list[str]) -> None:
    """The options of the query on the wire, byte for byte what kdig 3.2.6 sends."""
    kdig = require("kdig")
    dnstls = [*dnstls_command(), "query"]
    assert _options(_sent(options, dnstls)) == _options(_sent(options, [kdig]))


def _edns(query: dns.message.Message) -> tuple[int, bool, list[tuple[int, str]]]:
    """The EDNS version (-1: no OPT), the DO bit and the options (the UDP size differs
    on purpose: kdig asks for 4096, we for 1232)."""
    return (query.edns, bool(query.edns >= 0 and query.ednsflags & dns.flags.DO),
            _options(query))


@pytest.mark.parametrize("options", [
    ["+noedns"], ["+edns"], ["+edns=1"], ["+edns=255"], ["+edns=3", "+nsid"],
    ["+nsid", "+edns=2"], ["+nsid", "+noedns"], ["+noedns", "+nsid"],
    ["+noedns", "+dnssec"], ["+dnssec", "+noedns"], ["+edns=3", "+noedns"],
    ["+ednsopt=65001:aa", "+noedns"], ["+noedns", "+ednsopt=65001:aa"],
    ["+subnet=192.0.2.0/24", "+noedns"], ["+noedns", "+subnet=192.0.2.0/24"],
    ["+cookie=0011223344556677", "+noedns"], ["+noedns", "+cookie=0011223344556677"],
    ["+noedns", "+edns"],
])
def test_edns_and_noedns_as_kdig(options: list[str]) -> None:
    """+noedns sends no OPT and forgets the options that live in it, a later option
    that needs one brings EDNS 0 back, +edns=N sets the version: as kdig 3.2.6."""
    kdig = require("kdig")
    dnstls = [*dnstls_command(), "query"]
    assert _edns(_sent(options, dnstls)) == _edns(_sent(options, [kdig]))


def test_bufsize_is_forgotten_by_noedns_and_brings_edns_back() -> None:
    kdig = require("kdig")
    dnstls = [*dnstls_command(), "query"]
    for command in (dnstls, [kdig]):
        assert _sent(["+noedns", "+bufsize=512"], command).payload == 512
        assert _sent(["+bufsize=512", "+noedns"], command).edns == -1


def test_header_flags_cookie_and_bufsize_as_kdig() -> None:
    kdig = require("kdig")
    dnstls = [*dnstls_command(), "query"]
    flags = ["+aaflag", "+adflag", "+raflag", "+tcflag", "+zflag"]
    assert _sent(flags, dnstls).flags == _sent(flags, [kdig]).flags
    ours, theirs = _sent(["+cookie"], dnstls), _sent(["+cookie"], [kdig])
    assert [(code, len(data)) for code, data in _options(ours)] == [
        (code, len(data)) for code, data in _options(theirs)] == [(10, 16)]  # 8 random bytes
    assert _sent(["+bufsize=4000"], dnstls).payload == 4000
