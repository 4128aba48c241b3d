"""Special-use and locally served names are answered by ``serve`` and ``stub`` themselves
and never reach an upstream; ``nodefault`` zones and ``default_zones = false`` do.

A scripted upstream on loopback records every query it receives. Each name is asked
twice over UDP, TCP and DoT (the second answer comes from the kept rendering, the fast
path) on both answer paths (the wire path, and the message path ``log_queries`` takes).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest
from conftest import Fakes, ServeFactory
from conftest import udp_spec as spec

from dnstls.stub import StubRuntime, stub_config_from_data
from fakes import FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)

V6_LOOPBACK = "1." + "0." * 31 + "ip6.arpa."
SOA = "localhost. nobody.invalid. 1 3600 1200 604800 10800"

# (name, type, class) -> (rcode, answer lines, SOA owner in authority or "")
EXPECTED: list[tuple[tuple[str, str, str], tuple[str, list[str], str]]] = [
    (("localhost.", "A", "IN"), ("NOERROR", ["localhost. 10800 IN A 127.0.0.1"], "")),
    (("LocalHost.", "AAAA", "IN"), ("NOERROR", ["LocalHost. 10800 IN AAAA ::1"], "")),
    (("localhost.", "MX", "IN"), ("NOERROR", [], "localhost.")),
    (("foo.localhost.", "A", "IN"), ("NOERROR", ["foo.localhost. 10800 IN A 127.0.0.1"], "")),
    (("1.0.0.127.in-addr.arpa.", "PTR", "IN"),
     ("NOERROR", ["1.0.0.127.in-addr.arpa. 10800 IN PTR localhost."], "")),
    ((V6_LOOPBACK, "PTR", "IN"), ("NOERROR", [f"{V6_LOOPBACK} 10800 IN PTR localhost."], "")),
    (("foo.onion.", "A", "IN"), ("NXDOMAIN", [], "onion.")),
    (("foo.test.", "A", "IN"), ("NXDOMAIN", [], "test.")),
    (("foo.invalid.", "A", "IN"), ("NXDOMAIN", [], "invalid.")),
    (("router.home.arpa.", "A", "IN"), ("NXDOMAIN", [], "home.arpa.")),
    (("1.0.0.10.in-addr.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "10.in-addr.arpa.")),
    (("1.0.20.172.in-addr.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "20.172.in-addr.arpa.")),
    (("1.0.168.192.in-addr.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "168.192.in-addr.arpa.")),
    (("1.0.254.169.in-addr.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "254.169.in-addr.arpa.")),
    (("1.0.64.100.in-addr.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "64.100.in-addr.arpa.")),
    (("255.255.255.255.in-addr.arpa.", "PTR", "IN"),
     ("NOERROR", [], "255.255.255.255.in-addr.arpa.")),
    (("1.d.f.ip6.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "d.f.ip6.arpa.")),
    (("1.8.e.f.ip6.arpa.", "PTR", "IN"), ("NXDOMAIN", [], "8.e.f.ip6.arpa.")),
    (("1.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", "IN"),
     ("NXDOMAIN", [], "8.b.d.0.1.0.0.2.ip6.arpa.")),
    (("version.bind.", "TXT", "CH"), ("REFUSED", [], "")),
    (("id.server.", "TXT", "CH"), ("REFUSED", [], "")),
    (("www.example.com.", "A", "CH"), ("REFUSED", [], "")),
]


def check(response: dns.message.Message, qname: str, qclass: str,
          expected: tuple[str, list[str], str]) -> list[str]:
    """What is wrong with ``response`` (empty: nothing)."""
    rcode, answer, soa_owner = expected
    got_answer = [line for rrset in response.answer for line in rrset.to_text().splitlines()]
    got_soa = [rrset.name.to_text() for rrset in response.authority]
    wrong = []
    if dns.rcode.to_text(response.rcode()) != rcode:
        wrong.append(f"rcode {dns.rcode.to_text(response.rcode())}")
    if got_answer != answer:
        wrong.append(f"answer {got_answer}")
    if got_soa != ([soa_owner] if soa_owner else []):
        wrong.append(f"authority {got_soa}")
    if soa_owner and got_soa and response.authority[0][0].to_text() != SOA:
        wrong.append(f"SOA {response.authority[0][0].to_text()}")
    refused = rcode == "REFUSED"
    if bool(response.flags & dns.flags.AA) == refused:
        wrong.append("AA" if refused else "no AA")
    if refused:
        ede = [o for o in response.options if isinstance(o, dns.edns.EDEOption)]
        if [int(o.code) for o in ede] != [int(dns.edns.EDECode.NOT_SUPPORTED)] \
                or ede[0].text != f"class {qclass} is not served":
            wrong.append(f"EDE {ede}")
    return [f"{qname} {qclass}: {w}" for w in wrong]






def received(fake: FakeUpstream) -> list[str]:
    return [f"{r.message.question[0].name} {dns.rdataclass.to_text(r.message.question[0].rdclass)}"
            for r in fake.received]


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_default_zone_names_are_answered_here(serve: ServeFactory, fakes: Fakes,
                                                    log_queries: bool) -> None:
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], server={"log_queries": log_queries})
    wrong = []
    for transport in ("udp", "tcp", "dot"):
        for _round in range(2):  # the second answer: the kept rendering
            for (name, rdtype, rdclass), expected in EXPECTED:
                query = dns.message.make_query(name, rdtype, rdclass, use_edns=0)
                response = await served.ask(transport, query)
                assert response.id == query.id
                wrong += [f"{transport}: {w}" for w in check(response, name, rdclass,
                                                              expected)]
    assert wrong == [], "\n".join(wrong)
    # the upstream heard of none of them; an ordinary name still reaches it
    assert received(fake) == []
    response = await served.ask("udp", dns.message.make_query("www.example.com.", "A"))
    assert response.rcode() == dns.rcode.NOERROR
    assert received(fake) == ["www.example.com. IN"]


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_nodefault_zones_and_default_zones_off_are_forwarded(
        serve: ServeFactory, fakes: Fakes, log_queries: bool) -> None:
    fake = await fakes()
    served = await serve(upstreams=[spec(fake)], server={"log_queries": log_queries},
                         local={"nodefault": ["168.192.in-addr.arpa", "ONION"]})
    for transport in ("udp", "tcp", "dot"):
        for name in ("1.0.168.192.in-addr.arpa.", f"{transport}.onion."):
            await served.ask(transport, dns.message.make_query(name, "A"))
        response = await served.ask(transport,
                             dns.message.make_query("1.0.0.10.in-addr.arpa.", "PTR"))
        assert response.rcode() == dns.rcode.NXDOMAIN  # still a default zone
    # the first over UDP, then from the cache
    assert received(fake) == ["1.0.168.192.in-addr.arpa. IN", "udp.onion. IN",
                              "tcp.onion. IN", "dot.onion. IN"]
    fake.received.clear()
    off = await serve(upstreams=[spec(fake)], server={"log_queries": log_queries},
                      local={"default_zones": False})
    for transport, name, rdclass in (("udp", "localhost.", "IN"), ("tcp", "foo.test.", "IN"),
                                     ("dot", "version.bind.", "CH")):
        await off.ask(transport, dns.message.make_query(name, "TXT", rdclass))
    assert received(fake) == ["localhost. IN", "foo.test. IN", "version.bind. CH"]


HOME_ZONE = """$ORIGIN home.arpa.
$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 60
@ IN NS ns
ns IN A 192.168.1.1
router IN A 192.168.1.1
"""


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_a_configured_home_arpa_zone_wins(serve: ServeFactory, fakes: Fakes,
                                                tmp_path: Path, log_queries: bool) -> None:
    fake = await fakes()
    zone = tmp_path / "home.arpa.zone"
    zone.write_text(HOME_ZONE)
    served = await serve(upstreams=[spec(fake)], server={"log_queries": log_queries},
                         local={"zones": [str(zone)]})
    for transport in ("udp", "tcp", "dot"):
        for _round in range(2):
            r = await served.ask(transport, dns.message.make_query("router.home.arpa.", "A"))
            assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
            assert [rr.to_text() for rr in r.answer] == [
                "router.home.arpa. 300 IN A 192.168.1.1"]
            r = await served.ask(transport, dns.message.make_query("nas.home.arpa.", "A"))
            assert r.rcode() == dns.rcode.NXDOMAIN
            assert r.authority[0].to_text().startswith("home.arpa. 60 IN SOA ns.home.arpa.")
    assert received(fake) == []


async def test_the_stub_answers_them_too(fakes: Fakes, pki: TestPKI) -> None:
    fake = await fakes("tls", ssl_context=pki.server_context())
    cfg = stub_config_from_data({
        "listen_addresses": ["127.0.0.1@0"], "timeout": 1500,
        "upstream_recursive_servers": [{"address_data": fake.address, "tls_port": fake.port,
                                        "tls_auth_name": "dns.test",
                                        "tls_ca_file": pki.ca_file}]})
    service = StubRuntime(cfg).service()
    await service.start()
    try:
        host, port = service.endpoints.plain[0]

        async def stub_ask(query: dns.message.Message, tcp: bool) -> dns.message.Message:
            if tcp:
                return await asyncio.to_thread(dns.query.tcp, query, host, port=port,
                                               timeout=5)
            return await asyncio.to_thread(dns.query.udp, query, host, port=port, timeout=5)

        wrong = []
        for tcp in (False, True):
            for (name, rdtype, rdclass), expected in EXPECTED:
                query = dns.message.make_query(name, rdtype, rdclass, use_edns=0)
                wrong += check(await stub_ask(query, tcp), name, rdclass, expected)
        assert wrong == [], "\n".join(wrong)
        assert received(fake) == []
        response = await stub_ask(dns.message.make_query("www.example.com.", "A"), False)
        assert response.rcode() == dns.rcode.NOERROR
        assert received(fake) == ["www.example.com. IN"]
    finally:
        await service.aclose()
