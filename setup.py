"""Build hook: compile dnstls's hot path with mypyc when possible, else pure Python.

The package metadata is in pyproject.toml; this file only adds the extension modules.
:data:`dnstls.compiled.COMPILED_MODULES` lists them (read without importing dnstls).
They are built when mypy (mypyc) is importable and ``DNSTLS_PURE_PYTHON`` is not set;
a failed C build (no compiler, no Python headers) falls back to the pure-Python package
with a warning instead of failing the install. ``dnstls --version`` says which is in use.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _warn(message: str) -> None:
    print(f"dnstls setup: {message}", file=sys.stderr)


#: The text of compiled.sha256 for the sources mypyc compiles, taken before it reads them.
_record: str | None = None


def _extensions() -> list[object]:
    global _record
    if os.environ.get("DNSTLS_PURE_PYTHON"):
        _warn("DNSTLS_PURE_PYTHON is set: installing pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc (mypy) is not available: installing pure Python")
        return []
    compiled = runpy.run_path(str(HERE / "src" / "dnstls" / "compiled.py"))
    # Before mypyc reads the sources: a source edited while the build runs then reads as
    # stale against the extension built from its older bytes. (Taken after the build,
    # the record vouched for the new source beside the old extension.)
    _record = compiled["source_record"](HERE / "src")
    try:  # run from the project directory: mypy reads [tool.mypy] from pyproject.toml
        return list(mypycify([f"src/{path}" for path in compiled["COMPILED_MODULES"]],
                             opt_level="3", debug_level="1", target_dir="build/mypyc"))
    except BaseException as exc:  # mypyc reports type errors with SystemExit
        _warn(f"mypyc failed ({exc!r}): installing pure Python")
        return []


def _record_sources() -> None:
    """Editable installs: note the digest of each compiled source next to the build.

    The extension modules in src/ shadow the .py files they were built from; the test
    suite compares these digests with the sources to catch a stale build (edit, then
    test without running scripts/setup). See tests/unit/test_compiled.py.
    """
    if _record is not None:
        (HERE / "src" / "dnstls" / "compiled.sha256").write_text(_record)


class OptionalBuildExt(build_ext):
    """build_ext that leaves the package pure Python when the C build fails.

    setuptools copies in-place (editable) builds into src/ only after every extension
    has built, so a failure leaves no partial set of extension modules behind.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, DistutilsExecError, ...
            _warn(f"building the compiled modules failed ({exc}): installing pure Python")
            self.extensions = []
            return
        if self.inplace and self.extensions:
            _record_sources()

    def get_outputs(self) -> list[str]:
        return super().get_outputs() if self.extensions else []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
