"""``dnstls control`` with ``serve --workers 2``: the supervisor owns the socket and every
command reaches both workers' caches (a real process tree on loopback, a UDP upstream
in a thread that counts what it is asked)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rrset
import pytest

from dnstls.cli.control import exchange
from interop.peers import free_port

pytestmark = pytest.mark.timeout(120)


class CountingUpstream:
    """A UDP upstream answering every A query with 192.0.2.1 (TTL 300), counting names."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            self.asked.append(query.question[0].name.to_text())
            response = dns.message.make_response(query)
            response.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN",
                                                       "A", "192.0.2.1"))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def count(self, name: str) -> int:
        return self.asked.count(name)


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _ask(port: int, name: str) -> None:
    """One UDP query from a new socket (a new source port: the kernel picks a worker)."""
    dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3)


def _until_both_asked(upstream: CountingUpstream, port: int, name: str, target: int,
                      ) -> int:
    """Ask ``name`` from new sockets until the upstream was asked it ``target`` times
    (each worker once: it is then in both caches); returns how many queries it took."""
    for sent in range(1, 401):
        _ask(port, name)
        if upstream.count(name) >= target:
            return sent
    raise AssertionError(f"{name}: asked {upstream.count(name)} times after 400 queries")


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str, Path,
                                           CountingUpstream]]:
    directory = tempfile.mkdtemp(prefix="dnstls-ctlw-")
    path = os.path.join(directory, "control.sock")
    upstream = CountingUpstream()
    plain = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dnstls", "serve", "--workers", "2",
             "--listen", "127.0.0.1:0", "--plain", f"127.0.0.1:{plain}",
             "--state-dir", str(tmp_path), "--upstream", f"udp://127.0.0.1:{upstream.port}",
             "--control", path],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait(lambda: "2 workers running" in log.read_text()), log.read_text()
        yield proc, plain, path, log, upstream
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        upstream.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_flush_reaches_every_worker(tree) -> None:  # type: ignore[no-untyped-def]
    proc, plain, path, _log, upstream = tree
    status = exchange(path, "status", [])
    assert "workers: 2\n" in status
    assert status.endswith(f"dnstls (pid {proc.pid}) is running...\n")
    sent = _until_both_asked(upstream, plain, "a.example.", 2)
    sent += _until_both_asked(upstream, plain, "b.example.", 2)
    # both workers hold both names: flush_zone counts the entries of both caches
    assert exchange(path, "flush_zone", ["a.example."]) == (
        "ok removed 0 rrsets, 2 messages and 0 key entries\n")
    assert exchange(path, "flush", ["b.example."]) == "ok\n"
    # now each worker asks the upstream again, for both names
    sent += _until_both_asked(upstream, plain, "a.example.", 4)
    sent += _until_both_asked(upstream, plain, "b.example.", 4)
    stats = dict(line.split("=", 1) for line in
                 exchange(path, "stats_noreset", []).splitlines())
    assert int(stats["total.num.queries"]) == sent  # summed over the workers
    assert int(stats["total.num.cachemiss"]) == 8
    assert int(stats["worker0.num.queries"]) + int(stats["worker1.num.queries"]) == sent
    assert exchange(path, "list_forwards", []) == (
        f". IN forward udp://127.0.0.1:{upstream.port}\n")
    assert exchange(path, "bogus", []) == "error unknown command 'bogus'\n"
    assert exchange(path, "dump_cache", []).count(";; worker ") == 2
    assert exchange(path, "reload", []) == "ok\n"


def test_a_restarted_worker_gets_a_channel_and_stop_stops_all(tree,  # type: ignore[no-untyped-def]
                                                              ) -> None:
    proc, plain, path, log, upstream = tree
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit()
                  and _parent(int(p)) == proc.pid)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    assert _wait(lambda: log.read_text().count(" ready") >= 3), log.read_text()
    _until_both_asked(upstream, plain, "c.example.", 2)
    assert exchange(path, "flush_zone", ["c.example."]) == (
        "ok removed 0 rrsets, 2 messages and 0 key entries\n")
    assert exchange(path, "stop", []) == "ok\n"
    assert proc.wait(timeout=30) == 0
    assert not os.path.exists(path)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])
