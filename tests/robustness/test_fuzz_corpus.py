"""The fuzz harnesses' corpora replayed as ordinary tests, plus a short seeded run of
each harness's plain-Python mutation mode (see fuzz/fuzz_query_path.py and
fuzz/fuzz_upstream_path.py for longer campaigns with atheris):

* ``query_path``: what clients send (framing, parse, cache key, local answers);
* ``upstream_path``: what upstreams send back (transport matching, forwarder, cache,
  the client's answer on the wire and message paths)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.robustness

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = {"query_path": "fuzz_query_path", "upstream_path": "fuzz_upstream_path"}


def _harness(corpus: str) -> ModuleType:
    name = HARNESSES[corpus]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("corpus,entry", [
    (corpus, p.name) for corpus in HARNESSES
    for p in sorted((FUZZ / "corpus" / corpus).iterdir())])
def test_corpus_entry(corpus: str, entry: str) -> None:
    _harness(corpus).one_input((FUZZ / "corpus" / corpus / entry).read_bytes())


@pytest.mark.parametrize("corpus,count", [("query_path", 3000), ("upstream_path", 2500)])
def test_seeded_mutations(corpus: str, count: int) -> None:
    harness = _harness(corpus)
    ran = harness.random_campaign(harness.load_corpus(FUZZ / "corpus" / corpus), count,
                                  seed=7, seconds=15)
    assert ran > 0
