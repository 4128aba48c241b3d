"""``dnstls control``'s client side: where the socket is, what is printed, exit status
(a thread answers on a Unix socket as the service would)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnstls.cli.main import main


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes]]]:
    """A socket answering each request with the next of ``answers`` ("ok" when there is
    none); yields (path, answers)."""
    directory = tempfile.mkdtemp(prefix="dnstls-cli-")
    path = os.path.join(directory, "c.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    answers: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(answers.pop(0) if answers else b"ok\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)
    shutil.rmtree(directory, ignore_errors=True)


def test_quiet_and_errors(server: tuple[str, list[bytes]],
                          capsys: pytest.CaptureFixture[str]) -> None:
    path, answers = server
    assert main(["control", "-s", path, "-q", "flush", "www.example."]) == 0
    assert capsys.readouterr().out == ""
    assert main(["control", "-s", path, "flush", "www.example."]) == 0
    assert capsys.readouterr().out == "ok\n"
    answers.append(b"error unknown command 'x'\n")
    assert main(["control", "-s", path, "-q", "x"]) == 1
    assert capsys.readouterr().out == "error unknown command 'x'\n"  # -q hides no error


def test_socket_from_the_config_file(server: tuple[str, list[bytes]], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = server
    conf = tmp_path / "serve.toml"
    conf.write_text(f'[server]\ncontrol = "{path}"\n')
    assert main(["control", "-c", str(conf), "status"]) == 0
    assert capsys.readouterr().out == "ok\n"
    conf.write_text("[server]\n")
    assert main(["control", "-c", str(conf), "status"]) == 2
    assert capsys.readouterr().err.startswith(
        "dnstls control: error: server.control: not set in ")


def test_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "none.sock")
    assert main(["control", "-s", path, "flush", "a.example."]) == 1
    assert capsys.readouterr().err == (
        f"error: connect: No such file or directory for {path}\n")
