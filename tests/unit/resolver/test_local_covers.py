"""LocalData.covers_wire's endswith shortcut says what the label walk says, and a
forwarded query asks it once (the handler's route no longer asks the wire path's
is_local again when it is the same function)."""

from __future__ import annotations

import random
from pathlib import Path

import dns.message
import dns.name

from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Transport
from dnstls.proto.cachekey import WireQuery
from dnstls.resolver.base import Refuse
from dnstls.resolver.cache import Cache
from dnstls.resolver.local import RESOLVER_ARPA, LocalData, load_zone
from dnstls.resolver.wire import WireForwarder

ZONE = """$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
"""


def walk(name: bytes, origins: list[bytes]) -> bool:
    """The reference: some label boundary of ``name`` starts a local origin."""
    pos = 0
    while pos < len(name):
        if name[pos:] in origins:
            return True
        pos += 1 + name[pos]
    return False


def wire(text: str) -> bytes:
    out = dns.name.from_text(text).to_wire()
    assert out is not None
    return out.lower()


def local_data(tmp_path: Path) -> LocalData:
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    return LocalData(Refuse(), zones=[load_zone(path)])


def test_covers_wire_says_what_the_label_walk_says(tmp_path: Path) -> None:
    local = local_data(tmp_path)
    origins = [wire("example.test."), RESOLVER_ARPA.to_wire() or b""]
    names = [wire(n) for n in (
        "example.test.", "www.example.test.", "a.b.c.example.test.", "test.",
        "example.test.example.", "xexample.test.", "resolver.arpa.", "_dns.resolver.arpa.",
        "arpa.", "n1.bench.test.", ".")]
    # an origin's bytes ending a name inside a label: ends with them, not under them
    names.append(b"\x0eab\x07example\x04test\x00")
    names.append(b"\x03www\x0fx\x08resolver\x04arpa\x00")
    rng = random.Random(6)
    for _ in range(2000):
        labels = [bytes(rng.choice(b"abcdex\x04\x07") for _ in range(rng.randrange(1, 9)))
                  for _ in range(rng.randrange(0, 4))]
        tail = rng.choice([b"\x07example\x04test\x00", b"\x04test\x00", b"\x00",
                           b"\x08resolver\x04arpa\x00", b"\x04arpa\x00"])
        names.append(b"".join(bytes((len(label),)) + label for label in labels) + tail)
    covered = 0
    for name in names:
        assert local.covers_wire(name) == walk(name, origins), name
        # the handler's form (the whole cache key; class IN): the same answer
        assert local.covers_key(name + b"\x00\x01\x00\x01\x00") == walk(name, origins)
        covered += walk(name, origins)
    assert 100 < covered < len(names) - 100


def test_a_forwarded_query_asks_local_data_once(tmp_path: Path) -> None:
    calls: list[bytes] = []

    class Counting(LocalData):
        def covers_key(self, key: bytes) -> bool:
            calls.append(key[:-5])
            return super().covers_key(key)

    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    local = Counting(Refuse(), zones=[load_zone(path)])
    cache = Cache()
    wf = WireForwarder(object(), cache, lambda: 0.0, is_local=local.covers_key)
    handler = QueryHandler(local, cache=cache, wire=wf, local=local, clock=lambda: 0.0)
    query = dns.message.make_query("n1.bench.test.", "A").to_wire()
    routed = handler.route(query, Transport.TLS)
    assert isinstance(routed, WireQuery)
    assert calls == [wire("n1.bench.test.")]
    calls.clear()
    local_query = dns.message.make_query("www.example.test.", "A").to_wire()
    assert handler.route(local_query, Transport.TLS) is None  # first time: message path
    assert calls == [wire("www.example.test.")]
    # a wire path with some other is_local is still asked
    other: list[bytes] = []
    wf2 = WireForwarder(object(), cache, lambda: 0.0,
                        is_local=lambda key: other.append(key[:-5]) or True)
    handler2 = QueryHandler(local, cache=cache, wire=wf2, local=local, clock=lambda: 0.0)
    assert handler2.route(query, Transport.TLS) is None
    assert other == [wire("n1.bench.test.")]


def test_use_wire_path_off_sends_forwarded_queries_to_the_message_path(
        tmp_path: Path) -> None:
    """The stub while it validates DNSSEC: a forwarded query is routed to the message
    path (None) though a wire path exists; switched on again, to the wire path; a
    replace_local in between keeps the choice."""
    path = tmp_path / "example.test.zone"
    path.write_text(ZONE)
    local = LocalData(Refuse(), zones=[load_zone(path)])
    cache = Cache()
    wf = WireForwarder(object(), cache, lambda: 0.0, is_local=local.covers_key)
    handler = QueryHandler(local, cache=cache, wire=wf, local=local, clock=lambda: 0.0)
    query = dns.message.make_query("n1.bench.test.", "A").to_wire()
    assert isinstance(handler.route(query, Transport.UDP), WireQuery)
    handler.use_wire_path(False)
    assert handler.route(query, Transport.UDP) is None
    handler.replace_local(local, local)
    assert handler.route(query, Transport.UDP) is None
    handler.use_wire_path(True)
    assert isinstance(handler.route(query, Transport.UDP), WireQuery)
