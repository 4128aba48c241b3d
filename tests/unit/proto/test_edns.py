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
