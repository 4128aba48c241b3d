"""tls_client: name matching when SNI and the checked name differ, contexts, errors."""

from __future__ import annotations

import ssl

import pytest
import trustme

from dnstls.errors import CertificateError, NetworkError, PinMismatch
from dnstls.net import tls_client
from dnstls.proto.pins import PinSet, spki_pin
from dnstls.upstreams import UpstreamSpec
from fakes import der


@pytest.fixture(scope="module")
def leaf_der() -> bytes:
    leaf = trustme.CA().issue_cert("dns.test", "*.wild.test", "127.0.0.1", "::1")
    return der(leaf.cert_chain_pems[0])


@pytest.mark.parametrize(("name", "ok"), [
    ("dns.test", True), ("DNS.Test.", True), ("a.wild.test", True), ("127.0.0.1", True),
    ("::1", True), ("0:0::1", True), ("other.test", False), ("wild.test", False),
    ("a.b.wild.test", False), ("127.0.0.2", False), ("test", False),
])
def test_certificate_matches_name(leaf_der: bytes, name: str, ok: bool) -> None:
    assert tls_client.certificate_matches_name(leaf_der, name) is ok


def test_no_wildcard_over_a_public_suffix_like_label() -> None:
    leaf = trustme.CA().issue_cert("*.test")
    leaf_der = der(leaf.cert_chain_pems[0])
    assert not tls_client.certificate_matches_name(leaf_der, "a.test")  # "*.test": 2 labels


def test_contexts() -> None:
    named = UpstreamSpec("192.0.2.1", 853, tls_auth_name="dns.test")
    ctx = tls_client.client_context(named)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert tls_client.name_left_to_check(ctx, named) is None
    apart = tls_client.client_context(named, sni="front.test")
    assert apart.verify_mode == ssl.CERT_REQUIRED and not apart.check_hostname
    assert tls_client.name_left_to_check(apart, named) == "dns.test"
    assert tls_client.server_hostname(named, "front.test") == "front.test"
    assert tls_client.server_hostname(named) == "dns.test"
    pinned = UpstreamSpec("192.0.2.1", 853, tls_pubkey_pinset=("x",))
    assert tls_client.client_context(pinned).verify_mode == ssl.CERT_NONE
    both = tls_client.client_context(pinned, verify=True)  # pins and the chain, no name
    assert both.verify_mode == ssl.CERT_REQUIRED and not both.check_hostname
    assert tls_client.name_left_to_check(both, pinned) is None


def test_translate_error_names_the_os_reason() -> None:
    spec = UpstreamSpec("192.0.2.1", 853, tls_auth_name="dns.test")
    refused = ConnectionRefusedError(111, "Connect call failed ('192.0.2.1', 853)")
    assert str(tls_client.translate_error(refused, spec)) == (
        "connecting to tls://192.0.2.1:853#dns.test failed: Connection refused")
    failed = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failed.verify_message, failed.reason = "certificate has expired", "CERTIFICATE_VERIFY_FAILED"
    error = tls_client.translate_error(failed, spec)
    assert isinstance(error, CertificateError)
    assert str(error) == "certificate has expired for tls://192.0.2.1:853#dns.test"
    assert isinstance(tls_client.translate_error(TimeoutError(), spec), NetworkError)


# ------------------------------------------------------------------------ report-only pins

class FakeSSLObject:
    """What :func:`tls_client.authenticate` reads from an ``ssl.SSLObject``."""

    def __init__(self, chain: list[bytes], *, resumed: bool = False) -> None:
        self.chain = chain
        self.session_reused = resumed

    def get_unverified_chain(self) -> list[bytes]:
        return self.chain

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return self.chain[0] if self.chain else None


OTHER_PIN = spki_pin(der(trustme.CA().cert_pem))


def report_spec(**kw: object) -> UpstreamSpec:
    fields: dict[str, object] = {"tls_auth_name": "dns.test", "tls_pubkey_pinset": (OTHER_PIN,),
                                 "tls_pubkey_pinset_mode": "report"}
    fields.update(kw)
    return UpstreamSpec("192.0.2.1", 853, **fields)  # type: ignore[arg-type]


def test_pins_are_reported_only_when_the_name_is_checked_against_a_ca() -> None:
    spec = report_spec()
    assert tls_client.pins_report_only(tls_client.client_context(spec), spec)
    # the name checked by authenticate() (SNI apart) still counts as checked
    assert tls_client.pins_report_only(tls_client.client_context(spec, sni="x.test"), spec)
    # verification forced off: the pins are all there is, so they are enforced
    assert not tls_client.pins_report_only(tls_client.client_context(spec, verify=False), spec)
    # no name: pin-only authentication, enforced whatever the mode says
    nameless = report_spec(tls_auth_name=None)
    assert not tls_client.pins_report_only(tls_client.client_context(nameless), nameless)
    forced = tls_client.client_context(nameless, verify=True)  # CA, but no name
    assert not tls_client.pins_report_only(forced, nameless)
    enforce = report_spec(tls_pubkey_pinset_mode="enforce")
    assert not tls_client.pins_report_only(tls_client.client_context(enforce), enforce)
    opportunistic = report_spec(opportunistic=True, tls_auth_name=None)
    assert not tls_client.pins_report_only(tls_client.client_context(opportunistic),
                                           opportunistic)


def test_authenticate_returns_a_reported_mismatch_and_raises_an_enforced_one(
        leaf_der: bytes) -> None:
    spec = report_spec()
    pinset = PinSet.of(spec.tls_pubkey_pinset)
    ssl_object = FakeSSLObject([leaf_der])
    mismatch = tls_client.authenticate(ssl_object, spec, pinset, report_only=True)
    assert isinstance(mismatch, PinMismatch)
    assert OTHER_PIN in str(mismatch) and spki_pin(leaf_der) in str(mismatch)
    with pytest.raises(PinMismatch):
        tls_client.authenticate(ssl_object, spec, pinset)
    # a matching pin: nothing to report
    good = PinSet.of([spki_pin(leaf_der)])
    assert tls_client.authenticate(ssl_object, spec, good, report_only=True) is None
    # a resumed session carries no chain: nothing checked
    assert tls_client.authenticate(FakeSSLObject([], resumed=True), spec, pinset,
                                   report_only=True) is None
    # report mode never excuses the name
    with pytest.raises(CertificateError):
        tls_client.authenticate(ssl_object, spec, pinset, report_only=True,
                                check_name="other.test")
