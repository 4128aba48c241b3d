"""Sans-IO state of upstream connections and of the pool that shares them.

Nothing here touches a socket or a clock: times are parameters, and every state change
is a method that returns what the caller must do (bytes to write, events to deliver,
connections to open or close). :mod:`dnstls.net.pool` is the asyncio adapter.

**One connection** (:class:`ConnectionState`) carries many queries at once (RFC 7766
§6.2.1.1 pipelining; RFC 7858 §3.3): each query gets a message ID drawn from the OS
CSPRNG (:func:`random_below`) among the IDs *not* in flight on that connection, so IDs
stay unpredictable and are never reused while in flight, however many queries the
connection has carried (the 16-bit space wraps after 65,536 queries; only the in-flight
set matters). Answers may arrive in any order (RFC 7766 §7). An answer is accepted only
if QR=1, its ID is in flight *and* its question equals the query's (name compared
case-insensitively, type, class) -- RFC 5452 §9.1 style matching, so a confused or
hostile upstream cannot make us relay an answer to another question:

* unknown ID (late, duplicate, invented): ignored and counted;
* known ID but QR=0 or another question: the query fails (:class:`QueryRejected`) and
  the connection is closed, it is not trustworthy;
* bytes that do not frame or parse: the stream is broken (:class:`StreamBroken`); the
  connection is closed and its in-flight queries are retried once elsewhere.

**Idle expiry** (RFC 7766 §6.2.3, RFC 7828): a connection with nothing in flight is
closed after its idle timeout -- the upstream's edns-tcp-keepalive value when it sends
one, else our default (8 s, below the ~10 s Cloudflare uses) -- so we close before the
server does and never write into a connection the server is tearing down. A keepalive
of 0 retires the connection: no new queries, closed as soon as it is empty.

**Half-open connections**: when a query times out and nothing at all has been received
on the connection since that query was sent, the connection is presumed dead and
closed (its other queries are retried once on a new connection), so one lost peer
cannot hold queries until their deadlines again and again.

**The pool** (:class:`PoolState`, after httpcore's ``_assign_requests_to_connections``)
keeps the connections of one upstream and the queue of waiting queries. :meth:`assign`
hands each waiting query, in arrival order, an available connection with spare capacity
(oldest first, which concentrates load on few connections), else a new connection if
under ``max_connections``, else leaves it waiting; and it returns the expired or closed
connections to close. The adapter performs the I/O afterwards.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
import struct
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from dnstls.proto import edns
from dnstls.proto.cachekey import skip_name
from dnstls.proto.framing import FrameDecoder, FramingError, encode

ID_SPACE = 65536
DEFAULT_IDLE_TIMEOUT = 8.0

QuestionKey = tuple[dns.name.Name, int, int]


def question_key(message: dns.message.Message) -> QuestionKey | None:
    """(name, type, class) of the single question; dnspython names compare caselessly."""
    if len(message.question) != 1:
        return None
    rrset = message.question[0]
    return (rrset.name, int(rrset.rdtype), int(rrset.rdclass))


def check_response(response: dns.message.Message, expected: QuestionKey | None,
                   signed: bool = False) -> str | None:
    """Why ``response`` is not an answer to a query for ``expected`` (None: it is).
    The answer to a ``signed`` (TSIG) query may have no question: a server's TSIG
    error (BADSIG, BADKEY...) has none (RFC 8945 §5.3.2), and kdig takes it."""
    if not response.flags & dns.flags.QR:
        return "QR=0 in a response"
    if signed and not response.question:
        return None
    if question_key(response) != expected:
        return "question does not match the query"
    return None


def prepare_query(query: dns.message.Message, *, qid: int, pad: int = 0,
                  keepalive: bool = False, pad_length: int | None = None,
                  extra: bytes = b"", edns_version: int | None = 0) -> bytes:
    """Wire form of ``query`` with ID ``qid`` and this transport's EDNS options.

    The query is rendered afresh rather than mutated: only header flags, the question
    and the EDNS header (payload, DO) are kept; the options are dropped, then padding
    (RFC 7830, to a multiple of ``pad`` bytes) and an empty edns-tcp-keepalive (RFC 7828
    §3.2.1, streams only) are added. ``pad_length`` (kdig's ``+padding=N``) asks for a
    padding option of exactly that many bytes instead of block padding. ``extra`` is
    options in wire form put first (a client's own: ``dnstls query +nsid``; the
    forwarders never pass any, so a client's options are never forwarded). ``edns_version`` is
    the EDNS version of the OPT RR; None: no OPT at all (``dnstls query +noedns``: then
    no options, padding or keepalive either). Rendered by hand:
    dnspython's ``use_edns()`` costs more than the rest of a forwarded query together,
    and this runs once per attempt.
    """
    flags = query.flags & ~dns.flags.QR & 0xFFFF
    parts = [struct.pack("!HHHHHH", qid, flags, len(query.question), 0, 0,
                         0 if edns_version is None else 1)]
    for rrset in query.question:
        parts.append(rrset.name.to_wire() or b"")  # bytes when no file is given
        parts.append(struct.pack("!HH", rrset.rdtype, rrset.rdclass))
    payload = query.payload if query.edns >= 0 else 1232
    ednsflags = (query.ednsflags if query.edns >= 0 else 0) & 0xFFFF  # DO and friends
    options = extra
    if keepalive:
        options += struct.pack("!HH", edns.KEEPALIVE, 0)
    head = b"".join(parts)
    if edns_version is None:
        return _signed(query, head, qid)
    ednsflags |= (edns_version & 0xFF) << 16  # the version: OPT TTL bits 16-23 (RFC 6891 §6.1.3)
    if pad_length is not None:
        options += struct.pack("!HH", edns.PADDING, pad_length) + b"\0" * pad_length
    elif pad:
        bare = len(head) + 11 + len(options) + 4  # OPT RR fixed part + padding header
        options += struct.pack("!HH", edns.PADDING, (-bare) % pad) + b"\0" * ((-bare) % pad)
    opt = b"\0" + struct.pack("!HHIH", 41, payload, ednsflags & 0xFFFFFF, len(options)) \
        + options
    return _signed(query, head + opt, qid)


def _signed(query: dns.message.Message, wire: bytes, qid: int) -> bytes:
    """``wire`` with a TSIG record (RFC 8945) when ``query`` carries one
    (``Message.use_tsig``; ``dnstls query -y``): signed with ``query.keyring`` at the
    time in the template's ``time_signed`` (no clock here), the original ID set to
    ``qid``. The signed record replaces ``query.tsig``, so that ``query.mac`` verifies
    the answer (:func:`parse_response`)."""
    if query.tsig is None or not query.keyring:
        return wire
    template: Any = query.tsig[0].replace(original_id=qid)
    signed, _ = dns.tsig.sign(  # type: ignore[no-untyped-call]
        wire, query.keyring, template, template.time_signed)
    query.tsig = dns.rrset.from_rdata(query.tsig.name, 0, signed)
    rdata = signed.to_wire() or b""
    record = (query.tsig.name.to_wire() or b"") + struct.pack(
        "!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata)) + rdata
    count = struct.unpack("!H", wire[10:12])[0] + 1
    return wire[:10] + struct.pack("!H", count) + wire[12:] + record


#: What verifying a signed answer can raise (dnspython): the verdict is kept, the answer too
_TSIG_ERRORS = (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm,
                dns.tsig.BadTime, dns.tsig.PeerError, dns.message.UnknownTSIGKey)
#: kdig's words for an answer to a signed query that is not signed, or does not verify
TSIG_MISSING = "expected a TSIG or SIG(0)"
TSIG_FAILED = "failed to verify TSIG"


def parse_response(frame: bytes, signed: dns.message.Message | None = None, *,
                   ignore_trailing: bool = True) -> dns.message.Message:
    """``frame`` as a message. The answer to a signed query (``signed``: the query,
    its ``tsig`` and ``keyring`` set) is verified with the query's key and MAC; the
    verdict, as kdig words it, is the message's ``tsig_verdict`` attribute: None when
    the TSIG verified, :data:`TSIG_MISSING` or :data:`TSIG_FAILED` (the answer is
    returned all the same, its TSIG unverified, as kdig prints it with a warning)."""
    if signed is None or not signed.keyring:
        return dns.message.from_wire(frame, ignore_trailing=ignore_trailing)
    verdict: str | None = None
    try:
        message = dns.message.from_wire(frame, keyring=signed.keyring,
                                        request_mac=signed.mac or b"",
                                        ignore_trailing=ignore_trailing)
    except _TSIG_ERRORS:
        message = dns.message.from_wire(frame, keyring=False, ignore_trailing=ignore_trailing)
        verdict = TSIG_FAILED
    except dns.exception.FormError:  # dnspython: "response requires a TSIG" (or malformed)
        message = dns.message.from_wire(frame, keyring=False, ignore_trailing=ignore_trailing)
        if message.tsig is not None:
            raise
    if message.tsig is None:
        verdict = TSIG_MISSING
    message.tsig_verdict = verdict  # type: ignore[attr-defined]
    return message


# ---------------------------------------------------------------- the wire-level path
#
# The forwarder's hot path never builds dnspython messages: the upstream query is
# rendered from the question bytes the listener read (proto/cachekey.read_query), and a
# response is matched by comparing its header and question bytes -- the same checks as
# check_response(), done on bytes. The response itself is validated by whoever consumes
# it (the cache's checked walk) before anything reaches a client.

_QR_BIT = 0x80
WIRE_FLAGS = int(dns.flags.RD | dns.flags.CD | dns.flags.AD)  # forwarded from the client


def prepare_query_wire(question: bytes, *, qid: int, flags: int, payload: int, do: bool,
                       pad: int = 0, keepalive: bool = False) -> bytes:
    """An upstream query for ``question`` (name in wire form + QTYPE + QCLASS).

    Only RD, CD and AD of ``flags`` are kept; the OPT RR carries ``payload`` (the
    client's, or 1232), the DO bit, an empty keepalive when asked and block padding.
    """
    head = struct.pack("!HHHHHH", qid, flags & WIRE_FLAGS, 1, 0, 0, 1) + question
    options = struct.pack("!HH", edns.KEEPALIVE, 0) if keepalive else b""
    if pad:
        bare = len(head) + 11 + len(options) + 4
        size = (-bare) % pad
        options += struct.pack("!HH", edns.PADDING, size) + b"\0" * size
    return head + b"\0" + struct.pack("!HHIH", 41, payload or 1232,
                                        0x8000 if do else 0, len(options)) + options


def check_response_wire(frame: bytes, question: bytes) -> str | None:
    """Why ``frame`` is not a response to ``question`` (None: header and question match).

    ``question`` is the lower-cased name in wire form + QTYPE + QCLASS; the response's
    question must be uncompressed at offset 12 (as every server writes it).
    """
    end = 12 + len(question)
    if len(frame) < end:
        return "response shorter than its question"
    if not frame[2] & _QR_BIT:
        return "QR=0 in a response"
    if frame[4] or frame[5] != 1:
        return "question does not match the query"
    split = end - 4
    if frame[12:split].lower() != question[:-4] or frame[split:end] != question[-4:]:
        return "question does not match the query"
    return None


_KEEPALIVE_OPTION = struct.pack("!HH", edns.KEEPALIVE, 2)
_COUNTS = struct.Struct("!HHHH")
_OPTION_HEAD = struct.Struct("!HH")


def response_keepalive(frame: bytes) -> float | None:
    """The edns-tcp-keepalive timeout in a response's OPT RR, if any (None: none/bad)."""
    end = len(frame)
    if end < 12 or _KEEPALIVE_OPTION not in frame:
        return None  # the option's code and length bytes appear nowhere: no walk needed
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(frame, 4)
    pos = 12
    for _ in range(qdcount):
        pos = skip_name(frame, pos)
        if pos < 0:
            return None
        pos += 4
    before_additional = ancount + nscount
    for index in range(before_additional + arcount):
        pos = skip_name(frame, pos)
        if pos < 0 or pos + 10 > end:
            return None
        rrtype = (frame[pos] << 8) | frame[pos + 1]
        start = pos + 10
        pos = start + ((frame[pos + 8] << 8) | frame[pos + 9])
        if pos > end:
            return None
        if rrtype != 41 or index < before_additional:
            continue
        while start + 4 <= pos:
            code, length = _OPTION_HEAD.unpack_from(frame, start)
            if code == edns.KEEPALIVE and length == 2 and start + 6 <= pos:
                return ((frame[start + 4] << 8) | frame[start + 5]) / 10.0
            start += 4 + length
    return None


_RANDOM_BATCH = 4096  # bytes of os.urandom read at once: 2,048 16-bit IDs
_random = bytearray()
_random_at = 0


def random_below(n: int) -> int:
    """A uniform random integer in [0, n) from the OS CSPRNG, like ``secrets.randbelow``;
    16-bit IDs (n = 65,536) are taken two bytes at a time from ``os.urandom`` read 4 KiB
    at a time (one ``getrandom`` call per 2,048 IDs instead of one per ID: ~0.4 instead
    of ~2 µs). The buffer is dropped in a forked child, so processes never share IDs."""
    global _random_at
    if n != ID_SPACE:
        return secrets.randbelow(n)
    at = _random_at
    if at + 2 > len(_random):
        _random[:] = os.urandom(_RANDOM_BATCH)
        at = 0
    _random_at = at + 2
    return (_random[at] << 8) | _random[at + 1]


def _forget_random() -> None:
    global _random_at
    _random.clear()
    _random_at = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_random)


def new_message_id(in_use: Collection[int], *,
                   randbelow: Callable[[int], int] = random_below) -> int:
    """A random 16-bit ID not in ``in_use``. Raises RuntimeError if all are taken."""
    if len(in_use) >= ID_SPACE:
        raise RuntimeError("all 65,536 message IDs are in flight")
    for _ in range(32):  # expected tries < 2 while under half the space is in use
        qid = randbelow(ID_SPACE)
        if qid not in in_use:
            return qid
    start = randbelow(ID_SPACE)  # dense table: scan from a random point (bounded)
    for step in range(ID_SPACE):
        qid = (start + step) % ID_SPACE
        if qid not in in_use:
            return qid
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ResponseMatched:
    """The answer to ``qid``; ``size`` is its length on the wire (without the 2-byte
    prefix) and ``rtt`` the time since the query was sent, in the caller's clock."""

    qid: int
    message: dns.message.Message
    size: int = 0
    rtt: float = 0.0


@dataclass(frozen=True, slots=True)
class WireMatched:
    """The response bytes for ``qid`` (a query started with :meth:`start_query_wire`),
    header and question checked, the rest not yet parsed."""

    qid: int
    wire: bytes
    rtt: float = 0.0


@dataclass(frozen=True, slots=True)
class ResponseIgnored:
    """A response with no query in flight under its ID (late, duplicate or forged)."""

    qid: int
    reason: str


@dataclass(frozen=True, slots=True)
class QueryRejected:
    """The response to ``qid`` is not an answer to its question: fail it, close."""

    qid: int
    reason: str


@dataclass(frozen=True, slots=True)
class ResponseMalformed:
    """The response to ``qid`` (its ID, QR=1 and question) has a body that does not
    parse: fail that query (:class:`~dnstls.errors.MalformedAnswer`); the stream itself
    was framed correctly and stays open."""

    qid: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamBroken:
    """The byte stream cannot be framed or parsed: close, retry what was in flight."""

    reason: str


Event = (ResponseMatched | WireMatched | ResponseIgnored | QueryRejected | ResponseMalformed
         | StreamBroken)


class Status(enum.Enum):
    CONNECTING = "CONNECTING"
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"
    RETIRED = "RETIRED"
    CLOSED = "CLOSED"


@dataclass(slots=True)
class InFlight:
    question: QuestionKey | None
    sent_at: float
    question_wire: bytes | None = None  # set for the wire-level path
    signed: dns.message.Message | None = None  # a TSIG-signed query: its answer is verified


@dataclass(slots=True)
class ConnectionCounters:
    queries: int = 0
    responses: int = 0
    ignored: int = 0
    rejected: int = 0
    timeouts: int = 0


class ConnectHold:
    """Connect back-off of one upstream (``net/pool.py``'s module docstring explains why):
    after a connection could not be opened the upstream is held back for ``interval``
    seconds; when the hold ends one query goes on as the probe while the others are
    still held, until a connection opens (:meth:`succeeded`) or fails again."""

    __slots__ = ("error", "failures", "interval", "probing", "retry_at")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.failures = 0  # consecutive failed connects
        self.retry_at = 0.0  # when the next probe may start
        self.probing = False  # a probe connection is under way
        self.error: Exception | None = None  # what held queries fail with

    def failed(self, error: Exception, now: float) -> None:
        self.failures += 1
        self.error = error
        self.probing = False
        self.retry_at = now + self.interval

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.probing = False
        self.error = None

    def held_for(self, now: float) -> float | None:
        """For a query that needs a new connection: None when it may go on (once the
        hold has ended it becomes the probe), else the seconds the hold has left (0.0
        while a probe is under way)."""
        if self.probing or now < self.retry_at:
            return max(0.0, self.retry_at - now)
        self.probing = True
        return None


class ConnectionState:
    """Per-connection state: capacity, in-flight table, matching, expiry."""

    def __init__(self, name: str, *, max_in_flight: int, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 randbelow: Callable[[int], int] = random_below) -> None:
        if not 1 <= max_in_flight < ID_SPACE:
            raise ValueError(f"max_in_flight {max_in_flight} out of range 1..65535")
        self.name = name
        self.max_in_flight = max_in_flight
        self.idle_timeout = idle_timeout
        self.counters = ConnectionCounters()
        self.reserved = 0  # slots handed out by the pool (sent or about to be)
        self.in_flight: dict[int, InFlight] = {}
        self.last_received: float | None = None
        self.idle_since: float | None = None
        self.close_reason: str | None = None
        self._randbelow = randbelow
        self._decoder = FrameDecoder()
        self._connected = False
        self._retired = False
        self._closed = False

    # ---- status

    @property
    def status(self) -> Status:
        if self._closed:
            return Status.CLOSED
        if not self._connected:
            return Status.CONNECTING
        if self._retired:
            return Status.RETIRED
        return Status.IDLE if self.reserved == 0 else Status.ACTIVE

    def is_available(self) -> bool:
        """Can take one more query (a connecting connection counts: queries queue on it)."""
        return not self._closed and not self._retired and self.reserved < self.max_in_flight

    def is_idle(self) -> bool:
        return self._connected and not self._closed and self.reserved == 0

    def is_connected(self) -> bool:
        """The handshake is done and the connection is not closed (queries can be sent)."""
        return self._connected and not self._closed

    def is_closed(self) -> bool:
        return self._closed

    @property
    def idle_expiry(self) -> float | None:
        if not self.is_idle() or self.idle_since is None:
            return None
        return self.idle_since if self._retired else self.idle_since + self.idle_timeout

    def has_expired(self, now: float) -> bool:
        expiry = self.idle_expiry
        return expiry is not None and now >= expiry

    def describe(self, *, kind: str = "UpstreamConnection") -> str:
        expiry = self.idle_expiry
        shown = "None" if expiry is None else f"{expiry:.3f}"
        return (f"<{kind} {self.name} [{self.status.value}, in_flight={len(self.in_flight)}, "
                f"queries={self.counters.queries}, idle_expiry={shown}]>")

    def __repr__(self) -> str:  # not ``__repr__ = describe``: mypyc cannot alias methods
        return self.describe()

    # ---- transitions

    def connected(self, now: float) -> None:
        self._connected = True
        if self.reserved == 0:
            self.idle_since = now

    def reserve(self) -> None:
        if not self.is_available():
            raise RuntimeError(f"{self.describe()} has no spare capacity")
        self.reserved += 1
        self.idle_since = None

    def release(self, now: float) -> bool:
        """A query is done with its slot. True if the connection should now be closed."""
        if self.reserved <= 0:
            raise RuntimeError("release() without reserve()")
        self.reserved -= 1
        if self.reserved == 0:
            self.idle_since = now
            return self._retired and not self._closed
        return False

    def start_query(self, query: dns.message.Message, now: float, *, pad: int = 0,
                    keepalive: bool = False, pad_length: int | None = None,
                    extra: bytes = b"", edns_version: int | None = 0) -> tuple[int, bytes]:
        """Allocate an ID for ``query``; returns it and the framed bytes to write."""
        if self._closed or not self._connected:
            raise RuntimeError(f"{self.describe()} cannot send")
        if len(self.in_flight) >= self.reserved:
            raise RuntimeError("start_query() without a reserved slot")
        qid = new_message_id(self.in_flight, randbelow=self._randbelow)
        self.in_flight[qid] = InFlight(question_key(query), now, None,
                                       query if query.tsig is not None else None)
        self.counters.queries += 1
        return qid, encode(prepare_query(query, qid=qid, pad=pad, keepalive=keepalive,
                                         pad_length=pad_length, extra=extra,
                                         edns_version=edns_version))

    def start_query_wire(self, question: bytes, now: float, *, flags: int, payload: int,
                         do: bool, pad: int = 0, keepalive: bool = False,
                         ) -> tuple[int, bytes]:
        """Like :meth:`start_query` for the wire-level path (see prepare_query_wire)."""
        if self._closed or not self._connected:
            raise RuntimeError(f"{self.describe()} cannot send")
        if len(self.in_flight) >= self.reserved:
            raise RuntimeError("start_query_wire() without a reserved slot")
        qid = new_message_id(self.in_flight, randbelow=self._randbelow)
        self.in_flight[qid] = InFlight(None, now, question)
        self.counters.queries += 1
        return qid, encode(prepare_query_wire(question, qid=qid, flags=flags,
                                              payload=payload, do=do, pad=pad,
                                              keepalive=keepalive))

    def forget(self, qid: int) -> None:
        """The query ``qid`` no longer waits (answered, cancelled); a late answer is ignored."""
        self.in_flight.pop(qid, None)

    def query_timed_out(self, qid: int, now: float) -> bool:
        """``qid`` hit its deadline. True if the connection looks half-open: close it."""
        entry = self.in_flight.pop(qid, None)
        self.counters.timeouts += 1
        if entry is None or self._closed:
            return False
        if self.last_received is None or self.last_received < entry.sent_at:
            self.close_reason = "no data received since a query that timed out (half-open?)"
            return True
        return False

    def retire(self) -> None:
        """Take no new queries; the connection expires as soon as it is empty."""
        self._retired = True

    def closed(self, reason: str | None = None) -> list[int]:
        """The connection is gone. Returns the IDs that were in flight (to retry)."""
        self._closed = True
        if reason and not self.close_reason:
            self.close_reason = reason
        lost = list(self.in_flight)
        self.in_flight.clear()
        return lost

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the stream; returns what happened, in order."""
        self.last_received = now
        try:
            frames = self._decoder.feed(data)
        except FramingError as exc:
            return [StreamBroken(str(exc))]
        events: list[Event] = []
        for frame in frames:
            event = self._match(frame, now)
            events.append(event)
            if isinstance(event, StreamBroken | QueryRejected):
                break  # the rest of the stream is not to be trusted
        return events

    def _match(self, frame: bytes, now: float) -> Event:
        entry = self.in_flight.get((frame[0] << 8) | frame[1]) if len(frame) >= 12 else None
        if entry is not None and entry.question_wire is not None:
            qid = (frame[0] << 8) | frame[1]
            del self.in_flight[qid]
            reason = check_response_wire(frame, entry.question_wire)
            if reason is not None:
                self.counters.rejected += 1
                self.close_reason = reason
                return QueryRejected(qid, reason)
            self.counters.responses += 1
            timeout = response_keepalive(frame)
            if timeout is not None:
                self._set_keepalive(timeout)
            return WireMatched(qid, frame, now - entry.sent_at)
        try:
            message = parse_response(frame, None if entry is None else entry.signed)
        except (dns.exception.DNSException, ValueError, IndexError) as exc:
            malformed = self._malformed(frame)
            if malformed is not None:
                return malformed
            return StreamBroken(f"unparsable message from upstream ({type(exc).__name__})")
        entry = self.in_flight.get(message.id)
        if entry is None:
            self.counters.ignored += 1
            return ResponseIgnored(message.id, "no query in flight with this ID")
        reason = check_response(message, entry.question, entry.signed is not None)
        if reason is not None:
            self.counters.rejected += 1
            del self.in_flight[message.id]
            self.close_reason = reason
            return QueryRejected(message.id, reason)
        del self.in_flight[message.id]
        self.counters.responses += 1
        self._apply_keepalive(message)
        return ResponseMatched(message.id, message, len(frame), now - entry.sent_at)

    def _malformed(self, frame: bytes) -> ResponseMalformed | None:
        """For a frame that does not parse: :class:`ResponseMalformed` if its header
        and question answer a query in flight (its ID, QR=1, its question), which is
        then over; else None (the stream cannot be trusted)."""
        if len(frame) < 12:
            return None
        qid = (frame[0] << 8) | frame[1]
        entry = self.in_flight.get(qid)
        if entry is None:
            return None
        try:
            head = dns.message.from_wire(frame, question_only=True)
        except (dns.exception.DNSException, ValueError, IndexError):
            return None
        if check_response(head, entry.question) is not None:
            return None
        del self.in_flight[qid]
        self.counters.rejected += 1
        return ResponseMalformed(qid, "malformed answer")

    def _apply_keepalive(self, message: dns.message.Message) -> None:
        option = edns.find_option(message, edns.KEEPALIVE)
        if option is None:
            return
        try:
            timeout = edns.keepalive_timeout(option)
        except ValueError:
            return
        if timeout is None:
            return
        self._set_keepalive(timeout)

    def _set_keepalive(self, timeout: float) -> None:
        if timeout == 0:
            self.retire()  # RFC 7828 §3.3.2: the server wants us gone
        else:
            self.idle_timeout = timeout


# ---------------------------------------------------------------- the pool


class PooledConnection(Protocol):
    def is_available(self) -> bool: ...
    def is_idle(self) -> bool: ...
    def has_expired(self, now: float) -> bool: ...
    def is_closed(self) -> bool: ...
    def reserve(self) -> None: ...


C = TypeVar("C", bound=PooledConnection)
W = TypeVar("W")


class Plan(Generic[C, W]):
    """What :meth:`PoolState.assign` decided; the adapter carries it out.

    A plain class, not a dataclass: mypyc cannot compile a generic dataclass (importing
    the compiled module fails with "attribute '__dict__' of 'type' objects is not
    writable").
    """

    __slots__ = ("assigned", "to_close", "to_open")

    def __init__(self) -> None:
        self.assigned: list[tuple[W, C]] = []
        self.to_open: list[C] = []
        self.to_close: list[C] = []

    def __repr__(self) -> str:
        return (f"Plan(assigned={self.assigned!r}, to_open={self.to_open!r}, "
                f"to_close={self.to_close!r})")


class PoolState(Generic[C, W]):
    """Connections of one upstream plus the FIFO of queries waiting for a slot."""

    def __init__(self, *, max_connections: int, new_connection: Callable[[], C]) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.connections: list[C] = []
        self.waiting: deque[W] = deque()
        self._new_connection = new_connection
        self.opened = 0
        self.reused = 0

    def enqueue(self, waiter: W) -> None:
        self.waiting.append(waiter)

    def discard(self, waiter: W) -> None:
        """A waiter gave up (cancelled, deadline): it no longer wants a slot."""
        with contextlib.suppress(ValueError):
            self.waiting.remove(waiter)

    def assign(self, now: float) -> Plan[C, W]:
        plan: Plan[C, W] = Plan()
        keep: list[C] = []
        for conn in self.connections:
            if conn.is_closed():
                continue
            if conn.has_expired(now):
                plan.to_close.append(conn)
                continue
            keep.append(conn)
        self.connections = keep
        while self.waiting:
            found = next((c for c in self.connections if c.is_available()), None)
            if found is not None:
                conn = found
                if conn not in plan.to_open:
                    self.reused += 1
            else:
                if len(self.connections) >= self.max_connections:
                    break
                conn = self._new_connection()
                self.connections.append(conn)
                plan.to_open.append(conn)
                self.opened += 1
            conn.reserve()
            plan.assigned.append((self.waiting.popleft(), conn))
        return plan

    def close_all(self) -> list[C]:
        conns, self.connections = self.connections, []
        return conns

    def next_expiry(self, expiries: Callable[[C], float | None]) -> float | None:
        times = [t for t in map(expiries, self.connections) if t is not None]
        return min(times) if times else None
