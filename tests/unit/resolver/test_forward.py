"""The forwarder stage with fake upstreams and an injected clock (no I/O, no sleeping)."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from dnstls.errors import CertificateError, NetworkError, PinMismatch, ProtocolError, QueryTimeout
from dnstls.proto import edns
from dnstls.proto.answers import Transport
from dnstls.resolver.base import Request, ResolveFailure
from dnstls.resolver.forward import Forwarder, client_response, upstream_query


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeUpstream:
    """Scripted: each exchange pops an action (an rcode, an exception, or 'answer')."""

    def __init__(self, name: str, clock: Clock, *, rtt: float = 0.01) -> None:
        self.name = name
        self.clock = clock
        self.rtt = rtt
        self.timeout = 2.0
        self.actions: deque[Any] = deque()
        self.default: Any = "answer"
        self.seen: list[tuple[dns.message.Message, float]] = []

    async def exchange(self, query: dns.message.Message, *, deadline: float,
                       ) -> dns.message.Message:
        self.seen.append((query, deadline))
        action = self.actions.popleft() if self.actions else self.default
        if isinstance(action, Exception):
            self.clock.now = deadline if isinstance(action, QueryTimeout) else \
                self.clock.now + self.rtt
            raise action
        self.clock.now += self.rtt
        response = dns.message.make_response(query)
        if isinstance(action, int):
            response.set_rcode(action)
        elif callable(action):
            return action(query)  # type: ignore[no-any-return]
        else:
            response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                                       "192.0.2.7"))
        return response


class Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def observe(self, upstream: str, outcome: str, seconds: float) -> None:
        self.calls.append((upstream, outcome))


def setup(n: int = 3, strategy: str = "ordered", **kw: Any,
          ) -> tuple[Forwarder, list[FakeUpstream], Clock]:
    clock = Clock()
    ups = [FakeUpstream(f"tls://10.0.0.{i}:853", clock) for i in range(n)]
    return Forwarder(ups, strategy=strategy, clock=clock, **kw), ups, clock


def request(clock: Clock, *, budget: float = 5.0, **kw: Any) -> Request:
    kw.setdefault("use_edns", 0)
    query = dns.message.make_query("example.com.", "A", **kw)
    return Request(query, Transport.TLS, None, clock.now + budget)


async def test_upstream_query_copies_only_what_it_should() -> None:
    client = dns.message.make_query(
        "Example.COM.", "AAAA", use_edns=0, payload=65000, want_dnssec=True,
        options=[dns.edns.GenericOption(edns.PADDING, b"\0" * 8),
                 dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678"),
                 edns.keepalive_option(None)])
    client.flags |= dns.flags.CD | dns.flags.AD
    query = upstream_query(client)
    assert query.question == client.question
    assert query.flags & dns.flags.RD and query.flags & dns.flags.CD and query.flags & dns.flags.AD
    assert query.ednsflags & dns.flags.DO and query.payload == 4096 and query.options == ()
    plain = upstream_query(dns.message.make_query("a.", "A", use_edns=False))
    assert plain.edns == 0 and plain.payload == 1232 and not plain.ednsflags & dns.flags.DO


async def test_client_response_strips_transport_options_and_fixes_flags() -> None:
    client = dns.message.make_query("a.example.", "A", use_edns=0, want_dnssec=False)
    client.id = 4321
    upstream = dns.message.make_response(dns.message.make_query("a.example.", "A", use_edns=0))
    upstream.flags |= dns.flags.AA | dns.flags.AD | dns.flags.TC
    upstream.use_edns(0, 0, 1232, options=[edns.keepalive_option(10.0),
                                           dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER)],
                      pad=468)
    upstream.set_rcode(dns.rcode.NXDOMAIN)
    response = client_response(client, upstream)
    assert response.id == 4321 and response.rcode() == dns.rcode.NXDOMAIN
    assert not response.flags & (dns.flags.AA | dns.flags.AD | dns.flags.TC)
    assert response.flags & dns.flags.RA
    assert [o.otype for o in response.options] == [edns.EDE]
    assert len(response.to_wire()) < 100  # no padding rendered
    client.want_dnssec(True)
    assert client_response(client, upstream).flags & dns.flags.AD
    assert client_response(client, upstream).ednsflags & dns.flags.DO
    no_edns = dns.message.make_query("a.example.", "A", use_edns=False)
    assert client_response(no_edns, upstream).edns < 0


async def test_ordered_failover_on_errors_refused_and_servfail() -> None:
    fwd, ups, clock = setup(4)
    ups[0].actions.append(NetworkError("refused"))
    ups[1].actions.append(dns.rcode.REFUSED)
    ups[2].actions.append(dns.rcode.SERVFAIL)
    response = await fwd.resolve(request(clock))
    assert response.answer[0][0].to_text() == "192.0.2.7"
    assert [len(u.seen) for u in ups] == [1, 1, 1, 1]
    stats = fwd.statistics()["upstreams"]
    assert stats[ups[0].name]["errors"] == {"network": 1}
    assert stats[ups[1].name]["responses"] == {"REFUSED": 1}
    assert stats[ups[3].name]["latency_count"] == 1


async def test_each_attempt_gets_its_own_timeout_and_the_last_the_rest() -> None:
    fwd, ups, clock = setup(2)
    ups[0].actions.append(QueryTimeout("slow"))
    req = request(clock, budget=5.0)
    await fwd.resolve(req)
    assert ups[0].seen[0][1] == 1000.0 + 2.0
    assert ups[1].seen[0][1] == req.deadline


async def test_backoff_doubles_caps_and_resets() -> None:
    fwd, ups, clock = setup(2, backoff_max=8.0)
    ups[0].default = NetworkError("down")
    ups[0].rtt = ups[1].rtt = 0.0
    delays = []
    for _ in range(6):
        await fwd.resolve(request(clock))
        health = fwd.health[ups[0].name]
        delays.append(health.retry_at - clock.now)
        clock.now = health.retry_at  # back-off over: it is tried first again
    assert [round(d, 2) for d in delays] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    ups[0].default = "answer"
    await fwd.resolve(request(clock))
    assert fwd.health[ups[0].name].failures == 0


async def test_backed_off_upstream_is_skipped_while_others_answer() -> None:
    fwd, ups, clock = setup(2)
    ups[0].actions.append(NetworkError("down"))
    await fwd.resolve(request(clock))
    await fwd.resolve(request(clock))
    assert [len(u.seen) for u in ups] == [1, 2]
    assert fwd.statistics()["upstreams"][ups[0].name]["backed_off"]
    ups[1].default = NetworkError("also down")
    await fwd.resolve(request(clock))  # last resort: the backed-off one is tried
    assert len(ups[0].seen) == 2


async def test_round_robin_rotates() -> None:
    fwd, ups, clock = setup(3, strategy="round_robin")
    for _ in range(6):
        await fwd.resolve(request(clock))
    assert [len(u.seen) for u in ups] == [2, 2, 2]


async def test_fastest_prefers_lowest_srtt_after_probing() -> None:
    fwd, ups, clock = setup(3, strategy="fastest")
    for up, rtt in zip(ups, (0.05, 0.01, 0.03), strict=True):
        up.rtt = rtt
    for _ in range(3):  # unmeasured upstreams sort first: each gets probed
        await fwd.resolve(request(clock))
    assert [len(u.seen) for u in ups] == [1, 1, 1]
    for _ in range(4):
        await fwd.resolve(request(clock))
    assert [len(u.seen) for u in ups] == [1, 5, 1]
    assert repr(fwd).startswith("<Forwarder fastest [")


@pytest.mark.parametrize(("errors", "ede", "text"), [
    ([QueryTimeout("t"), QueryTimeout("t")], 22, "timed out: tls://10.0.0.0:853"),
    ([QueryTimeout("t"), NetworkError("reset")], 23, "tls://10.0.0.1:853: reset"),
    ([PinMismatch(["a"], ["b"]), QueryTimeout("t")], 23, "pin mismatch for tls://10.0.0.0:853"),
    ([CertificateError("certificate has expired for x"), NetworkError("n")], 23,
     "TLS authentication failed for tls://10.0.0.0:853: certificate has expired for x"),
    ([ProtocolError("garbage"), ProtocolError("garbage")], 23, "tls://10.0.0.0:853: garbage"),
])
async def test_failure_maps_to_servfail_with_ede(errors: list[Exception], ede: int,
                                                 text: str) -> None:
    metrics = Metrics()
    fwd, ups, clock = setup(2, metrics=metrics)
    for up, error in zip(ups, errors, strict=True):
        up.actions.append(error)
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.rcode == dns.rcode.SERVFAIL and info.value.ede == ede
    assert text in (info.value.text or "")
    assert len(metrics.calls) == 2


@pytest.mark.parametrize(("error", "text"), [
    # what the transports raise (tls_client.translate_error, the UDP upstream): the
    # upstream's name is already in the error's text
    (CertificateError("Hostname mismatch, certificate is not valid for 'x'. for "
                      "tls://10.0.0.0:853"),
     "TLS authentication failed for tls://10.0.0.0:853: Hostname mismatch, certificate "
     "is not valid for 'x'."),
    (NetworkError("tls://10.0.0.0:853: Connection refused"),
     "tls://10.0.0.0:853: Connection refused"),
    (NetworkError("connecting to tls://10.0.0.0:853 failed: Connection refused"),
     "connecting to tls://10.0.0.0:853 failed: Connection refused"),
])
async def test_ede_text_names_the_upstream_once(error: Exception, text: str) -> None:
    fwd, ups, clock = setup(1)
    ups[0].default = error
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.text == text


async def test_log_says_when_an_upstream_starts_failing_and_recovers_not_per_query(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dnstls.resolver.forward")
    fwd, ups, clock = setup(1)
    ups[0].default = NetworkError("refused")
    for _ in range(50):
        with pytest.raises(ResolveFailure):
            await fwd.resolve(request(clock))
        with pytest.raises(ResolveFailure):  # held: down, and the probe was this second's
            await fwd.resolve(request(clock))
        clock.now += 1.0
    ups[0].default = "answer"
    await fwd.resolve(request(clock))
    await fwd.resolve(request(clock))
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [
        ("WARNING", "upstream tls://10.0.0.0:853 failing (network: refused)"),
        ("WARNING", "upstream tls://10.0.0.0:853 down after 3 failed attempts in a row "
                    "(network: refused); one query a second probes it, queries with no other "
                    "upstream meanwhile get SERVFAIL at once"),
        ("INFO", "upstream tls://10.0.0.0:853 answering again (after 51 failed attempts)")]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 49


async def test_with_several_upstreams_the_failing_warning_says_the_others_go_first(
        caplog: pytest.LogCaptureFixture) -> None:
    fwd, ups, clock = setup(2)
    ups[0].actions.append(NetworkError("refused"))
    await fwd.resolve(request(clock))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == [
        "upstream tls://10.0.0.0:853 failing (network: refused); the others go first for "
        "1 s, doubling up to 60 s while it keeps failing"]


async def test_a_lone_upstream_down_fails_queries_at_once_and_is_probed_once_a_second(
        ) -> None:
    """A blackholed lone upstream: after three timeouts in a row, queries get SERVFAIL
    (EDE 22) at once instead of waiting their whole deadline; one query a second still
    goes to it as the probe, and the first answer ends it."""
    fwd, ups, clock = setup(1)
    up = ups[0]
    up.default = QueryTimeout("no answer")
    for _ in range(3):  # each waits its deadline (the fake moves the clock there)
        with pytest.raises(ResolveFailure):
            await fwd.resolve(request(clock))
    assert len(up.seen) == 3
    before = clock.now
    for _ in range(20):
        with pytest.raises(ResolveFailure) as info:
            await fwd.resolve(request(clock))
        assert info.value.ede == dns.edns.EDECode.NO_REACHABLE_AUTHORITY
    assert clock.now == before and len(up.seen) == 3  # no wait, nothing sent
    assert info.value.text == ("timed out: tls://10.0.0.0:853; down after 3 failed attempts "
                               "in a row, next try in 1.0 s")
    stats = fwd.statistics()["upstreams"][up.name]
    assert stats["down"] and stats["held"] == 20 and stats["queries"] == 3
    clock.now += 0.5
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.text.endswith("next try in 0.5 s")
    clock.now += 0.5  # a second on: this query is the probe (it times out again)
    with pytest.raises(ResolveFailure):
        await fwd.resolve(request(clock))
    assert len(up.seen) == 4
    with pytest.raises(ResolveFailure):  # and the one right after it is held again
        await fwd.resolve(request(clock))
    assert len(up.seen) == 4
    up.default = "answer"  # back: the next probe answers, and everything goes again
    clock.now += 1.0
    await fwd.resolve(request(clock))
    await fwd.resolve(request(clock))
    assert len(up.seen) == 6
    assert not fwd.statistics()["upstreams"][up.name]["down"]


async def test_one_lost_answer_or_two_do_not_make_an_upstream_down() -> None:
    fwd, ups, clock = setup(1)
    for _ in range(5):
        ups[0].actions.extend([QueryTimeout("lost"), QueryTimeout("lost")])
        for _ in range(2):
            with pytest.raises(ResolveFailure):
                await fwd.resolve(request(clock))
        await fwd.resolve(request(clock))  # an answer in between resets the count
    assert len(ups[0].seen) == 15 and not fwd.health[ups[0].name].held


async def test_a_down_upstream_is_skipped_not_waited_for_and_all_down_fails_at_once(
        ) -> None:
    fwd, ups, clock = setup(2)
    ups[0].default = NetworkError("refused")
    for _ in range(3):
        clock.now = fwd.health[ups[0].name].retry_at + 0.01  # its back-off over: first
        await fwd.resolve(request(clock))  # ups[1] answers each
    assert fwd.health[ups[0].name].down()
    ups[1].default = NetworkError("reset")
    with pytest.raises(ResolveFailure) as info:  # ups[1] fails, ups[0] is held: skipped
        await fwd.resolve(request(clock))
    assert [len(u.seen) for u in ups] == [3, 4]
    assert info.value.text == "tls://10.0.0.1:853: reset"
    for _ in range(2):
        with pytest.raises(ResolveFailure):
            await fwd.resolve(request(clock))
    assert fwd.health[ups[1].name].down() and [len(u.seen) for u in ups] == [3, 6]
    before = clock.now
    with pytest.raises(ResolveFailure) as info:  # both down: SERVFAIL at once
        await fwd.resolve(request(clock))
    assert [len(u.seen) for u in ups] == [3, 6] and clock.now == before
    assert info.value.ede == dns.edns.EDECode.NETWORK_ERROR
    text = info.value.text or ""
    assert "tls://10.0.0.0:853: refused" in text and "tls://10.0.0.1:853: reset" in text
    assert text.endswith("; all down, next try in 1.0 s"), text


async def test_a_probe_under_way_holds_the_queries_that_come_meanwhile() -> None:
    """Concurrent queries: while the probe waits for its answer, the others are held (at
    most one probe a second), and the probe's answer brings the upstream back."""
    import asyncio

    fwd, ups, clock = setup(1)
    up = ups[0]
    up.default = NetworkError("refused")
    for _ in range(3):
        with pytest.raises(ResolveFailure):
            await fwd.resolve(request(clock))
    clock.now += 1.0
    release = asyncio.Event()

    async def slow_answer(query: dns.message.Message, *, deadline: float,
                          ) -> dns.message.Message:
        up.seen.append((query, deadline))
        await release.wait()
        response = dns.message.make_response(query)
        return response

    up.exchange = slow_answer  # type: ignore[method-assign]
    probe = asyncio.ensure_future(fwd.resolve(request(clock)))
    await asyncio.sleep(0)
    for _ in range(5):
        with pytest.raises(ResolveFailure):
            await fwd.resolve(request(clock))
    assert len(up.seen) == 4
    release.set()
    await probe
    await fwd.resolve(request(clock))
    assert len(up.seen) == 5


async def test_all_servfail_relays_the_servfail_and_refused_gives_ede_22() -> None:
    fwd, ups, clock = setup(2)
    for up in ups:
        up.default = dns.rcode.SERVFAIL
    assert (await fwd.resolve(request(clock))).rcode() == dns.rcode.SERVFAIL
    for up in ups:
        up.default = dns.rcode.REFUSED
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.ede == 22 and "refused by" in (info.value.text or "")


async def test_notimp_and_formerr_decline_the_query_like_refused() -> None:
    # They were relayed to the client as the answer (the wire path answered SERVFAIL
    # EDE 24 for them instead): the next upstream is asked, as after REFUSED
    fwd, ups, clock = setup(3)
    ups[0].default, ups[1].default = dns.rcode.NOTIMP, dns.rcode.FORMERR
    answer = await fwd.resolve(request(clock))
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    assert [len(u.seen) for u in ups] == [1, 1, 1]
    ups[2].default = dns.rcode.REFUSED
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert (info.value.rcode, info.value.ede, info.value.text) == (
        dns.rcode.SERVFAIL, 22,
        "refused by tls://10.0.0.2:853; NOTIMP from tls://10.0.0.0:853; "
        "FORMERR from tls://10.0.0.1:853")
    assert fwd.health["tls://10.0.0.0:853"].failures == 0  # it answered: not backed off


async def test_expired_deadline_and_mismatched_answer() -> None:
    fwd, ups, clock = setup(1)
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock, budget=0.0))
    assert info.value.ede == 22 and ups[0].seen == []

    def other_question(query: dns.message.Message) -> dns.message.Message:
        return dns.message.make_response(dns.message.make_query("evil.", "A"))

    ups[0].actions.append(other_question)
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.ede == 23 and "does not match" in (info.value.text or "")


async def test_an_extended_rcode_fails_the_attempt_not_the_forwarder() -> None:
    """BADVERS (16) or any RCODE above 15 (OPT's extended RCODE bits) answers no query we
    sent: the next upstream is asked, and with none left the client gets SERVFAIL with
    EDE 23 -- found by fuzz/fuzz_upstream_path.py (it was an IndexError, answered as an
    internal error)."""
    fwd, ups, clock = setup(2)
    ups[0].actions.append(dns.rcode.BADVERS)
    response = await fwd.resolve(request(clock))
    assert response.rcode() == dns.rcode.NOERROR and len(ups[1].seen) == 1
    assert fwd.statistics()["upstreams"][ups[0].name]["errors"] == {"protocol": 1}
    for up in ups:
        up.actions.append(dns.rcode.BADCOOKIE)
    clock.now += 120  # past both back-offs
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.rcode == dns.rcode.SERVFAIL and info.value.ede == 23
    assert "extended RCODE 23" in (info.value.text or "")


async def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        Forwarder([], clock=Clock())
    with pytest.raises(ValueError):
        setup(1, strategy="random")


async def test_a_down_upstreams_servfail_names_the_cause_not_a_later_hold(
        caplog: pytest.LogCaptureFixture) -> None:
    """The connect hold's errors restate the connect error with "(not retried for
    ...)", raised from it: the held query's EDE text and the down warning give the
    connect error, not the restatement."""
    fwd, ups, clock = setup(1)
    cause = NetworkError("connect failed: Network is unreachable")
    restated = NetworkError("connect failed: Network is unreachable (not retried for 0.9 s)")
    restated.__cause__ = cause
    ups[0].actions.extend([cause, restated, restated])
    for _ in range(3):
        with pytest.raises(ResolveFailure):
            await fwd.resolve(request(clock))
    with pytest.raises(ResolveFailure) as info:
        await fwd.resolve(request(clock))
    assert info.value.text == ("tls://10.0.0.0:853: connect failed: Network is unreachable; "
                               "down after 3 failed attempts in a row, next try in 1.0 s")
    down = [r.getMessage() for r in caplog.records if "down after" in r.getMessage()]
    assert len(down) == 1 and "(network: connect failed: Network is unreachable);" in down[0]


def test_attempts_that_fail_together_are_one_piece_of_evidence() -> None:
    """Three queries for a dead domain asked at once of a recursive upstream slower to
    give up than our deadline time out together: the upstream is not down. Failures
    count toward down only when each attempt began after the previous one failed."""
    from dnstls.resolver.forward import UpstreamHealth

    health = UpstreamHealth()
    timeout = QueryTimeout("no answer")
    for now in (1004.0, 1004.001, 1004.002):  # all three began at 1000.0
        health.failed(now, now - 1000.0, timeout, initial=1.0, cap=60.0)
    assert health.failures == 3 and not health.down()
    assert health.held_for(1004.01) is None  # nobody is held
    health.failed(1008.1, 4.0, timeout, initial=1.0, cap=60.0)  # began at 1004.1
    assert not health.down()
    health.failed(1012.2, 4.0, timeout, initial=1.0, cap=60.0)  # began at 1008.2
    assert health.down() and health.failures == 5
    assert health.held_for(1012.3) == pytest.approx(0.9)
    health.succeeded(0.01)
    assert not health.down() and health.held_for(1012.4) is None
