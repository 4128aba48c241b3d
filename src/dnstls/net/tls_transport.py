"""Server-side TLS on memory BIOs over a non-blocking socket: a thin asyncio adapter.

uvloop's ``create_server(ssl=...)`` does the same in its SSL protocol, but every read
there ends with an ``SSLObject.read`` that raises ``SSLWantReadError`` and allocates a
read buffer of 256 KB. Here one ``recv_into`` (a buffer shared by all connections)
feeds the connection's incoming ``MemoryBIO``; records are decrypted while the BIO or
OpenSSL still hold bytes (``MemoryBIO.pending`` / ``SSLObject.pending``: no exception
unless a record is incomplete), all of them go to one ``data_received``; an answer
batch is one ``SSLObject.write`` and one ``send``. The loop's ``add_reader`` /
``add_writer`` drive it.

:class:`TLSServer` accepts, asks the protocol whether to admit the client *before* the
handshake (``accepted``), runs the handshake under ``handshake_timeout``, reports a
failed one with its reason (``handshake_failed``; OpenSSL's alert is sent) and then
hands a :class:`TLSTransport` to ``connection_made``. The transport offers what
:class:`~dnstls.net.server.StreamConnection` uses of an asyncio transport: ``write``
with a buffer, high/low water marks and ``pause_writing``/``resume_writing``,
``pause_reading``/``resume_reading``, ``close`` (buffered output and close_notify, then
the socket), ``abort``, ``get_extra_info`` (``peername``, ``sockname``, ``socket``,
``ssl_object``, ``cipher``), and the protocol callbacks ``data_received``,
``eof_received`` (the client's close_notify or FIN) and ``connection_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("dnstls.net.tls_transport")

#: Plaintext of one TLS record at most; one ``read`` returns at most one record.
_RECORD = 16384
#: Bytes taken from the kernel per readable callback at most.
_RECEIVE = 256 << 10
_DISCONNECTED = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT,
                 errno.ENOTCONN)
#: Connections accepted per readiness callback of a listening socket.
_ACCEPT_BATCH = 64


class TLSProtocol(Protocol):
    """What :class:`TLSServer` calls on the protocols its factory makes."""

    def accepted(self, peer: tuple[str, int]) -> bool: ...

    def handshake_failed(self, reason: str) -> None: ...

    def connection_made(self, transport: Any) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


def failure_reason(exc: BaseException) -> str:
    """A short, bounded label for a failed handshake (metrics and logs)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, EOFError)):
        return "eof"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)
        return str(reason).lower() if reason else "ssl_error"
    if isinstance(exc, OSError) and exc.errno in _DISCONNECTED:
        return "reset"
    return "os_error"


class TLSTransport:
    """One server-side TLS connection: a non-blocking socket and an ``SSLObject`` on
    memory BIOs, moved by the loop's reader/writer callbacks."""

    __slots__ = ("__weakref__", "_fd", "_high", "_in", "_loop", "_low", "_obj", "_out",
                 "_peer", "_protocol", "_reading", "_server", "_sock", "_state", "_timer",
                 "_wbuf", "_write_paused")

    # _state: 0 handshaking, 1 open, 2 closing (output left), 3 closed
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 context: ssl.SSLContext, protocol: TLSProtocol, peer: tuple[str, int],
                 server: TLSServer) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._protocol = protocol
        self._peer = peer
        self._server = server
        self._state = 0
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._wbuf = bytearray()  # encrypted bytes the socket did not take yet
        self._high = 64 << 10
        self._low = 16 << 10
        self._write_paused = False

    # -- raw socket ------------------------------------------------------------------
    def _receive(self) -> int:
        """Move what the kernel holds into the incoming BIO: bytes read, 0 at EOF, -1
        if nothing was there; raises OSError."""
        buf = self._server._buffer
        try:
            n = self._sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return -1
        if n:
            self._in.write(self._server._view[:n])
        return n

    def _flush(self) -> None:
        """Send what OpenSSL produced; what the socket does not take waits for writable."""
        out = self._out
        if not out.pending:
            return
        data = out.read()
        if self._wbuf:
            self._wbuf += data
            self._check_high()
            return
        try:
            n = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._fatal(exc)
            return
        if n < len(data):
            self._wbuf += data[n:] if n else data
            self._loop.add_writer(self._fd, self._write_ready)
            self._check_high()

    def _write_ready(self) -> None:
        if self._state == 3:
            return
        wbuf = self._wbuf
        try:
            n = self._sock.send(wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal(exc)
            return
        del wbuf[:n]
        if self._write_paused and len(wbuf) <= self._low and self._state == 1:
            self._write_paused = False
            try:
                self._protocol.resume_writing()
            except Exception:  # pragma: no cover - a protocol bug
                log.exception("resume_writing failed")
        if wbuf or self._state == 3:
            return
        self._loop.remove_writer(self._fd)
        if self._state == 2:
            self._closed(None)

    # -- handshake ---------------------------------------------------------------------
    def _start(self, timeout: float) -> None:
        self._timer = self._loop.call_later(timeout, self._handshake_timeout)
        self._loop.add_reader(self._fd, self._handshake_readable)
        self._handshake_readable()

    def _handshake_readable(self) -> None:
        if self._state != 0:
            return
        try:
            n = self._receive()
        except OSError as exc:
            self._handshake_failed(failure_reason(exc))
            return
        if n == 0:
            self._handshake_failed("eof")
            return
        if n < 0:
            return
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # the alert, best effort
            self._handshake_failed(failure_reason(exc))
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = 1
        self._flush()  # the last flight and (TLS 1.3) the session tickets
        if self._state != 1:
            return
        self._server._handshaking.discard(self)
        self._server._open.add(self)
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)
        try:
            self._protocol.connection_made(self)
        except Exception:  # pragma: no cover - a protocol bug: do not leak the socket
            log.exception("connection_made failed")
            self.abort()
            return
        if self._state == 1 and self._reading and self._in.pending:
            self._decrypt(False)

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self._state == 0:
            self._handshake_failed("timeout")

    def _handshake_failed(self, reason: str) -> None:
        self._state = 3
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._handshaking.discard(self)
        self._drop_socket()
        try:
            self._protocol.handshake_failed(reason)
        except Exception:  # pragma: no cover - a protocol bug
            log.exception("handshake_failed failed")

    # -- reading -----------------------------------------------------------------------
    def _read_ready(self) -> None:
        if self._state != 1:
            return
        try:
            n = self._receive()
        except OSError as exc:
            self._fatal(exc)
            return
        if n < 0:
            return
        self._decrypt(n == 0)

    def _decrypt(self, eof: bool) -> None:
        """Every complete record in the incoming BIO; one ``data_received`` for all."""
        read = self._obj.read
        pending = self._obj.pending
        incoming = self._in
        data = b""
        chunks: list[bytes] | None = None
        while incoming.pending or pending():
            try:
                chunk = read(_RECORD)
            except ssl.SSLWantReadError:
                break  # a partial record: the rest comes with the next read
            except (ssl.SSLError, OSError) as exc:
                if data:
                    self._deliver(data, chunks)
                self._fatal(exc)
                return
            if not chunk:  # close_notify
                eof = True
                break
            if not data:
                data = chunk
            elif chunks is None:
                chunks = [data, chunk]
            else:
                chunks.append(chunk)
        if self._out.pending:
            self._flush()  # e.g. the answer to a TLS 1.3 KeyUpdate
        if data:
            self._deliver(data, chunks)
        if eof and self._state == 1:
            self._eof()

    def _deliver(self, data: bytes, chunks: list[bytes] | None) -> None:
        try:
            self._protocol.data_received(b"".join(chunks) if chunks else data)
        except Exception as exc:  # pragma: no cover - a protocol bug
            log.exception("data_received failed")
            self._fatal(exc)

    def _eof(self) -> None:
        self._stop_reading()
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:  # pragma: no cover - a protocol bug
            log.exception("eof_received failed")
            self._fatal(exc)
            return
        if not keep_open:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        if self._state == 1:
            self._stop_reading()

    def resume_reading(self) -> None:
        if self._state != 1 or self._reading:
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)
        if self._in.pending:
            self._loop.call_soon(self._resume_decrypt)

    def _resume_decrypt(self) -> None:
        if self._state == 1 and self._reading:
            self._decrypt(False)

    def is_reading(self) -> bool:
        return self._reading

    # -- writing -----------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != 1 or not data:
            return
        try:
            self._obj.write(data)
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)
            return
        self._flush()

    def writelines(self, items: Any) -> None:
        self.write(b"".join(items))

    def _check_high(self) -> None:
        if not self._write_paused and len(self._wbuf) > self._high and self._state == 1:
            self._write_paused = True
            try:
                self._protocol.pause_writing()
            except Exception:  # pragma: no cover - a protocol bug
                log.exception("pause_writing failed")

    def get_write_buffer_size(self) -> int:
        return len(self._wbuf)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 << 10 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high}) must be >= low ({low}) must be >= 0")
        self._high, self._low = high, low
        self._check_high()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def can_write_eof(self) -> bool:
        return False

    # -- closing -----------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._state >= 2

    def close(self) -> None:
        """Send what is buffered and close_notify, then close the socket."""
        if self._state >= 2:
            return
        if self._state == 0:
            self.abort()
            return
        self._state = 2
        self._stop_reading()
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self._obj.unwrap()  # close_notify into the BIO; the peer's is not awaited
        self._flush()
        if self._state == 2 and not self._wbuf:
            self._closed(None)
        # else _write_ready closes once the socket took everything

    def abort(self) -> None:
        if self._state == 3:
            return
        if self._state == 0:
            self._handshake_failed("aborted")
            return
        self._closed(None)

    def _fatal(self, exc: BaseException) -> None:
        if self._state == 3:
            return
        if self._state == 0:
            self._handshake_failed(failure_reason(exc))
            return
        if not (isinstance(exc, OSError) and exc.errno in _DISCONNECTED) and not isinstance(
                exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            log.debug("TLS connection from %s failed: %r", self._peer[0], exc)
        self._closed(exc if isinstance(exc, Exception) else None)

    def _closed(self, exc: Exception | None) -> None:
        self._state = 3
        self._wbuf = bytearray()
        self._server._open.discard(self)
        self._drop_socket()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def _drop_socket(self) -> None:
        self._reading = False
        loop = self._loop
        loop.remove_reader(self._fd)
        loop.remove_writer(self._fd)
        with contextlib.suppress(OSError):
            self._sock.close()

    # -- information -------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "ssl_object":
            return self._obj
        if name == "socket":
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        if name == "cipher":
            return self._obj.cipher()
        if name == "peercert":
            return self._obj.getpeercert()
        if name == "sslcontext":
            return self._obj.context
        return default

    def get_protocol(self) -> Any:
        return self._protocol

    def __repr__(self) -> str:
        state = ("handshaking", "open", "closing", "closed")[self._state]
        return f"<TLSTransport {self._peer} {state}>"


class TLSServer:
    """Listening sockets whose connections get a :class:`TLSTransport`.

    ``protocol_factory`` is called per accepted connection; the protocol's ``accepted``
    decides admission before the handshake (refused: the socket is closed at once).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext,
                 protocol_factory: Callable[[], TLSProtocol], *,
                 handshake_timeout: float) -> None:
        self._loop = loop
        self.context = context
        self._factory = protocol_factory
        self.handshake_timeout = handshake_timeout
        self.sockets: list[socket.socket] = []
        self._handshaking: set[TLSTransport] = set()
        self._open: set[TLSTransport] = set()
        self._serving = False
        # one receive buffer for all connections (the loop is single-threaded and every
        # read is copied into the connection's BIO at once)
        self._buffer = bytearray(_RECEIVE)
        self._view = memoryview(self._buffer)

    @classmethod
    async def create(cls, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext,
                     protocol_factory: Callable[[], TLSProtocol], host: str | None,
                     port: int, *, handshake_timeout: float, backlog: int = 1024,
                     reuse_port: bool = False) -> TLSServer:
        """Bind every address ``host`` resolves to (like ``loop.create_server``)."""
        server = cls(loop, context, protocol_factory, handshake_timeout=handshake_timeout)
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        seen: set[tuple[Any, ...]] = set()
        try:
            for family, kind, proto, _name, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                server.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise OSError(exc.errno, f"error while attempting to bind on address "
                                  f"{address!r}: {exc.strerror}") from None
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            server._close_sockets()
            raise
        server._serving = True
        for sock in server.sockets:
            loop.add_reader(sock.fileno(), server._accept, sock)
        return server

    def _accept(self, listener: socket.socket) -> None:
        loop = self._loop
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connections: %s; pausing for 1 s", exc.strerror)
                    loop.remove_reader(listener.fileno())
                    loop.call_later(1.0, self._resume_accepting, listener)
                    return
                continue  # e.g. ECONNABORTED: the client is gone already
            peer = (address[0], address[1])
            try:
                protocol = self._factory()
                if not protocol.accepted(peer):
                    _discard(sock)
                    continue
            except Exception:  # pragma: no cover - a protocol bug
                log.exception("admission failed")
                _discard(sock)
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                transport = TLSTransport(loop, sock, self.context, protocol, peer, self)
            except (OSError, ssl.SSLError) as exc:
                _discard(sock)
                protocol.handshake_failed(failure_reason(exc))
                continue
            self._handshaking.add(transport)
            transport._start(self.handshake_timeout)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self._serving and listener.fileno() >= 0:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting; connections still in their handshake are dropped."""
        if not self._serving:
            return
        self._serving = False
        self._close_sockets()
        for transport in list(self._handshaking):
            transport.abort()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        return None

    @property
    def connections(self) -> int:
        return len(self._open)


def _discard(sock: socket.socket) -> None:
    """Close an accepted socket that is refused: reset, so no TIME_WAIT is left here."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
