"""Prefetch (Unbound's ``prefetch``): the cache's decision with an injected clock, and
the Prefetcher's refresh against a fake next stage."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rcode
import pytest
from test_cache import hit, negative, positive, query, ttls

from dnstls.proto.answers import make_response
from dnstls.proto.cachekey import key_from_message
from dnstls.resolver.base import Request, ResolveFailure, servfail
from dnstls.resolver.cache import (
    PREFETCH_NO_ROOM,
    PREFETCH_RUNNING,
    PREFETCH_STARTED,
    Cache,
    ExactMemo,
)
from dnstls.resolver.prefetch import Prefetcher, query_for_key


class Hook:
    """``cache.on_prefetch`` that records the keys and answers ``outcome``."""

    def __init__(self, outcome: int = PREFETCH_STARTED) -> None:
        self.keys: list[bytes] = []
        self.outcome = outcome

    def __call__(self, key: bytes) -> int:
        self.keys.append(key)
        return self.outcome


def cache_with(response: dns.message.Message, q: dns.message.Message, *,
               prefetch: bool = True, at: float = 0.0) -> tuple[Cache, Hook]:
    cache = Cache(prefetch=prefetch)
    hook = Hook()
    cache.on_prefetch = hook
    assert cache.insert(key_from_message(q), response, at)
    return cache, hook


def test_the_first_hit_in_the_last_tenth_asks_once_and_gets_the_cached_answer() -> None:
    q = query()
    cache, hook = cache_with(positive(q, 100), q, at=1000.0)
    for now in (1000.0, 1050.0, 1089.0, 1089.999):
        assert hit(cache, q, now) is not None
    assert hook.keys == []  # 90 % of the TTL not yet gone
    answer = hit(cache, q, 1090.0)  # 10 s left: the prefetch is due
    assert answer is not None and ttls(answer) == [10]  # the cached answer, aging
    assert hook.keys == [key_from_message(q)]
    for now in (1090.5, 1095.0, 1099.9):  # one prefetch per entry
        answer = hit(cache, q, now)
        assert answer is not None
    assert ttls(answer) == [1] and len(hook.keys) == 1
    assert cache.statistics().prefetches == 1


def test_the_message_path_asks_too() -> None:
    q = query()
    cache, hook = cache_with(positive(q, 100), q)
    assert cache.lookup(key_from_message(q), 1, 89.5) is not None and hook.keys == []
    found = cache.lookup(key_from_message(q), 1, 91.0)
    assert found is not None and not found.stale
    assert ttls(dns.message.from_wire(found.wire)) == [9]
    assert cache.lookup(key_from_message(q), 1, 92.0) is not None
    assert hook.keys == [key_from_message(q)]


@pytest.mark.parametrize(("ttl", "due"), [(10, 9), (19, 18), (20, 18), (300, 270),
                                          (86400, 77760)])
def test_the_prefetch_time_is_unbounds(ttl: int, due: int) -> None:
    """PREFETCH_TTL_CALC(ttl) = ttl - ttl/10 in whole seconds."""
    q = query()
    cache, hook = cache_with(positive(q, ttl), q)
    assert hit(cache, q, due - 0.001) is not None and hook.keys == []
    assert hit(cache, q, float(due)) is not None and len(hook.keys) == 1


def test_a_ttl_below_ten_seconds_is_never_prefetched() -> None:
    q = query()
    cache, hook = cache_with(positive(q, 9), q)
    for now in (0.0, 8.0, 8.999):
        assert hit(cache, q, now) is not None
    assert hit(cache, q, 9.0) is None  # expired: a miss, no prefetch
    assert hook.keys == []


def test_off_by_default_and_when_off() -> None:
    q = query()
    cache = Cache()
    assert cache.prefetch is False
    hook = Hook()
    cache.on_prefetch = hook
    cache.insert(key_from_message(q), positive(q, 100), 0.0)
    for now in (90.0, 95.0, 99.0):
        assert hit(cache, q, now) is not None
    assert hook.keys == [] and cache.statistics().prefetches == 0


def test_negative_answers_are_prefetched() -> None:
    """NXDOMAIN and NODATA entries too (Unbound 1.17 refreshes them: its message cache
    gives every reply a prefetch time)."""
    for rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):
        q = query("nx.example.com.")
        cache, hook = cache_with(negative(q, rcode, ttl=3600, minimum=100), q)
        assert hit(cache, q, 89.0) is not None and hook.keys == []
        assert hit(cache, q, 90.0) is not None and len(hook.keys) == 1


def test_servfail_is_never_prefetched() -> None:
    q = query()
    cache = Cache(prefetch=True, servfail_ttl=5)
    hook = Hook()
    cache.on_prefetch = hook
    assert cache.insert_failure(key_from_message(q), q, servfail(2), 0.0)
    for now in (0.0, 4.5, 4.9):
        assert cache.lookup_wire(key_from_message(q), 1, now) is not None
    assert hook.keys == []


def test_no_room_asks_again_on_the_next_hit_and_running_does_not() -> None:
    q = query()
    cache, hook = cache_with(positive(q, 100), q)
    hook.outcome = PREFETCH_NO_ROOM
    hit(cache, q, 90.0)
    hit(cache, q, 91.0)
    assert len(hook.keys) == 2 and cache.statistics().prefetches == 0
    hook.outcome = PREFETCH_RUNNING  # one for the key in flight already: not counted
    hit(cache, q, 92.0)
    hit(cache, q, 93.0)
    assert len(hook.keys) == 3 and cache.statistics().prefetches == 0


def test_the_exact_repeat_memo_does_not_answer_past_the_prefetch_time() -> None:
    q = query()
    cache, hook = cache_with(positive(q, 100), q)
    key, wire = key_from_message(q), q.to_wire()
    memo = ExactMemo()
    assert cache.lookup_wire(key, q.id, 89.2, True, None, True, b"", 0, memo, wire[2:])
    assert cache.lookup_exact(memo, wire[2:], wire, 89.9) is not None
    assert cache.lookup_exact(memo, wire[2:], wire, 90.1) is None  # the full path
    assert hook.keys == []
    assert cache.lookup_wire(key, q.id, 90.1, True, None, True, b"", 0, memo, wire[2:])
    assert hook.keys == [key]


def test_a_refreshed_entry_starts_with_the_full_ttl_and_its_own_prefetch_time() -> None:
    q = query()
    cache, hook = cache_with(positive(q, 100), q)
    key = key_from_message(q)
    hit(cache, q, 95.0)
    assert cache.respond_wire(key, positive(q, 100).to_wire(), 96.0, 7) is not None
    answer = hit(cache, q, 96.5)
    assert answer is not None and ttls(answer) == [100]
    assert hit(cache, q, 185.9) is not None and len(hook.keys) == 1
    assert hit(cache, q, 186.0) is not None and len(hook.keys) == 2


def test_local_data_answers_are_never_prefetched() -> None:
    """Local data keeps its answers in a Cache of its own, built without prefetch."""
    from dnstls.resolver.base import Refuse
    from dnstls.resolver.local import LocalData

    assert LocalData(Refuse()).answers.prefetch is False


@pytest.mark.parametrize("flags", [{}, {"want_dnssec": True}, {"cd": True}, {"ad": True},
                                   {"want_dnssec": True, "cd": True}])
def test_query_for_key_has_the_key(flags: dict[str, bool]) -> None:
    q = dns.message.make_query("WwW.Example.COM.", "AAAA", use_edns=0,
                               want_dnssec=flags.get("want_dnssec", False))
    if flags.get("cd"):
        q.flags |= dns.flags.CD
    if flags.get("ad"):
        q.flags |= dns.flags.AD
    key = key_from_message(q)
    rebuilt = query_for_key(key)
    assert key_from_message(rebuilt) == key
    assert rebuilt.flags & dns.flags.RD and rebuilt.edns == 0


# -- the Prefetcher ----------------------------------------------------------------------


class Next:
    """The stage below the cache: answers with TTL ``ttl`` (or fails) when released."""

    def __init__(self, ttl: int = 100) -> None:
        self.ttl = ttl
        self.requests: list[Request] = []
        self.fail: BaseException | None = None
        self.rcode = dns.rcode.NOERROR
        self.release = asyncio.Event()

    async def resolve(self, request: Request) -> dns.message.Message:
        self.requests.append(request)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        if self.rcode != dns.rcode.NOERROR:
            response = make_response(request.message)
            response.set_rcode(self.rcode)
            return response
        return positive(request.message, self.ttl)


async def settle(prefetcher: Prefetcher) -> None:
    for _ in range(50):  # bounded: the refresh task needs a few loop turns
        if not prefetcher.in_flight:
            return
        await asyncio.sleep(0)
    raise AssertionError("prefetch still in flight")


def prefetching(next_: Next, now: list[float], **kw: int,
                ) -> tuple[Cache, Prefetcher, dns.message.Message]:
    q = query()
    cache = Cache(prefetch=True)
    prefetcher = Prefetcher(next_.resolve, cache, lambda: now[0], **kw)
    cache.on_prefetch = prefetcher
    cache.insert(key_from_message(q), positive(q, 100), 0.0)
    return cache, prefetcher, q


async def test_a_flood_of_hits_starts_one_refresh_that_replaces_the_entry() -> None:
    now = [0.0]
    next_ = Next(ttl=300)
    cache, prefetcher, q = prefetching(next_, now)
    now[0] = 95.0
    for _ in range(100):
        answer = hit(cache, q, now[0])
        assert answer is not None and ttls(answer) == [5]  # the cached answer
    await asyncio.sleep(0)
    assert len(next_.requests) == 1 and prefetcher.in_flight == 1
    asked = next_.requests[0].message
    assert key_from_message(asked) == key_from_message(q)
    now[0] = 96.0
    next_.release.set()
    await settle(prefetcher)
    answer = hit(cache, q, 96.5)
    assert answer is not None and ttls(answer) == [300]  # full TTL from the refresh
    assert cache.statistics().prefetches == 1 and prefetcher.failed == 0


@pytest.mark.parametrize("failure", ["raise", "servfail", "refused"])
async def test_a_failed_refresh_keeps_the_old_entry(failure: str) -> None:
    now = [0.0]
    next_ = Next()
    if failure == "raise":
        next_.fail = ResolveFailure(dns.rcode.SERVFAIL, 22, "no reachable authority")
    else:
        next_.rcode = dns.rcode.SERVFAIL if failure == "servfail" else dns.rcode.REFUSED
    cache, prefetcher, q = prefetching(next_, now)
    now[0] = 92.0
    assert hit(cache, q, 92.0) is not None
    next_.release.set()
    await settle(prefetcher)
    answer = hit(cache, q, 93.0)
    assert answer is not None and answer.rcode() == dns.rcode.NOERROR
    assert ttls(answer) == [7]  # the old entry, still aging; no SERVFAIL cached over it
    assert len(next_.requests) == 1  # one prefetch per entry, even after a failure
    # each kept the old entry: a failed refresh (module docstring), REFUSED too (an
    # answer the cache does not keep)
    assert prefetcher.failed == 1
    assert prefetcher.statistics() == {"failed": prefetcher.failed, "dropped": 0,
                                       "in_flight": 0}


async def test_refreshes_are_bounded_in_number() -> None:
    now = [0.0]
    next_ = Next()
    cache = Cache(prefetch=True)
    prefetcher = Prefetcher(next_.resolve, cache, lambda: now[0], max_in_flight=2)
    cache.on_prefetch = prefetcher
    names = [f"n{i}.example.com." for i in range(4)]
    for name in names:
        cache.insert(key_from_message(query(name)), positive(query(name), 100), 0.0)
    for name in names:
        hit(cache, query(name), 95.0)
    await asyncio.sleep(0)
    assert len(next_.requests) == 2 and prefetcher.dropped == 2
    next_.release.set()
    await settle(prefetcher)
    for name in names:  # the dropped ones ask again on their next hit
        hit(cache, query(name), 96.0)
    await settle(prefetcher)
    assert len(next_.requests) == 4 and cache.statistics().prefetches == 4
    # the second round: the first two are due again (the clock stayed at 0 for their
    # refreshes) and take the room, so the other two are dropped once more
    assert prefetcher.statistics() == {"failed": 0, "dropped": 4, "in_flight": 0}


async def test_aclose_cancels_refreshes_in_flight() -> None:
    now = [0.0]
    next_ = Next()
    cache, prefetcher, q = prefetching(next_, now)
    hit(cache, q, 95.0)
    await asyncio.sleep(0)
    assert prefetcher.in_flight == 1
    await prefetcher.aclose()
    assert prefetcher.in_flight == 0
    answer = hit(cache, q, 96.0)
    assert answer is not None and ttls(answer) == [4]
