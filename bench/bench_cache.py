"""Microseconds per cache hit: the listener's wire fast path vs the stage (dnspython).

Usage: ``.venv/bin/python bench/bench_cache.py [--names 1000] [--rounds 20]``

Fills a cache with ~1000 names (two A records each, as a typical upstream answer) and
measures, per hit:

* ``lookup_wire``: key given, bytes out (ID, case, TTLs patched; plain OPT appended);
* ``read_query + lookup_wire``: what a listener does from the raw query bytes;
* ``CacheStage.resolve``: the resolver-stage hit, which parses the patched bytes into a
  ``dns.message.Message`` (and computes the key from a parsed query);
* ``parse + stage + to_wire``: the whole slow path a listener would take without the
  fast path (``dns.message.from_wire`` of the query, the stage, rendering the answer);
* ``insert_wire`` / ``insert``: the cost of storing an answer (for a miss).

This is not a test; it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import dns.message
import dns.rrset

from dnstls.proto.answers import Transport, make_response
from dnstls.proto.cachekey import key_from_message, read_query
from dnstls.resolver.base import Request
from dnstls.resolver.cache import Cache, CacheStage


def build(n: int) -> tuple[list[dns.message.Message], list[dns.message.Message]]:
    queries, responses = [], []
    for i in range(n):
        q = dns.message.make_query(f"host{i}.Example.COM.", "A", use_edns=0, pad=128)
        r = make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A",
                                            "192.0.2.1", "192.0.2.2"))
        queries.append(q)
        responses.append(r)
    return queries, responses


def per_op(label: str, ops: int, fn: Callable[[], None], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    us = best / ops * 1e6
    print(f"{label:<40} {us:8.2f} µs/op   ({ops} ops, best of {rounds})")
    return us


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    n, rounds = args.names, args.rounds
    queries, responses = build(n)
    keys = [key_from_message(q) for q in queries]
    raws = [q.to_wire() for q in queries]
    cache = Cache()
    for key, r in zip(keys, responses, strict=True):
        cache.insert(key, r, 0.0)
    now = 42.0

    def fast() -> None:
        lookup = cache.lookup_wire
        for i, key in enumerate(keys):
            lookup(key, i, now)

    def fast_from_raw() -> None:
        lookup = cache.lookup_wire
        for raw in raws:
            facts = read_query(raw)
            assert facts is not None
            lookup(facts.key, facts.id, now, rd=facts.rd, qname=facts.qname,
                   edns=facts.edns)

    clock_now = now

    class Never:
        async def resolve(self, request: Request) -> dns.message.Message:
            raise AssertionError("every lookup should hit")

    stage = CacheStage(Never(), cache, lambda: clock_now)
    requests = [Request(message=q, transport=Transport.TLS, client=None, deadline=0.0)
                for q in queries]
    loop = asyncio.new_event_loop()

    async def stage_hits() -> None:
        for req in requests:
            await stage.resolve(req)

    async def slow_path() -> None:
        for raw in raws:
            q = dns.message.from_wire(raw)
            response = await stage.resolve(
                Request(message=q, transport=Transport.TLS, client=None, deadline=0.0))
            response.to_wire()

    wires = [r.to_wire() for r in responses]

    def insert_wire() -> None:
        c = Cache()
        for key, wire in zip(keys, wires, strict=True):
            c.insert_wire(key, wire, 0.0)

    def insert() -> None:
        c = Cache()
        for key, r in zip(keys, responses, strict=True):
            c.insert(key, r, 0.0)

    print(f"{n} names, stats before: {cache.statistics()}")
    fast_us = per_op("lookup_wire (key given)", n, fast, rounds)
    raw_us = per_op("read_query + lookup_wire", n, fast_from_raw, rounds)
    stage_us = per_op("CacheStage.resolve (hit, parses)", n,
                      lambda: loop.run_until_complete(stage_hits()), rounds)
    slow_us = per_op("from_wire + stage + to_wire", n,
                     lambda: loop.run_until_complete(slow_path()), rounds)
    per_op("insert_wire (miss: store bytes)", n, insert_wire, rounds)
    per_op("insert (miss: render message, store)", n, insert, rounds)
    loop.close()
    print(f"stage hit / wire hit: {stage_us / fast_us:.1f}x; "
          f"full slow path / raw fast path: {slow_us / raw_us:.1f}x")
    print(f"stats after: {cache.statistics()}")


if __name__ == "__main__":
    main()
