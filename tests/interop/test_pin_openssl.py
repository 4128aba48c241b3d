"""``dnstls pin`` agrees with OpenSSL, for files and for a live ``openssl s_server``.

The reference pin is the classic pipeline (RFC 7469 §2.4 / Stubby's documentation)::

    openssl x509 -pubkey -noout -in C | openssl pkey -pubin -outform der \\
        | openssl dgst -sha256 -binary | base64

All certificates and keys are made by the ``openssl`` command line here, so our parser
also reads what operators actually have (``ecparam -genkey`` files with an
``EC PARAMETERS`` block, PKCS#8 RSA keys, ``pkey -pubout`` public keys).
Missing openssl skips the test, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dnstls.cli.main import main

from .peers import LOOPBACK, Peer, PeerGroup, free_port, require

pytestmark = pytest.mark.interop

TIMEOUT = 30


def openssl(*args: str | Path, cwd: Path, stdin: bytes | None = None) -> bytes:
    run = subprocess.run([require("openssl"), *map(str, args)], cwd=cwd, input=stdin,
                         capture_output=True, timeout=TIMEOUT, check=False)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return run.stdout


def openssl_validity(cert: Path) -> str:
    """The validity period as ``dnstls pin --server`` prints it, read by openssl."""
    run = subprocess.run([require("openssl"), "x509", "-in", str(cert), "-noout", "-startdate",
                          "-enddate", "-dateopt", "iso_8601"], capture_output=True, text=True,
                         timeout=TIMEOUT, check=True)
    dates = dict(line.split("=", 1) for line in run.stdout.splitlines())
    return " to ".join(dates[key].replace("Z", " UTC") for key in ("notBefore", "notAfter"))


def openssl_pin(cert: Path) -> str:
    """The reference pin, computed by the shell pipeline itself."""
    pipeline = ('"$OPENSSL" x509 -pubkey -noout -in "$CERT" '
                '| "$OPENSSL" pkey -pubin -outform der '
                '| "$OPENSSL" dgst -sha256 -binary | base64')
    run = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True,
                         text=True, timeout=TIMEOUT, check=False,
                         env={**os.environ, "OPENSSL": require("openssl"), "CERT": str(cert)})
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@dataclass(frozen=True)
class OpensslPki:
    directory: Path
    root: Path        # EC P-256, self-signed CA
    intermediate: Path  # RSA-2048 CA signed by root
    leaf: Path        # EC P-256 (ecparam -genkey key), dns.test / 127.0.0.1
    leaf_key: Path
    intermediate_key: Path


def _sign(directory: Path, csr: str, out: str, ca: str, ca_key: str, ext: str) -> None:
    (directory / f"{out}.ext").write_text(ext)
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "2", "-sha256", "-out", out, "-extfile", f"{out}.ext", cwd=directory)


@pytest.fixture
def openssl_pki(tmp_path: Path) -> OpensslPki:
    d = tmp_path / "openssl-pki"
    d.mkdir()
    ca_ext = ("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "root.key", "-out", "root.pem", "-subj", "/O=Interop/CN=Interop Root",
            "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "inter.key", "-out",
            "inter.csr", "-subj", "/O=Interop/CN=Interop Intermediate", cwd=d)
    _sign(d, "inter.csr", "inter.pem", "root.pem", "root.key", ca_ext)
    openssl("ecparam", "-genkey", "-name", "prime256v1", "-out", "leaf.key", cwd=d)
    openssl("req", "-new", "-key", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=dns.test",
            cwd=d)
    _sign(d, "leaf.csr", "leaf.pem", "inter.pem", "inter.key",
          "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
          "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:dns.test,IP:127.0.0.1\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    return OpensslPki(d, d / "root.pem", d / "inter.pem", d / "leaf.pem", d / "leaf.key",
                      d / "inter.key")


def dnstls_pin(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> list[str]:
    status = main(["pin", *map(str, argv)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out.splitlines()


def test_file_pins_equal_openssl(openssl_pki: OpensslPki, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rsa_self = tmp_path / "rsa-self.pem"
    openssl("req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout", "rsa-self.key",
            "-out", rsa_self, "-subj", "/CN=rsa.test", "-days", "2", cwd=tmp_path)
    certs = {  # name -> (path, key type)
        "root (EC)": openssl_pki.root, "intermediate (RSA)": openssl_pki.intermediate,
        "leaf (EC)": openssl_pki.leaf, "self-signed (RSA)": rsa_self,
    }
    for what, cert in certs.items():
        ours = dnstls_pin(capsys, cert)
        assert len(ours) == 1
        assert ours[0].split()[0] == openssl_pin(cert), what


def test_key_files_from_openssl(openssl_pki: OpensslPki,
                                capsys: pytest.CaptureFixture[str]) -> None:
    d = openssl_pki.directory
    (d / "leaf.pub").write_bytes(openssl("pkey", "-in", "leaf.key", "-pubout", cwd=d))
    (d / "inter.pub.der").write_bytes(
        openssl("pkey", "-in", "inter.key", "-pubout", "-outform", "der", cwd=d))
    (d / "leaf.der").write_bytes(openssl("x509", "-in", "leaf.pem", "-outform", "der", cwd=d))
    lines = dnstls_pin(capsys, openssl_pki.leaf_key, d / "leaf.pub", d / "leaf.der",
                       openssl_pki.intermediate_key, d / "inter.pub.der")
    leaf, inter = openssl_pin(openssl_pki.leaf), openssl_pin(openssl_pki.intermediate)
    assert lines == [
        f"{leaf}  private key (leaf.key)",
        f"{leaf}  public key (leaf.pub)",
        f"{leaf}  CN=dns.test (leaf.der)",
        f"{inter}  private key (inter.key)",
        f"{inter}  public key (inter.pub.der)",
    ]


def start_s_server(group: PeerGroup, pki: OpensslPki) -> Peer:
    port = free_port()
    argv = [require("openssl"), "s_server", "-accept", f"{LOOPBACK}:{port}",
            "-cert", str(pki.leaf), "-key", str(pki.leaf_key),
            "-cert_chain", str(pki.intermediate), "-quiet"]
    peer = group.start(Peer("openssl-s_server", argv, group.workdir("s_server"), port=port))
    return peer.wait_tcp()


def test_server_pins_equal_openssl(openssl_pki: OpensslPki, peer_group: PeerGroup,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    server = start_s_server(peer_group, openssl_pki)
    leaf, inter = openssl_pin(openssl_pki.leaf), openssl_pin(openssl_pki.intermediate)
    lines = dnstls_pin(capsys, "--server", f"{server.host}:{server.port}", "--name",
                       "dns.test", "--ca-file", openssl_pki.root, "--timeout", "10")
    assert lines[1] == f"# chain trusted against {openssl_pki.root} for dns.test"
    assert lines[2] == "#1 leaf CN=dns.test"
    assert lines[3] == "   issuer: O=Interop,CN=Interop Intermediate"
    assert lines[4] == f"   valid: {openssl_validity(openssl_pki.leaf)}"
    assert lines[5] == f"   SHA-256 PIN: {leaf}"
    assert lines[6] == "#2 CA   O=Interop,CN=Interop Intermediate"
    assert lines[7] == "   issuer: O=Interop,CN=Interop Root"
    assert lines[8] == f"   valid: {openssl_validity(openssl_pki.intermediate)}"
    assert lines[9] == f"   SHA-256 PIN: {inter}"
    assert len(lines) == 10
    kdig_pins = dnstls_pin(capsys, "--server", f"{server.host}:{server.port}",
                           "--no-verify", "--format", "kdig")
    assert kdig_pins == [f"+tls-pin={leaf} +tls-pin={inter}"]


def test_server_untrusted_without_ca_file(openssl_pki: OpensslPki, peer_group: PeerGroup,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server = start_s_server(peer_group, openssl_pki)
    lines = dnstls_pin(capsys, "--server", f"{server.host}:{server.port}", "--timeout", "10")
    assert lines[1].startswith("# chain NOT trusted against system CA store (no name "
                               "checked): ")
    assert lines[5] == f"   SHA-256 PIN: {openssl_pin(openssl_pki.leaf)}"
