"""``[[forward_zone]]``: names at or under a zone go to its own upstreams.

Three recording upstreams on loopback -- the default one, a zone's over TCP or DoT and a
LAN router's over UDP -- and a client over UDP, TCP and DoT, on the wire path and the
message path (``server.log_queries = true``), with the cache on and off. Each test
asserts both sides: which upstream received which name, and what the client got.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import Served, ServeFactory
from prometheus_client import CollectorRegistry, generate_latest

from dnstls.metrics import ServiceCollector
from dnstls.proto import edns
from fakes import Behavior, FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)


def answering(address: str) -> Callable[[dns.message.Message], dns.message.Message]:
    """An upstream's answers: ``A address`` for type A, empty NOERROR otherwise."""

    def answer(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A",
                                                       address))
        return response

    return answer


def names(up: FakeUpstream) -> list[str]:
    return [r.message.question[0].name.to_text().lower() for r in up.received]


@contextlib.asynccontextmanager
async def upstreams(tmp_path: Path, corp_transport: str = "tcp",
                    ) -> AsyncIterator[tuple[FakeUpstream, FakeUpstream, FakeUpstream, TestPKI]]:
    """(default over UDP, corp over ``corp_transport``, LAN router over UDP, the corp
    upstream's PKI)."""
    (tmp_path / "up").mkdir(exist_ok=True)
    pki = TestPKI.create(tmp_path / "up")
    ctx = pki.server_context() if corp_transport == "tls" else None
    async with (FakeUpstream("udp", answer=answering("192.0.2.1")) as default,
                FakeUpstream(corp_transport, ssl_context=ctx,
                             answer=answering("10.0.0.1")) as corp,
                FakeUpstream("udp", answer=answering("192.168.1.1")) as lan):
        yield default, corp, lan, pki


def zones(corp: FakeUpstream, lan: FakeUpstream, pki: TestPKI) -> list[dict[str, Any]]:
    corp_table: dict[str, Any] = {"uri": corp.uri("dns.test" if corp.transport == "tls"
                                                  else None)}
    if corp.transport == "tls":
        corp_table["ca_file"] = pki.ca_file
    return [
        {"name": "Corp.Example.", "upstream": [corp_table]},
        # under a default zone (168.192.in-addr.arpa.): carved out of it
        {"name": "1.168.192.in-addr.arpa", "upstream": [{"uri": lan.uri()}]},
        # a default zone itself
        {"name": "home.arpa", "upstream": [{"uri": lan.uri()}], "strategy": "ordered"},
    ]


async def ask(s: Served, transport: str, name: str, rdtype: str = "A",
              ) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    response = await s.ask(transport, query)
    assert response.id == query.id
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in response.answer for rr in rrset]


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
@pytest.mark.parametrize(("transport", "corp_transport"),
                         [("udp", "tcp"), ("tcp", "udp"), ("dot", "tls")])
async def test_names_go_to_their_zone(serve: ServeFactory, tmp_path: Path, transport: str,
                                      corp_transport: str, log_queries: bool,
                                      cache: bool) -> None:
    async with upstreams(tmp_path, corp_transport) as (default, corp, lan, pki):
        s = await serve(upstreams=[default.spec()], forward_zone=zones(corp, lan, pki),
                        server={"log_queries": log_queries}, cache={"enabled": cache})
        expected = {
            "www.corp.example.": ["10.0.0.1"],
            "Deep.Sub.CORP.example.": ["10.0.0.1"],
            "corp.example.": ["10.0.0.1"],
            "xcorp.example.": ["192.0.2.1"],
            "www.example.net.": ["192.0.2.1"],
            "router.home.arpa.": ["192.168.1.1"],
        }
        for name, want in expected.items():
            response = await ask(s, transport, name)
            assert response.rcode() == dns.rcode.NOERROR, name
            assert addresses(response) == want, name
            assert response.question[0].name.to_text() == name  # its own case
        ptr = await ask(s, transport, "5.1.168.192.in-addr.arpa.", "PTR")
        assert ptr.rcode() == dns.rcode.NOERROR and not ptr.flags & dns.flags.AA
        # the rest of the default zone is still answered here, never sent upstream
        other = await ask(s, transport, "5.2.168.192.in-addr.arpa.", "PTR")
        assert other.rcode() == dns.rcode.NXDOMAIN and other.flags & dns.flags.AA
        # a configured local zone (example.test., conftest) still answers its names
        local = await ask(s, transport, "www.example.test.")
        assert local.flags & dns.flags.AA
        assert sorted(names(corp)) == ["corp.example.", "deep.sub.corp.example.",
                                       "www.corp.example."]
        assert sorted(names(default)) == ["www.example.net.", "xcorp.example."]
        assert sorted(names(lan)) == ["5.1.168.192.in-addr.arpa.", "router.home.arpa."]
        # again: from the cache when it is on, from the same upstreams when it is off
        for name, want in expected.items():
            assert addresses(await ask(s, transport, name)) == want
        assert len(corp.received) == (3 if cache else 6)
        assert len(default.received) == (2 if cache else 4)


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_dead_zone_servfails_while_other_names_resolve(
        serve: ServeFactory, tmp_path: Path, log_queries: bool) -> None:
    async with (FakeUpstream("udp", answer=answering("192.0.2.1")) as default,
                FakeUpstream("udp", behavior=Behavior.STALL) as dead):
        s = await serve(upstreams=[default.spec()],
                        forward_zone=[{"name": "corp.example",
                                       "upstream": [{"uri": dead.uri(),
                                                     "query_timeout": 0.3}]}],
                        server={"log_queries": log_queries, "query_timeout": 0.8})
        client = await s.connect()
        for i in range(4):  # the fourth finds the upstream down: SERVFAIL at once
            await client.send(dns.message.make_query(f"h{i}.corp.example", "A",
                                                     use_edns=0))
            response = await client.recv(5)  # bounded by the query timeout
            assert response.rcode() == dns.rcode.SERVFAIL and not response.answer
            ede = edns.find_option(response, edns.EDE)
            assert isinstance(ede, dns.edns.EDEOption)
            assert ede.code == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
            assert dead.uri() in (ede.text or "")
            other = dns.message.make_query(f"h{i}.example.net", "A", use_edns=0)
            await client.send(other)
            assert addresses(await client.recv(5)) == ["192.0.2.1"]
        await client.aclose()
        assert len(default.received) == 4 and len(dead.received) >= 1
        stats = s.service.statistics()["zone_upstreams"]["corp.example."][dead.spec().name]
        assert stats["errors"]["timeout"] >= 1 and stats["down"]


async def test_same_upstream_in_two_zones_counted_apart(serve: ServeFactory,
                                                        tmp_path: Path) -> None:
    async with upstreams(tmp_path) as (default, corp, _lan, _pki):
        shared = {"uri": corp.uri()}
        s = await serve(upstreams=[default.spec()],
                        forward_zone=[{"name": "a.example", "upstream": [shared]},
                                      {"name": "b.example", "upstream": [shared]}])
        for name in ("x.a.example.", "y.a.example.", "x.b.example.", "x.example."):
            assert (await ask(s, "udp", name)).rcode() == dns.rcode.NOERROR
        stats = s.service.statistics()
        name = corp.spec().name
        assert stats["zone_upstreams"]["a.example."][name]["queries"] == 2
        assert stats["zone_upstreams"]["b.example."][name]["queries"] == 1
        assert list(stats["upstreams"]) == [default.spec().name]
        assert stats["upstreams"][default.spec().name]["queries"] == 1
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServiceCollector(s.service.statistics))
        text = generate_latest(registry).decode()
        assert (f'dnstls_upstream_queries_total{{upstream="{name}",zone="a.example."}} 2.0'
                in text)
        assert (f'dnstls_upstream_queries_total{{upstream="{name}",zone="b.example."}} 1.0'
                in text)
        assert (f'dnstls_upstream_queries_total{{upstream="{default.spec().name}"}} 1.0'
                in text)


async def test_start_up_log_names_each_zone(serve: ServeFactory, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with upstreams(tmp_path) as (default, corp, lan, pki):
        await serve(upstreams=[default.spec()],
                    forward_zone=[*zones(corp, lan, pki),
                                  {"name": "sub.example.test",
                                   "upstream": [{"uri": corp.uri()}]}])
    lines = [r.getMessage() for r in caplog.records]
    assert f"forward zone corp.example.: forwarding to {corp.spec().name}" in lines
    assert f"forward zone home.arpa.: forwarding to {lan.spec().name}" in lines
    assert f"names outside the forward zones: forwarding to {default.spec().name}" in lines
    assert ("forward zone home.arpa.: forwarded instead of answered here as a default "
            "zone (as with local.nodefault)") in lines
    assert ("forward zone 1.168.192.in-addr.arpa.: forwarded instead of answered here; "
            "the rest of the default zone 168.192.in-addr.arpa. still is") in lines
    assert any(line.startswith("forward zone sub.example.test. is at or under the local "
                               "zone example.test.") for line in lines)


async def test_forward_zone_needs_no_nodefault(serve: ServeFactory, tmp_path: Path) -> None:
    """The docs' advice: a home router's PTR zone as a forward zone, no local.nodefault."""
    async with upstreams(tmp_path) as (default, _corp, lan, _pki):
        s = await serve(upstreams=[default.spec()],
                        forward_zone=[{"name": "168.192.in-addr.arpa",
                                       "upstream": [{"uri": lan.uri()}]}])
        for transport in ("udp", "dot"):
            response = await ask(s, transport, "1.1.168.192.in-addr.arpa.", "PTR")
            assert response.rcode() == dns.rcode.NOERROR
            assert not response.flags & dns.flags.AA
        # other private reverse zones are still answered here
        ten = await ask(s, "udp", "1.0.0.10.in-addr.arpa.", "PTR")
        assert ten.rcode() == dns.rcode.NXDOMAIN and ten.flags & dns.flags.AA
        # (twice: a NODATA without SOA is not cached, RFC 2308 §5)
        assert names(lan) == ["1.1.168.192.in-addr.arpa."] * 2
        assert default.received == []


async def test_reload_keeps_the_zones_and_names_them_waiting(
        serve: ServeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP rebuilds local data around the running forward zones (the carve-out out of
    168.192.in-addr.arpa. stays; local data under it is answered here); changed forward
    zones wait for a restart."""
    async with upstreams(tmp_path) as (default, _corp, lan, _pki):
        changes: dict[str, dict[str, Any]] = {}
        s = await serve(upstreams=[default.spec()], reload_data=lambda: changes,
                        forward_zone=[{"name": "1.168.192.in-addr.arpa",
                                       "upstream": [{"uri": lan.uri()}]}])
        changes["local"] = {"data": ["9.1.168.192.in-addr.arpa. PTR nas.lan."]}
        caplog.set_level(logging.INFO, logger="dnstls.service")
        assert s.service.reload()
        assert "reload: local data changed" in caplog.text
        nas = await ask(s, "udp", "9.1.168.192.in-addr.arpa.", "PTR")
        assert nas.flags & dns.flags.AA and addresses(nas) == ["nas.lan."]
        other = await ask(s, "udp", "8.1.168.192.in-addr.arpa.", "PTR")
        assert other.rcode() == dns.rcode.NOERROR and not other.flags & dns.flags.AA
        sibling = await ask(s, "udp", "8.2.168.192.in-addr.arpa.", "PTR")
        assert sibling.rcode() == dns.rcode.NXDOMAIN and sibling.flags & dns.flags.AA
        assert names(lan) == ["8.1.168.192.in-addr.arpa."] and default.received == []
        # forward zones changed in the file: named as waiting for a restart
        running = s.service.config
        changed = dataclasses.replace(running, forward=dataclasses.replace(
            running.forward, zones=running.forward.zones[:0]))
        s.service._load_config = lambda: changed
        assert s.service.reload()
        assert "reload: forward.zones changed; restart dnstls to apply it" in caplog.text
        assert (await ask(s, "udp", "7.1.168.192.in-addr.arpa.", "PTR")).rcode() == 0
        assert names(lan)[-1] == "7.1.168.192.in-addr.arpa."
