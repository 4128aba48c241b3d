"""``[cache] prefetch``: an answer asked for in the last tenth of its TTL is refreshed in
the background, through a served instance and a fake upstream that counts queries.

Time is the event loop's clock, which the service's cache and handler read: the tests
move it forward (``Clock.advance``) instead of sleeping through TTLs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest
from conftest import Served, ServeFactory

from dnstls.service import Service
from fakes import Behavior, FakeUpstream


class Clock:
    """The running loop's ``time``, plus an offset the test moves forward."""

    def __init__(self, real: Callable[[], float]) -> None:
        self.real = real
        self.offset = 0.0

    def __call__(self) -> float:
        return self.real() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clock]:
    """Installed before the service starts, which takes ``loop.time`` as its clock (tests
    ask for it before ``serve``, so the services are closed before it is undone)."""
    loop = asyncio.get_running_loop()
    shifted = Clock(loop.time)
    monkeypatch.setattr(loop, "time", shifted)
    yield shifted


def answering(ttl: int, address: str = "192.0.2.7",
              ) -> Callable[[dns.message.Message], dns.message.Message]:
    def answer(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        response.answer.append(dns.rrset.from_text(query.question[0].name, ttl, "IN", "A",
                                                   address))
        return response
    return answer


def q(name: str, **kw: Any) -> dns.message.Message:
    return dns.message.make_query(name, "A", use_edns=0, **kw)


async def ask(s: Served, name: str, **kw: Any) -> dns.message.Message:
    client = await s.connect()
    try:
        await client.send(q(name, **kw))
        return await client.recv(5)
    finally:
        await client.aclose()


def metrics_text(service: Service) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from dnstls.metrics import ServiceCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service.statistics))
    return generate_latest(registry).decode()


async def refreshed(s: Served | Service, up: FakeUpstream, count: int) -> None:
    """Wait (bounded) until ``up`` has ``count`` queries and no prefetch is in flight."""
    service = s.service if isinstance(s, Served) else s
    prefetcher = next(c.prefetcher for c in service._closers
                      if getattr(c, "prefetcher", None) is not None)
    for _ in range(500):
        if len(up.received) >= count and not prefetcher.in_flight:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(up.received)} upstream queries, "
                         f"{prefetcher.in_flight} prefetches in flight")


@pytest.mark.parametrize("log_queries", [False, True], ids=["wire", "message"])
async def test_second_query_in_the_last_tenth_refreshes_once(
        clock: Clock, serve: ServeFactory, log_queries: bool) -> None:
    async with FakeUpstream("udp", answer=answering(10)) as up:
        s: Served = await serve(upstreams=[up.spec()], cache={"prefetch": True},
                                server={"log_queries": log_queries})
        first = await ask(s, "pop.example.net")
        assert first.answer[0].ttl == 10 and len(up.received) == 1
        clock.advance(9.2)  # 0.8 s left: less than a tenth of 10 s
        second = await ask(s, "pop.example.net")
        assert second.rcode() == dns.rcode.NOERROR
        assert second.answer[0].ttl == 1  # the cached answer, its TTL counting down
        await refreshed(s, up, 2)
        assert len(up.received) == 2  # exactly one refetch
        for _ in range(3):  # after the refresh: the full TTL, from the cache
            assert (await ask(s, "pop.example.net")).answer[0].ttl == 10
        clock.advance(5.0)  # past the original expiry: still a hit, no new miss
        assert (await ask(s, "pop.example.net")).answer[0].ttl == 5
        assert len(up.received) == 2
        stats = s.service.statistics()["cache"]
        assert stats["prefetches"] == 1


async def test_off_by_default_the_entry_expires(clock: Clock, serve: ServeFactory) -> None:
    async with FakeUpstream("udp", answer=answering(10)) as up:
        s: Served = await serve(upstreams=[up.spec()])
        await ask(s, "pop.example.net")
        clock.advance(9.2)
        assert (await ask(s, "pop.example.net")).answer[0].ttl == 1
        await asyncio.sleep(0.05)
        assert len(up.received) == 1
        clock.advance(1.0)
        assert (await ask(s, "pop.example.net")).answer[0].ttl == 10  # a miss
        assert len(up.received) == 2
        assert s.service.statistics()["cache"]["prefetches"] == 0


async def test_a_failed_prefetch_keeps_the_good_answer(clock: Clock,
                                                       serve: ServeFactory) -> None:
    async with FakeUpstream("udp", answer=answering(10)) as up:
        s: Served = await serve(upstreams=[up.spec()], cache={"prefetch": True})
        await ask(s, "pop.example.net")
        up.behavior = Behavior.SERVFAIL
        clock.advance(9.2)
        assert (await ask(s, "pop.example.net")).answer[0].ttl == 1
        await refreshed(s, up, 2)
        again = await ask(s, "pop.example.net")  # not the SERVFAIL: the cached answer
        assert again.rcode() == dns.rcode.NOERROR and again.answer[0].ttl == 1
        assert len(up.received) == 2
        metrics = metrics_text(s.service)
        assert "dnstls_cache_prefetches_total 1.0" in metrics
        assert "dnstls_cache_prefetches_failed_total 1.0" in metrics
        assert "dnstls_cache_prefetches_dropped_total 0.0" in metrics


async def test_the_prefetch_keeps_the_key_and_goes_to_the_zone_upstream(
        clock: Clock, serve: ServeFactory) -> None:
    """A forward zone's name is refreshed from the zone's upstream, with the DO and CD
    bits of the entry's key."""
    async with (FakeUpstream("udp", answer=answering(10)) as default,
                FakeUpstream("udp", answer=answering(10, "192.0.2.99")) as zone):
        s: Served = await serve(upstreams=[default.spec()], cache={"prefetch": True},
                                forward_zone=[{"name": "corp.example",
                                               "upstream": [{"uri": zone.uri()}]}])
        await ask(s, "h.corp.example", want_dnssec=True)
        clock.advance(9.2)
        await ask(s, "h.corp.example", want_dnssec=True)
        await refreshed(s, zone, 2)
        assert len(default.received) == 0 and len(zone.received) == 2
        refresh = zone.received[1].message
        assert refresh.ednsflags & dns.flags.DO and refresh.question[0].name.to_text() \
            == "h.corp.example."
        answer = await ask(s, "h.corp.example", want_dnssec=True)
        assert answer.answer[0].ttl == 10 and answer.answer[0][0].to_text() == "192.0.2.99"


async def test_the_stub_prefetches_too(pki: Any, clock: Clock) -> None:
    """``dnstls stub`` has the same cache: ``[cache] prefetch`` in its file."""
    from dnstls.stub import StubRuntime, stub_config_from_data

    upstream = await FakeUpstream("tls", ssl_context=pki.server_context(),
                                  answer=answering(10)).start()
    cfg = stub_config_from_data({
        "listen_addresses": ["127.0.0.1@0"], "timeout": 1500, "cache": {"prefetch": True},
        "upstream_recursive_servers": [{"address_data": upstream.address,
                                        "tls_port": upstream.port, "tls_auth_name": "dns.test",
                                        "tls_ca_file": pki.ca_file}]})
    service = StubRuntime(cfg).service()
    try:
        await service.start()
        host, port = service.endpoints.plain[0]

        async def ask_stub() -> dns.message.Message:
            return await asyncio.to_thread(dns.query.udp, q("pop.example.net"), host,
                                           port=port, timeout=5)

        assert (await ask_stub()).answer[0].ttl == 10
        clock.advance(9.2)
        assert (await ask_stub()).answer[0].ttl == 1
        await refreshed(service, upstream, 2)
        assert (await ask_stub()).answer[0].ttl == 10 and len(upstream.received) == 2
        metrics = metrics_text(service)
        assert "dnstls_cache_prefetches_total 1.0" in metrics
        assert "dnstls_cache_prefetches_failed_total 0.0" in metrics
        assert "dnstls_cache_prefetches_dropped_total 0.0" in metrics
    finally:
        await service.aclose()
        await upstream.aclose()


async def test_a_refresh_has_private_addresses_removed_too(clock: Clock,
                                                           serve: ServeFactory) -> None:
    """With ``forward.private_addresses``, a refresh is filtered as a miss is."""
    def mixed(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, pad=0)
        response.answer.append(dns.rrset.from_text(query.question[0].name, 10, "IN", "A",
                                                   "192.0.2.7", "10.0.0.7"))
        return response

    async with FakeUpstream("udp", answer=mixed) as up:
        s: Served = await serve(upstreams=[up.spec()], cache={"prefetch": True},
                                forward={"private_addresses": ["10.0.0.0/8"]})
        first = await ask(s, "pop.example.net")
        assert [rd.to_text() for rd in first.answer[0]] == ["192.0.2.7"]
        clock.advance(9.2)
        await ask(s, "pop.example.net")
        await refreshed(s, up, 2)
        again = await ask(s, "pop.example.net")
        assert again.answer[0].ttl == 10
        assert [rd.to_text() for rd in again.answer[0]] == ["192.0.2.7"]


async def test_prefetches_dropped_for_want_of_room_are_counted(
        clock: Clock, serve: ServeFactory) -> None:
    """``server.max_in_flight`` bounds the refreshes: a due one beyond it is not started
    and counted (``dnstls_cache_prefetches_dropped_total``); its next hit asks again."""
    async with FakeUpstream("udp", answer=answering(10)) as up:
        s: Served = await serve(upstreams=[up.spec()], cache={"prefetch": True},
                                server={"max_in_flight": 1})
        for name in ("a.example.net", "b.example.net"):
            await ask(s, name)
        up.behavior = Behavior.STALL  # the first refresh gets no answer while we look
        clock.advance(9.2)
        await ask(s, "a.example.net")  # from the cache; its refresh starts and waits
        await ask(s, "b.example.net")  # due too: no room
        metrics = metrics_text(s.service)
        assert "dnstls_cache_prefetches_total 1.0" in metrics
        assert "dnstls_cache_prefetches_dropped_total 1.0" in metrics
        assert "dnstls_cache_prefetches_failed_total 0.0" in metrics
