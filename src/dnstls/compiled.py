"""The compiled hot path: which modules mypyc builds, and whether they are in use.

``setup.py`` compiles :data:`COMPILED_MODULES` to C extensions with mypyc when it can
(a C compiler and the Python headers; ``DNSTLS_PURE_PYTHON=1`` skips it) and otherwise
installs the same package as pure Python. The modules are the per-query path of the
DoT service -- read, cache lookup and render, forward to UDP, answer -- and of the stub
(the plain-DNS UDP listener and the TCP/TLS upstream pool), and nothing else: see
docs/performance.md, "Compiled hot path (session 5, mypyc)" and "Compiled stub and
stream upstream (session 6, stubc)".

The same source serves both builds, so it is written for both: it type-checks with
``mypy --strict`` and avoids what mypyc cannot compile or changes (no generic
dataclasses, no method aliases, no ``break`` inside try/finally, no class attribute
defaulting to a name rather than a literal -- mypyc warns "Unsupported default
attribute value" --, and argument annotations that name every type callers really
pass -- mypyc checks them at run time; a ``Protocol`` is not checked, so duck-typed
collaborators are typed by one).
Compiled classes cannot be subclassed or monkeypatched from Python; tests fake through
seams (constructor arguments such as ``StreamUpstream(connect=...)``), and the few that
cannot skip when :func:`is_compiled` says the module is compiled.

This module imports nothing from dnstls: ``setup.py`` reads :data:`COMPILED_MODULES`
from it without importing the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

#: Source files (relative to ``src/``) that setup.py hands to mypyc.
COMPILED_MODULES = (
    "dnstls/proto/acl.py",
    "dnstls/proto/admission.py",
    "dnstls/proto/answers.py",
    "dnstls/proto/cachekey.py",
    "dnstls/proto/edns.py",
    "dnstls/proto/framing.py",
    "dnstls/proto/stream.py",
    "dnstls/proto/upstream.py",
    "dnstls/resolver/base.py",
    "dnstls/resolver/cache.py",
    "dnstls/resolver/coalesce.py",
    "dnstls/resolver/forward.py",
    "dnstls/resolver/wire.py",
    "dnstls/net/handler.py",
    "dnstls/net/server.py",
    "dnstls/net/udp_upstream.py",
    "dnstls/net/pool.py",
    "dnstls/net/udp.py",
)


def module_names() -> list[str]:
    """:data:`COMPILED_MODULES` as dotted module names."""
    return [path.removesuffix(".py").replace("/", ".") for path in COMPILED_MODULES]


def is_compiled(name: str) -> bool:
    """True if importing module ``name`` loads (or loaded) a C extension, not source."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    return origin is not None and not origin.endswith(".py")


def compiled_modules() -> list[str]:
    """The modules of :data:`COMPILED_MODULES` that run compiled in this process."""
    return [name for name in module_names() if is_compiled(name)]


def source_record(src: Path) -> str:
    """The text of ``compiled.sha256`` for the sources under ``src`` as they are now:
    setup.py takes it just before mypyc reads them, so the record describes the bytes
    that were compiled even if a source is edited while the build runs."""
    return "".join(f"{_digest(src / path)}  {path}\n" for path in COMPILED_MODULES)


def _digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest() if source.exists() else ""


def stale_modules() -> list[str]:
    """Compiled modules whose source changed since they were built in place.

    An editable install (``scripts/setup``) builds the extension modules into ``src/``,
    where they shadow the ``.py`` files; setup.py records each source's SHA-256 in
    ``compiled.sha256`` beside this file. A module is stale if its source no longer
    matches (edited without running ``scripts/setup`` again). Installs without that
    record (a wheel) have nothing to compare and report none.
    """
    here = Path(__file__).resolve().parent
    record = here / "compiled.sha256"
    if not record.exists():
        return []
    built = dict(line.split()[::-1] for line in record.read_text().splitlines() if line)
    src = here.parent
    stale = []
    for path, name in zip(COMPILED_MODULES, module_names(), strict=True):
        if not is_compiled(name):
            continue
        if built.get(path) != _digest(src / path):
            stale.append(name)
    return stale


def version_line() -> str:
    """``dnstls VERSION, BUILD``: ``dnstls --version`` and the first line of every
    start-up banner (serve, stub, each worker's)."""
    from dnstls import __version__  # not at import: dnstls/__init__ may be importing us

    return f"dnstls {__version__}, {core_status()}"


def core_status() -> str:
    """One phrase for ``--version`` and the start-up log: which build is in use."""
    done = compiled_modules()
    if not done:
        return "pure Python"
    total = len(COMPILED_MODULES)
    if len(done) == total:
        status = f"compiled core (mypyc, {total} modules)"
    else:
        status = f"partly compiled core (mypyc, {len(done)} of {total} modules)"
    stale = stale_modules()
    if stale:
        status += f", STALE ({len(stale)} built from older sources: run scripts/setup)"
    return status
