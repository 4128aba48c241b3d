"""Blocking names: ``[local] zone_types`` and ``[[local.blocklist]]`` in a running service.

Blocked names are answered over UDP, TCP and DoT, with the cache on and off, on the
wire path and the message path, and never reach an upstream (a recording fake shows
what leaves); names next to them are forwarded. ``deny`` drops UDP queries and answers
REFUSED on streams; RD=0 from a client of ``allow`` gets the blocked answer (local data,
as Unbound); a type on a default zone's name replaces it; a forward zone does not
take a blocked name; SIGHUP applies a changed list at once, forgetting cached answers
for names now blocked; the answers are counted by type for the metrics; the stub
blocks too."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import Fakes, ServeFactory, stub_with_local, udp_spec

from fakes import FakeUpstream, TestPKI

pytestmark = pytest.mark.timeout(60)

BLOCKLIST = """# ads
0.0.0.0 ads.example.com
0.0.0.0 tracker.example.net  # a comment
adserver.example.org
"""


@pytest.fixture
async def fake(fakes: Fakes) -> FakeUpstream:
    return await fakes()


def received(fake: FakeUpstream) -> list[str]:
    return [str(r.message.question[0].name).lower() for r in fake.received]


def blocklist(tmp_path: Path) -> str:
    path = tmp_path / "ads.txt"
    path.write_text(BLOCKLIST)
    return str(path)


def rcode(response: dns.message.Message) -> str:
    return dns.rcode.to_text(response.rcode())


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_blocked_names_are_answered_here_and_never_forwarded(
        serve: ServeFactory, fake: FakeUpstream, tmp_path: Path, cache: bool,
        log_queries: bool) -> None:
    served = await serve(upstreams=[udp_spec(fake)], cache={"enabled": cache},
                         server={"log_queries": log_queries},
                         local={"blocklist": [{"file": blocklist(tmp_path)}],
                                "zone_types": ["null.example. always_null",
                                               "ok.ads.example.com. always_transparent"]})
    expected = {
        ("ads.example.com.", "A"): ("NXDOMAIN", []),
        ("Sub.ADS.example.com.", "AAAA"): ("NXDOMAIN", []),
        ("tracker.example.net.", "TXT"): ("NXDOMAIN", []),
        ("adserver.example.org.", "A"): ("NXDOMAIN", []),
        ("x.null.example.", "A"): ("NOERROR", ["0.0.0.0"]),
        ("x.null.example.", "AAAA"): ("NOERROR", ["::"]),
        ("x.null.example.", "MX"): ("NOERROR", []),
    }
    wrong = []
    for transport in ("udp", "tcp", "dot"):
        for _round in range(2):  # the second: the kept rendering (fast path)
            for (name, rdtype), (want, data) in expected.items():
                query = dns.message.make_query(name, rdtype, use_edns=0,
                                               pad=128 if transport == "dot" else 0)
                response = await served.ask(transport, query)
                got = (rcode(response), [rr.to_text() for rrset in response.answer
                                         for rr in rrset])
                if (response.id != query.id or got != (want, data)
                        or not response.flags & dns.flags.AA
                        or str(response.question[0].name) != name):
                    wrong.append(f"{transport} {name} {rdtype}: {got}")
                if transport == "dot":  # padded as other answers (RFC 8467)
                    assert len(response.to_wire()) % 468 == 0
    assert wrong == [], "\n".join(wrong)
    assert received(fake) == []
    # next to them, and carved out by a more specific type: forwarded
    for name in ("example.com.", "xads.example.com.", "www.ok.ads.example.com.",
                 "tracker.example.net.example."):
        response = await served.ask("udp", dns.message.make_query(name, "A"))
        assert not response.flags & dns.flags.AA, name
    assert received(fake) == ["example.com.", "xads.example.com.", "www.ok.ads.example.com.",
                              "tracker.example.net.example."]
    stats = served.service.statistics()["local_zone"]["answers"]
    assert stats["always_nxdomain"] == 3 * 2 * 4 and stats["always_null"] == 3 * 2 * 3


async def test_deny_drops_udp_and_refuses_on_streams(serve: ServeFactory,
                                                      fake: FakeUpstream) -> None:
    served = await serve(upstreams=[udp_spec(fake)],
                         local={"zone_types": ["denied.example. deny"]})
    for transport in ("tcp", "dot"):
        response = await served.ask(transport, dns.message.make_query("x.denied.example.", "A"))
        assert rcode(response) == "REFUSED" and response.flags & dns.flags.AA
    host, port = served.plain_addr
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (host, port))
        denied = dns.message.make_query("x.denied.example.", "A")
        await loop.sock_sendall(sock, denied.to_wire())
        answers = served.service.statistics
        for _ in range(500):  # bounded: until the service has dropped it
            if answers()["local_zone"]["answers"].get("deny", 0) == 3:
                break
            await asyncio.sleep(0.01)
        assert answers()["local_zone"]["answers"]["deny"] == 3
        other = dns.message.make_query("localhost.", "A")
        await loop.sock_sendall(sock, other.to_wire())
        first = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        assert first.id == other.id  # nothing came for the denied query
    finally:
        sock.close()
    assert received(fake) == []


async def test_rd0_from_allow_gets_the_blocked_answer(serve: ServeFactory,
                                                      fake: FakeUpstream) -> None:
    served = await serve(upstreams=[udp_spec(fake)],
                         server={"access_control": ["127.0.0.0/8 allow"]},
                         local={"zone_types": ["ads.example. always_nxdomain"]})
    for transport in ("udp", "tcp", "dot"):
        query = dns.message.make_query("x.ads.example.", "A")
        query.flags &= ~dns.flags.RD
        assert rcode(await served.ask(transport, query)) == "NXDOMAIN"
        other = dns.message.make_query("www.example.", "A")
        other.flags &= ~dns.flags.RD
        assert rcode(await served.ask(transport, other)) == "REFUSED"  # not local data
    assert received(fake) == []


async def test_a_type_replaces_a_default_zone_and_beats_a_forward_zone(
        serve: ServeFactory, fakes: Fakes) -> None:
    default, corp = await fakes(), await fakes()
    served = await serve(upstreams=[udp_spec(default)],
                         forward_zone=[{"name": "corp.example.",
                                        "upstream": [{"uri": corp.uri()}]}],
                         local={"zone_types": ["10.in-addr.arpa. transparent",
                                               "onion. always_refuse",
                                               "ads.corp.example. always_nxdomain"]})
    ptr = await served.ask("udp", dns.message.make_query("1.0.0.10.in-addr.arpa.", "PTR"))
    assert not ptr.flags & dns.flags.AA  # forwarded, no longer the default zone's NXDOMAIN
    onion = await served.ask("udp", dns.message.make_query("x.onion.", "A"))
    assert rcode(onion) == "REFUSED" and onion.flags & dns.flags.AA
    ads = await served.ask("udp", dns.message.make_query("x.ads.corp.example.", "A"))
    assert rcode(ads) == "NXDOMAIN"
    await served.ask("udp", dns.message.make_query("www.corp.example.", "A"))
    assert received(default) == ["1.0.0.10.in-addr.arpa."]
    assert received(corp) == ["www.corp.example."]


async def test_reload_blocks_at_once_and_forgets_cached_answers(
        serve: ServeFactory, fake: FakeUpstream, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "list.txt"
    path.write_text("old.example\n")
    changes: dict[str, dict[str, Any]] = {}
    served = await serve(upstreams=[udp_spec(fake)], reload_data=lambda: changes,
                         local={"blocklist": [{"file": str(path)}]})

    async def ask(name: str, transport: str = "udp") -> dns.message.Message:
        return await served.ask(transport, dns.message.make_query(name, "A"))

    assert not (await ask("new.example.")).flags & dns.flags.AA  # forwarded, cached
    assert rcode(await ask("old.example.")) == "NXDOMAIN"
    caplog.set_level(logging.INFO, logger="dnstls.service")
    path.write_text("new.example\n")  # the file changed, the configuration did not
    assert served.service.reload()
    assert "1 typed zones; 1 cached answers for names now local dropped" in caplog.text
    for transport in ("udp", "tcp", "dot"):
        assert rcode(await ask("new.example.", transport)) == "NXDOMAIN"
    assert not (await ask("old.example.")).flags & dns.flags.AA
    assert received(fake) == ["new.example.", "old.example."]
    # counted over the reload; a bad file keeps what runs
    assert served.service.statistics()["local_zone"]["answers"]["always_nxdomain"] == 4
    path.write_text("new.example\nbad name\n")
    assert not served.service.reload()
    assert f"local.blocklist[0].file: {path}:2: " in caplog.text
    assert rcode(await ask("new.example.")) == "NXDOMAIN"


def test_a_zone_file_and_a_type_of_the_same_name_is_an_error(tmp_path: Path,
                                                             zone_file: Path) -> None:
    from dnstls import config
    from dnstls.errors import ConfigError
    from dnstls.service import Service

    cfg = config.load(overrides={"local": {"zones": [str(zone_file)],
                                           "zone_types": ["example.test. static"]},
                                 "server": {"listen": [], "plain": ["127.0.0.1:0"]}})
    with pytest.raises(ConfigError, match=r"^local\.zone_types: example\.test\. is a zone "):
        Service(cfg)._local_data(cfg.local)


async def test_the_stub_blocks_names(pki: TestPKI, tmp_path: Path) -> None:
    local = {"zone_types": ["ads.example. always_null"],
             "blocklist": [{"file": blocklist(tmp_path)}]}
    async with stub_with_local(pki, local) as ((host, port), upstream):
        for name, want in (("x.ads.example.", "NOERROR"), ("ads.example.com.", "NXDOMAIN")):
            response = await asyncio.to_thread(
                dns.query.udp, dns.message.make_query(name, "A"), host, port=port, timeout=5)
            assert rcode(response) == want and response.flags & dns.flags.AA
        assert received(upstream) == []


@pytest.mark.parametrize(("kind", "forwarded"), [("transparent", True),
                                                 ("always_nxdomain", False)])
async def test_a_forward_zone_under_a_typed_name_is_logged_as_it_is_served(
        serve: ServeFactory, fakes: Fakes, caplog: pytest.LogCaptureFixture, kind: str,
        forwarded: bool) -> None:
    """Under a transparent type the forward zone's names are forwarded (no warning);
    under an answering type they are answered here, and the warning names the type's
    field, not local.zones."""
    caplog.set_level(logging.INFO, logger="dnstls.service")
    default, corp = await fakes(), await fakes()
    served = await serve(upstreams=[udp_spec(default)],
                         forward_zone=[{"name": "sub.corp.example.",
                                        "upstream": [{"uri": corp.uri()}]}],
                         local={"zone_types": [f"corp.example. {kind}"]})
    await served.ask("udp", dns.message.make_query("x.sub.corp.example.", "A"))
    assert received(corp) == (["x.sub.corp.example."] if forwarded else [])
    assert received(default) == []
    warnings = [r.getMessage() for r in caplog.records if "sub.corp.example." in r.getMessage()
                and r.levelno == logging.WARNING]
    if forwarded:
        assert warnings == []
    else:
        assert warnings == ["forward zone sub.corp.example. is at or under corp.example. "
                            "always_nxdomain (local.zone_types): its names are answered "
                            "locally, not forwarded"]
