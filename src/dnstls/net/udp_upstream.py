"""Plain DNS over UDP to an upstream, with the RFC 5452 defences and TCP fallback.

Every query is sent from a *connected* UDP socket that no other query uses while it is
in flight, so the kernel itself drops datagrams from any other address or port (RFC
5452 §4.5/§9.1: accept only from the address and port queried). The port is the one the
OS picks on connect: Linux (since 2.6.24, RFC 6056 §3.3.1-style), the BSDs and Windows
choose ephemeral UDP ports at random across their ephemeral range, which is the port
randomisation RFC 5452 §4.5 asks for -- choosing ports in user space would add
bind-retry loops without adding entropy.

**The port pool.** Opening, connecting, registering and closing a socket per query cost
~30 µs of a ~220 µs forwarded query end to end (socket, connect, two epoll_ctl and close
system calls, measured with perf). So a socket is kept after a clean exchange and used
again, under a bounded policy that keeps the port set changing:

* one query at a time per socket; a query takes an idle socket **chosen at random**
  (or opens a new one when none is idle -- the pool grows to the concurrency);
* a socket serves at most ``PORT_USES`` (16) queries and lives at most ``PORT_AGE``
  (1 s) -- then it is closed and a later query opens a new one, so every port is
  replaced within a second; idle sockets past their age are closed by a sweep;
* a socket is closed at once, never reused, after a timeout, an error (ICMP
  unreachable, ...), any datagram that did not match its query (wrong ID or question:
  someone knows the port), or any datagram arriving while it is idle;
* at most ``MAX_IDLE`` (512) sockets are kept idle.

Compared with a socket per query, a port is therefore open for up to a second (idle
between queries) instead of one round trip, and up to 16 consecutive queries share it;
each still has its own random ID, and an off-path forger must still match port, ID and
question. kresd (5.x) opens a socket per outgoing query and closes it at the end;
Unbound picks a random port per query from ``outgoing-range`` (sharing a port already
open for another outstanding query, demultiplexed by ID) and closes a port when its
last outstanding query ends.

The message ID comes from the OS's CSPRNG
(``os.urandom``), read 4 KiB at a time: one ``getrandom`` call per 2,048 IDs instead of
one per query through ``secrets.randbelow`` (0.4 µs instead of 2.1 µs per ID, timeit;
py-spy had put it at ~4 % of a forwarded query). The buffer is dropped in a forked
child, so worker processes never share IDs.

A datagram is accepted only if it comes from the queried address/port, has QR=1, our
ID and our question (name case-insensitive, type, class). Anything else is counted as
``forged_responses`` and ignored: we keep listening until the deadline, because a
forger's packet must not make us give up on the real answer. A datagram that matches
(address, port, ID, QR, question) but whose body does not parse ends the attempt at
once with :class:`~dnstls.errors.MalformedAnswer` (``malformed_responses``), as Unbound
counts a reply that fails to parse as a failed attempt and moves on: an off-path forger
who can match all that could as well send a well-formed REFUSED, which moves the query
on too, so waiting would buy no safety. (The wire path, :meth:`UdpUpstream.start_wire`
and :meth:`UdpUpstream.exchange_wire`, checks only the header and question here; the
forwarder has the body checked, with the same outcome.)

TC=1 (RFC 7766 §5 / RFC 1035 §4.2.1): the query is repeated over TCP to the same
address and port, through a pooled TCP upstream.
"""

from __future__ import annotations

import _socket
import asyncio
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message

from dnstls.errors import MalformedAnswer, NetworkError, QueryTimeout
from dnstls.net.pool import (
    ConnectionDetails,
    DeadlineExpired,
    Reply,
    StreamUpstream,
    WireCallback,
    expire,
    relay,
)
from dnstls.proto.upstream import (
    WIRE_FLAGS,
    check_response,
    check_response_wire,
    prepare_query,
    prepare_query_wire,
    question_key,
)
from dnstls.upstreams import UpstreamSpec

log = logging.getLogger("dnstls.net.udp_upstream")

Clock = Callable[[], float]
T = TypeVar("T")
_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux: non-blocking from socket()
_DGRAM = socket.SOCK_DGRAM | _NONBLOCK


#: The port pool's policy (module docstring): queries per socket, seconds a socket
#: lives, idle sockets kept.
PORT_USES = 16
PORT_AGE = 1.0
MAX_IDLE = 512
#: start_wire's deadline queue is swept at least this often (seconds) while not empty,
#: which bounds how long answered exchanges wait in it; deadlines themselves are exact.
DEADLINE_SWEEP = 0.25
_CLOCK_SLACK = 0.001  # a timer may fire up to the loop's clock resolution early
_HEAD = struct.Struct("!HHHHHH")

_RANDOM_BATCH = 4096
_random: list[int] = []  # unused 16-bit values of CSPRNG bytes, taken from the end


def _query_id() -> int:
    """A uniformly random 16-bit message ID from the OS's CSPRNG (RFC 5452 §9.2): two
    bytes of an ``os.urandom`` batch each (a list of ints popped from the end: one C call
    per ID instead of indexing and slicing a bytearray)."""
    if not _random:
        _random.extend(memoryview(os.urandom(_RANDOM_BATCH)).cast("H"))
    return _random.pop()


def _forget_random() -> None:
    _random.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_random)


class _Port:
    """One connected socket of the pool, its reader registered for its whole life.
    ``future``/``accept`` belong to the one exchange using it (None while idle);
    ``clean`` turns False for good on anything but the expected answer."""

    __slots__ = ("accept", "born", "clean", "fd", "future", "sock", "uses")

    def __init__(self, sock: Any, born: float) -> None:
        self.sock = sock
        self.fd: int = sock.fileno()
        self.uses = 0
        self.born = born
        self.future: asyncio.Future[Any] | _Exchange | None = None
        self.accept: Callable[[bytes], Any] | None = None
        self.clean = True


class _Exchange:
    """One query of :meth:`UdpUpstream.start_wire`: the port's waiter (like a future:
    ``done``, ``set_result``, ``set_exception``; only the first outcome counts), the
    check of a datagram (:meth:`accept`) and the entry of the deadline queue. Once
    finished it drops its references, so an entry waiting for the sweep is small."""

    __slots__ = ("callback", "deadline", "do", "finished", "flags", "payload", "port", "qid",
                 "question", "timer", "upstream")

    # Set by UdpUpstream.start_wire, which makes it (no __init__: its frame and the
    # call's argument passing were ~0.5 % of a forwarded query, bench_miss_ir.py).
    upstream: UdpUpstream | None
    port: _Port | None
    qid: int
    question: bytes
    deadline: float
    flags: int
    payload: int
    do: bool
    callback: WireCallback | None
    finished: bool
    timer: asyncio.TimerHandle | None

    def done(self) -> bool:
        return self.finished

    def accept(self, data: bytes) -> bytes | None:
        """``data`` if it answers this query (our ID, QR=1, our question), else None:
        what ``exchange_wire``'s check accepts (the ID, then
        :func:`check_response_wire`), inline, once per datagram; a unit test compares
        the two."""
        question = self.question
        end = 12 + len(question)
        if (len(data) < end or (data[0] << 8 | data[1]) != self.qid or not data[2] & 0x80
                or data[4] or data[5] != 1):
            return None
        # the usual answer echoes the question's bytes as sent (lower case): one slice
        # and compare; otherwise the name compared case-insensitively, as
        # check_response_wire does (lower() leaves label lengths, all < 64, alone)
        if data[12:end] != question:
            split = end - 4
            if data[12:split].lower() != question[:-4] or data[split:end] != question[-4:]:
                return None
        return data

    def set_result(self, result: tuple[bytes, int]) -> None:
        if not self.finished:
            self._finish(result[0], None)

    def set_exception(self, exc: BaseException) -> None:
        if not self.finished:
            self._finish(None, exc)

    def _finish(self, data: bytes | None, exc: BaseException | None) -> None:
        # Runs the whole answer path inside the socket's reader callback (or the
        # deadline sweep): a bug there must not escape into the loop (as in pool._WireQuery).
        self.finished = True
        upstream = self.upstream
        port = self.port
        callback = self.callback
        assert upstream is not None and port is not None and callback is not None
        self.upstream = self.port = self.callback = None
        if self.timer is not None:
            self.timer.cancel()
        due = upstream._due
        while due and due[0].finished:  # answers come mostly in order: keep the queue
            due.popleft()               # to what is in flight, not DEADLINE_SWEEP's worth
        try:
            if data is None:
                port.clean = False
                upstream._give_back(port)
                callback(None, upstream._error(exc or RuntimeError("no result")))
                return
            upstream._give_back(port)
            upstream.counters["responses"] += 1
            if data[2] & 0x02:  # TC=1: ask again over TCP (RFC 7766 §5)
                upstream.counters["truncated"] += 1
                task = asyncio.ensure_future(upstream.tcp.exchange_wire(
                    self.question, deadline=self.deadline, flags=self.flags,
                    payload=self.payload, do=self.do))
                task.add_done_callback(relay(callback))
                return
            callback(data, None)
        except Exception:
            log.exception("internal error while answering a forwarded query")


class UdpUpstream:
    """A ``udp://`` upstream: one socket per query, TCP on truncation."""

    def __init__(self, spec: UpstreamSpec, *, clock: Clock | None = None,
                 port_uses: int = PORT_USES, port_age: float = PORT_AGE,
                 max_idle: int = MAX_IDLE) -> None:
        if spec.transport != "udp":
            raise ValueError(f"{spec.name} is not a UDP upstream")
        self.spec = spec
        self.name = spec.name
        self.timeout = spec.query_timeout
        self.loop = asyncio.get_running_loop()
        self.clock: Clock = clock or self.loop.time
        self._tcp: StreamUpstream | None = None
        self._family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
        self._address = (spec.address, spec.port)
        self.port_uses = port_uses
        self.port_age = port_age
        self.max_idle = max_idle
        self._idle: list[_Port] = []
        self._busy: set[_Port] = set()  # in use by an exchange: aclose closes them too
        self._sweep_at: asyncio.TimerHandle | None = None
        self._due: deque[_Exchange] = deque()  # start_wire's exchanges, deadline order
        self._due_timer: asyncio.TimerHandle | None = None
        self._opt_tails: dict[int, bytes] = {}
        self._closed = False
        #: Ask again over TCP after TC=1 (the message path: :meth:`exchange`,
        #: :meth:`exchange_detailed`); off, the truncated answer is the answer (kdig's
        #: ``+ignore``, for ``dnstls query``). The forwarders leave it on.
        self.tcp_fallback = True
        #: EDNS options (wire form) added to every query of the message path (and of its
        #: TCP retry): a client's own, see :attr:`StreamUpstream.extra_options`.
        self.extra_options = b""
        #: The EDNS version of those queries; None: no OPT (see StreamUpstream's).
        self.edns_version: int | None = 0
        self.counters: dict[str, int] = {"queries_sent": 0, "responses": 0,
                                         "forged_responses": 0, "timeouts": 0,
                                         "malformed_responses": 0,
                                         "truncated": 0, "connection_errors": 0,
                                         "sockets_opened": 0, "stray_datagrams": 0}

    def __repr__(self) -> str:
        return f"<UdpUpstream {self.name}>"

    @property
    def tcp(self) -> StreamUpstream:
        """The TCP upstream used after TC=1 (same address and port), made on first use."""
        if self._tcp is None:
            self._tcp = StreamUpstream(replace(self.spec, transport="tcp", name=""),
                                       clock=self.clock)
            self._tcp.extra_options = self.extra_options
            self._tcp.edns_version = self.edns_version
        return self._tcp

    async def exchange(self, query: dns.message.Message, *, deadline: float,
                       ) -> dns.message.Message:
        response, _, _ = await self._exchange_udp(query, deadline)
        if response.flags & dns.flags.TC and self.tcp_fallback:
            self.counters["truncated"] += 1
            return await self.tcp.exchange(query, deadline=deadline)
        return response

    async def exchange_detailed(self, query: dns.message.Message, *, deadline: float,
                                ) -> Reply:
        """Like :meth:`exchange`, with size, RTT and the transport that answered."""
        response, size, rtt = await self._exchange_udp(query, deadline)
        if response.flags & dns.flags.TC and self.tcp_fallback:
            self.counters["truncated"] += 1
            return await self.tcp.exchange_detailed(query, deadline=deadline)
        return Reply(response, size, rtt,
                     ConnectionDetails("udp", self.spec.address, self.spec.port))

    async def exchange_wire(self, question: bytes, *, deadline: float, flags: int,
                            payload: int, do: bool) -> bytes:
        """The wire-level path: a checked response (header and question) as bytes."""
        qid = _query_id()
        wire = prepare_query_wire(question, qid=qid, flags=flags, payload=payload, do=do)

        def accept(data: bytes) -> bytes | None:
            if len(data) < 12 or (data[0] << 8 | data[1]) != qid:
                return None
            return data if check_response_wire(data, question) is None else None

        data, _size, _rtt = await self._roundtrip(wire, accept, deadline)
        if data[2] & 0x02:  # TC=1: ask again over TCP (RFC 7766 §5)
            self.counters["truncated"] += 1
            return await self.tcp.exchange_wire(question, deadline=deadline, flags=flags,
                                                payload=payload, do=do)
        return data

    def start_wire(self, question: bytes, *, deadline: float, flags: int, payload: int,
                   do: bool, callback: WireCallback) -> None:
        """:meth:`exchange_wire` without a coroutine: ``callback(data, None)`` with the
        checked response, or ``callback(None, exc)`` (QueryTimeout, NetworkError, ...),
        called once from the loop (never from this call; a socket that cannot be opened
        raises NetworkError here). TC=1 goes to TCP in a task, as exchange_wire does.

        One :class:`_Exchange` per query is the port's waiter, its accept check and its
        deadline entry (it replaced two closures, a waiter object and a ``call_at`` timer
        per query: bench/bench_miss_ir.py). The deadline is kept by :meth:`_expire_due`,
        one timer for all of them, armed no later than the earliest deadline pending."""
        qid = _query_id()
        port = self._take()
        exchange = _Exchange()
        exchange.upstream = self
        exchange.port = port
        exchange.qid = qid
        exchange.question = question
        exchange.deadline = deadline
        exchange.flags = flags
        exchange.payload = payload
        exchange.do = do
        exchange.callback = callback
        exchange.finished = False
        exchange.timer = None
        port.future = exchange  # _readable calls its accept itself (no bound method)
        tail = self._opt_tails.get(payload << 1 | do)
        if tail is None:
            tail = self._opt_tail(payload, do)
        try:
            port.sock.send(_HEAD.pack(qid, flags & WIRE_FLAGS, 1, 0, 0, 1) + question + tail)
        except OSError as exc:
            port.clean = False
            port.future = None
            self._give_back(port)
            self.counters["connection_errors"] += 1
            raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
        self.counters["queries_sent"] += 1
        due = self._due
        if due and deadline < due[-1].deadline:  # out of order (rare): a timer of its own
            exchange.timer = self.loop.call_at(deadline, exchange.set_exception,
                                               DeadlineExpired())
            return
        due.append(exchange)
        if self._due_timer is None:  # the queue's head: this one, or (when a callback
            self._arm_due(due[0].deadline)  # of the sweep starts a query) an older one

    def _opt_tail(self, payload: int, do: bool) -> bytes:
        """The query's bytes after the question: the OPT RR :func:`prepare_query_wire`
        writes for a query without padding or keepalive (kept per payload and DO)."""
        wire = prepare_query_wire(b"", qid=0, flags=0, payload=payload, do=do)
        tail = self._opt_tails[payload << 1 | do] = wire[12:]
        return tail

    def _arm_due(self, deadline: float) -> None:
        """The deadline timer: at ``deadline`` (the earliest pending), or sooner, to drop
        the answered exchanges from the queue at least every ``DEADLINE_SWEEP`` s."""
        self._due_timer = self.loop.call_at(
            min(deadline, self.loop.time() + DEADLINE_SWEEP), self._expire_due)

    def _expire_due(self) -> None:
        """Fail the exchanges whose deadline has come (within the clock's resolution,
        as asyncio runs a timer) and drop the answered ones from the queue (an answer
        drops its own when it is at the head, the usual case: :meth:`_Exchange._finish`)."""
        self._due_timer = None
        due = self._due
        limit = self.loop.time() + _CLOCK_SLACK
        while due:
            head = due[0]
            if head.finished:
                due.popleft()
            elif head.deadline <= limit:
                due.popleft()
                head.set_exception(DeadlineExpired())
            else:
                break
        if len(due) > 1:  # answered ones behind a head still waiting: let them go too
            self._due = due = deque([e for e in due if not e.finished])
        if due and self._due_timer is None:
            self._arm_due(due[0].deadline)

    def _error(self, exc: BaseException) -> BaseException:
        """What an exchange reports for ``exc`` from its waiter (counted)."""
        if isinstance(exc, DeadlineExpired):
            self.counters["timeouts"] += 1
            return QueryTimeout(f"no answer from {self.name} before the deadline")
        if isinstance(exc, OSError):  # ICMP port unreachable and friends
            self.counters["connection_errors"] += 1
            error = NetworkError(f"{self.name}: {exc.strerror or exc}")
            error.__cause__ = exc
            return error
        return exc

    async def _exchange_udp(self, query: dns.message.Message, deadline: float,
                            ) -> tuple[dns.message.Message, int, float]:
        qid = _query_id()
        expected = question_key(query)
        return await self._roundtrip(prepare_query(query, qid=qid, extra=self.extra_options,
                                                   edns_version=self.edns_version),
                                     lambda data: self._accept(data, qid, expected), deadline)

    async def _roundtrip(self, wire: bytes, accept: Callable[[bytes], T | None],
                         deadline: float) -> tuple[T, int, float]:
        """Send ``wire`` from a socket of the pool (:meth:`_take`); wait for a datagram
        ``accept`` takes (others are counted as forged) until ``deadline``.

        Measured per exchange (bench/bench_miss.py, loopback): a datagram endpoint per
        query cost ~10x more than a plain non-blocking socket and one reader callback;
        the C socket type (``_socket.socket``, created non-blocking) instead of
        ``socket.socket``'s Python wrapper saves ~4 µs, and one ``call_at`` that fails
        the future instead of ``asyncio.timeout_at`` (a Timeout object, a task
        cancellation to translate back) another few µs."""
        port = self._take()
        future: asyncio.Future[tuple[T, int]] = self.loop.create_future()
        port.future = future
        port.accept = accept
        try:
            try:
                port.sock.send(wire)
            except OSError as exc:
                port.clean = False
                self.counters["connection_errors"] += 1
                raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
            sent = self.clock()
            self.counters["queries_sent"] += 1
            timer = self.loop.call_at(deadline, expire, future)
            try:
                result, size = await future
            except DeadlineExpired:
                port.clean = False
                self.counters["timeouts"] += 1
                raise QueryTimeout(f"no answer from {self.name} before the deadline") from None
            except OSError as exc:  # ICMP port unreachable and friends
                port.clean = False
                self.counters["connection_errors"] += 1
                raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
            except BaseException:  # cancelled (the answer may still come) or a malformed
                port.clean = False  # answer (MalformedAnswer): never reuse
                raise
            finally:
                timer.cancel()
        finally:
            self._give_back(port)
        self.counters["responses"] += 1
        return result, size, self.clock() - sent

    # -- the port pool (module docstring) ---------------------------------------------
    def _take(self) -> _Port:
        """A random idle socket young enough, else a new one (raises NetworkError)."""
        idle = self._idle
        now = self.loop.time()  # the sweep's timers are the loop's: one clock for ages
        while idle:
            index = _query_id() % len(idle) if len(idle) > 1 else 0
            port = idle[index]
            idle[index] = idle[-1]
            idle.pop()
            if now - port.born < self.port_age:
                port.uses += 1
                self._busy.add(port)
                return port
            self._close(port)
        try:
            sock = _socket.socket(self._family, _DGRAM)
        except OSError as exc:
            self.counters["connection_errors"] += 1
            raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            sock.connect(self._address)
        except OSError as exc:
            sock.close()
            self.counters["connection_errors"] += 1
            raise NetworkError(f"{self.name}: {exc.strerror or exc}") from exc
        port = _Port(sock, now)
        port.uses = 1
        self._busy.add(port)
        self.loop.add_reader(port.fd, self._readable, port)
        self.counters["sockets_opened"] += 1
        return port

    def _give_back(self, port: _Port) -> None:
        """After an exchange: idle again if clean, not worn out and not too old."""
        port.future = None
        port.accept = None
        self._busy.discard(port)
        if (not port.clean or self._closed or port.uses >= self.port_uses
                or self.loop.time() - port.born >= self.port_age
                or len(self._idle) >= self.max_idle):
            self._close(port)
            return
        self._idle.append(port)
        if self._sweep_at is None:
            self._sweep_at = self.loop.call_at(port.born + self.port_age, self._sweep)

    def _readable(self, port: _Port) -> None:
        sock = port.sock
        while True:
            future = port.future
            if future is None:  # idle: a late answer, or someone probing this port
                self._stray(port)
                return
            if type(future) is _Exchange:  # start_wire's: its check and finish directly
                if future.finished:
                    return
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    return
                except OSError as exc:  # ICMP port unreachable and friends
                    future.set_exception(exc)
                    return
                if future.accept(data) is None:
                    port.clean = False
                    self.counters["forged_responses"] += 1
                    continue
                future._finish(data, None)  # the whole answer path: touch nothing after
                return
            if future.done():  # answered or expired; what follows waits (or strays)
                return
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP port unreachable and friends
                future.set_exception(exc)
                return
            assert port.accept is not None
            try:
                result = port.accept(data)
            except MalformedAnswer:  # ours, but unreadable: this attempt failed
                port.clean = False
                self.counters["malformed_responses"] += 1
                future.set_exception(MalformedAnswer(f"malformed answer from {self.name}"))
                return
            if result is None:
                port.clean = False
                self.counters["forged_responses"] += 1
            else:
                # an _Exchange runs the whole answer path from here and may already have
                # given the port back (or closed it): touch nothing after this
                future.set_result((result, len(data)))
                return

    def _stray(self, port: _Port) -> None:
        """A datagram (or an error) on an idle socket: count it, close the socket."""
        self.counters["stray_datagrams"] += 1
        if port in self._idle:
            self._idle.remove(port)
        self._close(port)

    def _sweep(self) -> None:
        """Close idle sockets past their age; come back for the next one to age."""
        self._sweep_at = None
        now = self.loop.time()
        keep = []
        for port in self._idle:
            if now - port.born >= self.port_age:
                self._close(port)
            else:
                keep.append(port)
        self._idle = keep
        if keep:
            oldest = min(port.born for port in keep)
            self._sweep_at = self.loop.call_at(oldest + self.port_age, self._sweep)

    def _close(self, port: _Port) -> None:
        if port.fd >= 0:
            self.loop.remove_reader(port.fd)
            port.fd = -1
            port.sock.close()

    @staticmethod
    def _accept(data: bytes, qid: int, expected: Any) -> dns.message.Message | None:
        """The response in ``data`` if it answers the query (``qid``, QR=1, the
        question ``expected``), else None (a forgery: ignored). Raises MalformedAnswer
        when the header and question answer it but the rest does not parse."""
        if len(data) < 12 or int.from_bytes(data[:2], "big") != qid:
            return None
        try:
            message = dns.message.from_wire(data, ignore_trailing=False)
        except (dns.exception.DNSException, ValueError, IndexError):
            try:  # is it ours? (TC=1 and cut short: the header alone is enough)
                message = dns.message.from_wire(data, question_only=True)
            except (dns.exception.DNSException, ValueError, IndexError):
                return None
            if check_response(message, expected) is not None:
                return None
            if data[2] & 0x02:
                return message
            raise MalformedAnswer("malformed answer") from None
        if check_response(message, expected) is not None:
            return None
        return message

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"name": self.name, "transport": "udp", **self.counters,
                                 "sockets_idle": len(self._idle),
                                 "sockets_busy": len(self._busy)}
        if self._tcp is not None:
            stats["tcp_fallback"] = self._tcp.statistics()
        return stats

    async def aclose(self) -> None:
        """Close every socket, those of queries in flight too: each such query fails at
        once with NetworkError (the service is stopping), not at its deadline."""
        self._closed = True
        if self._sweep_at is not None:
            self._sweep_at.cancel()
            self._sweep_at = None
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None
        for port in list(self._busy):
            future = port.future
            if future is not None and not future.done():
                # an _Exchange calls back now and gives the port back (closed, as
                # _closed is set); a coroutine's _roundtrip gives it back when it wakes
                future.set_exception(NetworkError(f"{self.name}: the upstream was closed"))
            self._close(port)
        self._busy.clear()
        self._due.clear()
        for port in self._idle:
            self._close(port)
        self._idle.clear()
        if self._tcp is not None:
            await self._tcp.aclose()
