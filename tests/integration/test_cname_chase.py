"""Incomplete CNAME chains completed (resolver/chase.py), as Unbound does.

Two recording fake upstreams that answer as authoritative servers do (a CNAME out of
their zone is answered alone, RFC 1034 §4.3.2): the forward zone ``corp.example.``'s
and the default one (``vendor.example.`` and the rest). A client over UDP, TCP and DoT,
on the wire path and the message path (``server.log_queries``), cache on and off. Each
test asserts both sides: which upstream received which name, and what the client got.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import Served, ServeFactory

from dnstls.proto import edns
from dnstls.resolver.chase import MAX_STEPS
from fakes import Behavior, FakeUpstream

pytestmark = pytest.mark.timeout(60)

CORP = {
    "printer.corp.example.": [("CNAME", 300, "printer.vendor.example.")],
    "nx.corp.example.": [("CNAME", 300, "missing.vendor.example.")],
    "nodata.corp.example.": [("CNAME", 300, "onlytxt.vendor.example.")],
    "multi.corp.example.": [("CNAME", 300, "step.vendor.example.")],
    "step2.corp.example.": [("CNAME", 200, "final.vendor.example.")],
    "loop.corp.example.": [("CNAME", 300, "loop.vendor.example.")],
    "local.corp.example.": [("CNAME", 300, "www.example.test.")],  # conftest's zone
    "dead.corp.example.": [("CNAME", 300, "x.dead.example.")],
    "inzone.corp.example.": [("CNAME", 300, "www.corp.example.")],
    "www.corp.example.": [("A", 60, "10.0.0.1")],
}
VENDOR = {
    "printer.vendor.example.": [("A", 30, "198.51.100.7"), ("AAAA", 30, "2001:db8::7")],
    "onlytxt.vendor.example.": [("TXT", 300, "hello")],
    "step.vendor.example.": [("CNAME", 250, "step2.corp.example.")],
    "final.vendor.example.": [("A", 40, "198.51.100.9")],
    "loop.vendor.example.": [("CNAME", 300, "loop.corp.example.")],
}
# a chain that crosses between the two zones at every step: longN -> longN+1 -> ...
for _i in range(0, 2 * MAX_STEPS + 2):
    (CORP if _i % 2 == 0 else VENDOR)[f"long{_i}.{'corp' if _i % 2 == 0 else 'vendor'}"
                                      ".example."] = [
        ("CNAME", 300, f"long{_i + 1}.{'vendor' if _i % 2 == 0 else 'corp'}.example.")]
CORP[f"long{2 * MAX_STEPS + 2}.corp.example."] = [("A", 300, "10.0.0.99")]


def authoritative(zone: str, data: dict[str, list[tuple[str, int, str]]],
                  ) -> Callable[[dns.message.Message], dns.message.Message]:
    """Answers as an authoritative server for ``zone`` holding ``data``: the RRset, or
    the name's CNAME (in-zone targets followed, others not), else NODATA or NXDOMAIN
    with the SOA (its MINIMUM 90). AA set, RA clear."""
    origin = dns.name.from_text(zone)

    def answer(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        question = query.question[0]
        name = question.name
        for _ in range(8):
            records = data.get(name.to_text().lower())
            if records is None:
                if not response.answer:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break
            wanted = [r for r in records
                      if dns.rdatatype.from_text(r[0]) == question.rdtype]
            cname = [r for r in records if r[0] == "CNAME"]
            chosen = wanted or cname
            if not chosen:
                break
            response.answer.append(dns.rrset.from_text(
                name, chosen[0][1], "IN", chosen[0][0], *[r[2] for r in chosen]))
            if wanted:
                return response
            target = dns.name.from_text(cname[0][2])
            if not target.is_subdomain(origin):
                return response  # out of zone: not followed
            name = target
        response.authority.append(dns.rrset.from_text(
            origin, 120, "IN", "SOA", f"ns.{zone} h.{zone} 1 3600 600 86400 90"))
        return response

    return answer


def names(up: FakeUpstream) -> list[str]:
    return [r.message.question[0].name.to_text().lower() for r in up.received]


@contextlib.asynccontextmanager
async def upstreams(tmp_path: Path, corp_transport: str = "udp",
                    ) -> AsyncIterator[tuple[FakeUpstream, FakeUpstream, dict[str, Any]]]:
    """(the default upstream over UDP, corp's over ``corp_transport``, the zone table)."""
    from fakes import TestPKI

    (tmp_path / "up").mkdir(exist_ok=True)
    pki = TestPKI.create(tmp_path / "up")
    ctx = pki.server_context() if corp_transport == "tls" else None
    async with (FakeUpstream("udp", answer=authoritative("vendor.example.", VENDOR))
                as default,
                FakeUpstream(corp_transport, ssl_context=ctx,
                             answer=authoritative("corp.example.", CORP)) as corp):
        table: dict[str, Any] = {"uri": corp.uri("dns.test" if corp_transport == "tls"
                                                 else None)}
        if corp_transport == "tls":
            table["ca_file"] = pki.ca_file
        yield default, corp, {"name": "corp.example.", "upstream": [table]}


async def ask(s: Served, transport: str, name: str, rdtype: str = "A", *,
              flags: int = dns.flags.RD, do: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do)
    query.flags = flags
    response = await s.ask(transport, query)
    assert response.id == query.id
    return response


def records(response: dns.message.Message) -> list[str]:
    """The answer section in order, TTLs left out (they age), names lower-cased (the
    question's case is echoed, and so are the names compressed to it)."""
    return [f"{rrset.name.to_text().lower()} {dns.rdatatype.to_text(rrset.rdtype)} "
            f"{rr.to_text().lower()}" for rrset in response.answer for rr in rrset]


def ede(response: dns.message.Message) -> dns.edns.EDEOption:
    option = edns.find_option(response, edns.EDE)
    assert isinstance(option, dns.edns.EDEOption), response
    return option


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
@pytest.mark.parametrize(("transport", "corp_transport"),
                         [("udp", "udp"), ("tcp", "tcp"), ("dot", "tls")])
async def test_chain_out_of_the_zone_is_completed(serve: ServeFactory, tmp_path: Path,
                                                  transport: str, corp_transport: str,
                                                  log_queries: bool, cache: bool) -> None:
    async with upstreams(tmp_path, corp_transport) as (default, corp, zone):
        s = await serve(upstreams=[default.spec()], forward_zone=[zone],
                        server={"log_queries": log_queries}, cache={"enabled": cache})
        response = await ask(s, transport, "Printer.Corp.Example.")
        assert response.rcode() == dns.rcode.NOERROR
        assert records(response) == [
            "printer.corp.example. CNAME printer.vendor.example.",
            "printer.vendor.example. A 198.51.100.7"]
        assert [rrset.ttl for rrset in response.answer] == [300, 30]  # each its own
        assert response.flags & dns.flags.RA and not response.flags & dns.flags.AA
        assert response.question[0].name.to_text() == "Printer.Corp.Example."
        assert names(corp) == ["printer.corp.example."]
        assert names(default) == ["printer.vendor.example."]
        target = default.received[0].message
        assert target.flags & dns.flags.RD and not target.flags & dns.flags.CD
        # again, and the target itself: from the cache, or asked again without it
        again = await ask(s, transport, "printer.corp.example.")
        assert records(again) == records(response)
        direct = await ask(s, transport, "printer.vendor.example.")
        assert records(direct) == ["printer.vendor.example. A 198.51.100.7"]
        if cache:
            assert len(corp.received) == 1 and len(default.received) == 1
        else:
            assert len(corp.received) == 2 and len(default.received) == 3
        stats = s.service.statistics()["cname_chase"]
        assert stats["chased"] == (1 if cache else 2) and stats["chase_failures"] == 0


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
@pytest.mark.parametrize("transport", ["udp", "dot"])
async def test_chain_outcomes_as_unbound(serve: ServeFactory, tmp_path: Path,
                                         transport: str, log_queries: bool) -> None:
    """The cases of the table in docs/upstreams.md (measured against Unbound 1.17)."""
    async with upstreams(tmp_path) as (default, _corp, zone):
        s = await serve(upstreams=[default.spec()], forward_zone=[zone],
                        server={"log_queries": log_queries})
        nx = await ask(s, transport, "nx.corp.example.")
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert records(nx) == ["nx.corp.example. CNAME missing.vendor.example."]
        assert [r.to_text().split()[0] for r in nx.authority] == ["vendor.example."]
        assert nx.authority[0].rdtype == dns.rdatatype.SOA
        nodata = await ask(s, transport, "nodata.corp.example.")
        assert nodata.rcode() == dns.rcode.NOERROR
        assert records(nodata) == ["nodata.corp.example. CNAME onlytxt.vendor.example."]
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA
        multi = await ask(s, transport, "multi.corp.example.")
        assert records(multi) == ["multi.corp.example. CNAME step.vendor.example.",
                                  "step.vendor.example. CNAME step2.corp.example.",
                                  "step2.corp.example. CNAME final.vendor.example.",
                                  "final.vendor.example. A 198.51.100.9"]
        aaaa = await ask(s, transport, "printer.corp.example.", "AAAA")
        assert records(aaaa)[-1] == "printer.vendor.example. AAAA 2001:db8::7"
        # the CNAME itself, ANY, and a chain complete in the zone: not followed
        for name, rdtype in (("printer.corp.example.", "CNAME"),
                             ("printer.corp.example.", "ANY"),
                             ("inzone.corp.example.", "A")):
            before = len(default.received)
            response = await ask(s, transport, name, rdtype)
            assert response.rcode() == dns.rcode.NOERROR
            assert len(default.received) == before, (name, rdtype)
        # a target in local data (the conftest's zone example.test.): answered here
        local = await ask(s, transport, "local.corp.example.")
        assert records(local) == ["local.corp.example. CNAME www.example.test.",
                                  "www.example.test. A 192.0.2.1"]
        assert "www.example.test." not in names(default)


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_loop_and_too_long_chain_servfail(serve: ServeFactory, tmp_path: Path,
                                                log_queries: bool) -> None:
    async with upstreams(tmp_path) as (default, corp, zone):
        s = await serve(upstreams=[default.spec()], forward_zone=[zone],
                        server={"log_queries": log_queries})
        loop = await ask(s, "dot", "loop.corp.example.")
        assert loop.rcode() == dns.rcode.SERVFAIL and not loop.answer
        assert ede(loop).code == dns.edns.EDECode.OTHER
        assert "CNAME loop at loop.corp.example." in (ede(loop).text or "")
        assert names(corp).count("loop.corp.example.") == 1  # the loop is not re-asked
        # MAX_STEPS targets (11 CNAMEs, one per upstream answer) are followed; one more
        # is SERVFAIL, as Unbound 1.17 answers
        before = len(corp.received) + len(default.received)
        long = await ask(s, "dot", f"long{MAX_STEPS + 1}.corp.example.")  # 12 CNAMEs
        assert long.rcode() == dns.rcode.SERVFAIL and not long.answer
        assert f"longer than {MAX_STEPS} steps" in (ede(long).text or "")
        assert len(corp.received) + len(default.received) - before == MAX_STEPS + 1
        # the names of its chain were not failed with it: their own chains fit
        fits = await ask(s, "dot", f"long{MAX_STEPS + 2}.vendor.example.")  # 11
        assert fits.rcode() == dns.rcode.NOERROR and len(fits.answer) == MAX_STEPS + 1


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_dead_target_upstream_servfails_in_time(serve: ServeFactory, tmp_path: Path,
                                                      log_queries: bool) -> None:
    async with (upstreams(tmp_path) as (default, _corp, zone),
                FakeUpstream("udp", behavior=Behavior.STALL) as dead):
        s = await serve(upstreams=[default.spec()],
                        forward_zone=[zone, {"name": "dead.example",
                                             "upstream": [{"uri": dead.uri()}]}],
                        server={"log_queries": log_queries, "query_timeout": 0.8})
        response = await asyncio.wait_for(ask(s, "dot", "dead.corp.example."), 5)
        assert response.rcode() == dns.rcode.SERVFAIL and not response.answer
        assert ede(response).code == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
        text = ede(response).text or ""
        assert "CNAME target x.dead.example." in text and dead.uri() in text
        assert names(dead) == ["x.dead.example."]
        assert s.service.statistics()["cname_chase"]["chase_failures"] == 1


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_target_asked_with_the_clients_cd_and_do(serve: ServeFactory,
                                                       tmp_path: Path,
                                                       log_queries: bool) -> None:
    async with upstreams(tmp_path) as (default, _corp, zone):
        s = await serve(upstreams=[default.spec()], forward_zone=[zone],
                        server={"log_queries": log_queries})
        response = await ask(s, "tcp", "printer.corp.example.",
                             flags=dns.flags.RD | dns.flags.CD, do=True)
        assert response.flags & dns.flags.CD
        assert response.ednsflags & dns.flags.DO
        assert records(response)[-1] == "printer.vendor.example. A 198.51.100.7"
        target = default.received[0].message
        assert target.flags & dns.flags.CD and target.ednsflags & dns.flags.DO
        # without them: its own question, asked again (the cache keys on CD and DO)
        plain = await ask(s, "tcp", "printer.corp.example.")
        assert records(plain) == records(response)
        assert len(default.received) == 2
        assert not default.received[1].message.flags & dns.flags.CD


async def test_complete_chain_from_a_recursive_upstream_not_chased(
        serve: ServeFactory, tmp_path: Path) -> None:
    def recursive(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        name = query.question[0].name
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME",
                                                   "cdn.example.net."))
        response.answer.append(dns.rrset.from_text("cdn.example.net.", 20, "IN", "A",
                                                   "192.0.2.80"))
        return response

    async with FakeUpstream("udp", answer=recursive) as up:
        s = await serve(upstreams=[up.spec()])
        for transport in ("udp", "tcp", "dot"):
            response = await ask(s, transport, f"www.{transport}.example.")
            assert records(response)[-1] == "cdn.example.net. A 192.0.2.80"
        assert len(up.received) == 3
        assert s.service.statistics()["cname_chase"]["chased"] == 0


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_target_made_local_by_a_reload_is_answered_here(serve: ServeFactory,
                                                              tmp_path: Path,
                                                              log_queries: bool) -> None:
    async with upstreams(tmp_path) as (default, _corp, zone):
        changes: dict[str, dict[str, Any]] = {}
        s = await serve(upstreams=[default.spec()], forward_zone=[zone],
                        server={"log_queries": log_queries}, cache={"enabled": False},
                        reload_data=lambda: changes)
        before = await ask(s, "udp", "printer.corp.example.")
        assert records(before)[-1] == "printer.vendor.example. A 198.51.100.7"
        changes["local"] = {"data": ["printer.vendor.example. 60 A 10.1.1.1"]}
        assert s.service.reload()
        after = await ask(s, "udp", "printer.corp.example.")
        assert records(after) == ["printer.corp.example. CNAME printer.vendor.example.",
                                  "printer.vendor.example. A 10.1.1.1"]
        assert names(default) == ["printer.vendor.example."]  # before the reload only
