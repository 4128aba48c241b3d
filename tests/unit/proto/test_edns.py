import dns.edns
import pytest

from dnstls.proto import edns


def test_keepalive_roundtrip() -> None:
    assert edns.keepalive_timeout(edns.keepalive_option(None)) is None
    assert edns.keepalive_timeout(edns.keepalive_option(12.3)) == 12.3
    assert edns.keepalive_timeout(edns.keepalive_option(1e9)) == 6553.5


def test_keepalive_bad_length() -> None:
    with pytest.raises(ValueError):
        edns.keepalive_timeout(dns.edns.GenericOption(edns.KEEPALIVE, b"\x00"))


@pytest.mark.parametrize(("length", "block", "expected"),
                         [(1, 128, 128), (128, 128, 128), (129, 128, 256), (50, 468, 468),
                          (469, 468, 936), (77, 0, 77)])
def test_padded_size(length: int, block: int, expected: int) -> None:
    assert edns.padded_size(length, block) == expected


def test_unknown_ede_code_is_kept() -> None:
    assert edns.ede_option(4000, "x").code == 4000


@pytest.mark.parametrize(("text", "value"), [
    ("ascii_dot-1", b"dot-1"),
    ("ASCII_x", b"x"),  # Unbound 1.17 reads the prefix in any case
    ("ascii_ x ", b" x "),
    ("ascii_h\u00e9", "h\u00e9".encode()),
    ("646e73746c73", b"dnstls"),
    ("646E73", b"dns"),
    ("00ff", b"\x00\xff"),
    ("ascii_" + "a" * 255, b"a" * 255),
    ("ab" * 255, b"\xab" * 255),
])
def test_nsid_values_as_unbound_reads_them(text: str, value: bytes) -> None:
    assert edns.parse_nsid(text) == value


@pytest.mark.parametrize(("text", "reason"), [
    ("abc", "neither hex"),  # odd length
    ("zz", "neither hex"),
    ("0x6464", "neither hex"),
    (" 6464", "neither hex"),
    ("6464 ", "neither hex"),
    ("", "empty"),
    ("ascii_", "empty"),
    ("ascii_" + "a" * 256, "256 bytes"),
    ("ab" * 256, "256 bytes"),
])
def test_bad_nsid_values(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        edns.parse_nsid(text)


def test_nsid_option_wire() -> None:
    wire = edns.nsid_option_wire(b"x")
    assert wire == b"\x00\x03\x00\x01x"
    option = dns.edns.option_from_wire(edns.NSID, wire, 4, 1)
    assert option.to_wire() == b"x"
