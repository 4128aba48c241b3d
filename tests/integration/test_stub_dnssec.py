"""DNSSEC validation in ``dnstls stub`` (``dnssec = true``, ``--dnssec``): serve's
ValidatingStage in each generation, the message path only while it validates, and a
reload that switches validation on or off (docs/stub.md, "DNSSEC").

A fake DoT upstream answers as a recursive resolver would, from the signed hierarchy of
tests/fakes/signed_zones.py built in memory (secure.test. signed, insecure.test.
delegated without DS, bogus.test. with a corrupted signature), with the root KSK's DS
as the stub's trust anchor. The answers against nsd and real peers are compared in
tests/interop/test_dnssec_stub_stubby.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
import test_stub
from conftest import Fakes
from prometheus_client import CollectorRegistry, generate_latest
from test_stub import TIMEOUT_MS, StartStub, Stub, ede_codes, tls_upstream

from dnstls.metrics import ServiceCollector
from fakes import FakeUpstream, TestPKI
from fakes.signed_zones import answer, build_hierarchy

#: test_stub.py's fixture: a stub on a free port, closed after the test
stub = test_stub.stub

pytestmark = pytest.mark.timeout(60)





@pytest.fixture(scope="module")
def zones() -> dict[str, dns.zone.Zone]:
    return build_hierarchy()[0]


@pytest.fixture
def root_ds(zones: dict[str, dns.zone.Zone], tmp_path: Path) -> Path:
    """The root KSK's DS (the stub's trust anchor file)."""
    import dns.dnssec  # here: signed_zones imported it without DSA's deprecation warning

    keys = zones["."].nodes[dns.name.root].get_rdataset(dns.rdataclass.IN,
                                                         dns.rdatatype.DNSKEY)
    assert keys is not None
    ksk = next(k for k in keys if k.flags & 1)
    path = tmp_path / "root.ds"
    path.write_text(f". IN DS {dns.dnssec.make_ds(dns.name.root, ksk, 2).to_text()}\n")
    return path


def recursive(zones: dict[str, dns.zone.Zone]) -> Callable[[dns.message.Message],
                                                            dns.message.Message]:
    """A recursive resolver's answers from ``zones`` (signatures when asked with DO; a
    NODATA answer carries the NSEC at the name, which proves insecure.test. has no DS)."""

    def respond(query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        signed = answer(zones, question.name, question.rdtype)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        response.answer = signed.answer
        response.authority = signed.authority
        if not response.answer and question.rdtype == dns.rdatatype.DS:
            parent = zones["test."] if question.name.parent() == dns.name.from_text(
                "test.") else None
            node = parent.get_node(question.name) if parent is not None else None
            if node is not None:
                for rdtype, covers in ((dns.rdatatype.NSEC, dns.rdatatype.NONE),
                                       (dns.rdatatype.RRSIG, dns.rdatatype.NSEC)):
                    rds = node.get_rdataset(dns.rdataclass.IN, rdtype, covers)
                    if rds is not None:
                        response.find_rrset(response.authority, question.name,
                                            dns.rdataclass.IN, rdtype, covers,
                                            create=True).update(rds)
        if not query.ednsflags & dns.flags.DO:
            for section in (response.answer, response.authority):
                section[:] = [r for r in section if r.rdtype not in (
                    dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3)]
        return response

    return respond


@pytest.fixture
async def upstream(fakes: Fakes, pki: TestPKI, zones: dict[str, dns.zone.Zone],
                   ) -> FakeUpstream:
    return await fakes("tls", ssl_context=pki.server_context(), answer=recursive(zones))


def settings(upstream: FakeUpstream, pki: TestPKI, **extra: Any) -> dict[str, Any]:
    return {"upstream_recursive_servers": [tls_upstream(upstream, pki)],
            "local": {"nodefault": ["test."]}, **extra}


def ask_do(name: str, *, cd: bool = False) -> dns.message.Message:
    message = dns.message.make_query(name, "A", want_dnssec=True)
    if cd:
        message.flags |= dns.flags.CD
    return message


def outcome(response: dns.message.Message) -> tuple[str, bool, list[int]]:
    return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AD),
            ede_codes(response))


def wire_forwarded(s: Stub) -> int:
    return int(s.service.statistics().get("wire", {}).get("forwarded", 0))


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_secure_insecure_bogus_as_serve_answers(
        stub: StartStub, upstream: FakeUpstream, pki: TestPKI, root_ds: Path,
        tcp: bool) -> None:
    s = await stub(settings(upstream, pki, dnssec=True, dnssec_trust_anchors=str(root_ds),
                            metrics="127.0.0.1:0"))
    assert s.service.handler is not None and s.service.handler.wire is None
    for _round in range(2):  # the second from the cache
        secure = await s.ask(ask_do("www.secure.test."), tcp=tcp)
        assert outcome(secure) == ("NOERROR", True, [])
        assert {r.rdtype for r in secure.answer} == {dns.rdatatype.A, dns.rdatatype.RRSIG}
        assert outcome(await s.ask(ask_do("www.insecure.test."), tcp=tcp)) == (
            "NOERROR", False, [])
        assert outcome(await s.ask(ask_do("www.bogus.test."), tcp=tcp)) == (
            "SERVFAIL", False, [6])
        # CD: the client validates itself; the bogus data is handed over, AD clear
        bogus_cd = await s.ask(ask_do("www.bogus.test.", cd=True), tcp=tcp)
        assert outcome(bogus_cd) == ("NOERROR", False, [])
        assert bogus_cd.flags & dns.flags.CD
        # no DO: AD only when asked for (RFC 6840 §5.8), no signatures
        plain = await s.ask(dns.message.make_query("www.secure.test.", "A"), tcp=tcp)
        assert outcome(plain) == ("NOERROR", False, []) and len(plain.answer) == 1
    # the upstream was asked with DO and CD, whatever the client asked
    asked = [r.message for r in upstream.received]
    assert asked and all(m.ednsflags & dns.flags.DO and m.flags & dns.flags.CD
                         for m in asked)
    assert wire_forwarded(s) == 0
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(s.service.statistics))
    text = generate_latest(registry).decode()
    assert 'dnstls_dnssec_validations_total{kind="secure"}' in text
    # once for the DO query, once for the CD one (each answer then from the cache)
    assert 'dnstls_dnssec_validations_total{kind="bogus"} 2.0' in text


async def test_banner_says_where_the_anchors_come_from(
        stub: StartStub, upstream: FakeUpstream, pki: TestPKI, root_ds: Path) -> None:
    from dnstls.stub import banner

    s = await stub(settings(upstream, pki, dnssec=True, dnssec_trust_anchors=str(root_ds),
                            domain_insecure=["corp.example."]))
    lines = banner(s.runtime.config, s.service.endpoints)
    assert (f"DNSSEC validation on: trust anchors for . from {root_ds}; not validated: "
            "corp.example.") in lines


async def test_domain_insecure_is_not_validated(stub: StartStub, upstream: FakeUpstream,
                                                pki: TestPKI, root_ds: Path) -> None:
    s = await stub(settings(upstream, pki, dnssec=True, dnssec_trust_anchors=str(root_ds),
                            domain_insecure=["bogus.test."]))
    assert outcome(await s.ask(ask_do("www.bogus.test."))) == ("NOERROR", False, [])
    assert outcome(await s.ask(ask_do("www.secure.test."))) == ("NOERROR", True, [])


def write(path: Path, upstream: FakeUpstream, pki: TestPKI, dnssec: str = "") -> None:
    item = tls_upstream(upstream, pki)
    lines = ['listen_addresses = ["127.0.0.1@0"]', f"timeout = {TIMEOUT_MS}", dnssec,
             "[local]", 'nodefault = ["test."]', "[[upstream_recursive_servers]]"]
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")


def add_anchor(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


async def test_reload_switches_validation_on_and_off(
        stub: StartStub, upstream: FakeUpstream, pki: TestPKI, root_ds: Path,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Off: the upstream's answer as it is, on the wire path, cached. A reload with
    ``dnssec = true`` drops every cached answer and keeps forwarded queries off the wire
    path: the same question is validated (bogus: SERVFAIL). Off again: the wire path
    forwards again, unvalidated."""
    path = tmp_path / "stub.toml"
    write(path, upstream, pki)
    s = await stub(path=path)
    assert outcome(await s.ask(ask_do("www.bogus.test."))) == ("NOERROR", False, [])
    assert wire_forwarded(s) == 1
    assert outcome(await s.ask(ask_do("www.bogus.test."))) == ("NOERROR", False, [])
    received = len(upstream.received)  # the repeat came from the cache
    caplog.set_level(logging.INFO, logger="dnstls.stub")
    write(path, upstream, pki, f'dnssec = true\ndnssec_trust_anchors = "{root_ds}"')
    assert s.service.reload()
    assert "DNSSEC validation on: trust anchors for . from" in caplog.text
    assert "cached answers dropped" in caplog.text
    assert outcome(await s.ask(ask_do("www.bogus.test."))) == ("SERVFAIL", False, [6])
    assert outcome(await s.ask(ask_do("www.secure.test."))) == ("NOERROR", True, [])
    assert len(upstream.received) > received and wire_forwarded(s) == 1
    forwarding = s.runtime.forwarding
    assert forwarding is not None
    assert forwarding.statistics()["dnssec"]["validations"]["bogus"] == 1
    fetches = forwarding.statistics()["dnssec"]["fetches"]
    # a reload with the same settings keeps the cache (the secure answer is a hit)
    caplog.clear()
    assert s.service.reload()
    assert "cached answers dropped" not in caplog.text
    hits = forwarding.statistics()["cache"]["hits"]
    assert outcome(await s.ask(ask_do("www.secure.test."))) == ("NOERROR", True, [])
    assert forwarding.statistics()["cache"]["hits"] == hits + 1
    # the anchor file changed under the same name: the cache goes
    caplog.clear()
    add_anchor(root_ds, "example. IN DS 1 13 2 " + "AB" * 32)
    assert s.service.reload()
    assert "trust anchors for ., example. from" in caplog.text
    assert "cached answers dropped" in caplog.text
    assert outcome(await s.ask(ask_do("www.secure.test."))) == ("NOERROR", True, [])
    assert forwarding.statistics()["cache"]["hits"] == hits + 1
    # off again: forwarded on the wire path, the upstream's data as it is
    write(path, upstream, pki)
    assert s.service.reload()
    assert outcome(await s.ask(ask_do("www.bogus.test."))) == ("NOERROR", False, [])
    assert wire_forwarded(s) == 2
    # the counts go on (exported as counters): validations, and the fetches of the
    # validators of the generations closed since
    dnssec = forwarding.statistics()["dnssec"]
    assert dnssec["validations"]["bogus"] == 1 and dnssec["fetches"] >= fetches > 0
