"""``dnstls serve --workers 2`` as a real process tree on loopback: both workers answer on
one port, a killed worker is restarted, SIGHUP reaches every worker, SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import pytest

from interop.peers import free_port


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return sorted(out)


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _answers(port: int) -> bool:
    query = dns.message.make_query("_dns.resolver.arpa.", "SVCB")
    try:
        dns.query.tcp(query, "127.0.0.1", port=port, timeout=2)
        dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    except (OSError, dns.exception.Timeout):
        return False
    return True


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    dot, plain = free_port(), free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnstls", "serve", "--workers", "2",
         "--listen", f"127.0.0.1:{dot}", "--plain", f"127.0.0.1:{plain}",
         "--state-dir", str(tmp_path), "--no-upstream"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait(lambda: len(_children(proc.pid)) == 2 and _answers(plain)), \
            (tmp_path / "serve.log").read_text()
        yield proc, plain, tmp_path / "serve.log"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_workers_share_the_port_and_restart(tree) -> None:  # type: ignore[no-untyped-def]
    proc, plain, log = tree
    workers = _children(proc.pid)
    assert len(workers) == 2
    # Many new TCP connections land on both workers (SO_REUSEPORT spreads them).
    for _ in range(20):
        assert _answers(plain)
    os.kill(proc.pid, signal.SIGHUP)
    assert _wait(lambda: log.read_text().count("certificate reloaded") >= 2), log.read_text()
    os.kill(workers[0], signal.SIGKILL)
    assert _wait(lambda: len(_children(proc.pid)) == 2
                 and workers[0] not in _children(proc.pid)), log.read_text()
    assert _wait(lambda: _answers(plain))
    assert "restarting" in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert log.read_text().count("stopped") == 2


def test_a_worker_that_cannot_bind_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "dnstls", "serve", "--workers", "2",
             "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path), "--no-upstream"],
            capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "server.listen[0]" in proc.stderr
