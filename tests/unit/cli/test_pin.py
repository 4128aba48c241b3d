"""``dnstls pin``: files, --server, --next-key and the pinset formats, through ``main()``.

Certificates and keys are generated per run with ``cryptography`` (fixed names, so the
expected output is literal) and trustme; nothing is committed.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
import ssl
import stat
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from dnstls.cli.main import main
from dnstls.cli.pin import PinEntry, render_pinset
from dnstls.keys import load_pinned_keys
from dnstls.proto.pins import spki_pin, spki_pin_of_key
from dnstls.upstreams import upstream_from_table
from fakes import issue_chain

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def _name(cn: str | None, org: str = "Example") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_cert(key: CertificateIssuerPrivateKeyTypes, subject: x509.Name, *,
              issuer: x509.Name | None = None,
              issuer_key: CertificateIssuerPrivateKeyTypes | None = None,
              ca: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    signer = issuer_key or key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, algorithm))


KEYS: dict[str, CertificateIssuerPrivateKeyTypes] = {}


def key_of(kind: str) -> CertificateIssuerPrivateKeyTypes:
    """One key per type per run (RSA generation is slow)."""
    if kind not in KEYS:
        KEYS[kind] = {"rsa": lambda: rsa.generate_private_key(65537, 2048),
                      "ec": lambda: ec.generate_private_key(ec.SECP384R1()),
                      "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()
    return KEYS[kind]


@pytest.fixture
def chain_files(tmp_path: Path) -> dict[str, Path | str]:
    """chain.pem (leaf CN=dns.example + CA CN=Test CA), ca.pem, and the two pins."""
    ca_key, leaf_key = key_of("ec"), ec.generate_private_key(ec.SECP256R1())
    ca = make_cert(ca_key, _name("Test CA"), ca=True)
    leaf = make_cert(leaf_key, _name("dns.example"), issuer=ca.subject, issuer_key=ca_key)
    (tmp_path / "chain.pem").write_bytes(leaf.public_bytes(PEM) + ca.public_bytes(PEM))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(PEM))
    (tmp_path / "leaf.key").write_bytes(leaf_key.private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return {"chain": tmp_path / "chain.pem", "ca": tmp_path / "ca.pem",
            "key": tmp_path / "leaf.key", "leaf_pin": spki_pin(leaf), "ca_pin": spki_pin(ca)}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main(["pin", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


# --- files -----------------------------------------------------------------------------

def test_chain_file_prints_every_certificate(capsys: pytest.CaptureFixture[str],
                                             chain_files: dict[str, Path | str]) -> None:
    status, out, err = run(capsys, chain_files["chain"], chain_files["key"])
    assert (status, err) == (0, "")
    assert out == (f"{chain_files['leaf_pin']}  CN=dns.example (chain.pem #1)\n"
                   f"{chain_files['ca_pin']}  CA CN=Test CA (chain.pem #2)\n"
                   f"{chain_files['leaf_pin']}  private key (leaf.key)\n")


def test_dash_reads_standard_input(capsys: pytest.CaptureFixture[str],
                                   chain_files: dict[str, Path | str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # openssl s_client ... | openssl x509 | dnstls pin -  (as openssl reads "-")
    chain = Path(chain_files["chain"]).read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(chain)))
    status, out, err = run(capsys, "-", chain_files["key"])
    assert (status, err) == (0, "")
    assert out == (f"{chain_files['leaf_pin']}  CN=dns.example (stdin #1)\n"
                   f"{chain_files['ca_pin']}  CA CN=Test CA (stdin #2)\n"
                   f"{chain_files['leaf_pin']}  private key (leaf.key)\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"junk\n")))
    assert run(capsys, "-") == (2, "", "dnstls pin: error: stdin: not a PEM or DER "
                                       "certificate, public key or private key\n")


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_every_encoding_of_a_key_gives_the_certificate_pin(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = key_of(kind)
    cert = make_cert(key, _name(f"{kind}.example"))
    public = key.public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    files = {
        "cert.pem": cert.public_bytes(PEM),
        "cert.der": cert.public_bytes(DER),
        "pub.pem": public.public_bytes(PEM, spki),
        "pub.der": public.public_bytes(DER, spki),
        "key.pem": key.private_bytes(PEM, pkcs8, none),
        "key.der": key.private_bytes(DER, pkcs8, none),
    }
    if kind != "ed25519":
        files["key-traditional.pem"] = key.private_bytes(
            PEM, serialization.PrivateFormat.TraditionalOpenSSL, none)
    if kind == "rsa":
        files["pub-pkcs1.pem"] = public.public_bytes(PEM, serialization.PublicFormat.PKCS1)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    status, out, err = run(capsys, *(tmp_path / name for name in files))
    assert (status, err) == (0, "")
    pin = spki_pin(cert)
    assert pin == spki_pin_of_key(public)
    labels = {
        "cert.pem": f"CN={kind}.example", "cert.der": f"CN={kind}.example",
        "pub.pem": "public key", "pub.der": "public key", "pub-pkcs1.pem": "public key",
        "key.pem": "private key", "key.der": "private key",
        "key-traditional.pem": "private key",
    }
    assert out.splitlines() == [f"{pin}  {labels[name]} ({name})" for name in files]


def test_ec_key_with_parameters_block_and_csr(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    (tmp_path / "ecparam.key").write_bytes(params + key.private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name("next.example"))
           .sign(key, hashes.SHA256()))
    (tmp_path / "next.csr").write_bytes(csr.public_bytes(PEM))
    (tmp_path / "next.csr.der").write_bytes(csr.public_bytes(DER))
    status, out, _ = run(capsys, tmp_path / "ecparam.key", tmp_path / "next.csr",
                         tmp_path / "next.csr.der")
    pin = spki_pin_of_key(key.public_key())
    assert status == 0
    assert out == (f"{pin}  private key (ecparam.key)\n"
                   f"{pin}  certificate request CN=next.example (next.csr)\n"
                   f"{pin}  certificate request CN=next.example (next.csr.der)\n")


def test_certificate_without_cn_shows_subject(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cert = make_cert(key_of("ec"), _name(None, org="No CN Inc"))
    (tmp_path / "nocn.pem").write_bytes(cert.public_bytes(PEM))
    status, out, _ = run(capsys, tmp_path / "nocn.pem")
    assert status == 0
    assert out == f"{spki_pin(cert)}  O=No CN Inc (nocn.pem)\n"


def _bad_files(tmp_path: Path) -> dict[str, tuple[bytes | None, str]]:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    return {
        "missing.pem": (None, "No such file or directory"),
        "empty.pem": (b"", "not a PEM or DER certificate, public key or private key"),
        "garbage.bin": (b"\x00\x01garbage", "not a PEM or DER certificate"),
        "truncated.pem": (b"-----BEGIN CERTIFICATE-----\nMIIB\n",
                          "truncated PEM block (no matching END line)"),
        "encrypted.pem": (encrypted, "encrypted private key; give its certificate or "
                                     "public key instead"),
        "params.pem": (b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
                       b"-----END EC PARAMETERS-----\n",
                       "no certificate or key in this PEM file"),
        "crl.pem": (b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n",
                    "PEM block 1 (PKCS7): unsupported PEM block 'PKCS7'"),
        "broken.pem": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                       "PEM block 1 (CERTIFICATE): "),
    }


def test_unreadable_or_unparseable_files_exit_2_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (data, reason) in _bad_files(tmp_path).items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        status, out, err = run(capsys, path)
        assert status == 2, name
        assert out == ""
        assert err.startswith(f"dnstls pin: error: {path}: {reason}"), err
        assert err.count("\n") == 1, err


def test_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, tmp_path)
    assert status == 2
    assert err == f"dnstls pin: error: {tmp_path}: Is a directory\n"


# --- formats ---------------------------------------------------------------------------

def test_formats_from_files(chain_files: dict[str, Path | str],
                            capsys: pytest.CaptureFixture[str]) -> None:
    leaf, ca = chain_files["leaf_pin"], chain_files["ca_pin"]
    outputs = {fmt: run(capsys, "--format", fmt, chain_files["chain"]) for fmt in
               ("dnstls", "stubby", "kresd", "kdig")}
    assert all(status == 0 and err == "" for status, _, err in outputs.values())
    assert outputs["dnstls"][1] == (
        "tls_pubkey_pinset = [\n"
        f'  {{digest = "sha256", value = "{leaf}"}},  # CN=dns.example (chain.pem #1)\n'
        f'  {{digest = "sha256", value = "{ca}"}},  # CA CN=Test CA (chain.pem #2)\n'
        "]\n")
    assert outputs["stubby"][1] == (
        "tls_pubkey_pinset:\n"
        "  # CN=dns.example (chain.pem #1)\n"
        '  - digest: "sha256"\n'
        f"    value: {leaf}\n"
        "  # CA CN=Test CA (chain.pem #2)\n"
        '  - digest: "sha256"\n'
        f"    value: {ca}\n")
    assert outputs["kresd"][1] == (
        "pin_sha256 = {\n"
        f"  '{leaf}',  -- CN=dns.example (chain.pem #1)\n"
        f"  '{ca}',  -- CA CN=Test CA (chain.pem #2)\n"
        "}\n")
    assert outputs["kdig"][1] == f"+tls-pin={leaf} +tls-pin={ca}\n"


def test_dnstls_format_is_accepted_by_the_upstream_config(
        chain_files: dict[str, Path | str], capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--format", "dnstls", chain_files["chain"])
    table = tomllib.loads('address = "192.0.2.1"\ntransport = "tls"\n' + out)
    spec = upstream_from_table(table, "upstream[0]")
    assert spec.tls_pubkey_pinset == (chain_files["leaf_pin"], chain_files["ca_pin"])


def test_comments_cannot_break_the_format() -> None:
    entries = [PinEntry("A" * 43 + "=", "evil\nname\x00")]
    assert render_pinset(entries, "dnstls").count("\n") == 3
    assert "evil?name?" in render_pinset(entries, "kresd")
    with pytest.raises(Exception, match="unknown format 'yaml'"):
        render_pinset(entries, "yaml")


# --- argument errors ---------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    ([], "give FILE..., --server ADDR or --next-key OUT.pem (exactly one)"),
    (["x.pem", "--server", "127.0.0.1"], "exactly one"),
    (["--server", "127.0.0.1", "--next-key", "n.pem"], "exactly one"),
    (["x.pem", "--current", "c.pem"], "--current only goes with --next-key"),
    (["x.pem", "--name", "dns.example"], "--name, --ca-file and --no-verify only go with"),
    (["--server", "127.0.0.1:99999"], "--server: '127.0.0.1:99999': port '99999'"),
    (["--server", "127.0.0.1", "--timeout", "0"], "--timeout must be a positive number"),
])
def test_usage_errors(argv: list[str], message: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith("dnstls pin: error: ") and message in err


# --- --next-key -------------------------------------------------------------------------

def test_next_key_with_current(tmp_path: Path, chain_files: dict[str, Path | str],
                               capsys: pytest.CaptureFixture[str]) -> None:
    out_key = tmp_path / "next.pem"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        status, out, err = run(capsys, "--next-key", out_key, "--current",
                               chain_files["chain"])
    finally:
        os.umask(old_umask)
    assert status == 0
    assert stat.S_IMODE(out_key.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(out_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    pin = spki_pin_of_key(key.public_key())
    assert out == (f"current  {chain_files['leaf_pin']}  CN=dns.example (chain.pem #1)\n"
                   f"current  {chain_files['ca_pin']}  CA CN=Test CA (chain.pem #2)\n"
                   f"next     {pin}  private key (next.pem)\n")
    assert f"wrote the next ec private key to {out_key} (mode 0600)" in err
    # The key file is an ordinary input of `dnstls pin`.
    assert [item.pin for item in load_pinned_keys(out_key)] == [pin]


def test_next_key_refuses_to_overwrite(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out_key = tmp_path / "next.pem"
    out_key.write_bytes(b"precious")
    status, out, err = run(capsys, "--next-key", out_key)
    assert (status, out) == (2, "")
    assert err == (f"dnstls pin: error: {out_key}: already exists; refusing to overwrite "
                   "a key\n")
    assert out_key.read_bytes() == b"precious"


def test_next_key_bad_current_writes_nothing(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "--next-key", tmp_path / "next.pem", "--current",
                         tmp_path / "missing.pem")
    assert status == 2 and "missing.pem: No such file or directory" in err
    assert not (tmp_path / "next.pem").exists()


def test_next_key_unwritable_directory(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no-such-dir" / "next.pem"
    status, _, err = run(capsys, "--next-key", target)
    assert status == 2
    assert err == f"dnstls pin: error: {target}: No such file or directory\n"


@pytest.mark.parametrize(("key_type", "check"), [
    ("rsa", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 3072),
    ("ed25519", lambda k: isinstance(k, ed25519.Ed25519PrivateKey)),
])
def test_next_key_types_and_format(key_type: str, check: object, tmp_path: Path,
                                   chain_files: dict[str, Path | str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out_key = tmp_path / f"{key_type}.pem"
    status, out, _ = run(capsys, "--next-key", out_key, "--key-type", key_type,
                         "--current", chain_files["ca"], "--format", "dnstls")
    assert status == 0
    key = serialization.load_pem_private_key(out_key.read_bytes(), None)
    assert callable(check) and check(key)
    pin = spki_pin_of_key(key.public_key())
    assert out == (
        "tls_pubkey_pinset = [\n"
        f'  {{digest = "sha256", value = "{chain_files["ca_pin"]}"}},  '
        "# current: CA CN=Test CA (ca.pem)\n"
        f'  {{digest = "sha256", value = "{pin}"}},  # next: private key ({key_type}.pem)\n'
        "]\n")


# --- --server ---------------------------------------------------------------------------

class ThreadedTlsServer:
    """A blocking TLS server in a thread on 127.0.0.1 port 0: handshakes, then waits
    for the client to leave. Records the SNI of every handshake."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sni: list[str | None] = []
        ctx.sni_callback = lambda _s, name, _c: self.sni.append(name)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            if self.stopping:
                conn.close()
                return
            conn.settimeout(10)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def __enter__(self) -> ThreadedTlsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        socket.create_connection(("127.0.0.1", self.port)).close()
        self.thread.join(10)
        self.sock.close()


@dataclass
class DotServer:
    server: ThreadedTlsServer
    ca_file: Path
    pins: list[str]
    names: list[tuple[str, str]]  # (subject, issuer) of leaf and intermediate
    valid: list[str]  # their validity periods


@pytest.fixture
def dot_server(tmp_path: Path) -> Iterator[DotServer]:
    issued = issue_chain(tmp_path / "root.pem", "dns.example", "127.0.0.1")
    ctx, ca_file = issued.server_ctx, issued.ca_file
    certs = [x509.load_der_x509_certificate(d) for d in issued.chain_der]
    # GnuTLS/kdig order: the RDNs as they are in the certificate, no spaces.
    names = [(",".join(r.rfc4514_string() for r in c.subject.rdns),
              ",".join(r.rfc4514_string() for r in c.issuer.rdns)) for c in certs]
    valid = [f"{c.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC to "
             f"{c.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" for c in certs]
    with ThreadedTlsServer(ctx) as server:
        yield DotServer(server, ca_file, [spki_pin(c) for c in certs], names, valid)


def test_server_report(dot_server: DotServer, capsys: pytest.CaptureFixture[str]) -> None:
    server, ca_file, pins, names = (dot_server.server, dot_server.ca_file, dot_server.pins,
                                    dot_server.names)
    status, out, err = run(capsys, "--server", f"127.0.0.1:{server.port}", "--name",
                           "dns.example", "--ca-file", ca_file)
    assert (status, err) == (0, "")
    first, *lines = out.splitlines()
    assert first.startswith(f"# 127.0.0.1@{server.port}: TLSv1.3, TLS_")
    assert first.endswith(", no ALPN, SNI dns.example")
    assert lines == [
        f"# chain trusted against {ca_file} for dns.example",
        f"#1 leaf {names[0][0]}",
        f"   issuer: {names[0][1]}",
        f"   valid: {dot_server.valid[0]}",
        f"   SHA-256 PIN: {pins[0]}",
        f"#2 CA   {names[1][0]}",
        f"   issuer: {names[1][1]}",
        f"   valid: {dot_server.valid[1]}",
        f"   SHA-256 PIN: {pins[1]}",
    ]
    assert names[0][1] == names[1][0]  # the leaf was issued by the presented CA
    assert server.sni == ["dns.example"]


def test_server_untrusted_and_unverified(dot_server: DotServer,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    server, pins = dot_server.server, dot_server.pins
    status, out, _ = run(capsys, "--server", f"127.0.0.1:{server.port}")
    assert status == 0
    assert out.splitlines()[1] == ("# chain NOT trusted against system CA store (no name "
                                   "checked): unable to get local issuer certificate")
    assert [line.split(": ")[1] for line in out.splitlines() if "PIN" in line] == pins
    status, out, _ = run(capsys, "--server", f"127.0.0.1:{server.port}", "--no-verify")
    assert status == 0
    assert out.splitlines()[1] == "# chain not verified (--no-verify)"
    assert server.sni == [None, None, None]


def test_server_pinset_formats(dot_server: DotServer,
                               capsys: pytest.CaptureFixture[str]) -> None:
    server, pins = dot_server.server, dot_server.pins
    status, out, _ = run(capsys, "--server", f"127.0.0.1:{server.port}", "--no-verify",
                         "--format", "kdig")
    assert (status, out) == (0, f"+tls-pin={pins[0]} +tls-pin={pins[1]}\n")
    status, out, _ = run(capsys, "--server", f"127.0.0.1:{server.port}", "--no-verify",
                         "--format", "dnstls")
    assert status == 0
    parsed = tomllib.loads(out)["tls_pubkey_pinset"]
    assert [entry["value"] for entry in parsed] == pins
    assert "# leaf O=trustme" in out and f"(127.0.0.1@{server.port} #2)" in out


def test_server_refused_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, out, err = run(capsys, "--server", f"127.0.0.1:{port}", "--timeout", "5")
    assert (status, out) == (2, "")
    assert err == (f"dnstls pin: error: cannot connect to 127.0.0.1:{port}: "
                   "Connection refused\n")


def serve_once_in_thread(handle: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    """A listener on 127.0.0.1 that hands its first connection to ``handle``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize(("handle", "reasons"), [
    # a plain-text service on the port: its first bytes are no TLS record
    (lambda conn: (conn.recv(5), conn.sendall(b"220 mail.example ESMTP\r\n")),
     ["wrong version number: the server answered with something that is not TLS "
      "(plain DNS or another service on this port?)"]),
    # a server that hangs up on the ClientHello
    (lambda conn: conn.recv(5),
     ["the server closed the connection during the handshake", "Connection reset by peer"]),
])
def test_server_handshake_failures_name_the_cause(
        handle: Callable[[socket.socket], None], reasons: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    port, thread = serve_once_in_thread(handle)
    status, out, err = run(capsys, "--server", f"127.0.0.1:{port}", "--no-verify",
                           "--timeout", "5")
    thread.join(5)
    assert (status, out) == (2, "")
    assert err in [f"dnstls pin: error: TLS handshake with 127.0.0.1:{port} failed: {reason}\n"
                   for reason in reasons]
