"""The systemd units in contrib/: their command lines parse with dnstls's own argument
parser (and mean what the unit says around them), the serve unit has what its control
socket, state and dnstap file need under DynamicUser, both have the same sandbox, and
``systemd-analyze verify`` (where installed) finds nothing to say about either."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from dnstls.cli.main import build_parser
from dnstls.control import DEFAULT_CONTROL_PATH

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
UNITS = ["dnstls-stub.service", "dnstls-serve.service"]
#: What both units' sandboxes must say (the stub's, which the serve unit copies)
SANDBOX = ("DynamicUser", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
           "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
           "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
           "ProtectProc", "ProcSubset", "RestrictAddressFamilies", "RestrictNamespaces",
           "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
           "SystemCallArchitectures", "SystemCallFilter", "UMask")

Unit = dict[str, dict[str, list[str]]]


def read_unit(name: str) -> Unit:
    """Sections of ``key: [values]`` (a key may repeat, as SystemCallFilter does)."""
    unit: Unit = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in (CONTRIB / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not a key=value line: {line!r}"
        unit[section][key.strip()].append(value.strip())
    return unit


def command(unit: Unit, key: str) -> list[str]:
    values = unit["Service"][key]
    assert len(values) == 1, key
    return shlex.split(values[0])


def test_the_serve_unit_runs_serve_with_its_config_and_state_directory() -> None:
    unit = read_unit("dnstls-serve.service")
    argv = command(unit, "ExecStart")
    assert argv[0] == "/usr/local/bin/dnstls"
    args = build_parser().parse_args(argv[1:])
    from dnstls.cli import serve

    assert args.func is serve.main
    assert args.config == "/etc/dnstls/serve.toml"
    # the generated certificate is kept where systemd gives the dynamic user a
    # persistent, writable directory (StateDirectory=dnstls is /var/lib/dnstls)
    assert unit["Service"]["StateDirectory"] == ["dnstls"]
    assert args.state_dir == "/var/lib/dnstls"
    # the file is checked before the start (serve --check), with the same options
    check = build_parser().parse_args(command(unit, "ExecStartPre")[1:])
    assert check.check and not args.check
    assert (check.config, check.state_dir) == (args.config, args.state_dir)
    assert command(unit, "ExecReload") == ["/bin/kill", "-HUP", "$MAINPID"]
    # port 853 (and 53 for --plain) with one capability
    assert unit["Service"]["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["Service"]["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    # [server] control = /run/dnstls/control.sock (dnstls control's default) works
    assert unit["Service"]["RuntimeDirectory"] == [Path(DEFAULT_CONTROL_PATH).parent.name]
    assert unit["Service"]["RuntimeDirectoryMode"] == ["0750"]
    # a [dnstap] file under /var/log/dnstls is writable despite ProtectSystem=strict
    assert unit["Service"]["LogsDirectory"] == ["dnstls"]


def test_the_stub_unit_runs_stub_and_checks_first() -> None:
    unit = read_unit("dnstls-stub.service")
    args = build_parser().parse_args(command(unit, "ExecStart")[1:])
    from dnstls.cli import stub

    assert args.func is stub.main and args.config == "/etc/dnstls/stub.toml"
    check = build_parser().parse_args(command(unit, "ExecStartPre")[1:])
    assert check.check and check.config == args.config


def test_both_units_have_the_same_sandbox() -> None:
    stub, serve = (read_unit(name)["Service"] for name in UNITS)
    for key in SANDBOX:
        assert key in stub, key
        assert serve[key] == stub[key], key


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify wants the command to exist: the unit as installed, pointing at ours
    dnstls = str(Path(sys.executable).with_name("dnstls"))  # the console script
    unit = tmp_path / name
    unit.write_text((CONTRIB / name).read_text().replace("/usr/local/bin/dnstls", dnstls))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", (
        done.stdout + done.stderr)
