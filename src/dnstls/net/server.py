"""DNS over TCP and over TLS listeners (RFC 7766, RFC 7858): the asyncio adapter.

Each accepted connection gets a :class:`StreamConnection`. The event loop runs the TLS
handshake under ``handshake_timeout`` (5 s; asyncio's default of 60 s is far too long),
so a client that opens TCP and never speaks TLS, or sends plaintext DNS to the TLS port,
costs a socket for at most that long. Admission (global and per-client bounds) is
decided when TCP accepts the connection, before any TLS work: a DoT listener's accepted
transports first get a :class:`_TlsGate`, which admits the peer and only then installs the
event loop's own TLS protocol (:func:`ssl_protocol_class`) with the
:class:`StreamConnection` inside it, synchronously in ``connection_made`` -- before the
transport starts reading, so the ClientHello reaches the TLS protocol (unlike
``loop.start_tls``, see docs/design.md). The handshake's outcome comes back through the
TLS protocol's waiter: a failed, timed-out or abandoned handshake releases its admission
and is counted by reason.

After that the adapter only moves bytes: it feeds :class:`~dnstls.proto.stream.StreamState`,
dispatches the messages it returns, writes answers as they become ready (out of order),
pauses reading when the state says so, and keeps one timer armed at the state's next
deadline (re-armed lazily: a timer that fires early just re-arms). Every decision about
limits and timeouts lives in ``proto/stream.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import typing
from collections import Counter

import dns.message

from dnstls.net.dnstap import endpoint
from dnstls.net.handler import QueryHandler
from dnstls.net.tls import ServerTLS
from dnstls.proto import framing
from dnstls.proto.acl import ALLOW_SNOOP, DENY, REFUSE, AccessControl
from dnstls.proto.admission import Admission
from dnstls.proto.answers import Rejection, Transport
from dnstls.proto.cachekey import WireQuery
from dnstls.proto.dnstap import DOT, TCP, ClientTap, Endpoint
from dnstls.proto.ratelimit import LogBudget
from dnstls.proto.stream import CloseReason, StreamLimits, StreamState

log = logging.getLogger("dnstls.net.server")
_pack_length = framing.LENGTH.pack  # the two-byte prefix of a framed message
_MAX_MESSAGE = framing.MAX_MESSAGE


class ListenerStats:
    """Plain counters for one transport's listeners (read by the metrics collector)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.closed: Counter[str] = Counter()
        self.handshakes: Counter[str] = Counter()  # by TLS version
        self.handshake_failures: Counter[str] = Counter()  # by reason
        self.resumed = 0
        self.dropped: Counter[str] = Counter()

    def statistics(self) -> dict[str, object]:
        return {"accepted": self.accepted, "open": self.open, "closed": dict(self.closed),
                "handshakes": dict(self.handshakes),
                "handshake_failures": dict(self.handshake_failures),
                "resumed": self.resumed, "dropped": dict(self.dropped)}


class StreamConnection(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, listener: StreamListener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.raw: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.state: StreamState | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.reason: CloseReason | None = None
        self._admitted = False
        #: RD=0 queries answered as any other (access control's allow_snoop, or no
        #: access control); False: local data or REFUSED (allow). Decided at accept.
        self.snoop = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._reading = True
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._write_paused = False  # between pause_writing() and resume_writing()
        self._high_water = 256 << 10  # set from the limits in _ready
        self._sslobj: ssl.SSLObject | None = None  # kept with a session cache only
        self.local: Endpoint | None = None  # this end's address, for dnstap only

    def __repr__(self) -> str:
        state = self.state
        return (f"<StreamConnection {self.listener.transport.value} {self.peer} "
                f"{'closed' if self.closed else 'open'} in_flight="
                f"{state.in_flight if state else 0} queries={state.queries if state else 0}>")

    # -- connection setup --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = typing.cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        listener = self.listener
        self.raw = transport
        if not self._admitted:  # plain TCP; a DoT connection was admitted by _TlsGate
            self.peer = _peer(transport)
            action = _admit(listener, self.peer[0], transport)
            if action == _CLOSED:
                self.closed = True
                self.reason = CloseReason.CONNECTION_LIMIT
                return
            if action == REFUSE:  # this protocol hands over to one that refuses
                self.closed = True
                conn = RefusedConnection(listener)
                conn.peer = self.peer
                conn._admitted = True
                transport.set_protocol(conn)
                conn.connection_made(transport)
                return
            self.snoop = action == ALLOW_SNOOP
            self._admitted = True
        listener.connections.add(self)
        listener.stats.open += 1
        # No TCP_NODELAY here: uvloop and asyncio set it on every TCP transport they
        # make (tests/integration/test_serve.py::test_accepted_sockets_are_nodelay); ours
        # went through uvloop's PseudoSocket, which builds a socket.socket for it: three
        # system calls and a Python object per connection.
        if listener.tls is not None:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None:
                listener.stats.handshakes[sslobj.version() or "unknown"] += 1
                if sslobj.session_reused:
                    listener.stats.resumed += 1
                if listener.tls.session_cache:
                    self._sslobj = sslobj
        self._ready(transport)

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        """The TLS protocol's waiter: on a failed handshake, count it and release."""
        if self.raw is not None:  # connection_made ran: the handshake completed
            return
        exc = None if waiter.cancelled() else waiter.exception()
        listener = self.listener
        if self._admitted:  # first: nothing below may keep the client's slot taken
            self._admitted = False
            assert self.peer is not None
            listener.admission.release(self.peer[0])
        listener.stats.handshake_failures[handshake_failure_reason(exc)] += 1

    def _ready(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.listener.tap is not None:
            self.local = endpoint(transport.get_extra_info("sockname"))
        limits = self.listener.limits
        self._high_water = min(limits.max_pending_output // 2, 256 << 10)
        transport.set_write_buffer_limits(high=self._high_water)
        self.state = StreamState(limits, self.loop.time())
        self._arm()

    # -- input -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is None or self.closed:
            return
        now = self.loop.time()
        wire = state.take_one(data, now)
        if wire is not None:
            # One whole query, nothing buffered or held back: the read of a client that
            # asks one query at a time (500 such connections: conns500), or of one
            # whose other queries are being forwarded. What feed + _dispatch + _flush +
            # _settle do for it, without their calls.
            listener = self.listener
            # RD=0 from a client of "allow": _norec (its RD bit: wire[2] & 1)
            routed = (listener.handler.route(wire, listener.transport)
                      if len(wire) < 3 or wire[2] & 1 or self.snoop else self._norec(wire))
            if type(routed) is bytes:
                tap = listener.tap
                if tap is not None:  # dnstap: the query and its answer from the cache
                    self._tap_both(tap, wire, routed)
                size = len(routed)
                framed = _pack_length(size) + routed if size <= _MAX_MESSAGE \
                    else framing.encode(routed)
                transport = self.transport
                if (self._out or self._write_paused or transport is None
                        or transport.is_closing()):
                    self._out.append(framed)  # the ordinary flush decides
                    state.answered_many(1, now)
                    if not self._flush_scheduled:
                        self._flush()
                        if self.closed:
                            return
                else:
                    transport.write(framed)  # one item: one TLS record
                    state.answered_many(1, now)
                # _settle: reading stays allowed (in flight as before this read, under
                # the bound; no backlog; not stopped); the timer moves only if the
                # deadline is earlier
                if not self._reading:
                    self._flow()
                deadline = state.deadline()
                if deadline is not None and (self._timer is None
                                             or deadline < self._timer_at):
                    self._arm()
                return
            # not from the cache: started as _dispatch starts it, then the common end
            if not self._start(wire, routed, [wire]) and self.closed:
                return
            if self._out and not self._flush_scheduled:
                self._flush()
                if self.closed:
                    return
        else:
            messages = state.feed(data, now)
            if messages:
                self._dispatch(messages, now)
                if self.closed:
                    return
        if state.stop_reading and state.finished:  # finished implies stop_reading
            self.close(self._end_reason(state))
            return
        self._settle(state)

    def _dispatch(self, messages: list[bytes], now: float) -> None:
        """Answer cache hits at once, start the rest.

        The answers this produces at once leave before it returns, in one write (a TLS
        record each), unless a flush is already scheduled for this loop iteration: then
        they go with it. No call_soon per read: with one query per read (conns500) the
        loop callback was a large part of the read's Python.
        """
        handler = self.listener.handler
        route = handler.route
        answer_exact = handler.answer_exact
        transport = self.listener.transport
        state = self.state
        assert state is not None
        pack = _pack_length
        snoop = self.snoop
        tap = self.listener.tap
        # Answers produced by this call and not yet handed to the transport: past the
        # write high-water mark they are flushed at once, so that the output limit
        # judges them (a pipelined read answered from the cache can be thousands of
        # answers; the in-flight bound does not hold them back, each slot frees at once).
        queued = 0
        while messages:
            ready = 0
            index = 0
            count = len(messages)
            runs = True
            while index < count:
                # Exact repeats of queries answered from the cache (most of a busy
                # connection's): answered, framed and queued by one call per run; after
                # a call that answered none, route() alone for the rest of the pass.
                if runs:
                    stop, size = answer_exact(messages, index, transport, self._out)
                    if stop == index:
                        runs = False
                    else:
                        ready += stop - index
                        queued += size
                        index = stop
                        if index == count:
                            break
                wire = messages[index]
                index += 1
                # (answer_exact never answers RD=0: QueryHandler.route does not memoise it)
                routed = (route(wire, transport) if len(wire) < 3 or wire[2] & 1 or snoop
                          else self._norec(wire))
                if type(routed) is bytes:
                    if tap is not None:  # dnstap: the query and its answer
                        self._tap_both(tap, wire, routed)
                    # framing.encode inline (an answer is never empty; encode itself
                    # refuses one past 65535 bytes)
                    size = len(routed)
                    self._out.append(pack(size) + routed if size <= _MAX_MESSAGE
                                     else framing.encode(routed))
                    queued += size
                    ready += 1
                    continue
                if not self._start(wire, routed, messages):
                    if self.closed:
                        return
                    break
            if not ready:
                break
            if queued > self._high_water:
                queued = 0
                self._flush()  # closes the connection if the output limit is passed
                if self.closed:
                    return
            # the room the answers free in the in-flight bound: backlog to answer next
            messages = state.answered_many(ready, now)
        if self._out and not self._flush_scheduled:
            self._flush()

    def _norec(self, wire: bytes) -> typing.Any:
        """What ``QueryHandler.route`` returns, for a query with RD=0 from a client whose
        access-control action is ``allow`` (proto/acl.py): its REFUSED answer (bytes,
        counted), or route's own result when local data answers it."""
        listener = self.listener
        handler = listener.handler
        refusal = handler.refuse_norec(wire, listener.transport)
        if refusal is None:
            return handler.route(wire, listener.transport)
        if listener.acl is not None:
            listener.acl.norec_refused[listener.transport.value] += 1
        return refusal  # (bytes: logged to dnstap as any answer of route's)

    def _start(self, wire: bytes, routed: typing.Any, messages: list[bytes]) -> bool:
        """A dispatched message that the cache did not answer (``routed`` is what
        ``QueryHandler.route`` returned for it, not bytes: a WireQuery or None; typed
        Any, not cast per forwarded query): forward it, or parse it and answer or
        reject it. False when the rest of ``messages`` must not be dispatched (a message
        without a readable header stops the stream; or the connection closed)."""
        handler = self.listener.handler
        transport = self.listener.transport
        if routed is not None:
            if not handler.forward_wire(routed, wire, transport, self._wire_answered):
                task = self.loop.create_task(self._answer_wire(routed, wire))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            return True
        tap = self.listener.tap
        if tap is not None:
            self._tap_query(tap, wire)
        parsed = handler.parse(wire, transport)
        if isinstance(parsed, Rejection):
            if parsed.fatal:
                # no readable header: nothing more on this stream can be trusted;
                # answer what came before it, then close (RFC 1035 §4.1.1)
                self.listener.stats.dropped["no_header"] += 1
                # this message's position: an equal one before it would have
                # been rejected the same way (no enumerate() on the hot path)
                state = self.state
                assert state is not None
                state.abandon(len(messages) - messages.index(wire))
                return False
            self._rejected(parsed)
            return not self.closed
        task = self.loop.create_task(self._answer(parsed))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    def _tap_both(self, tap: ClientTap, wire: bytes, answer: bytes) -> None:
        """dnstap: a query answered at once (cache, local data, a refusal)."""
        self._tap_query(tap, wire)
        self._tap_response(tap, answer)

    def _tap_query(self, tap: ClientTap, wire: bytes) -> None:
        if tap.log_client_query:
            tap.client_query(wire, self.listener.dnstap_protocol, self.peer, self.local)

    def _tap_response(self, tap: ClientTap, wire: bytes) -> None:
        if tap.log_client_response:
            tap.client_response(wire, self.listener.dnstap_protocol, self.peer, self.local)

    def _rejected(self, rejection: Rejection) -> None:
        if rejection.wire is not None:
            self._write(rejection.wire)
            tap = self.listener.tap
            if tap is not None:
                self._tap_response(tap, rejection.wire)
        else:
            self.listener.stats.dropped["qr_set"] += 1
        self._answered()

    async def _answer(self, query: dns.message.Message) -> None:
        wire = await self.listener.handler.answer(query, self.listener.transport, self.peer)
        if not self.closed:
            self._write(wire)
            tap = self.listener.tap
            if tap is not None:
                self._tap_response(tap, wire)
            self._answered()

    async def _answer_wire(self, query: WireQuery, wire: bytes) -> None:
        out = await self.listener.handler.answer_wire(query, wire, self.listener.transport)
        if not self.closed:
            self._write(out)
            self._answered()

    def _wire_answered(self, out: bytes) -> None:
        """A forwarded query's answer, without a task (QueryHandler.forward_wire):
        :meth:`_write` and :meth:`_answered`, the write inline (once per forwarded
        query: two frames less)."""
        if self.closed:
            return
        size = len(out)
        # framing.encode inline (it refuses an empty or oversized message: so does this)
        self._out.append(_pack_length(size) + out if 0 < size <= _MAX_MESSAGE
                         else framing.encode(out))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        self._answered()

    def _answered(self) -> None:
        state = self.state
        if state is None or self.closed:
            return
        now = self.loop.time()
        more = state.answered_many(1, now)  # what answered(now) returns, one call less
        if more:
            self._dispatch(more, now)
            if self.closed:
                return
        if state.stop_reading and state.finished:  # finished implies stop_reading
            self.close(self._end_reason(state))
            return
        self._settle(state)

    def _end_reason(self, state: StreamState) -> CloseReason:
        """Why a connection that has answered everything it will answer is closed."""
        if state.broken is not None:
            return state.broken
        if self.listener.closing:
            return CloseReason.SHUTDOWN
        limit = state.limits.max_queries
        if limit and state.queries >= limit:
            return CloseReason.QUERY_LIMIT
        return CloseReason.PEER  # half-closed by the client

    def _settle(self, state: StreamState) -> None:
        """After a read or an answer: :meth:`_flow` and :meth:`_arm` in one call, each
        only past its cheap check (nothing to change is the common case)."""
        if state.reading_allowed != self._reading:
            self._flow()
        deadline = state.deadline()
        if deadline is not None and (self._timer is None or deadline < self._timer_at):
            self._arm()

    def _flow(self) -> None:
        state = self.state
        transport = self.transport
        if state is None or transport is None or self.closed:
            return
        if state.reading_allowed != self._reading:
            self._reading = state.reading_allowed
            if self._reading:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # -- output ------------------------------------------------------------------------
    def _write(self, wire: bytes, *, framed: bool = False) -> None:
        """Queue an answer; everything queued in one loop iteration goes out in one
        write call (one send) -- answers completing together are common."""
        if self.closed:
            return
        self._out.append(wire if framed else framing.encode(wire))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # is_closing: lost, app's connection_lost not yet run (no log flood)
        # One framed message per item: over TLS each becomes its own record (the SSL
        # layer encrypts every item separately) and all of them go out in one send.
        # Never several messages in one record: Stubby/getdns reads one message per
        # record and leaves the rest buffered in OpenSSL unseen until more data comes
        # -- with answers batched into one record it lost 30-50 % of burst queries.
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)
        # The buffer can pass the output limit only above the write high-water mark
        # (at most half the limit), and the transport calls pause_writing() from the
        # write that crosses that mark: while not paused there is nothing to check.
        if self._write_paused and not self.closed:
            state = self.state
            if state is not None and state.output_exceeded(transport.get_write_buffer_size()):
                _log_closing(self.listener, logging.WARNING,
                             self.peer[0] if self.peer else "?",
                             "client does not read its answers")
                self.close(CloseReason.OUTPUT_LIMIT, abort=True)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.state is not None:
            self.state.write_blocked(self.loop.time())
            self._arm()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.state is not None:
            self.state.write_unblocked()

    # -- timers ------------------------------------------------------------------------
    def _arm(self) -> None:
        state = self.state
        if state is None or self.closed:
            return
        deadline = state.deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # fires early and re-arms then
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        state = self.state
        if state is None or self.closed:
            return
        reason = state.expired(self.loop.time())
        if reason is None:
            self._arm()
            return
        if reason is not CloseReason.IDLE:
            _log_closing(self.listener, logging.INFO, self.peer[0] if self.peer else "?",
                         reason.value)
        self.close(reason, abort=reason is CloseReason.WRITE_TIMEOUT)

    # -- closing -----------------------------------------------------------------------
    def close(self, reason: CloseReason, *, abort: bool = False) -> None:
        if self.closed:
            return
        transport = self.transport or self.raw
        if not abort:
            self._flush()  # answers queued in this iteration go out before the close
        self._finish(reason)
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()

    def shutdown(self) -> None:
        """Stop reading; close once everything received so far is answered."""
        state = self.state
        if state is None:
            self.close(CloseReason.SHUTDOWN)
            return
        state.shutdown()
        if state.finished:
            self.close(CloseReason.SHUTDOWN)
        else:
            self._flow()

    def connection_lost(self, exc: Exception | None) -> None:
        sslobj = self._sslobj
        if sslobj is not None:
            self._sslobj = None
            tls = self.listener.tls
            if not self.closed and tls is not None:
                # The client ended the connection without close_notify (or before we
                # answered its own): OpenSSL drops a cached session whose connection
                # is freed before the server's close_notify, so record it as sent
                # (nothing goes out: the transport is gone). TLS >= 1.1 lets such a
                # session resume; a fatal alert has removed it already.
                tls.keep_session(sslobj)
        self._finish(CloseReason.PEER)
        for task in list(self.tasks):
            task.cancel()

    def eof_received(self) -> bool | None:
        state = self.state
        if self.listener.tls is not None:  # TLS has no half-close: the transport closes
            return None
        if state is not None and state.pending:
            state.shutdown()  # half-close: answer what was asked, then close
            return True
        return None

    def _finish(self, reason: CloseReason) -> None:
        if self.closed:
            if self.reason is None:
                self.reason = reason
            return
        self.closed = True
        self.reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        listener = self.listener
        listener.stats.closed[reason.value] += 1
        if self._admitted:
            self._admitted = False
            listener.stats.open -= 1
            listener.connections.discard(self)
            if not listener.connections:
                listener.emptied.set()
            assert self.peer is not None
            listener.admission.release(self.peer[0])


class RefusedConnection(StreamConnection):
    """A connection from a client that access control refuses (decided once, at
    accept): every query is answered REFUSED with EDE 18 as it is read
    (:meth:`QueryHandler.refuse`) -- nothing is resolved, cached or forwarded. Framing,
    limits and timers are those of every connection; the allowed ones' read path
    (:meth:`StreamConnection.data_received`) does not test for this at all."""

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is None or self.closed:
            return
        now = self.loop.time()
        listener = self.listener
        transport = listener.transport
        refuse = listener.handler.refuse
        counts = listener.acl.refused if listener.acl is not None else None
        messages = state.feed(data, now)
        while messages:
            answered = 0
            for wire in messages:
                rejection = refuse(wire, transport)
                if rejection.fatal:  # no readable header: as in _start
                    listener.stats.dropped["no_header"] += 1
                    state.abandon(len(messages) - answered)
                    break
                answered += 1
                if rejection.wire is None:
                    listener.stats.dropped["qr_set"] += 1
                    continue
                if counts is not None:
                    counts[transport.value] += 1
                self._out.append(framing.encode(rejection.wire))
            self._flush()  # one batch (at most max_in_flight answers): the limits judge it
            if self.closed:
                return
            messages = state.answered_many(answered, now)
        if state.stop_reading and state.finished:
            self.close(self._end_reason(state))
            return
        self._settle(state)


def _log_closing(listener: StreamListener, level: int, client: str, why: str) -> None:
    """A connection-closing log line, within the listener's budget (proto/ratelimit.py)."""
    dropped = listener.log_budget.allow(listener.loop.time())
    if dropped is None:
        return
    if dropped:
        log.log(level, "closing connection from %s: %s (%d similar messages suppressed)",
                client, why, dropped)
    else:
        log.log(level, "closing connection from %s: %s", client, why)


def _peer(transport: asyncio.BaseTransport) -> tuple[str, int]:
    peer = transport.get_extra_info("peername")
    return (peer[0], peer[1]) if peer else ("?", 0)


#: What :func:`_admit` returns for a connection it closed.
_CLOSED = -1


def _admit(listener: StreamListener, client: str, transport: asyncio.BaseTransport) -> int:
    """Access control, then admission, for a connection just accepted: the access
    control action (ALLOW, ALLOW_SNOOP or REFUSE) of an admitted connection, or _CLOSED
    for one that was aborted and counted (``deny``, or over a connection limit). No
    access control (``acl`` None): ALLOW_SNOOP, every query answered as any other."""
    stats = listener.stats
    stats.accepted += 1
    acl = listener.acl
    action = ALLOW_SNOOP
    if acl is not None:
        action = acl.check(client)
        if action == DENY:
            # Not logged but at debug level (a policy, not a fault; the metrics count
            # it): a scanner of a public port would otherwise fill the log budget.
            acl.denied[listener.transport.value] += 1
            stats.closed[CloseReason.ACCESS_DENIED.value] += 1
            log.debug("closing connection from %s: access denied", client)
            typing.cast(asyncio.Transport, transport).abort()
            return _CLOSED
    refusal = listener.admission.admit(client)
    if refusal is None:
        return action
    stats.closed[CloseReason.CONNECTION_LIMIT.value] += 1
    _log_closing(listener, logging.WARNING, client, refusal)
    typing.cast(asyncio.Transport, transport).abort()  # uvloop's are not subclasses
    return _CLOSED


def ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> type[asyncio.BaseProtocol]:
    """The TLS protocol ``loop.create_server(ssl=...)`` itself would wrap a connection in."""
    try:
        import uvloop
        from uvloop.loop import SSLProtocol as UvSSLProtocol  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    else:
        if isinstance(loop, uvloop.Loop):
            return typing.cast(type[asyncio.BaseProtocol], UvSSLProtocol)
    from asyncio.sslproto import SSLProtocol
    return SSLProtocol


def handshake_failure_reason(exc: BaseException | None) -> str:
    """The metric label of a failed TLS handshake (a bounded set: OpenSSL's reasons).

    An SSLError's ``reason`` may be None or missing (typeshed says ``str``, which
    compiled code checks): e.g. the SSLZeroReturnError of a client that sends
    close_notify mid-handshake, as kdig does when the server's pin does not match."""
    if isinstance(exc, ssl.SSLZeroReturnError):
        return "peer_closed"
    if isinstance(exc, ssl.SSLError):
        reason: object = getattr(exc, "reason", None)
        return reason.lower() if isinstance(reason, str) and reason else "tls_error"
    if isinstance(exc, ConnectionAbortedError):  # the TLS protocol's handshake timeout
        return "timeout"
    return "peer_closed"  # EOF, reset or close before the handshake completed


class _TlsGate(asyncio.Protocol):
    """A DoT listener's accepted TCP connection before TLS: admission, then TLS."""

    __slots__ = ("listener",)

    def __init__(self, listener: StreamListener) -> None:
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        peer = _peer(transport)
        action = _admit(listener, peer[0], transport)
        if action == _CLOSED:
            return
        tls = listener.tls
        assert tls is not None
        loop = listener.loop
        # refused: the handshake is done all the same (as Unbound), then every query
        # gets REFUSED; the decision is kept for the connection's life
        conn = RefusedConnection(listener) if action == REFUSE else StreamConnection(listener)
        conn.snoop = action == ALLOW_SNOOP
        conn.peer = peer
        conn._admitted = True
        waiter: asyncio.Future[None] = loop.create_future()
        protocol = listener.ssl_protocol(
            loop, conn, tls.context, waiter, server_side=True, server_hostname=None,
            ssl_handshake_timeout=listener.handshake_timeout)
        waiter.add_done_callback(conn._handshake_done)
        # Synchronously, before the transport starts reading: the ClientHello goes to
        # the TLS protocol (this is where loop.start_tls was too late).
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class StreamListener:
    """All DoT (or all plain TCP) sockets of a service, sharing limits and counters."""

    def __init__(self, handler: QueryHandler, *, transport: Transport,
                 tls: ServerTLS | None, limits: StreamLimits, admission: Admission,
                 handshake_timeout: float = 5.0, acl: AccessControl | None = None) -> None:
        if (transport is Transport.TLS) != (tls is not None):
            raise ValueError("a TLS listener needs a ServerTLS, a TCP listener none")
        self.handler = handler
        self.transport = transport
        self.tls = tls
        self.limits = limits
        self.admission = admission
        self.acl = acl  # None: every client allowed (allow_snoop: RD=0 from the cache too)
        self.handshake_timeout = handshake_timeout
        self.stats = ListenerStats()
        self.connections: set[StreamConnection] = set()
        self.emptied = asyncio.Event()  # set whenever the last connection closes
        self.servers: list[asyncio.Server] = []
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self.ssl_protocol: typing.Any = ssl_protocol_class(self.loop)
        self.log_budget = LogBudget()  # connection-closing lines: 10 per 5 s, then counted
        #: dnstap (net/dnstap.py), set by the service: client queries and responses of
        #: the message path (the handler then takes no other) are logged to it
        self.tap: ClientTap | None = None
        self.dnstap_protocol = DOT if transport is Transport.TLS else TCP

    async def listen(self, host: str, port: int, *, reuse_port: bool = False,
                     ) -> tuple[str, int]:
        # TLS is not given to create_server: each accepted transport gets a _TlsGate,
        # which admits the peer before it installs the TLS protocol (module docstring).
        # (``stats.accepted`` counts every accepted TCP connection, at accept.)
        protocol: type[StreamConnection | _TlsGate] = (
            StreamConnection if self.tls is None else _TlsGate)
        server = await self.loop.create_server(
            functools.partial(protocol, self), host, port, reuse_address=True,
            reuse_port=reuse_port or None, backlog=1024)
        self.servers.append(server)
        # uvloop's Server.sockets is a list, typeshed's a tuple (which compiled code checks)
        sockname = typing.cast(typing.Any, server).sockets[0].getsockname()
        return sockname[0], sockname[1]

    def stop_accepting(self) -> None:
        self.closing = True
        for server in self.servers:
            server.close()

    async def drain(self, grace: float) -> int:
        """Answer what was received within ``grace`` seconds; abort the rest.

        Returns the number of connections that had to be aborted with queries pending.
        """
        self.stop_accepting()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            self.emptied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.emptied.wait(), grace)
        aborted = 0
        for conn in list(self.connections):
            if conn.state is not None and conn.state.pending:
                aborted += 1
            conn.close(CloseReason.SHUTDOWN, abort=True)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        return aborted

    def statistics(self) -> dict[str, object]:
        return {**self.stats.statistics(), "connections": len(self.connections)}
