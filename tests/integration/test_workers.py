"""``dnstls serve --workers 2`` as a real process tree on loopback: both workers answer on
one port, a killed worker is restarted, SIGHUP reaches every worker, SIGTERM stops all,
and a TLS session made by one worker resumes on the other."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
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
        yield proc, plain, tmp_path / "serve.log", dot
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_workers_share_the_port_and_restart(tree) -> None:  # type: ignore[no-untyped-def]
    proc, plain, log, _dot = tree
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


def _resumptions(port: int, version: ssl.TLSVersion, n: int = 12) -> int:
    """A full handshake, then ``n`` connections offering its session (each with one
    query, so TLS 1.3's ticket has arrived); how many were resumed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    wire = dns.message.make_query("_dns.resolver.arpa.", "SVCB").to_wire()

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, session=session) as tls:
            tls.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", tls.recv(2))
            while length:
                length -= len(tls.recv(length))
            return tls.session, tls.session_reused

    session, _ = connect(None)
    return sum(connect(session)[1] for _ in range(n))


def test_sessions_resume_on_every_worker(tree) -> None:  # type: ignore[no-untyped-def]
    """The kernel spreads a client's connections over the workers; with a ticket key
    per worker about half of them were full handshakes (P(12 of 12) = 1/2048)."""
    proc, _plain, log, dot = tree
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert _resumptions(dot, version) == 12, version
    os.kill(proc.pid, signal.SIGHUP)
    assert _wait(lambda: log.read_text().count("certificate reloaded") >= 2), log.read_text()
    workers = _children(proc.pid)
    os.kill(workers[0], signal.SIGKILL)  # the restarted worker gets the same key
    assert _wait(lambda: len(_children(proc.pid)) == 2
                 and workers[0] not in _children(proc.pid)
                 and log.read_text().count("ready") >= 3), log.read_text()
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert _resumptions(dot, version) == 12, version
    assert "cannot share the session ticket key" not in log.read_text()


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


def _queries_counted(url: str) -> float:
    """The sum of ``dnstls_queries_total`` over its labels at ``url``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("dnstls_queries_total{"))


def test_the_start_up_log_names_every_workers_metrics(tmp_path: Path) -> None:
    """Each worker serves its own /metrics (port 0: a free port each). The start-up log
    used to name worker 0's alone, as if it were the service's; now the supervisor
    lists every worker's URL, each ready line names its own, and the endpoints add up
    to what the service answered."""
    plain = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dnstls", "serve", "--workers", "2",
             "--listen", "127.0.0.1:0", "--plain", f"127.0.0.1:{plain}",
             "--metrics", "127.0.0.1:0", "--state-dir", str(tmp_path), "--no-upstream"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait(lambda: "metrics per worker" in log.read_text()), log.read_text()
        text = log.read_text()
        assert "workers: metrics on" not in text  # worker 0's banner named its own alone
        line = next(x for x in text.splitlines() if "metrics per worker" in x)
        urls = re.findall(r"worker (\d): (http://127\.0\.0\.1:\d+/metrics)", line)
        assert [i for i, _ in urls] == ["0", "1"] and len({u for _, u in urls}) == 2
        for index, url in urls:
            assert re.search(rf"worker {index} \(pid \d+\) ready, its metrics on {url}$",
                             text, re.MULTILINE), text
        for _ in range(20):  # new TCP connections: the kernel spreads them
            assert _answers(plain)
        counted = [_queries_counted(url) for _, url in urls]
        assert sum(counted) == 40, counted  # 20 over TCP, 20 over UDP
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
