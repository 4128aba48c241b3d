"""The control socket of ``serve --workers N``: the supervisor relays to every worker.

Each worker has its own cache, so a flush must reach all of them. The supervisor owns
the control socket (bound before the first fork, closed in every child) and, for each
worker, one end of a socketpair made when that worker is forked (a restarted worker
gets a new one). A request from ``dnstls control`` is answered so:

* ``status`` and ``stop`` by the supervisor itself (its pid, its uptime; ``stop`` is a
  SIGTERM to itself, as the service's own SIGTERM handling stops every worker);
* every other command is sent to every worker (framed: :data:`dnstls.control.FRAME`),
  each runs it on its own service as one process would, and the answers are joined by
  :func:`dnstls.control.join_answers` -- flush counts added, statistics summed, a
  failure reported with the worker that failed.

The supervisor is single-threaded and waits for signals with ``sigtimedwait`` (it
forks: no threads); with a control socket it polls: :meth:`ControlRelay.step` waits
for socket events for a fraction of a second, then the loop checks for signals. Clients
are non-blocking and bounded as in :mod:`dnstls.net.control` (read timeout, request
size, write timeout, count); a relay waits at most :data:`WORKER_TIMEOUT` for the
workers' answers (all asked at once), and names a worker that did not answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dnstls.control import (
    FRAME,
    MAX_REQUEST,
    Request,
    encode_answer,
    encode_request,
    format_status,
    frame,
    join_answers,
    parse_request,
)
from dnstls.net.control import (
    MAX_CLIENTS,
    READ_TIMEOUT,
    WRITE_TIMEOUT,
    bind_control_socket,
    unlink_if_bound,
)

log = logging.getLogger("dnstls.control_relay")

WORKER_TIMEOUT = 10.0
_MAX_ANSWER = 256 << 20


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytes = b""
    sent: int = 0


class ControlRelay:
    """The supervisor's side; see the module docstring."""

    def __init__(self, path: str, *, workers: int, field: str = "server.control",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.workers = workers
        self._clock = clock
        self.started = clock()
        self.listener = bind_control_socket(path, field)
        info = os.stat(path)
        self._inode = (info.st_dev, info.st_ino)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._clients: dict[socket.socket, _Client] = {}
        #: worker index -> (pid, the supervisor's end of its channel)
        self.channels: dict[int, tuple[int, socket.socket]] = {}
        self._seq = 0
        self.read_timeout = READ_TIMEOUT
        self.worker_timeout = WORKER_TIMEOUT

    # -- fork ----------------------------------------------------------------------------
    def channel_for(self, index: int) -> socket.socket:
        """A new channel for worker ``index`` (about to be forked): the child's end is
        returned; call :meth:`attach` with the pid in the parent, :meth:`in_child` in
        the child."""
        old = self.channels.pop(index, None)
        if old is not None:
            old[1].close()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._pending = (index, mine)
        return theirs

    def attach(self, pid: int, child_end: socket.socket) -> None:
        index, mine = self._pending
        child_end.close()
        self.channels[index] = (pid, mine)

    def in_child(self) -> None:
        """In a forked worker: close every socket of the supervisor's (none is its)."""
        _, mine = self._pending
        mine.close()
        for _, sock in self.channels.values():
            sock.close()
        for client in self._clients:
            client.close()
        self.listener.close()
        self._selector.close()

    # -- the loop --------------------------------------------------------------------------
    def step(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for control clients and serve what is ready."""
        now = self._clock()
        for event_key, events in self._selector.select(timeout):
            sock = event_key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is self.listener:
                self._accept(now)
            elif events & selectors.EVENT_READ:
                self._read(self._clients[sock])
            elif events & selectors.EVENT_WRITE:
                self._write(self._clients[sock])
        now = self._clock()
        for client in list(self._clients.values()):
            if now >= client.deadline:
                if not client.outbox:
                    self._answer(client, [f"error no request within "
                                          f"{self.read_timeout:g} s"])
                    client.deadline = now + WRITE_TIMEOUT
                else:
                    self._drop(client)

    def _accept(self, now: float) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            sock, _ = self.listener.accept()
            sock.setblocking(False)
            client = _Client(sock, now + self.read_timeout)
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ)
            if len(self._clients) > MAX_CLIENTS:
                self._answer(client, ["error too many control connections at once; "
                                      "try again"])

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.inbox += data
        if b"\n" in client.inbox or not data:
            if not client.inbox:
                self._drop(client)
                return
            line = bytes(client.inbox.partition(b"\n")[0])
            self._answer(client, self.answer(line))
        elif len(client.inbox) > MAX_REQUEST:
            self._answer(client, [f"error request longer than {MAX_REQUEST} bytes"])

    def _answer(self, client: _Client, lines: list[str]) -> None:
        client.outbox = encode_answer(lines)
        client.deadline = self._clock() + WRITE_TIMEOUT
        self._selector.modify(client.sock, selectors.EVENT_WRITE)
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            client.sent += client.sock.send(client.outbox[client.sent:client.sent + 65536])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if client.sent >= len(client.outbox):
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()

    # -- answering -------------------------------------------------------------------------
    def answer(self, line: bytes) -> list[str]:
        request = parse_request(line)
        if isinstance(request, str):
            return [request]
        uptime = self._clock() - self.started
        if request.command == "status":
            from dnstls import __version__
            from dnstls.compiled import core_status

            return format_status(version=__version__, build=core_status(),
                                 workers=self.workers, uptime=uptime, pid=os.getpid())
        if request.command == "stop":
            log.info("control: stop")
            os.kill(os.getpid(), signal.SIGTERM)  # taken by the supervisor's sigtimedwait
            return ["ok"]
        answers = self.relay(request)
        if isinstance(answers, str):
            return [answers]
        return join_answers(request.command, answers, now=time.time(), uptime=uptime)

    def relay(self, request: Request) -> list[tuple[int, str]] | str:
        """Every worker's answer to ``request``, in index order, or an error line when
        one did not answer within :data:`WORKER_TIMEOUT`."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        payload = frame(seq, encode_request(request.command, request.args))
        waiting: dict[socket.socket, tuple[int, int, bytearray]] = {}
        answers: dict[int, str] = {}
        for index, (pid, sock) in sorted(self.channels.items()):
            try:
                sock.setblocking(True)
                sock.settimeout(self.worker_timeout)
                sock.sendall(payload)
            except OSError:
                return f"error worker {index} (pid {pid}) cannot be reached"
            waiting[sock] = (index, pid, bytearray())
        deadline = self._clock() + self.worker_timeout
        with selectors.DefaultSelector() as selector:
            for sock in waiting:
                selector.register(sock, selectors.EVENT_READ)
            while waiting:
                left = deadline - self._clock()
                if left <= 0:
                    index, pid, _ = min(waiting.values())
                    return (f"error worker {index} (pid {pid}) did not answer within "
                            f"{self.worker_timeout:g} s")
                for event_key, _ in selector.select(left):
                    ready = event_key.fileobj
                    assert isinstance(ready, socket.socket)
                    index, pid, buffer = waiting[ready]
                    try:
                        data = ready.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        return f"error worker {index} (pid {pid}) went away"
                    buffer += data
                    while len(buffer) >= FRAME.size:
                        got, size = FRAME.unpack_from(buffer)
                        if size > _MAX_ANSWER:
                            return f"error worker {index} (pid {pid}): answer too long"
                        if len(buffer) < FRAME.size + size:
                            break
                        body = bytes(buffer[FRAME.size:FRAME.size + size])
                        del buffer[:FRAME.size + size]
                        if got == seq:  # else a late answer to an earlier request
                            answers[index] = body.decode("utf-8", "replace")
                            selector.unregister(ready)
                            del waiting[ready]
                            break
        return sorted(answers.items())

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        with contextlib.suppress(Exception):
            self._selector.close()
        self.listener.close()
        for _, sock in self.channels.values():
            sock.close()
        self.channels.clear()
        unlink_if_bound(self.path, self._inode)
