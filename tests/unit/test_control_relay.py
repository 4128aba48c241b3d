"""The supervisor's control relay without forking: workers are threads on the other end
of their channels. A worker that does not answer is named after the timeout, and its
late answer is not taken for the next request's."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

from dnstls.control import FRAME, frame
from dnstls.control_relay import ControlRelay


@pytest.fixture
def relay() -> Iterator[ControlRelay]:
    directory = tempfile.mkdtemp(prefix="dnstls-relay-")
    relay = ControlRelay(os.path.join(directory, "c.sock"), workers=2)
    yield relay
    relay.close()
    assert not os.path.exists(relay.path)
    shutil.rmtree(directory, ignore_errors=True)


def _worker(relay: ControlRelay, index: int,
            respond: Callable[[int, bytes], list[bytes]]) -> threading.Thread:
    """Attach a channel for worker ``index`` served by a thread: for each request
    (sequence number, line) it sends the frames ``respond`` returns."""
    theirs = relay.channel_for(index)
    relay.attach(1000 + index, theirs.dup())

    def serve() -> None:
        with theirs, contextlib.suppress(OSError):  # the relay closed its end
            while True:
                head = theirs.recv(FRAME.size, socket.MSG_WAITALL)
                if len(head) < FRAME.size:
                    return
                seq, size = FRAME.unpack(head)
                line = theirs.recv(size, socket.MSG_WAITALL)
                for out in respond(seq, line):
                    theirs.sendall(out)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_answers_are_joined(relay: ControlRelay) -> None:
    for index in (0, 1):
        _worker(relay, index, lambda seq, line, i=index: [
            frame(seq, f"ok removed 0 rrsets, {i + 1} messages and 0 key entries\n"
                  .encode())])
    assert relay.answer(b"DNSTLSCTL1 flush_zone example.\n") == [
        "ok removed 0 rrsets, 3 messages and 0 key entries"]


def test_a_silent_worker_is_named_and_its_late_answer_dropped(relay: ControlRelay) -> None:
    relay.worker_timeout = 0.3
    held: list[tuple[int, bytes]] = []

    def slow(seq: int, line: bytes) -> list[bytes]:
        # the first request is answered only with the second (late), then both
        held.append((seq, line))
        if len(held) == 1:
            return []
        return [frame(held[0][0], b"ok late\n"), frame(seq, b"ok\n")]

    _worker(relay, 0, lambda seq, line: [frame(seq, b"ok\n")])
    _worker(relay, 1, slow)
    assert relay.answer(b"DNSTLSCTL1 flush a.example.\n") == [
        "error worker 1 (pid 1001) did not answer within 0.3 s"]
    assert relay.answer(b"DNSTLSCTL1 flush_type a.example. TXT\n") == ["ok"]


def test_a_dead_worker_is_named(relay: ControlRelay) -> None:
    _worker(relay, 0, lambda seq, line: [frame(seq, b"ok\n")])
    theirs = relay.channel_for(1)
    relay.attach(1001, theirs.dup())
    theirs.close()
    assert relay.answer(b"DNSTLSCTL1 flush a.example.\n") == [
        "error worker 1 (pid 1001) cannot be reached"]


def test_status_is_the_supervisors_own(relay: ControlRelay) -> None:
    lines = relay.answer(b"DNSTLSCTL1 status\n")
    assert lines[2] == "workers: 2"
    assert lines[-1] == f"dnstls (pid {os.getpid()}) is running..."


def test_clients_are_served_by_step(relay: ControlRelay) -> None:
    _worker(relay, 0, lambda seq, line: [frame(seq, b"ok\n")])
    _worker(relay, 1, lambda seq, line: [frame(seq, b"ok\n")])
    relay.read_timeout = 0.2
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(relay.path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(relay.path)
    client.sendall(b"DNSTLSCTL1 flush x.example.\n")
    client.settimeout(0)
    got = b""
    for _ in range(100):  # bounded: each step waits at most 0.05 s
        relay.step(0.05)
        try:
            got += client.recv(100)
        except BlockingIOError:
            continue
        if got.endswith(b"\n"):
            break
    assert got == b"ok\n"
    silent.settimeout(0)
    told = b""
    for _ in range(100):
        relay.step(0.05)
        try:
            told += silent.recv(100)
        except BlockingIOError:
            continue
        if told.endswith(b"\n"):
            break
    assert told == b"error no request within 0.2 s\n"
    silent.close()
    client.close()
