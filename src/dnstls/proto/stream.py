"""Server-side state of one DNS-over-TCP/TLS connection (RFC 7766 §6, RFC 7858 §3.4).

The asyncio adapter owns the socket; this class owns every decision about it:

* **Framing.** Bytes go in through :meth:`StreamState.feed`; complete messages come out.
  A message split across reads, or many messages in one read, are both normal.
* **Pipelining.** Queries are answered as each becomes ready, in any order. At most
  ``max_in_flight`` are being resolved at once; beyond that, complete messages wait in a
  backlog and the adapter pauses reading (:attr:`reading_allowed`), so a fast client is
  slowed down by TCP flow control instead of by memory.
* **Timers** (§6.2.3). Three deadlines, all computed from injected ``now`` values:
  the idle timeout applies when nothing is in flight and no message is partly read, and
  restarts only after a *complete* message or answer; a started message must be
  completed within ``message_timeout`` (a trickling client cannot keep the connection
  with one byte a second); output that the client does not read must drain within
  ``write_timeout``. :meth:`deadline` says when the adapter must next call
  :meth:`expired`, which names the :class:`CloseReason` once one has passed.
* **Limits.** ``max_queries`` per connection (0: unlimited) ends the connection cleanly
  once the last answer is sent.
* **Broken streams.** A zero-length prefix (or, reported by the adapter through
  :meth:`abandon`, a message without a readable header) ends reading; the queries that
  arrived *before* it are still answered, then the connection closes
  (:attr:`finished`, :attr:`broken` names why). Nothing after the bad frame is used.

No sockets, no clock, no asyncio: tests drive it with bytes and numbers.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from dnstls.proto.framing import Buffer, FrameDecoder, FramingError


class CloseReason(enum.Enum):
    IDLE = "idle_timeout"
    MESSAGE_TIMEOUT = "message_timeout"
    WRITE_TIMEOUT = "write_timeout"
    OUTPUT_LIMIT = "output_limit"
    FRAMING = "framing_error"
    BAD_MESSAGE = "bad_message"
    QUERY_LIMIT = "query_limit"
    PEER = "peer_closed"
    SHUTDOWN = "shutdown"
    HANDSHAKE = "handshake_failed"
    CONNECTION_LIMIT = "connection_limit"
    ACCESS_DENIED = "access_denied"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Per-connection limits. Defaults are close to Unbound, Knot Resolver and dnsdist."""

    idle_timeout: float = 10.0
    message_timeout: float = 5.0
    write_timeout: float = 10.0
    max_in_flight: int = 100
    max_queries: int = 0
    max_pending_output: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "message_timeout", "write_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.max_queries < 0:
            raise ValueError("max_queries must be 0 (unlimited) or positive")
        if self.max_pending_output < 1024:
            raise ValueError("max_pending_output must be at least 1024 bytes")


class StreamState:
    """Decisions for one server-side stream connection; see the module docstring."""

    __slots__ = ("_backlog", "_decoder", "_idle_since", "_message_started", "_write_blocked",
                 "broken", "in_flight", "limits", "queries", "stop_reading")

    def __init__(self, limits: StreamLimits, now: float) -> None:
        self.limits = limits
        self._decoder = FrameDecoder()
        self._backlog: deque[bytes] = deque()
        self._idle_since: float | None = now
        self._message_started: float | None = None
        self._write_blocked: float | None = None
        self.in_flight = 0
        self.queries = 0
        self.stop_reading = False  # set on shutdown or when the query limit is reached
        self.broken: CloseReason | None = None

    # -- input -------------------------------------------------------------------------
    def feed(self, data: Buffer, now: float) -> list[bytes]:
        """Take received bytes; return the messages that may be dispatched now.

        An unframeable stream sets :attr:`broken` and stops reading; the messages before
        the bad prefix are still returned.
        """
        if self.stop_reading:
            return []
        decoder = self._decoder
        try:
            messages = decoder.feed(data)
        except FramingError as exc:
            messages = exc.messages
            self.broken = CloseReason.FRAMING
            self.stop_reading = True
        partial = decoder.in_message and self.broken is None
        if not partial:
            self._message_started = None
        elif self._message_started is None or messages:
            self._message_started = now
        if messages:
            count = len(messages)
            limits = self.limits
            if self._backlog or self.in_flight + count > limits.max_in_flight:
                self._backlog.extend(messages)
                messages = self._take()
            elif limits.max_queries:
                messages = self._accept(messages)
            else:  # _accept without a query limit, inline: every read takes this
                self.queries += count
                self.in_flight += count
        if partial or self.in_flight or self._backlog:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        return messages

    def take_one(self, data: Buffer, now: float) -> bytes | None:
        """The message, if ``data`` is exactly one whole message, nothing is buffered
        or waiting in the backlog, the in-flight bound has room and there is no query
        limit -- the usual read when a client asks one query at a time -- accepted as
        :meth:`feed` would accept it (one more query counted and in flight). None
        otherwise, with nothing changed: call :meth:`feed` with the same bytes.

        A shortcut for the adapter (one call instead of :meth:`feed` and the decoder's
        own); the caller answers or dispatches the message like one that :meth:`feed`
        returned.
        """
        if type(data) is not bytes:
            return None
        size = len(data)
        limits = self.limits
        if (self.stop_reading or self._backlog or size < 3 or self._decoder.in_message
                or ((data[0] << 8) | data[1]) + 2 != size
                or self.in_flight >= limits.max_in_flight or limits.max_queries):
            return None
        # feed()'s effects for this read: no partial message (so no message deadline),
        # one query accepted, not idle while it is in flight
        self._message_started = None
        self.queries += 1
        self.in_flight += 1
        self._idle_since = None
        return data[2:]

    def _accept(self, messages: list[bytes]) -> list[bytes]:
        limit = self.limits.max_queries
        if limit and self.queries + len(messages) >= limit:
            messages = messages[: limit - self.queries]
            self.stop_reading = True
            self._backlog.clear()
        self.queries += len(messages)
        self.in_flight += len(messages)
        return messages

    def _take(self) -> list[bytes]:
        room = self.limits.max_in_flight - self.in_flight
        if room <= 0:
            return []
        take = [self._backlog.popleft() for _ in range(min(room, len(self._backlog)))]
        return self._accept(take)

    def answered(self, now: float) -> list[bytes]:
        """One in-flight query got its answer (or was dropped); returns backlog to dispatch."""
        return self.answered_many(1, now)

    def answered_many(self, count: int, now: float) -> list[bytes]:
        """``count`` in-flight queries got their answers: the same as ``count`` calls of
        :meth:`answered` with their results joined (the backlog is taken once, into the
        room they leave; a read answered from the cache calls this once)."""
        self.in_flight -= count
        ready = self._take() if self._backlog else []
        if self.in_flight == 0 and not self._backlog and not self._decoder.in_message:
            self._idle_since = now
        return ready

    @property
    def reading_allowed(self) -> bool:
        return (not self.stop_reading and not self._backlog
                and self.in_flight < self.limits.max_in_flight)

    @property
    def finished(self) -> bool:
        """Nothing more will be read and every query has been answered: close cleanly."""
        return self.stop_reading and self.in_flight == 0 and not self._backlog

    @property
    def pending(self) -> int:
        """Queries received but not answered (in flight plus backlog)."""
        return self.in_flight + len(self._backlog)

    def shutdown(self) -> None:
        """Stop taking new messages; what was already accepted is still answered."""
        self.stop_reading = True

    def abandon(self, count: int, reason: CloseReason = CloseReason.BAD_MESSAGE) -> None:
        """``count`` dispatched messages will not be answered (the first of them was
        unusable, the rest came after it): stop reading, drop the backlog, and close
        once the queries before them are answered."""
        self.in_flight -= count
        self._backlog.clear()
        self.stop_reading = True
        self.broken = reason

    # -- output ------------------------------------------------------------------------
    def write_blocked(self, now: float) -> None:
        if self._write_blocked is None:
            self._write_blocked = now

    def write_unblocked(self) -> None:
        self._write_blocked = None

    def output_exceeded(self, pending_output: int) -> bool:
        return pending_output > self.limits.max_pending_output

    # -- timers ------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """The earliest time at which :meth:`expired` may return a reason."""
        # asked after every read: no list, no min()
        limits = self.limits
        earliest = self._idle_since
        if earliest is not None:
            earliest += limits.idle_timeout
        started = self._message_started
        if started is not None:
            started += limits.message_timeout
            if earliest is None or started < earliest:
                earliest = started
        blocked = self._write_blocked
        if blocked is not None:
            blocked += limits.write_timeout
            if earliest is None or blocked < earliest:
                earliest = blocked
        return earliest

    def expired(self, now: float) -> CloseReason | None:
        limits = self.limits
        if self._write_blocked is not None and now >= self._write_blocked + limits.write_timeout:
            return CloseReason.WRITE_TIMEOUT
        if (self._message_started is not None
                and now >= self._message_started + limits.message_timeout):
            return CloseReason.MESSAGE_TIMEOUT
        if self._idle_since is not None and now >= self._idle_since + limits.idle_timeout:
            return CloseReason.IDLE
        return None


__all__ = ["CloseReason", "FramingError", "StreamLimits", "StreamState"]
