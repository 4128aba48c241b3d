"""ZoneRouter: the longest forward zone at or above a name picks its forwarder, the
same way on the wire path (start_wire, resolve_wire) and the message path (resolve)."""

from __future__ import annotations

import random
from typing import Any

import dns.message
import dns.name
import pytest

from dnstls.proto.answers import Transport
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import Request
from dnstls.resolver.forward_zones import ZoneRouter


class Recording:
    """A stand-in forwarder that says who it is and records what it was asked."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.asked: list[tuple[str, bytes]] = []

    def start_wire(self, question: bytes, **kw: Any) -> bool:
        self.asked.append(("start_wire", question))
        kw["callback"](self.label.encode(), None)
        return True

    async def resolve_wire(self, question: bytes, **kw: Any) -> bytes:
        self.asked.append(("resolve_wire", question))
        return self.label.encode()

    async def resolve(self, request: Request) -> dns.message.Message:
        self.asked.append(("resolve", key_from_message(request.message)[:-1]))
        response = dns.message.make_response(request.message)
        response.id = len(self.label)
        return response

    def statistics(self) -> dict[str, Any]:
        return {"strategy": "ordered", "upstreams": {self.label: {"queries": 1}}}


ZONES = ["corp.example.", "a.corp.example.", "168.192.in-addr.arpa.", "home.arpa.", "com."]


@pytest.fixture
def router() -> ZoneRouter:
    zones = [(dns.name.from_text(z), Recording(z)) for z in ZONES]
    return ZoneRouter(Recording("default"), zones)


def question(name: str) -> bytes:
    return key_from_message(dns.message.make_query(name, "A"))[:-1]


CASES = [
    ("corp.example.", "corp.example."),  # the zone's own name
    ("www.corp.example.", "corp.example."),
    ("WWW.Corp.EXAMPLE.", "corp.example."),  # case-insensitive (the key is lower-cased)
    ("a.corp.example.", "a.corp.example."),  # longest match
    ("x.y.a.corp.example.", "a.corp.example."),
    ("b.corp.example.", "corp.example."),
    ("xcorp.example.", "default"),  # whole labels only
    ("example.", "default"),  # above the zone
    ("corp.example.net.", "default"),
    ("1.1.168.192.in-addr.arpa.", "168.192.in-addr.arpa."),
    ("1.1.169.192.in-addr.arpa.", "default"),
    ("router.home.arpa.", "home.arpa."),
    ("arpa.", "default"),
    ("www.example.com.", "com."),
    ("com.", "com."),
    ("www.example.org.", "default"),
    (".", "default"),
    ("a\\.corp.example.", "default"),  # one label "a.corp" under example.
    ("corp\\.example.", "default"),
]


@pytest.mark.parametrize(("name", "label"), CASES)
def test_route_wire_and_route_agree(router: ZoneRouter, name: str, label: str) -> None:
    assert router.route_wire(question(name)).label == label
    assert router.route(dns.name.from_text(name)).label == label


@pytest.mark.parametrize(("name", "label"), CASES)
async def test_every_entry_routes(router: ZoneRouter, name: str, label: str) -> None:
    landed: list[bytes | None] = []
    assert router.start_wire(question(name), flags=0, payload=1232, do=False, deadline=9e9,
                             callback=lambda answer, exc: landed.append(answer))
    answer = await router.resolve_wire(question(name), flags=0, payload=1232, do=False,
                                       deadline=9e9)
    query = dns.message.make_query(name, "A")
    response = await router.resolve(Request(query, Transport.UDP, None, 9e9))
    assert landed == [label.encode()] and answer == label.encode()
    assert response.id == len(label)
    chosen = router.route_wire(question(name))
    assert [kind for kind, _ in chosen.asked] == ["start_wire", "resolve_wire", "resolve"]
    assert {q for _, q in chosen.asked} == {question(name)}


def test_random_names_match_a_reference_walk(router: ZoneRouter) -> None:
    rng = random.Random(5)
    labels = ["corp", "a", "example", "com", "168", "192", "in-addr", "arpa", "home", "x",
              "Corp", "ARPA"]
    zones = {dns.name.from_text(z) for z in ZONES}
    for _ in range(2000):
        name = dns.name.from_text(".".join(rng.choice(labels)
                                           for _ in range(rng.randint(1, 6))) + ".")
        expected = "default"
        for i in range(len(name.labels) - 1):
            candidate = dns.name.Name(name.labels[i:])
            if candidate in zones:
                expected = candidate.to_text().lower()
                break
        wire = (name.to_wire() or b"").lower() + b"\x00\x01\x00\x01"
        assert router.route_wire(wire).label == expected, name
        assert router.route(name).label == expected, name


def test_statistics_per_zone(router: ZoneRouter) -> None:
    stats = router.statistics()
    assert stats["upstreams"] == {"default": {"queries": 1}}
    assert sorted(stats["zones"]) == sorted(ZONES)
    assert stats["zones"]["home.arpa."]["upstreams"] == {"home.arpa.": {"queries": 1}}
    assert "home.arpa." in repr(router)
