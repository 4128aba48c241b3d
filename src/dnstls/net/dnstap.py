"""dnstap output (``[dnstap]``): a bounded queue and a background writer.

The listeners and the forwarder hand each message to :class:`DnstapWriter`, which
encodes it (:mod:`dnstls.proto.dnstap`) and appends the frame to a bounded queue; one
task writes the queue out -- to a Unix socket (Frame Streams bidirectional handshake,
as Unbound's ``dnstap-socket-path``: READY, ACCEPT, START) or to a file
(unidirectional Frame Streams, as ``fstrm_capture`` writes). Nothing on the query path
waits for the collector and no exception reaches it: when the queue is full (the
collector is slow, or gone) a message is dropped and counted
(``dnstls_dnstap_dropped_total``). A lost or refused socket is tried again with
back-off (1 s doubling to 30 s); what was queued meanwhile goes out after the
handshake. The file is written by a thread (disk writes never stall the loop).

**Log rotation** (the file only): :meth:`DnstapWriter.reopen` -- serve's SIGHUP reload
and ``dnstls control dnstap_reopen``, as BIND's ``rndc dnstap -reopen`` -- writes the
frames queued so far to the open file, ends it with a STOP frame and closes it, then
opens the path anew (truncated, as at start) with a START frame: logrotate moves the
file away and signals, and both files are complete Frame Streams files. A file that is
still at the path (a reload for another reason) is kept and written on, never
truncated; so logrotate's ``copytruncate`` does not suit it (move the file, the
default, then signal). A path that
cannot be opened then, or a file that fails to be written, is logged once as an error
naming ``dnstap.file``; messages are then dropped (counted) until a reopen succeeds --
the query path never waits for it nor sees the error.

Each process opens its own connection (``serve --workers N``: N connections to the
socket, as Unbound's threads each open one); a file cannot be shared by several
processes, so ``file`` with ``--workers`` above 1 is a configuration error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from dnstls.errors import ConfigError
from dnstls.proto import dnstap
from dnstls.proto.dnstap import Endpoint

log = logging.getLogger("dnstls.dnstap")

#: Messages queued at most (Unbound's dtio queue holds about as many)
MAX_QUEUE = 10_000
#: Frames written per write call at most
BATCH = 256
RECONNECT_MIN = 1.0
RECONNECT_MAX = 30.0
HANDSHAKE_TIMEOUT = 5.0
#: How long shutdown waits to write what is queued and for the reader's FINISH
CLOSE_TIMEOUT = 2.0


def endpoint(address: Any) -> Endpoint | None:
    """The :class:`Endpoint` of a socket address as the loop reports it (host, port,
    ...), None when it has none (a Unix socket, a closed transport)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host = address[0]
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return Endpoint(socket.inet_pton(family, host.split("%", 1)[0]), address[1])
    except (OSError, TypeError, ValueError):
        return None


class DnstapWriter:
    """See the module docstring. ``socket_path`` or ``file``; ``start()`` in the loop,
    ``aclose()`` at shutdown. The ``log_*`` attributes say which messages are wanted
    (the callers check them: a message not wanted is never built)."""

    def __init__(self, *, socket_path: str = "", file: str = "", identity: str = "",
                 version: str = "", client_query: bool = False,
                 client_response: bool = False, forwarder_query: bool = False,
                 forwarder_response: bool = False, resolver_query: bool = False,
                 resolver_response: bool = False, max_queue: int = MAX_QUEUE,
                 reconnect_min: float = RECONNECT_MIN, reconnect_max: float = RECONNECT_MAX,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if bool(socket_path) == bool(file):
            raise ValueError("one of socket_path and file")
        self.socket_path = socket_path
        self.file = file
        self.log_client_query = client_query
        self.log_client_response = client_response
        self.log_forwarder_query = forwarder_query
        self.log_forwarder_response = forwarder_response
        self.log_resolver_query = resolver_query
        self.log_resolver_response = resolver_response
        self._prefix = dnstap.dnstap_prefix(identity.encode(), version.encode())
        self.max_queue = max_queue
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.now_ns = clock_ns
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._fh: Any = None
        self._closing = False
        #: the file could not be opened again or written: drop until the next reopen
        self._failed = False
        #: frames still for the open file before a requested reopen (None: none asked)
        self._reopen_after: int | None = None
        self._reopened: list[asyncio.Future[str]] = []
        self.connected = False
        self.reopens = 0
        # counters (metrics)
        self.sent = 0
        self.dropped = 0
        self.connections = 0
        self.connect_failures = 0

    def __repr__(self) -> str:
        where = f"socket {self.socket_path}" if self.socket_path else f"file {self.file}"
        return (f"<DnstapWriter {where} {'connected' if self.connected else 'waiting'} "
                f"queued={len(self._queue)} sent={self.sent} dropped={self.dropped}>")

    # -- the query path's side ---------------------------------------------------------
    def put(self, kind: int, protocol: int, query: Endpoint | None,
            response: Endpoint | None, query_time: int | None, query_message: bytes | None,
            response_time: int | None, response_message: bytes | None) -> None:
        """Queue one message (dropped and counted when the queue is full)."""
        if len(self._queue) >= self.max_queue or self._closing or self._failed:
            self.dropped += 1
            return
        try:
            message = dnstap.encode_message(
                kind, protocol=protocol, query=query, response=response,
                query_time=query_time, query_message=query_message,
                response_time=response_time, response_message=response_message)
        except Exception:  # never into the query path
            log.exception("dnstap: cannot encode a message")
            self.dropped += 1
            return
        self._queue.append(dnstap.data_frame(dnstap.encode_dnstap(self._prefix, message)))
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    def client_query(self, wire: bytes, protocol: int, client: Any,
                     server: Endpoint | None) -> None:
        """CLIENT_QUERY: ``wire`` as received from ``client`` (a socket address)."""
        self.put(dnstap.CLIENT_QUERY, protocol, endpoint(client), server, self.now_ns(),
                 wire, None, None)

    def client_response(self, wire: bytes, protocol: int, client: Any,
                        server: Endpoint | None) -> None:
        """CLIENT_RESPONSE: ``wire`` as sent to ``client``."""
        self.put(dnstap.CLIENT_RESPONSE, protocol, endpoint(client), server, None,
                 None, self.now_ns(), wire)

    def forwarder_exchange(self, query: bytes | None, response: bytes | None,
                           protocol: int, upstream: Endpoint | None, query_time: int,
                           response_time: int | None) -> None:
        """FORWARDER_QUERY (``query``) and FORWARDER_RESPONSE (``response``, when one
        came) of one exchange with ``upstream``, as the ``log_forwarder_*`` settings
        want them."""
        self._exchange(dnstap.FORWARDER_QUERY if self.log_forwarder_query else None,
                       dnstap.FORWARDER_RESPONSE if self.log_forwarder_response else None,
                       query, response, protocol, upstream, query_time, response_time)

    def resolver_exchange(self, query: bytes | None, response: bytes | None,
                          protocol: int, server: Endpoint | None, query_time: int,
                          response_time: int | None) -> None:
        """RESOLVER_QUERY and RESOLVER_RESPONSE (when one came) of one exchange of the
        recursion with the authoritative ``server``, as the ``log_resolver_*`` settings
        want them."""
        self._exchange(dnstap.RESOLVER_QUERY if self.log_resolver_query else None,
                       dnstap.RESOLVER_RESPONSE if self.log_resolver_response else None,
                       query, response, protocol, server, query_time, response_time)

    def _exchange(self, query_kind: int | None, response_kind: int | None,
                  query: bytes | None, response: bytes | None, protocol: int,
                  server: Endpoint | None, query_time: int,
                  response_time: int | None) -> None:
        """One exchange with ``server``: the query message when ``query_kind`` is
        wanted, the response (with the query, when that is logged too) when
        ``response_kind`` is."""
        if query is not None and query_kind is not None:
            self.put(query_kind, protocol, None, server, query_time, query, None, None)
        if response is not None and response_kind is not None:
            self.put(response_kind, protocol, None, server, query_time,
                     query if query_kind is not None else None, response_time, response)

    # -- the writer ----------------------------------------------------------------------
    def open(self) -> None:
        """Open the file now (a start-up error names ``dnstap.file``); a socket is
        connected by the writer task, and a collector not there yet is no error."""
        if self.file and self._fh is None:
            try:
                self._fh = open(self.file, "wb")  # noqa: SIM115 - closed in aclose
            except OSError as exc:
                raise ConfigError("dnstap.file",
                                  f"cannot open {self.file}: {exc.strerror}") from None
            self._fh.write(dnstap.control_frame(dnstap.START))

    def start(self) -> None:
        self.open()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._queue:
            self._wake.set()
        run = self._run_file() if self.file else self._run_socket()
        self._task = asyncio.get_running_loop().create_task(run)

    async def _wait(self) -> None:
        wake = self._wake
        assert wake is not None
        if not self._queue and not self._closing:
            await wake.wait()
        wake.clear()

    def _batch(self) -> list[bytes]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(BATCH, len(queue)))]

    def reopen(self) -> asyncio.Future[str]:
        """Close the file once the frames queued so far are written to it (STOP last)
        and open the path anew (START first): log rotation, see the module docstring.
        The future's result is "" when the new file is open, else the error (which is
        also logged); a socket writer has nothing to reopen ("" at once)."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = self._task
        if not self.file or task is None or task.done() or self._closing:
            done.set_result("")
            return done
        if self._reopen_after is None:  # a second request meanwhile: the same reopen
            self._reopen_after = len(self._queue)
        self._reopened.append(done)
        if self._wake is not None:
            self._wake.set()
        return done

    async def _run_file(self) -> None:
        loop = asyncio.get_running_loop()
        self.connected = self._fh is not None
        while True:
            await self._wait()
            if self._reopen_after is not None:
                queue = self._queue
                await self._write(loop, [queue.popleft() for _ in
                                         range(min(self._reopen_after, len(queue)))])
                self._reopen_after = None
                error = await self._reopen_file(loop)
                waiting, self._reopened = self._reopened, []
                for future in waiting:
                    if not future.done():
                        future.set_result(error)
                continue
            batch = self._batch()
            if batch:
                await self._write(loop, batch)
            elif self._closing:
                return

    async def _write(self, loop: asyncio.AbstractEventLoop, batch: list[bytes]) -> None:
        fh = self._fh
        if not batch:
            return
        if fh is None:
            self.dropped += len(batch)
            return
        try:
            await loop.run_in_executor(None, _write_flush, fh, b"".join(batch))
        except OSError as exc:
            log.error("dnstap: cannot write %s (dnstap.file): %s; dnstap messages are "
                      "dropped until the file is reopened (SIGHUP or dnstls control "
                      "dnstap_reopen)", self.file, exc.strerror or exc)
            self.dropped += len(batch)
            self._fail()
            with contextlib.suppress(OSError):
                fh.close()
            return
        self.sent += len(batch)

    def _fail(self) -> None:
        """No file to write to: drop what is queued and what comes, until a reopen."""
        self._fh = None
        self._failed = True
        self.connected = False
        self.dropped += len(self._queue)
        self._queue.clear()

    async def _reopen_file(self, loop: asyncio.AbstractEventLoop) -> str:
        old = self._fh
        if old is not None and await loop.run_in_executor(None, _still_at, old, self.file):
            log.info("dnstap: %s was not moved away: writing on to it", self.file)
            return ""  # a reload for another reason: never truncate the file in use
        self._fh = None
        if old is not None:
            with contextlib.suppress(OSError):
                await loop.run_in_executor(None, _finish_file, old)
        try:
            fh = await loop.run_in_executor(None, _start_file, self.file)
        except OSError as exc:
            error = f"dnstap.file: cannot open {self.file}: {exc.strerror or exc}"
            log.error("dnstap: reopen failed: %s; dnstap messages are dropped until it is "
                      "reopened", error)
            self._fail()
            return error
        self._fh = fh
        self._failed = False
        self.connected = True
        self.reopens += 1
        log.info("dnstap: reopened %s", self.file)
        return ""

    async def _run_socket(self) -> None:
        delay = self.reconnect_min
        failing = False
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.socket_path), HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self.connect_failures += 1
                if not failing:
                    log.warning("dnstap: cannot connect to %s: %s (retrying)",
                                self.socket_path, _why(exc))
                failing = True
            else:
                try:
                    await self._session(reader, writer)
                    return  # closed by aclose()
                except Exception as exc:  # OSError, EOFError, FrameStreamError, ...
                    if not self.connected:  # the handshake failed
                        self.connect_failures += 1
                    if not failing:
                        log.warning("dnstap: connection to %s lost: %s (reconnecting)",
                                    self.socket_path, _why(exc),
                                    exc_info=not isinstance(
                                        exc, (OSError, EOFError, dnstap.FrameStreamError)))
                    failing = True
                finally:
                    if self.connected:  # it was up: start the back-off again
                        delay = self.reconnect_min
                        failing = False
                    self.connected = False
                    writer.close()
            if self._closing:
                return
            await self._sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, or until aclose()."""
        stopping = self._stopping
        assert stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        frames = dnstap.FrameReader(max_frame=0)
        writer.write(dnstap.control_frame(dnstap.READY))
        accept = await asyncio.wait_for(_control(reader, frames), HANDSHAKE_TIMEOUT)
        if accept.kind != dnstap.ACCEPT:
            raise dnstap.FrameStreamError(f"expected ACCEPT, got control frame {accept.kind}")
        if accept.content_types and dnstap.CONTENT_TYPE not in accept.content_types:
            raise dnstap.FrameStreamError("the reader does not accept protobuf:dnstap.Dnstap")
        writer.write(dnstap.control_frame(dnstap.START))
        await writer.drain()
        self.connections += 1
        self.connected = True
        log.info("dnstap: connected to %s", self.socket_path)
        # the reader sends nothing more until FINISH: anything else (EOF) is a loss
        lost = asyncio.ensure_future(reader.read(1))
        lost.add_done_callback(self._lost)
        try:
            while True:
                await self._wait()
                if lost.done():
                    raise EOFError("the reader closed the connection")
                batch = self._batch()
                if batch:
                    writer.writelines(batch)
                    self.sent += len(batch)
                    await writer.drain()
                elif self._closing:
                    break
        finally:
            if not lost.done():
                lost.cancel()
        writer.write(dnstap.control_frame(dnstap.STOP, None))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), CLOSE_TIMEOUT)
            await asyncio.wait_for(_control(reader, frames), CLOSE_TIMEOUT)  # FINISH

    def _lost(self, future: asyncio.Future[bytes]) -> None:
        """The reader's side ended (EOF, an error): wake the writer loop to see it."""
        if not future.cancelled():
            future.exception()  # retrieved: the session reports the loss itself
        if self._wake is not None:
            self._wake.set()

    async def aclose(self) -> None:
        """Write what is queued (within :data:`CLOSE_TIMEOUT`), STOP, close."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._stopping is not None:
            self._stopping.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.dropped += len(self._queue)
        self._queue.clear()
        waiting, self._reopened = self._reopened, []
        for future in waiting:
            if not future.done():
                future.set_result("dnstap is closing")
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.write(dnstap.control_frame(dnstap.STOP, None))
                fh.close()
        self.connected = False

    def statistics(self) -> dict[str, Any]:
        return {"sent": self.sent, "dropped": self.dropped, "queued": len(self._queue),
                "connected": int(self.connected), "connections": self.connections,
                "reopens": self.reopens}


def _write_flush(fh: Any, data: bytes) -> None:
    fh.write(data)
    fh.flush()


def _still_at(fh: Any, path: str) -> bool:
    """True if ``path`` is still the file ``fh`` writes (not moved away or removed)."""
    try:
        here, there = os.fstat(fh.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _finish_file(fh: Any) -> None:
    try:
        fh.write(dnstap.control_frame(dnstap.STOP, None))
    finally:
        fh.close()


def _start_file(path: str) -> Any:
    fh = open(path, "wb")  # noqa: SIM115 - returned open: the writer closes it
    try:
        _write_flush(fh, dnstap.control_frame(dnstap.START))
    except BaseException:
        fh.close()
        raise
    return fh


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _control(reader: asyncio.StreamReader, frames: dnstap.FrameReader,
                   ) -> dnstap.Control:
    """The next control frame from ``reader`` (a data frame there is an error)."""
    for _ in range(64):
        data = await reader.read(4096)
        if not data:
            raise EOFError("the reader closed the connection")
        got = frames.feed(data)
        if got:
            frame = got[0]
            if not isinstance(frame, dnstap.Control):
                raise dnstap.FrameStreamError("a data frame from the reader")
            return frame
    raise dnstap.FrameStreamError("no control frame from the reader")


_PROTOCOLS = {"udp": dnstap.UDP, "tcp": dnstap.TCP, "tls": dnstap.DOT}


class TappedUpstream:
    """An upstream of the message path's forwarder whose exchanges are logged
    (FORWARDER_QUERY and FORWARDER_RESPONSE): the wrapped upstream's
    ``exchange_detailed`` tells which transport and address answered. Everything else
    is the wrapped upstream's.

    The query is logged as the forwarder built it, with the ID the exchange gave it,
    rendered again (the transport's own EDNS additions -- padding, keepalive -- are
    not in it); the response as received and parsed, rendered again. A query that got
    no answer is logged alone (with the ID it was built with)."""

    def __init__(self, upstream: Any, tap: DnstapWriter) -> None:
        self._upstream = upstream
        self._tap = tap
        self.name = upstream.name
        spec = getattr(upstream, "spec", None)
        self._fallback = (
            _PROTOCOLS.get(getattr(spec, "transport", ""), dnstap.UDP),
            endpoint((getattr(spec, "address", ""), getattr(spec, "port", 0))))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)

    def __repr__(self) -> str:
        return f"<TappedUpstream {self._upstream!r}>"

    async def exchange(self, query: Any, *, deadline: float) -> Any:
        tap = self._tap
        started = tap.now_ns()
        detailed = getattr(self._upstream, "exchange_detailed", None)
        if detailed is None:
            response = await self._upstream.exchange(query, deadline=deadline)
            protocol, where = self._fallback
        else:
            try:
                reply = await detailed(query, deadline=deadline)
            except Exception:
                protocol, where = self._fallback
                with contextlib.suppress(Exception):
                    tap.forwarder_exchange(query.to_wire(), None, protocol, where, started,
                                           None)
                raise
            response = reply.message
            conn = reply.connection
            protocol = _PROTOCOLS.get(conn.transport, dnstap.UDP)
            where = endpoint((conn.address, conn.port))
        try:
            qid = query.id
            query.id = response.id
            try:
                qwire = query.to_wire()
            finally:
                query.id = qid
            tap.forwarder_exchange(qwire, response.to_wire(), protocol, where, started,
                                   tap.now_ns())
        except Exception:  # never into the query path
            log.exception("dnstap: cannot log a forwarded exchange")
        return response


class TappedAuthority:
    """The recursion's network (:class:`~dnstls.resolver.iterate.Authority`) with every
    exchange logged as RESOLVER_QUERY and RESOLVER_RESPONSE: the server's address and
    port, UDP or TCP, the query with the ID it was sent with and the response as
    received (both rendered again from the parsed messages); a query that got no
    answer is logged alone."""

    #: no wire-level exchanges (the iterator's wire path): they would bypass the log,
    #: so the iterator asks every question through :meth:`exchange` (the service does
    #: not build the wire path with dnstap on anyway)
    exchange_wire = None

    def __init__(self, authority: Any, tap: DnstapWriter) -> None:
        self._authority = authority
        self._tap = tap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._authority, name)

    def __repr__(self) -> str:
        return f"<TappedAuthority {self._authority!r}>"

    async def exchange(self, query: Any, address: Any, *, tcp: bool,
                       deadline: float) -> Any:
        tap = self._tap
        started = tap.now_ns()
        protocol = dnstap.TCP if tcp else dnstap.UDP
        where = endpoint(address)
        try:
            response = await self._authority.exchange(query, address, tcp=tcp,
                                                      deadline=deadline)
        except Exception:
            with contextlib.suppress(Exception):
                tap.resolver_exchange(query.to_wire(), None, protocol, where, started, None)
            raise
        try:  # the transport set the query's ID: it is the one sent
            tap.resolver_exchange(query.to_wire(), response.to_wire(), protocol, where,
                                  started, tap.now_ns())
        except Exception:  # never into the query path
            log.exception("dnstap: cannot log a resolver exchange")
        return response


def tap_resolver(iterator: Any, tap: DnstapWriter) -> bool:
    """Log the exchanges of the recursion's ``iterator`` (its ``authority`` wrapped in
    :class:`TappedAuthority`); False when it is already."""
    if isinstance(iterator.authority, TappedAuthority):
        return False
    iterator.authority = TappedAuthority(iterator.authority, tap)
    return True


def tap_forwarders(stage: Any, tap: DnstapWriter) -> int:
    """Wrap the upstreams of the forwarder ``stage`` (a Forwarder, or a ZoneRouter of
    them) in :class:`TappedUpstream`; how many."""
    count = 0
    upstreams = getattr(stage, "upstreams", None)
    if isinstance(upstreams, list):
        for i, upstream in enumerate(upstreams):
            if not isinstance(upstream, TappedUpstream):
                upstreams[i] = TappedUpstream(upstream, tap)
                count += 1
    default = getattr(stage, "default", None)
    if default is not None:
        count += tap_forwarders(default, tap)
    for _name, forwarder in getattr(stage, "zones", None) or ():
        count += tap_forwarders(forwarder, tap)
    return count
