"""Reading certificates and keys for pinning, and generating the next key.

An SPKI pin (RFC 7469 §2.4, used by RFC 7858 §4.2 and RFC 8310 §8.1) hashes only the
SubjectPublicKeyInfo, so the same pin comes out of a certificate, its public key, its
private key, or a certificate request for that key. :func:`load_pinned_keys` accepts all
of them, PEM (any number of blocks, e.g. a full chain) or DER, and reports each item
with a label an operator recognises (the certificate's CN, "public key", ...).

Key rollover (RFC 7858 §4.2 asks clients to accept a backup pin): an operator generates
the *next* key with :func:`generate_private_key` / :func:`write_private_key`, publishes
the current and the next pin, waits until clients have the new pinset, and only then
gets a certificate for the next key. The private key file is created with mode 0600 and
never overwrites an existing file.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from dnstls.errors import ConfigError
from dnstls.proto.pins import spki_pin_of_key

__all__ = [
    "KEY_TYPES",
    "KeyFileError",
    "PinnedKey",
    "describe_name",
    "generate_private_key",
    "load_pinned_keys",
    "parse_pinned_keys",
    "pinned_certificate",
    "write_private_key",
]

Kind = Literal["certificate", "certificate request", "public key", "private key"]
KeyType = Literal["ec", "rsa", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("ec", "rsa", "ed25519")
RSA_BITS = 3072

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_CSR_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}
_PUBLIC_LABELS = {b"PUBLIC KEY", b"RSA PUBLIC KEY"}
_PRIVATE_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY"}
_IGNORED_LABELS = {b"EC PARAMETERS", b"DH PARAMETERS", b"X509 CRL"}


class KeyFileError(ConfigError):
    """A certificate or key file cannot be read or parsed; ``field`` is the file name."""


@dataclass(frozen=True, slots=True)
class PinnedKey:
    """One pinnable item found in a file (or presented by a server)."""

    pin: str
    kind: Kind
    source: str
    subject: str | None = None
    issuer: str | None = None
    common_name: str | None = None
    is_ca: bool = False
    #: a certificate's validity period (UTC)
    not_before: datetime | None = None
    not_after: datetime | None = None

    def validity(self, now: datetime | None = None) -> str:
        """``2026-01-02 03:04:05 UTC to 2027-01-02 03:04:05 UTC``, with ``, EXPIRED`` or
        ``, NOT YET VALID`` when ``now`` is given and outside the period."""
        if self.not_before is None or self.not_after is None:
            return "unknown"
        text = f"{_utc_text(self.not_before)} to {_utc_text(self.not_after)}"
        if now is not None and now > self.not_after:
            text += ", EXPIRED"
        elif now is not None and now < self.not_before:
            text += ", NOT YET VALID"
        return text

    @property
    def what(self) -> str:
        """Short description: ``CN=...`` for certificates, else the kind."""
        if self.kind == "certificate":
            if self.common_name is not None:
                return f"CN={self.common_name}"
            return self.subject or "certificate"
        if self.kind == "certificate request":
            cn = f" CN={self.common_name}" if self.common_name else ""
            return "certificate request" + cn
        return self.kind

    @property
    def label(self) -> str:
        """``what (source)``, e.g. ``CN=dns.example (chain.pem #1)``."""
        return f"{self.what} ({self.source})"


def describe_name(name: x509.Name) -> str:
    """A distinguished name in certificate order, ``C=CZ,O=Example,CN=dns.example``.

    This is the order GnuTLS (and so ``kdig -d``) prints; ``rfc4514_string()`` reverses it.
    """
    return ",".join(rdn.rfc4514_string() for rdn in name.rdns)


def _common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[-1].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def pinned_certificate(cert: x509.Certificate | bytes, source: str) -> PinnedKey:
    """The pin and names of one certificate (object or DER)."""
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    return PinnedKey(
        pin=spki_pin_of_key(cert.public_key()),
        kind="certificate",
        source=source,
        subject=describe_name(cert.subject),
        issuer=describe_name(cert.issuer),
        common_name=_common_name(cert.subject),
        is_ca=_is_ca(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pinned_request(csr: x509.CertificateSigningRequest, source: str) -> PinnedKey:
    return PinnedKey(
        pin=spki_pin_of_key(csr.public_key()),
        kind="certificate request",
        source=source,
        subject=describe_name(csr.subject),
        common_name=_common_name(csr.subject),
    )


def _pinned_public(key: PublicKeyTypes, source: str) -> PinnedKey:
    return PinnedKey(pin=spki_pin_of_key(key), kind="public key", source=source)


def _pinned_private(key: PrivateKeyTypes, source: str) -> PinnedKey:
    return PinnedKey(pin=spki_pin_of_key(key.public_key()), kind="private key", source=source)


def _load_private_der(der: bytes) -> PrivateKeyTypes:
    return serialization.load_der_private_key(der, password=None)


def _from_pem_block(label: bytes, block: bytes, source: str) -> PinnedKey:
    if label in _CERT_LABELS:
        return pinned_certificate(x509.load_pem_x509_certificate(block), source)
    if label in _CSR_LABELS:
        return _pinned_request(x509.load_pem_x509_csr(block), source)
    if label in _PUBLIC_LABELS:
        return _pinned_public(serialization.load_pem_public_key(block), source)
    if label in _PRIVATE_LABELS:
        return _pinned_private(serialization.load_pem_private_key(block, password=None), source)
    raise ValueError(f"unsupported PEM block {label.decode('ascii')!r}")


def _from_der(data: bytes, source: str) -> PinnedKey:
    loaders: list[Callable[[bytes], PinnedKey]] = [
        lambda d: pinned_certificate(x509.load_der_x509_certificate(d), source),
        lambda d: _pinned_public(serialization.load_der_public_key(d), source),
        lambda d: _pinned_private(_load_private_der(d), source),
        lambda d: _pinned_request(x509.load_der_x509_csr(d), source),
    ]
    for loader in loaders:
        try:
            return loader(data)
        except (ValueError, TypeError):
            continue
    raise ValueError("not a PEM or DER certificate, public key or private key")


def load_pinned_keys(path: str | os.PathLike[str]) -> list[PinnedKey]:
    """Every pinnable item in a PEM or DER file, in file order.

    Raises :class:`KeyFileError` naming the file when it cannot be read, holds nothing
    pinnable, holds an encrypted private key, or a block does not parse.
    """
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise KeyFileError(name, exc.strerror or str(exc)) from None
    return parse_pinned_keys(data, name)


def parse_pinned_keys(data: bytes, name: str) -> list[PinnedKey]:
    """:func:`load_pinned_keys` on the bytes of a file (or of standard input) that
    ``name`` stands for in labels and errors."""
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        if data.lstrip().startswith(b"-----BEGIN"):
            raise KeyFileError(name, "truncated PEM block (no matching END line)")
        try:
            return [_from_der(data, os.path.basename(name))]
        except ValueError as exc:
            raise KeyFileError(name, str(exc)) from None
    wanted = [(label, block) for label, block in blocks if label not in _IGNORED_LABELS]
    if not wanted:
        raise KeyFileError(name, "no certificate or key in this PEM file")
    base = os.path.basename(name)
    items: list[PinnedKey] = []
    for index, (label, block) in enumerate(wanted, start=1):
        source = base if len(wanted) == 1 else f"{base} #{index}"
        if label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block:
            raise KeyFileError(
                name, "encrypted private key; give its certificate or public key instead")
        try:
            items.append(_from_pem_block(label, block, source))
        except (ValueError, TypeError, binascii.Error) as exc:
            raise KeyFileError(name, f"PEM block {index} ({label.decode('ascii')}): "
                                     f"{_short(exc)}") from None
    return items


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.rstrip(".")


def generate_private_key(key_type: KeyType = "ec") -> PrivateKeyTypes:
    """A new private key: ECDSA P-256 (default), RSA-3072 or Ed25519."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def write_private_key(path: str | os.PathLike[str], key: PrivateKeyTypes) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, never replacing a file.

    Raises :class:`KeyFileError` naming the file if it exists or cannot be created.
    """
    name = os.fspath(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(name, "already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(name, exc.strerror or str(exc)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    except OSError as exc:
        raise KeyFileError(name, exc.strerror or str(exc)) from None

