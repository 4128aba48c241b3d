"""The self-signed certificate ``dnstls serve`` creates when none is configured.

Generated once into the state directory and reused on every start, so its SPKI pin is
stable and can be given to clients (``kdig +tls-pin=...``, Stubby's pinset). The
certificate names the host (DNS SAN) and every listen address (IP SANs), so it can be
reached by name and by IP as public resolvers are. ECDSA P-256: small handshakes and
fast signatures.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("dnstls.certs")

CERT_FILE = "dnstls-cert.pem"
KEY_FILE = "dnstls-key.pem"
VALIDITY = datetime.timedelta(days=825)


def generate_self_signed(names: Iterable[str], addresses: Iterable[str],
                         ) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) for a new self-signed certificate."""
    names = list(dict.fromkeys(names))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names
                                            else "dnstls")])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    for addr in dict.fromkeys(addresses):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            continue
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem


def ensure_self_signed(state_dir: Path, names: Iterable[str], addresses: Iterable[str],
                       ) -> tuple[Path, Path, bool]:
    """Paths of the state directory's certificate and key, creating them if missing.

    Returns (cert, key, created).
    """
    cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path, False
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Several processes may start at once (serve --workers): one generates under an
    # exclusive lock, the others wait and find the pair; each file appears whole
    # (written aside, then renamed), so no reader ever sees a key of another certificate.
    with open(state_dir / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path, False
        cert_pem, key_pem = generate_self_signed(names, addresses)
        _write_atomically(key_path, key_pem, 0o600)
        _write_atomically(cert_path, cert_pem, 0o644)
    log.info("generated a self-signed certificate in %s", cert_path)
    return cert_path, key_path, True


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def certificate_names(cert: x509.Certificate) -> list[str]:
    """DNS names of a certificate's SAN extension (or its CN when it has no SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return list(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
