"""The compiled hot path (dnstls.compiled, setup.py): which build runs, and the fallback.

``DNSTLS_EXPECT_CORE=compiled`` or ``=pure`` makes the suite check that the installed
build is the one a CI job asked for (a failed C build falls back to pure Python with
only a warning from pip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
