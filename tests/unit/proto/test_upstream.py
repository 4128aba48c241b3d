"""Sans-IO upstream connection and pool state: IDs, matching, expiry, retirement."""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnstls.proto import edns
from dnstls.proto.framing import encode
from dnstls.proto.upstream import (
    ID_SPACE,
    ConnectHold,
    ConnectionState,
    PoolState,
    QueryRejected,
    ResponseIgnored,
    ResponseMalformed,
    ResponseMatched,
    Status,
    StreamBroken,
    check_response,
    new_message_id,
    prepare_query,
    question_key,
)

NAME = "tls://127.0.0.1:853"


def conn(max_in_flight: int = 10, *, idle: float = 8.0, now: float = 0.0,
         randbelow=None) -> ConnectionState:
    state = ConnectionState(NAME, max_in_flight=max_in_flight, idle_timeout=idle,
                            **({"randbelow": randbelow} if randbelow else {}))
    state.connected(now)
    return state


def send(state: ConnectionState, name: str = "example.com.", now: float = 0.0,
         rdtype: str = "A") -> tuple[int, dns.message.Message]:
    query = dns.message.make_query(name, rdtype)
    state.reserve()
    qid, wire = state.start_query(query, now)
    sent = dns.message.from_wire(wire[2:])
    assert sent.id == qid
    return qid, sent


def answer(query: dns.message.Message, **kw: object) -> bytes:
    response = dns.message.make_response(query)
    for key, value in kw.items():
        setattr(response, key, value)
    return encode(response.to_wire())


# ---------------------------------------------------------------- IDs


def test_ids_never_reuse_in_flight_ids_even_after_wrapping() -> None:
    rng = random.Random(7)
    live: set[int] = set()
    total = 0
    for _round in range(140):  # > 65,536 allocations against a busy in-flight set
        while len(live) < 1000:
            qid = new_message_id(live, randbelow=rng.randrange)
            assert qid not in live
            live.add(qid)
            total += 1
        for qid in rng.sample(sorted(live), 500):  # the rest stays in flight
            live.discard(qid)
    assert total > ID_SPACE


def test_connection_never_hands_out_an_in_flight_id() -> None:
    rng = random.Random(3)
    state = conn(max_in_flight=300, randbelow=lambda n: rng.randrange(16))  # collide often
    with pytest.raises(RuntimeError):  # not without a slot
        state.start_query(dns.message.make_query("a.", "A"), 0.0)
    ids = [send(state)[0] for _ in range(16)]
    assert sorted(ids) == list(range(16))
    more = send(state)[0]  # the small space is full: falls back to a scan
    assert more not in ids


def test_new_message_id_dense_table_scans_and_full_table_raises() -> None:
    in_use = set(range(ID_SPACE)) - {4242}
    assert new_message_id(in_use, randbelow=lambda n: 1) == 4242
    with pytest.raises(RuntimeError):
        new_message_id(set(range(ID_SPACE)))


def test_ids_are_random() -> None:
    state = conn(max_in_flight=200)
    ids = [send(state)[0] for _ in range(200)]
    assert len(set(ids)) == 200
    assert ids != sorted(ids)


# ---------------------------------------------------------------- matching


def test_out_of_order_answers_match_by_id_and_question() -> None:
    state = conn()
    first, q1 = send(state, "a.example.")
    second, q2 = send(state, "b.example.")
    events = state.receive(answer(q2) + answer(q1), 1.0)
    assert [type(e) for e in events] == [ResponseMatched, ResponseMatched]
    assert [e.qid for e in events if isinstance(e, ResponseMatched)] == [second, first]
    assert state.in_flight == {}
    assert state.counters.responses == 2


def test_question_name_is_compared_case_insensitively() -> None:
    state = conn()
    _, query = send(state, "Example.COM.")
    response = dns.message.make_response(query)
    response.question = [dns.rrset.RRset(dns.name.from_text("eXample.com."), 1, 1)]
    assert isinstance(state.receive(encode(response.to_wire()), 1.0)[0], ResponseMatched)


def test_unknown_id_and_duplicates_are_ignored() -> None:
    state = conn()
    qid, query = send(state)
    wire = answer(query)
    forged = dns.message.make_response(query)
    forged.id = qid ^ 1
    events = state.receive(encode(forged.to_wire()) + wire + wire, 1.0)
    assert [type(e) for e in events] == [ResponseIgnored, ResponseMatched, ResponseIgnored]
    assert state.counters.ignored == 2


@pytest.mark.parametrize("fault", ["question", "type", "qr0"])
def test_wrong_question_or_qr0_rejects_the_query(fault: str) -> None:
    state = conn()
    qid, query = send(state)
    response = dns.message.make_response(query)
    if fault == "question":
        response.question = [dns.rrset.RRset(dns.name.from_text("evil."), 1, 1)]
    elif fault == "type":
        response.question = [dns.rrset.RRset(query.question[0].name, 1, 28)]
    else:
        response.flags &= ~dns.flags.QR
    events = state.receive(encode(response.to_wire()) + answer(query), 1.0)
    assert events == [QueryRejected(qid, events[0].reason)]  # nothing after is trusted
    assert qid not in state.in_flight


def test_garbage_and_zero_length_break_the_stream() -> None:
    state = conn()
    _, query = send(state)
    garbage = struct.pack("!HHHHHH", query.id, 0x8180, 1, 0, 0, 0) + b"\xff"
    assert isinstance(state.receive(encode(garbage), 1.0)[0], StreamBroken)
    assert isinstance(conn().receive(b"\x00\x00", 1.0)[0], StreamBroken)


def test_answer_split_at_every_offset() -> None:
    for cut in range(1, 40):
        state = conn()
        _, query = send(state)
        wire = answer(query)
        events = state.receive(wire[:cut], 1.0) + state.receive(wire[cut:], 1.0)
        assert [type(e) for e in events] == [ResponseMatched]


def test_check_response_helpers() -> None:
    query = dns.message.make_query("x.example.", "A")
    response = dns.message.make_response(query)
    assert check_response(response, question_key(query)) is None
    assert question_key(dns.message.Message()) is None


# ---------------------------------------------------------------- rendering


def test_prepare_query_pads_adds_keepalive_and_drops_client_options() -> None:
    query = dns.message.make_query("example.com.", "A", use_edns=0, payload=4096,
                                   want_dnssec=True,
                                   options=[dns.edns.GenericOption(10, b"12345678")])
    wire = prepare_query(query, qid=77, pad=128, keepalive=True)
    assert len(wire) % 128 == 0
    sent = dns.message.from_wire(wire)
    assert sent.id == 77 and sent.payload == 4096 and sent.ednsflags & dns.flags.DO
    assert {o.otype for o in sent.options} == {edns.PADDING, edns.KEEPALIVE}
    plain = dns.message.from_wire(prepare_query(dns.message.make_query("a.", "A",
                                                                       use_edns=False), qid=1))
    assert plain.edns == 0 and plain.payload == 1232  # upstream queries always use EDNS
    for length in range(1, 60):  # padding lands on the block for every name length
        name = ".".join(["a" * min(length, 60)] + ["b"] * (length % 5)) + "."
        q = dns.message.make_query(name, "A", use_edns=0)
        assert len(prepare_query(q, qid=2, pad=128, keepalive=length % 2 == 0)) % 128 == 0
        assert dns.message.from_wire(prepare_query(q, qid=2, pad=128)).question == q.question


# ---------------------------------------------------------------- expiry and retirement


def test_idle_expiry_uses_default_then_upstream_keepalive() -> None:
    state = conn(idle=8.0, now=100.0)
    assert state.idle_expiry == 108.0 and state.status is Status.IDLE
    assert not state.has_expired(107.9) and state.has_expired(108.0)
    _, query = send(state, now=101.0)
    assert state.idle_expiry is None and state.status is Status.ACTIVE
    response = dns.message.make_response(query)
    response.use_edns(0, 0, 1232, options=[edns.keepalive_option(3.0)])
    state.receive(encode(response.to_wire()), 102.0)
    state.release(102.0)
    assert state.idle_timeout == 3.0 and state.idle_expiry == 105.0
    assert repr(state) == (f"<UpstreamConnection {NAME} [IDLE, in_flight=0, queries=1, "
                           "idle_expiry=105.000]>")


def test_keepalive_zero_retires_the_connection() -> None:
    state = conn()
    _, query = send(state)
    response = dns.message.make_response(query)
    response.use_edns(0, 0, 1232, options=[edns.keepalive_option(0)])
    state.receive(encode(response.to_wire()), 1.0)
    assert state.status is Status.RETIRED and not state.is_available()
    assert state.release(2.0) is True
    assert state.has_expired(2.0)


def test_timeout_with_nothing_received_retires_half_open_connection() -> None:
    state = conn()
    qid, _ = send(state, now=1.0)
    assert state.query_timed_out(qid, 3.0) is True
    assert "half-open" in (state.close_reason or "")


def test_timeout_after_traffic_keeps_the_connection() -> None:
    state = conn()
    slow, _ = send(state, now=1.0)
    _, fast_q = send(state, now=1.5)
    state.receive(answer(fast_q), 1.6)
    assert state.query_timed_out(slow, 3.0) is False
    assert state.counters.timeouts == 1


def test_closed_returns_in_flight_and_connecting_repr() -> None:
    state = ConnectionState(NAME, max_in_flight=2)
    assert state.status is Status.CONNECTING and state.is_available()
    state.reserve()
    assert repr(state).startswith(f"<UpstreamConnection {NAME} [CONNECTING, in_flight=0")
    state.connected(0.0)
    qid, _ = state.start_query(dns.message.make_query("a.", "A"), 0.0)
    assert state.closed("reset") == [qid]
    assert state.status is Status.CLOSED and state.close_reason == "reset"
    with pytest.raises(RuntimeError):
        state.start_query(dns.message.make_query("a.", "A"), 0.0)


def test_capacity_is_bounded() -> None:
    state = conn(max_in_flight=2)
    state.reserve()
    state.reserve()
    assert not state.is_available()
    with pytest.raises(RuntimeError):
        state.reserve()
    with pytest.raises(ValueError):
        ConnectionState(NAME, max_in_flight=0)
    with pytest.raises(RuntimeError):
        conn().release(0.0)


# ---------------------------------------------------------------- pool


def pool(max_connections: int = 2, max_in_flight: int = 2) -> PoolState[ConnectionState, str]:
    return PoolState(max_connections=max_connections,
                     new_connection=lambda: ConnectionState(NAME, max_in_flight=max_in_flight))


def test_pool_fills_connections_then_opens_then_waits() -> None:
    p = pool()
    for w in "abcde":
        p.enqueue(w)
    plan = p.assign(0.0)
    assert [w for w, _ in plan.assigned] == ["a", "b", "c", "d"]
    assert len(plan.to_open) == 2 and list(p.waiting) == ["e"]
    first, second = plan.to_open
    assert plan.assigned[0][1] is first and plan.assigned[2][1] is second


def test_pool_reuses_oldest_available_and_expires_idle() -> None:
    p = pool(max_in_flight=5)
    p.enqueue("a")
    (conn_a,) = p.assign(0.0).to_open
    conn_a.connected(0.0)
    conn_a.release(1.0)
    p.enqueue("b")
    plan = p.assign(2.0)
    assert plan.assigned == [("b", conn_a)] and plan.to_open == [] and p.reused == 1
    conn_a.release(3.0)
    plan = p.assign(3.0 + 8.0)
    assert plan.to_close == [conn_a] and p.connections == []


def test_pool_discard_forgets_a_waiter() -> None:
    p = pool(max_connections=1, max_in_flight=1)
    p.enqueue("a")
    p.enqueue("b")
    p.assign(0.0)
    p.discard("b")
    p.discard("zzz")
    assert not p.waiting
    with pytest.raises(ValueError):
        pool(max_connections=0)


def test_random_below_gives_16_bit_ids_from_a_refilled_buffer() -> None:
    from dnstls.proto import upstream as mod

    ids = [mod.random_below(ID_SPACE) for _ in range(5000)]  # > one 4 KiB batch (2,048)
    assert all(0 <= i < ID_SPACE for i in ids)
    assert len(set(ids)) > 4500  # ~4,800 expected distinct of 65,536
    assert all(0 <= mod.random_below(10) < 10 for _ in range(100))  # other ranges too
    mod._forget_random()  # what a forked child does: it draws fresh bytes
    assert mod._random_at == 0 and not mod._random
    assert 0 <= mod.random_below(ID_SPACE) < ID_SPACE


# ---------------------------------------------------------------- connect hold


def test_connect_hold_holds_then_lets_one_probe_through() -> None:
    hold = ConnectHold(1.0)
    assert hold.held_for(0.0) is None and hold.probing  # nothing failed: go on
    refused = ConnectionRefusedError("refused")
    hold.failed(refused, now=10.0)
    assert (hold.failures, hold.error, hold.probing) == (1, refused, False)
    assert hold.held_for(10.25) == 0.75  # held: fail at once, 0.75 s left
    assert hold.held_for(11.0) is None  # the hold has ended: this query probes
    assert hold.held_for(11.0) == 0.0 and hold.held_for(30.0) == 0.0  # others wait on it
    hold.failed(refused, now=12.0)  # the probe failed: held again, not longer
    assert hold.failures == 2 and hold.held_for(12.5) == 0.5 and hold.held_for(13.0) is None
    hold.succeeded()  # the probe connected
    assert (hold.failures, hold.error, hold.probing, hold.retry_at) == (0, None, False, 0.0)
    assert hold.held_for(13.0) is None


def test_a_malformed_answer_fails_its_query_and_the_stream_goes_on() -> None:
    # An answer with the query's ID and question whose body does not parse (a record
    # cut short): that query fails (ResponseMalformed), the framing is intact, so the
    # connection and the other queries on it go on. Before: StreamBroken (every query
    # on the connection failed, a protocol error).
    state = conn()
    first, q1 = send(state, "a.example.")
    second, q2 = send(state, "b.example.")
    response = dns.message.make_response(q1)
    response.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.1"))
    cut = response.to_wire()[:-2]
    events = state.receive(encode(cut) + answer(q2), 1.0)
    assert [type(e) for e in events] == [ResponseMalformed, ResponseMatched]
    assert events[0].qid == first and events[1].qid == second
    assert state.in_flight == {} and state.counters.rejected == 1
    # the same bytes when no query is in flight under that ID: the stream is broken
    assert isinstance(conn().receive(encode(cut), 1.0)[0], StreamBroken)


def test_prepare_query_edns_version_and_none() -> None:
    """``edns_version``: the OPT's version (DO kept beside it); None: no OPT at all,
    so no options, keepalive or padding either (``dnstls query +noedns``)."""
    query = dns.message.make_query("example.com.", "A", use_edns=0, want_dnssec=True)
    sent = dns.message.from_wire(prepare_query(query, qid=5, edns_version=3, pad=128))
    assert sent.edns == 3 and sent.ednsflags & dns.flags.DO
    assert {o.otype for o in sent.options} == {edns.PADDING}
    wire = prepare_query(query, qid=5, edns_version=None, pad=128, keepalive=True,
                         extra=b"\x00\x03\x00\x00")
    bare = dns.message.from_wire(wire)
    assert bare.edns == -1 and wire[10:12] == b"\x00\x00"  # ARCOUNT 0
    assert bare.question == query.question and len(wire) == 12 + 13 + 4
