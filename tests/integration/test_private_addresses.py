"""DNS rebinding protection (resolver/rebind.py): private addresses removed from
forwarded answers, as Unbound's ``private-address`` / ``private-domain``.

A fake upstream answers as a recursive resolver would for ``pub.example.`` (CNAME chains
followed inside the zone); the service forwards to it with ``forward.private_addresses``
set. Each case is asked over UDP and DoT, on the wire path and the message path
(``server.log_queries``), and the answers are those Unbound 1.17.1 gave for the same
zone (tests/interop/test_private_addresses_unbound.py compares the two directly).
"""

from __future__ import annotations

import logging

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import Fakes, Served, ServeFactory, udp_spec
from prometheus_client import CollectorRegistry, generate_latest

from dnstls.metrics import ServiceCollector
from fakes import FakeUpstream

pytestmark = pytest.mark.timeout(60)

PRIVATE = ["10.0.0.0/8", "127.0.0.0/8", "fd00::/8", "::ffff:0:0/96"]
ZONE: dict[str, list[tuple[str, str]]] = {
    "a.pub.example.": [("A", "10.1.2.3")],
    "mixed.pub.example.": [("A", "10.1.2.3"), ("A", "192.0.2.1")],
    "v6.pub.example.": [("AAAA", "fd00::1")],
    "mapped.pub.example.": [("AAAA", "::ffff:10.0.0.1")],
    "lo.pub.example.": [("A", "127.0.0.1")],
    "ok.pub.example.": [("A", "192.0.2.1"), ("AAAA", "2001:db8::1")],
    "cn.pub.example.": [("CNAME", "a.pub.example.")],
    "cnok.pub.example.": [("CNAME", "ok.pub.example.")],
    "x.lan.pub.example.": [("A", "10.0.0.5")],
    "cnlan.pub.example.": [("CNAME", "x.lan.pub.example.")],
    "txt.pub.example.": [("TXT", '"10.1.2.3"')],
    "pub.example.": [("NS", "ns.pub.example.")],
    "ns.pub.example.": [("A", "10.0.0.53")],
    "www.corp.example.": [("A", "10.9.9.9")],
}


def recursive(query: dns.message.Message) -> dns.message.Message:
    """Answers from :data:`ZONE` as a recursive resolver: CNAMEs followed, an NS answer
    with its addresses in the additional section."""
    response = dns.message.make_response(query, pad=0)
    question = query.question[0]
    name = question.name
    for _ in range(4):
        records = ZONE.get(name.to_text().lower(), [])
        wanted = [r for r in records if question.rdtype in
                  (dns.rdatatype.from_text(r[0]), dns.rdatatype.ANY)]
        cname = [r for r in records if r[0] == "CNAME"]
        for rdtype in dict.fromkeys(r[0] for r in (wanted or cname)):
            response.answer.append(dns.rrset.from_text(
                name, 300, "IN", rdtype, *[r[1] for r in records if r[0] == rdtype]))
            if rdtype == "NS":
                for r in records:
                    glue = dns.name.from_text(r[1])
                    for g in ZONE.get(glue.to_text(), []):
                        response.additional.append(
                            dns.rrset.from_text(glue, 300, "IN", g[0], g[1]))
        if wanted or not cname:
            break
        name = dns.name.from_text(cname[0][1])
    if not response.answer:
        response.authority.append(dns.rrset.from_text(
            "pub.example.", 300, "IN", "SOA", "ns.pub.example. h.pub.example. 1 3600 600 "
            "86400 300"))
    return response


def shown(response: dns.message.Message) -> list[str]:
    return [f"{rrset.name.to_text().lower()} {dns.rdatatype.to_text(rrset.rdtype)} "
            f"{rr.to_text()}" for rrset in response.answer for rr in rrset]


#: What each question's forwarded answer keeps (serve's and the stub's tests)
EXPECTED = {
    ("a", "A"): [],
    ("mixed", "A"): ["mixed.pub.example. A 192.0.2.1"],
    ("v6", "AAAA"): [],
    ("mapped", "AAAA"): [],
    ("lo", "A"): [],
    ("ok", "A"): ["ok.pub.example. A 192.0.2.1"],
    ("cn", "A"): ["cn.pub.example. CNAME a.pub.example."],
    ("cnok", "A"): ["cnok.pub.example. CNAME ok.pub.example.",
                    "ok.pub.example. A 192.0.2.1"],
    ("x.lan", "A"): ["x.lan.pub.example. A 10.0.0.5"],
    ("cnlan", "A"): ["cnlan.pub.example. CNAME x.lan.pub.example.",
                     "x.lan.pub.example. A 10.0.0.5"],
    ("txt", "TXT"): ['txt.pub.example. TXT "10.1.2.3"'],
    ("a", "ANY"): [],
}


async def ask(s: Served, transport: str, name: str, rdtype: str = "A",
              ) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    response = await s.ask(transport, query)
    assert response.id == query.id
    return response


@pytest.fixture
async def upstream(fakes: Fakes) -> FakeUpstream:
    return await fakes(answer=recursive)


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
@pytest.mark.parametrize("transport", ["udp", "dot"])
async def test_private_addresses_are_removed_as_unbound_removes_them(
        serve: ServeFactory, upstream: FakeUpstream, transport: str,
        log_queries: bool) -> None:
    s = await serve(upstreams=[udp_spec(upstream)], server={"log_queries": log_queries},
                    forward={"private_addresses": PRIVATE,
                             "private_domains": ["lan.pub.example."]})
    for (label, rdtype), want in EXPECTED.items():
        for _ in range(2):  # the second from the cache where the answer is cached
            response = await ask(s, transport, f"{label}.pub.example.", rdtype)
            assert response.rcode() == dns.rcode.NOERROR, (label, rdtype)
            assert sorted(shown(response)) == sorted(want), (label, rdtype)
            assert response.flags & dns.flags.RA
            assert not response.authority  # as Unbound: no SOA for what was removed
    # an NS answer keeps its addresses (additional) under minimal responses: filtered too
    ns = await ask(s, transport, "pub.example.", "NS")
    assert shown(ns) == ["pub.example. NS ns.pub.example."] and not ns.additional
    removed = s.service.statistics()["private_addresses"]["removed"]
    # 9 records in the first answers (a, mixed, v6, mapped, lo, cn's target, a ANY, the
    # NS glue; cn's target asked again by the chase), more where an answer is not cached
    assert removed >= 9
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(s.service.statistics))
    text = generate_latest(registry).decode()
    assert f"dnstls_private_addresses_removed_total {float(removed)}" in text


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_without_private_addresses_nothing_is_removed(
        serve: ServeFactory, upstream: FakeUpstream, log_queries: bool) -> None:
    s = await serve(upstreams=[udp_spec(upstream)], server={"log_queries": log_queries})
    assert shown(await ask(s, "udp", "a.pub.example.")) == ["a.pub.example. A 10.1.2.3"]
    assert "private_addresses" not in s.service.statistics()


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_forward_zones_may_hold_private_addresses(
        serve: ServeFactory, fakes: Fakes, upstream: FakeUpstream, log_queries: bool) -> None:
    """A forward zone's server is the operator's own: its answers keep private addresses
    (Unbound needs a private-domain line for it; documented)."""
    corp = await fakes(answer=recursive)
    s = await serve(upstreams=[udp_spec(upstream)], server={"log_queries": log_queries},
                    forward={"private_addresses": PRIVATE},
                    forward_zone=[{"name": "corp.example.",
                                   "upstream": [{"uri": corp.uri()}]}])
    assert shown(await ask(s, "udp", "www.corp.example.")) == [
        "www.corp.example. A 10.9.9.9"]
    assert shown(await ask(s, "udp", "a.pub.example.")) == []


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_reload_changes_private_addresses_and_drops_the_cache(
        serve: ServeFactory, upstream: FakeUpstream, log_queries: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    changes: dict[str, dict[str, object]] = {"forward": {"private_addresses": PRIVATE}}
    s = await serve(upstreams=[udp_spec(upstream)], server={"log_queries": log_queries},
                    forward={"private_addresses": PRIVATE}, reload_data=lambda: changes)
    assert shown(await ask(s, "udp", "mixed.pub.example.")) == [
        "mixed.pub.example. A 192.0.2.1"]
    assert shown(await ask(s, "udp", "ok.pub.example.")) == ["ok.pub.example. A 192.0.2.1"]
    changes["forward"] = {"private_addresses": ["192.0.2.0/24"]}
    caplog.set_level(logging.INFO, logger="dnstls.service")
    assert s.service.reload()
    assert "reload: private addresses now 192.0.2.0/24; 2 cached answers dropped" in caplog.text
    assert "restart dnstls" not in caplog.text
    # filtered with the new networks, not answered from what the old ones left
    assert shown(await ask(s, "udp", "mixed.pub.example.")) == [
        "mixed.pub.example. A 10.1.2.3"]
    assert shown(await ask(s, "dot", "ok.pub.example.")) == []
    changes["forward"] = {"private_addresses": []}  # all removed: nothing filtered
    assert s.service.reload()
    assert "reload: private addresses now none; " in caplog.text
    assert len(shown(await ask(s, "udp", "mixed.pub.example."))) == 2


async def test_reload_cannot_switch_private_addresses_on(
        serve: ServeFactory, upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    changes: dict[str, dict[str, object]] = {}
    s = await serve(upstreams=[udp_spec(upstream)], reload_data=lambda: changes)
    changes["forward"] = {"private_addresses": PRIVATE}
    assert s.service.reload()
    assert ("reload: forward.private_addresses changed; restart dnstls to apply it"
            in caplog.text)
    assert len(shown(await ask(s, "udp", "mixed.pub.example."))) == 2
