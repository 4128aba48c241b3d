import pytest

from dnstls.proto.framing import encode, encode_many
from dnstls.proto.stream import CloseReason, StreamLimits, StreamState

Q = b"\x00\x01" + b"\x00" * 10 + b"q"


def state(**kw: object) -> StreamState:
    return StreamState(StreamLimits(**kw), now=100.0)  # type: ignore[arg-type]


def test_idle_timeout_from_start() -> None:
    s = state(idle_timeout=10.0)
    assert s.deadline() == 110.0
    assert s.expired(109.9) is None
    assert s.expired(110.0) is CloseReason.IDLE


def test_no_idle_timeout_while_queries_in_flight() -> None:
    s = state(idle_timeout=10.0)
    assert s.feed(encode(Q), 101.0) == [Q]
    assert s.deadline() is None
    assert s.expired(1000.0) is None
    s.answered(105.0)
    assert s.deadline() == 115.0


def test_idle_timer_restarts_only_after_a_whole_message() -> None:
    s = state(idle_timeout=10.0, message_timeout=3.0)
    s.feed(encode(Q)[:5], 101.0)  # partial message: message deadline applies
    assert s.deadline() == 104.0
    s.feed(encode(Q)[5:7], 103.0)  # trickling does not extend it
    assert s.expired(104.0) is CloseReason.MESSAGE_TIMEOUT


def test_message_deadline_restarts_for_the_next_partial_message() -> None:
    s = state(message_timeout=3.0)
    wire = encode(Q)
    assert s.feed(wire[:4], 101.0) == []
    assert s.feed(wire[4:] + wire[:3], 103.5) == [Q]
    assert s.deadline() == 106.5


def test_backlog_beyond_in_flight_bound_and_reading_paused() -> None:
    s = state(max_in_flight=2)
    out = s.feed(encode_many([Q] * 5), 101.0)
    assert out == [Q, Q]
    assert not s.reading_allowed
    assert s.pending == 5
    assert s.answered(102.0) == [Q]
    assert s.answered(102.0) == [Q]
    assert s.answered(102.0) == [Q]
    assert s.pending == 2 and s.in_flight == 2
    s.answered(103.0)
    s.answered(103.0)
    assert s.reading_allowed and s.pending == 0


def test_query_limit_finishes_cleanly() -> None:
    s = state(max_queries=3)
    assert s.feed(encode_many([Q] * 5), 101.0) == [Q, Q, Q]
    assert s.stop_reading and not s.finished
    assert s.feed(encode(Q), 101.5) == []
    for _ in range(3):
        s.answered(102.0)
    assert s.finished


def test_write_timeout() -> None:
    s = state(write_timeout=4.0)
    s.feed(encode(Q), 101.0)
    s.write_blocked(102.0)
    assert s.deadline() == 106.0
    assert s.expired(106.0) is CloseReason.WRITE_TIMEOUT
    s.write_unblocked()
    assert s.expired(106.0) is None


def test_output_bound() -> None:
    s = state(max_pending_output=2048)
    assert not s.output_exceeded(2048)
    assert s.output_exceeded(2049)


def test_shutdown_answers_what_was_received() -> None:
    s = state()
    s.feed(encode_many([Q, Q]), 101.0)
    s.shutdown()
    assert s.feed(encode(Q), 101.0) == []
    assert not s.finished
    s.answered(102.0)
    s.answered(102.0)
    assert s.finished


def test_zero_length_prefix_breaks_the_stream_after_the_messages_before_it() -> None:
    s = state()
    assert s.feed(encode_many([Q, Q]) + b"\x00\x00" + encode(Q), 101.0) == [Q, Q]
    assert s.broken is CloseReason.FRAMING and s.stop_reading and not s.finished
    assert s.feed(encode(Q), 101.1) == []
    s.answered(102.0)
    s.answered(102.0)
    assert s.finished


def test_zero_length_prefix_alone_finishes_at_once() -> None:
    s = state()
    assert s.feed(b"\x00\x00", 101.0) == []
    assert s.finished and s.broken is CloseReason.FRAMING


def test_abandon_drops_the_rest_and_the_backlog() -> None:
    s = state(max_in_flight=2)
    assert s.feed(encode_many([Q, Q, Q, Q]), 101.0) == [Q, Q]
    s.abandon(1)  # the second message had no header
    assert s.broken is CloseReason.BAD_MESSAGE and s.pending == 1
    assert s.answered(102.0) == []
    assert s.finished


@pytest.mark.parametrize("kw", [{"idle_timeout": 0}, {"max_in_flight": 0},
                                {"max_queries": -1}, {"max_pending_output": 10}])
def test_invalid_limits(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StreamLimits(**kw)  # type: ignore[arg-type]


def test_backlog_grows_while_full() -> None:
    s = state(max_in_flight=1)
    assert s.feed(encode_many([Q, Q]), 101.0) == [Q]
    assert s.feed(encode(Q), 101.5) == []
    assert s.pending == 3 and not s.reading_allowed


@pytest.mark.parametrize("limits", [{}, {"max_in_flight": 3}, {"max_in_flight": 2,
                                                               "max_queries": 6}])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_answered_many_is_answered_that_many_times(limits: dict[str, int],
                                                   count: int) -> None:
    one, many = state(**limits), state(**limits)
    wire = encode_many([Q] * 8)
    assert one.feed(wire, 101.0) == many.feed(wire, 101.0)
    while one.in_flight >= count:
        joined: list[bytes] = []
        for _ in range(count):
            joined += one.answered(102.0)
        assert many.answered_many(count, 102.0) == joined
        assert (one.in_flight, one.pending, one.queries, one.reading_allowed,
                one.finished, one.deadline()) == (
                    many.in_flight, many.pending, many.queries, many.reading_allowed,
                    many.finished, many.deadline())


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("idle", [False, True])
@pytest.mark.parametrize("blocked", [None, 101.0, 120.0])
def test_deadline_is_the_earliest_of_the_three(partial: bool, idle: bool,
                                               blocked: float | None) -> None:
    s = state(idle_timeout=10.0, message_timeout=5.0, write_timeout=4.0)
    if not idle:
        s.feed(encode(Q), 100.0)  # in flight: no idle timer
    if partial:
        s.feed(encode(Q)[:3], 103.0)  # message deadline 108
    if blocked is not None:
        s.write_blocked(blocked)
    expected = [at for at, on in ((110.0, idle and not partial), (108.0, partial),
                                  ((blocked or 0.0) + 4.0, blocked is not None)) if on]
    assert s.deadline() == (min(expected) if expected else None)


def _snapshot(s: StreamState) -> tuple[object, ...]:
    decoder = s._decoder
    return (s.in_flight, s.queries, s.stop_reading, s.broken, list(s._backlog),
            s._idle_since, s._message_started, s._write_blocked,
            bytes(decoder._buf), decoder.in_message, s.deadline(), s.reading_allowed)


_TAKE_ONE_SETUPS: dict[str, tuple[dict[str, int], list[tuple[str, object]]]] = {
    "fresh": ({}, []),
    "after an answer": ({}, [("feed", encode(Q)), ("answered", None)]),
    "one in flight": ({}, [("feed", encode(Q))]),
    "partial buffered": ({}, [("feed", encode(Q)[:5])]),
    "length byte buffered": ({}, [("feed", b"\x00")]),
    "shut down": ({}, [("shutdown", None)]),
    "query limit": ({"max_queries": 3}, []),
    "write blocked": ({}, [("write_blocked", None)]),
    "bound of one, free": ({"max_in_flight": 1}, [("feed", encode(Q)), ("answered", None)]),
    "bound of one, full": ({"max_in_flight": 1}, [("feed", encode(Q))]),
    "backlog": ({"max_in_flight": 1}, [("feed", encode_many([Q, Q, Q]))]),
    "broken": ({}, [("feed", b"\x00\x00")]),
}

_TAKE_ONE_READS = {
    "one message": encode(Q),
    "a one-byte message": b"\x00\x01q",
    "two messages": encode_many([Q, Q]),
    "one and a half": encode(Q) + encode(Q)[:4],
    "half": encode(Q)[:6],
    "length only": b"\x00\x0d",
    "one byte": b"\x00",
    "zero length": b"\x00\x00",
    "zero length and more": b"\x00\x00" + encode(Q),
    "a bytearray": bytearray(encode(Q)),
    "a memoryview": memoryview(encode(Q)),
}


@pytest.mark.parametrize("setup", list(_TAKE_ONE_SETUPS))
@pytest.mark.parametrize("read", list(_TAKE_ONE_READS))
def test_take_one_is_feed_or_changes_nothing(setup: str, read: str) -> None:
    """take_one either returns what feed returns for the read, leaving the very state
    feed leaves, or returns None and changes nothing (the caller then calls feed)."""
    limits, steps = _TAKE_ONE_SETUPS[setup]
    data = _TAKE_ONE_READS[read]
    twins = []
    for _ in range(2):
        s = state(**limits)
        for i, (step, arg) in enumerate(steps):
            now = 100.0 + i
            if step == "feed":
                s.feed(arg, now)  # type: ignore[arg-type]
            elif step == "answered":
                s.answered(now)
            elif step == "shutdown":
                s.shutdown()
            else:
                s.write_blocked(now)
        twins.append(s)
    a, b = twins
    before = _snapshot(a)
    took = a.take_one(data, 120.0)  # type: ignore[arg-type]
    if took is None:
        assert _snapshot(a) == before
    else:
        assert type(took) is bytes
        assert b.feed(data, 120.0) == [took]  # type: ignore[arg-type]
        assert _snapshot(a) == _snapshot(b)
    # every usual read of a one-query-at-a-time client takes the shortcut
    expected = (setup in ("fresh", "after an answer", "one in flight", "write blocked",
                          "bound of one, free")
                and read in ("one message", "a one-byte message"))
    assert (took is not None) == expected


def test_take_one_then_answered_is_idle_again() -> None:
    s = state(idle_timeout=10.0)
    assert s.take_one(encode(Q), 101.0) == Q
    assert s.deadline() is None and s.in_flight == 1 and s.queries == 1
    assert s.answered_many(1, 102.0) == []
    assert s.deadline() == 112.0 and s.in_flight == 0 and s.reading_allowed
