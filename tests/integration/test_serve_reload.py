"""SIGHUP reads serve's configuration again: local data (zone files read again, ``[local]
data``) and access control are applied at once, other changes wait for a restart.

``service.reload()`` is what the SIGHUP handler runs; the configuration it reads is
``reload_data``'s sections over the test's (a real process: test_lifecycle.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from conftest import Fakes, ServeFactory, udp_spec

from dnstls.upstreams import UpstreamSpec
from fakes import FakeUpstream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fake(fakes: Fakes) -> FakeUpstream:
    return await fakes()


def spec(fake: FakeUpstream) -> list[UpstreamSpec]:
    return [udp_spec(fake)]


def received(fake: FakeUpstream) -> list[str]:
    return [str(r.message.question[0].name) for r in fake.received]


ZONE = """$ORIGIN corp.test.
$TTL 300
@ IN SOA ns hostmaster {serial} 3600 600 86400 60
@ IN NS ns
ns IN A 192.0.2.53
www IN A {address}
"""


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire path", "message path"])
async def test_local_data_is_reloaded_and_the_cache_forgets_names_now_local(
        serve: ServeFactory, fake: FakeUpstream, tmp_path: Path, log_queries: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    zone = tmp_path / "corp.test.zone"
    zone.write_text(ZONE.format(serial=1, address="192.0.2.1"))
    changes: dict[str, dict[str, Any]] = {}
    served = await serve(upstreams=spec(fake), server={"log_queries": log_queries},
                         local={"zones": [str(zone)], "nodefault": ["test."]},
                         reload_data=lambda: changes)

    async def ask(name: str, transport: str = "udp") -> dns.message.Message:
        return await served.ask(transport, dns.message.make_query(name, "A"))

    assert (await ask("www.corp.test.")).answer[0][0].to_text() == "192.0.2.1"
    first = await ask("nas.lan.")  # forwarded, and now cached
    assert not first.flags & dns.flags.AA and received(fake) == ["nas.lan."]
    # nothing changed: nothing replaced
    caplog.set_level(logging.INFO, logger="dnstls.service")
    assert served.service.reload()
    assert "local data changed" not in caplog.text
    # the zone file edited, a record of local data added
    zone.write_text(ZONE.format(serial=2, address="192.0.2.2"))
    changes["local"] = {"data": ["nas.lan. A 192.168.1.10"]}
    assert served.service.reload()
    assert "reload: local data changed: " in caplog.text
    assert "1 cached answers for names now local dropped" in caplog.text
    for transport in ("udp", "tcp", "dot"):
        for _ in range(2):
            www = await ask("www.corp.test.", transport)
            assert www.answer[0][0].to_text() == "192.0.2.2"
            nas = await ask("nas.lan.", transport)
            assert nas.flags & dns.flags.AA
            assert nas.answer[0][0].to_text() == "192.168.1.10"
    assert received(fake) == ["nas.lan."]  # no more
    # and taken away again: forwarded again
    changes["local"] = {"data": []}
    assert served.service.reload()
    assert not (await ask("nas.lan.")).flags & dns.flags.AA
    assert received(fake) == ["nas.lan.", "nas.lan."]


async def test_a_bad_reload_keeps_what_runs(serve: ServeFactory, fake: FakeUpstream,
                                            caplog: pytest.LogCaptureFixture) -> None:
    changes: dict[str, dict[str, Any]] = {"local": {"data": ["nas.lan. A 192.168.1.10"]}}
    served = await serve(upstreams=spec(fake), local={"data": ["nas.lan. A 192.168.1.10"]},
                         reload_data=lambda: changes)
    changes["local"] = {"data": ["nas.lan. A 192.168.1"]}
    assert not served.service.reload()
    assert "reload: local.data[0]: 'nas.lan. A 192.168.1': " in caplog.text
    assert "the running configuration stays" in caplog.text
    answer = await served.ask("udp", dns.message.make_query("nas.lan.", "A"))
    assert answer.answer[0][0].to_text() == "192.168.1.10"


async def test_access_control_is_reloaded_and_its_counts_go_on(
        serve: ServeFactory, fake: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    changes: dict[str, dict[str, Any]] = {}
    served = await serve(upstreams=spec(fake), reload_data=lambda: changes,
                         server={"access_control": ["127.0.0.0/8 allow", "127.0.0.2 refuse"]})
    query = dns.message.make_query("www.example.test.", "A")
    assert (await served.ask("udp", query)).rcode() == dns.rcode.NOERROR  # from 127.0.0.1
    changes["server"] = {"access_control": ["127.0.0.0/8 refuse"]}
    caplog.set_level(logging.INFO, logger="dnstls.service")
    assert served.service.reload()
    assert "reload: access control now has 1 rules" in caplog.text
    for transport in ("udp", "tcp", "dot"):
        assert (await served.ask(transport, query)).rcode() == dns.rcode.REFUSED
    assert served.service.statistics()["access_control"]["refused"] == {
        "udp": 1, "tcp": 1, "tls": 1}
    changes["server"] = {"access_control": ["127.0.0.0/8 allow"]}
    assert served.service.reload()
    assert (await served.ask("udp", query)).rcode() == dns.rcode.NOERROR
    assert served.service.statistics()["access_control"]["refused"] == {
        "udp": 1, "tcp": 1, "tls": 1}  # counted on, not reset


async def test_other_changes_wait_for_a_restart(serve: ServeFactory, fake: FakeUpstream,
                                                caplog: pytest.LogCaptureFixture) -> None:
    changes: dict[str, dict[str, Any]] = {}
    served = await serve(upstreams=spec(fake), reload_data=lambda: changes)
    changes["server"] = {"idle_timeout": 3.0, "max_connections": 5}
    changes["cache"] = {"max_ttl": 60}
    assert served.service.reload()
    assert ("reload: server.idle_timeout, server.max_connections, cache.max_ttl changed; "
            "restart dnstls to apply them") in caplog.text
    caplog.clear()
    assert served.service.reload()  # said once
    assert "restart dnstls" not in caplog.text


async def test_a_record_removed_from_a_default_zone_is_gone(serve: ServeFactory,
                                                            fake: FakeUpstream) -> None:
    """A record of local data inside a default zone (home.arpa.) goes into a copy of
    the zone: taken out by a reload, it is not answered any more (the shared default
    zones kept it)."""
    changes: dict[str, dict[str, Any]] = {}
    served = await serve(upstreams=spec(fake), local={"data": ["nas.home.arpa. A 192.0.2.7"]},
                         reload_data=lambda: changes)
    query = dns.message.make_query("nas.home.arpa.", "A")
    assert (await served.ask("udp", query)).answer[0][0].to_text() == "192.0.2.7"
    changes["local"] = {"data": []}
    assert served.service.reload()
    gone = await served.ask("udp", dns.message.make_query("nas.home.arpa.", "A"))
    assert gone.rcode() == dns.rcode.NXDOMAIN and gone.flags & dns.flags.AA
    assert received(fake) == []
