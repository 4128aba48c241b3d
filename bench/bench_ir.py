"""Instructions per ``QueryHandler.fast()`` call (or per ``read_query``), counted by callgrind.

Usage::

    .venv/bin/python bench/bench_ir.py [--trees TREE ...] [--shapes plain keepalive padded]
                                       [--modes warm aged readq] [--rounds 20]

For each source tree, shape and mode it runs this script under ``valgrind
--tool=callgrind --collect-atstart=no --toggle-collect=deque_extend*`` (only the measured
loop runs inside ``deque.extend``) and prints instructions per query. Unlike CPU time,
the count does not depend on what else the machine runs: on a shared 2-core machine it
tells a 3 % difference apart, where ``bench_fast.py`` needs many alternating runs to see
10 %. It counts instructions, not cycles (cache misses and branch mispredictions are not
in it); confirm end to end.

Modes: ``warm`` re-ages the entries once in the run (the hot bench: 1,000 names at
~40k qps are hit ~40 times per second each), ``aged`` moves the clock one second before
every round (every hit re-ages its entry: the worst case), ``readq`` times
:func:`~dnstls.proto.cachekey.read_query` alone. 200 names, ``--rounds`` passes over
them. Each run takes ~50 s (Python starts under valgrind); two run at a time.
Needs ``valgrind``. Not a test: it prints numbers.

The whole Python of a read (``bench_read.py``) was counted the same way, by difference
(its loop runs under asyncio, so nothing to toggle on)::

    PYTHONPATH=TREE/src valgrind --tool=callgrind .venv/bin/python bench/bench_read.py \
        --per-read 16 --conns 100 --rounds 2     # and --rounds 6: 64,000 queries more
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def child(shape: str, mode: str, rounds: int) -> None:
    """The measured process: build the cache, then run ``rounds`` passes in deque.extend."""
    sys.path.insert(0, str(BENCH))
    import bench_fast

    from dnstls.net.handler import QueryHandler
    from dnstls.proto.answers import Transport
    from dnstls.proto.cachekey import read_query
    from dnstls.resolver.base import Refuse

    cache, shapes = bench_fast.build(200)
    now = [10.0]
    handler = QueryHandler(Refuse(), keepalive=10.0, cache=cache, clock=lambda: now[0])
    wires = shapes[shape]
    fast = handler.fast
    tls = Transport.TLS
    for w in wires:
        if fast(w, tls) is None:
            raise SystemExit("miss")
    sink: deque[object] = deque(maxlen=0)
    for r in range(rounds):
        if mode == "aged" or r == 0:
            now[0] += 1.0
        if mode == "readq":
            sink.extend(map(read_query, wires))
        else:
            sink.extend(map(fast, wires, repeat(tls)))
    print(f"queries {len(wires) * rounds}")


def measure(tree: str, shape: str, mode: str, rounds: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve() / "src"))
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=deque_extend*", f"--callgrind-out-file={tmp}/cg.out",
             sys.executable, __file__, "--child", shape, mode, str(rounds)],
            env=env, capture_output=True, text=True, timeout=900, check=False)
    refs = re.search(r"refs:\s+([\d,]+)", done.stderr)
    queries = re.search(r"queries (\d+)", done.stdout)
    if refs is None or queries is None:
        return f"{tree} {shape} {mode}: failed ({done.stderr.strip()[-200:]})"
    per = int(refs.group(1).replace(",", "")) / int(queries.group(1))
    return f"{tree:30} {shape:10} {mode:6} {per:8.0f} instructions/query"


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[str(BENCH.parent)])
    parser.add_argument("--shapes", nargs="+", default=["plain", "keepalive", "padded"])
    parser.add_argument("--modes", nargs="+", default=["warm"])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    jobs = [(tree, shape, mode) for shape in args.shapes for mode in args.modes
            for tree in args.trees]
    with ThreadPoolExecutor(2) as pool:
        for line in pool.map(lambda job: measure(job[0], job[1], job[2], args.rounds), jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
