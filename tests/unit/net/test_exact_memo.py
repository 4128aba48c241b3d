"""The listeners' exact-query memo (QueryHandler.route + Cache.lookup_exact + ExactMemo):
an exact repeat of a query (same bytes after the ID) gets the saved answer under its own
ID, byte for byte what the full path (read_query + Cache.lookup_wire) gives, with the same
effect on the cache (hit count, LRU order) and on the handler's counters."""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest

from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import carries_cookie, key_from_message
from dnstls.resolver.base import Refuse
from dnstls.resolver.cache import Cache, ExactMemo

NAMES = ["www.example.com.", "a.example.com.", "mail.example.org.", "x.example.net."]


def response(name: str, ttl: int, address: str, *, rcode: int = 0) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0)
    r = make_response(q)
    r.set_rcode(rcode)
    if rcode == 0:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", address))
        r.authority.append(dns.rrset.from_text(name.split(".", 1)[1], ttl * 2, "IN", "NS",
                                               "ns." + name.split(".", 1)[1]))
    return r.to_wire()


def store(cache: Cache, name: str, ttl: int, address: str, now: float,
          do: bool = False) -> None:
    q = dns.message.make_query(name, "A", use_edns=0, want_dnssec=do)
    assert cache.insert_wire(key_from_message(q), response(name, ttl, address), now)


def shapes(name: str, qid: int) -> list[bytes]:
    """Query shapes the fast path serves: case, RD, EDNS, DO, keepalive, padding, ECS,
    NSID; and a COOKIE (served, never memoised)."""
    cased = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(name))
    keepalive = dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")
    ecs = dns.edns.ECSOption("0.0.0.0", 0)
    nsid = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    out = []
    for n in (name, cased):
        for kwargs in ({"use_edns": None}, {"use_edns": 0}, {"use_edns": 0, "want_dnssec": True},
                       {"use_edns": 0, "options": [keepalive]},
                       {"use_edns": 0, "pad": 128},
                       {"use_edns": 0, "pad": 128, "options": [ecs, keepalive]},
                       {"use_edns": 0, "options": [nsid]},
                       {"use_edns": 0, "options": [cookie]},
                       {"use_edns": 0, "pad": 64, "options": [cookie, keepalive]}):
            for flags in (dns.flags.RD, 0):
                q = dns.message.make_query(n, "A", id=qid, **kwargs)  # type: ignore[arg-type]
                q.flags = flags
                out.append(q.to_wire())
    return out


class Pair:
    """Two handlers over two caches filled alike: one with the memo, one without."""

    def __init__(self, **cache_args: float | bool) -> None:
        self.now = 0.0
        self.caches = (Cache(**cache_args), Cache(**cache_args))
        self.memo, self.ref = (QueryHandler(Refuse(), keepalive=15.0, cache=cache,
                                            clock=lambda: self.now, exact_memo=flag)
                               for cache, flag in zip(self.caches, (True, False), strict=True))

    def store(self, name: str, ttl: int, address: str, do: bool = False) -> None:
        for cache in self.caches:
            store(cache, name, ttl, address, self.now, do)

    def route(self, wire: bytes, transport: Transport) -> bytes | None:
        got = self.memo.route(wire, transport)
        want = self.ref.route(wire, transport)
        if isinstance(want, bytes):
            assert got == want
        else:
            assert not isinstance(got, bytes)
        a, b = self.caches
        assert a.statistics() == b.statistics()
        assert list(a._entries) == list(b._entries)  # the same LRU order
        assert self.memo.responses == self.ref.responses
        return got if isinstance(got, bytes) else None


@pytest.mark.parametrize("minimal", [False, True])
def test_memo_answers_equal_the_full_path(monkeypatch: pytest.MonkeyPatch,
                                          minimal: bool) -> None:
    """Every shape, transport (keepalive and padding differ by transport), second, and
    entry replacement; the transports interleaved over the same caches; with minimal
    responses (the NS dropped) and without."""
    from dnstls.resolver import cache as cache_module

    monkeypatch.setattr(cache_module, "EXACT_WINDOW", 10**6)  # never rests here
    pair = Pair(minimal_responses=minimal)
    for i, name in enumerate(NAMES):
        pair.store(name, 5 + i, f"192.0.2.{i}")
        pair.store(name, 7, "198.51.100.1", do=True)
    rng = random.Random(6)
    wires = [w for name in NAMES for w in shapes(name, 0)]
    served = 0
    # (1.2 after 2.5: the cache takes any `now`; an older second must not get the memo)
    for now in (0.0, 0.1, 0.99, 1.0, 1.5, 2.0, 2.5, 1.2, 4.999, 5.0, 5.5, 6.2, 7.0, 8.0, 9.0):
        pair.now = now
        for _ in range(3):
            for wire in rng.sample(wires, len(wires)):
                qid = rng.getrandbits(16).to_bytes(2, "big")
                transport = rng.choice(list(Transport))
                if pair.route(qid + wire[2:], transport) is not None:
                    served += 1
        if now == 6.2:  # replaced with other data and TTLs: the memo must not serve the old
            pair.store(NAMES[0], 30, "203.0.113.9")
            pair.store(NAMES[1], 1, "203.0.113.10")
    assert served > len(wires)
    assert set(pair.memo._memos) == {Transport.TLS, Transport.TCP}  # UDP: none
    for memo in pair.memo._memos.values():
        assert len(memo) > 0
        assert all(not carries_cookie(b"\0\0" + exact) for exact in memo.table)


def test_memo_after_eviction_and_servfail() -> None:
    pair = Pair(max_entries=2, servfail_ttl=1.5)
    wires = [shapes(name, 0)[2] for name in NAMES]  # EDNS, RD
    for round_ in range(6):
        pair.now = round_ * 0.5
        for i, name in enumerate(NAMES):
            if (i + round_) % 3 == 0:
                pair.store(name, 60, f"192.0.2.{round_}")  # evicts the LRU entry
            for wire in wires:
                pair.route(wire, Transport.TLS)
    # a cached SERVFAIL is answered (and memoised) like any fresh entry
    q = dns.message.make_query(NAMES[0], "A", use_edns=0)
    for cache in pair.caches:
        cache.insert_wire(key_from_message(q), response(NAMES[0], 0, "", rcode=2), pair.now)
    for step in (0.0, 0.5, 0.7, 0.1):  # memoised at age 1 (1.2 s), expired at 1.5 s
        pair.now += step
        out = pair.route(wires[0], Transport.TLS)
        assert out is not None and out[3] & 0xF == 2
    pair.now += 0.3  # the SERVFAIL has expired (still at age 1)
    assert pair.route(wires[0], Transport.TLS) is None


def test_repeat_takes_the_memo_and_ids_are_the_querys() -> None:
    pair = Pair()
    pair.store(NAMES[0], 300, "192.0.2.1")
    wire = shapes(NAMES[0], 0)[8]  # padded
    first = pair.memo.route(b"\x12\x34" + wire[2:], Transport.TLS)
    memo = pair.memo._memos[Transport.TLS]
    assert memo is not None and isinstance(first, bytes) and len(memo) == 1
    hits = pair.caches[0].statistics().hits
    again = pair.memo.route(b"\xab\xcd" + wire[2:], Transport.TLS)
    assert isinstance(again, bytes) and again[:2] == b"\xab\xcd" and again[2:] == first[2:]
    assert len(again) % 468 == 0
    assert pair.caches[0].statistics().hits == hits + 1
    # a COOKIE query is answered from the cache but not kept
    cookie = shapes(NAMES[0], 0)[14]
    assert carries_cookie(cookie)
    assert isinstance(pair.memo.route(cookie, Transport.TLS), bytes)
    assert len(memo) == 1
    # query logging: no fast path at all, memo or not
    pair.memo.log_queries = True
    assert pair.memo.route(wire, Transport.TLS) is None


def test_carries_cookie() -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    assert carries_cookie(dns.message.make_query("a.", "A", options=[cookie]).to_wire())
    assert not carries_cookie(dns.message.make_query("a.", "A", pad=128).to_wire())
    assert not carries_cookie(dns.message.make_query("a.", "NULL").to_wire())  # 00 0a 00
    assert carries_cookie(b"\x00" * 11)  # unreadable: assumed to carry one


def test_exact_memo_is_bounded() -> None:
    memo = ExactMemo(max_items=3, max_bytes=10_000)
    for i in range(3):
        memo.save(b"q%d" % i, b"key", i, 0.0, 1.0, b"r" * 100)
    assert len(memo) == 3
    memo.save(b"q1", b"key", 9, 0.0, 1.0, b"r" * 200)  # a replacement: not a new item
    assert len(memo) == 3 and memo.size == sum(
        len(e) + len(v[0]) + v[5] + 512 for e, v in memo.table.items())
    memo.save(b"q3", b"key", 3, 0.0, 1.0, b"rr")  # a fourth item: the table starts over
    assert list(memo.table) == [b"q3"]
    memo.save(b"q4", b"key", 4, 0.0, 1.0, b"r" * 9_400)  # past max_bytes with q3: starts over
    assert list(memo.table) == [b"q4"] and memo.size <= memo.max_bytes
    memo.save(b"q5", b"key", 5, 0.0, 1.0, b"r" * 20_000)  # alone past the bound: not kept
    assert len(memo) == 0 and memo.size == 0
    with pytest.raises(ValueError):
        ExactMemo(max_items=0)


def test_memo_rests_when_queries_do_not_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries that never repeat exactly (0x20 case randomisation): after a window of
    failed lookups with fewer answers than that, the memo is emptied and left alone for
    a while (neither looked up nor saved), then tried again; the answers never change."""
    from dnstls.resolver import cache as cache_module

    monkeypatch.setattr(cache_module, "EXACT_WINDOW", 8)
    monkeypatch.setattr(cache_module, "EXACT_REST", 5)
    monkeypatch.setattr(cache_module, "EXACT_REST_MAX", 12)
    pair = Pair()
    name = "abcdefghijkl.example.com."
    pair.store(name, 300, "192.0.2.1")
    pair.now = 0.5
    memo = pair.memo._memos[Transport.TLS]

    def cased(i: int) -> bytes:
        text = "".join(c.upper() if i >> n & 1 else c for n, c in enumerate(name))
        return dns.message.make_query(text, "A", id=i).to_wire()

    for i in range(7):
        assert pair.route(cased(i), Transport.TLS) is not None
    assert len(memo) == 7 and not memo.resting
    pair.route(cased(7), Transport.TLS)  # the 8th failed lookup, no answer
    assert memo.resting == 5 and len(memo) == 0
    for _ in range(5):  # resting: the full path, nothing saved
        assert pair.route(cased(1), Transport.TLS) is not None
        assert len(memo) == 0
    assert not memo.resting
    for _ in range(3):  # back: saved once, then answered from the memo
        assert pair.route(cased(1), Transport.TLS) is not None
    assert len(memo) == 1 and memo.hits == 2 and memo.misses == 1
    # uncached names count too: 7 more failed lookups (8 in the window), 2 answers
    for i in range(7):
        assert pair.route(dns.message.make_query(f"x{i}.example.", "A").to_wire(),
                          Transport.TLS) is None
    assert memo.resting == 10  # a failed window after a failed one: twice the rest
    for i in range(10 + 8):  # rests, then fails again: at most EXACT_REST_MAX
        pair.route(cased(100 + i), Transport.TLS)
    assert memo.resting == 12
    for _ in range(12):
        pair.route(cased(1), Transport.TLS)
    # a window that pays (8 answers, 8 failed lookups) and the next rest is short again
    for _ in range(9):
        pair.route(cased(1), Transport.TLS)
    for i in range(7):
        pair.route(cased(200 + i), Transport.TLS)
    assert memo.hits == 0 and memo.rest == 0 and not memo.resting
    for i in range(8):
        pair.route(cased(300 + i), Transport.TLS)
    assert memo.resting == 5
