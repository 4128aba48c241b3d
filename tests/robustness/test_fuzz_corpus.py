"""The fuzz harness's corpus (fuzz/corpus/query_path) replayed as ordinary tests, plus a
short seeded run of the harness's plain-Python mutation mode (see fuzz/fuzz_query_path.py
for longer campaigns with atheris)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.robustness

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
CORPUS = FUZZ / "corpus" / "query_path"


def _harness() -> ModuleType:
    name = "fuzz_query_path"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUZZ / "fuzz_query_path.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("entry", sorted(p.name for p in CORPUS.iterdir()))
def test_corpus_entry(entry: str) -> None:
    _harness().one_input((CORPUS / entry).read_bytes())


def test_seeded_mutations() -> None:
    harness = _harness()
    ran = harness.random_campaign(harness.load_corpus(CORPUS), 3000, seed=7, seconds=20)
    assert ran > 0
