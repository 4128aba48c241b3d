"""The compiled hot path (dnstls.compiled, setup.py): which build runs, and the fallback.

``DNSTLS_EXPECT_CORE=compiled`` or ``=pure`` makes the suite check that the installed
build is the one a CI job asked for (a failed C build falls back to pure Python with
only a warning from pip).
"""

from __future__ import annotations

import hashlib
import os
import runpy
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import dnstls
from dnstls import compiled
from dnstls.cli.main import main


def test_the_status_names_the_build_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    done = compiled.compiled_modules()
    status = compiled.core_status()
    assert (status == "pure Python") == (not done)
    assert all(name.startswith("dnstls.") for name in compiled.module_names())
    with pytest.raises(SystemExit):
        main(["--version"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    assert shown == f"dnstls {dnstls.__version__}, {status}"
    expect = os.environ.get("DNSTLS_EXPECT_CORE")
    if expect == "compiled":
        assert done == compiled.module_names(), status
    elif expect == "pure":
        assert done == [], status


def test_one_version_line_for_version_and_every_banner(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``dnstls --version``, the service's and the stub's banners (each worker's too)
    say the version and the build with one helper, not three copies of it."""
    from dnstls.config import Config
    from dnstls.service import Endpoints, Service
    from dnstls.stub import banner
    from dnstls.stub_config import stub_config_from_data

    line = compiled.version_line()
    assert line == f"dnstls {dnstls.__version__}, {compiled.core_status()}"
    with pytest.raises(SystemExit):
        main(["--version"])
    assert " ".join(capsys.readouterr().out.split()) == line  # argparse wraps long lines
    assert Service(Config()).banner()[0] == line
    stub = stub_config_from_data({"upstream_recursive_servers": [
        {"address_data": "127.0.0.1", "tls_auth_name": "dns.example"}]})
    assert banner(stub, Endpoints(plain=[("127.0.0.1", 53)]))[0] == line


def test_no_compiled_module_is_older_than_its_source() -> None:
    """An edited source shadowed by its old extension module: run scripts/setup."""
    assert compiled.stale_modules() == []


def test_the_record_is_of_the_sources_mypyc_read(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """setup.py on a copy of the project, with stand-ins for setuptools and mypyc: a
    source edited while the build runs (after mypyc read it, before the build ends)
    must read as stale. The record used to be taken at the end of the build, so it
    vouched for the edited source beside the extension built from the old one."""
    project = Path(__file__).resolve().parents[2]
    shutil.copy(project / "setup.py", tmp_path / "setup.py")
    for path in ("dnstls/compiled.py", *compiled.COMPILED_MODULES):
        (tmp_path / "src" / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project / "src" / path, tmp_path / "src" / path)
    edited = tmp_path / "src" / compiled.COMPILED_MODULES[0]
    before = edited.read_bytes()

    def mypycify(paths: list[str], **options: object) -> list[str]:
        assert paths == [f"src/{p}" for p in compiled.COMPILED_MODULES]
        edited.write_bytes(before + b"# edited while the C compiler runs\n")
        return ["extension"]

    class BuildExt:  # setuptools' build_ext: the C build itself does nothing here
        def __init__(self) -> None:
            self.inplace = True
            self.extensions: list[str] = []

        def run(self) -> None:
            pass

    setup_calls: list[dict[str, object]] = []
    fakes = {"setuptools": types.ModuleType("setuptools"),
             "setuptools.command": types.ModuleType("setuptools.command"),
             "setuptools.command.build_ext": types.ModuleType("setuptools.command.build_ext"),
             "mypyc": types.ModuleType("mypyc"), "mypyc.build": types.ModuleType("mypyc.build")}
    fakes["setuptools"].setup = lambda **kw: setup_calls.append(kw)  # type: ignore[attr-defined]
    fakes["setuptools.command.build_ext"].build_ext = BuildExt  # type: ignore[attr-defined]
    fakes["mypyc.build"].mypycify = mypycify  # type: ignore[attr-defined]
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("DNSTLS_PURE_PYTHON", raising=False)
    runpy.run_path(str(tmp_path / "setup.py"))
    (kw,) = setup_calls
    command = kw["cmdclass"]["build_ext"]()  # type: ignore[index]
    command.extensions = kw["ext_modules"]
    command.run()
    record = (tmp_path / "src" / "dnstls" / "compiled.sha256").read_text().splitlines()
    assert f"{hashlib.sha256(before).hexdigest()}  {compiled.COMPILED_MODULES[0]}" in record
    assert len(record) == len(compiled.COMPILED_MODULES)


def test_the_pure_python_fallback_imports(tmp_path: Path) -> None:
    """The same sources without any extension module: what a build without a C
    compiler (or with DNSTLS_PURE_PYTHON=1) installs."""
    src = Path(dnstls.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "dnstls",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__",
                                                  "compiled.sha256"))
    code = ("import importlib, dnstls.compiled as c; "
            "[importlib.import_module(m) for m in c.module_names()]; "
            "import dnstls.service, dnstls.stub, dnstls.cli.main; print(c.core_status())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pure Python"
