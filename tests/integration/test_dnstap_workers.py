"""dnstap with ``dnstls serve --workers 2`` (a real process tree): each worker opens its
own connection to the collector's socket, as Unbound's threads do, and every query is
logged once; a file cannot be shared by the workers (a start-up error naming it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from fakes.dnstap_collector import ThreadCollector, decode
from interop.peers import free_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def tap_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dt") as tmp:  # AF_UNIX: a short path
        yield Path(tmp)


def test_each_worker_connects_to_the_collector(tap_dir: Path, tmp_path: Path) -> None:
    collector = ThreadCollector(tap_dir / "tap.sock")
    config = tmp_path / "dnstap.toml"
    config.write_text(f'[dnstap]\nenabled = true\nsocket_path = "{tap_dir / "tap.sock"}"\n'
                      "log_client_query = true\nlog_client_response = true\n")
    plain = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnstls", "serve", "--workers", "2",
         "--listen", f"127.0.0.1:{free_port()}", "--plain", f"127.0.0.1:{plain}",
         "--state-dir", str(tmp_path), "--no-upstream", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        collector.wait_sessions(2)
        query = dns.message.make_query("_dns.resolver.arpa.", "SVCB")
        for _ in range(10):  # answered (the start-up may still be under way)
            try:
                dns.query.tcp(query, "127.0.0.1", port=plain, timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        sent = 1
        for _ in range(20):  # new connections: SO_REUSEPORT spreads them
            dns.query.tcp(query, "127.0.0.1", port=plain, timeout=5)
            sent += 1
        frames = collector.wait_frames(2 * sent)
        assert len(collector.sessions()) == 2, (tmp_path / "serve.log").read_text()
        kinds = [decode(f)["message_type"] for f in frames]
        assert kinds.count("CLIENT_QUERY") == kinds.count("CLIENT_RESPONSE") == sent
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        collector.close()


def test_a_file_cannot_be_shared_by_workers(tmp_path: Path) -> None:
    config = tmp_path / "dnstap.toml"
    config.write_text(f'[dnstap]\nenabled = true\nfile = "{tmp_path / "tap.fstrm"}"\n'
                      "log_client_query = true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dnstls", "serve", "--workers", "2", "--listen",
         f"127.0.0.1:{free_port()}", "--state-dir", str(tmp_path), "--no-upstream",
         "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "dnstap.file: 2 worker processes cannot share one file" in proc.stderr
