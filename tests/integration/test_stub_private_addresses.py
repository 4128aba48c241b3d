"""DNS rebinding protection in ``dnstls stub`` (``private_addresses`` /
``private_domains``, ``--private-address`` / ``--private-domain``): the answers serve
gives with ``forward.private_addresses`` (tests/integration/test_private_addresses.py,
which Unbound 1.17.1 gives too), on both of the stub's answer paths, reloaded on SIGHUP.

A fake DoT upstream answers as a recursive resolver would for ``pub.example.``
(private addresses among them: 10.x, fd00::, 127.x); the stub forwards to it.
The stub has no CNAME chase (its upstreams are recursive resolvers that complete
chains): a CNAME whose target's address was removed stays without it, as serve's
answer (and Unbound's) has it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import test_stub
from conftest import Fakes
from prometheus_client import CollectorRegistry, generate_latest
from test_private_addresses import EXPECTED, PRIVATE, recursive, shown
from test_stub import StartStub, Stub, tls_upstream, write_config

from dnstls.metrics import ServiceCollector
from dnstls.stub import StubOverrides
from fakes import FakeUpstream, TestPKI

#: test_stub.py's fixture: a stub on a free port, closed after the test
stub = test_stub.stub

pytestmark = pytest.mark.timeout(60)






@pytest.fixture
async def upstream(fakes: Fakes, pki: TestPKI) -> FakeUpstream:
    return await fakes("tls", ssl_context=pki.server_context(), answer=recursive)


async def ask(s: Stub, name: str, rdtype: str = "A", *, tcp: bool = False,
              ) -> dns.message.Message:
    return await s.ask(dns.message.make_query(name, rdtype, use_edns=0), tcp=tcp)


def removed_metric(s: Stub) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(s.service.statistics))
    return next((line for line in generate_latest(registry).decode().splitlines()
                 if line.startswith("dnstls_private_addresses_removed_total ")), "")


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_private_addresses_are_removed_as_serve_removes_them(
        stub: StartStub, upstream: FakeUpstream, pki: TestPKI, tcp: bool,
        log_queries: bool) -> None:
    s = await stub({"upstream_recursive_servers": [tls_upstream(upstream, pki)],
                    "log_queries": log_queries, "private_addresses": PRIVATE,
                    "private_domains": ["lan.pub.example."]})
    for (label, rdtype), want in EXPECTED.items():
        for _ in range(2):  # the second from the cache where the answer is cached
            response = await ask(s, f"{label}.pub.example.", rdtype, tcp=tcp)
            assert response.rcode() == dns.rcode.NOERROR, (label, rdtype)
            assert sorted(shown(response)) == sorted(want), (label, rdtype)
            assert response.flags & dns.flags.RA
            assert not response.authority  # as Unbound: no SOA for what was removed
    # the NS glue in the additional section is filtered too (the stub is not minimal
    # about NS answers' additional section: the cache keeps what the upstream sent)
    ns = await ask(s, "pub.example.", "NS", tcp=tcp)
    assert shown(ns) == ["pub.example. NS ns.pub.example."]
    assert not [r for r in ns.additional if r.rdtype == dns.rdatatype.A]
    # the path under test answered (the wire path forwards without the message path)
    assert bool(s.service.statistics()["wire"].get("forwarded")) is not log_queries
    forwarding = s.runtime.forwarding
    assert forwarding is not None
    removed = forwarding.statistics()["private_addresses"]["removed"]
    # a, mixed, v6, mapped, lo, cn's target, the NS glue: once each at least
    assert removed >= 7
    assert removed_metric(s) == f"dnstls_private_addresses_removed_total {float(removed)}"


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_off_by_default_nothing_removed_and_no_metric(
        stub: StartStub, upstream: FakeUpstream, pki: TestPKI, log_queries: bool) -> None:
    s = await stub({"upstream_recursive_servers": [tls_upstream(upstream, pki)],
                    "log_queries": log_queries})
    assert shown(await ask(s, "a.pub.example.")) == ["a.pub.example. A 10.1.2.3"]
    assert s.runtime.forwarding is not None
    assert "private_addresses" not in s.runtime.forwarding.statistics()
    assert removed_metric(s) == ""


async def test_command_line_options(stub: StartStub, upstream: FakeUpstream,
                                    pki: TestPKI) -> None:
    s = await stub({"upstream_recursive_servers": [tls_upstream(upstream, pki)],
                    "private_addresses": ["192.168.0.0/16"]},
                   overrides=StubOverrides(private_addresses=("10.0.0.0/8",),
                                           private_domains=("lan.pub.example.",)))
    assert shown(await ask(s, "a.pub.example.")) == []
    assert shown(await ask(s, "x.lan.pub.example.")) == ["x.lan.pub.example. A 10.0.0.5"]
    assert shown(await ask(s, "lo.pub.example.")) == ["lo.pub.example. A 127.0.0.1"]


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_reload_switches_private_addresses_on_changes_and_off(
        stub: StartStub, upstream: FakeUpstream, pki: TestPKI, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, log_queries: bool) -> None:
    """SIGHUP reads ``private_addresses`` and ``private_domains`` again, on both answer
    paths; cached answers are dropped when they change (what was cached before may
    hold addresses now private), as Unbound's reload drops its cache; the count goes
    on; a bad value fails the reload with one error naming the field and changes
    nothing."""
    path = tmp_path / "stub.toml"
    flag = f"log_queries = {'true' if log_queries else 'false'}"

    def config(extra: str) -> None:
        write_config(path, tls_upstream(upstream, pki), extra=f"{flag}\n{extra}")

    config("")
    s = await stub(path=path)
    assert shown(await ask(s, "a.pub.example.")) == ["a.pub.example. A 10.1.2.3"]
    assert shown(await ask(s, "a.pub.example.")) == ["a.pub.example. A 10.1.2.3"]  # cached
    caplog.set_level(logging.INFO, logger="dnstls.stub")
    config('private_addresses = ["10.0.0.0/8"]')
    assert s.service.reload()
    assert "private addresses removed now: 10.0.0.0/8" in caplog.text
    assert shown(await ask(s, "a.pub.example.")) == []
    assert shown(await ask(s, "mixed.pub.example.")) == ["mixed.pub.example. A 192.0.2.1"]
    assert shown(await ask(s, "x.lan.pub.example.")) == []
    forwarding = s.runtime.forwarding
    assert forwarding is not None
    removed = forwarding.statistics()["private_addresses"]["removed"]
    assert removed >= 3
    # private_domains added: the name under it keeps its address
    config('private_addresses = ["10.0.0.0/8"]\nprivate_domains = ["lan.pub.example."]')
    assert s.service.reload()
    assert shown(await ask(s, "x.lan.pub.example.")) == ["x.lan.pub.example. A 10.0.0.5"]
    assert shown(await ask(s, "a.pub.example.")) == []
    assert forwarding.statistics()["private_addresses"]["removed"] > removed
    # a bad value: the reload fails naming the field, the running filter stays
    caplog.clear()
    caplog.set_level(logging.ERROR, logger="dnstls.stub")
    config('private_addresses = ["10.0.0.0/8", "10.0.0.0/33"]')
    assert not s.service.reload()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "reload failed, the running configuration stays: private_addresses[1]: "
        "'10.0.0.0/33' is not an IP address or network (e.g. 10.0.0.0/8, fd00::/8)"]
    assert shown(await ask(s, "v6.pub.example.", "AAAA")) == ["v6.pub.example. AAAA fd00::1"]
    assert shown(await ask(s, "lo.pub.example.")) == ["lo.pub.example. A 127.0.0.1"]
    assert shown(await ask(s, "a.pub.example.")) == []
    # off again: answers as the upstream gives them; the count stays exported
    config("")
    assert s.service.reload()
    assert shown(await ask(s, "a.pub.example.")) == ["a.pub.example. A 10.1.2.3"]
    assert bool(s.service.statistics()["wire"].get("forwarded")) is not log_queries
    assert removed_metric(s).startswith("dnstls_private_addresses_removed_total ")
