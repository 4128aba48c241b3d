"""Microseconds per cache hit through ``QueryHandler.fast`` (what a DoT read costs per query
before TLS and the event loop): read_query + Cache.lookup_wire + counters.

Usage: ``.venv/bin/python bench/bench_fast.py [--rounds 20] [--names 1000]`` (CPU time of
the thread, best round: other load on the machine does not count). Two figures per shape:
every hit in a new second (each entry re-aged and its rendering memoised on every hit,
the worst case) and 40 hits per entry per second (the hot bench: 1,000 names, ~40k qps).

Three query shapes, as dnsperf and stub resolvers send them over DoT: plain (no EDNS),
EDNS with edns-tcp-keepalive, and EDNS padded to 128 bytes (answer padded to 468). To
compare two source trees, run it alternately with ``PYTHONPATH=TREE/src`` and compare
the ratios of interleaved runs. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import dns.edns
import dns.message
import dns.rrset

from dnstls.net.handler import QueryHandler
from dnstls.proto.answers import Transport, make_response
from dnstls.resolver.base import Refuse
from dnstls.resolver.cache import Cache


def build(n: int) -> tuple[Cache, dict[str, list[bytes]]]:
    # DNSTLS_BENCH_PREFETCH=1: a cache with [cache] prefetch on (hits on fresh entries)
    cache = Cache(prefetch=True) if os.environ.get("DNSTLS_BENCH_PREFETCH") else Cache()
    from dnstls.proto.cachekey import key_from_message

    shapes: dict[str, list[bytes]] = {"plain": [], "keepalive": [], "padded": []}
    for i in range(n):
        name = f"n{i}.bench.test."
        q = dns.message.make_query(name, "A", use_edns=0)
        r = make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 3600, "IN", "A", "10.0.0.1"))
        cache.insert(key_from_message(q), r, 0.0)
        shapes["plain"].append(dns.message.make_query(name, "A", use_edns=False).to_wire())
        shapes["keepalive"].append(dns.message.make_query(
            name, "A", use_edns=0,
            options=[dns.edns.GenericOption(11, b"")]).to_wire())
        shapes["padded"].append(dns.message.make_query(name, "A", use_edns=0,
                                                       pad=128).to_wire())
    return cache, shapes


def per_op(fn: Callable[[], None], ops: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best / ops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    cache, shapes = build(args.names)
    now = [10.0]
    handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, clock=lambda: now[0])
    fast = handler.fast
    tls = Transport.TLS
    for shape, wires in shapes.items():

        def run(wires: list[bytes] = wires) -> None:
            for w in wires:
                if fast(w, tls) is None:
                    raise SystemExit("miss")

        # Each round moves the clock by one second: every entry is re-aged (and its
        # rendering memoised again) on every hit -- the worst case.
        def timed(run: Callable[[], None] = run) -> None:
            now[0] += 1.0
            run()

        # A 40th of a second per round: each entry re-aged on one hit in 40, as in the
        # hot bench (1,000 names at ~40k qps).
        def hot(run: Callable[[], None] = run) -> None:
            now[0] += 1 / 40
            run()

        aged = per_op(timed, len(wires), args.rounds)
        warm = per_op(hot, len(wires), args.rounds)
        print(f"fast() {shape:10} {aged:6.2f} µs/query re-aged every hit, "
              f"{warm:6.2f} µs/query 40 hits per second")


if __name__ == "__main__":
    main()
