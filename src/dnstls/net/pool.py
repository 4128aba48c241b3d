"""The upstream connection pool: reused, pipelined TCP and DoT connections.

This is the asyncio adapter around :mod:`dnstls.proto.upstream`; read that module's
docstring for the rules (ID allocation, matching, idle expiry, half-open detection,
assignment order). Here we only carry them out:

* :class:`StreamUpstream` -- one upstream (``tcp://`` or ``tls://``): a
  :class:`~dnstls.proto.upstream.PoolState` of :class:`UpstreamConnection`, one idle
  timer, counters. ``exchange()`` queues for a slot, waits for the connection to be
  ready, writes the query and waits for the matched answer until the deadline.
* A connection that the server closes or resets, or whose stream breaks, fails its
  in-flight queries with a retryable error; each is retried **once** on another
  connection (RFC 7766 §6.2.1: a server may close at any time), within its deadline.
* While answers are outstanding, every read re-arms ``TCP_QUICKACK`` (Linux): the
  answers are ACKed at once instead of by the delayed-ACK timer. An upstream that
  writes without ``TCP_NODELAY`` (Unbound does, for DoT too) holds each small answer
  behind Nagle's algorithm until the previous one is ACKed, and a client with nothing
  to send then delays that ACK by up to 40 ms (RFC 1122 §4.2.3.2; Linux's minimum
  delayed-ACK timeout): pipelined answers stalled for ~40 ms at a time.
  ``bench/stub_vs_stubby.py`` against Unbound: worst latency 45 ms → 4 to 12 ms.
* **Connect back-off** (``connect_backoff=True``: the services, not the library; its
  state is the sans-IO :class:`~dnstls.proto.upstream.ConnectHold`): a
  connection that cannot be opened (refused, unreachable, timed out, TLS handshake or
  authentication failure) holds the upstream back for 1 s (each failed connect starts
  another second: at most one attempt a second). While it is held and no connection is
  up, a query that would need a new connection fails at once with the last connect
  error (so the forwarder moves on to another upstream, or answers SERVFAIL with an
  Extended DNS Error without waiting); when the hold ends, one query opens a single
  probe connection while the others keep failing at once, and a probe that connects
  clears the state. Without it a lone upstream that refuses got a new connection for
  every burst of queries (255 connects in 3 s under dnsperf; Stubby: one per query),
  and a blackholed one kept every query waiting for ``connect_timeout``. Unbound and
  Knot Resolver likewise stop sending to a server they found down and probe it with
  one query at a time. The hold does not grow: one attempt a second is far from a
  storm, and an upstream that comes back is used again within a second (the
  robustness test kills one and revives it 1.5 s later; answers are expected 1.5 s
  after that). The first failure is logged as a warning, recovery at INFO, the
  failures in between at DEBUG only.
* Closing is a synchronous ``transport.close()`` so it cannot be interrupted by
  cancellation (httpcore shields its closes for the same reason); the pool's
  ``aclose()`` then waits, bounded, for the transports to finish.

``exchange()`` returns the answer; ``exchange_detailed()`` (for :class:`dnstls.Client`
and ``dnstls query``) returns a :class:`Reply` that also says how big the answer was,
how long it took, and which connection carried it (:class:`ConnectionDetails`, with the
TLS session and how the server was authenticated).

:func:`build_forwarder` is the factory the service calls: the upstream objects for a
list of specs and the :class:`~dnstls.resolver.forward.Forwarder` that uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar, cast

import dns.message

from dnstls.errors import (
    MalformedAnswer,
    NetworkError,
    PinMismatch,
    ProtocolError,
    QueryTimeout,
    TLSAuthenticationError,
)
from dnstls.net import tls_client
from dnstls.net.tls_client import TlsDetails
from dnstls.proto.pins import PinSet
from dnstls.proto.upstream import (
    ConnectHold,
    ConnectionState,
    PoolState,
    QueryRejected,
    ResponseIgnored,
    ResponseMalformed,
    ResponseMatched,
    Status,
    StreamBroken,
    WireMatched,
)
from dnstls.upstreams import UpstreamSpec

#: Linux's TCP_QUICKACK (not in ``socket`` elsewhere): see the module docstring.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

log = logging.getLogger("dnstls.net.pool")
T = TypeVar("T")

Clock = Callable[[], float]
CLOSE_GRACE = 1.0  # seconds aclose() waits for TLS close_notify before aborting
CONNECT_RETRY_INTERVAL = 1.0  # seconds an upstream is held back after a failed connect


@dataclass(slots=True)
class UpstreamCounters:
    queries_sent: int = 0
    responses: int = 0
    ignored_responses: int = 0
    rejected_responses: int = 0
    timeouts: int = 0
    retries: int = 0
    connections_closed_by_peer: int = 0
    connection_errors: int = 0
    handshakes: int = 0
    handshakes_resumed: int = 0
    tls_auth_failures: int = 0
    pin_failures: int = 0
    pin_matches_reported: int = 0
    pin_mismatches_reported: int = 0
    opportunistic_connections: int = 0
    #: queries failed at once because the upstream was held back after failed connects
    connect_backoff_failures: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionDetails:
    """The connection that carried a query: transport (``udp``, ``tcp``, ``tls``), the
    server's address and port, the connection's number within its upstream (0, 1, ...;
    -1 for UDP) and, over TLS, the session (:class:`~dnstls.net.tls_client.TlsDetails`)."""

    transport: str
    address: str
    port: int
    number: int = -1
    tls: TlsDetails | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer with its metadata: ``size`` in bytes as received (without the TCP
    length prefix), ``rtt`` in seconds from sending to receiving, ``connection``."""

    message: dns.message.Message
    size: int
    rtt: float
    connection: ConnectionDetails


class ConnectionLost(NetworkError):
    """The connection went away before the answer: the query may be retried."""

    def __init__(self, message: str, *, protocol: bool = False) -> None:
        super().__init__(message)
        self.protocol = protocol


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception retrieved (nobody may be awaiting it any more)."""
    if not future.cancelled():
        future.exception()


def _future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    future = loop.create_future()
    future.add_done_callback(_consume)
    return future


class DeadlineExpired(Exception):
    """A query's deadline passed (set on its future by the deadline timer; internal to
    the upstream transports, which turn it into QueryTimeout)."""


def expire(future: asyncio.Future[Any] | _WireQuery) -> None:
    """The deadline timer of one exchange (stream pool and UDP upstream)."""
    if not future.done():
        future.set_exception(DeadlineExpired())


class _WireQuery:
    """One query of :meth:`StreamUpstream.start_wire`: its connection's waiter in
    ``_pending`` (like a future: ``done``, ``set_result``, ``set_exception``; only the
    first outcome counts) and what the connection's and the pool's bookkeeping need
    when it ends -- :meth:`UpstreamConnection._wire_ended`, then
    :meth:`StreamUpstream._wire_ended`, which hands the outcome to ``callback``. One
    object per query where there were a waiter and a closure per layer
    (bench/bench_miss_ir.py ``--kinds stub``)."""

    __slots__ = ("callback", "conn", "deadline", "do", "finished", "flags", "payload", "qid",
                 "question", "timer")

    # Set by StreamUpstream.start_wire (qid and timer by UpstreamConnection.start_wire),
    # which makes it: no __init__ (its frame and argument passing cost more than these
    # stores, bench_miss_ir.py).
    conn: UpstreamConnection
    question: bytes
    deadline: float
    flags: int
    payload: int
    do: bool
    callback: WireCallback
    finished: bool
    qid: int
    timer: asyncio.TimerHandle | None

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: bytes) -> None:
        if not self.finished:
            self._finish(result, None)

    def set_exception(self, exc: BaseException) -> None:
        if not self.finished:
            self._finish(None, exc)

    def _finish(self, result: bytes | None, exc: BaseException | None) -> None:
        # Runs the whole answer path inside data_received/_shutdown: a bug there must
        # not cut off the other queries of the same read (as a task would contain it).
        self.finished = True
        conn = self.conn
        try:
            exc = conn._wire_ended(self, exc)
            conn.upstream._wire_ended(self, result, exc)
        except Exception:
            log.exception("internal error while answering a forwarded query")


#: How a pool opens a connection's transport: returns once the connection (the protocol)
#: has its transport (``connection_made``), raises if it cannot. The pool's default is
#: :meth:`StreamUpstream.open_transport`; tests hand a fake transport through it.
Connector = Callable[["UpstreamConnection"], Awaitable[None]]

#: How the task-free forwarding paths deliver an exchange's outcome: the answer's bytes,
#: or the exception (the UDP upstream and the stream pool share it).
WireCallback = Callable[[bytes | None, BaseException | None], None]


def relay(callback: WireCallback) -> Callable[[asyncio.Future[bytes]], None]:
    """A done-callback handing a task's outcome to ``callback`` (when a task-free
    exchange still needs a task: waiting for a connection, a retry, a TCP fallback)."""

    def done(task: asyncio.Future[bytes]) -> None:
        if task.cancelled():
            callback(None, asyncio.CancelledError())
        elif task.exception() is not None:
            callback(None, task.exception())
        else:
            callback(task.result(), None)

    return done


class _Waiter:
    __slots__ = ("connection", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[UpstreamConnection] = _future(loop)
        self.connection: UpstreamConnection | None = None


class UpstreamConnection(asyncio.Protocol):
    """One TCP or TLS connection to an upstream; the protocol object of its transport."""

    def __init__(self, upstream: StreamUpstream) -> None:
        spec = upstream.spec
        self.upstream = upstream
        self.state = ConnectionState(spec.name, max_in_flight=spec.max_queries_per_connection,
                                     idle_timeout=spec.idle_timeout)
        loop = upstream.loop
        self.ready: asyncio.Future[None] = _future(loop)
        self.done: asyncio.Future[None] = _future(loop)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}  # ResponseMatched | wire bytes
        #: Framed queries written in this loop iteration, sent together by _flush (one
        #: TLS record and one send for all of them, not one each).
        self._out: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._session_saved = False
        #: The error of a connect that ran out of ``connect_timeout`` (see _acquire).
        self.connect_timed_out: Exception | None = None
        #: the socket's setsockopt while TCP_QUICKACK can be set on it
        self._setsockopt: Callable[[int, int, int], None] | None = None
        self.details = ConnectionDetails(spec.transport, spec.address, spec.port,
                                         upstream.state.opened)

    # -- what PoolState needs
    def is_available(self) -> bool:
        return self.state.is_available()

    def is_idle(self) -> bool:
        return self.state.is_idle()

    def has_expired(self, now: float) -> bool:
        return self.state.has_expired(now)

    def is_closed(self) -> bool:
        return self.state.is_closed()

    def reserve(self) -> None:
        self.state.reserve()

    def __repr__(self) -> str:
        return self.state.describe()

    # -- connecting
    def start(self) -> None:
        self._task = self.upstream.loop.create_task(self._connect())

    async def _connect(self) -> None:
        up = self.upstream
        spec = up.spec
        try:
            async with asyncio.timeout(spec.connect_timeout):
                await up.connect(self)
                if up.context is not None:
                    self._authenticate()
        except asyncio.CancelledError:
            self._shutdown("cancelled while connecting")
            raise
        except Exception as exc:  # translated below; the pool must not lose it
            error = tls_client.translate_error(exc, spec)
            if isinstance(exc, TimeoutError):
                self.connect_timed_out = error
            up.count_connect_error(error)
            up.connect_failed(error)
            self._shutdown(str(error))
            if not self.ready.done():
                self.ready.set_exception(error)
            return
        up.connect_succeeded()
        self.state.connected(up.clock())
        if not self.ready.done():
            self.ready.set_result(None)
        up.reassign()

    def _authenticate(self) -> None:
        up = self.upstream
        assert self._transport is not None
        ssl_object = self._transport.get_extra_info("ssl_object")
        up.counters.handshakes += 1
        if ssl_object is not None and ssl_object.session_reused:
            up.counters.handshakes_resumed += 1
        assert up.context is not None
        report = tls_client.pins_report_only(up.context, up.spec)
        mismatch = tls_client.authenticate(
            ssl_object, up.spec, up.pinset, report_only=report,
            check_name=tls_client.name_left_to_check(up.context, up.spec))
        if report and up.pinset and not ssl_object.session_reused:
            up.note_pin_report(mismatch)
        if up.spec.opportunistic:
            up.note_opportunistic()
        if ssl_object is not None:
            verified = up.context.verify_mode == ssl.CERT_REQUIRED
            tls = tls_client.session_details(ssl_object, up.spec,
                                             PinSet(frozenset()) if mismatch else up.pinset,
                                             verified=verified, sni=up.sni)
            self.details = replace(self.details, tls=tls)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's SSL transport does not subclass asyncio.Transport, but behaves as one
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if _TCP_QUICKACK is not None and sock is not None:
            self._setsockopt = sock.setsockopt

    def data_received(self, data: bytes) -> None:
        up = self.upstream
        for event in self.state.receive(data, up.clock()):
            if isinstance(event, WireMatched):
                up.counters.responses += 1
                future = self._pending.get(event.qid)
                if future is not None and not future.done():
                    future.set_result(event.wire)  # what query_wire's caller awaits
                self._save_session()
            elif isinstance(event, ResponseMatched):
                up.counters.responses += 1
                future = self._pending.get(event.qid)
                if future is not None and not future.done():
                    future.set_result(event)
                self._save_session()
            elif isinstance(event, ResponseIgnored):
                up.counters.ignored_responses += 1
            elif isinstance(event, ResponseMalformed):  # that query failed, not the stream
                up.counters.rejected_responses += 1
                future = self._pending.pop(event.qid, None)
                if future is not None and not future.done():
                    future.set_exception(MalformedAnswer(f"malformed answer from {up.name}"))
            elif isinstance(event, QueryRejected):
                up.counters.rejected_responses += 1
                future = self._pending.pop(event.qid, None)
                if future is not None and not future.done():
                    future.set_exception(ProtocolError(f"{up.name}: {event.reason}"))
                self.close(event.reason)
            else:
                assert isinstance(event, StreamBroken)
                up.counters.rejected_responses += 1
                self._shutdown(f"{up.name}: {event.reason}", protocol=True)
        state = self.state
        if state.in_flight:  # answers still to come
            if self._setsockopt is not None and not state.is_closed():
                self._quickack(self._setsockopt)
        elif state.status is Status.RETIRED and state.is_idle():
            up.reassign()

    def _quickack(self, setsockopt: Callable[[int, int, int], None]) -> None:
        """ACK the next answers at once (see the module docstring); a socket that
        refuses the option is not asked again."""
        assert _TCP_QUICKACK is not None
        try:
            setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError as exc:
            log.debug("upstream %s: TCP_QUICKACK not set: %s", self.upstream.name, exc)
            self._setsockopt = None

    def eof_received(self) -> bool | None:
        return False  # half-closed by the server: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.state.is_closed():
            self.upstream.counters.connections_closed_by_peer += 1
            how = "reset" if isinstance(exc, ConnectionResetError) else "closed"
            self._shutdown(f"connection {how} by {self.upstream.name}")
        if not self.done.done():
            self.done.set_result(None)
        self.upstream.draining.discard(self)
        self.upstream.reassign()

    # -- queries
    async def query(self, query: dns.message.Message, deadline: float) -> dns.message.Message:
        return (await self.query_detailed(query, deadline)).message

    async def query_detailed(self, query: dns.message.Message, deadline: float,
                             ) -> ResponseMatched:
        up = self.upstream
        self._check_open()
        tls = up.context is not None  # padding only where it hides something (RFC 7830 §6)
        qid, wire = self.state.start_query(query, up.clock(),
                                           pad=up.spec.tls_query_padding_blocksize if tls else 0,
                                           keepalive=up.ask_keepalive,
                                           pad_length=up.pad_length if tls else None,
                                           extra=up.extra_options, edns_version=up.edns_version)
        event: ResponseMatched = await self._send_and_wait(qid, wire, deadline)
        return event

    def _start_wire(self, question: bytes, *, flags: int, payload: int,
                    do: bool) -> tuple[int, bytes]:
        """Register a wire-level query (ConnectionLost at once if the connection is
        closed): its ID and the bytes to send, padded over TLS as the spec says."""
        up = self.upstream
        self._check_open()
        tls = up.context is not None
        return self.state.start_query_wire(
            question, up.clock(), flags=flags, payload=payload, do=do,
            pad=up.spec.tls_query_padding_blocksize if tls else 0, keepalive=up.ask_keepalive)

    def query_wire(self, question: bytes, deadline: float, *, flags: int, payload: int,
                   do: bool) -> Awaitable[bytes]:
        """The wire-level path: send ``question``; await the matched response bytes.

        Not a coroutine itself (one frame less per forwarded query): the query is
        started here (ConnectionLost at once if the connection is closed) and the
        awaitable is :meth:`_send_and_wait`'s, whose future receives the bytes."""
        qid, wire = self._start_wire(question, flags=flags, payload=payload, do=do)
        awaitable: Awaitable[bytes] = self._send_and_wait(qid, wire, deadline)
        return awaitable

    def start_wire(self, query: _WireQuery) -> None:
        """:meth:`query_wire` without a coroutine, for :meth:`StreamUpstream.start_wire`:
        the same query, write batching, deadline timer and half-open rule as
        :meth:`_send_and_wait`, with ``query`` as the waiter in ``_pending``
        (ConnectionLost at once if the connection is closed). When it ends,
        :meth:`_wire_ended` does this connection's bookkeeping, then the pool's."""
        up = self.upstream
        qid, wire = self._start_wire(query.question, flags=query.flags,
                                     payload=query.payload, do=query.do)
        query.qid = qid
        loop = up.loop
        self._pending[qid] = cast(asyncio.Future[Any], query)
        up.counters.queries_sent += 1
        out = self._out
        out.append(wire)
        if len(out) == 1:
            loop.call_soon(self._flush)
        query.timer = loop.call_at(query.deadline, expire, query)

    def _wire_ended(self, query: _WireQuery, exc: BaseException | None,
                    ) -> BaseException | None:
        """A :meth:`start_wire` query ended (answered, failed or at its deadline): its
        timer and ID let go, as :meth:`_send_and_wait` does; a deadline becomes
        QueryTimeout (and a connection with nothing received since is closed:
        half-open). Returns the error to report, if any."""
        timer = query.timer
        if timer is not None:
            timer.cancel()
        qid = query.qid
        self._pending.pop(qid, None)
        if exc is not None and isinstance(exc, DeadlineExpired):
            up = self.upstream
            up.counters.timeouts += 1
            if self.state.query_timed_out(qid, up.clock()):
                self.close(self.state.close_reason or "half-open")
            exc = QueryTimeout(f"no answer from {up.name} before the deadline")
        self.state.forget(qid)
        return exc

    def _check_open(self) -> None:
        if self.state.is_closed() or self._transport is None:
            raise ConnectionLost(f"connection to {self.upstream.name} closed before sending")

    async def _send_and_wait(self, qid: int, wire: bytes, deadline: float) -> Any:
        """Write the framed query ``qid`` and wait for its matched event until ``deadline``;
        a timeout with nothing received since the query was sent retires the connection
        (half-open).

        The write is batched: queries sent in one loop iteration go out together at its
        end (:meth:`_flush`), each in its own TLS record. The deadline is one timer that
        fails the future (cheaper than ``asyncio.timeout_at``, which cancels and
        uncancels the task)."""
        up = self.upstream
        loop = up.loop
        future: asyncio.Future[Any] = _future(loop)
        self._pending[qid] = future
        up.counters.queries_sent += 1
        out = self._out
        out.append(wire)
        if len(out) == 1:
            loop.call_soon(self._flush)
        timer = loop.call_at(deadline, expire, future)
        try:
            return await future
        except DeadlineExpired:
            up.counters.timeouts += 1
            if self.state.query_timed_out(qid, up.clock()):
                self.close(self.state.close_reason or "half-open")
            raise QueryTimeout(f"no answer from {up.name} before the deadline") from None
        finally:
            timer.cancel()
            self._pending.pop(qid, None)
            self.state.forget(qid)

    def _flush(self) -> None:
        """Write the queries of this loop iteration at once: one ``writelines`` (one
        ``send``), but every query its own TLS record, as the server writes its answers
        -- a server that reads one DNS message per record (getdns does) would otherwise
        leave the rest of a record unread until the next one arrives."""
        out, self._out = self._out, []
        transport = self._transport
        if transport is None or transport.is_closing() or self.state.is_closed():
            return  # _shutdown failed their futures (ConnectionLost: retried elsewhere)
        try:
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
        except Exception as exc:  # e.g. the TLS layer failed: retry elsewhere, now
            log.info("upstream %s: write failed: %s", self.upstream.name, exc)
            self._shutdown(f"write to {self.upstream.name} failed: {exc}")

    # -- closing
    def _save_session(self) -> None:
        if self._session_saved or self.upstream.context is None or self._transport is None:
            return
        ssl_object = self._transport.get_extra_info("ssl_object")
        session = getattr(ssl_object, "session", None)
        if session is not None:
            self.upstream.context.session = session
            self._session_saved = True

    def _shutdown(self, reason: str, *, protocol: bool = False) -> None:
        self.state.closed(reason)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason, protocol=protocol))
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        if self._transport is None and not self.done.done():
            self.done.set_result(None)
        elif not self.done.done():
            self.upstream.draining.add(self)  # TLS close_notify under way: aclose() waits

    def close(self, reason: str = "closed by us") -> None:
        """Close now (synchronous, so cancellation cannot interrupt it)."""
        if not self.state.is_closed():
            self._save_session()
            self._shutdown(reason)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()


class StreamUpstream:
    """A ``tcp://`` or ``tls://`` upstream: pooled, pipelined, reused connections."""

    #: Ask for edns-tcp-keepalive in every query (RFC 7828; the server's value sets
    #: the idle timeout). ``dnstls query`` turns it off unless ``+keepalive``.
    ask_keepalive = True
    #: Exact padding option length (TLS only) instead of block padding (kdig's
    #: ``+padding=N``).
    pad_length: int | None = None
    #: EDNS options (wire form) added to every query of the message path: a client's
    #: own (``dnstls.Client(edns_options=...)``, ``dnstls query +nsid``); never set by
    #: the forwarders.
    extra_options: bytes = b""
    #: The EDNS version of the message path's queries; None: no OPT RR (``dnstls query
    #: +noedns``). Never changed by the forwarders.
    edns_version: int | None = 0

    def __init__(self, spec: UpstreamSpec, *, clock: Clock | None = None,
                 sni: str | None = None, verify: bool | None = None,
                 connect: Connector | None = None, connect_backoff: bool = False) -> None:
        if spec.transport not in ("tcp", "tls"):
            raise ValueError(f"{spec.name} is not a stream upstream")
        self.spec = spec
        self.name = spec.name
        self.timeout = spec.query_timeout
        #: Seconds :meth:`aclose` waits for the servers' close_notify before aborting
        #: (some, e.g. Knot Resolver, never send one); a one-shot client may want less.
        self.close_grace = CLOSE_GRACE
        self.loop = asyncio.get_running_loop()
        self.clock: Clock = clock or self.loop.time
        #: Opens a connection's transport (:data:`Connector`): :meth:`open_transport`
        #: unless the caller hands another (tests: a scripted fake transport).
        self.connect: Connector = connect or self.open_transport
        self.sni = sni
        self.context = (tls_client.client_context(spec, sni=sni, verify=verify)
                        if spec.transport == "tls" else None)
        self.pinset = PinSet.of(spec.tls_pubkey_pinset)
        self.counters = UpstreamCounters()
        self.state: PoolState[UpstreamConnection, _Waiter] = PoolState(
            max_connections=spec.max_connections, new_connection=self._new_connection)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._warned_opportunistic = False
        self._closing = False
        #: Connections closed by us whose transport has not finished closing (a TLS
        #: close_notify exchange); :meth:`aclose` waits for them too, bounded.
        self.draining: set[UpstreamConnection] = set()
        #: Connect back-off (module docstring): on when ``connect_backoff``; consecutive
        #: failed connects, when the next probe may start, whether one is under way,
        #: and the error that queries get meanwhile.
        self.connect_backoff = connect_backoff
        self.hold = ConnectHold(CONNECT_RETRY_INTERVAL)

    def _new_connection(self) -> UpstreamConnection:
        return UpstreamConnection(self)

    async def open_transport(self, conn: UpstreamConnection) -> None:
        """The default :data:`Connector`: TCP, or TLS with this upstream's context (the
        caller, :meth:`UpstreamConnection._connect`, bounds it and authenticates)."""
        spec = self.spec
        if self.context is None:
            await self.loop.create_connection(lambda: conn, spec.address, spec.port)
        else:
            await self.loop.create_connection(
                lambda: conn, spec.address, spec.port, ssl=self.context,
                server_hostname=tls_client.server_hostname(spec, self.sni) or "",
                ssl_handshake_timeout=spec.connect_timeout)

    def __repr__(self) -> str:
        conns = len(self.state.connections)
        return (f"<StreamUpstream {self.name} [connections={conns}, "
                f"waiting={len(self.state.waiting)}]>")

    # -- the Upstream interface
    async def exchange(self, query: dns.message.Message, *, deadline: float,
                       ) -> dns.message.Message:
        return await self._on_a_connection(lambda c: c.query(query, deadline), deadline)

    async def exchange_detailed(self, query: dns.message.Message, *, deadline: float,
                                ) -> Reply:
        """Like :meth:`exchange`, with the answer's size, RTT and connection."""

        async def ask(conn: UpstreamConnection) -> Reply:
            event = await conn.query_detailed(query, deadline)
            return Reply(event.message, event.size, event.rtt, conn.details)

        return await self._on_a_connection(ask, deadline)

    async def exchange_wire(self, question: bytes, *, deadline: float, flags: int,
                            payload: int, do: bool) -> bytes:
        """The wire-level :meth:`exchange`: question bytes in, checked response bytes out."""
        return await self._on_a_connection(
            lambda c: c.query_wire(question, deadline, flags=flags, payload=payload, do=do),
            deadline)

    def start_wire(self, question: bytes, *, deadline: float, flags: int, payload: int,
                   do: bool, callback: WireCallback) -> None:
        """:meth:`exchange_wire` without a task when a connected connection has a free
        slot and nobody is queued (:meth:`_acquire_now`): ``callback(bytes, None)`` or
        ``callback(None, exc)`` follows once, from the loop (never from this call; a
        closed pool raises NetworkError here). Otherwise -- no slot, or the connection
        lost under the query (retried once on another, as :meth:`_on_a_connection`
        does) -- the rest runs in a task, with the same errors as exchange_wire."""
        if self._closing:
            raise NetworkError(f"{self.name}: pool is closed")
        conn = self._acquire_now()
        if conn is None:
            self._relay_task(self.exchange_wire(question, deadline=deadline, flags=flags,
                                                payload=payload, do=do), callback)
            return

        query = _WireQuery()
        query.conn = conn
        query.question = question
        query.deadline = deadline
        query.flags = flags
        query.payload = payload
        query.do = do
        query.callback = callback
        query.finished = False
        query.timer = None
        try:
            conn.start_wire(query)
        except ConnectionLost:  # closed under us: the coroutine path decides (rare)
            self._release(conn)
            self._relay_task(self.exchange_wire(question, deadline=deadline, flags=flags,
                                                payload=payload, do=do), callback)

    def _wire_ended(self, query: _WireQuery, result: bytes | None,
                    exc: BaseException | None) -> None:
        """The pool's bookkeeping for a :meth:`start_wire` query, after its connection's
        (:meth:`UpstreamConnection._wire_ended`): the slot released; a connection lost
        under the query is retried once on another, within the deadline (as
        :meth:`_on_a_connection` does); then the outcome goes to the query's callback."""
        self._release(query.conn)
        callback = query.callback
        if exc is not None and isinstance(exc, ConnectionLost):
            deadline = query.deadline
            if self._closing:  # aclose() under the query: no retry, no new connection
                callback(None, NetworkError(f"{self.name}: pool is closed"))
                return
            if self.clock() >= deadline:
                callback(None, ProtocolError(str(exc)) if exc.protocol
                         else NetworkError(str(exc)))
                return
            self.counters.retries += 1  # once more, on another connection
            question, flags, payload, do = query.question, query.flags, query.payload, query.do
            self._relay_task(self._on_a_connection(
                lambda c: c.query_wire(question, deadline, flags=flags, payload=payload,
                                       do=do), deadline, attempts=1), callback)
            return
        callback(result, exc)

    def _relay_task(self, coro: Awaitable[bytes], callback: WireCallback) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(relay(callback))

    async def _on_a_connection(self, ask: Callable[[UpstreamConnection], Awaitable[T]],
                               deadline: float, *, attempts: int = 2) -> T:
        """Run ``ask`` on a pooled connection; if the connection is lost under it, once
        more on another (within the deadline). Errors come out as dnstls errors."""
        if self._closing:
            raise NetworkError(f"{self.name}: pool is closed")
        lost: ConnectionLost | None = None
        for _attempt in range(attempts):
            conn = self._acquire_now()
            if conn is None:
                if self.hold.failures:
                    self._check_held()
                conn = await self._acquire(deadline)
            try:
                return await ask(conn)
            except ConnectionLost as exc:
                lost = exc
                # not once more after aclose(): it would open a connection nobody closes
                again = self.clock() < deadline and not self._closing
                if again:
                    self.counters.retries += 1
            finally:
                self._release(conn)
            if not again:  # (not a break inside try/finally: mypyc does not compile it)
                break
        assert lost is not None
        if self._closing:
            raise NetworkError(f"{self.name}: pool is closed")
        if lost.protocol:
            raise ProtocolError(str(lost))
        raise NetworkError(str(lost))

    async def _acquire(self, deadline: float) -> UpstreamConnection:
        """Queue for a slot (when :meth:`_acquire_now` found none) until ``deadline``.

        A query handed a connection that was already connecting when it queued shares
        that attempt's outcome, except a connect timeout: that ran on the clock of the
        query that started it, not this one's, so (without connect back-off, where the
        hold decides) this query queues once more, for a connect of its own within its
        own deadline. Each query's failure is then about its own attempt."""
        conn: UpstreamConnection | None = None
        while conn is None:
            conn = await self._acquire_once(deadline)
        return conn

    async def _acquire_once(self, deadline: float) -> UpstreamConnection | None:
        """One turn of :meth:`_acquire`; None: queue again (a joined connect timed out)."""
        opened = self.state.opened  # connections numbered below this predate the query
        waiter = _Waiter(self.loop)
        self.state.enqueue(waiter)
        self.reassign()
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await waiter.future
                    await asyncio.shield(conn.ready)
            except TimeoutError:
                self.counters.timeouts += 1
                raise QueryTimeout(f"no connection to {self.name} before the deadline",
                                   ) from None
        except BaseException as exc:
            self.state.discard(waiter)
            joined = waiter.connection
            if joined is not None:
                self._release(joined)
                if (joined.connect_timed_out is exc and joined.details.number < opened
                        and not self.connect_backoff and not self._closing
                        and self.clock() < deadline):
                    return None
            raise
        return conn

    def _acquire_now(self) -> UpstreamConnection | None:
        """The common case without a waiter, a future or a timer: nobody is queued and a
        connected connection has a free slot (the one :meth:`PoolState.assign` would
        pick: the oldest available). None: queue and wait (:meth:`_acquire`)."""
        state = self.state
        if state.waiting:
            return None  # FIFO: those queued first get the slots first
        now = self.clock()
        for conn in state.connections:
            cstate = conn.state
            if cstate.is_available() and cstate.is_connected() and not cstate.has_expired(now):
                cstate.reserve()  # what conn.reserve() does, one frame less
                state.reused += 1
                return conn
        return None

    def _release(self, conn: UpstreamConnection) -> None:
        cstate = conn.state
        if cstate.release(self.clock()):
            conn.close("retired")
        elif cstate.reserved and not self.state.waiting:
            return  # still busy, nobody waits: nothing for reassign() to do
        self.reassign()

    # -- pool maintenance
    def reassign(self) -> None:
        """Run the sans-IO assignment and carry out its plan."""
        plan = self.state.assign(self.clock())
        for conn in plan.to_close:
            conn.close("idle timeout")
        for conn in plan.to_open:
            conn.start()
        for waiter, conn in plan.assigned:
            waiter.connection = conn
            if not waiter.future.done():
                waiter.future.set_result(conn)
        self._arm_timer()

    def _arm_timer(self) -> None:
        expiry = self.state.next_expiry(lambda c: c.state.idle_expiry)
        if expiry == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = expiry
        if expiry is not None and not self._closing:
            delay = max(0.0, expiry - self.clock())
            self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.reassign()

    def _check_held(self) -> None:
        """Connect back-off (module docstring), for a query that found no free slot on
        a connected connection: raise the last connect error at once while the upstream
        is held back or a probe is under way and no connection is up; else let it go
        on (as the probe, once the hold has ended)."""
        if not self.connect_backoff:
            return
        for conn in self.state.connections:
            if conn.state.is_connected():
                return  # a working connection: wait for its slots as usual
        wait = self.hold.held_for(self.clock())
        if wait is None:
            return  # the probe
        self.counters.connect_backoff_failures += 1
        error = self.hold.error
        text = f"{error} ({held_text(wait)})"
        if isinstance(error, PinMismatch):  # the client's EDE names it as such
            raise PinMismatch(error.expected, error.seen)
        held: Exception = (TLSAuthenticationError(text)
                           if isinstance(error, TLSAuthenticationError) else NetworkError(text))
        held.__cause__ = error  # what it restates (``raise ... from`` sets none when compiled)
        raise held

    def connect_failed(self, error: Exception) -> None:
        """A connection could not be opened: hold the upstream back."""
        hold = self.hold
        hold.failed(error, self.clock())
        if not self.connect_backoff:
            log.debug("upstream %s: %s", self.name, error)
            return
        if hold.failures == 1:
            log.warning("upstream %s unreachable: %s; trying one connection every %.0f s, "
                        "queries meanwhile fail at once", self.name, error,
                        CONNECT_RETRY_INTERVAL)
        else:
            log.debug("upstream %s: connect failed again (%d in a row): %s", self.name,
                      hold.failures, error)

    def connect_succeeded(self) -> None:
        """A connection opened: the upstream is reachable (again)."""
        hold = self.hold
        if hold.failures and self.connect_backoff:
            log.info("upstream %s reachable again (after %d failed connects)", self.name,
                     hold.failures)
        hold.succeeded()

    def count_connect_error(self, error: Exception) -> None:
        if isinstance(error, PinMismatch):
            self.counters.pin_failures += 1
        if isinstance(error, TLSAuthenticationError):
            self.counters.tls_auth_failures += 1
        else:
            self.counters.connection_errors += 1

    def note_pin_report(self, mismatch: PinMismatch | None) -> None:
        """Count a report-only pin check; log a mismatch (expected and presented pins)."""
        if mismatch is None:
            self.counters.pin_matches_reported += 1
            return
        self.counters.pin_mismatches_reported += 1
        log.warning("upstream %s: %s (report-only: not enforced; the server was "
                    "authenticated by name)", self.name, mismatch)

    def note_opportunistic(self) -> None:
        self.counters.opportunistic_connections += 1
        if not self._warned_opportunistic:
            self._warned_opportunistic = True
            log.warning("upstream %s: opportunistic TLS, the server is NOT authenticated",
                        self.name)

    def statistics(self) -> dict[str, Any]:
        conns = self.state.connections
        return {
            "name": self.name,
            "transport": self.spec.transport,
            "connections": len(conns),
            "connections_opened": self.state.opened,
            "connections_reused": self.state.reused,
            "in_flight": sum(len(c.state.in_flight) for c in conns),
            "waiting": len(self.state.waiting),
            "connect_failures": self.hold.failures,
            **asdict(self.counters),
        }

    async def aclose(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.state.waiting:
            waiter = self.state.waiting.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(NetworkError(f"{self.name}: pool is closed"))
        conns = self.state.close_all()
        conns += [conn for conn in self.draining if conn not in conns]
        self.draining.clear()
        for conn in conns:
            conn.close("pool closed")
            if not conn.ready.done():
                conn.abort()
        tasks = [c._task for c in conns if c._task is not None]
        waits = [c.done for c in conns]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.close_grace)
            if pending:
                for conn in conns:
                    conn.abort()
                await asyncio.wait(pending, timeout=CLOSE_GRACE)
        for task in tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task


def held_text(wait: float) -> str:
    """What a held query is told about the hold left (``wait`` seconds, 0: a probe is
    under way), kept true at every value: tenths rounded down, never "0.0 s"."""
    if wait <= 0:
        return "retrying"
    tenths = math.floor(round(wait * 10, 6))  # round(): 2.0 - 1.9 is 0.1, not 0.09999
    if tenths < 1:
        return "retried within 0.1 s"
    return f"not retried for {tenths / 10:.1f} s"


def make_upstream(spec: UpstreamSpec, *, clock: Clock | None = None,
                  ) -> StreamUpstream | Any:
    """The adapter for ``spec``'s transport (a service's: with connect back-off)."""
    if spec.transport == "udp":
        from dnstls.net.udp_upstream import UdpUpstream

        return UdpUpstream(spec, clock=clock)
    return StreamUpstream(spec, clock=clock, connect_backoff=True)


class Pool:
    """All upstream adapters of one configuration; ``aclose()`` on shutdown/reload."""

    def __init__(self, specs: Sequence[UpstreamSpec], *, clock: Clock | None = None) -> None:
        self.specs = list(specs)
        self.upstreams = [make_upstream(spec, clock=clock) for spec in self.specs]

    def __repr__(self) -> str:
        return f"<Pool [{', '.join(u.name for u in self.upstreams)}]>"

    def statistics(self) -> dict[str, dict[str, Any]]:
        return {u.name: u.statistics() for u in self.upstreams}

    async def aclose(self) -> None:
        await asyncio.gather(*(u.aclose() for u in self.upstreams))


def build_forwarder(specs: Sequence[UpstreamSpec], *, clock: Clock | None = None,
                    metrics: Any = None, strategy: str = "round_robin",
                    ) -> tuple[Any, Pool]:
    """Build the upstream pool and the forwarder stage over it (call inside the loop)."""
    from dnstls.resolver.forward import Forwarder

    pool = Pool(specs, clock=clock)
    forwarder = Forwarder(pool.upstreams, strategy=strategy,
                          clock=clock or asyncio.get_running_loop().time, metrics=metrics)
    return forwarder, pool


__all__ = ["ConnectionDetails", "ConnectionLost", "Pool", "Reply", "StreamUpstream",
           "UpstreamConnection", "build_forwarder", "make_upstream"]
