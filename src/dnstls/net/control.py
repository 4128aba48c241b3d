"""The control socket: a Unix domain socket that answers ``dnstls control``.

The asyncio side of :mod:`dnstls.control` (the protocol and the commands live there).

The socket file
---------------
Bound at start-up with mode 0600 (umask 0177 around the bind, so it is never open to
others, not even for a moment), owned by the service's user. If the path exists:

* not a socket (a file, a directory): start-up fails, naming ``server.control`` --
  nothing is deleted that is not ours to delete;
* a socket something listens on (another dnstls): start-up fails the same way;
* a socket nothing listens on (left by a service that was killed): removed and bound.

At shutdown the file is removed if it is still the one bound (same inode), so a second
service that took the path over keeps its socket.

Bounds
------
Each client is a task of its own: one that connects and sends nothing keeps its
connection for at most :data:`READ_TIMEOUT` seconds and blocks nobody else. A request
is one line of at most :data:`~dnstls.control.MAX_REQUEST` bytes; the answer must be
read within :data:`WRITE_TIMEOUT`; at most :data:`MAX_CLIENTS` at once (others get an
error line and are closed). Commands run on the event loop between queries: each is
short (``flush_zone`` and ``dump_cache`` walk the cache once, as Unbound's do);
``dnstap_reopen`` awaits the dnstap writer (bounded) without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable

from dnstls.control import FRAME, MAX_REQUEST, encode_answer, frame, parse_request
from dnstls.control import Request as ControlRequest
from dnstls.errors import ConfigError

log = logging.getLogger("dnstls.net.control")

READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 30.0
MAX_CLIENTS = 16


def _prepare_path(path: str, field: str) -> None:
    """Make room for a socket at ``path``: remove a stale socket; refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(field, f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(field, f"{path} exists and is not a socket; remove it or choose "
                          "another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing the stale control socket %s (nothing listens on it)", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        raise ConfigError(field, f"cannot use {path}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    raise ConfigError(field, f"{path}: another process is listening on this control "
                      "socket (is dnstls already running?)")


def unlink_if_bound(path: str, inode: tuple[int, int] | None) -> None:
    """Remove the socket file at ``path`` if it is still the one bound there (its
    ``(st_dev, st_ino)`` is ``inode``): a second service that took the path over keeps
    its socket."""
    try:
        info = os.stat(path)
    except OSError:
        return
    if (info.st_dev, info.st_ino) == inode:
        with contextlib.suppress(OSError):
            os.unlink(path)


def bind_control_socket(path: str, field: str = "server.control") -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 (see the module docstring)."""
    _prepare_path(path, field)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ConfigError(field, f"cannot create the control socket {path}: "
                          f"{exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(MAX_CLIENTS)
    sock.setblocking(False)
    return sock


class ControlServer:
    """Serves the control socket: reads each client's request line and answers with
    ``run``'s lines."""

    def __init__(self, path: str, run: Callable[[ControlRequest], Awaitable[list[str]]], *,
                 field: str = "server.control", read_timeout: float = READ_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT, max_clients: int = MAX_CLIENTS,
                 ) -> None:
        self.path = path
        self.field = field
        self._run = run
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_clients = max_clients
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.requests = 0

    async def start(self) -> None:
        sock = bind_control_socket(self.path, self.field)
        info = os.stat(self.path)
        self._inode = (info.st_dev, info.st_ino)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        log.info("control socket on %s (dnstls control -s %s COMMAND)", self.path, self.path)

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > self.max_clients:
                answer = ["error too many control connections at once; try again"]
            else:
                answer = await self._answer(reader)
            writer.write(encode_answer(answer))
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except (TimeoutError, ConnectionError, OSError):
            pass  # the client went away or does not read: nothing to tell it
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader) -> list[str]:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.read_timeout)
        except TimeoutError:
            return [f"error no request within {self.read_timeout:g} s"]
        except asyncio.LimitOverrunError:
            return [f"error request longer than {MAX_REQUEST} bytes"]
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return []
            line = exc.partial  # the client closed its side after the line: fine
        request = parse_request(line)
        if isinstance(request, str):
            return [request]
        self.requests += 1
        return await self._run(request)

    def _unlink(self) -> None:
        """Remove the socket file if it is still the one this server bound."""
        unlink_if_bound(self.path, self._inode)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self._unlink()
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def serve_channel(sock: socket.socket,
                        run: Callable[[ControlRequest], Awaitable[list[str]]]) -> None:
    """A worker's end of its channel to the supervisor (``serve --workers``; see
    dnstls.control_relay): run each framed request and send the framed answer, until
    the supervisor closes its end."""
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        while True:
            try:
                seq, size = FRAME.unpack(await reader.readexactly(FRAME.size))
                if size > MAX_REQUEST:
                    log.error("control channel: a request of %d bytes; closing it", size)
                    return
                line = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            request = parse_request(line)
            answer = [request] if isinstance(request, str) else await run(request)
            writer.write(frame(seq, encode_answer(answer)))
            await writer.drain()
    finally:
        writer.close()
