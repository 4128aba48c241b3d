"""TrustAnchors: Unbound's trust-anchor-file format (zone-file DS/DNSKEY lines)."""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest

from dnstls.resolver.dnssec import TrustAnchors

ROOT_KEY = Path("/usr/share/dns/root.key")
ROOT_DS = Path("/usr/share/dns/root.ds")

KSK = ("AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5e"
       "mLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF"
       "0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1"
       "uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwN"
       "R1AkUTV74bU=")
DS_20326 = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


@pytest.mark.skipif(not ROOT_KEY.exists(), reason="no /usr/share/dns/root.key (dns-root-data)")
def test_the_machines_root_key_parses() -> None:
    anchors = TrustAnchors.from_file(ROOT_KEY)
    assert anchors.zones == (dns.name.root,)
    assert len(anchors.dnskey[dns.name.root]) >= 1
    assert all(key.flags == 257 for key in anchors.dnskey[dns.name.root])


@pytest.mark.skipif(not ROOT_DS.exists(), reason="no /usr/share/dns/root.ds (dns-root-data)")
def test_the_machines_root_ds_parses() -> None:
    anchors = TrustAnchors.from_file(ROOT_DS)
    assert anchors.zones == (dns.name.root,)
    assert 20326 in {ds.key_tag for ds in anchors.ds[dns.name.root]}


def test_comments_blank_lines_ttls_and_parentheses() -> None:
    text = f"""; a comment line
{DS_20326} ; trailing comment

example.  3600 IN DNSKEY 257 3 8 (
    {KSK[:100]}
    {KSK[100:]} ) ; keytag
"""
    anchors = TrustAnchors.from_text(text)
    assert anchors.zones == (dns.name.root, name("example."))
    assert [ds.key_tag for ds in anchors.ds[dns.name.root]] == [20326]
    assert len(anchors.dnskey[name("example.")]) == 1


def test_a_bad_line_names_source_and_line() -> None:
    text = f"{DS_20326}\n\n. IN DS 20326 8 2 NOTHEX\n"
    with pytest.raises(ValueError, match=r"^anchors\.txt:3: "):
        TrustAnchors.from_text(text, source="anchors.txt")


def test_other_record_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"<text>:2: not a DS or DNSKEY record: A"):
        TrustAnchors.from_text(f"{DS_20326}\nexample. IN A 192.0.2.1\n")


def test_no_anchor_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="no trust anchor"):
        TrustAnchors.from_text("; nothing here\n\n", source="empty.key")


def test_revoked_and_non_zone_keys_are_ignored() -> None:
    revoked = f". IN DNSKEY 385 3 8 {KSK}"  # 257 | REVOKE (0x80)
    not_zone = f". IN DNSKEY 1 3 8 {KSK}"
    with pytest.raises(ValueError, match="no trust anchor"):
        TrustAnchors.from_text(f"{revoked}\n{not_zone}\n")
    anchors = TrustAnchors.from_text(f"{revoked}\n. IN DNSKEY 257 3 8 {KSK}\n")
    assert [key.flags for key in anchors.dnskey[dns.name.root]] == [257]


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TrustAnchors.from_file(tmp_path / "absent.key")


def test_closest_is_the_deepest_anchor_at_or_above() -> None:
    anchors = TrustAnchors.from_text(
        f"{DS_20326}\nsub.example. IN DS 1 13 2 {'00' * 32}\n")
    assert anchors.closest(name("www.sub.example.")) == name("sub.example.")
    assert anchors.closest(name("sub.example.")) == name("sub.example.")
    assert anchors.closest(name("example.")) == dns.name.root
    assert anchors.closest(dns.name.root) == dns.name.root
    only_sub = TrustAnchors.from_text(f"sub.example. IN DS 1 13 2 {'00' * 32}\n")
    assert only_sub.closest(name("other.")) is None
    assert only_sub.closest(name("a.b.sub.example.")) == name("sub.example.")
