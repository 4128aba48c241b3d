"""StubForwarding's task-free forward (start_wire): the current generation's
Forwarder.start_wire itself, which counts its queries (in_flight_wire), so a reload
closes the old generation only when they are done."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import dns.message

from dnstls.proto.cachekey import read_query
from dnstls.resolver.forward import Forwarder
from dnstls.stub import StubForwarding


class HeldUpstream:
    """start_wire keeps the callback until the test answers."""

    name = "held"
    timeout = 2.0

    def __init__(self) -> None:
        self.held: list[Any] = []

    def start_wire(self, question: bytes, *, deadline: float, flags: int, payload: int,
                   do: bool, callback: Any) -> None:
        self.held.append(callback)


class FakeGeneration:
    def __init__(self, forwarder: Any) -> None:
        self.forwarder = forwarder
        self.in_flight = 0
        self.retired = False
        self.closing: Any = None
        self.rebind: Any = None
        self.validating: Any = None


def forwarding() -> tuple[StubForwarding, FakeGeneration, HeldUpstream, list[Any]]:
    loop = asyncio.get_running_loop()
    up = HeldUpstream()
    gen = FakeGeneration(Forwarder([up], clock=loop.time))  # type: ignore[list-item]
    stub = StubForwarding.__new__(StubForwarding)
    stub.loop = loop
    stub._adopt(gen)  # type: ignore[arg-type]
    closed: list[Any] = []
    stub._close = closed.append  # type: ignore[method-assign]
    return stub, gen, up, closed


QUESTION = read_query(dns.message.make_query("a.example.", "A").to_wire()).key[:-1]  # type: ignore[union-attr]


async def test_start_wire_counts_in_the_generation_and_closes_it_when_retired() -> None:
    stub, gen, up, closed = forwarding()
    got: list[Any] = []
    assert stub.start_wire(QUESTION, flags=0x100, payload=0, do=False, deadline=1e9,
                           callback=lambda a, e: got.append((a, e)))
    assert gen.forwarder.in_flight_wire == 1 and len(up.held) == 1
    gen.retired = True  # a reload happened meanwhile
    up.held[0](None, None)  # no answer and no exception: handed on as it came
    assert gen.forwarder.in_flight_wire == 0 and closed == [gen] and len(got) == 1


async def test_start_wire_declined_leaves_no_count() -> None:
    stub, gen, up, closed = forwarding()
    gen.forwarder.upstreams.append(HeldUpstream())  # two upstreams: the coroutine path
    assert not stub.start_wire(QUESTION, flags=0x100, payload=0, do=False, deadline=1e9,
                               callback=lambda a, e: None)
    assert gen.forwarder.in_flight_wire == 0 and up.held == [] and closed == []


async def test_a_reload_keeps_the_old_generation_until_its_task_free_queries_land(
        monkeypatch: Any) -> None:
    """swap() closes the old generation at once only if nothing is in flight on either
    path; a task-free query still out keeps it open until it lands."""
    import dnstls.stub as stub_module

    stub, gen, up, closed = forwarding()
    gen.config = config = type("Config", (), {"cache": None, "query_timeout": 4.0,
                                              "private_addresses": ()})()  # type: ignore[attr-defined]
    stub.old = []
    stub.cache = None
    stub.clock = stub.loop.time
    stub.minimal_responses = True
    stub._private = None
    stub.dnssec_counts = Counter()
    stub._dnssec_closed = Counter()

    def new_generation(_config: Any, **_kwargs: Any) -> FakeGeneration:
        fresh = FakeGeneration(Forwarder([HeldUpstream()], clock=stub.loop.time))  # type: ignore[list-item]
        fresh.config = config  # type: ignore[attr-defined]
        return fresh

    monkeypatch.setattr(stub_module, "Generation", new_generation)
    got: list[Any] = []
    assert stub.start_wire(QUESTION, flags=0x100, payload=0, do=False, deadline=1e9,
                           callback=lambda a, e: got.append((a, e)))
    new = stub.swap(config)  # type: ignore[arg-type]
    assert stub.current is new and gen.retired and closed == []  # one query still out
    assert stub.start_wire.__self__ is new.forwarder  # type: ignore[attr-defined]
    up.held[0](None, None)
    assert closed == [gen] and len(got) == 1


async def test_a_validating_generation_never_forwards_on_the_wire_path() -> None:
    """While a generation validates DNSSEC the listeners keep forwarded queries on the
    message path; a query routed to the wire path before a reload switched validation
    on is not forwarded unchecked: nothing starts, and the task path fails (SERVFAIL)."""
    from dnstls.resolver.base import ResolveFailure

    loop = asyncio.get_running_loop()
    up = HeldUpstream()
    gen = FakeGeneration(Forwarder([up], clock=loop.time))  # type: ignore[list-item]
    gen.validating = object()
    stub = StubForwarding.__new__(StubForwarding)
    stub.loop = loop
    stub._adopt(gen)  # type: ignore[arg-type]
    assert not stub.start_wire(QUESTION, flags=0x100, payload=0, do=False, deadline=1e9,
                               callback=lambda a, e: None)
    try:
        await stub.resolve_wire(QUESTION, flags=0x100, payload=0, do=False, deadline=1e9)
    except ResolveFailure as exc:
        assert exc.ede == 14  # Not Ready
    else:
        raise AssertionError("forwarded unvalidated")
    assert up.held == [] and gen.in_flight == 0
