"""resolver/rebind.py: which records are private, and what is left of an answer."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rrset
import pytest

from dnstls import config
from dnstls.errors import ConfigError
from dnstls.resolver.rebind import PrivateAddresses, has_private, parse_networks

PRIVATE = ["10.0.0.0/8", "192.168.0.0/16", "127.0.0.1", "fd00::/8", "::ffff:0:0/96"]


def answer(qname: str, rdtype: str, *sections: list[tuple[str, str, str]]
           ) -> dns.message.Message:
    """A response to ``qname``/``rdtype`` with (owner, type, data) records in the answer,
    authority and additional sections given."""
    response = dns.message.make_response(dns.message.make_query(qname, rdtype))
    for section, records in zip((response.answer, response.authority,
                                 response.additional), sections, strict=False):
        for owner, kind, data in records:
            section.append(dns.rrset.from_text(owner, 300, "IN", kind, data))
    return response


def filtered(filt: PrivateAddresses, message: dns.message.Message) -> list[str]:
    wire = message.to_wire()
    out = dns.message.from_wire(filt.filter_wire(wire))
    return [f"{r.name} {r.to_text().split()[-2]} {rd}" for section in
            (out.answer, out.authority, out.additional) for r in section for rd in r]


@pytest.mark.parametrize(("records", "private"), [
    ([("a.", "A", "10.1.2.3")], True),
    ([("a.", "A", "10.1.2.3"), ("a.", "A", "192.0.2.1")], True),
    ([("a.", "A", "192.0.2.1")], False),
    ([("a.", "A", "127.0.0.1")], True),
    ([("a.", "A", "127.0.0.2")], False),  # a host route, not 127/8
    ([("a.", "AAAA", "fd12::1")], True),
    ([("a.", "AAAA", "::ffff:10.0.0.1")], True),
    ([("a.", "AAAA", "2001:db8::1")], False),
    ([("a.", "TXT", '"10.1.2.3"')], False),
    ([("a.", "CNAME", "b.")], False),
])
def test_has_private_reads_a_and_aaaa_data(records: list[tuple[str, str, str]],
                                           private: bool) -> None:
    v4, v6 = parse_networks(PRIVATE, "f")
    assert has_private(answer("a.", records[0][1], records).to_wire(), v4, v6) is private


def test_every_section_is_looked_at() -> None:
    v4, v6 = parse_networks(PRIVATE, "f")
    ns = [("pub.", "NS", "ns.pub.")]
    assert has_private(answer("pub.", "NS", ns, [], [("ns.pub.", "A", "10.0.0.53")])
                       .to_wire(), v4, v6)
    assert has_private(answer("x.", "A", [], [("x.", "A", "192.168.1.1")]).to_wire(), v4, v6)
    assert not has_private(answer("pub.", "NS", ns, [], [("ns.pub.", "A", "192.0.2.53")])
                           .to_wire(), v4, v6)


def test_only_the_private_records_go() -> None:
    filt = PrivateAddresses(PRIVATE, [dns.name.from_text("lan.example.")])
    message = answer("mixed.example.", "A",
                     [("mixed.example.", "A", "10.1.2.3"), ("mixed.example.", "A", "192.0.2.1"),
                      ("x.lan.example.", "A", "10.0.0.5")],
                     [], [("ns.example.", "AAAA", "fd00::53"), ("ns.example.", "A", "192.0.2.53")])
    assert filtered(filt, message) == ["mixed.example. A 192.0.2.1",
                                       "x.lan.example. A 10.0.0.5",
                                       "ns.example. A 192.0.2.53"]
    assert filt.removed == 2 and filt.statistics() == {"removed": 2}


def test_an_answer_without_private_addresses_is_the_same_bytes() -> None:
    filt = PrivateAddresses(PRIVATE, [dns.name.from_text("lan.example.")])
    public = answer("ok.example.", "A", [("ok.example.", "A", "192.0.2.1")]).to_wire()
    assert filt.filter_wire(public) is public
    # private, but every such address belongs to an allowed name: not rendered again
    allowed = answer("x.lan.example.", "A", [("x.lan.example.", "A", "10.0.0.5")]).to_wire()
    assert filt.filter_wire(allowed) is allowed
    assert filt.removed == 0


def test_an_emptied_answer_keeps_the_header_and_question() -> None:
    filt = PrivateAddresses(PRIVATE)
    message = answer("a.example.", "A", [("a.example.", "A", "10.1.2.3")])
    message.id = 4321
    out = dns.message.from_wire(filt.filter_wire(message.to_wire()))
    assert out.id == 4321 and out.question == message.question
    assert out.answer == [] and out.rcode() == 0


@pytest.mark.parametrize(("forward", "field"), [
    ({"private_addresses": ["10.0.0.0/8", "not-a-net"]}, "forward.private_addresses[1]"),
    ({"private_addresses": ["10.0.0.0/33"]}, "forward.private_addresses[0]"),
    ({"private_addresses": ["10.0.0.0/8"], "private_domains": ["a..b"]},
     "forward.private_domains[0]"),
    ({"private_domains": ["lan."]}, "forward.private_domains"),
    ({"private_addresses": 10}, "forward.private_addresses"),
])
def test_bad_settings_name_the_field(forward: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(overrides={"forward": forward})
    assert info.value.field == field


def test_host_bits_are_accepted_as_unbound_does() -> None:
    v4, _ = parse_networks(["10.1.2.3/8"], "f")
    assert v4 == [(10 << 24, 0xFF000000)]


def test_an_answer_that_lost_records_is_not_made_a_referral() -> None:
    """An authoritative server's answer carries the zone's NS in the authority section:
    with the answer's address removed that would read as a referral, which Unbound does
    not answer; the NS records go with it. An answer that lost nothing keeps them."""
    filt = PrivateAddresses(PRIVATE)
    ns = [("example.", "NS", "ns1.example.")]
    emptied = answer("a.example.", "A", [("a.example.", "A", "10.1.2.3")], ns)
    assert filtered(filt, emptied) == []
    glue_only = answer("b.example.", "A", [("b.example.", "A", "192.0.2.1")], ns,
                       [("ns1.example.", "A", "10.0.0.53")])
    assert filtered(filt, glue_only) == ["b.example. A 192.0.2.1", "example. NS ns1.example."]
