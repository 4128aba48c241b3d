"""SPKI pins (RFC 7469 §2.4 form, as used by RFC 7858 §4.2 and Stubby/kdig).

A pin is ``base64(SHA-256(DER SubjectPublicKeyInfo))``. A :class:`PinSet` matches a
presented chain if *any* certificate in it (leaf or CA) has a pinned key, which is how
Stubby and kdig behave and what makes a rollover possible: pin the current key, the
next key, and the issuing CA's key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

PIN_DIGEST = "sha256"


def spki_pin_of_key(key: PublicKeyTypes) -> str:
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def spki_pin(cert: x509.Certificate | bytes) -> str:
    """The pin of a certificate given as an object or as DER bytes."""
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    return spki_pin_of_key(cert.public_key())


def chain_pins(chain: Iterable[bytes]) -> list[str]:
    """Pins of each DER certificate of a chain, in presentation order."""
    return [spki_pin(der) for der in chain]


_PREFIXES = ("pin-sha256=", "sha256//", "sha256/", "sha256:")
_URL_SAFE = str.maketrans("-_", "+/")
_HEX_PIN = re.compile(r"[0-9A-Fa-f]{64}")


def parse_pin(text: str) -> str:
    """Validate a SHA-256 pin and return it as standard, padded base64.

    Besides the canonical form it accepts what pins get copied from: base64 without its
    ``=`` padding or in the URL-safe alphabet; the ``pin-sha256="..."`` (HPKP),
    ``sha256//`` (curl) and ``sha256/`` or ``sha256:`` prefixes; and 64 hex digits (the
    same digest as the data of a TLSA 3 1 1 record). Raises ValueError naming the
    problem.
    """
    value = text.strip().strip('"')
    for prefix in _PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix):].strip('"')
            break
    parts = re.split(r"[\s,]+", value)
    if len(parts) > 1 and all(len(part) >= 43 for part in parts):  # 43: unpadded base64
        raise ValueError(f"pin {text!r}: one pin per value (give each pin on its own)")
    if _HEX_PIN.fullmatch(value):
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    try:
        raw = base64.b64decode(value.translate(_URL_SAFE) + "=" * (-len(value) % 4),
                               validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"pin {text!r} is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"pin {text!r} decodes to {len(raw)} bytes, a SHA-256 pin has 32")
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class PinSet:
    """A set of acceptable SPKI pins; empty means "no pinning"."""

    pins: frozenset[str]

    @classmethod
    def of(cls, pins: Iterable[str]) -> PinSet:
        return cls(frozenset(parse_pin(p) for p in pins))

    def __bool__(self) -> bool:
        return bool(self.pins)

    def matches(self, chain: Sequence[bytes]) -> bool:
        """True if any certificate of the DER chain carries a pinned key."""
        return any(pin in self.pins for pin in chain_pins(chain))

    def check(self, chain: Sequence[bytes]) -> None:
        """Raise :class:`dnstls.errors.PinMismatch` unless the chain matches."""
        from dnstls.errors import PinMismatch

        seen = chain_pins(chain)
        if not any(pin in self.pins for pin in seen):
            raise PinMismatch(sorted(self.pins), seen)
