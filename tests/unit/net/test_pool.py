"""StreamUpstream's pool logic: reuse, limits, expiry, failures, retries and
cancellation, with real connections on scripted fake transports (no sockets; the
scripted upstream is handed to the pool as its ``connect``)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import dns.message
import dns.name
import pytest

from dnstls.compiled import is_compiled
from dnstls.errors import (
    CertificateError,
    NetworkError,
    PinMismatch,
    QueryTimeout,
    TLSAuthenticationError,
)
from dnstls.net.pool import ConnectionLost, StreamUpstream, UpstreamConnection
from dnstls.proto.framing import FrameDecoder, encode
from dnstls.upstreams import UpstreamSpec


class ScriptedTransport:
    """The transport of one connection to a scripted upstream: each framed query written
    is answered as :class:`Script` says (from the loop, as a real transport would)."""

    def __init__(self, script: Script, conn: UpstreamConnection) -> None:
        self.script = script
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.decoder = FrameDecoder()
        self.queries = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.queries += 1
            script = self.script
            action = script.answers.popleft() if script.answers else "answer"
            if action == "lost":
                self.loop.call_soon(self._lost)
            elif action == "hang":
                self.loop.create_task(self._answer_when_released(frame))
            else:
                self.loop.call_soon(self._answer, frame)

    def writelines(self, items: list[bytes]) -> None:
        for item in items:
            self.write(item)

    def _answer(self, frame: bytes) -> None:
        if not self.closing:
            answer = dns.message.make_response(dns.message.from_wire(frame)).to_wire()
            self.conn.data_received(encode(answer))

    async def _answer_when_released(self, frame: bytes) -> None:
        await self.script.hang.wait()
        self._answer(frame)

    def _lost(self) -> None:
        if not self.closing:
            self.closing = True
            self.conn.connection_lost(ConnectionResetError())

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.conn.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Script:
    """A scripted upstream, handed to StreamUpstream as its ``connect``: each connection
    takes the next connect outcome (None: connected), each query the next answer
    (``answer``, ``hang`` until :attr:`hang` is set, ``lost``: connection reset)."""

    def __init__(self) -> None:
        self.connect_outcomes: deque[Exception | None] = deque()
        self.answers: deque[str] = deque()
        self.hang = asyncio.Event()
        self.made: list[UpstreamConnection] = []
        self.transports: list[ScriptedTransport] = []

    async def connect(self, conn: UpstreamConnection) -> None:
        self.made.append(conn)
        outcome = self.connect_outcomes.popleft() if self.connect_outcomes else None
        if outcome is not None:
            raise outcome
        transport = ScriptedTransport(self, conn)
        self.transports.append(transport)
        conn.connection_made(transport)  # type: ignore[arg-type]


def make(now: list[float], *, backoff: bool = False, **kw: Any,
         ) -> tuple[StreamUpstream, Script]:
    kw.setdefault("max_connections", 2)
    kw.setdefault("max_queries_per_connection", 2)
    script = Script()
    pool = StreamUpstream(UpstreamSpec("127.0.0.1", 853, "tcp", **kw), clock=lambda: now[0],
                          connect=script.connect, connect_backoff=backoff)
    return pool, script


QUERY = dns.message.make_query("example.com.", "A")
FAR = 1e9  # deadlines never reached unless a test says so


async def test_sequential_queries_reuse_one_connection() -> None:
    now = [0.0]
    pool, script = make(now)
    for _ in range(3):
        await pool.exchange(QUERY, deadline=FAR)
    stats = pool.statistics()
    assert (stats["connections_opened"], stats["connections_reused"]) == (1, 2)
    assert len(script.made) == 1 and script.transports[0].queries == 3
    await pool.aclose()


async def test_limits_then_waiting_then_handover() -> None:
    now = [0.0]
    pool, script = make(now, max_connections=1, max_queries_per_connection=2)
    script.answers.extend(["hang", "hang"])
    tasks = [asyncio.create_task(pool.exchange(QUERY, deadline=FAR)) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(script.made) == 1 and script.made[0].state.reserved == 2
    assert pool.statistics()["waiting"] == 1
    script.hang.set()
    await asyncio.gather(*tasks)
    assert script.transports[0].queries == 3 and script.made[0].state.reserved == 0
    assert pool.statistics()["waiting"] == 0
    await pool.aclose()


async def test_idle_connection_expires_with_injected_clock() -> None:
    now = [100.0]
    pool, script = make(now, idle_timeout=8.0)
    await pool.exchange(QUERY, deadline=FAR)
    (conn,) = script.made
    assert conn.state.idle_expiry == 108.0
    now[0] = 107.0
    pool.reassign()
    assert not conn.is_closed()
    now[0] = 108.0
    pool.reassign()
    assert conn.is_closed() and pool.state.connections == []
    await pool.exchange(QUERY, deadline=FAR)
    assert len(script.made) == 2
    await pool.aclose()


async def test_connect_failure_is_raised_and_the_next_query_reconnects() -> None:
    now = [0.0]
    pool, script = make(now)
    script.connect_outcomes.extend([NetworkError("refused"), CertificateError("bad cert")])
    with pytest.raises(NetworkError, match="refused"):
        await pool.exchange(QUERY, deadline=FAR)
    with pytest.raises(CertificateError):
        await pool.exchange(QUERY, deadline=FAR)
    await pool.exchange(QUERY, deadline=FAR)
    assert [c.is_closed() for c in script.made] == [True, True, False]
    assert pool.state.connections == [script.made[2]]
    await pool.aclose()


async def _outcomes(pool: StreamUpstream, n: int) -> list[str]:
    """``n`` concurrent exchanges: 'ok' or the error's class and text."""
    results = await asyncio.gather(*(pool.exchange(QUERY, deadline=FAR) for _ in range(n)),
                                   return_exceptions=True)
    return ["ok" if isinstance(r, dns.message.Message) else f"{type(r).__name__}: {r}"
            for r in results]


async def test_connect_backoff_fails_queries_at_once_then_probes_with_one_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    """A lone upstream that refuses: no connection per burst of queries (a SYN storm
    toward a dead server); after the hold, one probe connection; recovery logged once."""
    caplog.set_level(logging.INFO, logger="dnstls.net.pool")
    now = [0.0]
    pool, script = make(now, backoff=True, max_queries_per_connection=100)
    refused = NetworkError("connecting to tcp://127.0.0.1:853 failed: Connection refused")
    script.connect_outcomes.extend([refused, refused])
    assert await _outcomes(pool, 30) == [f"NetworkError: {refused}"] * 30
    assert len(script.made) == 1  # the burst shared one connect
    now[0] = 0.4  # held back for 1 s: every query fails at once, nothing is opened
    assert set(await _outcomes(pool, 30)) == {
        f"NetworkError: {refused} (not retried for 0.6 s)"}
    assert len(script.made) == 1
    now[0] = 1.0  # the hold is over: one query probes, the others still fail at once
    outcomes = await _outcomes(pool, 30)
    assert outcomes.count(f"NetworkError: {refused}") == 1  # the probe, refused again
    assert outcomes.count(f"NetworkError: {refused} (retrying)") == 29
    assert len(script.made) == 2
    now[0] = 1.9  # held for another second
    assert await _outcomes(pool, 1) == [f"NetworkError: {refused} (not retried for 0.1 s)"]
    now[0] = 2.0  # the probe connects (the queries beside it do not wait for it) ...
    outcomes = await _outcomes(pool, 30)
    assert outcomes[0] == "ok"
    assert outcomes[1:] == [f"NetworkError: {refused} (retrying)"] * 29
    assert await _outcomes(pool, 30) == ["ok"] * 30  # ... and every query is answered
    assert len(script.made) == 3
    stats = pool.statistics()
    assert stats["connect_failures"] == 0 and stats["connect_backoff_failures"] == 89
    assert stats["connection_errors"] == 2
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"upstream tcp://127.0.0.1:853 unreachable: {refused}; trying one "
                    "connection every 1 s, queries meanwhile fail at once"),
        ("INFO", "upstream tcp://127.0.0.1:853 reachable again (after 2 failed connects)")]
    await pool.aclose()


async def test_connect_backoff_keeps_the_kind_of_error_and_holds_one_second() -> None:
    now = [0.0]
    pool, script = make(now, backoff=True)
    mismatch = PinMismatch(["expected="], ["seen="])
    script.connect_outcomes.extend([mismatch] * 7 + [CertificateError("expired")])
    holds = []
    for _ in range(7):
        with pytest.raises(PinMismatch):
            await pool.exchange(QUERY, deadline=FAR)
        with pytest.raises(PinMismatch) as info:  # held: the same error, for the EDE
            await pool.exchange(QUERY, deadline=FAR)
        assert info.value.expected == ("expected=",) and info.value.seen == ("seen=",)
        holds.append(pool.hold.retry_at - now[0])
        now[0] = pool.hold.retry_at
    assert holds == [1.0] * 7
    with pytest.raises(CertificateError) as first:
        await pool.exchange(QUERY, deadline=FAR)
    with pytest.raises(TLSAuthenticationError,
                       match=r"expired \(not retried for 1\.0 s\)") as held:
        await pool.exchange(QUERY, deadline=FAR)
    # raised from the error it restates (the forwarder reports that one when it is down)
    assert held.value.__cause__ is first.value
    await pool.aclose()


@pytest.mark.parametrize(("since_failure", "text"), [
    (0.0, "not retried for 1.0 s"), (0.36, "not retried for 0.6 s"),
    (0.9, "not retried for 0.1 s"), (0.96, "retried within 0.1 s"),
    (1.0 - 1e-9, "retried within 0.1 s"), (1.0, None)])
async def test_connect_backoff_text_names_a_wait_it_keeps(since_failure: float,
                                                         text: str | None) -> None:
    """The hold left, in tenths of a second rounded down (so the text stays true), or
    "within 0.1 s" below that: never "not retried for 0.0 s" while it is still held
    (a query 40 ms before the probe read that); None: this query is the probe."""
    now = [0.0]
    pool, script = make(now, backoff=True)
    script.connect_outcomes.extend([NetworkError("refused")] * 2)
    with pytest.raises(NetworkError):
        await pool.exchange(QUERY, deadline=FAR)
    now[0] = since_failure
    with pytest.raises(NetworkError) as info:
        await pool.exchange(QUERY, deadline=FAR)
    assert str(info.value) == ("refused" if text is None else f"refused ({text})")
    await pool.aclose()


async def test_connect_backoff_a_hanging_probe_does_not_hold_other_queries() -> None:
    """Blackholed (the connect never completes): while the probe waits for
    connect_timeout, the other queries fail at once instead of waiting with it."""
    now = [0.0]
    pool, script = make(now, backoff=True, connect_timeout=0.2,
                        max_queries_per_connection=100)
    stuck = asyncio.Event()

    async def connect(conn: UpstreamConnection) -> None:
        script.made.append(conn)
        await stuck.wait()  # never set: the connect times out

    pool.connect = connect
    assert set(await _outcomes(pool, 5)) == {
        "NetworkError: connecting to tcp://127.0.0.1:853 timed out"}
    now[0] = 1.0
    probe = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert set(await _outcomes(pool, 20)) == {
        "NetworkError: connecting to tcp://127.0.0.1:853 timed out (retrying)"}
    assert loop.time() - start < 0.1  # not the probe's 0.2 s
    with pytest.raises(NetworkError, match="timed out"):
        await probe
    assert len(script.made) == 2
    await pool.aclose()


async def test_connect_backoff_holds_nothing_back_while_a_connection_is_up() -> None:
    """Only an upstream with no connection up is held back: after a second connection
    failed, queries still go on (to a new one, since the first is busy)."""
    now = [0.0]
    pool, script = make(now, backoff=True, max_queries_per_connection=1)
    script.answers.append("hang")
    first = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))  # connection 0, busy
    for _ in range(3):
        await asyncio.sleep(0)
    script.connect_outcomes.append(NetworkError("refused"))
    with pytest.raises(NetworkError, match="refused"):
        await pool.exchange(QUERY, deadline=FAR)  # connection 1 fails
    assert pool.hold.failures == 1 and not first.done()
    await pool.exchange(QUERY, deadline=FAR)  # not held: connection 0 is up
    assert len(script.made) == 3 and pool.hold.failures == 0
    script.hang.set()
    await first
    await pool.aclose()


def connect_first_times_out(
        script: Script, release: asyncio.Event, *,
        then: Callable[[UpstreamConnection], Awaitable[None]] | None = None,
        ) -> Callable[[UpstreamConnection], Awaitable[None]]:
    """A ``connect`` whose first attempt hangs until ``release`` and then times out (as
    ``connect_timeout`` would end it); later attempts go to ``then`` (default: as
    ``script`` says)."""

    async def connect(conn: UpstreamConnection) -> None:
        if not script.made:
            script.made.append(conn)
            await release.wait()
            raise TimeoutError
        await (then or script.connect)(conn)

    return connect


async def test_a_query_that_joined_a_connect_that_timed_out_connects_on_its_own() -> None:
    """A connect attempt that times out fails the query that started it; a query that
    only joined it while it was under way does not fail at once with that attempt's
    "timed out" (another query's clock): it gets a connect of its own, within its own
    deadline. (dnstls.Client: a query right after one that timed out failed at once.)"""
    now = [0.0]
    pool, script = make(now, max_connections=1)
    release = asyncio.Event()
    pool.connect = connect_first_times_out(script, release)
    first = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    for _ in range(3):
        await asyncio.sleep(0)
    late = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))  # joins connection 0
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(script.made) == 1 and script.made[0].state.reserved == 2
    release.set()
    with pytest.raises(NetworkError, match="timed out"):
        await first  # its own attempt: not retried
    assert isinstance(await late, dns.message.Message)
    assert len(script.made) == 2 and script.transports[0].queries == 1
    await pool.aclose()


async def test_a_query_that_joined_a_timed_out_connect_still_keeps_its_deadline() -> None:
    """The connect of its own is bounded by the query's own deadline: QueryTimeout when
    it passes while that connect is still under way."""
    now = [0.0]
    pool, script = make(now, max_connections=1)
    release, stuck = asyncio.Event(), asyncio.Event()

    async def hang(conn: UpstreamConnection) -> None:
        script.made.append(conn)
        await stuck.wait()  # never set

    pool.connect = connect_first_times_out(script, release, then=hang)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    await asyncio.sleep(0)
    late = asyncio.create_task(pool.exchange(QUERY, deadline=loop.time() + 0.05))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(NetworkError, match="timed out"):
        await first
    with pytest.raises(QueryTimeout, match="no connection"):
        await late  # waited on connection 1 until its own deadline, not beyond
    assert len(script.made) == 2
    await pool.aclose()


async def test_a_query_that_joined_a_refused_connect_shares_its_error() -> None:
    """Only a timeout is the attempt's own: a refusal (or a failed authentication) is
    as true for every query that joined the attempt, which all fail with it at once
    (one connect per burst toward a refusing server, as before); with connect back-off
    (the services) the hold decides, so a joined timeout is not retried there either."""
    now = [0.0]
    pool, script = make(now, max_connections=1, max_queries_per_connection=100)
    script.connect_outcomes.append(NetworkError("refused"))
    assert await _outcomes(pool, 5) == ["NetworkError: refused"] * 5
    assert len(script.made) == 1
    await pool.aclose()

    pool, script = make(now, backoff=True, max_connections=1)
    release = asyncio.Event()
    pool.connect = connect_first_times_out(script, release)
    tasks = [asyncio.create_task(pool.exchange(QUERY, deadline=FAR)) for _ in range(2)]
    for _ in range(3):
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r) for r in results] == [NetworkError, NetworkError]
    assert len(script.made) == 1
    await pool.aclose()


async def test_lost_connection_is_retried_once_on_a_new_one() -> None:
    now = [0.0]
    pool, script = make(now)
    script.answers.append("lost")
    await pool.exchange(QUERY, deadline=FAR)
    assert len(script.made) == 2 and pool.statistics()["retries"] == 1
    script.answers.extend(["lost", "lost"])
    with pytest.raises(NetworkError, match="reset"):
        await pool.exchange(QUERY, deadline=FAR)
    assert all(c.state.reserved == 0 for c in script.made)
    await pool.aclose()


async def test_cancelled_waiter_and_cancelled_query_leak_no_slot() -> None:
    now = [0.0]
    pool, script = make(now, max_connections=1, max_queries_per_connection=1)
    script.answers.append("hang")
    running = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    waiting = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    for _ in range(5):
        await asyncio.sleep(0)
    assert pool.statistics()["waiting"] == 1
    waiting.cancel()
    running.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    (conn,) = script.made
    assert conn.state.reserved == 0 and pool.statistics()["waiting"] == 0
    assert conn.is_available()
    await pool.exchange(QUERY, deadline=FAR)
    await pool.aclose()


async def test_deadline_while_waiting_for_a_slot() -> None:
    now = [0.0]
    pool, script = make(now, max_connections=1, max_queries_per_connection=1)
    script.answers.append("hang")
    running = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    with pytest.raises(QueryTimeout, match="no connection"):
        await pool.exchange(QUERY, deadline=loop.time())  # already due: no sleeping
    assert pool.statistics()["waiting"] == 0
    script.hang.set()
    await running
    assert script.made[0].state.reserved == 0
    await pool.aclose()


async def test_closed_pool_refuses_and_repr() -> None:
    now = [0.0]
    pool, script = make(now)
    await pool.exchange(QUERY, deadline=FAR)
    assert repr(pool) == "<StreamUpstream tcp://127.0.0.1:853 [connections=1, waiting=0]>"
    await pool.aclose()
    assert script.made[0].is_closed()
    with pytest.raises(NetworkError, match="closed"):
        await pool.exchange(QUERY, deadline=FAR)


async def test_aclose_fails_queries_in_flight_without_a_retry() -> None:
    now = [0.0]
    pool, script = make(now)
    script.answers.extend(["hang", "hang"])
    pending = [asyncio.create_task(pool.exchange(QUERY, deadline=FAR)) for _ in range(2)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert pool.statistics()["in_flight"] == 2
    await pool.aclose()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert [str(r) for r in results] == ["tcp://127.0.0.1:853: pool is closed"] * 2
    assert all(isinstance(r, NetworkError) for r in results)
    # no connection opened after aclose() to retry them on
    assert len(script.made) == 1 and pool.statistics()["retries"] == 0


async def test_a_free_slot_on_a_connected_connection_is_taken_without_queueing() -> None:
    now = [0.0]
    pool, script = make(now, max_connections=1, max_queries_per_connection=3)
    script.answers.extend(["hang", "hang"])
    first = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    for _ in range(5):
        await asyncio.sleep(0)
    calls: list[int] = []
    original = pool.reassign

    def counted() -> None:
        calls.append(1)
        original()

    # Compiled, the pool's methods cannot be replaced: only the pure pass counts calls.
    counting = not is_compiled("dnstls.net.pool")
    if counting:
        pool.reassign = counted  # type: ignore[method-assign]
    second = asyncio.create_task(pool.exchange(QUERY, deadline=FAR))
    await asyncio.sleep(0)
    (conn,) = script.made
    assert conn.state.reserved == 2 and calls == []  # no waiter, no reassign
    assert pool.statistics()["waiting"] == 0
    script.hang.set()
    await asyncio.gather(first, second)
    assert conn.state.reserved == 0  # the last release re-arms the idle timer:
    assert bool(calls) == counting
    assert pool.statistics()["connections_reused"] == 1
    await pool.aclose()


async def test_no_slot_skipping_while_others_wait() -> None:
    now = [0.0]
    pool, script = make(now, max_connections=1, max_queries_per_connection=1)
    script.answers.extend(["hang", "hang"])
    tasks = [asyncio.create_task(pool.exchange(QUERY, deadline=FAR)) for _ in range(2)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert pool.statistics()["waiting"] == 1
    assert pool._acquire_now() is None  # the queued query gets the next slot first
    script.hang.set()
    await asyncio.gather(*tasks)
    await pool.aclose()


# ---- a real UpstreamConnection over a fake transport: batched writes, the deadline timer


class RecordingTransport:
    """``writes``: the bytes of each write call (``writelines`` joined: one send);
    ``records``: each item written (over TLS, one record each)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.records: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.records.append(bytes(data))

    def writelines(self, items: list[bytes]) -> None:
        self.writes.append(b"".join(items))
        self.records.extend(bytes(item) for item in items)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.socket if name == "socket" and self.socket is not None else default

    socket: RecordingSocket | None = None  # set by _connection


class RecordingSocket:
    """The transport's socket: records setsockopt calls, or refuses them."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.options: list[tuple[int, int, int]] = []
        self.refuse = refuse

    def setsockopt(self, level: int, option: int, value: int) -> None:
        if self.refuse:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.options.append((level, option, value))


def _question(name: str) -> bytes:
    return dns.name.from_text(name).to_wire() + b"\x00\x01\x00\x01"  # type: ignore[operator]


async def _connection(sock: RecordingSocket | None = None,
                      ) -> tuple[StreamUpstream, UpstreamConnection, RecordingTransport]:
    upstream = StreamUpstream(UpstreamSpec("127.0.0.1", 853, "tcp"))
    conn = UpstreamConnection(upstream)
    transport = RecordingTransport()
    transport.socket = sock
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.state.connected(upstream.clock())
    upstream.state.connections.append(conn)
    return upstream, conn, transport


def _frames(data: bytes) -> list[bytes]:
    return FrameDecoder().feed(data)


async def test_queries_of_one_loop_iteration_go_out_in_one_write() -> None:
    upstream, conn, transport = await _connection()
    names = [f"n{i}.example." for i in range(5)]
    tasks = [asyncio.create_task(upstream.exchange_wire(
        _question(n), deadline=FAR, flags=0x0100, payload=1232, do=False)) for n in names]
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1
    sent = _frames(transport.writes[0])
    assert len(sent) == 5
    # ... but each query is an item of its own (one TLS record per query)
    assert [_frames(record) for record in transport.records] == [[frame] for frame in sent]
    ids = {struct.unpack_from("!H", frame)[0] for frame in sent}
    assert len(ids) == 5  # distinct random IDs
    # answer them in reverse order, all in one read
    answers = []
    for frame in reversed(sent):
        response = dns.message.make_response(dns.message.from_wire(frame))
        answers.append(encode(response.to_wire()))
    conn.data_received(b"".join(answers))
    results = await asyncio.gather(*tasks)
    for name, wire in zip(names, results, strict=True):
        assert dns.message.from_wire(wire).question[0].name == dns.name.from_text(name)
    assert conn.state.reserved == 0 and conn.state.in_flight == {}
    await upstream.aclose()


async def test_a_query_is_not_written_on_a_connection_closed_before_the_flush() -> None:
    upstream, conn, transport = await _connection()
    task = asyncio.create_task(upstream.exchange_wire(
        _question("a.example."), deadline=FAR, flags=0, payload=1232, do=False))
    await asyncio.sleep(0)
    conn.close("test")  # before the loop iteration's flush
    with pytest.raises(NetworkError):
        await task
    assert transport.writes == []
    await upstream.aclose()


async def test_deadline_timer_fails_the_query_and_retires_a_silent_connection() -> None:
    upstream, conn, transport = await _connection()
    loop = asyncio.get_running_loop()
    with pytest.raises(QueryTimeout, match="before the deadline"):
        await upstream.exchange_wire(_question("a.example."), deadline=loop.time() + 0.05,
                                     flags=0, payload=1232, do=False)
    assert len(transport.writes) == 1
    assert conn.is_closed() and "half-open" in (conn.state.close_reason or "")
    assert conn._pending == {} and upstream.counters.timeouts == 1
    await upstream.aclose()


async def test_a_failed_write_closes_the_connection_and_fails_its_queries_at_once() -> None:
    upstream, conn, transport = await _connection()

    def broken(data: bytes) -> None:
        raise RuntimeError("TLS layer broke")

    transport.write = broken  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(NetworkError):
        # retried once on a new connection (to a closed port here), which fails too
        await upstream.exchange_wire(_question("a.example."), deadline=loop.time() + 30,
                                     flags=0, payload=1232, do=False)
    assert loop.time() - start < 10  # not at the deadline
    assert conn.is_closed() and "write to" in (conn.state.close_reason or "")
    assert upstream.counters.retries == 1
    await upstream.aclose()


# ---- start_wire: the same exchange without a task, answered through a callback


class Outcome:
    """Records the one callback of a start_wire; fails the test on a second call."""

    def __init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()

    def __call__(self, answer: bytes | None, exc: BaseException | None) -> None:
        assert not self.done.done(), "callback called twice"
        self.done.set_result((answer, exc))


async def test_start_wire_batches_writes_and_answers_through_callbacks() -> None:
    upstream, conn, transport = await _connection()
    names = [f"n{i}.example." for i in range(5)]
    outcomes = [Outcome() for _ in names]
    for name, outcome in zip(names, outcomes, strict=True):
        upstream.start_wire(_question(name), deadline=FAR, flags=0x0100, payload=1232,
                            do=False, callback=outcome)
    assert not any(o.done.done() for o in outcomes)  # never from the call itself
    assert upstream.counters.queries_sent == 5 and conn.state.reserved == 5
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1 and len(_frames(transport.writes[0])) == 5
    sent = _frames(transport.writes[0])
    assert [_frames(record) for record in transport.records] == [[frame] for frame in sent]
    conn.data_received(b"".join(
        encode(dns.message.make_response(dns.message.from_wire(f)).to_wire())
        for f in reversed(sent)))
    for name, outcome in zip(names, outcomes, strict=True):
        answer, exc = outcome.done.result()  # answered within data_received
        assert exc is None and answer is not None
        assert dns.message.from_wire(answer).question[0].name == dns.name.from_text(name)
    assert conn.state.reserved == 0 and conn.state.in_flight == {} and conn._pending == {}
    assert upstream.statistics()["in_flight"] == 0
    await upstream.aclose()


async def test_start_wire_deadline_timer_fails_with_timeout_and_retires_a_silent_connection(
        ) -> None:
    upstream, conn, transport = await _connection()
    loop = asyncio.get_running_loop()
    outcome = Outcome()
    upstream.start_wire(_question("a.example."), deadline=loop.time() + 0.05, flags=0,
                        payload=1232, do=False, callback=outcome)
    answer, exc = await outcome.done
    assert answer is None and isinstance(exc, QueryTimeout)
    assert len(transport.writes) == 1
    assert conn.is_closed() and "half-open" in (conn.state.close_reason or "")
    assert conn._pending == {} and upstream.counters.timeouts == 1
    assert conn.state.reserved == 0
    await upstream.aclose()


async def test_start_wire_lost_connection_is_retried_once_then_fails() -> None:
    upstream, conn, transport = await _connection()
    outcome = Outcome()
    upstream.start_wire(_question("a.example."), deadline=FAR, flags=0, payload=1232,
                        do=False, callback=outcome)
    conn.close("test")  # before the flush: the query fails with ConnectionLost
    # retried once on a new connection (to a closed port here), which fails too
    answer, exc = await outcome.done
    assert answer is None and isinstance(exc, NetworkError)
    assert not isinstance(exc, ConnectionLost)
    assert transport.writes == [] and upstream.counters.retries == 1
    await upstream.aclose()


async def test_start_wire_aclose_fails_the_query_without_a_retry() -> None:
    upstream, _conn, _transport = await _connection()
    outcome = Outcome()
    upstream.start_wire(_question("a.example."), deadline=FAR, flags=0, payload=1232,
                        do=False, callback=outcome)
    await upstream.aclose()
    answer, exc = await outcome.done
    assert answer is None and isinstance(exc, NetworkError)
    assert str(exc) == f"{upstream.name}: pool is closed"
    assert upstream.counters.retries == 0 and upstream.state.connections == []


async def test_start_wire_failed_write_fails_at_once_after_one_retry() -> None:
    upstream, conn, transport = await _connection()

    def broken(data: bytes) -> None:
        raise RuntimeError("TLS layer broke")

    transport.write = broken  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome = Outcome()
    upstream.start_wire(_question("a.example."), deadline=loop.time() + 30, flags=0,
                        payload=1232, do=False, callback=outcome)
    _answer, exc = await outcome.done
    assert isinstance(exc, NetworkError) and loop.time() - start < 10
    assert conn.is_closed() and upstream.counters.retries == 1
    await upstream.aclose()


async def test_start_wire_without_a_free_slot_runs_the_exchange_in_a_task() -> None:
    upstream, conn, _transport = await _connection()
    while conn.state.is_available():  # every slot of the connection taken
        conn.state.reserve()
    outcome = Outcome()
    upstream.start_wire(_question("a.example."), deadline=FAR, flags=0, payload=1232,
                        do=False, callback=outcome)
    assert upstream._acquire_now() is None
    answer, exc = await outcome.done  # queued; a new connection to a closed port fails
    assert answer is None and isinstance(exc, NetworkError)
    await upstream.aclose()


async def test_start_wire_on_a_closed_pool_raises() -> None:
    upstream, _conn, _transport = await _connection()
    await upstream.aclose()
    with pytest.raises(NetworkError, match="closed"):
        upstream.start_wire(_question("a.example."), deadline=FAR, flags=0, payload=1232,
                            do=False, callback=Outcome())


async def test_a_failing_callback_does_not_cut_off_the_rest_of_the_read(
        caplog: pytest.LogCaptureFixture) -> None:
    upstream, conn, transport = await _connection()

    def broken(answer: bytes | None, exc: BaseException | None) -> None:
        raise RuntimeError("bug above the pool")

    second = Outcome()
    for name, callback in (("a.example.", broken), ("b.example.", second)):
        upstream.start_wire(_question(name), deadline=FAR, flags=0, payload=1232, do=False,
                            callback=callback)
    await asyncio.sleep(0)
    sent = _frames(transport.writes[0])
    conn.data_received(b"".join(
        encode(dns.message.make_response(dns.message.from_wire(f)).to_wire()) for f in sent))
    answer, exc = second.done.result()
    assert exc is None and answer is not None
    assert "internal error" in caplog.text
    assert conn.state.reserved == 0 and conn._pending == {}
    await upstream.aclose()


QUICKACK = (socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", -1), 1)
linux_only = pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"),
                                reason="TCP_QUICKACK is Linux's")


async def _three_in_flight(sock: RecordingSocket) -> tuple[
        StreamUpstream, UpstreamConnection, list[Outcome], list[bytes]]:
    """Three task-free queries sent on a connection over ``sock``, and their answers."""
    upstream, conn, transport = await _connection(sock)
    outcomes = [Outcome() for _ in range(3)]
    for i, outcome in enumerate(outcomes):
        upstream.start_wire(_question(f"q{i}.example."), deadline=FAR, flags=0x0100,
                            payload=1232, do=False, callback=outcome)
    for _ in range(3):
        await asyncio.sleep(0)
    answers = [encode(dns.message.make_response(dns.message.from_wire(f)).to_wire())
               for f in _frames(transport.writes[0])]
    return upstream, conn, outcomes, answers


@linux_only
async def test_reads_rearm_quickack_while_answers_are_outstanding_only() -> None:
    sock = RecordingSocket()
    upstream, conn, outcomes, answers = await _three_in_flight(sock)
    conn.data_received(answers[0])  # two still to come: ACK them at once
    assert sock.options == [QUICKACK]
    conn.data_received(answers[1][:5])  # part of one: still outstanding
    assert sock.options == [QUICKACK] * 2
    conn.data_received(answers[1][5:] + answers[2])  # the last: nothing more expected
    assert sock.options == [QUICKACK] * 2
    assert all(o.done.result()[1] is None for o in outcomes)
    await upstream.aclose()


@linux_only
async def test_a_socket_that_refuses_quickack_is_not_asked_again() -> None:
    sock = RecordingSocket(refuse=True)
    upstream, conn, outcomes, answers = await _three_in_flight(sock)
    conn.data_received(answers[0])
    sock.refuse = False
    conn.data_received(answers[1])  # still one outstanding, but not asked again
    assert sock.options == []
    conn.data_received(answers[2])
    assert all(o.done.result()[1] is None for o in outcomes)  # answers unaffected
    await upstream.aclose()
