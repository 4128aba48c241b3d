import ipaddress
from pathlib import Path

from cryptography import x509

from dnstls.certs import certificate_names, ensure_self_signed, generate_self_signed


def test_self_signed_names_host_and_addresses() -> None:
    cert_pem, key_pem = generate_self_signed(["dns.example", "localhost"],
                                             ["127.0.0.1", "::1", "not-an-ip"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["dns.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("::1")]
    assert certificate_names(cert) == ["dns.example", "localhost"]
    assert b"PRIVATE KEY" in key_pem


def test_generated_once_and_kept(tmp_path: Path) -> None:
    cert, key, created = ensure_self_signed(tmp_path / "state", ["a.example"], ["127.0.0.1"])
    assert created and (key.stat().st_mode & 0o777) == 0o600
    first = cert.read_bytes()
    again = ensure_self_signed(tmp_path / "state", ["b.example"], ["127.0.0.2"])
    assert again == (cert, key, False) and cert.read_bytes() == first


def test_concurrent_generation_yields_one_matching_pair(tmp_path: Path) -> None:
    import multiprocessing
    import ssl

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=ensure_self_signed,
                         args=(tmp_path / "state", ["a.example"], ["127.0.0.1"]))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    cert, key = tmp_path / "state" / "dnstls-cert.pem", tmp_path / "state" / "dnstls-key.pem"
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)  # matches
