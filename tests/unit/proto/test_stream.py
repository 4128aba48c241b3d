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
