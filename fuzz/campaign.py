"""What the fuzz harnesses share: the corpus, the plain-Python mutation campaign and
the command line (atheris when it is installed and ``--random`` is not given).

A harness provides ``one_input(data)`` (raises on a broken promise) and
``mutate(rng, seed) -> bytes``; see fuzz_query_path.py and fuzz_upstream_path.py.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # the plain-Python campaign only
    atheris = None

Mutate = Callable[[random.Random, bytes], bytes]


def instrumented(name: str) -> AbstractContextManager[Any]:
    """atheris' coverage instrumentation for the imports under it, when the harness
    (module ``name``) runs as the atheris fuzzer -- never when imported or with
    ``--random``."""
    if name == "__main__" and atheris is not None and "--random" not in sys.argv:
        return atheris.instrument_imports()  # type: ignore[no-any-return]
    return contextlib.nullcontext()


def load_corpus(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]


def random_campaign(corpus: list[bytes], iterations: int, seed: int, *,
                    target: Callable[[bytes], None], mutate: Mutate,
                    seconds: float = float("inf")) -> int:
    """Run mutated corpus entries; returns how many inputs ran. Raises on a failure,
    after writing the input to ``crash-random-<seed>-<n>`` in the current directory."""
    rng = random.Random(seed)
    start = time.monotonic()
    for n in range(iterations):
        if time.monotonic() - start > seconds:
            return n
        data = mutate(rng, rng.choice(corpus)) if corpus else rng.randbytes(64)
        try:
            target(data)
        except Exception:
            Path(f"crash-random-{seed}-{n}").write_bytes(data)
            raise
    return iterations


def main(argv: list[str], *, doc: str, corpus: Path, target: Callable[[bytes], None],
         mutate: Mutate) -> int:
    """``--random N --seed S [--seconds T] [CORPUS]`` (or no atheris): the mutation
    campaign; otherwise atheris with libFuzzer's own arguments."""
    if atheris is None or "--random" in argv:
        parser = argparse.ArgumentParser(description=doc.splitlines()[0])
        parser.add_argument("--random", type=int, default=100_000, metavar="N")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--seconds", type=float, default=float("inf"))
        parser.add_argument("corpus", nargs="?", default=str(corpus))
        args = parser.parse_args(argv[1:])
        ran = random_campaign(load_corpus(Path(args.corpus)), args.random, args.seed,
                              seconds=args.seconds, target=target, mutate=mutate)
        print(f"{ran} inputs, no failure")
        return 0
    atheris.Setup(argv, target)
    atheris.Fuzz()
    return 0
