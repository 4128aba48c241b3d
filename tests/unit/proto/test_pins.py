import base64
import hashlib

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dnstls.errors import PinMismatch
from dnstls.proto.pins import PinSet, chain_pins, parse_pin, spki_pin


@pytest.fixture(scope="module")
def chain() -> list[bytes]:
    ca = trustme.CA()
    leaf = ca.issue_cert("dns.test")
    pems = [b.bytes() for b in leaf.cert_chain_pems]
    return [x509.load_pem_x509_certificate(p).public_bytes(serialization.Encoding.DER)
            for p in [*pems, ca.cert_pem.bytes()]]


def test_pin_is_sha256_of_spki(chain: list[bytes]) -> None:
    cert = x509.load_der_x509_certificate(chain[0])
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki_pin(chain[0]) == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert spki_pin(cert) == spki_pin(chain[0])


def test_any_certificate_of_the_chain_matches(chain: list[bytes]) -> None:
    pins = chain_pins(chain)
    assert PinSet.of([pins[0]]).matches(chain)
    assert PinSet.of([pins[-1]]).matches(chain)  # CA key
    PinSet.of(pins[-1:]).check(chain)


def test_mismatch_names_expected_and_seen(chain: list[bytes]) -> None:
    other = base64.b64encode(b"\x01" * 32).decode()
    with pytest.raises(PinMismatch) as info:
        PinSet.of([other]).check(chain)
    assert info.value.expected == (other,)
    assert info.value.seen == tuple(chain_pins(chain))
    assert other in str(info.value)


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"x" * 31).decode(), ""])
def test_bad_pins_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="pin"):
        parse_pin(text)


def test_prefixes_accepted() -> None:
    value = base64.b64encode(b"\x02" * 32).decode()
    assert parse_pin(f'pin-sha256="{value}"') == value
    assert parse_pin(f"sha256/{value}") == value
    assert parse_pin(f"sha256//{value}") == value  # curl's --pinnedpubkey form


def test_copied_forms_accepted_and_made_canonical() -> None:
    raw = bytes(range(200, 232))  # base64 with '+', '/' and one '=' of padding
    value = base64.b64encode(raw).decode()
    assert "+" in value and "/" in value and value.endswith("=")
    assert parse_pin(value.rstrip("=")) == value  # padding lost in a copy
    assert parse_pin(base64.urlsafe_b64encode(raw).decode()) == value
    assert parse_pin(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == value
    assert parse_pin(raw.hex()) == value  # the digest of a TLSA 3 1 1 record
    assert parse_pin(raw.hex().upper()) == value


def test_a_list_in_one_value_says_one_pin_each() -> None:
    value = base64.b64encode(b"\x02" * 32).decode()
    with pytest.raises(ValueError, match="one pin per value"):
        parse_pin(f"{value},{value}")
    assert not PinSet.of([])
